//! smtpd: a mail server that receives mail over SMTP and LMTP and stores it in Maildir
//! mailboxes for an IMAP server such as Dovecot to read. With `[relay] enabled`, authenticated
//! users' mail to other domains goes through a durable queue.
//!
//! The library holds the parts of the server that do not speak SMTP:
//!
//! - [`check`]: what `check-config` finds on this machine (certificate, Maildir root, warnings);
//! - [`checks`]: inbound mail authentication (SPF, DKIM, ARC, DMARC, iprev) and its policy;
//! - [`config`]: the TOML configuration, its defaults and its validation;
//! - [`dns`]: the `[dns]` section: nameservers, hickory's configuration, the reverse lookup;
//! - [`dkim_key`]: the DKIM signing keys on disk, shared by `dns-records` and outbound signing;
//! - [`dns_records`] and [`dns_check`]: the records a domain publishes, and checking them;
//! - [`dnsbl`] and [`greylist`]: the optional RCPT-time checks of the client (DNS blocklists,
//!   greylisting), tied together at RCPT by [`rcpt_policy`];
//! - [`routing`]: which mailboxes an envelope recipient is delivered to, and safe mailbox
//!   directory names;
//! - [`maildir`]: streaming, durable Maildir delivery (and a sink for load tests);
//! - [`lmtp`]: delivery to an LMTP server (Dovecot) instead, replies mapped back to SMTP;
//! - [`password`]: Argon2 password hashes for SMTP AUTH accounts, checked through a bounded pool;
//! - [`housekeeping`]: the `tmp/` sweeper and the open-file limit check;
//! - [`log_writer`]: the thread that writes the log in batches, off the sessions' threads,
//!   [`log_fields`]: the text log's fields, written without escaping what needs none, and
//!   [`log_line`]: the text log's line around them, without the default's per-part painting;
//! - [`receiver`]: the SMTP session handler that ties them together on smtpkit-tokio;
//! - [`metrics_endpoint`]: the opt-in Prometheus endpoint;
//! - [`privilege`]: the switch from root to `[privileges] user` after binding;
//! - [`activation`]: listeners inherited from systemd (socket activation).
//! - [`relay`]: submission relay checks (sender ownership, `Message-ID`/`Date`, sending rate);
//! - [`dkim_sign`]: DKIM signing of relayed mail, the body hashed as it arrives;
//! - [`queue`]: the outbound queue's runner and the `smtpd queue` commands;
//! - [`delivery`]: how queued mail leaves (MX hosts or a smart host, over SMTP), with
//!   [`mta_sts`] policies and [`dane`] TLSA records deciding where TLS must be verified, and [`tls_report`] keeping what
//!   happened for TLS-RPT.

pub mod activation;
pub mod check;
pub mod checks;
pub mod config;
pub mod connection_cache;
pub mod dane;
pub mod delivery;
pub mod dkim_key;
pub mod dkim_sign;
pub mod dns;
pub mod dns_check;
pub mod dns_records;
pub mod dnsbl;
pub mod greylist;
pub mod housekeeping;
pub mod lmtp;
pub mod log_fields;
pub mod log_line;
pub mod log_writer;
pub mod maildir;
pub mod metrics_endpoint;
pub mod mta_sts;
pub mod password;
pub mod privilege;
pub mod queue;
pub mod rcpt_policy;
pub mod receiver;
pub mod relay;
pub mod routing;
pub mod tls_report;
