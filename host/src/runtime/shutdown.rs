//! Stopping without losing anything: what triggers a graceful shutdown
//! (Ctrl-C, SIGTERM, the handle) and how the link is closed at the end.
//!
//! The order of a shutdown (carried out by the driver):
//! 1. stop reading new messages (the broker keeps them: not acked);
//! 2. let the running handler finish, up to the deadline (default 5 s);
//! 3. journal its outcome, submit every pending record and wait until all
//!    are durable, then release the PUBACKs and statuses they gate;
//! 4. close the journal (its writer thread finishes and exits);
//! 5. flush queued statuses and disconnect ([`Link::close`]).
//!
//! Nothing is lost at any point: a message not acked yet is redelivered by
//! the broker (and deduped by id if it was journaled); an acked one is in
//! the journal and resumes on restart. A handler still running at the
//! deadline is abandoned; its `Started` record makes the restart run it
//! again as the next attempt.

use std::future::Future;
use std::time::Duration;

use crate::transport::{FakeTransport, MqttTransport, Transport};

/// A transport the runtime can close at the end of a shutdown.
pub trait Link: Transport {
    /// Sends what is queued and disconnects, waiting at most `deadline`.
    fn close(&self, deadline: Duration) -> impl Future<Output = ()> + Send;
}

impl Link for MqttTransport {
    async fn close(&self, deadline: Duration) {
        self.shutdown(deadline).await;
    }
}

impl Link for FakeTransport {
    /// The test's [`crate::transport::FakeRemote`] decides when the fake link ends.
    async fn close(&self, _deadline: Duration) {}
}

/// Resolves on the first Ctrl-C (SIGINT) or SIGTERM.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C: shutting down"),
                    _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the host");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("Ctrl-C: shutting down");
    }
}
