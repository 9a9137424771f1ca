//! [`Secret`]: a wrapper that keeps credentials out of `Debug` output and logs.

use core::fmt;

/// A value that must never be printed: AUTH responses, passwords.
///
/// `Debug` shows `Secret(..)`; read the value with [`Secret::expose`], which makes every
/// use greppable.
///
/// ```
/// use smtpkit_proto::Secret;
/// let s = Secret::new("hunter2");
/// assert_eq!(format!("{s:?}"), "Secret(..)");
/// assert_eq!(*s.expose(), "hunter2");
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps a value.
    pub const fn new(value: T) -> Self {
        Self(value)
    }

    /// The wrapped value. Do not log it.
    pub const fn expose(&self) -> &T {
        &self.0
    }

    /// Unwraps the value. Do not log it.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}
