//! Where CR, LF and dot are in 64 octets, as bit masks built from SIMD compares, and the
//! first octet of the content that needs more than being handed out as it is.
//!
//! Built only with the `simd` feature on x86: the masks come from AVX2 or AVX-512 compares
//! that `pulp` runs behind its run-time check.

use super::dot::clean_blocks;

/// Where the octets of 64 in a row are CR, LF and dot: bit `i` for octet `i`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Marks {
    cr: u64,
    lf: u64,
    dot: u64,
}

/// How far ahead of the scan the cache lines of the input are asked for.
///
/// The hardware prefetcher alone leaves a scan of content that is not in the L1/L2 cache
/// waiting on memory (0.6-0.7x of memcpy's speed over the same reads on the project's
/// machine); asking 2 KiB ahead keeps enough lines in flight to run at memcpy's pace. Content a
/// socket read has just written is in the cache already, where a prefetch costs one
/// instruction and nothing else.
///
/// The scan asks past the end of its input too. A prefetch is a hint that never faults and
/// changes no result, and past the end is where a caller's next read lands: the rest of the
/// buffer a socket read fills, or the rest of a message already in memory. Stopping at the
/// end instead left the first lines of every read waiting on memory (0.80-0.92x against
/// 0.96-1.03x of memcpy in a scratch harness, 8 KiB reads of 50 MB).
pub(super) const AHEAD: usize = 2048;

/// Builds the [`Marks`] of 64 octets; implemented for each instruction set the CPU may have.
pub(super) trait Marker: Copy {
    fn marks(self, octets: &[u8; 64]) -> Marks;

    /// [`clean_blocks`] with the block size that suits the vectors, asking for the input
    /// [`AHEAD`] of each block.
    fn clean_end(self, input: &[u8], from: usize) -> usize;

    /// A hint to the CPU to load the cache line `at` octets from the start of `input`, within
    /// the input or past it (no effect on results either way: a prefetch never faults).
    fn prefetch(self, input: &[u8], at: usize);
}

/// [`Marker::prefetch`] through SSE's `prefetcht0`, which every x86-64 CPU has.
#[inline(always)]
fn prefetch_t0(sse: pulp::core_arch::x86::Sse, input: &[u8], at: usize) {
    // Forming a pointer is safe, past the end too, and a prefetch never dereferences it.
    sse._mm_prefetch::<_MM_HINT_T0>(input.as_ptr().wrapping_add(at).cast());
}

/// Asks for the octets `from..to` from the start of `input`, a cache line at a time.
#[inline(always)]
pub(super) fn prefetch_range(marker: impl Marker, input: &[u8], from: usize, to: usize) {
    let mut at = from;
    while at < to {
        marker.prefetch(input, at);
        at += 64;
    }
}

/// [`clean_blocks`] of 128 octets with both cache lines [`AHEAD`] of each block asked for.
#[inline(always)]
fn clean_end_ahead(marker: impl Marker, input: &[u8], from: usize) -> usize {
    clean_blocks::<128>(input, from, |at| {
        marker.prefetch(input, at + AHEAD);
        marker.prefetch(input, at + AHEAD + 64);
    })
}

#[cfg(target_arch = "x86")]
use core::arch::x86::{__m256i as Vector, _MM_HINT_T0};
#[cfg(target_arch = "x86_64")]
use core::arch::x86_64::{__m256i as Vector, _MM_HINT_T0};

impl Marker for pulp::x86::V3 {
    /// Four 32-octet vectors a block: the loop and its branch paid once per 128 octets.
    #[inline(always)]
    fn clean_end(self, input: &[u8], from: usize) -> usize {
        clean_end_ahead(self, input, from)
    }

    #[inline(always)]
    fn prefetch(self, input: &[u8], at: usize) {
        prefetch_t0(self.sse, input, at);
    }

    /// Two 32-octet loads, three compares and three movemasks each.
    #[inline(always)]
    fn marks(self, octets: &[u8; 64]) -> Marks {
        let [low, high]: [Vector; 2] = pulp::cast(*octets);
        let mark = |byte: u8| {
            let byte = self.avx._mm256_set1_epi8(byte as i8);
            let half = |v: Vector| {
                self.avx2
                    ._mm256_movemask_epi8(self.avx2._mm256_cmpeq_epi8(v, byte))
            };
            // The movemask's 32 bits, sign and all, are the mark bits: reinterpret, no extend.
            u64::from(half(low) as u32) | u64::from(half(high) as u32) << 32
        };
        Marks {
            cr: mark(b'\r'),
            lf: mark(b'\n'),
            dot: mark(b'.'),
        }
    }
}

impl Marker for pulp::x86::V4 {
    /// Two 64-octet vectors a block.
    #[inline(always)]
    fn clean_end(self, input: &[u8], from: usize) -> usize {
        clean_end_ahead(self, input, from)
    }

    #[inline(always)]
    fn prefetch(self, input: &[u8], at: usize) {
        prefetch_t0(self.sse, input, at);
    }

    #[inline(always)]
    fn marks(self, octets: &[u8; 64]) -> Marks {
        let octets = pulp::cast(*octets);
        let mark = |byte: u8| {
            let byte = self.avx512f._mm512_set1_epi8(byte as i8);
            self.avx512bw._mm512_cmpeq_epi8_mask(octets, byte)
        };
        Marks {
            cr: mark(b'\r'),
            lf: mark(b'\n'),
            dot: mark(b'.'),
        }
    }
}

impl Marks {
    /// The octets at which something must be done, looking back from each octet: an LF not
    /// after a CR, an octet other than LF after a CR (the bit is on the octet after the bare
    /// CR), a dot after a CRLF. `carry` is the CR marks of the 64 octets before.
    #[inline(always)]
    fn events(self, carry: u64) -> u64 {
        let after_cr = self.cr << 1 | carry >> 63;
        let after_cr_2 = self.cr << 2 | carry >> 62;
        (after_cr ^ self.lf) | (after_cr_2 & self.dot)
    }

    /// These marks shifted down by `n` < 64 octets: the marks of the 64 octets `n` further on,
    /// the last `n` of them none.
    #[inline(always)]
    fn skip(self, n: usize) -> Self {
        Self {
            cr: self.cr >> n,
            lf: self.lf >> n,
            dot: self.dot >> n,
        }
    }
}

/// What stops the scan of [`next_event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Event {
    /// Nothing up to the end of the input (a last CR or CRLF is left to the caller).
    End,
    /// A dot at this offset starts a line.
    Stuffed(usize),
    /// A bare CR or bare LF at this offset.
    Bare(usize),
}

/// The first [`Event`] at or after `from`, 64 octets at a time, each loaded once.
///
/// An octet is an event when it needs more than being handed out as it is: a bare CR or LF, or
/// a dot after a CRLF. Each octet is checked against the one or two before it (the marks
/// shifted by one and two, with the CR marks of the previous 64 octets carried in), so the
/// check needs no look-ahead and every block of 64 octets is decided on its own. `from` must
/// not split a CRLF nor follow one that starts a dotted line: the octets before it count as
/// neither CR nor LF.
#[inline(always)]
pub(super) fn next_event(marker: impl Marker, input: &[u8], from: usize) -> Event {
    let rest = &input[from..];
    let (blocks, tail) = rest.as_chunks::<64>();
    let mut carry = 0;
    let mut at = from;
    for block in blocks {
        marker.prefetch(input, at + AHEAD);
        let marks = marker.marks(block);
        let events = marks.events(carry);
        if events != 0 {
            return event(marks, carry, events, at);
        }
        carry = marks.cr;
        at += 64;
    }
    if tail.is_empty() {
        return Event::End;
    }
    // The last octets: the 64 that end the input shifted down to the first of the tail (the
    // octets before it drop out), or, in a shorter input, the tail copied into zeros.
    let marks = match input.last_chunk::<64>() {
        Some(last) => marker.marks(last).skip(64 - tail.len()),
        None => {
            let mut padded = [0; 64];
            padded[..tail.len()].copy_from_slice(tail);
            marker.marks(&padded)
        }
    };
    // Past the input, the shifted marks read CR as not followed by LF: not decided yet.
    let events = marks.events(carry) & ((1 << tail.len()) - 1);
    if events == 0 {
        return Event::End;
    }
    event(marks, carry, events, at)
}

/// The first of `events` (non-zero) of the 64 octets at `at`, named.
#[cold]
#[inline(never)]
fn event(marks: Marks, carry: u64, events: u64, at: usize) -> Event {
    let i = events.trailing_zeros();
    let after_cr_2 = marks.cr << 2 | carry >> 62;
    if (after_cr_2 & marks.dot) >> i & 1 != 0 {
        // Earlier events would have come first if the two octets before were not CRLF.
        Event::Stuffed(at + i as usize)
    } else if marks.lf >> i & 1 != 0 {
        Event::Bare(at + i as usize)
    } else {
        // The octet before is a CR that no LF follows (the first octet cannot be: `carry` is
        // zero at `from`, and a CR of the previous block was checked here).
        Event::Bare(at + i as usize - 1)
    }
}
