//! smtpkit-mio: the server runs its own event-loop and accept threads; shutdown blocks until
//! they are joined.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use smtpkit_mio::SmtpServer;

use crate::{Adapter, Running, ServerSpec};

/// How long shutting down may take before the suite stops waiting.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(10);

/// The [`smtpkit_mio`] adapter.
#[derive(Debug)]
pub struct Mio;

impl Adapter for Mio {
    const NAME: &'static str = "mio";

    fn start(mut spec: ServerSpec) -> Running {
        let listeners = spec.take_listeners();
        let mut builder = SmtpServer::builder(spec.handler).settings(spec.settings);
        for (source, listener) in listeners {
            builder = builder.listener(source, listener);
        }
        if let Some(tls) = spec.tls {
            builder = builder.tls(tls);
        }
        if let Some(lookup) = spec.reverse_dns {
            builder = builder.reverse_dns(lookup);
        }
        let handle = builder
            .build()
            .expect("smtpkit-mio server")
            .start()
            .expect("smtpkit-mio threads");
        let endpoints = handle.endpoints().to_vec();
        Running::new(
            endpoints,
            Box::new(move |grace| {
                // `shutdown` blocks until every thread is joined; bound the wait so a hung
                // server fails its test instead of hanging the suite.
                let (done_tx, done_rx) = mpsc::channel();
                thread::spawn(move || {
                    handle.shutdown(grace);
                    let _ = done_tx.send(());
                });
                let _ = done_rx.recv_timeout(grace + SHUTDOWN_LIMIT);
            }),
        )
    }
}
