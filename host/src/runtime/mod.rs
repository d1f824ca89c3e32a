//! The device runtime: ties one command's data path together with tokio.
//!
//! ```text
//! transport (MQTT, manual acks) -> relay_core::envelope decode
//!   -> journal (group commit, fsync) -> relay_core::scheduler
//!   -> relay_core::registry -> engine -> status publish / PUBACK
//! ```
//!
//! # Layout
//!
//! | module | role |
//! |--------|------|
//! | [`config`] | `relay.toml`: broker, device, dirs, engine, retry policy, limits |
//! | [`loader`] | plugin dir -> registry (each `*.wasm`, persistent kv per plugin) |
//! | [`handlers`] | the registry shared by the handler thread and the app (`listen` / `off`) |
//! | [`device_thread`] | the driver's own thread (with the publisher) on a multi-thread runtime |
//! | [`driver`] | the I/O loop: feeds events to the sans-IO [`relay_core::machine::Machine`] (which decides what is journaled, acked, published and started, and when) and carries out its effects |
//! | [`executor`] | the handler thread: dispatch, classify, flush kv |
//! | `handle` | [`RuntimeHandle`]: `listen` / `off`, queries, shutdown |
//! | [`publisher`] | statuses and events out, coalescing intermediate statuses under load |
//! | [`clock`] | unix-ms time, virtual in tests |
//! | [`shutdown`] | signals and the order of a graceful stop |
//! | [`start`] | from a [`Config`] to a running device on MQTT (`relay run`, `relay dev`) |
//!
//! # Use from Rust
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::sync::Arc;
//! use relay_host::core::plugin::{HandlerResult, Invocation};
//! use relay_host::runtime::Runtime;
//! use relay_host::transport::FakeTransport;
//!
//! let (transport, _remote) = FakeTransport::new("dev-1")?;
//! let handle = Runtime::builder()
//!     .listen("ping", |_: &Invocation| -> HandlerResult { Ok(None) })?
//!     .open_dir("/tmp/relay-data")? // replays the journal
//!     .start(Arc::new(transport))?; // (an Arc<MqttTransport> in production)
//! handle.listen("pong", |_: &Invocation| -> HandlerResult { Ok(None) })?;
//! assert!(handle.off("pong"));
//! let report = handle.shutdown().await?; // graceful: nothing acked is lost
//! # Ok(()) }
//! ```
//!
//! See `docs/architecture.md` for the durability and latency reasoning.

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use relay_core::engine::Plugin;
use relay_core::envelope::EnvelopeLimits;
use relay_core::journal::record::Record;
use relay_core::journal::Storage;
use relay_core::machine::{Machine, MachineOptions};
use relay_core::registry::{ListenError, NativeHandler, Registry};
use relay_core::scheduler::Policy;
use relay_store::{FileStorage, Journal, JournalError, StoreError};

pub use device_thread::DeviceThread;
use tokio::sync::{mpsc, oneshot};

pub mod ahead;
pub mod clock;
pub mod config;
pub mod device_thread;
pub mod driver;
pub mod executor;
mod handle;
pub mod handlers;
pub mod installer;
pub mod loader;
mod module_file;
pub mod publisher;
pub mod shutdown;
pub mod start;
mod timer;

pub use clock::{Clock, SystemClock, TokioClock};
pub use config::{Config, ConfigError};
pub use handle::RuntimeHandle;
pub use handlers::Handlers;
pub use relay_core::machine::builtins;
pub use relay_core::machine::BuiltinAccess;
/// A snapshot of the driver's state (tests, diagnostics).
pub use relay_core::machine::MachineState as RuntimeState;
pub use relay_core::machine::{DEFAULT_COMPACT_AFTER_RECORDS, DEFAULT_MAX_PENDING};
pub use shutdown::Link;
pub use start::{start_device, DeviceRuntime};

/// Default graceful-shutdown deadline for the running handler.
pub const DEFAULT_SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

/// Knobs of the runtime (what `relay.toml` sets besides the link and plugins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// Retry delay, attempts, remembered outcomes.
    pub policy: Policy,
    pub envelope_limits: EnvelopeLimits,
    /// How long a shutdown waits for the running handler.
    pub shutdown_deadline: Duration,
    /// Compact the journal after this many appended records (0: never).
    pub compact_after_records: u64,
    /// Stop reading new messages while this many commands are pending (the
    /// broker keeps the rest; nothing is acked that is not journaled).
    pub max_pending: usize,
    /// While the journal's disk is full: how often to retry a refused append
    /// and to check whether space returned (ms).
    pub storage_retry_ms: u64,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            policy: Policy::default(),
            envelope_limits: EnvelopeLimits::default(),
            shutdown_deadline: DEFAULT_SHUTDOWN_DEADLINE,
            compact_after_records: DEFAULT_COMPACT_AFTER_RECORDS,
            max_pending: DEFAULT_MAX_PENDING,
            storage_retry_ms: relay_core::machine::STORAGE_RETRY_MS,
        }
    }
}

/// Zeros kept written ahead of the journal (see `FileStorage::preallocate`):
/// appends then overwrite instead of growing the file, which makes their
/// fsync cheaper. 1 MiB is ~450 commands with a 1 KiB payload; growing by
/// it costs one slower commit.
pub const JOURNAL_PREALLOCATE: u64 = 1 << 20;

/// Zeros kept ahead of the journal, besides the preallocation, for the
/// records of accepted commands once the disk is full (`relay_store::space`):
/// a command needs ~100 bytes (`Started`, `Finished`, `Delivered`) plus its
/// reply, so 2 MiB finishes and reports some 10,000 commands with small
/// replies (the default `max_pending`), or 2,000 with 1 KiB replies. Past
/// that, statuses wait (nothing is lost) until space returns.
pub const JOURNAL_RESERVE: u64 = 2 << 20;

/// Why the runtime could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot open the journal: {0}")]
    Open(#[from] StoreError),
    #[error("cannot replay the journal: {0}")]
    Replay(String),
    #[error("cannot start a runtime thread: {0}")]
    Thread(#[from] std::io::Error),
    /// Fail-stop: a write or fsync of the journal failed (not a full disk).
    #[error(
        "journal failed: {0}. The device stopped acknowledging and exited (fail-stop, as \
         PostgreSQL does after a failed fsync: the kernel may have dropped data written since the \
         last successful fsync, so retrying could report it durable when it is not). Check the \
         disk and the kernel log (dmesg), then restart relay: it replays the journal, and the \
         broker redelivers every command that was not acknowledged"
    )]
    Journal(#[source] JournalError),
    #[error("the handler thread stopped unexpectedly")]
    HandlerThread,
    #[error("the runtime task panicked or was cancelled")]
    Task,
}

/// What a finished shutdown left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Commands journaled and not final: they resume on restart.
    pub pending: usize,
    /// `(id, attempt)` of a handler still running at the deadline; it runs
    /// again (next attempt) after a restart.
    pub abandoned: Option<(String, u32)>,
}

/// Counters since start.
#[derive(Debug, Default)]
pub struct Stats {
    pub received: AtomicU64,
    pub rejected: AtomicU64,
    pub acked: AtomicU64,
    pub started: AtomicU64,
    pub finished: AtomicU64,
    pub compactions: AtomicU64,
    /// The journal's own counters, copied by the driver after each batch.
    pub journal_records: AtomicU64,
    pub journal_syncs: AtomicU64,
    pub publish: Arc<publisher::PublishCounters>,
    /// The plugins the installer's helper loaded ahead (with an installer).
    pub ahead: Option<Arc<ahead::Ready>>,
}

/// [`Stats`] read at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// Messages taken from the transport.
    pub received: u64,
    /// Of those, refused (`rejected`) before or instead of queuing.
    pub rejected: u64,
    /// PUBACKs handed to the transport.
    pub acked: u64,
    /// Attempts started.
    pub started: u64,
    /// Attempts ended.
    pub finished: u64,
    pub compactions: u64,
    pub statuses_published: u64,
    pub statuses_coalesced: u64,
    pub events_published: u64,
    pub journal_records: u64,
    pub journal_syncs: u64,
    /// Installs whose plugin was verified and loaded ahead of their turn
    /// (only the switch was left for it).
    pub installs_prepared_ahead: u64,
}

/// Entry point: `Runtime::builder()`.
#[derive(Debug)]
pub struct Runtime;

impl Runtime {
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::new()
    }
}

/// Configures a runtime before it opens its journal.
pub struct RuntimeBuilder {
    options: RuntimeOptions,
    handlers: Handlers,
    clock: Arc<dyn Clock>,
    access: BuiltinAccess,
    installer: Option<installer::Installer>,
}

impl Default for RuntimeBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl RuntimeBuilder {
    pub fn new() -> Self {
        RuntimeBuilder {
            options: RuntimeOptions::default(),
            handlers: Handlers::new(Registry::new()),
            clock: Arc::new(SystemClock),
            access: BuiltinAccess::default(),
            installer: None,
        }
    }

    pub fn options(mut self, options: RuntimeOptions) -> Self {
        self.options = options;
        self
    }

    pub fn policy(mut self, policy: Policy) -> Self {
        self.options.policy = policy;
        self
    }

    /// The time source (default [`SystemClock`]; [`TokioClock`] for tests
    /// on paused time).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    pub fn builtin_access(mut self, access: BuiltinAccess) -> Self {
        self.access = access;
        self
    }

    /// Use an existing registry handle (e.g. filled by [`loader::load_dir`]).
    pub fn handlers(mut self, handlers: Handlers) -> Self {
        self.handlers = handlers;
        self
    }

    /// Takes plugin updates (`_install`, `_rollback`, `_remove`) with this
    /// installer; without one they are rejected.
    pub fn installer(mut self, installer: installer::Installer) -> Self {
        self.installer = Some(installer);
        self
    }

    /// The registry handle, to `listen` / `install` before start.
    pub fn registry(&self) -> &Handlers {
        &self.handlers
    }

    /// Registers a native handler (all roles).
    pub fn listen(
        self,
        name: &str,
        handler: impl NativeHandler + 'static,
    ) -> Result<Self, ListenError> {
        self.handlers.listen(name, handler)?;
        Ok(self)
    }

    /// Installs a loaded plugin.
    pub fn install(self, plugin: Box<dyn Plugin>) -> Result<Self, ListenError> {
        self.handlers.install(plugin)?;
        Ok(self)
    }

    /// Opens (or creates) the journal file in `data_dir` and replays it.
    pub fn open_dir(self, data_dir: impl AsRef<Path>) -> Result<Prepared, RuntimeError> {
        let mut storage = FileStorage::open(data_dir.as_ref())?;
        storage.preallocate(JOURNAL_PREALLOCATE);
        storage.reserve(JOURNAL_RESERVE);
        // One write-through write per commit where the disk allows it
        // (relay_store::direct); buffered write + fdatasync otherwise.
        let write_through = storage.write_through()?;
        tracing::debug!(write_through, path = %storage.path().display(), "journal opened");
        let recovery = storage.recovery().clone();
        if let Some(discarded) = recovery.discarded {
            let corrupt = discarded.is_corruption();
            tracing::warn!(?discarded, corrupt, preserved = ?recovery.preserved, "journal: dropped an invalid tail");
        }
        self.open(storage)
    }

    /// Replays `storage` into the scheduler and starts its group-commit
    /// writer. Records that do not decode are skipped with a warning.
    pub fn open<S>(self, mut storage: S) -> Result<Prepared, RuntimeError>
    where
        S: Storage + Send + 'static,
        S::Error: std::error::Error + Send + Sync + 'static,
    {
        let mut records = Vec::new();
        let mut undecodable = 0usize;
        let report = storage
            .replay(&mut |bytes| match Record::decode(bytes) {
                Ok(record) => records.push(record),
                Err(error) => {
                    undecodable += 1;
                    tracing::warn!(%error, "journal: skipping a record that does not decode");
                }
            })
            .map_err(|e| RuntimeError::Replay(e.to_string()))?;
        let replayed = records.len();
        let now = self.clock.now_ms();
        let options = MachineOptions {
            envelope_limits: self.options.envelope_limits,
            compact_after_records: self.options.compact_after_records,
            max_pending: self.options.max_pending,
            builtins: self.access.clone(),
            storage_retry_ms: self.options.storage_retry_ms,
        };
        let machine = Machine::restore(self.options.policy.clone(), records, options, now);
        let state = machine.state();
        tracing::info!(
            records = replayed,
            undecodable,
            discarded = ?report.discarded,
            pending = state.pending,
            remembered = state.remembered,
            "journal replayed"
        );
        let journal = Journal::spawn(storage)?;
        Ok(Prepared {
            builder: self,
            machine,
            journal,
        })
    }
}

/// A runtime whose journal is replayed, ready to connect. Splitting this
/// from [`RuntimeBuilder::open`] lets `relay run` restore the state before
/// the MQTT link connects and subscribes.
pub struct Prepared {
    builder: RuntimeBuilder,
    machine: Machine<crate::transport::AckToken>,
    journal: Journal,
}

impl Prepared {
    /// Commands restored from the journal and not final.
    pub fn pending(&self) -> usize {
        self.machine.pending_len()
    }

    /// Starts the driver, publisher and handler thread.
    ///
    /// Where the driver runs depends on the caller's tokio runtime:
    /// - **multi-thread** (`relay run`, `relay dev`, an app): on a
    ///   [`DeviceThread`] of its own, with the publisher.
    ///   There it may block, so when the device is otherwise idle it commits
    ///   the journal itself (see `Driver::submit`) instead of handing the
    ///   commit to the journal thread and back: two wake-ups that on a small
    ///   or busy machine cost as much as the fsync (`docs/architecture.md`).
    /// - **current-thread** (most tests, with virtual time): as a task of
    ///   the caller's runtime, every commit through the journal's writer
    ///   thread, so the one thread never blocks on the disk.
    pub fn start<T: Link>(self, transport: Arc<T>) -> Result<RuntimeHandle, RuntimeError> {
        let multi_thread = matches!(
            tokio::runtime::Handle::current().runtime_flavor(),
            tokio::runtime::RuntimeFlavor::MultiThread
        );
        if multi_thread {
            let thread = DeviceThread::spawn()?;
            self.launch(Some(thread), transport)
        } else {
            self.launch(None, transport)
        }
    }

    fn launch<T: Link>(
        self,
        thread: Option<DeviceThread>,
        transport: Arc<T>,
    ) -> Result<RuntimeHandle, RuntimeError> {
        let Prepared {
            builder,
            machine,
            journal,
        } = self;
        let RuntimeBuilder {
            options,
            handlers,
            clock,
            access: _,
            installer,
        } = builder;
        let ahead = match &installer {
            Some(installer) => Some(ahead::Ahead::spawn(installer.ahead_setup())?),
            None => None,
        };
        let update_states = installer.as_ref().map(|i| i.states());
        let stats = Arc::new(Stats {
            ahead: installer.as_ref().map(|i| i.ready()),
            ..Stats::default()
        });
        let (executor, done_rx) = executor::Executor::spawn(handlers.clone(), installer)?;
        let (delivered_tx, delivered_rx) = mpsc::unbounded_channel();
        let (control_tx, control) = mpsc::unbounded_channel();
        let driver = driver::Driver {
            transport,
            machine,
            journal: Some(journal),
            tickets: Default::default(),
            executor: Some(executor),
            ahead,
            update_states,
            done_rx,
            publisher: None,
            publisher_task: None,
            delivered_rx,
            delivered_closed: false,
            clock,
            shutdown_deadline: options.shutdown_deadline,
            handlers: handlers.clone(),
            control,
            stats: stats.clone(),
            stopping: None,
            link_closed: false,
            control_closed: false,
            commit_inline: thread.is_some(),
            timer: Default::default(),
            effects: Vec::new(),
            coalesced_reported: 0,
        };
        let (stopped_tx, stopped) = oneshot::channel();
        let run = async move {
            let mut driver = driver;
            let (publisher, publisher_task) = publisher::spawn(
                driver.transport.clone(),
                driver.stats.publish.clone(),
                delivered_tx,
            );
            driver.publisher = Some(publisher);
            driver.publisher_task = Some(publisher_task);
            let _ = stopped_tx.send(driver.run().await);
        };
        match thread {
            Some(thread) => thread.run(run),
            None => {
                tokio::spawn(run);
            }
        }
        Ok(RuntimeHandle {
            control: control_tx,
            stopped: Some(stopped),
            handlers,
            stats,
        })
    }
}
