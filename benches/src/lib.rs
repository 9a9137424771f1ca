//! Corpus generators and drivers shared by the `smtpkit-proto` benchmarks.
//!
//! Everything here is deterministic: a corpus is a function of its seed, so two runs (and the
//! baseline and the measured code within one run) see exactly the same bytes. The drivers feed
//! the core the way an adapter does (an input buffer of a fixed size, unconsumed bytes kept),
//! and return counts so the tests can check that a benchmark measures the happy path rather
//! than a stream of refusals.
//!
//! See `benches/README.md` for what each benchmark measures and how to run it.
#![warn(missing_docs)]

use std::hint::black_box;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use smtpkit_proto::data::{BareLineEnding, Decoded, DotDecoder, DotEncoder};
use smtpkit_proto::{Command, Event, InBuf, Server, ServerConfig, ServerOptions};

/// The decoder holds back at most this many bytes (`.` or `.CR` at a line start, or a trailing
/// CR), so an adapter's buffer never needs more room than one read plus this.
pub const DECODER_HOLD_BACK: usize = 2;

/// SplitMix64: a tiny, fast, seeded generator, so the corpora need no `rand` dependency and
/// stay identical across versions of anything else.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed`.
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`; `n` must be positive. The modulo bias is irrelevant at these sizes.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A number in `range` (inclusive).
    pub fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// Whether an event of probability `per_mille` / 1000 happened.
    pub fn chance(&mut self, per_mille: usize) -> bool {
        self.below(1000) < per_mille
    }

    /// One element of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const FIRST_NAMES: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "zoe",
];
const LAST_NAMES: &[&str] = &[
    "smith", "jones", "garcia", "miller", "davis", "martin", "lopez", "wilson", "anderson",
    "thomas", "moore", "jackson", "white", "harris", "clark", "lewis", "walker", "young",
];
const ROLES: &[&str] = &[
    "no-reply",
    "billing",
    "support",
    "newsletter",
    "bounces",
    "postmaster",
    "info",
    "orders",
    "notifications",
    "hr",
];
const DOMAINS: &[&str] = &[
    "example.com",
    "example.org",
    "example.net",
    "mail.example.com",
    "lists.example.org",
    "corp.example.net",
    "shop.example.co.uk",
    "university.example.edu",
    "eu-west-1.mailer.example.com",
    "customer-mail.example.io",
];
const WORDS: &[&str] = &[
    "the",
    "message",
    "meeting",
    "invoice",
    "attached",
    "please",
    "review",
    "project",
    "schedule",
    "regards",
    "thanks",
    "update",
    "report",
    "quarterly",
    "numbers",
    "team",
    "tomorrow",
    "at",
    "in",
    "of",
    "and",
    "for",
    "with",
    "Subject:",
    "Content-Type:",
    "text/plain;",
    "charset=utf-8",
    "QmFzZTY0IGVuY29kZWQgYXR0YWNobWVudCBkYXRh",
    "https://www.example.com/unsubscribe?id=8f3a91",
    "--",
    "=20",
    "Kind",
    "Hello",
    "world",
    "delivery",
    "server",
    "queue",
    "status",
];

/// A realistic mailbox: `first.last`, `first123`, a role account, or a tagged address.
pub fn address(rng: &mut Rng) -> String {
    let domain = rng.pick(DOMAINS);
    match rng.below(4) {
        0 => format!(
            "{}.{}@{domain}",
            rng.pick(FIRST_NAMES),
            rng.pick(LAST_NAMES)
        ),
        1 => format!("{}{}@{domain}", rng.pick(FIRST_NAMES), rng.below(1000)),
        2 => format!("{}@{domain}", rng.pick(ROLES)),
        _ => format!(
            "{}+{}{}@{domain}",
            rng.pick(FIRST_NAMES),
            rng.pick(ROLES),
            rng.below(100)
        ),
    }
}

/// A client host name as sent in EHLO, e.g. `mail-ed7-f12.example.com`.
pub fn client_name(rng: &mut Rng) -> String {
    format!(
        "mail-{}{}-f{}.{}",
        (b'a' + rng.below(26) as u8) as char,
        (b'a' + rng.below(26) as u8) as char,
        rng.below(100),
        rng.pick(DOMAINS)
    )
}

/// Command lines of many SMTP sessions, CRLF-terminated, with no message content.
#[derive(Clone, Debug)]
pub struct CommandCorpus {
    /// The wire bytes.
    pub bytes: Vec<u8>,
    /// Number of command lines.
    pub commands: usize,
}

/// Appends the commands of one transaction (MAIL with SIZE and BODY, 1 to 5 RCPT) and
/// returns how many it wrote. With `dsn`, each RCPT asks for delivery status notifications
/// (RFC 3461) as big senders do: `NOTIFY=`, and `ORCPT=` half the time.
fn transaction(rng: &mut Rng, out: &mut Vec<u8>, size: usize, dsn: bool) -> usize {
    // About 5% null reverse paths, as bounces and DSNs are.
    let from = if rng.chance(50) {
        String::new()
    } else {
        address(rng)
    };
    out.extend_from_slice(format!("MAIL FROM:<{from}> SIZE={size} BODY=8BITMIME\r\n").as_bytes());
    let rcpts = rng.between(1, 5);
    for _ in 0..rcpts {
        let to = address(rng);
        out.extend_from_slice(format!("RCPT TO:<{to}>").as_bytes());
        if dsn {
            let notify = rng.pick(&[
                " NOTIFY=FAILURE",
                " NOTIFY=SUCCESS,FAILURE",
                " NOTIFY=FAILURE,DELAY",
                " NOTIFY=NEVER",
            ]);
            out.extend_from_slice(notify.as_bytes());
            if rng.chance(500) {
                // xtext (RFC 3461 4): `+` and `=` are written as hex escapes.
                let orcpt = to.replace('+', "+2B").replace('=', "+3D");
                out.extend_from_slice(format!(" ORCPT=rfc822;{orcpt}").as_bytes());
            }
        }
        out.extend_from_slice(b"\r\n");
    }
    1 + rcpts
}

/// `sessions` sessions of command lines as a busy inbound server sees them: EHLO, STARTTLS
/// and EHLO again in most sessions (the TLS handshake itself is not part of the corpus), 1 to 3
/// transactions (MAIL FROM with SIZE and BODY=8BITMIME, 1 to 5 RCPT TO, with DSN parameters in
/// a third of the transactions, then DATA, or RSET one time in a hundred), QUIT.
pub fn command_corpus(seed: u64, sessions: usize) -> CommandCorpus {
    let mut rng = Rng::new(seed);
    let mut bytes = Vec::new();
    let mut commands = 0;
    for _ in 0..sessions {
        let ehlo = format!("EHLO {}\r\n", client_name(&mut rng));
        bytes.extend_from_slice(ehlo.as_bytes());
        commands += 1;
        if rng.chance(800) {
            bytes.extend_from_slice(b"STARTTLS\r\n");
            bytes.extend_from_slice(ehlo.as_bytes());
            commands += 2;
        }
        for _ in 0..rng.between(1, 3) {
            let size = rng.between(500, 10_000_000);
            let dsn = rng.chance(333);
            commands += transaction(&mut rng, &mut bytes, size, dsn);
            bytes.extend_from_slice(if rng.chance(10) {
                b"RSET\r\n"
            } else {
                b"DATA\r\n"
            });
            commands += 1;
        }
        bytes.extend_from_slice(b"QUIT\r\n");
        commands += 1;
    }
    CommandCorpus { bytes, commands }
}

/// Dot-stuffed message content ready to follow a 354 reply.
#[derive(Clone, Debug)]
pub struct Body {
    /// The wire bytes: stuffed content, then the `.CRLF` that ends it (after the content's
    /// final CRLF, so the stream ends in `CRLF.CRLF`).
    pub wire: Vec<u8>,
    /// Octets of content once un-stuffed (what the decoder must hand out).
    pub content_len: usize,
    /// Lines in the content.
    pub lines: usize,
    /// Lines that start with a dot and so were stuffed.
    pub stuffed: usize,
}

/// Appends one line of `len` text characters (no line ending) made of words.
fn text_line(rng: &mut Rng, len: usize, out: &mut Vec<u8>) {
    let end = out.len() + len;
    while out.len() < end {
        let word = rng.pick(WORDS).as_bytes();
        let room = end - out.len();
        out.extend_from_slice(&word[..word.len().min(room)]);
        if out.len() < end {
            out.push(b' ');
        }
    }
}

/// How long the lines of a generated body are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineLengths {
    /// Uniform from 72 to 998 characters (RFC 5322's limit); about 535 on average. Few real
    /// messages look like this; it is kept as the long-line case.
    Long,
    /// What real mail looks like: 80 % of lines 72 to 78 characters (base64 and
    /// quoted-printable wrap at 76, text at 78), 15 % 79 to 300, 5 % 301 to 998.
    Realistic,
}

impl LineLengths {
    fn draw(self, rng: &mut Rng) -> usize {
        match self {
            Self::Long => rng.between(72, 998),
            Self::Realistic => match rng.below(100) {
                0..80 => rng.between(72, 78),
                80..95 => rng.between(79, 300),
                _ => rng.between(301, 998),
            },
        }
    }
}

/// Message content of about `target` octets: lines of 72 to 998 characters (RFC 5322's limit),
/// `stuffed_per_mille` of them starting with a dot, dot-stuffed on the wire. The last line is
/// shortened so the content is exactly `target` octets when `target` allows it.
pub fn body(seed: u64, target: usize, stuffed_per_mille: usize) -> Body {
    text_body(seed, target, stuffed_per_mille, LineLengths::Long)
}

/// Message content of about `target` octets of word-like text with lines as `lengths` says,
/// `stuffed_per_mille` of them starting with a dot, dot-stuffed on the wire. The last line is
/// shortened so the content is exactly `target` octets when `target` allows it.
pub fn text_body(seed: u64, target: usize, stuffed_per_mille: usize, lengths: LineLengths) -> Body {
    let mut rng = Rng::new(seed);
    let mut wire = Vec::with_capacity(target + target / 64 + 16);
    let (mut content_len, mut lines, mut stuffed) = (0, 0, 0);
    while content_len < target {
        let room = target - content_len;
        // A line needs at least one character and its CRLF.
        let len = lengths.draw(&mut rng).min(room.saturating_sub(2)).max(1);
        if rng.chance(stuffed_per_mille) {
            // The content line starts with a dot; on the wire it gets a second one.
            wire.extend_from_slice(b"..");
            text_line(&mut rng, len - 1, &mut wire);
            stuffed += 1;
        } else {
            text_line(&mut rng, len, &mut wire);
        }
        wire.extend_from_slice(b"\r\n");
        content_len += len + 2;
        lines += 1;
    }
    wire.extend_from_slice(b".\r\n");
    Body {
        wire,
        content_len,
        lines,
        stuffed,
    }
}

/// `content` (CRLF line endings, ending in CRLF) as it goes on the wire: dot-stuffed by the
/// core's own [`DotEncoder`], then the end marker.
pub fn on_the_wire(content: &[u8]) -> Body {
    let mut wire = Vec::with_capacity(content.len() + content.len() / 64 + 16);
    let mut encoder = DotEncoder::new();
    encoder.encode(content, &mut wire);
    encoder.finish(&mut wire);
    let lines = memchr::memchr_iter(b'\n', content).count();
    let stuffed =
        content.windows(2).filter(|w| w == b"\n.").count() + usize::from(content.starts_with(b"."));
    Body {
        wire,
        content_len: content.len(),
        lines,
        stuffed,
    }
}

/// The headers and the text part every generated MIME message starts with.
fn mime_head(rng: &mut Rng, content_type: &str, encoding: &str, out: &mut Vec<u8>) {
    let head = format!(
        "Received: from {client} (mail.example.net [192.0.2.17])\r\n\tby mx.example.com with ESMTPS id 4Xk2Lq6Zz9z1;\r\n\tTue, 1 Dec 2026 12:00:00 +0000\r\n\
         From: {from}\r\nTo: {to}\r\nSubject: quarterly numbers\r\nDate: Tue, 1 Dec 2026 11:59:58 +0000\r\n\
         Message-ID: <{id}@example.com>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Please find the report attached.\r\n\r\nKind regards\r\n\r\n\
         --b1\r\nContent-Type: {content_type}\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n",
        client = client_name(rng),
        from = address(rng),
        to = address(rng),
        id = rng.next_u64(),
    );
    out.extend_from_slice(head.as_bytes());
}

/// A message with a base64 attachment of about `target` octets of content: headers, a short
/// text part, then random bytes in base64 lines of 76 characters (RFC 2045 6.8).
pub fn base64_message(seed: u64, target: usize) -> Body {
    use base64::Engine as _;
    let mut rng = Rng::new(seed);
    let mut content = Vec::with_capacity(target + 1024);
    mime_head(
        &mut rng,
        "application/pdf; name=\"report.pdf\"",
        "base64",
        &mut content,
    );
    // 57 octets make one 76-character line.
    let mut raw = [0u8; 57];
    let mut line = String::with_capacity(80);
    while content.len() < target {
        for chunk in raw.chunks_mut(8) {
            let bits = rng.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bits[..chunk.len()]);
        }
        line.clear();
        base64::engine::general_purpose::STANDARD.encode_string(raw, &mut line);
        content.extend_from_slice(line.as_bytes());
        content.extend_from_slice(b"\r\n");
    }
    content.extend_from_slice(b"\r\n--b1--\r\n");
    on_the_wire(&content)
}

/// A message with a quoted-printable part of about `target` octets of content: text with
/// accented letters (`=C3=A9`), soft line breaks at 76 characters (RFC 2045 6.7), paragraphs,
/// and the occasional line that starts with a dot.
pub fn quoted_printable_message(seed: u64, target: usize) -> Body {
    let mut rng = Rng::new(seed);
    let mut content = Vec::with_capacity(target + 1024);
    mime_head(
        &mut rng,
        "text/plain; charset=utf-8",
        "quoted-printable",
        &mut content,
    );
    const QP_WORDS: &[&str] = &[
        "caf=C3=A9",
        "r=C3=A9sum=C3=A9",
        "na=C3=AFve",
        "Gr=C3=BC=C3=9Fe",
        "=E2=82=AC100",
    ];
    // Quoted-printable reserves `=` for escapes.
    let plain: Vec<&str> = WORDS.iter().copied().filter(|w| !w.contains('=')).collect();
    let mut column = 0;
    while content.len() < target {
        let word = if rng.chance(100) {
            *rng.pick(QP_WORDS)
        } else {
            *rng.pick(&plain)
        };
        // Quoted-printable leaves a dot at the start of a line alone; SMTP stuffs it.
        if column + word.len() + 1 > 75 {
            // A soft line break, or the end of a paragraph now and then.
            content.extend_from_slice(if rng.chance(80) {
                b"\r\n\r\n"
            } else {
                b"=\r\n"
            });
            column = 0;
            if rng.chance(10) {
                content.push(b'.');
                column += 1;
            }
        }
        if column > 0 {
            content.push(b' ');
            column += 1;
        }
        content.extend_from_slice(word.as_bytes());
        column += word.len();
    }
    content.extend_from_slice(b"\r\n\r\n--b1--\r\n");
    on_the_wire(&content)
}

/// Complete sessions, commands and content, back to back; each one is its own connection.
#[derive(Clone, Debug)]
pub struct SessionCorpus {
    /// The wire bytes of all sessions.
    pub bytes: Vec<u8>,
    /// Where each session is in `bytes`.
    pub sessions: Vec<Range<usize>>,
    /// Command lines in all sessions.
    pub commands: usize,
    /// Messages sent (DATA transactions).
    pub messages: usize,
    /// Content octets once un-stuffed.
    pub content_len: usize,
}

/// `sessions` sessions as [`command_corpus`] builds them, but every DATA followed by a small
/// message (1 to 8 lines, 1% stuffed), so a session spans several reads.
pub fn session_corpus(seed: u64, sessions: usize) -> SessionCorpus {
    let mut rng = Rng::new(seed);
    let mut corpus = SessionCorpus {
        bytes: Vec::new(),
        sessions: Vec::with_capacity(sessions),
        commands: 0,
        messages: 0,
        content_len: 0,
    };
    for _ in 0..sessions {
        let start = corpus.bytes.len();
        let out = &mut corpus.bytes;
        out.extend_from_slice(format!("EHLO {}\r\n", client_name(&mut rng)).as_bytes());
        corpus.commands += 1;
        for _ in 0..rng.between(1, 6) {
            let lines = rng.between(1, 8);
            let msg = body(rng.next_u64(), lines * 535, 10);
            corpus.commands += transaction(&mut rng, out, msg.content_len, false);
            corpus.commands += 1;
            if rng.chance(100) {
                out.extend_from_slice(b"RSET\r\n");
            } else {
                out.extend_from_slice(b"DATA\r\n");
                out.extend_from_slice(&msg.wire);
                corpus.messages += 1;
                corpus.content_len += msg.content_len;
            }
        }
        out.extend_from_slice(b"QUIT\r\n");
        corpus.commands += 1;
        corpus.sessions.push(start..corpus.bytes.len());
    }
    corpus
}

/// One session carrying `body`: EHLO, MAIL with the body's SIZE, one RCPT, DATA, the content,
/// QUIT.
pub fn data_session(body: &Body) -> Vec<u8> {
    let mut out = format!(
        "EHLO client.example.com\r\nMAIL FROM:<sender@example.com> SIZE={} BODY=8BITMIME\r\n\
         RCPT TO:<rcpt@example.org>\r\nDATA\r\n",
        body.content_len
    )
    .into_bytes();
    out.extend_from_slice(&body.wire);
    out.extend_from_slice(b"QUIT\r\n");
    out
}

/// A server configuration with defaults, except a message size limit of `max_message`.
pub fn server_config(max_message: u64) -> Arc<ServerConfig> {
    let mut options = ServerOptions {
        hostname: "mx.example.com".into(),
        ..ServerOptions::default()
    };
    options.limits.message_size = max_message;
    Arc::new(ServerConfig::new(options).expect("the benchmark configuration is valid"))
}

// ---- Baselines and drivers -------------------------------------------------------------------

/// Baseline: splits `input` into lines at each LF with memchr, passing each line (CRLF
/// included) through `black_box`. Returns the number of lines.
pub fn memchr_split(input: &[u8]) -> usize {
    let mut lines = 0;
    let mut pos = 0;
    while let Some(lf) = memchr::memchr(b'\n', &input[pos..]) {
        black_box(&input[pos..pos + lf + 1]);
        pos += lf + 1;
        lines += 1;
    }
    lines
}

/// Longest command line with CRLF, as `smtpkit_proto::line::MAX_COMMAND_LINE`.
const MAX_COMMAND_LINE: usize = smtpkit_proto::line::MAX_COMMAND_LINE;

/// Frames each line the way the core does (LF searched within the line limit, AUTH lines
/// allowed to be longer, CR stripped) and parses it with [`Command::parse`], passing each
/// result through `black_box`. Returns the numbers of commands parsed and refused.
pub fn frame_and_parse(input: &[u8]) -> (usize, usize) {
    let (mut ok, mut err) = (0, 0);
    let mut rest = input;
    loop {
        // As `smtpkit_proto::line::limit_for`: `AUTH ` as one case-folded word and a space.
        let max = match rest.first_chunk::<5>() {
            Some(&[a, u, t, h, b' '])
                if u32::from_le_bytes([a, u, t, h]) | 0x2020_2020
                    == u32::from_le_bytes(*b"auth") =>
            {
                smtpkit_proto::line::MAX_AUTH_LINE
            }
            _ => MAX_COMMAND_LINE,
        };
        let window = &rest[..rest.len().min(max)];
        let Some(lf) = memchr::memchr(b'\n', window) else {
            break;
        };
        let line = rest[..lf].strip_suffix(b"\r").unwrap_or(&rest[..lf]);
        match black_box(Command::parse(line)) {
            Ok(_) => ok += 1,
            Err(_) => err += 1,
        }
        rest = &rest[lf + 1..];
    }
    (ok, err)
}

/// Baseline: copies `src` into `buf` in pieces of `read` bytes, as a socket read does,
/// passing each piece through `black_box`. Returns the bytes copied.
pub fn memcpy_in_reads(src: &[u8], read: usize, buf: &mut Vec<u8>) -> usize {
    buf.resize(read, 0);
    let mut copied = 0;
    for piece in src.chunks(read) {
        let dst = &mut buf[..piece.len()];
        dst.copy_from_slice(piece);
        black_box(&*dst);
        copied += piece.len();
    }
    copied
}

/// What a [`DotDecoder`] run produced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Content octets handed out.
    pub content: usize,
    /// Content chunks handed out.
    pub chunks: usize,
    /// Input octets up to and including the end marker, if it was found.
    pub end: Option<usize>,
}

/// Feeds `wire` to a [`DotDecoder`] the way an adapter does: each read copies the next `read`
/// bytes into `buf` behind the bytes the decoder left unconsumed (at most
/// [`DECODER_HOLD_BACK`]), then the decoder runs until it asks for more. Each content chunk goes
/// through `black_box`.
pub fn decode_in_reads(wire: &[u8], read: usize, buf: &mut Vec<u8>) -> DecodeStats {
    buf.resize(read + DECODER_HOLD_BACK, 0);
    let mut decoder = DotDecoder::new(BareLineEnding::Normalize);
    let mut stats = DecodeStats::default();
    // Bytes held in `buf[..held]`, and how far into `wire` the reads have got.
    let mut held = 0;
    let mut taken = 0;
    while taken < wire.len() {
        let n = read.min(wire.len() - taken);
        buf[held..held + n].copy_from_slice(&wire[taken..taken + n]);
        taken += n;
        let filled = held + n;
        let mut pos = 0;
        loop {
            match decoder.decode(&buf[pos..filled]) {
                Decoded::Data { data, consumed } => {
                    black_box(data);
                    stats.content += data.len();
                    stats.chunks += 1;
                    pos += consumed;
                }
                Decoded::NeedMore { consumed } => {
                    pos += consumed;
                    break;
                }
                Decoded::End { consumed } => {
                    stats.end = Some(taken - (filled - pos - consumed));
                    return stats;
                }
            }
        }
        held = filled - pos;
        assert!(
            held <= DECODER_HOLD_BACK,
            "the decoder held back {held} bytes"
        );
        buf.copy_within(pos..filled, 0);
    }
    stats
}

/// Feeds `wire` to a [`DotDecoder`] straight from memory, the input growing by `read` bytes at
/// a time, with no copy: the decoder's own cost, without the read.
pub fn decode_in_place(wire: &[u8], read: usize) -> DecodeStats {
    let mut decoder = DotDecoder::new(BareLineEnding::Normalize);
    let mut stats = DecodeStats::default();
    let mut pos = 0;
    let mut available = 0;
    while available < wire.len() {
        available = (available + read).min(wire.len());
        loop {
            match decoder.decode(&wire[pos..available]) {
                Decoded::Data { data, consumed } => {
                    black_box(data);
                    stats.content += data.len();
                    stats.chunks += 1;
                    pos += consumed;
                }
                Decoded::NeedMore { consumed } => {
                    pos += consumed;
                    break;
                }
                Decoded::End { consumed } => {
                    stats.end = Some(pos + consumed);
                    return stats;
                }
            }
        }
    }
    stats
}

/// Baseline: the obvious line-at-a-time un-stuffer, fed like [`decode_in_place`]. It finds
/// each LF with one `memchr`, ends at a line that is exactly `.CRLF`, drops the first dot of
/// any other line that starts with one, and hands out each line (CRLF included) through
/// `black_box`. It enforces no bare CR/LF policy: a bare LF just ends a line.
pub fn unstuff_lines_in_place(wire: &[u8], read: usize) -> DecodeStats {
    let mut stats = DecodeStats::default();
    let mut pos = 0;
    let mut available = 0;
    while available < wire.len() {
        available = (available + read).min(wire.len());
        while let Some(lf) = memchr::memchr(b'\n', &wire[pos..available]) {
            let line = &wire[pos..pos + lf + 1];
            pos += lf + 1;
            if line == b".\r\n" {
                stats.end = Some(pos);
                return stats;
            }
            let content = line.strip_prefix(b".").unwrap_or(line);
            black_box(content);
            stats.content += content.len();
            stats.chunks += 1;
        }
    }
    stats
}

/// What a [`Server`] did with some sessions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Sessions that ended with the server closed.
    pub closed: usize,
    /// Events other than content chunks (one per command, plus connects and data ends).
    pub events: usize,
    /// Content octets handed out.
    pub content: usize,
    /// Commands or messages the core refused on its own.
    pub rejected: usize,
    /// Reply octets written.
    pub reply_bytes: usize,
}

/// Runs one session over `input` as an adapter does: reads of up to `inbuf`'s free space
/// (the caller sizes it), every event handled, every decision accepted, replies drained after
/// each batch of events. Adds what happened to `stats`.
pub fn run_session(
    config: &Arc<ServerConfig>,
    now: Instant,
    mut input: &[u8],
    inbuf: &mut InBuf,
    stats: &mut SessionStats,
) {
    let mut server = Server::new(Arc::clone(config), now);
    // Each round reads, or answers a decision, or drains output; a session that neither closes
    // nor progresses within that many rounds is a bug in the driver or the corpus.
    let max_rounds = 4 * (input.len() + 16);
    for _ in 0..max_rounds {
        if server.is_closed() {
            break;
        }
        if server.wants_input() {
            if input.is_empty() {
                server.handle_eof(now);
                break;
            }
            let spare = inbuf.spare();
            let n = spare.len().min(input.len());
            spare[..n].copy_from_slice(&input[..n]);
            inbuf.commit(n);
            input = &input[n..];
        }
        loop {
            let progress = server.handle_input(now, inbuf.data());
            let Some(event) = progress.event else {
                inbuf.consume(progress.consumed);
                break;
            };
            match event {
                Event::DataChunk(chunk) => stats.content += black_box(chunk).len(),
                // Follows the command or reply that ended the transaction; not counted apart.
                Event::TransactionEnded { .. } => {}
                Event::Rejected { .. } | Event::MessageRejected { .. } => {
                    stats.events += 1;
                    stats.rejected += 1;
                }
                _ => stats.events += 1,
            }
            if server.awaiting_decision() {
                server
                    .accept(now)
                    .expect("a pending decision can be accepted");
            }
            inbuf.consume(progress.consumed);
        }
        let out = black_box(server.poll_transmit());
        let n = out.len();
        stats.reply_bytes += n;
        server.advance_transmit(n);
    }
    if server.is_closed() {
        stats.closed += 1;
    }
}

/// Runs every session of `corpus` through its own [`Server`], reading into one reused input
/// buffer (its size is the read size: an adapter reads into its free space).
pub fn run_sessions(
    config: &Arc<ServerConfig>,
    corpus: &SessionCorpus,
    inbuf: &mut InBuf,
) -> SessionStats {
    let now = Instant::now();
    let mut stats = SessionStats::default();
    for range in &corpus.sessions {
        run_session(config, now, &corpus.bytes[range.clone()], inbuf, &mut stats);
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use smtpkit_proto::testing::reference_decode;

    #[test]
    fn corpora_are_deterministic() {
        assert_eq!(command_corpus(7, 50).bytes, command_corpus(7, 50).bytes);
        assert_ne!(command_corpus(7, 50).bytes, command_corpus(8, 50).bytes);
        assert_eq!(body(3, 10_000, 10).wire, body(3, 10_000, 10).wire);
    }

    #[test]
    fn every_command_parses() {
        let corpus = command_corpus(1, 500);
        assert_eq!(memchr_split(&corpus.bytes), corpus.commands);
        assert_eq!(frame_and_parse(&corpus.bytes), (corpus.commands, 0));
    }

    #[test]
    fn body_has_the_promised_shape() {
        let b = body(5, 1 << 20, 10);
        assert_eq!(b.content_len, 1 << 20);
        assert!(b.wire.ends_with(b"\r\n.\r\n"));
        let stuffed_lines = b.wire.windows(3).filter(|w| w == b"\n..").count();
        assert_eq!(
            stuffed_lines + usize::from(b.wire.starts_with(b"..")),
            b.stuffed
        );
        // About 1%: between 0.5% and 1.5% of ~1960 lines.
        assert!(
            (b.lines / 200..=b.lines * 3 / 200).contains(&b.stuffed),
            "{b:?}"
        );
        let longest = b.wire.split(|&c| c == b'\n').map(<[u8]>::len).max();
        // 998 characters, the stuffing dot and the CR.
        assert!(longest.unwrap() <= 1000);
        let (content, bare, end) = reference_decode(&b.wire, BareLineEnding::Reject).unwrap();
        assert_eq!(
            (content.len(), bare, end),
            (b.content_len, false, b.wire.len())
        );
    }

    #[test]
    fn decoders_hand_out_the_whole_content() {
        for (target, stuffing) in [(1024, 0), (1024, 100), (65_536, 0), (65_536, 100)] {
            let b = body(9, target, stuffing);
            for read in [7, 1024, 8192, 65_536] {
                let mut buf = Vec::new();
                let copied = decode_in_reads(&b.wire, read, &mut buf);
                assert_eq!(copied.content, b.content_len, "{target} {stuffing} {read}");
                assert_eq!(copied.end, Some(b.wire.len()), "{target} {stuffing} {read}");
                let in_place = decode_in_place(&b.wire, read);
                assert_eq!(in_place.content, b.content_len);
                assert_eq!(in_place.end, Some(b.wire.len()));
                assert_eq!(memcpy_in_reads(&b.wire, read, &mut buf), b.wire.len());
            }
        }
    }

    #[test]
    fn realistic_body_has_the_promised_mix() {
        let b = text_body(6, 1 << 20, 10, LineLengths::Realistic);
        assert_eq!(b.content_len, 1 << 20);
        let lens: Vec<usize> = b
            .wire
            .split(|&c| c == b'\n')
            .map(|l| l.len().saturating_sub(1))
            .collect();
        let share = |r: std::ops::RangeInclusive<usize>| {
            lens.iter().filter(|l| r.contains(l)).count() * 100 / lens.len()
        };
        // The stuffing dot makes a few stuffed lines one longer than drawn.
        assert!((78..=82).contains(&share(72..=78)), "{}", share(72..=78));
        assert!((13..=17).contains(&share(79..=300)), "{}", share(79..=300));
        assert!((3..=7).contains(&share(301..=999)), "{}", share(301..=999));
        assert!(
            (b.lines / 200..=b.lines * 3 / 200).contains(&b.stuffed),
            "{b:?}"
        );
    }

    #[test]
    fn mime_messages_decode_to_their_content() {
        for b in [
            base64_message(1, 200_000),
            quoted_printable_message(2, 200_000),
        ] {
            let (content, bare, end) = reference_decode(&b.wire, BareLineEnding::Reject).unwrap();
            assert_eq!(
                (content.len(), bare, end),
                (b.content_len, false, b.wire.len())
            );
            assert!(b.lines > 2_000, "{}", b.lines);
            let longest = content.split(|&c| c == b'\n').map(<[u8]>::len).max();
            assert!(longest.unwrap() <= 78, "{longest:?}");
        }
        let b64 = base64_message(1, 200_000);
        assert!(
            b64.wire
                .windows(78)
                .any(|w| w[0] == b'\n' && w[77] == b'\r')
        );
        let qp = quoted_printable_message(2, 200_000);
        assert!(qp.stuffed > 0 && qp.wire.windows(6).any(|w| w == b"=C3=A9"));
    }

    #[test]
    fn line_unstuffer_hands_out_the_whole_content() {
        for b in [
            body(9, 65_536, 100),
            text_body(9, 65_536, 10, LineLengths::Realistic),
            base64_message(3, 65_536),
            quoted_printable_message(3, 65_536),
        ] {
            for read in [7, 8192] {
                let stats = unstuff_lines_in_place(&b.wire, read);
                assert_eq!(stats.content, b.content_len);
                assert_eq!(stats.end, Some(b.wire.len()));
                assert_eq!(stats.chunks, b.lines);
                let decoded = decode_in_place(&b.wire, read);
                assert_eq!(decoded.content, b.content_len);
                assert_eq!(decoded.end, Some(b.wire.len()));
            }
        }
    }

    #[test]
    fn sessions_run_without_refusals() {
        let corpus = session_corpus(2, 40);
        let config = server_config(25 * 1024 * 1024);
        for read in [512, 8192, 65_536] {
            let stats = run_sessions(&config, &corpus, &mut InBuf::new(read, read));
            assert_eq!(stats.rejected, 0, "{read}");
            assert_eq!(stats.closed, corpus.sessions.len(), "{read}");
            assert_eq!(stats.content, corpus.content_len, "{read}");
            // Connect, every command, and DataEnd per message.
            assert_eq!(
                stats.events,
                corpus.sessions.len() + corpus.commands + corpus.messages,
                "{read}"
            );
        }
    }

    #[test]
    fn data_session_delivers_the_body() {
        let b = body(4, 300_000, 10);
        let input = data_session(&b);
        let config = server_config(1 << 20);
        let mut stats = SessionStats::default();
        let mut inbuf = InBuf::new(8192, 8192);
        run_session(&config, Instant::now(), &input, &mut inbuf, &mut stats);
        assert_eq!(stats.rejected, 0);
        assert_eq!(stats.closed, 1);
        assert_eq!(stats.content, b.content_len);
        assert!(inbuf.data().is_empty());
    }
}
