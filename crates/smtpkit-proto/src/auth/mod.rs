//! SASL for AUTH (RFC 4954), server side: the [`Mechanism`] trait and the built-in mechanisms
//! PLAIN (RFC 4616), LOGIN, XOAUTH2 (Google's) and OAUTHBEARER (RFC 7628).
//!
//! A mechanism is sans-IO: it gets the client's decoded responses and answers each with a
//! [`Step`]: another challenge, the [`Credentials`] the client presented, or a failure. Who
//! drives it (smtpkit-server's dispatcher) does the base64, the `334` lines, the limit on the
//! number of steps and the call to the application; the core ([`Server`](crate::Server))
//! keeps the line length limit, `*` cancellation and the failure count.
//!
//! ```
//! use smtpkit_proto::auth::{self, Credentials, Step};
//! let mut plain = auth::builtin("PLAIN").unwrap();
//! let Step::Done(Credentials::Password { user, password, .. }) = plain.step(Some(b"\0user\0pass"))
//! else { panic!() };
//! assert_eq!((user.as_str(), password.expose().as_str()), ("user", "pass"));
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::secret::Secret;

mod oauth;
mod password;

pub use oauth::{OAuthBearer, XOAuth2};
pub use password::{Login, Plain};

/// The mechanisms this module implements, in the order a server would offer them.
pub const BUILTIN_MECHANISMS: [&str; 4] = ["PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"];

/// Why a SASL exchange failed to produce credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SaslError {
    /// Not valid base64.
    Base64,
    /// Not UTF-8 (RFC 4616 2).
    Utf8,
    /// The response does not have the mechanism's structure (PLAIN's three NUL-separated
    /// parts, XOAUTH2's `user=`/`auth=` fields, OAUTHBEARER's GS2 header).
    Malformed,
    /// A step the mechanism did not expect (a response after it finished).
    Unexpected,
}

impl core::fmt::Display for SaslError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Base64 => "invalid base64",
            Self::Utf8 => "credentials are not UTF-8",
            Self::Malformed => "malformed SASL response",
            Self::Unexpected => "unexpected SASL response",
        })
    }
}

impl std::error::Error for SaslError {}

/// What a client presented to authenticate. Secrets never show in `Debug`.
///
/// New kinds may be added: match with a `_` arm and refuse what you do not know.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credentials {
    /// A user name and password (PLAIN, LOGIN).
    Password {
        /// The authorization identity, when the client asked to act as someone else (PLAIN).
        authzid: Option<String>,
        /// The authentication identity: the user name.
        user: String,
        /// The password.
        password: Secret<String>,
    },
    /// An OAuth 2.0 bearer token (XOAUTH2, OAUTHBEARER).
    Token {
        /// The user the token is for: XOAUTH2's `user=`, OAUTHBEARER's `a=` authorization
        /// identity; empty when an OAUTHBEARER client named no one (the token alone says who).
        user: String,
        /// The access token, without the `Bearer ` scheme.
        token: Secret<String>,
    },
}

impl Credentials {
    /// The user name the client gave: the authentication identity of a password, the user
    /// of a token.
    pub fn user(&self) -> &str {
        match self {
            Self::Password { user, .. } | Self::Token { user, .. } => user,
        }
    }

    /// The authorization identity, when the client asked to act as another user than
    /// [`user`](Self::user) (an authzid equal to the user is the same as none, RFC 4616 2).
    pub fn acting_as(&self) -> Option<&str> {
        match self {
            Self::Password {
                authzid: Some(z),
                user,
                ..
            } if z != user => Some(z),
            _ => None,
        }
    }
}

/// What a [`Mechanism`] says after a client response.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Send this challenge (raw bytes; the driver base64-encodes it into a `334` line) and
    /// call [`Mechanism::step`] with the client's answer.
    Challenge(Vec<u8>),
    /// The exchange is complete: let the application decide on these credentials.
    Done(Credentials),
    /// The client's response is invalid: the exchange ends with `501 5.5.2`.
    Failed(SaslError),
}

/// One server-side SASL exchange: a fresh value per AUTH command.
///
/// The driver calls [`step`](Self::step) first with the initial response of the AUTH
/// command (`None` without one; `=`, the empty initial response, arrives as `Some(b"")`),
/// then with each decoded response to a [`Step::Challenge`], until the mechanism returns
/// [`Step::Done`] or [`Step::Failed`]. The number of steps is bounded by the driver, the
/// length of each response by the core (12288 octets, RFC 4954 4).
///
/// ```
/// use smtpkit_proto::auth::{Credentials, Mechanism, SaslError, Step};
/// use smtpkit_proto::Secret;
///
/// /// `X-TOKEN`: the client sends `user:token` as its initial response.
/// struct XToken;
/// impl Mechanism for XToken {
///     fn step(&mut self, response: Option<&[u8]>) -> Step {
///         let Some(text) = response.and_then(|r| std::str::from_utf8(r).ok()) else {
///             return Step::Failed(SaslError::Malformed);
///         };
///         match text.split_once(':') {
///             Some((user, token)) => Step::Done(Credentials::Token {
///                 user: user.into(),
///                 token: Secret::new(token.into()),
///             }),
///             None => Step::Failed(SaslError::Malformed),
///         }
///     }
/// }
/// assert!(matches!(XToken.step(Some(b"u:t")), Step::Done(_)));
/// ```
pub trait Mechanism: Send {
    /// The client's next response, decoded from base64.
    fn step(&mut self, response: Option<&[u8]>) -> Step;

    /// The application refused the credentials with a permanent (5xx) reply: a challenge to
    /// send before that reply, for mechanisms whose failure is itself an exchange (XOAUTH2
    /// and OAUTHBEARER send an error document, the client answers, then the failure reply
    /// goes out). Default: none, the reply goes out at once.
    fn failure_challenge(&mut self) -> Option<Vec<u8>> {
        None
    }
}

/// A fresh exchange of the built-in mechanism `name` (case-insensitive), or `None` for a
/// mechanism this module does not implement.
pub fn builtin(name: &str) -> Option<Box<dyn Mechanism>> {
    let m: Box<dyn Mechanism> = match name.to_ascii_uppercase().as_str() {
        "PLAIN" => Box::new(Plain::default()),
        "LOGIN" => Box::new(Login::default()),
        "XOAUTH2" => Box::new(XOAuth2::default()),
        "OAUTHBEARER" => Box::new(OAuthBearer::default()),
        _ => return None,
    };
    Some(m)
}

/// Decodes a base64 SASL response; `=` is the empty response (RFC 4954 4).
pub fn decode_base64(response: &str) -> Result<Vec<u8>, SaslError> {
    if response == "=" {
        return Ok(Vec::new());
    }
    STANDARD.decode(response).map_err(|_| SaslError::Base64)
}

/// Encodes a challenge for a 334 reply.
pub fn encode_base64(challenge: &[u8]) -> String {
    STANDARD.encode(challenge)
}

/// Decodes a base64 PLAIN response: `[authzid] NUL authcid NUL passwd` (RFC 4616 2).
pub fn decode_plain(response: &str) -> Result<Credentials, SaslError> {
    password::parse_plain(&decode_base64(response)?)
}

/// Decodes one base64 LOGIN step (user name or password) as UTF-8 text.
pub fn decode_login_step(response: &str) -> Result<String, SaslError> {
    String::from_utf8(decode_base64(response)?).map_err(|_| SaslError::Utf8)
}

/// The LOGIN mechanism's challenges, base64 of `Username:` and `Password:`.
pub const LOGIN_USERNAME_CHALLENGE: &str = "VXNlcm5hbWU6";
/// See [`LOGIN_USERNAME_CHALLENGE`].
pub const LOGIN_PASSWORD_CHALLENGE: &str = "UGFzc3dvcmQ6";

/// Drives `mechanism` through `responses` the way a server does, for tests: the first is the
/// initial response, each later one answers a challenge. Returns the challenges sent and the
/// last step.
#[cfg(test)]
pub(crate) fn exchange(
    mechanism: &mut dyn Mechanism,
    responses: &[Option<&[u8]>],
) -> (Vec<Vec<u8>>, Step) {
    let mut challenges = Vec::new();
    let mut last = Step::Failed(SaslError::Unexpected);
    for r in responses {
        last = mechanism.step(*r);
        match &last {
            Step::Challenge(c) => challenges.push(c.clone()),
            _ => break,
        }
    }
    (challenges, last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the client sends, a built-in mechanism never panics and asks at most two
        /// questions (LOGIN's), so the driver's step limit is never what ends a built-in.
        #[test]
        fn builtins_take_any_bytes_and_ask_at_most_twice(
            which in 0..BUILTIN_MECHANISMS.len(),
            responses in vec(proptest::option::of(vec(any::<u8>(), 0..48)), 1..6),
        ) {
            let mut m = builtin(BUILTIN_MECHANISMS[which]).unwrap();
            let mut challenges = 0;
            for r in &responses {
                match m.step(r.as_deref()) {
                    Step::Challenge(_) => challenges += 1,
                    _ => break,
                }
            }
            prop_assert!(challenges <= 2, "{} asked {challenges} times", BUILTIN_MECHANISMS[which]);
        }

        /// Any user and token a client can encode come back unchanged from both token
        /// mechanisms.
        #[test]
        fn token_credentials_round_trip(
            user in "[a-zA-Z0-9.@+_=,-]{1,24}",
            token in "[a-zA-Z0-9._~+/=-]{1,40}",
        ) {
            let expected = Credentials::Token {
                user: user.clone(),
                token: Secret::new(token.clone()),
            };
            let xoauth2 = format!("user={user}\u{1}auth=Bearer {token}\u{1}\u{1}");
            prop_assert_eq!(XOAuth2::default().step(Some(xoauth2.as_bytes())), Step::Done(expected.clone()));
            let bearer = format!("n,a={},\u{1}auth=Bearer {token}\u{1}\u{1}", user.replace('=', "=3D").replace(',', "=2C"));
            prop_assert_eq!(OAuthBearer::default().step(Some(bearer.as_bytes())), Step::Done(expected));
        }
    }

    #[test]
    fn base64_and_login_challenges() {
        assert_eq!(
            decode_login_step(LOGIN_USERNAME_CHALLENGE).unwrap(),
            "Username:"
        );
        assert_eq!(
            decode_login_step(LOGIN_PASSWORD_CHALLENGE).unwrap(),
            "Password:"
        );
        assert_eq!(decode_login_step("=").unwrap(), "");
        assert_eq!(decode_base64("!!!"), Err(SaslError::Base64));
    }

    #[test]
    fn builtins_by_name() {
        for name in BUILTIN_MECHANISMS {
            assert!(builtin(name).is_some(), "{name}");
            assert!(builtin(&name.to_ascii_lowercase()).is_some(), "{name}");
        }
        assert!(builtin("CRAM-MD5").is_none());
    }

    #[test]
    fn credentials_accessors() {
        let p = Credentials::Password {
            authzid: Some("admin".into()),
            user: "u".into(),
            password: Secret::new("secret".into()),
        };
        assert_eq!((p.user(), p.acting_as()), ("u", Some("admin")));
        assert!(!format!("{p:?}").contains("secret"));
        let same = Credentials::Password {
            authzid: Some("u".into()),
            user: "u".into(),
            password: Secret::new("x".into()),
        };
        assert_eq!(same.acting_as(), None);
        let t = Credentials::Token {
            user: "u".into(),
            token: Secret::new("ya29-token".into()),
        };
        assert_eq!((t.user(), t.acting_as()), ("u", None));
        assert!(!format!("{t:?}").contains("ya29"));
    }
}
