//! Synchronous forms of [`Handler`] and [`Session`], for servers without an async runtime
//! (the mio adapter).
//!
//! [`BlockingHandler`] and [`BlockingSession`] have the same methods as the async traits, with
//! plain `fn`s. [`Blocking`] wraps a `BlockingHandler` and implements [`Handler`] by calling
//! it, so a blocking application runs on the same [`Dispatcher`](crate::Dispatcher) as an async
//! one. The futures it returns are always ready: driving them needs no runtime.
//!
//! ```
//! use smtpkit_server::blocking::{Blocking, BlockingHandler, BlockingSession};
//! use smtpkit_server::{Decision, Reply, SessionInfo};
//!
//! struct Sink;
//! struct Conn(usize);
//!
//! impl BlockingHandler for Sink {
//!     type Session = Conn;
//!     fn connect(&self, _: &SessionInfo) -> Result<Conn, Reply<'static>> {
//!         Ok(Conn(0))
//!     }
//! }
//!
//! impl BlockingSession for Conn {
//!     fn data_chunk(&mut self, _: &SessionInfo, chunk: &[u8]) -> Result<(), Reply<'static>> {
//!         self.0 += chunk.len();
//!         Ok(())
//!     }
//! }
//!
//! // `Blocking(Sink)` implements `smtpkit_server::Handler`.
//! let handler = Blocking(Sink);
//! # let _ = handler;
//! ```

use std::future::{Future, ready};

use smtpkit_proto::address::{ForwardPath, ReversePath};
use smtpkit_proto::auth::{self, Credentials, Mechanism};
use smtpkit_proto::extension::Parameters;
use smtpkit_proto::{CloseReason, EnhancedCode, Reply, ReplyCode};

use crate::handler::{Decision, Handler, Session, SessionInfo, static_reply};

/// The synchronous form of [`Handler`]: decides on new connections.
pub trait BlockingHandler: Send + Sync + 'static {
    /// The per-connection state.
    type Session: BlockingSession;

    /// A new connection; see [`Handler::connect`].
    fn connect(&self, info: &SessionInfo) -> Result<Self::Session, Reply<'static>>;
}

/// The synchronous form of [`Session`]: one connection's conversation. Every method has the
/// same meaning and default as its [`Session`] namesake.
pub trait BlockingSession: Send + 'static {
    /// EHLO, HELO or LHLO; see [`Session::ehlo`]. Default: accept.
    fn ehlo(&mut self, info: &SessionInfo, domain: &str) -> Decision {
        let _ = (info, domain);
        Decision::Accept
    }

    /// STARTTLS, before its `220`; see [`Session::starttls`]. Default: accept.
    fn starttls(&mut self, info: &SessionInfo) -> Decision {
        let _ = info;
        Decision::Accept
    }

    /// The STARTTLS handshake has finished; see [`Session::secured`]. Default: nothing.
    fn secured(&mut self, info: &SessionInfo) {
        let _ = info;
    }

    /// XCLIENT replaced the client's facts; see [`Session::xclient`]. Default: accept.
    fn xclient(&mut self, info: &SessionInfo) -> Decision {
        let _ = info;
        Decision::Accept
    }

    /// The SASL exchange for `mechanism`; see [`Session::mechanism`]. Default: the built-ins.
    fn mechanism(&mut self, info: &SessionInfo, mechanism: &str) -> Option<Box<dyn Mechanism>> {
        let _ = info;
        auth::builtin(mechanism)
    }

    /// AUTH credentials; see [`Session::auth`]. Default: refuse with `535 5.7.8`, so that no
    /// one authenticates (and may relay) unless the application says so.
    fn auth(&mut self, info: &SessionInfo, mechanism: &str, creds: &Credentials) -> Decision {
        let _ = (info, mechanism, creds);
        Decision::Reply(static_reply(
            ReplyCode::AUTH_FAILED,
            EnhancedCode::AUTH_FAILED,
            "Authentication credentials invalid",
        ))
    }

    /// May `authcid` act as `authzid`; see [`Session::authorize`]. Default: no.
    fn authorize(&mut self, info: &SessionInfo, authcid: &str, authzid: &str) -> bool {
        let _ = (info, authcid, authzid);
        false
    }

    /// MAIL FROM; see [`Session::mail_from`]. Default: accept.
    fn mail_from(
        &mut self,
        info: &SessionInfo,
        from: &ReversePath<'_>,
        params: &Parameters<'_>,
    ) -> Decision {
        let _ = (info, from, params);
        Decision::Accept
    }

    /// RCPT TO; see [`Session::rcpt_to`]. Default: accept.
    fn rcpt_to(
        &mut self,
        info: &SessionInfo,
        to: &ForwardPath<'_>,
        params: &Parameters<'_>,
    ) -> Decision {
        let _ = (info, to, params);
        Decision::Accept
    }

    /// The message content is about to start; see [`Session::data_start`]. Default: accept.
    fn data_start(&mut self, info: &SessionInfo) -> Decision {
        let _ = info;
        Decision::Accept
    }

    /// A piece of message content; see [`Session::data_chunk`]. Default: ignore it.
    fn data_chunk(&mut self, info: &SessionInfo, chunk: &[u8]) -> Result<(), Reply<'static>> {
        let _ = (info, chunk);
        Ok(())
    }

    /// The end of the message; see [`Session::data_end`]. Default: accept.
    fn data_end(&mut self, info: &SessionInfo) -> Decision {
        let _ = info;
        Decision::Accept
    }

    /// LMTP's end of message; see [`Session::data_end_lmtp`]. Default:
    /// [`data_end`](Self::data_end) repeated.
    fn data_end_lmtp(&mut self, info: &SessionInfo, recipients: usize) -> Vec<Decision> {
        (0..recipients).map(|_| self.data_end(info)).collect()
    }

    /// The message was dropped; see [`Session::data_aborted`]. Default: nothing.
    fn data_aborted(&mut self, info: &SessionInfo) {
        let _ = info;
    }

    /// The transaction is over; see [`Session::reset`]. Default: nothing.
    fn reset(&mut self, info: &SessionInfo) {
        let _ = info;
    }

    /// The connection is closing; see [`Session::close`]. Default: nothing.
    fn close(&mut self, info: &SessionInfo, reason: CloseReason) {
        let _ = (info, reason);
    }
}

/// Adapts a [`BlockingHandler`] to [`Handler`]: each async method calls its blocking
/// namesake and returns a ready future.
#[derive(Clone, Copy, Debug, Default)]
pub struct Blocking<T>(pub T);

impl<H: BlockingHandler> Handler for Blocking<H> {
    type Session = Blocking<H::Session>;

    fn connect(
        &self,
        info: &SessionInfo,
    ) -> impl Future<Output = Result<Self::Session, Reply<'static>>> + Send {
        ready(self.0.connect(info).map(Blocking))
    }
}

impl<S: BlockingSession> Session for Blocking<S> {
    fn ehlo(&mut self, info: &SessionInfo, domain: &str) -> impl Future<Output = Decision> + Send {
        ready(self.0.ehlo(info, domain))
    }

    fn starttls(&mut self, info: &SessionInfo) -> impl Future<Output = Decision> + Send {
        ready(self.0.starttls(info))
    }

    fn secured(&mut self, info: &SessionInfo) -> impl Future<Output = ()> + Send {
        self.0.secured(info);
        ready(())
    }

    fn xclient(&mut self, info: &SessionInfo) -> impl Future<Output = Decision> + Send {
        ready(self.0.xclient(info))
    }

    fn mechanism(&mut self, info: &SessionInfo, mechanism: &str) -> Option<Box<dyn Mechanism>> {
        self.0.mechanism(info, mechanism)
    }

    fn auth(
        &mut self,
        info: &SessionInfo,
        mechanism: &str,
        creds: &Credentials,
    ) -> impl Future<Output = Decision> + Send {
        ready(self.0.auth(info, mechanism, creds))
    }

    fn authorize(
        &mut self,
        info: &SessionInfo,
        authcid: &str,
        authzid: &str,
    ) -> impl Future<Output = bool> + Send {
        ready(self.0.authorize(info, authcid, authzid))
    }

    fn mail_from(
        &mut self,
        info: &SessionInfo,
        from: &ReversePath<'_>,
        params: &Parameters<'_>,
    ) -> impl Future<Output = Decision> + Send {
        ready(self.0.mail_from(info, from, params))
    }

    fn rcpt_to(
        &mut self,
        info: &SessionInfo,
        to: &ForwardPath<'_>,
        params: &Parameters<'_>,
    ) -> impl Future<Output = Decision> + Send {
        ready(self.0.rcpt_to(info, to, params))
    }

    fn data_start(&mut self, info: &SessionInfo) -> impl Future<Output = Decision> + Send {
        ready(self.0.data_start(info))
    }

    fn data_chunk(
        &mut self,
        info: &SessionInfo,
        chunk: &[u8],
    ) -> impl Future<Output = Result<(), Reply<'static>>> + Send {
        ready(self.0.data_chunk(info, chunk))
    }

    fn data_end(&mut self, info: &SessionInfo) -> impl Future<Output = Decision> + Send {
        ready(self.0.data_end(info))
    }

    fn data_end_lmtp(
        &mut self,
        info: &SessionInfo,
        recipients: usize,
    ) -> impl Future<Output = Vec<Decision>> + Send {
        ready(self.0.data_end_lmtp(info, recipients))
    }

    fn data_aborted(&mut self, info: &SessionInfo) -> impl Future<Output = ()> + Send {
        self.0.data_aborted(info);
        ready(())
    }

    fn reset(&mut self, info: &SessionInfo) -> impl Future<Output = ()> + Send {
        self.0.reset(info);
        ready(())
    }

    fn close(
        &mut self,
        info: &SessionInfo,
        reason: CloseReason,
    ) -> impl Future<Output = ()> + Send {
        self.0.close(info, reason);
        ready(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::dispatch::harness::block_on;
    use crate::settings::ListenerKind;

    struct Counter;
    #[derive(Default)]
    struct Conn {
        octets: usize,
        resets: usize,
    }

    impl BlockingHandler for Counter {
        type Session = Conn;
        fn connect(&self, _: &SessionInfo) -> Result<Conn, Reply<'static>> {
            Ok(Conn::default())
        }
    }

    impl BlockingSession for Conn {
        fn data_chunk(&mut self, _: &SessionInfo, chunk: &[u8]) -> Result<(), Reply<'static>> {
            self.octets += chunk.len();
            Ok(())
        }
        fn reset(&mut self, _: &SessionInfo) {
            self.resets += 1;
        }
    }

    #[test]
    fn adapter_calls_the_blocking_methods() {
        let addr: SocketAddr = "127.0.0.1:25".parse().unwrap();
        let info = SessionInfo::new(addr, addr, ListenerKind::Smtp);
        let handler = Blocking(Counter);
        let mut s = block_on(handler.connect(&info)).unwrap();
        assert_eq!(block_on(s.ehlo(&info, "c")), Decision::Accept);
        block_on(s.data_chunk(&info, b"hello")).unwrap();
        block_on(s.reset(&info));
        assert_eq!((s.0.octets, s.0.resets), (5, 1));
        // The default AUTH refuses.
        let creds = Credentials::Password {
            authzid: None,
            user: "u".into(),
            password: smtpkit_proto::Secret::new("p".into()),
        };
        assert!(s.mechanism(&info, "XOAUTH2").is_some());
        assert!(s.mechanism(&info, "CRAM-MD5").is_none());
        let Decision::Reply(r) = block_on(s.auth(&info, "PLAIN", &creds)) else {
            panic!("default auth accepted");
        };
        assert_eq!(r.code(), ReplyCode::AUTH_FAILED);
        assert_eq!(block_on(s.data_end_lmtp(&info, 2)).len(), 2);
    }
}
