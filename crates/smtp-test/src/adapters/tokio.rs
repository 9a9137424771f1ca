//! smtpkit-tokio: the server runs on a multi-threaded tokio runtime owned by the [`Running`].

use std::time::Duration;

use smtpkit_tokio::SmtpServer;

use crate::{Adapter, Running, ServerSpec};

/// How long shutting down may take before the runtime is dropped anyway.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(10);

/// The [`smtpkit_tokio`] adapter.
#[derive(Debug)]
pub struct Tokio;

impl Adapter for Tokio {
    const NAME: &'static str = "tokio";

    fn start(mut spec: ServerSpec) -> Running {
        let listeners = spec.take_listeners();
        // Two workers, like the machines CI runs on: sessions really run in parallel.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let handle = rt.block_on(async {
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
            let server = builder.build().await.expect("smtpkit-tokio server");
            server.spawn()
        });
        let endpoints = handle.endpoints().to_vec();
        Running::new(
            endpoints,
            Box::new(move |grace| {
                // The timer must be created inside the runtime.
                let _ = rt.block_on(async {
                    tokio::time::timeout(SHUTDOWN_LIMIT, handle.shutdown(grace)).await
                });
                rt.shutdown_timeout(Duration::from_secs(1));
            }),
        )
    }
}
