//! [`Body`]: where a message's content comes from; [`Delivery`]: what became of each
//! recipient.

use futures_io::AsyncRead;
use smtpkit_proto::Reply;

use super::Error;

/// A message's content, streamed to the server as it is read. The core normalizes line
/// endings to CRLF and dot-stuffs for DATA, or sends it byte for byte with BDAT.
#[non_exhaustive]
pub enum Body<'a> {
    /// Content in memory, handed to the core in pieces of up to `ClientOptions::output_buffer`.
    Bytes(&'a [u8]),
    /// Content read as it goes out (a spool file, a pipe). Read in chunks of at most
    /// [`CHUNK`] octets, never held whole.
    Reader(&'a mut (dyn AsyncRead + Send + Unpin)),
}

impl std::fmt::Debug for Body<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bytes(b) => write!(f, "Body::Bytes({} octets)", b.len()),
            Self::Reader(_) => f.write_str("Body::Reader"),
        }
    }
}

/// The size of each read from a [`Body::Reader`] (one BDAT chunk each), and the smallest piece
/// of a [`Body::Bytes`]: the core's output cap (`ClientOptions::output_buffer`, 64 KiB by
/// default) holds a few of them.
pub const CHUNK: usize = 16 * 1024;

/// What became of one message: one entry per recipient of the envelope, in its order.
///
/// `Ok` holds the reply that made the server responsible for the message for that recipient
/// (the reply to the end of the content; with LMTP, that recipient's own). `Err` holds why
/// not: the refusal of that RCPT, of MAIL, of DATA or of the message, or, when the connection
/// failed before the server answered, that failure (temporary).
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Per recipient, in envelope order.
    pub recipients: Vec<Result<Reply<'static>, Error>>,
}

impl Delivery {
    /// How many recipients the server took the message for.
    pub fn delivered(&self) -> usize {
        self.recipients.iter().filter(|r| r.is_ok()).count()
    }

    /// Whether the server took the message for every recipient.
    pub fn all_delivered(&self) -> bool {
        self.recipients.iter().all(Result::is_ok)
    }

    /// The indices of recipients worth retrying later (temporary failures).
    pub fn temporary_failures(&self) -> impl Iterator<Item = usize> + '_ {
        self.recipients
            .iter()
            .enumerate()
            .filter(|(_, r)| r.as_ref().is_err_and(Error::is_temporary))
            .map(|(i, _)| i)
    }
}
