//! DATA content (RFC 5321 4.5.2): dot-unstuffing on the way in, dot-stuffing on the way out,
//! and the one place that decides what ends a message.
//!
//! Only `CRLF "." CRLF` ends a message. A line start is the start of the content or the
//! position after a CRLF, and nothing else: a bare LF or bare CR never starts a line, so none
//! of the bare variants of the end marker (`LF.LF`, `CR.CR`, `LF.CRLF`, `CRLF.LF`, `CR.CRLF`,
//! `CRLF.CR`) can end a message (the "SMTP smuggling" class). What happens to the bare
//! CR or LF itself is the [`BareLineEnding`] policy.

use memchr::memchr2;

#[cfg(all(feature = "simd", any(target_arch = "x86", target_arch = "x86_64")))]
use super::marks::{AHEAD, Event, Marker, next_event, prefetch_range};

/// What to do with a CR or LF that is not part of a CRLF pair in message content.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum BareLineEnding {
    /// Read the message to its end, then refuse it with 550 5.6.0; nothing is delivered.
    Reject,
    /// Turn each bare CR and bare LF into CRLF, like Postfix 3.9's default
    /// (`smtpd_forbid_bare_newline = normalize`). Such a line break never starts a line that
    /// could end the message or have a dot removed.
    #[default]
    Normalize,
}

/// One step of [`DotDecoder::decode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded<'i> {
    /// Message content. `data` is a slice of the input (or a static CRLF when normalizing);
    /// the caller consumes `consumed` input bytes, which can differ from `data.len()`.
    Data {
        /// Un-stuffed content.
        data: &'i [u8],
        /// Input bytes used.
        consumed: usize,
    },
    /// The end-of-data line; consume `consumed` bytes (the final `.CRLF`).
    End {
        /// Input bytes used.
        consumed: usize,
    },
    /// Consume `consumed` bytes, then call again with more input: what is left could be the
    /// start of the end marker.
    NeedMore {
        /// Input bytes used.
        consumed: usize,
    },
}

/// Incremental DATA decoder: dot-unstuffing, end-of-data detection, bare CR/LF policy.
///
/// Feed it the unconsumed input each time; split the input anywhere and the content comes out
/// the same.
///
/// ```
/// use smtpkit_proto::data::{BareLineEnding, Decoded, DotDecoder};
/// let mut d = DotDecoder::new(BareLineEnding::Reject);
/// let input = b"Hi\r\n..dot\r\n.\r\nQUIT\r\n";
/// let mut pos = 0;
/// let mut body = Vec::new();
/// loop {
///     match d.decode(&input[pos..]) {
///         Decoded::Data { data, consumed } => { body.extend_from_slice(data); pos += consumed }
///         Decoded::End { consumed } => { pos += consumed; break }
///         Decoded::NeedMore { .. } => unreachable!(),
///     }
/// }
/// assert_eq!(body, b"Hi\r\n.dot\r\n");
/// assert_eq!(&input[pos..], b"QUIT\r\n");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DotDecoder {
    policy: BareLineEnding,
    line_start: bool,
    saw_bare: bool,
    /// The scan that suits the lines seen lately; see [`Scan`].
    scan: Scan,
    /// The widest vectors the scan may use when the CPU has them; narrower only in tests.
    widest: Widest,
    /// How many octets at the start of the next input were already asked for
    /// ([`Marker::prefetch`]): the rest of this input when the caller passes it again, as
    /// callers do. Only a hint: wrong, it costs time, never a result.
    warm: u16,
}

/// Vector widths, narrowest first: a limit on what [`Blocks::detect`] may pick.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Widest {
    /// Only the tests hold a decoder to the fallback.
    #[cfg_attr(not(test), expect(dead_code))]
    Baseline,
    /// Never built without the `simd` feature, where only the fallback exists.
    #[allow(dead_code)]
    Avx2,
    Avx512,
}

/// How [`DotDecoder`] crosses clean content.
///
/// Blocks cost the same per octet whatever the line length, with no call per line; `memchr2`
/// costs a call per line but then runs on the widest vectors the CPU has (it picks them at run
/// time, which the blocks, compiled for the baseline x86-64, cannot). Short lines, most of real
/// mail, go faster in blocks; lines of several hundred octets with `memchr2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scan {
    /// 64-octet blocks; every [`PROBE_BLOCKS`] blocks one line ending is found with `memchr2`
    /// to see how long the lines are.
    Blocks,
    /// One `memchr2` per line ending; the count of short lines in a row, to go back to blocks.
    PerLine { short: u8 },
}

/// A line at least this long is crossed faster by `memchr2` than by blocks: a call costs
/// about as much as four blocks.
const LONG_LINE: usize = 256;
/// Short lines in a row that send a per-line scan back to blocks; one short line among long
/// ones is not worth the switch.
const SHORT_LINES_TO_BLOCKS: u8 = 4;
/// [`DotDecoder::warm`] after a scan: all of [`AHEAD`].
#[cfg(all(feature = "simd", any(target_arch = "x86", target_arch = "x86_64")))]
const WARM_AFTER_SCAN: u16 = {
    assert!(AHEAD <= u16::MAX as usize);
    AHEAD as u16
};

/// Blocks between two looks at the line length. Smaller in unit tests, so the proptests cross
/// from one scan to the other on inputs of a few hundred octets.
const PROBE_BLOCKS: usize = if cfg!(test) { 2 } else { 64 };

impl DotDecoder {
    /// A decoder positioned at the start of the content (right after the 354 reply).
    pub const fn new(policy: BareLineEnding) -> Self {
        Self {
            policy,
            line_start: true,
            saw_bare: false,
            scan: Scan::Blocks,
            widest: Widest::Avx512,
            warm: 0,
        }
    }

    /// Whether a bare CR or LF has been seen so far.
    pub const fn saw_bare_line_ending(&self) -> bool {
        self.saw_bare
    }

    /// Decodes the next piece of `input`.
    pub fn decode<'i>(&mut self, input: &'i [u8]) -> Decoded<'i> {
        let mut pos = 0;
        // Where the line at `pos` began, when known: to measure lines for the choice of scan.
        let line_begin = self.line_start.then_some(0);
        if self.line_start {
            if input.first() == Some(&b'.') {
                match (input.get(1), input.get(2)) {
                    (None, _) | (Some(b'\r'), None) => return Decoded::NeedMore { consumed: 0 },
                    (Some(b'\r'), Some(b'\n')) => return Decoded::End { consumed: 3 },
                    // "If the first character is a period and there are other characters on
                    // the line, the first character is deleted" (RFC 5321 4.5.2).
                    _ => pos = 1,
                }
            } else if input.is_empty() {
                return Decoded::NeedMore { consumed: 0 };
            }
            self.line_start = false;
        }
        let start = pos;
        match Blocks::detect(self.widest) {
            #[cfg(all(feature = "simd", any(target_arch = "x86", target_arch = "x86_64")))]
            Blocks::Avx512(avx512) => avx512.vectorize(MarkedDecode {
                decoder: self,
                marker: avx512,
                input,
                start,
            }),
            #[cfg(all(feature = "simd", any(target_arch = "x86", target_arch = "x86_64")))]
            Blocks::Avx2(avx2) => avx2.vectorize(MarkedDecode {
                decoder: self,
                marker: avx2,
                input,
                start,
            }),
            Blocks::Portable => self.decode_lines(input, start, line_begin),
        }
    }

    #[cfg(all(feature = "simd", any(target_arch = "x86", target_arch = "x86_64")))]
    /// The rest of [`decode`](Self::decode) from `start` (past a line start's dot) with the
    /// marks of 64 octets at a time: no call per line, only a stuffed line, a bare CR or LF and
    /// the end of the input stop the scan.
    #[inline(always)]
    fn decode_marked<'i>(
        &mut self,
        marker: impl Marker,
        input: &'i [u8],
        start: usize,
    ) -> Decoded<'i> {
        let decoded = self.decode_marked_from(marker, input, start);
        // The scan asked for everything up to `AHEAD` past where it stopped, where the next
        // input starts.
        self.warm = WARM_AFTER_SCAN;
        decoded
    }

    #[cfg(all(feature = "simd", any(target_arch = "x86", target_arch = "x86_64")))]
    /// [`decode_marked`](Self::decode_marked) less the bookkeeping of [`warm`](Self::warm).
    #[inline(always)]
    fn decode_marked_from<'i>(
        &mut self,
        marker: impl Marker,
        input: &'i [u8],
        start: usize,
    ) -> Decoded<'i> {
        // The scan asks for each line `AHEAD` of itself, so the first `AHEAD` octets of a new
        // input are asked for here, at once: that keeps memory busy from the first block.
        prefetch_range(marker, input, start + usize::from(self.warm), start + AHEAD);
        let mut pos = start;
        loop {
            // Runs of clean blocks first, checked with the fewest instructions per octet; the
            // marks then find the exact event in the block that ended the run, or cross the
            // last octets. An LF at `pos` is a bare one, which the blocks do not check.
            if input.get(pos) != Some(&b'\n') {
                let clean_end = marker.clean_end(input, pos);
                // A run that ends inside a CRLF checked the octet after it: not a dot.
                if clean_end > pos {
                    pos = clean_end + usize::from(input[clean_end - 1] == b'\r');
                }
            }
            let bare = match next_event(marker, input, pos) {
                Event::End => {
                    // A trailing CR may be the start of CRLF: keep it back. After a trailing
                    // CRLF the next octet starts a line, which the next call looks at.
                    let end = match input.last() {
                        Some(b'\r') => input.len() - 1,
                        Some(b'\n') if input.len() >= 2 && input[input.len() - 2] == b'\r' => {
                            self.line_start = true;
                            input.len()
                        }
                        _ => input.len(),
                    };
                    return slice(input, start, end.max(start));
                }
                Event::Stuffed(dot) => {
                    self.line_start = true;
                    return slice(input, start, dot);
                }
                Event::Bare(i) => i,
            };
            self.saw_bare = true;
            match self.policy {
                // The message will be refused; keep it as content and scan on.
                BareLineEnding::Reject => pos = bare + 1,
                BareLineEnding::Normalize if bare > start => return slice(input, start, bare),
                BareLineEnding::Normalize => {
                    return Decoded::Data {
                        data: b"\r\n",
                        consumed: bare + 1,
                    };
                }
            }
        }
    }

    /// The rest of [`decode`](Self::decode) from `start`, for code built for the target's
    /// baseline: clean blocks, then one line ending found with `memchr2`.
    fn decode_lines<'i>(
        &mut self,
        input: &'i [u8],
        start: usize,
        mut line_begin: Option<usize>,
    ) -> Decoded<'i> {
        let mut pos = start;
        let blocks = Blocks::Portable;
        loop {
            // Here `pos` never splits a CRLF, and if it is a line start its first byte is not a
            // dot: the blocks may start at `pos` unless an LF (a bare one, then) is there.
            if self.scan == Scan::Blocks && input.get(pos) != Some(&b'\n') {
                let clean_end = blocks.clean_end(input, pos);
                if clean_end > pos {
                    pos = clean_end;
                    line_begin = None;
                    // The last block checked the byte after it; step over the LF of a CRLF
                    // the blocks ended in the middle of (the line after it was checked too).
                    if input[pos - 1] == b'\r' {
                        pos += 1;
                        line_begin = Some(pos);
                    }
                }
            }
            // One line ending (or the end of the input), the way the line-at-a-time decoder
            // handles it; then back to the blocks.
            let Some(offset) = memchr2(b'\r', b'\n', &input[pos..]) else {
                return slice(input, start, input.len());
            };
            let i = pos + offset;
            if input[i] == b'\r' {
                match input.get(i + 1) {
                    // Keep a trailing CR back: it may be the start of CRLF.
                    None => return slice(input, start, i),
                    Some(b'\n') => {
                        self.scan = next_scan(self.scan, line_begin.map_or(offset, |b| i - b));
                        pos = i + 2;
                        line_begin = Some(pos);
                        // Stop before a line that starts with a dot, or at the end of input,
                        // so the next call looks at the line start with nothing else pending.
                        if pos == input.len() || input[pos] == b'.' {
                            self.line_start = true;
                            return slice(input, start, pos);
                        }
                        continue;
                    }
                    Some(_) => {}
                }
            }
            self.saw_bare = true;
            match self.policy {
                // The message will be refused; keep it as content and scan on.
                BareLineEnding::Reject => pos = i + 1,
                BareLineEnding::Normalize if i > start => return slice(input, start, i),
                BareLineEnding::Normalize => {
                    return Decoded::Data {
                        data: b"\r\n",
                        consumed: i + 1,
                    };
                }
            }
        }
    }
}

#[cfg(all(feature = "simd", any(target_arch = "x86", target_arch = "x86_64")))]
/// [`DotDecoder::decode_marked`] as a call that `pulp` compiles with the marker's target
/// features: a closure's body would be a function of its own, compiled without them, and
/// then every intrinsic in it a call.
struct MarkedDecode<'d, 'i, M> {
    decoder: &'d mut DotDecoder,
    marker: M,
    input: &'i [u8],
    start: usize,
}

#[cfg(all(feature = "simd", any(target_arch = "x86", target_arch = "x86_64")))]
impl<'i, M: Marker> pulp::NullaryFnOnce for MarkedDecode<'_, 'i, M> {
    type Output = Decoded<'i>;

    #[inline(always)]
    fn call(self) -> Decoded<'i> {
        self.decoder
            .decode_marked(self.marker, self.input, self.start)
    }
}

/// The scan after a line ending `len` octets after the line's start (or after wherever the
/// scan last was, when the start is not known: the line is at least that long).
fn next_scan(scan: Scan, len: usize) -> Scan {
    match scan {
        Scan::Blocks if len >= LONG_LINE => Scan::PerLine { short: 0 },
        Scan::Blocks => Scan::Blocks,
        Scan::PerLine { .. } if len >= LONG_LINE => Scan::PerLine { short: 0 },
        Scan::PerLine { short } if short + 1 >= SHORT_LINES_TO_BLOCKS => Scan::Blocks,
        Scan::PerLine { short } => Scan::PerLine { short: short + 1 },
    }
}

/// Octets checked per block: one 64-bit mask's worth, four SSE2 vectors.
const BLOCK: usize = 64;

/// How the content is scanned, chosen once per [`DotDecoder::decode`] call.
#[derive(Clone, Copy)]
enum Blocks {
    /// Code built for the target's baseline (SSE2 on x86-64): clean blocks, then `memchr2`
    /// for each line ending after them. The fallback.
    Portable,
    /// Clean 128-octet blocks compiled with AVX2, then the marks of CR, LF and dot (AVX2
    /// compares and movemasks) to find where the run ended and cross the last octets, for a
    /// CPU that has AVX2 (`pulp` makes the target-feature call, so this crate stays free of
    /// `unsafe`).
    #[cfg(all(feature = "simd", any(target_arch = "x86", target_arch = "x86_64")))]
    Avx2(pulp::x86::V3),
    /// The same compiled with AVX-512: block compares into mask registers, and the marks
    /// straight from them (one 64-octet load, three compares).
    #[cfg(all(feature = "simd", any(target_arch = "x86", target_arch = "x86_64")))]
    Avx512(pulp::x86::V4),
}

impl Blocks {
    /// The widest vectors up to `widest` that the build and the CPU have (one relaxed atomic
    /// load each after the first detection).
    #[inline]
    fn detect(widest: Widest) -> Self {
        #[cfg(all(feature = "simd", any(target_arch = "x86", target_arch = "x86_64")))]
        if widest >= Widest::Avx512
            && let Some(avx512) = pulp::x86::V4::try_new()
        {
            return Self::Avx512(avx512);
        }
        #[cfg(all(feature = "simd", any(target_arch = "x86", target_arch = "x86_64")))]
        if widest >= Widest::Avx2
            && let Some(avx2) = pulp::x86::V3::try_new()
        {
            return Self::Avx2(avx2);
        }
        let _ = widest;
        Self::Portable
    }

    /// The end of the run of clean portable blocks at `from`: content that needs no change
    /// and holds no end of data, so it can be handed out as it is. It stops after
    /// [`PROBE_BLOCKS`] for a look at the line length.
    #[inline]
    fn clean_end(self, input: &[u8], from: usize) -> usize {
        let probe = input.len().min(from + PROBE_BLOCKS * BLOCK + 2);
        clean_blocks::<BLOCK>(&input[..probe], from, |_| {})
    }
}

/// The end of the run of clean `N`-octet blocks at `from`.
///
/// A block is clean when every CR in it is followed by an LF, every LF after its first octet
/// follows a CR, and no CRLF in it is followed by a dot. Each check looks one or two octets
/// ahead, so a block needs `N + 2` octets of input; the rest is left to the caller, as is
/// an LF at `from` itself. The comparisons are written over whole arrays with no early exit,
/// so the compiler turns them into SIMD compares (of the widest vectors the caller's target
/// features allow), one OR-reduction and one branch per block.
#[inline(always)]
pub(super) fn clean_blocks<const N: usize>(
    input: &[u8],
    from: usize,
    ahead: impl Fn(usize),
) -> usize {
    let (Some(here), Some(next), Some(after)) = (
        input.get(from..),
        input.get(from + 1..),
        input.get(from + 2..),
    ) else {
        return from;
    };
    // Arrays of `N` rather than slices: the lengths are known at compile time, so the three
    // views are walked with one counter and no bounds checks.
    let (here, next, after) = (
        here.as_chunks::<N>().0,
        next.as_chunks::<N>().0,
        after.as_chunks::<N>().0,
    );
    for (i, ((here, next), after)) in here.iter().zip(next).zip(after).enumerate() {
        ahead(from + i * N);
        let dirty =
            here.iter()
                .zip(next)
                .zip(after)
                .fold(0u8, |dirty, ((&here, &next), &after)| {
                    let cr = here == b'\r';
                    let unpaired = cr != (next == b'\n');
                    let stuffed = cr & (after == b'.');
                    dirty | u8::from(unpaired | stuffed)
                });
        if dirty != 0 {
            return from + i * N;
        }
    }
    from + after.len() * N
}

fn slice(input: &[u8], start: usize, end: usize) -> Decoded<'_> {
    if end > start {
        Decoded::Data {
            data: &input[start..end],
            consumed: end,
        }
    } else {
        Decoded::NeedMore { consumed: end }
    }
}

/// Dot-stuffing encoder for the sending side (RFC 5321 4.5.2).
///
/// ```
/// use smtpkit_proto::data::DotEncoder;
/// let mut e = DotEncoder::new();
/// let mut out = Vec::new();
/// e.encode(b".hidden\r\nline", &mut out);
/// e.finish(&mut out);
/// assert_eq!(out, b"..hidden\r\nline\r\n.\r\n");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DotEncoder {
    /// The last two bytes written, to know line starts and whether the content ended in CRLF.
    tail: [u8; 2],
}

impl Default for DotEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl DotEncoder {
    /// An encoder at the start of the content.
    pub const fn new() -> Self {
        Self { tail: *b"\r\n" }
    }

    /// Appends `chunk`, stuffed, to `out`.
    pub fn encode(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let mut start = 0;
        let mut stuff = |i: usize, out: &mut Vec<u8>| {
            out.extend_from_slice(&chunk[start..i]);
            out.push(b'.');
            start = i;
        };
        // The first two bytes may complete a CRLF that the previous chunk began.
        for i in 0..chunk.len().min(2) {
            let prev = if i == 0 {
                self.tail
            } else {
                [self.tail[1], chunk[0]]
            };
            if chunk[i] == b'.' && prev == *b"\r\n" {
                stuff(i, out);
            }
        }
        // From the third byte on, a dot at a line start ends a `CRLF .` inside the chunk: a
        // substring search rather than a look at every byte, which the client's bulk content
        // (and the load generator) would pay for per octet.
        for p in memchr::memmem::find_iter(chunk, b"\r\n.") {
            stuff(p + 2, out);
        }
        out.extend_from_slice(&chunk[start..]);
        match chunk.len() {
            0 => {}
            1 => self.tail = [self.tail[1], chunk[0]],
            n => self.tail = [chunk[n - 2], chunk[n - 1]],
        }
    }

    /// Ends the content with CRLF if needed, then the `.CRLF` end marker.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.tail != *b"\r\n" {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        *self = Self::new();
    }
}

/// The naive whole-buffer decoder the incremental one is checked against, in tests and fuzzing.
#[doc(hidden)]
pub fn reference_decode(input: &[u8], policy: BareLineEnding) -> Option<(Vec<u8>, bool, usize)> {
    // Split into CRLF-terminated lines; the content ends at the first line that is exactly ".".
    let mut lines = Vec::new();
    let mut pos = 0;
    let end = loop {
        let rel = input[pos..].windows(2).position(|w| w == b"\r\n")?;
        let line = &input[pos..pos + rel];
        if line == b"." {
            break pos + rel + 2;
        }
        lines.push(line);
        pos += rel + 2;
    };
    let mut out = Vec::new();
    let mut bare = false;
    for line in lines {
        let line = line.strip_prefix(b".").unwrap_or(line);
        for &b in line {
            if b == b'\r' || b == b'\n' {
                bare = true;
                match policy {
                    BareLineEnding::Reject => out.push(b),
                    BareLineEnding::Normalize => out.extend_from_slice(b"\r\n"),
                }
            } else {
                out.push(b);
            }
        }
        out.extend_from_slice(b"\r\n");
    }
    Some((out, bare, end))
}

/// Runs a [`DotDecoder`] over `input` delivered in pieces cut at `cuts`, the way a server
/// receives it. Returns the content, whether a bare CR/LF was seen, and where the end was.
#[doc(hidden)]
pub fn chunked_decode(
    input: &[u8],
    cuts: &[usize],
    policy: BareLineEnding,
) -> Option<(Vec<u8>, bool, usize)> {
    chunked_decode_with(DotDecoder::new(policy), input, cuts)
}

/// [`chunked_decode`] with a given decoder: the tests hand it one held to the portable blocks.
fn chunked_decode_with(
    mut d: DotDecoder,
    input: &[u8],
    cuts: &[usize],
) -> Option<(Vec<u8>, bool, usize)> {
    let mut out = Vec::new();
    let mut consumed = 0;
    let mut available = 0;
    let mut cuts = cuts
        .iter()
        .copied()
        .filter(|&c| c <= input.len())
        .collect::<Vec<_>>();
    cuts.sort_unstable();
    cuts.push(input.len());
    let mut cuts = cuts.into_iter();
    // Each decode call makes progress or asks for more input, so this is bounded by
    // 2 * (input length + number of cuts).
    for _ in 0..2 * (input.len() + cuts.len() + 2) {
        match d.decode(&input[consumed..available]) {
            Decoded::Data { data, consumed: n } => {
                out.extend_from_slice(data);
                consumed += n;
            }
            Decoded::End { consumed: n } => {
                return Some((out, d.saw_bare_line_ending(), consumed + n));
            }
            Decoded::NeedMore { consumed: n } => {
                consumed += n;
                available = cuts.next()?.max(available);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn whole(input: &[u8], policy: BareLineEnding) -> Option<(Vec<u8>, bool, usize)> {
        chunked_decode(input, &[], policy)
    }

    /// A decoder that never uses AVX2, whatever the CPU: the fallback.
    fn portable(policy: BareLineEnding) -> DotDecoder {
        DotDecoder {
            widest: Widest::Baseline,
            ..DotDecoder::new(policy)
        }
    }

    /// A decoder that uses AVX2 but not AVX-512, when the CPU has them.
    fn avx2(policy: BareLineEnding) -> DotDecoder {
        DotDecoder {
            widest: Widest::Avx2,
            ..DotDecoder::new(policy)
        }
    }

    /// Each scan is taken exactly when the build has the feature and the CPU the instructions.
    #[test]
    fn wide_blocks_when_available() {
        assert!(matches!(Blocks::detect(Widest::Baseline), Blocks::Portable));
        #[cfg(all(feature = "simd", any(target_arch = "x86", target_arch = "x86_64")))]
        {
            let avx2 = std::is_x86_feature_detected!("avx2");
            // What pulp's V4 asks for besides AVX2.
            let avx512 = std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512cd")
                && std::is_x86_feature_detected!("avx512dq")
                && std::is_x86_feature_detected!("avx512vl");
            assert_eq!(
                matches!(Blocks::detect(Widest::Avx2), Blocks::Avx2(_)),
                avx2
            );
            assert_eq!(
                matches!(Blocks::detect(Widest::Avx512), Blocks::Avx512(_)),
                avx2 && avx512
            );
        }
    }

    /// [`next_event`] and the marker's [`Marker::clean_end`] from `from`, with every marker
    /// the CPU can run, named.
    #[cfg(all(feature = "simd", any(target_arch = "x86", target_arch = "x86_64")))]
    fn marked_events(input: &[u8], from: usize) -> Vec<(&'static str, Event, usize)> {
        let mut events = Vec::new();
        if let Some(avx2) = pulp::x86::V3::try_new() {
            let marked = || (next_event(avx2, input, from), avx2.clean_end(input, from));
            let (event, clean_end) = avx2.vectorize(marked);
            events.push(("avx2", event, clean_end));
        }
        if let Some(avx512) = pulp::x86::V4::try_new() {
            let marked = || {
                (
                    next_event(avx512, input, from),
                    avx512.clean_end(input, from),
                )
            };
            let (event, clean_end) = avx512.vectorize(marked);
            events.push(("avx512", event, clean_end));
        }
        events
    }

    /// The run of clean `n`-octet blocks at `from`, octet by octet: the model of
    /// [`clean_blocks`].
    fn model_clean_end(input: &[u8], from: usize, n: usize) -> usize {
        let clean = |k: usize| {
            let cr = input[k] == b'\r';
            cr == (input[k + 1] == b'\n') && !(cr && input[k + 2] == b'.')
        };
        let mut end = from;
        while end + n + 2 <= input.len() && (end..end + n).all(clean) {
            end += n;
        }
        end
    }

    /// The first event at or after `from`, octet by octet: the model of [`next_event`].
    #[cfg(all(feature = "simd", any(target_arch = "x86", target_arch = "x86_64")))]
    fn model_next_event(input: &[u8], from: usize) -> Event {
        for k in from..input.len() {
            let before = |back: usize| (k >= from + back).then(|| input[k - back]);
            let after_cr = before(1) == Some(b'\r');
            if input[k] == b'\n' && !after_cr {
                return Event::Bare(k);
            }
            if after_cr && input[k] != b'\n' {
                return Event::Bare(k - 1);
            }
            if input[k] == b'.' && before(2) == Some(b'\r') && before(1) == Some(b'\n') {
                return Event::Stuffed(k);
            }
        }
        Event::End
    }

    /// Every kind of event at every offset around the first two 64-octet blocks and the last
    /// octets of the input, seen from every start before it: the carried CR marks, the
    /// shifted last block and the zero-padded short input all agree with the model.
    #[cfg(all(feature = "simd", any(target_arch = "x86", target_arch = "x86_64")))]
    #[test]
    fn marks_find_events_across_blocks() {
        for event in [&b"\r\n."[..], b"\rx", b"x\n", b"\r\n\r\n", b"\r"] {
            for at in 0..140 {
                for len in [at + event.len(), at + event.len() + 1, 200] {
                    let mut input = vec![b'a'; len];
                    input[at..at + event.len()].copy_from_slice(event);
                    for from in (0..=at).step_by(7).chain([at]) {
                        let want = model_next_event(&input, from);
                        for (marker, marked, _) in marked_events(&input, from) {
                            assert_eq!(
                                marked, want,
                                "{marker}: {event:?} at {at} of {len}, from {from}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    #[allow(clippy::type_complexity)] // A known-answer table reads best inline.
    fn known_answers() {
        use BareLineEnding::{Normalize, Reject};
        let rows: &[(&[u8], BareLineEnding, Option<(&[u8], bool, usize)>)] = &[
            (b".\r\n", Reject, Some((b"", false, 3))),
            (b"a\r\n.\r\n", Reject, Some((b"a\r\n", false, 6))),
            (b"..\r\n.\r\n", Reject, Some((b".\r\n", false, 7))),
            (
                b"a\r\n..b\r\n.\r\nX",
                Reject,
                Some((b"a\r\n.b\r\n", false, 11)),
            ),
            (b"a\r\n.", Reject, None),
            (b"a\r\n.\r", Reject, None),
            (b"a\nb\r\n.\r\n", Normalize, Some((b"a\r\nb\r\n", true, 8))),
            (b"a\rb\r\n.\r\n", Normalize, Some((b"a\r\nb\r\n", true, 8))),
            (b"a\nb\r\n.\r\n", Reject, Some((b"a\nb\r\n", true, 8))),
        ];
        for (input, policy, want) in rows {
            let want = want.map(|(c, b, e)| (c.to_vec(), b, e));
            assert_eq!(
                whole(input, *policy),
                want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(
                reference_decode(input, *policy),
                want,
                "reference {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    /// The six bare variants of the end marker never end a message (the SMTP smuggling class).
    #[test]
    fn bare_end_markers_never_end_the_message() {
        for policy in [BareLineEnding::Reject, BareLineEnding::Normalize] {
            for marker in [
                &b"\n.\n"[..],
                b"\r.\r",
                b"\n.\r\n",
                b"\r\n.\n",
                b"\r.\r\n",
                b"\r\n.\r",
            ] {
                let mut input = b"body".to_vec();
                input.extend_from_slice(marker);
                input.extend_from_slice(b"MAIL FROM:<evil@x>\r\n");
                let (content, bare, end) =
                    whole(&[&input[..], b"\r\n.\r\n"].concat(), policy).unwrap();
                assert!(bare, "{marker:?}");
                assert_eq!(end, input.len() + 5, "{marker:?} must not end the message");
                assert!(
                    content.ends_with(b"MAIL FROM:<evil@x>\r\n\r\n"),
                    "{marker:?}"
                );
            }
        }
    }

    #[test]
    fn holds_back_at_most_two_bytes() {
        let mut d = DotDecoder::new(BareLineEnding::Reject);
        assert_eq!(
            d.decode(b"abc\r"),
            Decoded::Data {
                data: b"abc",
                consumed: 3
            }
        );
        assert_eq!(d.decode(b"\r"), Decoded::NeedMore { consumed: 0 });
        assert_eq!(
            d.decode(b"\r\n"),
            Decoded::Data {
                data: b"\r\n",
                consumed: 2
            }
        );
        assert_eq!(d.decode(b".\r"), Decoded::NeedMore { consumed: 0 });
        assert_eq!(d.decode(b".\r\n"), Decoded::End { consumed: 3 });
    }

    #[test]
    fn encoder_round_trips() {
        let body = b".a\r\n..b\r\nc\r\n.\r\nend";
        let mut out = Vec::new();
        let mut e = DotEncoder::new();
        for piece in body.chunks(3) {
            e.encode(piece, &mut out);
        }
        e.finish(&mut out);
        let (content, bare, end) = whole(&out, BareLineEnding::Reject).unwrap();
        assert_eq!(content, [&body[..], b"\r\n"].concat());
        assert!(!bare);
        assert_eq!(end, out.len());
    }

    fn body() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                Just(b'.'),
                Just(b'\r'),
                Just(b'\n'),
                Just(b'a'),
                Just(b'\r'),
                Just(b'.')
            ],
            0..64,
        )
    }

    /// Content long enough to fill several blocks, made of clean runs of every length around
    /// the block size and the octets the blocks must notice: CRLF, dots after it, bare CR and
    /// bare LF, and the end marker itself.
    fn dense_body() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            4 => (0usize..140).prop_map(|n| vec![b'a'; n]),
            3 => Just(b"\r\n".to_vec()),
            2 => Just(b"\r\n.".to_vec()),
            1 => Just(b"\r\n..".to_vec()),
            1 => Just(b"\r".to_vec()),
            1 => Just(b"\n".to_vec()),
            1 => Just(b".".to_vec()),
            1 => Just(b"\r\n.\r\n".to_vec()),
        ];
        proptest::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #[test]
        fn blocks_match_reference(mut input in dense_body(), cuts in proptest::collection::vec(0usize..2000, 0..6), normalize: bool, terminate: bool) {
            if terminate {
                input.extend_from_slice(b"\r\n.\r\n");
            }
            let policy = if normalize { BareLineEnding::Normalize } else { BareLineEnding::Reject };
            let want = reference_decode(&input, policy);
            prop_assert_eq!(&chunked_decode(&input, &cuts, policy), &want, "default blocks");
            prop_assert_eq!(&chunked_decode_with(portable(policy), &input, &cuts), &want, "portable blocks");
            prop_assert_eq!(&chunked_decode_with(avx2(policy), &input, &cuts), &want, "AVX2 blocks");
        }

        /// Every block check (portable, and the 128-octet ones compiled for AVX2 and
        /// AVX-512) ends its clean run exactly where the octet-by-octet model does, and the
        /// marks find the same first event as the octet-by-octet model, from every start, on
        /// content dense in CR, LF and dots.
        #[test]
        fn blocks_match_model(input in dense_body()) {
            for from in 0..=input.len() {
                prop_assert_eq!(clean_blocks::<BLOCK>(&input, from, |_| {}), model_clean_end(&input, from, BLOCK));
                #[cfg(all(feature = "simd", any(target_arch = "x86", target_arch = "x86_64")))]
                for (marker, marked, clean_end) in marked_events(&input, from) {
                    prop_assert_eq!(marked, model_next_event(&input, from), "{}", marker);
                    prop_assert_eq!(clean_end, model_clean_end(&input, from, 128), "{}", marker);
                }
            }
        }
    }

    proptest! {
        #[test]
        fn matches_reference(mut input in body(), cuts in proptest::collection::vec(0usize..80, 0..8), normalize: bool) {
            input.extend_from_slice(b"\r\n.\r\n");
            let policy = if normalize { BareLineEnding::Normalize } else { BareLineEnding::Reject };
            prop_assert_eq!(chunked_decode(&input, &cuts, policy), reference_decode(&input, policy));
        }

        #[test]
        fn unterminated_is_incomplete(input in body(), cuts in proptest::collection::vec(0usize..80, 0..8)) {
            let policy = BareLineEnding::Reject;
            prop_assert_eq!(chunked_decode(&input, &cuts, policy), reference_decode(&input, policy));
        }

        #[test]
        fn encode_then_decode_is_identity(content in proptest::collection::vec(prop_oneof![Just(b'.'), Just(b'a'), Just(b'\r'), Just(b'\n')], 0..64)) {
            // Content with only CRLF line endings: normalize bare ones first.
            let text = String::from_utf8(content).unwrap().replace('\r', "").replace('\n', "\r\n");
            let mut out = Vec::new();
            let mut e = DotEncoder::new();
            e.encode(text.as_bytes(), &mut out);
            e.finish(&mut out);
            let (got, bare, _) = whole(&out, BareLineEnding::Reject).unwrap();
            let mut want = text.into_bytes();
            if !want.is_empty() && !want.ends_with(b"\r\n") { want.extend_from_slice(b"\r\n"); }
            prop_assert_eq!(got, want);
            prop_assert!(!bare);
        }
    }
}
