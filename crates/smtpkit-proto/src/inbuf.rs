//! [`InBuf`]: the input buffer an adapter reads into and the core consumes from.

/// A read buffer that hands its unconsumed bytes to
/// [`Server::handle_input`](crate::Server::handle_input) and drops what was consumed.
///
/// It starts small so idle sessions stay cheap, and doubles (up to a maximum) whenever a read
/// fills all of its free space, so bulk DATA is read in large pieces. A session waiting for its
/// client can give the memory back with [`release_if_empty`](Self::release_if_empty).
///
/// ```
/// use smtpkit_proto::InBuf;
/// let mut buf = InBuf::new(16, 64);
/// let spare = buf.spare();
/// spare[..6].copy_from_slice(b"NOOP\r\n");
/// buf.commit(6);
/// assert_eq!(buf.data(), b"NOOP\r\n");
/// buf.consume(6);
/// assert!(buf.data().is_empty());
/// ```
#[derive(Debug)]
pub struct InBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    initial: usize,
    max: usize,
    grow: bool,
}

impl InBuf {
    /// A buffer of `initial` bytes that may grow to `max`.
    pub fn new(initial: usize, max: usize) -> Self {
        let initial = initial.max(1);
        Self {
            buf: vec![0; initial],
            start: 0,
            end: 0,
            initial,
            max: max.max(initial),
            grow: false,
        }
    }

    /// The bytes not yet consumed.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Drops `n` bytes from the front (the `consumed` of a [`Progress`](crate::Progress)).
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Free space to read into; moves unconsumed bytes to the front or grows if needed.
    /// Empty only when the buffer is full at its maximum size.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.buf.is_empty() {
            self.buf = vec![0; self.initial];
        }
        if self.grow && self.buf.len() < self.max {
            let len = (self.buf.len() * 2).min(self.max);
            self.buf.resize(len, 0);
            self.grow = false;
        }
        if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() && self.buf.len() < self.max {
            let len = (self.buf.len() * 2).min(self.max);
            self.buf.resize(len, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Marks `n` bytes of [`spare`](Self::spare) as filled by a read.
    pub fn commit(&mut self, n: usize) {
        let free = self.buf.len() - self.end;
        self.grow = n >= free;
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Frees the allocation if no byte is waiting to be consumed; the next
    /// [`spare`](Self::spare) allocates the initial size again. Meant for a read that would
    /// block: an idle connection then costs no buffer.
    pub fn release_if_empty(&mut self) {
        if self.start == self.end {
            self.buf = Vec::new();
            self.start = 0;
            self.end = 0;
            self.grow = false;
        }
    }

    /// Bytes currently allocated.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacts_and_grows() {
        let mut b = InBuf::new(4, 16);
        b.spare()[..4].copy_from_slice(b"abcd");
        b.commit(4);
        b.consume(3);
        // Full read: the next spare() grows.
        assert!(b.spare().len() >= 4);
        assert_eq!(b.data(), b"d");
        assert_eq!(b.capacity(), 8);
        let n = b.spare().len();
        b.commit(n);
        let _ = b.spare();
        assert_eq!(b.capacity(), 16);
        let n = b.spare().len();
        b.commit(n);
        // At its maximum, the buffer only compacts: three bytes were consumed.
        assert_eq!(b.spare().len(), 3);
        b.commit(3);
        assert!(b.spare().is_empty());
        assert_eq!(b.data().len(), 16);
    }

    #[test]
    fn releases_only_when_empty() {
        let mut b = InBuf::new(8, 64);
        b.spare()[..3].copy_from_slice(b"abc");
        b.commit(3);
        b.release_if_empty();
        assert_eq!(b.data(), b"abc", "unconsumed bytes are kept");
        assert_eq!(b.capacity(), 8);
        b.consume(3);
        b.release_if_empty();
        assert_eq!(b.capacity(), 0);
        assert!(b.data().is_empty());
        assert_eq!(
            b.spare().len(),
            8,
            "the next read gets the initial size again"
        );
        b.spare()[..2].copy_from_slice(b"de");
        b.commit(2);
        assert_eq!(b.data(), b"de");
    }
}
