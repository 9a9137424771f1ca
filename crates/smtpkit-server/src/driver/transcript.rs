//! The protocol transcript: at TRACE level, every command line the client sent (`C:`) and every
//! reply line sent back (`S:`), logged in the session's span. AUTH secrets are redacted and
//! message content is summarized by its size, so a transcript can be shared to debug a client.

use smtpkit_proto::Event;
use tracing::{Level, trace};

/// The longest command text logged; longer lines (already refused by the core) are cut.
const MAX_LOGGED: usize = 512;

/// One session's transcript: what is needed to summarize message content.
#[derive(Debug, Default)]
pub(super) struct Transcript {
    /// Content octets of the message in progress.
    content: u64,
}

/// Whether transcripts are on; checked once per batch of input, so a server without TRACE
/// pays nothing for them.
pub(super) fn enabled() -> bool {
    tracing::enabled!(Level::TRACE)
}

impl Transcript {
    /// Logs what the client sent for `event`: `input` is the input the core consumed with it,
    /// and `in_auth` whether that input answers an AUTH challenge (a secret).
    pub(super) fn client(&mut self, event: &Event<'_>, input: &[u8], in_auth: bool) {
        match event {
            Event::DataChunk(chunk) => self.content += chunk.len() as u64,
            Event::DataEnd | Event::BdatEnd { last: true } | Event::MessageRejected { .. } => {
                let octets = std::mem::take(&mut self.content);
                trace!("C: <message content, {octets} octets>");
            }
            Event::BdatEnd { last: false } => {}
            Event::Auth {
                mechanism,
                initial_response,
            } => {
                let secret = if initial_response.is_some() {
                    " <redacted>"
                } else {
                    ""
                };
                trace!("C: AUTH {mechanism}{secret}");
            }
            Event::AuthResponse(_) => trace!("C: <redacted>"),
            Event::Rejected { .. } if in_auth => trace!("C: <redacted>"),
            _ => {
                if let Some(line) = first_line(input) {
                    trace!("C: {line}");
                }
            }
        }
    }

    /// Logs the reply lines in `output` (bytes the core queued since the last call).
    pub(super) fn server(&self, output: &[u8]) {
        for line in output.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if !line.is_empty() {
                trace!("S: {}", String::from_utf8_lossy(line));
            }
        }
    }
}

/// The first line of `input` without its ending, cut to [`MAX_LOGGED`] octets.
fn first_line(input: &[u8]) -> Option<String> {
    let end = input
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(input.len());
    let line = input[..end].strip_suffix(b"\r").unwrap_or(&input[..end]);
    if line.is_empty() {
        return None;
    }
    let cut = &line[..line.len().min(MAX_LOGGED)];
    Some(String::from_utf8_lossy(cut).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line_strips_the_ending_and_cuts_long_lines() {
        assert_eq!(first_line(b"EHLO a\r\nMAIL").as_deref(), Some("EHLO a"));
        assert_eq!(first_line(b"\r\n"), None);
        let long = vec![b'x'; 2000];
        assert_eq!(first_line(&long).map(|l| l.len()), Some(MAX_LOGGED));
    }
}
