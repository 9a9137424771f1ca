//! How a message leaves: the [`Transport`] trait the runner delivers through.

use std::future::Future;

use crate::schedule::Outcome;

/// One delivery attempt: a message to the recipients of one domain.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// The recipients' domain (lowercase).
    pub domain: &'a str,
    /// The envelope sender; `None` for `<>`.
    pub sender: Option<&'a str>,
    /// The recipients, all in `domain`.
    pub recipients: &'a [String],
    /// The whole message, CRLF line endings.
    pub content: &'a [u8],
}

/// Delivers messages: over SMTP to the domain's MX hosts or a smart host, or anything else
/// (tests use a recording transport).
pub trait Transport: Send + Sync + 'static {
    /// Tries to deliver `attempt` and returns one outcome per recipient, in order. Failures of
    /// the whole attempt (DNS, connection) are an outcome for every recipient.
    fn deliver(&self, attempt: Attempt<'_>) -> impl Future<Output = Vec<Outcome>> + Send;
}

/// Every recipient gets the same outcome.
#[must_use]
pub fn all(recipients: usize, outcome: &Outcome) -> Vec<Outcome> {
    vec![outcome.clone(); recipients]
}
