//! Command encoding, for clients and for round-trip tests.

use super::Command;
use crate::reply::encode::write_u64;

impl Command<'_> {
    /// Appends the command line, CRLF included, to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        // Writing into a Vec cannot fail.
        let _ = match self {
            Self::Hello { verb, domain } => write!(out, "{} {domain}", verb.as_str()),
            Self::Mail {
                reverse_path,
                params,
            } => {
                let _ = write!(out, "MAIL FROM:{reverse_path}");
                write_params(out, params.as_str());
                Ok(())
            }
            Self::Rcpt {
                forward_path,
                params,
            } => {
                let _ = write!(out, "RCPT TO:{forward_path}");
                write_params(out, params.as_str());
                Ok(())
            }
            Self::Bdat { size, last } => {
                out.extend_from_slice(b"BDAT ");
                write_u64(out, *size);
                if *last {
                    out.extend_from_slice(b" LAST");
                }
                Ok(())
            }
            Self::Vrfy(s) => write!(out, "VRFY {s}"),
            Self::Expn(s) => write!(out, "EXPN {s}"),
            Self::Xclient(s) => write!(out, "XCLIENT {s}"),
            Self::Xforward(s) => write!(out, "XFORWARD {s}"),
            Self::Help(Some(s)) => write!(out, "HELP {s}"),
            Self::Noop(Some(s)) => write!(out, "NOOP {s}"),
            Self::Auth {
                mechanism,
                initial_response,
            } => {
                let _ = write!(out, "AUTH {mechanism}");
                if let Some(r) = initial_response {
                    let _ = write!(out, " {r}");
                }
                Ok(())
            }
            Self::Data
            | Self::Rset
            | Self::Quit
            | Self::StartTls
            | Self::Help(None)
            | Self::Noop(None) => {
                out.extend_from_slice(self.verb().as_bytes());
                Ok(())
            }
        };
        out.extend_from_slice(b"\r\n");
    }
}

fn write_params(out: &mut Vec<u8>, params: &str) {
    if !params.is_empty() {
        out.push(b' ');
        out.extend_from_slice(params.as_bytes());
    }
}
