//! [`Envelope`]: the current transaction as the application sees it, kept by the dispatcher
//! from the MAIL and RCPT commands it accepted.

use smtpkit_proto::address::{ForwardPath, ReversePath};
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
            reverse_path: unbracket(&from.to_string()),
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
            forward_path: unbracket(&to.to_string()),
            params: params.as_str().to_owned(),
        });
    }
}

fn unbracket(path: &str) -> String {
    path.strip_prefix('<')
        .and_then(|p| p.strip_suffix('>'))
        .unwrap_or(path)
        .to_owned()
}
