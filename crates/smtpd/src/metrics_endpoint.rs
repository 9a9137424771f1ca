//! The opt-in Prometheus endpoint (`[metrics] listen`): `GET /metrics` in the Prometheus text
//! format.
//!
//! The numbers are recorded once, in smtpkit-server, through the `metrics` facade (see
//! `smtpkit_server::metrics::describe` for the names); [`install`] points the facade at
//! `metrics-exporter-prometheus`'s recorder. The exporter's own HTTP listener is left out: it
//! needs hyper with hyper-util's HTTP/1+HTTP/2 server, a large stack for one read-only page a
//! scraper fetches every few seconds. The few lines of HTTP/1.0-style request/response below
//! serve it instead: one request per connection, bounded in size, time and concurrency.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

/// Seconds: from a sub-millisecond in-memory decision to a slow fsync, and sessions up to the
/// hour the session limit allows.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 3600.0,
];

/// A request head larger than this is not a scraper's: refused.
const MAX_REQUEST: usize = 8192;
/// A scraper sends its request at once; a client that dawdles loses its connection.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrapes served at once; more wait for a slot (one Prometheus needs one).
const CONCURRENT: usize = 4;
/// How often the recorder drains its histogram buffers (the exporter asks the caller to).
const UPKEEP: Duration = Duration::from_secs(5);

/// Installs the Prometheus recorder as the process's `metrics` recorder and describes the
/// metrics. Call it once, before any connection is served.
pub fn install() -> Result<PrometheusHandle, String> {
    let mut builder = PrometheusBuilder::new();
    for name in smtpkit_server::metrics::HISTOGRAMS {
        builder = builder
            .set_buckets_for_metric(Matcher::Full((*name).to_owned()), BUCKETS)
            .map_err(|e| format!("metrics: {e}"))?;
    }
    let handle = builder
        .install_recorder()
        .map_err(|e| format!("metrics: {e}"))?;
    smtpkit_server::metrics::describe();
    Ok(handle)
}

/// Serves `GET /metrics` on `listener` until the runtime stops.
pub fn spawn(listener: TcpListener, handle: PrometheusHandle) {
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP);
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let slots = Arc::new(Semaphore::new(CONCURRENT));
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors, say: try again shortly rather than spin.
                    warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                if let Err(e) = serve(stream, &handle).await {
                    debug!(%peer, error = %e, "metrics endpoint: request failed");
                }
                drop(permit);
            });
        }
    });
}

async fn serve(mut stream: TcpStream, handle: &PrometheusHandle) -> io::Result<()> {
    let head = tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "request timed out"))??;
    let (status, body) = match request_target(&head) {
        Some(("GET", "/metrics")) => ("200 OK", handle.render()),
        Some(("GET", _)) => ("404 Not Found", "try /metrics\n".to_owned()),
        Some(_) => ("405 Method Not Allowed", "GET only\n".to_owned()),
        None => ("400 Bad Request", String::new()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Reads up to the blank line that ends the request head.
async fn read_head(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if head.len() >= MAX_REQUEST {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request too large",
            ));
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head)
}

/// The method and path of the request line, without any query string.
fn request_target(head: &[u8]) -> Option<(&str, &str)> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return None;
    }
    Some((method, target.split('?').next()?))
}

#[cfg(test)]
mod tests {
    use super::request_target;

    #[test]
    fn request_lines() {
        type Case = (&'static [u8], Option<(&'static str, &'static str)>);
        let cases: &[Case] = &[
            (
                b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
                Some(("GET", "/metrics")),
            ),
            (
                b"GET /metrics?x=1 HTTP/1.0\r\n\r\n",
                Some(("GET", "/metrics")),
            ),
            (b"POST / HTTP/1.1\r\n\r\n", Some(("POST", "/"))),
            (b"GET /metrics\r\n\r\n", None),
            (b"GET /metrics SMTP/1.0\r\n\r\n", None),
            (b"\xff\xfe\r\n\r\n", None),
            (b"", None),
        ];
        for (head, expected) in cases {
            assert_eq!(
                request_target(head),
                *expected,
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
    }
}
