//! Installs prepared ahead of their turn, so that when an `_install`'s turn
//! comes in the FIFO only the switch is left to do on the handler thread.
//!
//! Commands run one at a time, in order; an install's last chunk used to
//! verify, keep and compile the bundle in its turn, and every command
//! queued behind it waited that long (126 ms compiling on wasmtime). The
//! machine announces each `_install` chunk when it is queued
//! ([`Effect::Upcoming`](relay_core::machine::Effect::Upcoming)); this
//! thread receives it at once into a staging area of its own
//! (`updates/ahead/`), and when a bundle is complete it verifies it (the
//! same [`verify`]: key, signature, hash, before any module byte is parsed),
//! keeps the module beside (synced, for the turn to move into the module
//! store) and loads it with the engine (for wasmtime that is the compile). The loaded plugin waits in [`Ready`]
//! until the install's turn takes it.
//!
//! Nothing here decides anything: it is a cache. The turn still stages its
//! chunk durably, verifies the staged bundle and checks the policy (the
//! highest version, conflicts) against the state *at its turn*; it only
//! skips the load when a plugin of the very module it verified is ready.
//! A bundle refused or not ready in time is loaded in its turn, as before.
//! The plugin is loaded with a scratch kv and gets its real env when it is
//! switched in, because the running version may still write its kv until
//! then. Chunks are not synced here: the journal holds them, and after a
//! restart the pending ones are announced again.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};

use relay_core::engine::{Engine, Plugin};
use relay_core::limits::Limits;
use relay_core::ota::chunk::{self, Progress};
use relay_core::ota::verify::{verify, TrustedKeys};
use relay_core::plugin::Invocation;
use relay_store::{FileStaging, UpdateFiles};

use super::loader;

/// The plugin loaded ahead, shared between this thread and the installer.
/// At most one is held: a newer bundle replaces it.
#[derive(Default)]
pub struct Ready {
    slot: Mutex<Slot>,
    changed: Condvar,
    /// Installs whose turn found their plugin ready (tests, stats).
    adopted: AtomicU64,
}

#[derive(Default)]
enum Slot {
    #[default]
    Empty,
    /// This thread is loading the module with this sha256.
    Loading([u8; 32]),
    Loaded([u8; 32], Box<dyn Plugin>),
}

impl std::fmt::Debug for Ready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ready")
            .field("adopted", &self.adopted())
            .finish()
    }
}

impl Ready {
    /// The plugin loaded from the module `sha256`, if this thread loaded
    /// it; waits while it is loading it (the turn would only load it again).
    pub fn take(&self, sha256: &[u8; 32]) -> Option<Box<dyn Plugin>> {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        while matches!(&*slot, Slot::Loading(s) if s == sha256) {
            slot = self.changed.wait(slot).unwrap_or_else(|p| p.into_inner());
        }
        match std::mem::take(&mut *slot) {
            Slot::Loaded(s, plugin) if s == *sha256 => {
                self.adopted.fetch_add(1, Ordering::Relaxed);
                Some(plugin)
            }
            other => {
                *slot = other;
                None
            }
        }
    }

    /// The module whose plugin is loaded and waiting, if one is.
    pub fn loaded(&self) -> Option<[u8; 32]> {
        match &*self.slot.lock().unwrap_or_else(|p| p.into_inner()) {
            Slot::Loaded(sha, _) => Some(*sha),
            _ => None,
        }
    }

    /// How many installs took a plugin loaded ahead.
    pub fn adopted(&self) -> u64 {
        self.adopted.load(Ordering::Relaxed)
    }

    fn set(&self, next: Slot) {
        *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = next;
        self.changed.notify_all();
    }
}

/// What the thread needs to prepare a bundle.
pub struct AheadSetup {
    pub engine: Arc<dyn Engine>,
    pub limits: Limits,
    pub data_dir: PathBuf,
    pub trust: TrustedKeys,
    pub max_bundle_bytes: u64,
    pub ready: Arc<Ready>,
}

/// The thread's front (held by the driver).
#[derive(Debug)]
pub struct Ahead {
    jobs: mpsc::Sender<Invocation>,
}

impl Ahead {
    /// Starts the thread.
    pub fn spawn(setup: AheadSetup) -> std::io::Result<Ahead> {
        let files = UpdateFiles::open(&setup.data_dir)?;
        let staging = files.ahead_staging()?;
        let (jobs, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("relay-ahead".into())
            .spawn(move || {
                let mut worker = Worker {
                    setup,
                    files,
                    staging,
                };
                while let Ok(invocation) = rx.recv() {
                    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        worker.receive(&invocation)
                    }));
                    if run.is_err() {
                        // Never leave a turn waiting for a load that died.
                        worker.setup.ready.set(Slot::Empty);
                    }
                }
            })?;
        Ok(Ahead { jobs })
    }

    /// An `_install` was queued: receive it now.
    pub fn submit(&self, invocation: Invocation) {
        // A gone thread only costs the head start.
        let _ = self.jobs.send(invocation);
    }
}

struct Worker {
    setup: AheadSetup,
    files: UpdateFiles,
    staging: FileStaging,
}

impl Worker {
    fn receive(&mut self, invocation: &Invocation) {
        let Ok(chunk) = chunk::decode(&invocation.payload) else {
            return;
        };
        match chunk::receive(&mut self.staging, &chunk, self.setup.max_bundle_bytes) {
            Ok(Progress::Complete { .. }) => self.prepare(),
            Ok(Progress::Partial { .. }) => {}
            // Its turn refuses it with the right code.
            Err(refusal) => {
                tracing::debug!(id = %invocation.id, %refusal, "ahead: chunk not taken")
            }
        }
    }

    /// Verifies the complete bundle, keeps its module and loads it.
    fn prepare(&mut self) {
        let verified = self
            .staging
            .staged_bundle()
            .map_err(|e| e.to_string())
            .and_then(|mut b| {
                verify(&mut b, &self.setup.trust, self.setup.max_bundle_bytes)
                    .map_err(|r| r.to_string())
            });
        let verified = match verified {
            Ok(v) => v,
            Err(error) => {
                tracing::debug!(%error, "ahead: bundle not prepared");
                return;
            }
        };
        let sha = verified.manifest.sha256;
        self.setup.ready.set(Slot::Loading(sha));
        let loaded = self
            .files
            .prepare_ahead(
                &self.staging,
                &sha,
                verified.module_offset,
                verified.module_len,
            )
            .map_err(|e| e.to_string())
            .and_then(|path| {
                loader::load_detached(&*self.setup.engine, &path, &self.setup.limits)
                    .map_err(|e| e.to_string())
            });
        match loaded {
            Ok(plugin) => {
                tracing::debug!(plugin = %verified.manifest.name, version = %verified.manifest.version, "ahead: ready for its turn");
                self.setup.ready.set(Slot::Loaded(sha, plugin));
            }
            Err(error) => {
                tracing::debug!(%error, "ahead: the module did not load (its turn reports why)");
                self.setup.ready.set(Slot::Empty);
            }
        }
    }
}
