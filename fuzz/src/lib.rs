//! Fuzz bodies for `smtpkit-proto` and the PROXY parser of `smtpkit-server`, as plain functions.
//!
//! Each `fuzz_targets/<name>.rs` calls the function of the same name. Keeping the bodies here
//! means `cargo test --manifest-path fuzz/Cargo.toml` replays every committed corpus and
//! regression file on stable, without libFuzzer. See `README.md` for what each target promises.
//!
//! Every body panics (an `assert!`) when a property fails; libFuzzer reports the panic as a
//! crash and saves the input.

use smtpkit_proto::data::{BareLineEnding, BdatReader};
use smtpkit_proto::testing::{chunked_decode, reference_decode};
use smtpkit_proto::{Command, Reply};

mod client;
mod proxy;
mod session;

pub use client::client;
pub use proxy::proxy;
pub use session::session;

/// A fuzz body: panics when a property fails.
pub type Body = fn(&[u8]);

/// The fuzz targets by name, for the corpus replay test.
pub const TARGETS: &[(&str, Body)] = &[
    ("command", command),
    ("reply", reply),
    ("data", data),
    ("session", session),
    ("client", client),
    ("proxy", proxy),
];

/// `command`: any bytes as one command line.
///
/// Asserts: `Command::parse` does not panic; a parsed command encodes to exactly one line that
/// ends in CRLF and has no other CR or LF; and that line parses back to an equal command.
pub fn command(data: &[u8]) {
    let Ok(cmd) = Command::parse(data) else {
        return;
    };
    let mut wire = Vec::new();
    cmd.encode(&mut wire);
    let line = wire
        .strip_suffix(b"\r\n")
        .expect("an encoded command ends in CRLF");
    assert!(
        !line.iter().any(|&b| b == b'\r' || b == b'\n'),
        "encoding {cmd:?} gives more than one line: {:?}",
        String::from_utf8_lossy(&wire)
    );
    let again = Command::parse(line);
    assert_eq!(
        again,
        Ok(cmd),
        "{cmd:?} encodes to {:?}, which parses differently",
        String::from_utf8_lossy(&wire)
    );
}

/// `reply`: any bytes as server output.
///
/// Asserts: `Reply::parse` does not panic and reports at most the input's length; a parsed
/// reply, encoded (with enhanced codes exactly when it has one), parses back to an equal reply
/// that uses the whole encoding, and every encoded line is at most 512 octets.
pub fn reply(data: &[u8]) {
    let Ok(Some((parsed, used))) = Reply::parse(data) else {
        return;
    };
    assert!(used <= data.len(), "used {used} of {} bytes", data.len());
    let mut wire = Vec::new();
    parsed.encode(parsed.enhanced().is_some(), &mut wire);
    for line in wire.split_inclusive(|&b| b == b'\n') {
        assert!(
            line.len() <= smtpkit_proto::reply::MAX_REPLY_LINE,
            "encoded line of {} octets: {:?}",
            line.len(),
            String::from_utf8_lossy(line)
        );
    }
    let again = Reply::parse(&wire);
    assert_eq!(
        again,
        Ok(Some((parsed.clone(), wire.len()))),
        "{parsed:?} encodes to {:?}, which parses differently",
        String::from_utf8_lossy(&wire)
    );
}

/// `data`: DATA content cut into pieces, and a BDAT chunk read in the same pieces.
///
/// Input: byte 0 holds flags (bit 0: append `CRLF.CRLF` so the content ends) and, in bits 1-4,
/// the number of cuts; then two bytes (little endian) per cut position; then the body, whose
/// first two bytes also give the BDAT chunk size.
///
/// Asserts: for both [`BareLineEnding`] policies the incremental decoder fed in pieces gives
/// the same content, bare-line-ending flag and end position as the whole-buffer reference
/// decoder; and a [`BdatReader`] fed the same pieces yields exactly the chunk's bytes, never
/// more, and is done exactly when `size` bytes have arrived.
pub fn data(data: &[u8]) {
    let mut input = Bytes::new(data);
    let flags = input.u8();
    let cuts: Vec<usize> = (0..(flags >> 1) & 0x0f)
        .map(|_| usize::from(input.u16()))
        .collect();
    let mut body = input.rest().to_vec();
    if flags & 1 != 0 {
        body.extend_from_slice(b"\r\n.\r\n");
    }
    for policy in [BareLineEnding::Reject, BareLineEnding::Normalize] {
        let want = reference_decode(&body, policy);
        let got = chunked_decode(&body, &cuts, policy);
        assert_eq!(got, want, "{policy:?} with cuts {cuts:?}");
        if flags & 1 != 0 {
            assert!(want.is_some(), "a terminated body must end");
        }
    }
    bdat(&body, &cuts);
}

/// Reads a BDAT chunk whose size is the body's first two bytes, from the body cut at `cuts`.
fn bdat(body: &[u8], cuts: &[usize]) {
    let size16 = Bytes::new(body).u16();
    let size = u64::from(size16);
    let mut reader = BdatReader::new(size);
    let mut got = Vec::new();
    for piece in pieces(body, cuts) {
        let taken = reader.take(piece);
        assert!(
            taken.len() <= piece.len() && piece.starts_with(taken),
            "take returns a prefix of its input"
        );
        got.extend_from_slice(taken);
        assert_eq!(reader.remaining(), size - got.len() as u64);
        assert_eq!(reader.is_done(), got.len() as u64 == size);
    }
    let want = &body[..body.len().min(usize::from(size16))];
    assert_eq!(got, want, "BDAT {size} yields exactly the chunk");
}

/// `input` split at the in-range `cuts` (sorted, duplicates give empty pieces).
fn pieces<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().copied().filter(|&c| c <= input.len()).collect();
    cuts.sort_unstable();
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for cut in cuts {
        out.push(&input[start..cut]);
        start = cut;
    }
    out.push(&input[start..]);
    out
}

/// A reader over fuzz input that yields zeros once the input runs out, so every input is a
/// valid header.
#[derive(Debug)]
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self(data)
    }

    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.0)
    }
}

/// `main` for a fuzz target built without libFuzzer: runs `body` on every file named on the
/// command line (directories are read one level deep) and reports how many ran.
pub fn replay_main(body: Body) -> std::process::ExitCode {
    let mut files = Vec::new();
    for arg in std::env::args_os().skip(1) {
        let path = std::path::PathBuf::from(arg);
        match std::fs::read_dir(&path) {
            Ok(dir) => files.extend(dir.filter_map(|e| e.ok().map(|e| e.path()))),
            Err(_) => files.push(path),
        }
    }
    if files.is_empty() {
        eprintln!("usage: TARGET FILE_OR_DIR...  (replays inputs; build with cargo fuzz to fuzz)");
        return std::process::ExitCode::from(2);
    }
    files.sort();
    for file in &files {
        match std::fs::read(file) {
            Ok(data) => {
                eprintln!("running {}", file.display());
                body(&data);
            }
            Err(e) => {
                eprintln!("cannot read {}: {e}", file.display());
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    eprintln!("ran {} inputs", files.len());
    std::process::ExitCode::SUCCESS
}

/// Replays every committed corpus and regression file through its target; returns how many
/// inputs ran. Panics naming the first input that fails. The main workspace's tests call this
/// too (`crates/smtp-test/tests/fuzz_corpus.rs`), so `cargo test --workspace` covers the corpus.
pub fn replay_committed() -> usize {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut ran = 0;
    for (name, body) in TARGETS {
        let corpus = read_dir(&root.join("corpus").join(name));
        assert!(
            corpus.len() >= 3,
            "corpus/{name} needs a few seeds, has {}",
            corpus.len()
        );
        for (path, data) in corpus
            .iter()
            .chain(&read_dir(&root.join("regressions").join(name)))
        {
            let result = std::panic::catch_unwind(|| body(data));
            assert!(result.is_ok(), "{name}: {} fails", path.display());
            ran += 1;
        }
    }
    ran
}

/// The files of `dir`, sorted, with their contents; none if it does not exist.
fn read_dir(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .map(|p| {
            let data = std::fs::read(&p).expect("corpus file is readable");
            (p, data)
        })
        .collect();
    files.sort();
    files
}
#[cfg(test)]
mod tests {
    use super::*;

    /// Every committed corpus and regression file still passes its target.
    #[test]
    fn replay_committed_inputs() {
        assert!(replay_committed() >= 12);
    }

    #[test]
    fn pieces_cover_the_input() {
        let input = b"0123456789";
        let got = pieces(input, &[7, 3, 3, 99]);
        assert_eq!(got, [&b"012"[..], b"", b"3456", b"789"]);
        assert_eq!(pieces(b"", &[]), [&b""[..]]);
    }

    #[test]
    fn bytes_pad_with_zeros() {
        let mut b = Bytes::new(&[1, 2, 3]);
        assert_eq!(b.u16(), 0x0201);
        assert_eq!(b.u16(), 3);
        assert_eq!(b.u8(), 0);
        assert!(b.rest().is_empty());
    }

    #[test]
    fn known_inputs_pass() {
        command(b"MAIL FROM:<a@b.example> SIZE=10");
        reply(b"250-mx.example\r\n250 2.0.0 OK\r\n");
        data(b"\x03\x02\x00.\r\n..x\r\n");
        client(b"\x00\x00220 mx\r\n250-mx\r\n250 PIPELINING\r\n250 OK\r\n");
    }
}
