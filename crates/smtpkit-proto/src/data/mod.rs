//! The message body stream: DATA ([`DotDecoder`], [`DotEncoder`]) and BDAT ([`BdatReader`]).
//!
//! Decoders hand out sub-slices of the caller's input: no copy of the body, no per-message
//! buffer. The only bytes they ever hold back are a possible end-of-data prefix (at most two).

mod bdat;
pub(crate) mod dot;
#[cfg(all(feature = "simd", any(target_arch = "x86", target_arch = "x86_64")))]
mod marks;

pub use bdat::BdatReader;
pub use dot::{BareLineEnding, Decoded, DotDecoder, DotEncoder};
