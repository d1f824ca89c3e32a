//! The application's handle on a running device runtime: the seed SDK's
//! Command API (`listen` / `off`), queries answered by the driver, counters,
//! and shutdown.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use relay_core::engine::Plugin;
use relay_core::plugin::{CommandSpec, PluginInfo};
use relay_core::registry::{ListenError, NativeHandler};
use relay_core::status::Status;
use tokio::sync::{mpsc, oneshot};

use super::{driver, Handlers, RuntimeError, RuntimeState, ShutdownReport, Stats, StatsSnapshot};

/// The running runtime: the seed SDK's Command API (`listen` / `off`),
/// queries, and `shutdown`.
pub struct RuntimeHandle {
    pub(super) control: mpsc::UnboundedSender<driver::Control>,
    /// The driver's result (dropped unsent if it panicked).
    pub(super) stopped: Option<oneshot::Receiver<Result<ShutdownReport, RuntimeError>>>,
    pub(super) handlers: Handlers,
    pub(super) stats: Arc<Stats>,
}

impl std::fmt::Debug for RuntimeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeHandle")
            .field("stats", &self.stats())
            .finish()
    }
}

impl RuntimeHandle {
    /// `listen(name, handler)`: registers a native handler for every role.
    /// Errors as in the seed SDK: duplicate listener, invalid name.
    pub fn listen(
        &self,
        name: &str,
        handler: impl NativeHandler + 'static,
    ) -> Result<(), ListenError> {
        self.handlers.listen(name, handler)
    }

    /// A native handler with explicit roles.
    pub fn listen_with(
        &self,
        spec: CommandSpec,
        handler: impl NativeHandler + 'static,
    ) -> Result<(), ListenError> {
        self.handlers.listen_with(spec, handler)
    }

    /// `off(name)`: true if a handler was removed; safe when absent.
    pub fn off(&self, name: &str) -> bool {
        self.handlers.off(name)
    }

    /// Installs or atomically replaces a plugin (visible to the next start).
    pub fn install(&self, plugin: Box<dyn Plugin>) -> Result<Option<Box<dyn Plugin>>, ListenError> {
        self.handlers.install(plugin)
    }

    /// The loaded plugins.
    pub fn plugins(&self) -> Vec<PluginInfo> {
        self.handlers.plugins()
    }

    /// The registry handle (shared with the handler thread).
    pub fn registry(&self) -> &Handlers {
        &self.handlers
    }

    /// The last known status of a request (what `_status` answers).
    pub async fn status_of(&self, id: &str) -> Option<Status> {
        let (tx, rx) = oneshot::channel();
        self.control
            .send(driver::Control::StatusOf(id.into(), tx))
            .ok()?;
        rx.await.ok().flatten()
    }

    /// A snapshot of the driver's state; `None` once it stopped.
    pub async fn state(&self) -> Option<RuntimeState> {
        let (tx, rx) = oneshot::channel();
        self.control.send(driver::Control::State(tx)).ok()?;
        rx.await.ok()
    }

    /// Counters since start.
    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.stats;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            received: get(&s.received),
            rejected: get(&s.rejected),
            acked: get(&s.acked),
            started: get(&s.started),
            finished: get(&s.finished),
            compactions: get(&s.compactions),
            statuses_published: get(&s.publish.statuses),
            statuses_coalesced: get(&s.publish.coalesced),
            events_published: get(&s.publish.events),
            journal_records: get(&s.journal_records),
            journal_syncs: get(&s.journal_syncs),
            installs_prepared_ahead: s.ahead.as_ref().map_or(0, |r| r.adopted()),
        }
    }

    /// Graceful shutdown (see [`shutdown`]): waits until it completed.
    pub async fn shutdown(mut self) -> Result<ShutdownReport, RuntimeError> {
        let _ = self.control.send(driver::Control::Shutdown);
        self.stopped().await
    }

    /// Waits until the runtime stops by itself (link closed, journal
    /// failure) or through [`RuntimeHandle::request_shutdown`].
    /// Cancel-safe: it can be raced against a signal.
    pub async fn stopped(&mut self) -> Result<ShutdownReport, RuntimeError> {
        let Some(stopped) = self.stopped.as_mut() else {
            return Err(RuntimeError::Task);
        };
        let result = stopped.await;
        self.stopped = None;
        result.map_err(|_| RuntimeError::Task)?
    }

    /// Asks for a graceful shutdown without waiting for it.
    pub fn request_shutdown(&self) {
        let _ = self.control.send(driver::Control::Shutdown);
    }
}
