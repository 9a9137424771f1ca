//! [`Envelope`]: the current transaction as the application sees it, kept by the dispatcher
//! from the MAIL and RCPT commands it accepted.

use std::fmt::Write as _;

use smtpkit_proto::address::{DomainPart, ForwardPath, LocalPart, Mailbox, ReversePath};
use smtpkit_proto::extension::{BodyType, Parameter, Parameters};

/// The transaction in progress: its sender, the recipients accepted so far and the MAIL
/// parameters that shape the message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Envelope {
    /// The reverse path as given in MAIL FROM, without angle brackets; empty for `<>`.
    pub reverse_path: String,
    /// The MAIL parameters as sent (`SIZE=100 BODY=8BITMIME`).
    pub mail_params: String,
    /// `BODY=`, when given.
    pub body: Option<BodyType>,
    /// Whether MAIL carried `SMTPUTF8`.
    pub smtputf8: bool,
    /// `SIZE=`, when given: the client's estimate of the message size.
    pub size: Option<u64>,
    /// The recipients accepted so far, in RCPT order.
    pub recipients: Vec<Recipient>,
}

/// One accepted recipient.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recipient {
    /// The forward path as given in RCPT TO, without angle brackets.
    pub forward_path: String,
    /// The RCPT parameters as sent (`NOTIFY=NEVER`).
    pub params: String,
}

impl Envelope {
    /// The envelope of an accepted MAIL FROM.
    pub(crate) fn new(from: &ReversePath<'_>, params: &Parameters<'_>) -> Self {
        let mut envelope = Self {
            reverse_path: match from {
                ReversePath::Null => String::new(),
                ReversePath::Mailbox(m) => mailbox_text(m),
            },
            mail_params: params.as_str().to_owned(),
            ..Self::default()
        };
        for param in params.iter() {
            match param {
                Parameter::Body(b) => envelope.body = Some(b),
                Parameter::SmtpUtf8 => envelope.smtputf8 = true,
                Parameter::Size(n) => envelope.size = Some(n),
                _ => {}
            }
        }
        envelope
    }

    /// Adds an accepted RCPT TO.
    pub(crate) fn add(&mut self, to: &ForwardPath<'_>, params: &Parameters<'_>) {
        self.recipients.push(Recipient {
            forward_path: match to {
                ForwardPath::Postmaster => "Postmaster".to_owned(),
                ForwardPath::Mailbox(m) => mailbox_text(m),
            },
            params: params.as_str().to_owned(),
        });
    }
}

/// The mailbox as its `Display` writes it (the path without angle brackets), copied in one
/// go for the common dot-string at a domain rather than through the formatting machinery,
/// which cost more than the rest of taking MAIL or RCPT.
fn mailbox_text(mailbox: &Mailbox<'_>) -> String {
    match (mailbox.local_part(), mailbox.domain()) {
        (LocalPart::Dot(local), DomainPart::Domain(domain)) => {
            let domain = domain.as_str();
            let mut text = String::with_capacity(local.len() + 1 + domain.len());
            text.push_str(local);
            text.push('@');
            text.push_str(domain);
            text
        }
        _ => {
            let mut text = String::new();
            // Writing into a String cannot fail.
            let _ = write!(text, "{mailbox}");
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_kept_as_their_display_without_brackets() {
        for text in [
            "load@smtp-load.invalid",
            "a.b-c+d@Example.ORG",
            "\"john doe\"@example.org",
            "\"a\\\"b\"@example.org",
            "user@[192.0.2.1]",
            "user@[IPv6:2001:db8::1]",
            "jos\u{e9}@b\u{fc}cher.example",
        ] {
            let mailbox = Mailbox::parse(text).unwrap();
            let shown = ForwardPath::Mailbox(mailbox).to_string();
            let unbracketed = &shown[1..shown.len() - 1];
            assert_eq!(mailbox_text(&mailbox), unbracketed, "{text}");
        }
    }
}
