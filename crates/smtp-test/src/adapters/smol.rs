//! smtpkit-smol: the server runs on smol's global executor; shutdown is driven with
//! `smol::block_on`.

use std::time::Duration;

use smtpkit_smol::SmtpServer;

use crate::{Adapter, Running, ServerSpec};

/// How long shutting down may take before the suite stops waiting.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(10);

/// The [`smtpkit_smol`] adapter.
#[derive(Debug)]
pub struct Smol;

impl Adapter for Smol {
    const NAME: &'static str = "smol";

    fn start(mut spec: ServerSpec) -> Running {
        let listeners = spec.take_listeners();
        let handle = smol::block_on(async {
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
            builder.build().await.expect("smtpkit-smol server").spawn()
        });
        let endpoints = handle.endpoints().to_vec();
        Running::new(
            endpoints,
            Box::new(move |grace| {
                smol::block_on(async {
                    let limit = async {
                        smol::Timer::after(SHUTDOWN_LIMIT).await;
                    };
                    smol::future::or(handle.shutdown(grace), limit).await;
                });
            }),
        )
    }
}
