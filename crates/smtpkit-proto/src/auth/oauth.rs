//! The OAuth 2.0 bearer token mechanisms: XOAUTH2 (Google's, also Microsoft's) and OAUTHBEARER
//! (RFC 7628). Both fail with an exchange: the server sends an error document as a challenge,
//! the client answers it (XOAUTH2 with an empty line, OAUTHBEARER with `%x01`), then the
//! failure reply goes out.

use super::{Credentials, Mechanism, SaslError, Step};
use crate::secret::Secret;

/// The `%x01` that separates fields in both mechanisms.
const KVSEP: u8 = 0x01;

/// XOAUTH2: `user=` user `^A` `auth=Bearer ` token `^A^A`, as the initial response or after an
/// empty challenge (<https://developers.google.com/gmail/imap/xoauth2-protocol>).
#[derive(Debug)]
pub struct XOAuth2 {
    asked: bool,
    error: String,
}

impl Default for XOAuth2 {
    /// Sends Google's error document on failure.
    fn default() -> Self {
        Self::with_error(
            r#"{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}"#,
        )
    }
}

impl XOAuth2 {
    /// An exchange that sends `error` (a JSON document: `status`, `schemes`, `scope`) when the
    /// application refuses the token. Keep it under 380 octets: its base64 must fit one
    /// reply line (512), or the driver answers `451 4.3.0` instead.
    pub fn with_error(error: &str) -> Self {
        Self {
            asked: false,
            error: error.to_owned(),
        }
    }
}

impl Mechanism for XOAuth2 {
    fn step(&mut self, response: Option<&[u8]>) -> Step {
        match response {
            Some(message) if self.asked || !message.is_empty() => match parse_xoauth2(message) {
                Ok(c) => Step::Done(c),
                Err(e) => Step::Failed(e),
            },
            _ if self.asked => Step::Failed(SaslError::Malformed),
            _ => {
                self.asked = true;
                Step::Challenge(Vec::new())
            }
        }
    }

    fn failure_challenge(&mut self) -> Option<Vec<u8>> {
        Some(self.error.as_bytes().to_vec())
    }
}

fn parse_xoauth2(message: &[u8]) -> Result<Credentials, SaslError> {
    let fields = message
        .strip_suffix(&[KVSEP, KVSEP])
        .ok_or(SaslError::Malformed)?;
    let (mut user, mut auth) = (None, None);
    for field in fields.split(|b| *b == KVSEP) {
        let field = core::str::from_utf8(field).map_err(|_| SaslError::Utf8)?;
        match field.split_once('=') {
            Some(("user", v)) => user = Some(v),
            Some(("auth", v)) => auth = Some(v),
            _ => return Err(SaslError::Malformed),
        }
    }
    let (Some(user), Some(auth)) = (user, auth) else {
        return Err(SaslError::Malformed);
    };
    if user.is_empty() {
        return Err(SaslError::Malformed);
    }
    Ok(Credentials::Token {
        user: user.to_owned(),
        token: Secret::new(bearer(auth)?.to_owned()),
    })
}

/// OAUTHBEARER (RFC 7628 3.1): a GS2 header `n,a=user,` (no channel binding), then `%x01`
/// separated `key=value` pairs with `auth=Bearer token`, then a final `%x01`.
#[derive(Debug)]
pub struct OAuthBearer {
    asked: bool,
    error: String,
}

impl Default for OAuthBearer {
    /// Sends `{"status":"invalid_token"}` on failure (RFC 7628 3.2.2).
    fn default() -> Self {
        Self::with_error(r#"{"status":"invalid_token","schemes":"bearer"}"#)
    }
}

impl OAuthBearer {
    /// An exchange that sends `error` (RFC 7628 3.2.2: `status`, optional `scope` and
    /// `openid-configuration`) when the application refuses the token. Keep it under 380
    /// octets: its base64 must fit one reply line (512), or the driver answers `451 4.3.0`.
    pub fn with_error(error: &str) -> Self {
        Self {
            asked: false,
            error: error.to_owned(),
        }
    }
}

impl Mechanism for OAuthBearer {
    fn step(&mut self, response: Option<&[u8]>) -> Step {
        match response {
            Some(message) if self.asked || !message.is_empty() => {
                match parse_oauthbearer(message) {
                    Ok(c) => Step::Done(c),
                    Err(e) => Step::Failed(e),
                }
            }
            _ if self.asked => Step::Failed(SaslError::Malformed),
            _ => {
                self.asked = true;
                Step::Challenge(Vec::new())
            }
        }
    }

    fn failure_challenge(&mut self) -> Option<Vec<u8>> {
        Some(self.error.as_bytes().to_vec())
    }
}

/// `client-resp = (gs2-header kvsep *kvpair kvsep) / kvsep` (RFC 7628 3.1); the lone `kvsep`
/// only answers an error challenge, which the driver handles, so here it is malformed.
fn parse_oauthbearer(message: &[u8]) -> Result<Credentials, SaslError> {
    let text = core::str::from_utf8(message).map_err(|_| SaslError::Utf8)?;
    let (header, rest) = text.split_once('\u{1}').ok_or(SaslError::Malformed)?;
    let user = gs2_authzid(header)?;
    // `*kvpair kvsep`: each pair ends with %x01, and one more %x01 ends the message.
    let pairs = rest.strip_suffix('\u{1}').ok_or(SaslError::Malformed)?;
    let mut auth = None;
    if !pairs.is_empty() {
        let pairs = pairs.strip_suffix('\u{1}').ok_or(SaslError::Malformed)?;
        for pair in pairs.split('\u{1}') {
            let (key, value) = pair.split_once('=').ok_or(SaslError::Malformed)?;
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(SaslError::Malformed);
            }
            if key == "auth" {
                auth = Some(value);
            }
        }
    }
    Ok(Credentials::Token {
        user,
        token: Secret::new(bearer(auth.ok_or(SaslError::Malformed)?)?.to_owned()),
    })
}

/// `gs2-header = gs2-cbind-flag "," [ gs2-authzid ] ","` with `gs2-cbind-flag` `n` or `y`
/// (OAUTHBEARER has no channel binding, so `p=` is refused) and `gs2-authzid = "a=" saslname`
/// (RFC 5801 4), `=2C` and `=3D` decoded.
fn gs2_authzid(header: &str) -> Result<String, SaslError> {
    let rest = header
        .strip_prefix("n,")
        .or_else(|| header.strip_prefix("y,"))
        .ok_or(SaslError::Malformed)?;
    let authzid = rest.strip_suffix(',').ok_or(SaslError::Malformed)?;
    if authzid.is_empty() {
        return Ok(String::new());
    }
    let name = authzid.strip_prefix("a=").ok_or(SaslError::Malformed)?;
    if name.contains(',') {
        return Err(SaslError::Malformed);
    }
    let mut out = String::with_capacity(name.len());
    let mut chars = name.split('=');
    out.push_str(chars.next().unwrap_or_default());
    for escaped in chars {
        let (code, tail) = escaped.split_at_checked(2).ok_or(SaslError::Malformed)?;
        out.push(match code {
            "2C" => ',',
            "3D" => '=',
            _ => return Err(SaslError::Malformed),
        });
        out.push_str(tail);
    }
    Ok(out)
}

/// The token of `Bearer <token>`; the scheme is case-insensitive (RFC 6750 2.1).
fn bearer(auth: &str) -> Result<&str, SaslError> {
    let (scheme, token) = auth.split_once(' ').ok_or(SaslError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("Bearer") || token.is_empty() {
        return Err(SaslError::Malformed);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::super::exchange;
    use super::*;

    fn token(user: &str, token: &str) -> Step {
        Step::Done(Credentials::Token {
            user: user.into(),
            token: Secret::new(token.into()),
        })
    }

    #[test]
    fn xoauth2_known_answers() {
        let good: &[u8] = b"user=someuser@example.com\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01";
        let expected = token(
            "someuser@example.com",
            "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg",
        );
        let (sent, last) = exchange(&mut XOAuth2::default(), &[Some(good)]);
        assert_eq!((sent.len(), last), (0, expected));
        let (sent, last) = exchange(&mut XOAuth2::default(), &[None, Some(good)]);
        assert_eq!(sent, [Vec::<u8>::new()]);
        assert!(matches!(last, Step::Done(_)));
        for bad in [
            &b"user=u\x01auth=Bearer t\x01"[..],
            b"user=u\x01auth=Basic t\x01\x01",
            b"user=u\x01auth=Bearer \x01\x01",
            b"auth=Bearer t\x01\x01",
            b"user=\x01auth=Bearer t\x01\x01",
            b"user=u\x01auth=Bearer t\x01host=x\x01\x01",
        ] {
            let (_, last) = exchange(&mut XOAuth2::default(), &[Some(bad)]);
            assert_eq!(last, Step::Failed(SaslError::Malformed), "{bad:?}");
        }
        let error = XOAuth2::default().failure_challenge().unwrap();
        assert!(error.starts_with(br#"{"status":"401""#));
    }

    #[test]
    fn oauthbearer_known_answers() {
        // RFC 7628 4.1, with the token of the example.
        let good: &[u8] = b"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01";
        let (sent, last) = exchange(&mut OAuthBearer::default(), &[Some(good)]);
        assert_eq!(sent.len(), 0);
        assert_eq!(
            last,
            token(
                "user@example.com",
                "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="
            )
        );
        let cases: [(&[u8], Step); 9] = [
            (
                b"n,a=x,y,\x01auth=Bearer t\x01\x01",
                Step::Failed(SaslError::Malformed),
            ),
            (b"n,,\x01auth=Bearer t\x01\x01", token("", "t")),
            (
                b"y,a=a=2Cb=3Dc,\x01auth=bearer t\x01\x01",
                token("a,b=c", "t"),
            ),
            (
                b"p=tls-unique,,\x01auth=Bearer t\x01\x01",
                Step::Failed(SaslError::Malformed),
            ),
            (b"n,,\x01\x01", Step::Failed(SaslError::Malformed)),
            (b"\x01", Step::Failed(SaslError::Malformed)),
            (
                b"n,a=x=41,\x01auth=Bearer t\x01\x01",
                Step::Failed(SaslError::Malformed),
            ),
            (
                b"n,,\x01auth=Bearer t\x01",
                Step::Failed(SaslError::Malformed),
            ),
            (
                b"n,,\x01auth=Bearer t\x01\xff\x01\x01",
                Step::Failed(SaslError::Utf8),
            ),
        ];
        for (message, expected) in cases {
            let (_, last) = exchange(&mut OAuthBearer::default(), &[Some(message)]);
            assert_eq!(last, expected, "{message:?}");
        }
        let (sent, _) = exchange(&mut OAuthBearer::default(), &[None, Some(good)]);
        assert_eq!(sent, [Vec::<u8>::new()]);
        assert_eq!(
            OAuthBearer::with_error(r#"{"status":"invalid_token","scope":"mail"}"#)
                .failure_challenge()
                .unwrap(),
            br#"{"status":"invalid_token","scope":"mail"}"#
        );
    }
}
