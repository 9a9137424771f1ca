//! SASL helpers for AUTH PLAIN (RFC 4616) and LOGIN: decoding what the client sends, so every
//! adapter checks credentials the same way.
//!
//! ```
//! use smtpkit_proto::auth::{decode_plain, Credentials};
//! let c = decode_plain("AHVzZXIAcGFzcw==").unwrap();
//! assert_eq!((c.authcid.as_str(), c.password.expose().as_str()), ("user", "pass"));
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::secret::Secret;

/// Why a SASL response did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SaslError {
    /// Not valid base64.
    Base64,
    /// Not UTF-8 (RFC 4616 2).
    Utf8,
    /// The PLAIN message does not have three NUL-separated parts.
    Malformed,
}

impl core::fmt::Display for SaslError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Base64 => "invalid base64",
            Self::Utf8 => "credentials are not UTF-8",
            Self::Malformed => "malformed PLAIN message",
        })
    }
}

impl std::error::Error for SaslError {}

/// A user name and password; the password never shows in `Debug`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The authorization identity, when different from `authcid` (PLAIN only).
    pub authzid: Option<String>,
    /// The authentication identity: the user name.
    pub authcid: String,
    /// The password.
    pub password: Secret<String>,
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

/// Decodes a PLAIN response: `[authzid] NUL authcid NUL passwd` (RFC 4616 2).
pub fn decode_plain(response: &str) -> Result<Credentials, SaslError> {
    let bytes = decode_base64(response)?;
    let text = String::from_utf8(bytes).map_err(|_| SaslError::Utf8)?;
    let mut parts = text.splitn(3, '\0');
    let (Some(authzid), Some(authcid), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    if authcid.is_empty() || password.contains('\0') {
        return Err(SaslError::Malformed);
    }
    Ok(Credentials {
        authzid: (!authzid.is_empty()).then(|| authzid.to_owned()),
        authcid: authcid.to_owned(),
        password: Secret::new(password.to_owned()),
    })
}

/// Decodes one LOGIN step (user name or password) as UTF-8 text.
pub fn decode_login_step(response: &str) -> Result<String, SaslError> {
    String::from_utf8(decode_base64(response)?).map_err(|_| SaslError::Utf8)
}

/// The LOGIN mechanism's challenges, base64 of `Username:` and `Password:`.
pub const LOGIN_USERNAME_CHALLENGE: &str = "VXNlcm5hbWU6";
/// See [`LOGIN_USERNAME_CHALLENGE`].
pub const LOGIN_PASSWORD_CHALLENGE: &str = "UGFzc3dvcmQ6";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain() {
        let c = decode_plain(&encode_base64(b"admin\0user\0secret")).unwrap();
        assert_eq!(c.authzid.as_deref(), Some("admin"));
        assert_eq!(c.authcid, "user");
        assert_eq!(c.password.expose(), "secret");
        assert!(!format!("{c:?}").contains("secret"));
        assert_eq!(
            decode_plain(&encode_base64(b"user\0secret")),
            Err(SaslError::Malformed)
        );
        assert_eq!(
            decode_plain(&encode_base64(b"\0\0secret")),
            Err(SaslError::Malformed)
        );
        assert_eq!(decode_plain("!!!"), Err(SaslError::Base64));
        assert_eq!(
            decode_plain(&encode_base64(b"\0u\0\xff")),
            Err(SaslError::Utf8)
        );
    }

    #[test]
    fn login_challenges() {
        assert_eq!(
            decode_login_step(LOGIN_USERNAME_CHALLENGE).unwrap(),
            "Username:"
        );
        assert_eq!(
            decode_login_step(LOGIN_PASSWORD_CHALLENGE).unwrap(),
            "Password:"
        );
        assert_eq!(decode_login_step("=").unwrap(), "");
    }
}
