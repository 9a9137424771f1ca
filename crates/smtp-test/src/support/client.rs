//! An async line client over futures-io streams (async-net TCP works under any executor:
//! async-io runs its own reactor), for the adapters' own tests.

#![allow(missing_docs)]

use std::net::SocketAddr;

use smol::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use smol::net::TcpStream;

use super::{T, timeout};

/// A line-oriented raw client over any stream (plain TCP, or TLS after a handshake).
#[derive(Debug)]
pub struct Raw<S = TcpStream> {
    pub io: BufReader<S>,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Self {
        let tcp = timeout(T, TcpStream::connect(addr)).await.unwrap().unwrap();
        Self::new(tcp)
    }

    pub async fn greeted(addr: SocketAddr) -> Self {
        let mut c = Self::connect(addr).await;
        c.expect("220 ").await;
        c
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Raw<S> {
    pub fn new(io: S) -> Self {
        Self {
            io: BufReader::new(io),
        }
    }

    pub async fn send(&mut self, s: impl AsRef<[u8]>) {
        timeout(T, async {
            let io = self.io.get_mut();
            io.write_all(s.as_ref()).await?;
            io.flush().await
        })
        .await
        .expect("send timed out")
        .unwrap();
    }

    /// One whole reply (all its lines), or "" at EOF.
    pub async fn reply(&mut self) -> String {
        let mut out = String::new();
        loop {
            let mut line = String::new();
            let n = timeout(T, self.io.read_line(&mut line))
                .await
                .expect("reply timed out")
                .unwrap_or(0);
            out.push_str(&line);
            if n == 0 || line.as_bytes().get(3) != Some(&b'-') {
                return out;
            }
        }
    }

    /// Reads a reply and checks its start.
    pub async fn expect(&mut self, prefix: &str) -> String {
        let r = self.reply().await;
        assert!(r.starts_with(prefix), "expected {prefix:?}, got {r:?}");
        r
    }

    /// Reads until EOF; true if the server closed within the timeout.
    pub async fn closed(&mut self) -> bool {
        let mut sink = Vec::new();
        timeout(T, self.io.read_to_end(&mut sink)).await.is_ok()
    }

    /// Everything up to EOF, as text.
    pub async fn rest(&mut self) -> String {
        let mut out = String::new();
        timeout(T, self.io.read_to_string(&mut out))
            .await
            .expect("server did not close")
            .ok();
        out
    }
}
