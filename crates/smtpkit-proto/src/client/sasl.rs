//! [`Sasl`]: the AUTH mechanisms the client speaks (RFC 4954): PLAIN (RFC 4616), LOGIN, and
//! XOAUTH2 (Google's and Microsoft's OAuth 2.0 bearer mechanism).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::secret::Secret;

/// A mechanism with its credentials. `Debug` never shows the secrets.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Sasl<'a> {
    /// PLAIN, sent as an initial response in one round trip.
    Plain {
        /// The user name (authentication identity).
        user: &'a str,
        /// The password.
        password: &'a str,
    },
    /// LOGIN: the user name and the password, each answering a 334 challenge.
    Login {
        /// The user name.
        user: &'a str,
        /// The password.
        password: &'a str,
    },
    /// XOAUTH2, sent as an initial response.
    XOAuth2 {
        /// The user (mailbox) name.
        user: &'a str,
        /// The OAuth 2.0 access token.
        token: &'a str,
    },
}

impl core::fmt::Debug for Sasl<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Sasl::{}(..)", self.name())
    }
}

/// The state of an exchange in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AuthStep {
    /// PLAIN or XOAUTH2 sent its initial response: a 334 now is a failure to answer with an
    /// empty line (XOAUTH2's error challenge) or `*` (PLAIN: cancel).
    Sent { xoauth2: bool },
    /// LOGIN: the next 334 gets the user name, then the password.
    Login {
        user: Secret<String>,
        password: Secret<String>,
    },
    /// LOGIN: the user name went out; the next 334 gets the password.
    LoginPassword { password: Secret<String> },
    /// Everything was sent; a 334 now is cancelled with `*`.
    Done,
}

impl Sasl<'_> {
    /// The mechanism name as sent.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Plain { .. } => "PLAIN",
            Self::Login { .. } => "LOGIN",
            Self::XOAuth2 { .. } => "XOAUTH2",
        }
    }

    /// Writes the AUTH command line and returns what later challenges get.
    pub(crate) fn start(&self, out: &mut Vec<u8>) -> AuthStep {
        out.extend_from_slice(b"AUTH ");
        out.extend_from_slice(self.name().as_bytes());
        match *self {
            Self::Plain { user, password } => {
                // RFC 4616 2: [authzid] NUL authcid NUL passwd; no authzid.
                let msg = [b"\0", user.as_bytes(), b"\0", password.as_bytes()].concat();
                push_b64(out, &msg);
                out.extend_from_slice(b"\r\n");
                AuthStep::Sent { xoauth2: false }
            }
            Self::XOAuth2 { user, token } => {
                let msg = [
                    b"user=",
                    user.as_bytes(),
                    b"\x01auth=Bearer ",
                    token.as_bytes(),
                    b"\x01\x01",
                ]
                .concat();
                push_b64(out, &msg);
                out.extend_from_slice(b"\r\n");
                AuthStep::Sent { xoauth2: true }
            }
            Self::Login { user, password } => {
                out.extend_from_slice(b"\r\n");
                AuthStep::Login {
                    user: Secret::new(STANDARD.encode(user)),
                    password: Secret::new(STANDARD.encode(password)),
                }
            }
        }
    }
}

impl AuthStep {
    /// Answers a 334 challenge: writes the response line and moves on.
    pub(crate) fn respond(&mut self, out: &mut Vec<u8>) {
        let step = std::mem::replace(self, Self::Done);
        match step {
            Self::Login { user, password } => {
                out.extend_from_slice(user.expose().as_bytes());
                *self = Self::LoginPassword { password };
            }
            Self::LoginPassword { password } => out.extend_from_slice(password.expose().as_bytes()),
            // RFC 7628 3.2.3 (the same for XOAUTH2): the error challenge is answered with an
            // empty response, and the server then sends the final failure.
            Self::Sent { xoauth2: true } => {}
            // RFC 4954 4: `*` cancels an exchange the client cannot continue.
            Self::Sent { xoauth2: false } | Self::Done => out.push(b'*'),
        }
        out.extend_from_slice(b"\r\n");
    }
}

fn push_b64(out: &mut Vec<u8>, msg: &[u8]) {
    out.push(b' ');
    let start = out.len();
    out.resize(start + base64::encoded_len(msg.len(), true).unwrap_or(0), 0);
    let n = STANDARD.encode_slice(msg, &mut out[start..]).unwrap_or(0);
    out.truncate(start + n);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        let mut out = Vec::new();
        Sasl::Plain {
            user: "user",
            password: "pass",
        }
        .start(&mut out);
        assert_eq!(out, b"AUTH PLAIN AHVzZXIAcGFzcw==\r\n");
        let c = crate::auth::decode_plain("AHVzZXIAcGFzcw==").unwrap();
        let crate::auth::Credentials::Password { user, password, .. } = c else {
            panic!("{c:?}")
        };
        assert_eq!(
            (user.as_str(), password.expose().as_str()),
            ("user", "pass")
        );

        out.clear();
        let mut step = Sasl::Login {
            user: "user",
            password: "pass",
        }
        .start(&mut out);
        step.respond(&mut out);
        step.respond(&mut out);
        step.respond(&mut out);
        assert_eq!(out, b"AUTH LOGIN\r\ndXNlcg==\r\ncGFzcw==\r\n*\r\n");

        out.clear();
        let mut step = Sasl::XOAuth2 {
            user: "u@x",
            token: "t",
        }
        .start(&mut out);
        step.respond(&mut out);
        assert_eq!(
            out,
            b"AUTH XOAUTH2 dXNlcj11QHgBYXV0aD1CZWFyZXIgdAEB\r\n\r\n"
        );
        assert!(
            !format!(
                "{:?}",
                Sasl::Plain {
                    user: "u",
                    password: "hunter2"
                }
            )
            .contains("hunter2")
        );
    }
}
