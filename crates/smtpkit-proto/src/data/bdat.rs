//! BDAT chunks (RFC 3030 2): exactly `size` octets follow the command line, with no
//! stuffing and no terminator, so reading one is a countdown.

/// Counts down the octets of one BDAT chunk.
///
/// ```
/// use smtpkit_proto::data::BdatReader;
/// let mut r = BdatReader::new(5);
/// assert_eq!(r.take(b"abc"), b"abc");
/// assert_eq!(r.take(b"defQUIT"), b"de");
/// assert!(r.is_done());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BdatReader {
    remaining: u64,
}

impl BdatReader {
    /// A reader for a chunk of `size` octets.
    pub const fn new(size: u64) -> Self {
        Self { remaining: size }
    }

    /// The part of `input` that belongs to the chunk; the caller consumes exactly that many.
    pub fn take<'i>(&mut self, input: &'i [u8]) -> &'i [u8] {
        let n = usize::try_from(self.remaining).map_or(input.len(), |r| r.min(input.len()));
        self.remaining -= n as u64;
        &input[..n]
    }

    /// Octets still to come.
    pub const fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Whether the whole chunk has been read.
    pub const fn is_done(&self) -> bool {
        self.remaining == 0
    }
}
