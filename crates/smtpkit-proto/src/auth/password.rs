//! The password mechanisms: PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login).

use super::{Credentials, Mechanism, SaslError, Step};
use crate::secret::Secret;

/// PLAIN: one message `[authzid] NUL authcid NUL passwd`, as the initial response or after
/// an empty challenge (when the AUTH command had none, or `=`).
#[derive(Debug, Default)]
pub struct Plain {
    asked: bool,
}

impl Mechanism for Plain {
    fn step(&mut self, response: Option<&[u8]>) -> Step {
        match response {
            Some(message) if self.asked || !message.is_empty() => match parse_plain(message) {
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
}

/// LOGIN: the user name (as the initial response or after `Username:`), then the password
/// after `Password:`.
#[derive(Debug, Default)]
pub struct Login {
    started: bool,
    user: Option<String>,
}

impl Mechanism for Login {
    fn step(&mut self, response: Option<&[u8]>) -> Step {
        let first = !self.started;
        self.started = true;
        let text = match response {
            // An empty initial response is no initial response: ask for the user name.
            Some(r) if !(first && r.is_empty()) => match String::from_utf8(r.to_vec()) {
                Ok(t) => t,
                Err(_) => return Step::Failed(SaslError::Utf8),
            },
            _ if first => return Step::Challenge(b"Username:".to_vec()),
            _ => return Step::Failed(SaslError::Malformed),
        };
        match self.user.take() {
            None => {
                self.user = Some(text);
                Step::Challenge(b"Password:".to_vec())
            }
            Some(user) => Step::Done(Credentials::Password {
                authzid: None,
                user,
                password: Secret::new(text),
            }),
        }
    }
}

/// `[authzid] NUL authcid NUL passwd`, UTF-8, with a non-empty authcid (RFC 4616 2).
pub(super) fn parse_plain(message: &[u8]) -> Result<Credentials, SaslError> {
    let text = core::str::from_utf8(message).map_err(|_| SaslError::Utf8)?;
    let mut parts = text.splitn(3, '\0');
    let (Some(authzid), Some(user), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    if user.is_empty() || password.contains('\0') {
        return Err(SaslError::Malformed);
    }
    Ok(Credentials::Password {
        authzid: (!authzid.is_empty()).then(|| authzid.to_owned()),
        user: user.to_owned(),
        password: Secret::new(password.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::super::exchange;
    use super::*;

    fn password(authzid: Option<&str>, user: &str, pw: &str) -> Step {
        Step::Done(Credentials::Password {
            authzid: authzid.map(str::to_owned),
            user: user.into(),
            password: Secret::new(pw.into()),
        })
    }

    #[test]
    fn plain_known_answers() {
        // (responses, challenges sent, last step)
        type Case<'a> = (&'a [Option<&'a [u8]>], usize, Step);
        let cases: [Case<'_>; 7] = [
            (&[Some(b"\0user\0pass")], 0, password(None, "user", "pass")),
            (
                &[Some(b"admin\0user\0pass")],
                0,
                password(Some("admin"), "user", "pass"),
            ),
            (&[None, Some(b"\0u\0p")], 1, password(None, "u", "p")),
            (&[Some(b""), Some(b"\0u\0p")], 1, password(None, "u", "p")),
            (
                &[Some(b"user\0secret")],
                0,
                Step::Failed(SaslError::Malformed),
            ),
            (
                &[Some(b"\0\0secret")],
                0,
                Step::Failed(SaslError::Malformed),
            ),
            (&[Some(b"\0u\0\xff")], 0, Step::Failed(SaslError::Utf8)),
        ];
        for (responses, challenges, expected) in cases {
            let (sent, last) = exchange(&mut Plain::default(), responses);
            assert_eq!(
                (sent.len(), &last),
                (challenges, &expected),
                "{responses:?}"
            );
        }
        // An empty response to the challenge is not a second chance to be asked.
        let (_, last) = exchange(&mut Plain::default(), &[None, Some(b"")]);
        assert_eq!(last, Step::Failed(SaslError::Malformed));
    }

    #[test]
    fn login_known_answers() {
        let (sent, last) = exchange(&mut Login::default(), &[None, Some(b"u"), Some(b"p")]);
        assert_eq!(sent, [b"Username:".to_vec(), b"Password:".to_vec()]);
        assert_eq!(last, password(None, "u", "p"));
        let (sent, last) = exchange(&mut Login::default(), &[Some(b"u"), Some(b"p")]);
        assert_eq!(sent, [b"Password:".to_vec()]);
        assert_eq!(last, password(None, "u", "p"));
        let (_, last) = exchange(&mut Login::default(), &[None, Some(b"\xff")]);
        assert_eq!(last, Step::Failed(SaslError::Utf8));
        // LOGIN has no failure exchange.
        assert_eq!(Login::default().failure_challenge(), None);
    }
}
