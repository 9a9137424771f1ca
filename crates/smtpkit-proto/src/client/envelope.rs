//! [`Envelope`] and [`Recipient`]: what [`Client::send_mail`](super::Client::send_mail) sends
//! as MAIL and RCPT, with their ESMTP parameters.

use crate::address::{ForwardPath, ReversePath};
use crate::extension::{BodyType, Notify, Ret, XText};

/// One message's envelope. Borrowed: the client encodes it at once and keeps nothing.
///
/// ```
/// use smtpkit_proto::address::{ForwardPath, Mailbox, ReversePath};
/// use smtpkit_proto::client::{Envelope, Recipient};
/// let to = [Recipient::new(ForwardPath::Mailbox(Mailbox::parse("b@example.net").unwrap()))];
/// let envelope = Envelope::new(ReversePath::Mailbox(Mailbox::parse("a@example.org").unwrap()), &to)
///     .with_size(1234);
/// assert_eq!(envelope.size, Some(1234));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The sender (`<>` for bounces).
    pub reverse_path: ReversePath<'a>,
    /// The recipients, in order; results refer to them by index.
    pub recipients: &'a [Recipient<'a>],
    /// The content size in octets, sent as `SIZE=` when offered (RFC 1870), and checked
    /// against the server's limit before anything is sent.
    pub size: Option<u64>,
    /// `BODY=` (RFC 6152, RFC 3030); `SevenBit` sends no parameter. `BinaryMime` content
    /// goes with BDAT.
    pub body: BodyType,
    /// Send `SMTPUTF8` (RFC 6531). Also sent without asking when an address is not ASCII.
    pub smtputf8: bool,
    /// `RET=` (RFC 3461), sent when the server offers DSN.
    pub ret: Option<Ret>,
    /// `ENVID=` (RFC 3461), sent when the server offers DSN.
    pub envid: Option<XText<'a>>,
    /// `REQUIRETLS` (RFC 8689): the message may only travel over TLS to servers that offer
    /// REQUIRETLS; without both, it is refused locally.
    pub requiretls: bool,
}

impl<'a> Envelope<'a> {
    /// An envelope with no parameters.
    pub fn new(reverse_path: ReversePath<'a>, recipients: &'a [Recipient<'a>]) -> Self {
        Self {
            reverse_path,
            recipients,
            size: None,
            body: BodyType::SevenBit,
            smtputf8: false,
            ret: None,
            envid: None,
            requiretls: false,
        }
    }

    /// Declares the content size.
    #[must_use]
    pub fn with_size(mut self, size: u64) -> Self {
        self.size = Some(size);
        self
    }

    /// Sets the body type.
    #[must_use]
    pub fn with_body(mut self, body: BodyType) -> Self {
        self.body = body;
        self
    }

    /// Whether an address needs SMTPUTF8.
    pub(crate) fn needs_smtputf8(&self) -> bool {
        self.smtputf8
            || !self.reverse_path.is_ascii()
            || self.recipients.iter().any(|r| !r.forward_path.is_ascii())
    }
}

/// One recipient, with its RFC 3461 DSN parameters (sent when the server offers DSN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recipient<'a> {
    /// The address.
    pub forward_path: ForwardPath<'a>,
    /// `NOTIFY=`.
    pub notify: Option<Notify>,
    /// `ORCPT=addr-type;xtext`: the address type (`rfc822`) and the original address.
    pub orcpt: Option<(&'a str, XText<'a>)>,
}

impl<'a> Recipient<'a> {
    /// A recipient with no parameters.
    pub fn new(forward_path: ForwardPath<'a>) -> Self {
        Self {
            forward_path,
            notify: None,
            orcpt: None,
        }
    }
}
