//! Test messages that can be recognized in a Maildir and checked for completeness, and the
//! Maildir scans that look for them.

use std::fs;
use std::path::{Path, PathBuf};

/// A message the scenarios send: `token` is unique per message and appears in a header and in the
/// last line, so a stored file is whole exactly when it ends with [`Letter::bytes`].
#[derive(Debug, Clone)]
pub(crate) struct Letter {
    pub(crate) token: String,
    pub(crate) bytes: Vec<u8>,
}

impl Letter {
    /// A message of about `size` octets with 76-octet lines (dots at line starts included, to
    /// exercise stuffing).
    pub(crate) fn new(token: &str, size: usize, subject: &str) -> Self {
        let mut bytes = format!(
            "From: <torture@client.test>\r\nTo: <rcpt@torture.test>\r\nSubject: {subject}\r\n\
             Message-ID: <{token}@client.test>\r\nX-Torture-Token: {token}\r\n\r\n"
        )
        .into_bytes();
        let end = format!("END {token}\r\n");
        let mut line = 0u64;
        while bytes.len() + end.len() < size {
            line += 1;
            let text = format!(".{token} line {line} ");
            let mut l = text.into_bytes();
            l.resize(76, b'x');
            l.extend_from_slice(b"\r\n");
            bytes.extend_from_slice(&l);
        }
        bytes.extend_from_slice(end.as_bytes());
        Self {
            token: token.to_owned(),
            bytes,
        }
    }

    /// Whether `stored` is this message whole, with only trace headers in front.
    pub(crate) fn is_whole_in(&self, stored: &[u8]) -> bool {
        stored.ends_with(&self.bytes)
    }
}

/// The token a stored message carries, if it is one of ours.
pub(crate) fn token_of(stored: &[u8]) -> Option<String> {
    let key = b"X-Torture-Token: ";
    let at = memchr::memmem::find(stored, key)? + key.len();
    let rest = &stored[at..];
    let end = memchr::memchr(b'\r', rest)?;
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// Files in `<root>/<domain>/<user>/<sub>/` for every mailbox under `root`.
pub(crate) fn files(root: &Path, sub: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for domain in read_dir(root) {
        for mailbox in read_dir(&domain) {
            out.extend(
                read_dir(&mailbox.join(sub))
                    .into_iter()
                    .filter(|p| p.is_file()),
            );
        }
    }
    out.sort();
    out
}

/// Files in one mailbox's `new/`.
pub(crate) fn new_files(root: &Path, domain: &str, user: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = read_dir(&root.join(domain).join(user).join("new"))
        .into_iter()
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

fn read_dir(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_are_recognizable_and_whole() {
        let l = Letter::new("t1", 1000, "hi");
        assert!(l.bytes.len() >= 1000 && l.bytes.len() < 1100);
        assert!(l.bytes.ends_with(b"END t1\r\n"));
        assert_eq!(token_of(&l.bytes).as_deref(), Some("t1"));
        let mut stored = b"Received: x\r\n".to_vec();
        stored.extend_from_slice(&l.bytes);
        assert!(l.is_whole_in(&stored));
        stored.truncate(stored.len() - 3);
        assert!(!l.is_whole_in(&stored));
    }
}
