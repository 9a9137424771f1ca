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

    /// Gives up the allocation if no byte is waiting to be consumed, and returns it (to be
    /// dropped, or kept for [`reuse`](Self::reuse) by another buffer); the next
    /// [`spare`](Self::spare) allocates the initial size again. Meant for a read that would
    /// block: an idle connection then costs no buffer.
    pub fn release_if_empty(&mut self) -> Option<Vec<u8>> {
        if self.start != self.end || self.buf.is_empty() {
            return None;
        }
        self.start = 0;
        self.end = 0;
        self.grow = false;
        Some(std::mem::take(&mut self.buf))
    }

    /// Reads into `buf` from now on, if this buffer has no allocation (after
    /// [`release_if_empty`](Self::release_if_empty)): a recycled allocation saves allocating
    /// and zeroing a fresh one. `buf`'s contents are never read as input; it is grown to the
    /// initial size if smaller. Returns `buf` when this buffer already has an allocation.
    pub fn reuse(&mut self, mut buf: Vec<u8>) -> Option<Vec<u8>> {
        if !self.buf.is_empty() {
            return Some(buf);
        }
        if buf.len() < self.initial {
            buf.resize(self.initial, 0);
        }
        self.buf = buf;
        None
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
        assert_eq!(b.release_if_empty().map(|v| v.len()), Some(8));
        assert_eq!(b.release_if_empty(), None, "released once");
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
        assert_eq!(b.release_if_empty(), None, "unconsumed bytes are kept");
    }

    #[test]
    fn reuses_a_released_allocation() {
        let mut a = InBuf::new(8, 64);
        a.spare()[..4].copy_from_slice(b"left");
        a.commit(4);
        a.consume(4);
        let released = a.release_if_empty().unwrap();
        let mut b = InBuf::new(8, 64);
        // A buffer that has its own allocation hands the offered one back.
        assert_eq!(b.reuse(released).map(|v| v.len()), Some(8));
        b.spare();
        let mut released = b.release_if_empty().unwrap();
        released.truncate(2);
        assert_eq!(a.reuse(released), None);
        // Grown to the initial size; the old bytes are not input.
        assert_eq!(a.capacity(), 8);
        assert!(a.data().is_empty());
        assert_eq!(a.spare().len(), 8);
        a.spare()[..2].copy_from_slice(b"ok");
        a.commit(2);
        assert_eq!(a.data(), b"ok");
    }
}
