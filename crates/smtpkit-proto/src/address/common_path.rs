//! The path nearly every MAIL and RCPT carries, `<local@domain>` with a dot-string local part,
//! checked in one pass per part ([`common_path`]) or, with AVX2, from bit masks of the whole
//! path ([`common_path_avx2`]). The command fast path asks these first; [`super::path`]
//! parses everything else.

use super::{CLASSES, DOMAIN, DOT_STRING, MAX_LABEL, MAX_LOCAL_PART};

/// The path nearly every MAIL and RCPT carries, `local@domain>` at `line[start..]` (just after
/// the `<`): a dot-string local part and a domain of at most 63 octets (so no label, nor the
/// domain, nor the path can be over its limit), followed by `>`. Returns where the `@` and the
/// `>` are in `line`, or `None` for anything else (quoted local parts, address literals, source
/// routes, longer domains, errors), which [`path`](super::path) then parses. Where this answers, it answers
/// as [`path`](super::path) does: the command fast path's proptest compares the two.
///
/// Each part is one scan of eight octets at a time: one table load per octet gives each
/// octet's classes, and the end of the part and every misplaced dot or hyphen come out of that
/// word with shifts and masks (see [`scan`]), where [`path`](super::path) walks atom by atom and label by
/// label. `line` is scanned as octets; the caller checks that it is UTF-8.
#[inline]
pub(crate) fn common_path(line: &[u8], start: usize) -> Option<(usize, usize)> {
    // Dot-string = Atom *("." Atom): no dot next to the `<`, the `@` or another dot.
    let (at, local_ok) = scan(line, start, P_LOCAL, |word, before| {
        word & before & (u64::from(P_SEP) * ONES)
    });
    if !local_ok || line.get(at) != Some(&b'@') || at - start > MAX_LOCAL_PART {
        return None;
    }
    // Labels of letters, digits and hyphens: no dot or hyphen next to the `@` or the `>` (so no
    // empty domain either), no empty label, no hyphen next to a dot.
    let (gt, domain_ok) = scan(line, at + 1, P_DOMAIN, |word, before| {
        let sep = u64::from(P_SEP) * ONES;
        // `P_HYPHEN` is the bit above `P_SEP`: one shift lines a hyphen up with a separator.
        let (seps, hyphens) = (word & sep, word >> 1 & sep);
        let (seps_before, hyphens_before) = (before & sep, before >> 1 & sep);
        seps & (seps_before | hyphens_before) | hyphens & seps_before
    });
    if !domain_ok || line.get(gt) != Some(&b'>') || gt - at - 1 > MAX_LABEL {
        return None;
    }
    Some((at, gt))
}

/// An octet a dot-string may hold: atext, the dot, UTF-8.
const P_LOCAL: u8 = 1;
/// An octet a domain may hold: letters, digits, hyphen, dot, UTF-8.
const P_DOMAIN: u8 = 2;
/// `.`, `@` and `>`, no two of which may touch.
const P_SEP: u8 = 4;
/// `-`, the bit above [`P_SEP`].
const P_HYPHEN: u8 = 8;

/// The classes [`common_path`] scans with, one table load per octet.
const PATH_CLASSES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        if CLASSES[b] & DOT_STRING != 0 {
            t[b] |= P_LOCAL;
        }
        if CLASSES[b] & DOMAIN != 0 {
            t[b] |= P_DOMAIN;
        }
        if b == b'.' as usize || b == b'@' as usize || b == b'>' as usize {
            t[b] |= P_SEP;
        }
        if b == b'-' as usize {
            t[b] |= P_HYPHEN;
        }
        b += 1;
    }
    t
};

/// `0x01` in every octet of a word.
const ONES: u64 = 0x0101_0101_0101_0101;

/// The run of octets in `class` that starts at `line[pos]`: where it ends, and whether no two
/// neighbouring octets up to and including the one that ends it make a pair `bad` refuses.
/// The octet before `pos` counts as a separator ([`P_SEP`]): it is the `<` or the `@`.
///
/// Eight octets per step: their classes as one word (octets past the end of `line` have
/// none, so the run stops there), the end of the run from its lowest octet outside `class`
/// (no loop over octets for the branch predictor to guess), and the pairs from `bad`, which
/// gets the word and the word of the octets before each one (the last octet of the previous
/// step shifted in) and answers with [`P_SEP`] bits where a pair is refused.
#[inline(always)]
fn scan(line: &[u8], mut pos: usize, class: u8, bad: impl Fn(u64, u64) -> u64) -> (usize, bool) {
    let mut last = u64::from(P_SEP);
    let mut refused = 0;
    loop {
        let word = class_word(line, pos);
        let before = word << 8 | last;
        let pairs = bad(word, before);
        let outside = !word & (u64::from(class) * ONES);
        if outside != 0 {
            let end = outside.trailing_zeros() / 8;
            // The octet that ends the run is in a pair too: `.@`, `->`.
            refused |= pairs & (u64::MAX >> (56 - 8 * end));
            return (pos + end as usize, refused == 0);
        }
        refused |= pairs;
        last = word >> 56;
        pos += 8;
    }
}

/// The classes of `line[pos..pos + 8]` as one word, the first octet lowest; octets past the
/// end of `line` are 0. Near the end of `line`, the last eight octets are loaded and shifted
/// down instead (a `line` under eight octets has no classes).
#[inline(always)]
fn class_word(line: &[u8], pos: usize) -> u64 {
    if let Some(window) = line.get(pos..).and_then(<[u8]>::first_chunk::<8>) {
        return classes(window);
    }
    let Some(window) = line.last_chunk::<8>() else {
        return 0;
    };
    // The octets before `pos` are shifted out, zeros in past the end.
    let past = pos.saturating_add(8) - line.len();
    classes(window)
        .checked_shr(8 * u32::try_from(past).unwrap_or(u32::MAX))
        .unwrap_or(0)
}

/// [`PATH_CLASSES`] of eight octets as one word, the first octet lowest.
#[inline(always)]
fn classes(window: &[u8; 8]) -> u64 {
    // One load per octet and a shift into place: `u64::from_le_bytes` of a mapped array
    // compiled to one wide load, then a shift and a mask to take each octet out again.
    window.iter().enumerate().fold(0, |word, (i, &b)| {
        word | u64::from(PATH_CLASSES[usize::from(b)]) << (8 * i)
    })
}

/// [`common_path`] from bit masks of the 64 octets at `line[start..]`, built with AVX2: each
/// octet's classes from two nibble-table lookups (`vpshufb`) per class, the dots, hyphens,
/// `@` and `>` from compares, then the same rules as shifts and masks over the whole path at
/// once, with no loop and one branch. A path that does not end within the 64 octets is left to
/// [`common_path`].
#[cfg(all(feature = "simd", any(target_arch = "x86", target_arch = "x86_64")))]
#[inline(always)]
pub(crate) fn common_path_avx2(
    simd: pulp::x86::V3,
    line: &[u8],
    start: usize,
) -> Option<(usize, usize)> {
    let rest = line.get(start..)?;
    // Past the end of the line: zeros, which are in no class and are neither `@` nor `>`.
    let mut octets = [0u8; 64];
    let len = rest.len().min(64);
    octets[..len].copy_from_slice(&rest[..len]);
    let masks = PathMasks::avx2(simd, &octets);
    let gt = masks.gt.trailing_zeros() as usize;
    if gt == 64 {
        return common_path(line, start);
    }
    let at = masks.at.trailing_zeros() as usize;
    if at >= gt {
        return None;
    }
    // Bits below the `@`; above it and below the `>`; up to and including the `>`.
    let local = (1u64 << at) - 1;
    let domain = !((2u64 << at) - 1) & ((1u64 << gt) - 1);
    let through_gt = (2u64 << gt).wrapping_sub(1);
    let mut bad = local & !masks.local | domain & !masks.domain;
    // The same pairs as the scan: the `<` before the path counts as a separator.
    let seps = (masks.dot | masks.at | masks.gt) & through_gt;
    let seps_before = seps << 1 | 1;
    let hyphens = masks.hyphen & through_gt;
    bad |= seps & seps_before;
    bad |= (hyphens & seps_before | seps & hyphens << 1) & !((2u64 << at) - 1);
    // At most 63 octets before the `>`, so neither part can be over its limit.
    (bad == 0).then_some((start + at, start + gt))
}

/// Bit `i` for octet `i` of 64: where they may be in a local part, in a domain, and where the
/// dots, hyphens, `@` and `>` are.
#[cfg(all(feature = "simd", any(target_arch = "x86", target_arch = "x86_64")))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PathMasks {
    local: u64,
    domain: u64,
    dot: u64,
    hyphen: u64,
    at: u64,
    gt: u64,
}

#[cfg(all(feature = "simd", target_arch = "x86"))]
use core::arch::x86::__m256i as Vector;
#[cfg(all(feature = "simd", target_arch = "x86_64"))]
use core::arch::x86_64::__m256i as Vector;

#[cfg(all(feature = "simd", any(target_arch = "x86", target_arch = "x86_64")))]
impl PathMasks {
    /// Two 32-octet halves, each: its low and high nibbles, four table lookups and two ANDs
    /// for the classes, four compares for the marks, one movemask per mask. (Functions, not
    /// closures: a closure is compiled without the caller's target features, and then every
    /// intrinsic in it is a call.)
    #[inline(always)]
    fn avx2(simd: pulp::x86::V3, octets: &[u8; 64]) -> Self {
        let [low, high]: [Vector; 2] = pulp::cast(*octets);
        let (low, high) = (masks_avx2(simd, low), masks_avx2(simd, high));
        let join = |i: usize| u64::from(low[i]) | u64::from(high[i]) << 32;
        Self {
            local: join(0),
            domain: join(1),
            dot: join(2),
            hyphen: join(3),
            at: join(4),
            gt: join(5),
        }
    }
}

/// [`PathMasks`] of 32 octets: local, domain, dot, hyphen, `@`, `>`.
#[cfg(all(feature = "simd", any(target_arch = "x86", target_arch = "x86_64")))]
#[inline(always)]
fn masks_avx2(simd: pulp::x86::V3, v: Vector) -> [u32; 6] {
    let (avx, avx2) = (simd.avx, simd.avx2);
    let nibble = avx._mm256_set1_epi8(0x0f);
    let low = avx2._mm256_and_si256(v, nibble);
    let high = avx2._mm256_and_si256(avx2._mm256_srli_epi16::<4>(v), nibble);
    [
        class_avx2(simd, low, high, &LOCAL_BAD),
        class_avx2(simd, low, high, &DOMAIN_BAD),
        mark_avx2(simd, v, b'.'),
        mark_avx2(simd, v, b'-'),
        mark_avx2(simd, v, b'@'),
        mark_avx2(simd, v, b'>'),
    ]
}

/// The octets in the class whose `tables` are given, from their `low` and `high` nibbles.
#[cfg(all(feature = "simd", any(target_arch = "x86", target_arch = "x86_64")))]
#[inline(always)]
fn class_avx2(
    simd: pulp::x86::V3,
    low: Vector,
    high: Vector,
    tables: &([u8; 16], [u8; 16]),
) -> u32 {
    let (avx, avx2) = (simd.avx, simd.avx2);
    // The 16 entries in both 128-bit lanes: `vpshufb` looks up within each lane.
    let table_low: Vector = pulp::cast([tables.0, tables.0]);
    let table_high: Vector = pulp::cast([tables.1, tables.1]);
    let outside = avx2._mm256_and_si256(
        avx2._mm256_shuffle_epi8(table_low, low),
        avx2._mm256_shuffle_epi8(table_high, high),
    );
    let inside = avx2._mm256_cmpeq_epi8(outside, avx._mm256_setzero_si256());
    // The movemask's 32 bits, sign and all, are the mask: reinterpret, no extend.
    avx2._mm256_movemask_epi8(inside) as u32
}

/// The octets of `v` that are `byte`.
#[cfg(all(feature = "simd", any(target_arch = "x86", target_arch = "x86_64")))]
#[inline(always)]
fn mark_avx2(simd: pulp::x86::V3, v: Vector, byte: u8) -> u32 {
    let byte = simd.avx._mm256_set1_epi8(byte as i8);
    simd.avx2
        ._mm256_movemask_epi8(simd.avx2._mm256_cmpeq_epi8(v, byte)) as u32
}

/// The octets a local part may not hold (not atext, not a dot, not UTF-8) as nibble tables.
#[cfg(all(feature = "simd", any(target_arch = "x86", target_arch = "x86_64")))]
const LOCAL_BAD: ([u8; 16], [u8; 16]) = nibble_tables(P_LOCAL);
/// The octets a domain may not hold (not a letter, digit, hyphen, dot or UTF-8).
#[cfg(all(feature = "simd", any(target_arch = "x86", target_arch = "x86_64")))]
const DOMAIN_BAD: ([u8; 16], [u8; 16]) = nibble_tables(P_DOMAIN);

/// Tables `(low, high)` such that `low[b & 15] & high[b >> 4]` is not 0 exactly for the octets
/// `b` outside `class` in [`PATH_CLASSES`]: one bit for each different set of low nibbles
/// that a high nibble's row holds outside the class (at most eight such rows; the test below
/// checks every octet).
#[cfg(all(feature = "simd", any(target_arch = "x86", target_arch = "x86_64")))]
const fn nibble_tables(class: u8) -> ([u8; 16], [u8; 16]) {
    let (mut low, mut high) = ([0u8; 16], [0u8; 16]);
    // The rows' sets of low nibbles outside the class, one bit each, as given out so far.
    let mut sets = [0u16; 8];
    let mut given = 0;
    let mut row = 0;
    while row < 16 {
        let mut set = 0u16;
        let mut col = 0;
        while col < 16 {
            if PATH_CLASSES[row * 16 + col] & class == 0 {
                set |= 1 << col;
            }
            col += 1;
        }
        if set != 0 {
            let mut bit = 0;
            while bit < given && sets[bit] != set {
                bit += 1;
            }
            if bit == given {
                assert!(given < 8, "more than eight different rows");
                sets[given] = set;
                given += 1;
            }
            high[row] |= 1 << bit;
            let mut col = 0;
            while col < 16 {
                if set & (1 << col) != 0 {
                    low[col] |= 1 << bit;
                }
                col += 1;
            }
        }
        row += 1;
    }
    (low, high)
}

#[cfg(all(
    test,
    feature = "simd",
    any(target_arch = "x86", target_arch = "x86_64")
))]
mod tests {
    use super::*;

    /// Every octet's classes as the scan's table has them, in the nibble tables.
    #[test]
    fn nibble_tables_hold_the_classes() {
        for (class, (low, high)) in [(P_LOCAL, LOCAL_BAD), (P_DOMAIN, DOMAIN_BAD)] {
            for b in 0..=255u8 {
                let outside = low[usize::from(b & 15)] & high[usize::from(b >> 4)] != 0;
                assert_eq!(outside, PATH_CLASSES[usize::from(b)] & class == 0, "{b:#x}");
            }
        }
    }
}
