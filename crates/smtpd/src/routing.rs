//! Recipient resolution: which Maildir mailboxes an envelope recipient is delivered to.
//!
//! A [`Router`] is built once from the configuration and answers [`Router::resolve`] for every
//! `RCPT TO`. It never relays: an address is either delivered locally
//! ([`Resolution::Local`]), refused because the domain is ours but the mailbox is not
//! ([`Resolution::UnknownMailbox`], reply `550 5.1.1`), or refused because the domain is not ours
//! ([`Resolution::NotLocal`], reply `550 5.7.1` / `554 5.7.1` "relay access denied").
//!
//! # Matching rules
//!
//! - **Domains** match case-insensitively (ASCII only; RFC 5321 §2.4). Internationalized domains
//!   are compared as given: a U-label and its A-label (`xn--…`) form are different domains here.
//! - **Local parts** of configured mailboxes and aliases also match case-insensitively (ASCII
//!   only). RFC 5321 §2.4 allows a host to treat local parts case-sensitively, but almost every
//!   mail system folds case, and users expect `Bob@` and `bob@` to reach the same person. Non-ASCII
//!   characters (SMTPUTF8) are compared byte for byte.
//! - **`postmaster`** always resolves for a local domain (RFC 5321 §4.5.1): to the `postmaster`
//!   mailbox or alias if one is configured, else to the domain's catch-all, else to an implicit
//!   mailbox named `postmaster` in that domain.
//! - **Wildcard mode** makes every domain local and gives every address its own mailbox. Domains
//!   listed in the configuration still follow their own rules.
//!
//! # Path safety
//!
//! A mailbox lives at `<maildir root>/<domain>/<local part>/`. Both components come from the
//! network in wildcard mode, so they are mapped through [`MailboxPath::new`], which produces a
//! single, non-empty, ASCII-only directory name that is never `.` or `..`. See its documentation
//! for the exact encoding.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;

use crate::config;

/// The longest directory name we produce, in bytes: `NAME_MAX` on Linux and on most Unix file
/// systems (ext4, XFS, btrfs, tmpfs).
pub const MAX_COMPONENT_LEN: usize = 255;

/// How many aliases may be chained (`a` → `b` → `c` counts two steps). Sendmail's
/// `MaxAliasRecursion` uses the same bound.
pub const MAX_ALIAS_DEPTH: usize = 10;

/// The encoded form of an empty input. The encoder never emits `%` followed by anything but two
/// lowercase hex digits, so this cannot collide with the encoding of a real name.
const EMPTY_COMPONENT: &str = "%empty";

/// The local part that must always be deliverable (RFC 5321 §4.5.1).
const POSTMASTER: &str = "postmaster";

/// A mailbox, as the path of its Maildir relative to the Maildir root: `<domain>/<local part>`.
///
/// Both components are safe directory names (see [`MailboxPath::new`]), so joining this path to
/// a root can never leave the root.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MailboxPath {
    domain: String,
    local: String,
    /// A Maildir++ folder inside the mailbox (`.Junk`), or the inbox.
    folder: Option<&'static str>,
}

impl MailboxPath {
    /// Maps a domain and a local part to a mailbox path.
    ///
    /// Each component is encoded separately:
    /// - ASCII letters are lowercased, so the mapping is case-insensitive;
    /// - `a`-`z`, `0`-`9`, `_`, `+`, `-` and `.` are kept, except that a leading `.` or `-` is
    ///   encoded (no hidden directories, no `.` or `..`, nothing that looks like a command-line
    ///   option);
    /// - every other byte, including `/`, `%`, NUL, quotes and each byte of a UTF-8 sequence, is
    ///   written as `%` and two lowercase hex digits;
    /// - an empty input becomes `%empty`.
    ///
    /// The mapping is injective up to ASCII case. It returns `None` when an encoded component
    /// would be longer than [`MAX_COMPONENT_LEN`]; RFC 5321 §4.5.3.1 limits local parts to 64
    /// octets and domains to 255, so only oversized input is refused.
    #[must_use]
    pub fn new(domain: &str, local_part: &str) -> Option<Self> {
        Some(Self {
            domain: encode_component(domain)?,
            local: encode_component(local_part)?,
            folder: None,
        })
    }

    /// The encoded domain directory name.
    #[must_use]
    pub fn domain_dir(&self) -> &str {
        &self.domain
    }

    /// The encoded local-part directory name.
    #[must_use]
    pub fn local_dir(&self) -> &str {
        &self.local
    }

    /// The path of this mailbox's Maildir relative to the Maildir root.
    #[must_use]
    pub fn relative_path(&self) -> PathBuf {
        let mut path = PathBuf::from(&self.domain);
        path.push(&self.local);
        if let Some(folder) = self.folder {
            path.push(folder);
        }
        path
    }

    /// The same mailbox's Maildir++ junk folder, `.Junk` (the name Dovecot's and most clients'
    /// special-use `\Junk` mapping expects).
    #[must_use]
    pub fn junk(&self) -> Self {
        Self {
            folder: Some(".Junk"),
            ..self.clone()
        }
    }
}

impl fmt::Display for MailboxPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.local)?;
        match self.folder {
            Some(folder) => write!(f, "/{folder}"),
            None => Ok(()),
        }
    }
}

/// Encodes one path component; see [`MailboxPath::new`].
fn encode_component(input: &str) -> Option<String> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    if input.is_empty() {
        return Some(EMPTY_COMPONENT.to_owned());
    }
    // Bail out before allocating for inputs that cannot fit even unencoded.
    if input.len() > MAX_COMPONENT_LEN {
        return None;
    }
    let mut out = String::with_capacity(input.len());
    for (i, byte) in input.bytes().enumerate() {
        let byte = byte.to_ascii_lowercase();
        let keep = match byte {
            b'a'..=b'z' | b'0'..=b'9' | b'_' | b'+' => true,
            b'.' | b'-' => i > 0,
            _ => false,
        };
        if keep {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        if out.len() > MAX_COMPONENT_LEN {
            return None;
        }
    }
    Some(out)
}

/// Where a recipient goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// The address is local: deliver one copy to each mailbox (deduplicated, never empty).
    Local(Vec<MailboxPath>),
    /// The domain is local but no mailbox, alias or catch-all matches (`550 5.1.1`).
    UnknownMailbox,
    /// The domain is not local; we never relay (`550 5.7.1`).
    NotLocal,
}

/// A configuration problem found while building a [`Router`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoutingError {
    /// Two `[[domain]]` sections name the same domain (case-insensitively).
    #[error("domain `{0}` is configured twice")]
    DuplicateDomain(String),
    /// A domain name is empty or contains a character no domain can contain.
    #[error(
        "domain name `{0}` is invalid: it must be non-empty and contain no whitespace, `@` or `/`"
    )]
    InvalidDomain(String),
    /// A mailbox or alias name is empty or contains `@`.
    #[error(
        "`{name}` in domain `{domain}` is not a valid local part: it must be non-empty and contain no `@`"
    )]
    InvalidLocalPart {
        /// The domain being configured.
        domain: String,
        /// The offending name.
        name: String,
    },
    /// The same local part is listed twice, as a mailbox and an alias, or twice in one list.
    #[error("`{name}@{domain}` is configured more than once (as a mailbox or an alias)")]
    DuplicateAddress {
        /// The domain being configured.
        domain: String,
        /// The duplicated local part.
        name: String,
    },
    /// A name maps to a directory name longer than [`MAX_COMPONENT_LEN`].
    #[error("`{0}` is too long to be used as a mailbox directory name")]
    TooLong(String),
    /// An alias or catch-all points at an address in a domain that is not local (we never relay).
    #[error("`{from}` points at `{to}`, which is not in a local domain")]
    NonLocalTarget {
        /// The alias or catch-all being expanded.
        from: String,
        /// The target address.
        to: String,
    },
    /// An alias or catch-all points at a local address that is neither a mailbox nor an alias.
    #[error("`{from}` points at `{to}`, which is neither a mailbox nor an alias")]
    UnknownTarget {
        /// The alias or catch-all being expanded.
        from: String,
        /// The target address.
        to: String,
    },
    /// Aliases point at each other in a cycle.
    #[error("alias loop: {}", .0.join(" -> "))]
    AliasLoop(Vec<String>),
    /// An alias chain is longer than [`MAX_ALIAS_DEPTH`].
    #[error("alias chain longer than {MAX_ALIAS_DEPTH}: {}", .0.join(" -> "))]
    AliasTooDeep(Vec<String>),
    /// More than one of the above: every problem is reported at once, so an operator fixes
    /// the file in one pass.
    #[error("{} routing errors:\n  - {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  - "))]
    Several(Vec<Self>),
}

impl RoutingError {
    /// `Ok` without errors, the error itself for one, [`RoutingError::Several`] for more
    /// (sorted, so the report does not depend on hash order).
    fn all(mut errors: Vec<Self>) -> Result<(), Self> {
        // A loop is found once from each alias in it: report it once.
        let mut loops = HashSet::new();
        errors.retain(|e| match e {
            Self::AliasLoop(chain) => {
                let mut members = chain.clone();
                members.sort();
                members.dedup();
                loops.insert(members)
            }
            _ => true,
        });
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => {
                errors.sort_by_cached_key(ToString::to_string);
                Err(Self::Several(errors))
            }
        }
    }
}

/// Resolves envelope recipients to mailboxes; see the [module documentation](self).
#[derive(Debug, Clone)]
pub struct Router {
    wildcard: bool,
    /// Keyed by the lowercased domain name.
    domains: HashMap<String, DomainTable>,
    /// The lowercased name of the first configured domain: where the bare `<Postmaster>` goes
    /// when the server's host name is not a local domain.
    primary: Option<String>,
    /// Characters that separate a local part from its extension (`user+tag`); empty: none.
    delimiters: Vec<char>,
}

/// The resolved rules of one configured domain.
#[derive(Debug, Clone)]
struct DomainTable {
    /// Lowercased local part → mailboxes, for mailboxes and (fully expanded) aliases.
    addresses: HashMap<String, Vec<MailboxPath>>,
    catch_all: Option<Vec<MailboxPath>>,
    /// Where `postmaster` goes when it is neither configured nor covered by a catch-all.
    postmaster: Vec<MailboxPath>,
}

/// A configured domain with names lowercased, before alias expansion.
struct RawDomain<'c> {
    name: String,
    mailboxes: HashSet<String>,
    aliases: HashMap<String, &'c [String]>,
    catch_all: Option<&'c str>,
}

impl Router {
    /// Builds a router from the `[[domain]]` sections and the wildcard flag.
    ///
    /// All aliases are expanded here, so configuration mistakes (loops, chains deeper than
    /// [`MAX_ALIAS_DEPTH`], targets that do not exist or are not local) are reported at startup
    /// and [`Router::resolve`] is a hash lookup.
    pub fn new(wildcard: bool, domains: &[config::Domain]) -> Result<Self, RoutingError> {
        let (raw, mut errors) = collect_domains(domains);
        let mut tables = HashMap::with_capacity(raw.len());
        let expander = Expander {
            wildcard,
            domains: &raw,
        };
        for (key, domain) in &raw {
            let mut addresses = HashMap::new();
            for mailbox in &domain.mailboxes {
                match MailboxPath::new(&domain.name, mailbox) {
                    Some(path) => _ = addresses.insert(mailbox.clone(), vec![path]),
                    None => {
                        errors.push(RoutingError::TooLong(format!("{mailbox}@{}", domain.name)))
                    }
                }
            }
            for alias in domain.aliases.keys() {
                let mut out = Vec::new();
                match expander.expand(&domain.name, alias, 0, &mut Vec::new(), &mut out) {
                    Ok(()) => _ = addresses.insert(alias.clone(), out),
                    Err(e) => errors.push(e),
                }
            }
            let catch_all = domain.catch_all.and_then(|target| {
                let from = format!("catch_all of {}", domain.name);
                let (t_domain, t_local) = split_target(target, &domain.name);
                let mut out = Vec::new();
                // The catch-all counts as one alias step.
                match expander.expand(&t_domain, &t_local, 1, &mut vec![from], &mut out) {
                    Ok(()) => Some(out),
                    Err(e) => {
                        errors.push(e);
                        None
                    }
                }
            });
            let Some(postmaster) = MailboxPath::new(&domain.name, POSTMASTER) else {
                errors.push(RoutingError::TooLong(domain.name.clone()));
                continue;
            };
            let postmaster = vec![postmaster];
            tables.insert(
                key.clone(),
                DomainTable {
                    addresses,
                    catch_all,
                    postmaster,
                },
            );
        }
        RoutingError::all(errors)?;
        Ok(Self {
            wildcard,
            domains: tables,
            primary: domains.first().map(|d| d.name.to_ascii_lowercase()),
            delimiters: Vec::new(),
        })
    }

    /// Treats any of `delimiters` in a local part as the start of an extension: `user+tag@`
    /// reaches `user` when `user+tag` itself is not an address (Postfix's
    /// `recipient_delimiter`).
    #[must_use]
    pub fn with_delimiters(mut self, delimiters: &str) -> Self {
        self.delimiters = delimiters.chars().collect();
        self
    }

    /// Builds the router described by a configuration.
    pub fn from_config(config: &config::Config) -> Result<Self, RoutingError> {
        Ok(
            Self::new(config.routing.is_wildcard(&config.domains), &config.domains)?
                .with_delimiters(&config.routing.recipient_delimiter),
        )
    }

    /// The local part without its extension: `user` for `user+tag` (an empty base keeps the
    /// whole local part: `+tag` is not an extension of nothing).
    fn base<'l>(&self, local: &'l str) -> &'l str {
        match local.find(|c| self.delimiters.contains(&c)) {
            Some(at) if at > 0 => &local[..at],
            _ => local,
        }
    }

    /// Whether mail for `domain` is delivered here.
    #[must_use]
    pub fn is_local_domain(&self, domain: &str) -> bool {
        !domain.is_empty()
            && (self.wildcard || self.domains.contains_key(&domain.to_ascii_lowercase()))
    }

    /// Resolves the bare `RCPT TO:<Postmaster>` (no domain) for a server named `hostname`.
    ///
    /// RFC 5321 §4.5.1 says this form MUST be accepted, so it never fails: it goes to
    /// `postmaster@<hostname>` when the host name is a local domain, else to the postmaster of
    /// the first configured `[[domain]]` (the host name of an MX is often not a mail domain,
    /// for example `mx1.example.org` serving `example.org`).
    #[must_use]
    pub fn resolve_postmaster(&self, hostname: &str) -> Resolution {
        if let Resolution::Local(paths) = self.resolve(POSTMASTER, hostname) {
            return Resolution::Local(paths);
        }
        if let Some(primary) = &self.primary {
            return self.resolve(POSTMASTER, primary);
        }
        // No configured domain and not wildcard cannot pass validation; stay total anyway.
        MailboxPath::new(&hostname.to_ascii_lowercase(), POSTMASTER)
            .map_or(Resolution::UnknownMailbox, |path| {
                Resolution::Local(vec![path])
            })
    }

    /// Resolves the recipient `local_part@domain`.
    ///
    /// `local_part` is the unquoted form (`"a b"@x` is passed as `a b`). An empty `domain` is
    /// never local: for the bare `RCPT TO:<Postmaster>` form, resolve `postmaster` at the
    /// server's own host name.
    #[must_use]
    pub fn resolve(&self, local_part: &str, domain: &str) -> Resolution {
        if domain.is_empty() {
            return Resolution::NotLocal;
        }
        let domain_key = domain.to_ascii_lowercase();
        let local_key = local_part.to_ascii_lowercase();
        let Some(table) = self.domains.get(&domain_key) else {
            if !self.wildcard {
                return Resolution::NotLocal;
            }
            return match MailboxPath::new(&domain_key, self.base(&local_key)) {
                Some(path) => Resolution::Local(vec![path]),
                None => Resolution::UnknownMailbox,
            };
        };
        // An address configured with its delimiter (`a+b`) wins over the extension rule.
        if let Some(paths) = table
            .addresses
            .get(&local_key)
            .or_else(|| table.addresses.get(self.base(&local_key)))
        {
            return Resolution::Local(paths.clone());
        }
        if let Some(paths) = &table.catch_all {
            return Resolution::Local(paths.clone());
        }
        if local_key == POSTMASTER {
            return Resolution::Local(table.postmaster.clone());
        }
        Resolution::UnknownMailbox
    }
}

/// Lowercases and checks the configured domains.
/// The domains that are well-formed, and the problems of the others.
fn collect_domains(
    domains: &[config::Domain],
) -> (HashMap<String, RawDomain<'_>>, Vec<RoutingError>) {
    let mut raw = HashMap::with_capacity(domains.len());
    let mut errors = Vec::new();
    for domain in domains {
        match raw_domain(domain) {
            Ok(entry) => {
                if raw.contains_key(&entry.name) {
                    errors.push(RoutingError::DuplicateDomain(domain.name.clone()));
                } else {
                    raw.insert(entry.name.clone(), entry);
                }
            }
            Err(e) => errors.push(e),
        }
    }
    (raw, errors)
}

/// One `[[domain]]` with its names checked and lowercased.
fn raw_domain(domain: &config::Domain) -> Result<RawDomain<'_>, RoutingError> {
    let name = domain.name.to_ascii_lowercase();
    if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '@' || c == '/') {
        return Err(RoutingError::InvalidDomain(domain.name.clone()));
    }
    if encode_component(&name).is_none() {
        return Err(RoutingError::TooLong(domain.name.clone()));
    }
    let check_local = |local: &str| -> Result<String, RoutingError> {
        if local.is_empty() || local.contains('@') {
            return Err(RoutingError::InvalidLocalPart {
                domain: name.clone(),
                name: local.to_owned(),
            });
        }
        Ok(local.to_ascii_lowercase())
    };
    let duplicate = |local: &str| RoutingError::DuplicateAddress {
        domain: name.clone(),
        name: local.to_owned(),
    };
    let mut mailboxes = HashSet::with_capacity(domain.mailboxes.len());
    for mailbox in &domain.mailboxes {
        if !mailboxes.insert(check_local(mailbox)?) {
            return Err(duplicate(mailbox));
        }
    }
    let mut aliases = HashMap::with_capacity(domain.aliases.len());
    for (alias, targets) in &domain.aliases {
        let key = check_local(alias)?;
        if mailboxes.contains(&key) || aliases.insert(key, targets.as_slice()).is_some() {
            return Err(duplicate(alias));
        }
    }
    Ok(RawDomain {
        name,
        mailboxes,
        aliases,
        catch_all: domain.catch_all.as_deref(),
    })
}

/// Splits an alias target into (domain, local part), both lowercased. A target without `@`
/// is a local part in the alias's own domain. The last `@` separates the domain, since a
/// quoted local part may itself contain `@`.
fn split_target(target: &str, own_domain: &str) -> (String, String) {
    match target.rsplit_once('@') {
        Some((local, domain)) => (domain.to_ascii_lowercase(), local.to_ascii_lowercase()),
        None => (own_domain.to_owned(), target.to_ascii_lowercase()),
    }
}

/// Expands aliases depth-first over the raw domain tables.
struct Expander<'a, 'c> {
    wildcard: bool,
    domains: &'a HashMap<String, RawDomain<'c>>,
}

impl Expander<'_, '_> {
    /// Appends the mailboxes `local@domain` delivers to onto `out`, without duplicates.
    /// `depth` counts the alias steps taken to reach this address; `chain` holds the addresses
    /// being expanded, outermost first, for loop detection and error messages.
    fn expand(
        &self,
        domain: &str,
        local: &str,
        depth: usize,
        chain: &mut Vec<String>,
        out: &mut Vec<MailboxPath>,
    ) -> Result<(), RoutingError> {
        let address = format!("{local}@{domain}");
        if depth > MAX_ALIAS_DEPTH {
            let mut too_deep = chain.clone();
            too_deep.push(address);
            return Err(RoutingError::AliasTooDeep(too_deep));
        }
        let from = || chain.last().cloned().unwrap_or_else(|| address.clone());
        let push = |out: &mut Vec<MailboxPath>, path: Option<MailboxPath>| match path {
            Some(path) => {
                if !out.contains(&path) {
                    out.push(path);
                }
                Ok(())
            }
            None => Err(RoutingError::TooLong(address.clone())),
        };
        let Some(raw) = self.domains.get(domain) else {
            if self.wildcard && !domain.is_empty() {
                return push(out, MailboxPath::new(domain, local));
            }
            return Err(RoutingError::NonLocalTarget {
                from: from(),
                to: address,
            });
        };
        if raw.mailboxes.contains(local) {
            return push(out, MailboxPath::new(domain, local));
        }
        let Some(targets) = raw.aliases.get(local) else {
            // The implicit postmaster mailbox is a valid target, as it always exists.
            if local == POSTMASTER {
                return push(out, MailboxPath::new(domain, local));
            }
            return Err(RoutingError::UnknownTarget {
                from: from(),
                to: address,
            });
        };
        if chain.contains(&address) {
            let mut cycle = chain.clone();
            cycle.push(address);
            return Err(RoutingError::AliasLoop(cycle));
        }
        chain.push(address);
        for target in *targets {
            let (t_domain, t_local) = split_target(target, domain);
            self.expand(&t_domain, &t_local, depth + 1, chain, out)?;
        }
        chain.pop();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::{Component, Path};

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn extensions_reach_the_base_address() {
        let domains = [config::Domain {
            name: "example.org".to_owned(),
            mailboxes: vec!["alice".to_owned(), "a+b".to_owned()],
            aliases: BTreeMap::new(),
            catch_all: None,
        }];
        let router = Router::new(false, &domains).unwrap().with_delimiters("+-");
        let alice = vec![MailboxPath::new("example.org", "alice").unwrap()];
        assert_eq!(
            router.resolve("alice+news", "example.org"),
            Resolution::Local(alice.clone())
        );
        assert_eq!(
            router.resolve("Alice-x+y", "EXAMPLE.org"),
            Resolution::Local(alice.clone())
        );
        // A configured address with the delimiter wins.
        assert_eq!(
            router.resolve("a+b", "example.org"),
            Resolution::Local(vec![MailboxPath::new("example.org", "a+b").unwrap()])
        );
        assert_eq!(
            router.resolve("bob+x", "example.org"),
            Resolution::UnknownMailbox
        );
        assert_eq!(
            router.resolve("+alice", "example.org"),
            Resolution::UnknownMailbox
        );
        // Without delimiters, extensions are plain local parts.
        let plain = Router::new(false, &domains).unwrap();
        assert_eq!(
            plain.resolve("alice+news", "example.org"),
            Resolution::UnknownMailbox
        );
        // Wildcard domains file extensions under the base mailbox.
        let wild = Router::new(true, &[]).unwrap().with_delimiters("+");
        assert_eq!(
            wild.resolve("carol+tag", "any.test"),
            Resolution::Local(vec![MailboxPath::new("any.test", "carol").unwrap()])
        );
    }

    fn domain(
        name: &str,
        mailboxes: &[&str],
        aliases: &[(&str, &[&str])],
        catch_all: Option<&str>,
    ) -> config::Domain {
        config::Domain {
            name: name.to_owned(),
            mailboxes: mailboxes.iter().map(|&m| m.to_owned()).collect(),
            aliases: aliases
                .iter()
                .map(|(alias, targets)| {
                    (
                        (*alias).to_owned(),
                        targets.iter().map(|&t| t.to_owned()).collect(),
                    )
                })
                .collect::<BTreeMap<_, _>>(),
            catch_all: catch_all.map(str::to_owned),
        }
    }

    fn mbox(domain: &str, local: &str) -> MailboxPath {
        MailboxPath::new(domain, local).expect("short names encode")
    }

    fn example_router() -> Router {
        Router::new(
            false,
            &[
                domain(
                    "Example.org",
                    &["alice", "Bob", "carol"],
                    &[
                        ("info", &["alice", "bob"]),
                        ("sales", &["info", "carol", "dave@example.net"]),
                        ("team", &["sales", "alice"]),
                    ],
                    None,
                ),
                domain("example.net", &["dave"], &[], Some("dave")),
            ],
        )
        .expect("valid configuration")
    }

    #[test]
    fn mailbox_matches_case_insensitively() {
        let router = example_router();
        let expected = Resolution::Local(vec![mbox("example.org", "bob")]);
        assert_eq!(router.resolve("bob", "example.org"), expected);
        assert_eq!(router.resolve("BOB", "EXAMPLE.ORG"), expected);
        assert_eq!(
            router.resolve("alice", "example.org"),
            Resolution::Local(vec![mbox("example.org", "alice")])
        );
    }

    #[test]
    fn alias_expands_to_several_mailboxes_through_chains_without_duplicates() {
        let router = example_router();
        assert_eq!(
            router.resolve("Info", "example.org"),
            Resolution::Local(vec![
                mbox("example.org", "alice"),
                mbox("example.org", "bob")
            ])
        );
        // team -> sales -> info -> {alice, bob}; carol; dave@example.net; then alice again.
        assert_eq!(
            router.resolve("team", "example.org"),
            Resolution::Local(vec![
                mbox("example.org", "alice"),
                mbox("example.org", "bob"),
                mbox("example.org", "carol"),
                mbox("example.net", "dave"),
            ])
        );
    }

    #[test]
    fn unknown_mailbox_and_non_local_domain() {
        let router = example_router();
        assert_eq!(
            router.resolve("mallory", "example.org"),
            Resolution::UnknownMailbox
        );
        assert_eq!(router.resolve("alice", "example.com"), Resolution::NotLocal);
        assert_eq!(router.resolve("alice", ""), Resolution::NotLocal);
        // A subdomain is a different domain.
        assert_eq!(
            router.resolve("alice", "mail.example.org"),
            Resolution::NotLocal
        );
        assert!(router.is_local_domain("EXAMPLE.net"));
        assert!(!router.is_local_domain("example.com"));
    }

    #[test]
    fn catch_all_takes_unknown_local_parts() {
        let router = example_router();
        let dave = Resolution::Local(vec![mbox("example.net", "dave")]);
        assert_eq!(router.resolve("anything", "example.net"), dave);
        assert_eq!(router.resolve("postmaster", "example.net"), dave);
    }

    #[test]
    fn bare_postmaster_resolves_whatever_the_host_name() {
        let router = example_router();
        // The host name is not a local domain: the first configured domain's postmaster.
        assert_eq!(
            router.resolve_postmaster("mx1.example.org"),
            Resolution::Local(vec![mbox("example.org", "postmaster")])
        );
        // The host name is a local domain: its own postmaster rules (here its catch-all).
        assert_eq!(
            router.resolve_postmaster("Example.NET"),
            Resolution::Local(vec![mbox("example.net", "dave")])
        );
        let wildcard = Router::new(true, &[]).expect("valid");
        assert_eq!(
            wildcard.resolve_postmaster("mx.test"),
            Resolution::Local(vec![mbox("mx.test", "postmaster")])
        );
    }

    #[test]
    fn postmaster_always_resolves_for_local_domains() {
        let router = example_router();
        assert_eq!(
            router.resolve("PostMaster", "example.org"),
            Resolution::Local(vec![mbox("example.org", "postmaster")])
        );
        let aliased = Router::new(
            false,
            &[domain(
                "a.test",
                &["root"],
                &[("postmaster", &["root"])],
                None,
            )],
        )
        .expect("valid");
        assert_eq!(
            aliased.resolve("postmaster", "a.test"),
            Resolution::Local(vec![mbox("a.test", "root")])
        );
        let wildcard = Router::new(true, &[]).expect("valid");
        assert_eq!(
            wildcard.resolve("postmaster", "any.test"),
            Resolution::Local(vec![mbox("any.test", "postmaster")])
        );
        // An alias may point at the implicit postmaster mailbox.
        let to_postmaster = Router::new(
            false,
            &[domain("b.test", &[], &[("abuse", &["postmaster"])], None)],
        )
        .expect("valid");
        assert_eq!(
            to_postmaster.resolve("abuse", "b.test"),
            Resolution::Local(vec![mbox("b.test", "postmaster")])
        );
    }

    #[test]
    fn wildcard_gives_every_address_its_own_mailbox() {
        let router =
            Router::new(true, &[domain("strict.test", &["only"], &[], None)]).expect("valid");
        assert_eq!(
            router.resolve("Someone", "Anywhere.Example"),
            Resolution::Local(vec![mbox("anywhere.example", "someone")])
        );
        // Configured domains keep their own rules in wildcard mode.
        assert_eq!(
            router.resolve("other", "strict.test"),
            Resolution::UnknownMailbox
        );
        assert_eq!(router.resolve("x", ""), Resolution::NotLocal);
        let too_long = "a".repeat(MAX_COMPONENT_LEN + 1);
        assert_eq!(
            router.resolve(&too_long, "x.test"),
            Resolution::UnknownMailbox
        );
    }

    #[test]
    fn alias_loops_and_deep_chains_are_configuration_errors() {
        let looped = Router::new(
            false,
            &[domain(
                "l.test",
                &[],
                &[("a", &["b"]), ("b", &["c"]), ("c", &["a"])],
                None,
            )],
        );
        assert!(
            matches!(&looped, Err(RoutingError::AliasLoop(chain)) if chain.len() == 4),
            "{looped:?}"
        );
        let self_loop = Router::new(false, &[domain("l.test", &[], &[("a", &["A"])], None)]);
        assert!(
            matches!(self_loop, Err(RoutingError::AliasLoop(_))),
            "{self_loop:?}"
        );

        let names: Vec<String> = (0..=MAX_ALIAS_DEPTH + 1).map(|i| format!("a{i}")).collect();
        let build = |len: usize| {
            let targets: Vec<Vec<&str>> = (0..len).map(|i| vec![names[i + 1].as_str()]).collect();
            let aliases: Vec<(&str, &[&str])> = (0..len)
                .map(|i| (names[i].as_str(), targets[i].as_slice()))
                .collect();
            let last = names[len].as_str();
            Router::new(false, &[domain("d.test", &[last], &aliases, None)])
        };
        let deepest = build(MAX_ALIAS_DEPTH).expect("a chain of MAX_ALIAS_DEPTH steps is allowed");
        assert_eq!(
            deepest.resolve("a0", "d.test"),
            Resolution::Local(vec![mbox("d.test", &names[MAX_ALIAS_DEPTH])])
        );
        assert!(matches!(
            build(MAX_ALIAS_DEPTH + 1),
            Err(RoutingError::AliasTooDeep(_))
        ));
    }

    /// One pass over the configuration finds every problem, in every domain.
    #[test]
    fn every_routing_error_is_reported_at_once() {
        let err = Router::new(
            false,
            &[
                domain("u.test", &["a"], &[("x", &["nobody"])], Some("ghost")),
                domain("v.test", &["b"], &[("y", &["b@elsewhere.test"])], None),
                domain("bad domain", &[], &[], None),
                domain("U.test", &[], &[], None),
            ],
        )
        .unwrap_err();
        let RoutingError::Several(all) = &err else {
            panic!("{err:?}");
        };
        assert_eq!(all.len(), 5, "{err}");
        let text = err.to_string();
        assert!(text.starts_with("5 routing errors:\n  - "), "{text}");
        for part in [
            "`x@u.test` points at `nobody@u.test`",
            "`catch_all of u.test` points at `ghost@u.test`",
            "`y@v.test` points at `b@elsewhere.test`",
            "domain name `bad domain` is invalid",
            "domain `U.test` is configured twice",
        ] {
            assert!(text.contains(part), "{part} missing from:\n{text}");
        }
    }

    #[test]
    fn bad_targets_and_duplicates_are_configuration_errors() {
        let unknown = Router::new(
            false,
            &[domain("u.test", &["a"], &[("x", &["nobody"])], None)],
        );
        assert!(
            matches!(unknown, Err(RoutingError::UnknownTarget { .. })),
            "{unknown:?}"
        );
        let relay = Router::new(
            false,
            &[domain(
                "u.test",
                &["a"],
                &[("x", &["a@elsewhere.test"])],
                None,
            )],
        );
        assert!(
            matches!(relay, Err(RoutingError::NonLocalTarget { .. })),
            "{relay:?}"
        );
        let catch_all = Router::new(false, &[domain("u.test", &["a"], &[], Some("nobody"))]);
        assert!(
            matches!(catch_all, Err(RoutingError::UnknownTarget { .. })),
            "{catch_all:?}"
        );
        let dup_domain = Router::new(
            false,
            &[
                domain("u.test", &[], &[], None),
                domain("U.TEST", &[], &[], None),
            ],
        );
        assert_eq!(
            dup_domain.unwrap_err(),
            RoutingError::DuplicateDomain("U.TEST".to_owned())
        );
        let dup_address = Router::new(false, &[domain("u.test", &["a"], &[("A", &["a"])], None)]);
        assert!(
            matches!(dup_address, Err(RoutingError::DuplicateAddress { .. })),
            "{dup_address:?}"
        );
        let bad_domain = Router::new(false, &[domain("a/b", &[], &[], None)]);
        assert!(
            matches!(bad_domain, Err(RoutingError::InvalidDomain(_))),
            "{bad_domain:?}"
        );
        let bad_local = Router::new(false, &[domain("u.test", &["a@b"], &[], None)]);
        assert!(
            matches!(bad_local, Err(RoutingError::InvalidLocalPart { .. })),
            "{bad_local:?}"
        );
    }

    #[test]
    fn encoding_known_answers() {
        let cases = [
            ("Bob", "bob"),
            ("a.b+tag_x-y", "a.b+tag_x-y"),
            ("", "%empty"),
            (".", "%2e"),
            ("..", "%2e."),
            ("-rf", "%2drf"),
            ("../etc", "%2e.%2fetc"),
            ("a/b", "a%2fb"),
            ("a\0b", "a%00b"),
            ("100%", "100%25"),
            ("\"q u\"", "%22q%20u%22"),
            ("Jos\u{e9}", "jos%c3%a9"),
            ("%empty", "%25empty"),
        ];
        for (input, expected) in cases {
            assert_eq!(
                encode_component(input).as_deref(),
                Some(expected),
                "input {input:?}"
            );
        }
        assert_eq!(
            encode_component(&"a".repeat(MAX_COMPONENT_LEN)).map(|s| s.len()),
            Some(MAX_COMPONENT_LEN)
        );
        assert_eq!(encode_component(&"a".repeat(MAX_COMPONENT_LEN + 1)), None);
        assert_eq!(encode_component(&"/".repeat(86)), None);
    }

    /// The component is something a file system treats as one plain name.
    fn assert_safe_component(component: &str) {
        assert!(!component.is_empty());
        assert!(component.len() <= MAX_COMPONENT_LEN);
        assert!(component != "." && component != "..");
        assert!(!component.starts_with('.') && !component.starts_with('-'));
        assert!(
            component
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'+' | b'-' | b'%')),
            "{component:?}"
        );
    }

    proptest! {
        #[test]
        fn no_input_escapes_the_root(domain in any::<String>(), local in any::<String>()) {
            let Some(path) = MailboxPath::new(&domain, &local) else {
                // Only oversized input may be refused.
                prop_assert!(domain.len() * 3 > MAX_COMPONENT_LEN || local.len() * 3 > MAX_COMPONENT_LEN);
                return Ok(());
            };
            assert_safe_component(path.domain_dir());
            assert_safe_component(path.local_dir());
            let root = Path::new("/srv/maildir");
            let full = root.join(path.relative_path());
            prop_assert!(full.starts_with(root));
            let components: Vec<_> = full.strip_prefix(root).expect("under root").components().collect();
            prop_assert_eq!(components.len(), 2);
            prop_assert!(components.iter().all(|c| matches!(c, Component::Normal(_))));
        }

        #[test]
        fn hostile_local_parts_stay_inside(local in "[./\\\\\\x00%\"a-zA-Z\u{e9}\u{1F600}-]{0,80}") {
            let router = Router::new(true, &[]).expect("valid");
            match router.resolve(&local, "example.test") {
                Resolution::Local(paths) => {
                    prop_assert_eq!(paths.len(), 1);
                    assert_safe_component(paths[0].domain_dir());
                    assert_safe_component(paths[0].local_dir());
                }
                other => prop_assert!(local.len() * 3 > MAX_COMPONENT_LEN, "{:?}", other),
            }
        }

        #[test]
        fn encoding_is_injective_up_to_ascii_case(a in any::<String>(), b in any::<String>()) {
            if let (Some(x), Some(y)) = (encode_component(&a), encode_component(&b)) {
                prop_assert_eq!(x == y, a.eq_ignore_ascii_case(&b));
            }
            prop_assert_eq!(encode_component(&a), encode_component(&a.to_ascii_uppercase()));
        }
    }
}
