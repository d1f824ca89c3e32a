//! The update commands (`_install`, `_rollback`, `_remove`) carried out on
//! the handler thread, and the trial of a freshly switched version.
//!
//! The decisions are `relay_core::ota`'s (what to trust, what the state
//! becomes); this module does the I/O around them in an order that keeps
//! exactly one complete, runnable version active at every instant:
//!
//! 1. stage the chunk (fsynced) and, at the last one, verify the staged
//!    bundle: key, signature, hash; then the manifest's policy;
//! 2. keep the module in the update store (fsynced under its final name);
//! 3. load it with the engine (or take the plugin the `ahead` thread loaded
//!    from that very module before this turn, and give it its kv), check
//!    its `describe()` against the manifest and its commands against the
//!    registry: nothing has changed yet;
//! 4. **switch**: write the new state (atomic rename) and swap the plugin in
//!    the registry. A command in flight finished before (this runs on the
//!    handler thread, between calls); the next one runs the new version;
//! 5. self-test, then trial: a failure rolls back (state, then registry)
//!    and reports it.
//!
//! A crash before step 4 leaves the old state (the install command re-runs
//! from the journal and redoes it); after it, the new state, whose version
//! restarts on trial (`trial`: the self-test, the verdict after each call
//! and the rollback). A re-run of an install that already switched is
//! recognised by the module's hash and answered without switching again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use relay_core::engine::{Engine, Plugin};
use relay_core::limits::Limits;
use relay_core::machine::Listed;
use relay_core::ota::chunk::{self, Progress};
use relay_core::ota::install;
use relay_core::ota::state::{Slot, Source, UpdateState};
use relay_core::ota::trial::{Trial, Verdict};
use relay_core::ota::verify::{verify, TrustedKeys};
use relay_core::ota::{policy, Refusal};
use relay_core::plugin::{Event, Invocation, PluginInfo};
use relay_core::registry::Registry;
use relay_core::scheduler::AttemptResult;
use relay_store::UpdateFiles;

use super::ahead::{AheadSetup, Ready};
use super::loader::{self, LoadError};

mod trial;

/// Test hook: with `RELAY_CRASH_AT=<step>` in its environment, the
/// process aborts at that step of an install (`chunk`, `verified`,
/// `staged`, `switched`, `trial`, `confirmed`), exactly as `kill -9` would
/// stop it there. The crash-safety tests use it to stop at every step
/// deterministically; nothing sets it otherwise.
pub const CRASH_AT_ENV: &str = "RELAY_CRASH_AT";

fn crash_point(step: &str) {
    if std::env::var_os(CRASH_AT_ENV).is_some_and(|v| v == step) {
        eprintln!("{CRASH_AT_ENV}={step}: aborting");
        std::process::abort();
    }
}

pub use relay_core::ota::install::UPDATE_EVENT;

/// Update settings (`[updates]` in `relay.toml`).
#[derive(Debug, Clone)]
pub struct UpdateOptions {
    pub trust: TrustedKeys,
    pub max_bundle_bytes: u64,
    /// Calls a new version must survive before it is confirmed.
    pub trial_commands: u32,
}

impl Default for UpdateOptions {
    fn default() -> Self {
        UpdateOptions {
            trust: TrustedKeys::new(),
            max_bundle_bytes: DEFAULT_MAX_BUNDLE_BYTES,
            trial_commands: DEFAULT_TRIAL_COMMANDS,
        }
    }
}

pub const DEFAULT_MAX_BUNDLE_BYTES: u64 = 8 * 1024 * 1024;
pub const DEFAULT_TRIAL_COMMANDS: u32 = 3;

/// See the module doc.
pub struct Installer {
    engine: Arc<dyn Engine>,
    limits: Limits,
    data_dir: PathBuf,
    files: UpdateFiles,
    state: UpdateState,
    options: UpdateOptions,
    /// Plugins from the plugin directory, by name (rollback targets).
    factory: HashMap<String, PathBuf>,
    trials: HashMap<String, Trial>,
    /// Plugins loaded ahead of their install's turn (see `ahead`).
    ready: Arc<Ready>,
    /// A copy of `state` for `_plugins`, answered by the driver.
    shown: UpdateStates,
}

/// The update state as `_plugins` shows it, shared by the installer (which
/// changes it) with the driver (which answers `_plugins` at arrival).
#[derive(Debug, Clone, Default)]
pub struct UpdateStates(Arc<std::sync::Mutex<UpdateState>>);

impl UpdateStates {
    /// `infos` with each updated plugin's update state.
    pub fn list(&self, infos: Vec<PluginInfo>) -> Vec<Listed> {
        let state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        infos
            .into_iter()
            .map(|info| Listed {
                update: state.plugins.get(&info.name).map(|p| p.note()),
                info,
            })
            .collect()
    }

    fn set(&self, state: &UpdateState) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = state.clone();
    }
}

impl std::fmt::Debug for Installer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Installer")
            .field("state", &self.state)
            .finish()
    }
}

type Outcome = (AttemptResult, Vec<Event>);

impl Installer {
    /// Opens the update store under `data_dir` and applies its state over
    /// the plugins loaded from the plugin directory (`factory`): updated
    /// versions replace them, removed ones are unloaded. A version that no
    /// longer loads is rolled back at once (logged).
    pub fn open(
        engine: Arc<dyn Engine>,
        limits: Limits,
        data_dir: &Path,
        options: UpdateOptions,
        factory: HashMap<String, PathBuf>,
        registry: &mut Registry,
    ) -> Result<Installer, LoadError> {
        let store_error = |source: std::io::Error| LoadError::Dir {
            dir: data_dir.join(relay_store::updates::UPDATES_DIR),
            source,
        };
        let files = UpdateFiles::open(data_dir).map_err(store_error)?;
        let state = files.load_state().map_err(store_error)?;
        let mut installer = Installer {
            engine,
            limits,
            data_dir: data_dir.to_path_buf(),
            files,
            state,
            options,
            factory,
            trials: HashMap::new(),
            ready: Arc::default(),
            shown: UpdateStates::default(),
        };
        installer.shown.set(&installer.state);
        let names: Vec<String> = installer.state.plugins.keys().cloned().collect();
        for name in names {
            installer.restore(&name, registry);
        }
        let removed = installer
            .files
            .collect_garbage(&installer.state)
            .map_err(store_error)?;
        if removed > 0 {
            tracing::info!(removed, "updates: removed modules no version refers to");
        }
        Ok(installer)
    }

    fn restore(&mut self, name: &str, registry: &mut Registry) {
        let entry = self.state.plugins[name].clone();
        let Some(active) = entry.active else {
            registry.uninstall(name);
            tracing::info!(plugin = name, "updates: plugin stays removed");
            return;
        };
        match self.load(name, &active) {
            Ok(plugin) => {
                if let Err(error) = registry.install(plugin) {
                    tracing::error!(plugin = name, %error, "updates: cannot reinstall the active version");
                }
                if entry.trial {
                    self.trials
                        .insert(name.into(), Trial::new(self.options.trial_commands));
                }
                tracing::info!(plugin = name, version = %active.version, trial = entry.trial, "updates: active version restored");
            }
            Err(error) => {
                tracing::error!(plugin = name, version = %active.version, %error, "updates: the active version does not load; rolling back");
                if let Err(error) = self.roll_back(name, registry) {
                    tracing::error!(plugin = name, %error, "updates: no version of this plugin can run");
                }
            }
        }
    }

    /// What the thread that prepares installs ahead of their turn needs
    /// (it hands its plugins to this installer).
    pub fn ahead_setup(&self) -> AheadSetup {
        AheadSetup {
            engine: self.engine.clone(),
            limits: self.limits.clone(),
            data_dir: self.data_dir.clone(),
            trust: self.options.trust.clone(),
            max_bundle_bytes: self.options.max_bundle_bytes,
            ready: self.ready.clone(),
        }
    }

    /// The update state as `_plugins` shows it (kept current).
    pub fn states(&self) -> UpdateStates {
        self.shown.clone()
    }

    fn set_state(&mut self, next: UpdateState) {
        self.shown.set(&next);
        self.state = next;
    }

    /// The plugins loaded ahead (and how many installs took one).
    pub fn ready(&self) -> Arc<Ready> {
        self.ready.clone()
    }

    /// Carries out one update command.
    pub fn run(&mut self, registry: &mut Registry, cmd: &Invocation) -> Outcome {
        let result = install::run(self, registry, cmd);
        if let AttemptResult::Failed { code, message, .. } = &result {
            tracing::warn!(name = %cmd.name, id = %cmd.id, %code, %message, "update refused");
        }
        (result, Vec::new())
    }

    fn already_active(&mut self, name: &str, registry: &mut Registry) -> Result<Vec<u8>, Refusal> {
        let on_trial = self.state.plugins.get(name).is_some_and(|p| p.trial);
        if on_trial {
            self.self_test(name, registry)?;
        }
        Ok(install::already_installed(registry, name, on_trial))
    }

    fn load(&self, name: &str, slot: &Slot) -> Result<Box<dyn Plugin>, Refusal> {
        let path = match &slot.source {
            Source::Bundle(sha) => self.files.module_path(sha),
            Source::Factory => self.factory.get(name).cloned().ok_or_else(|| {
                Refusal::InvalidModule(format!("no plugin {name:?} in the plugin directory"))
            })?,
        };
        self.load_path(&path)
    }

    /// The plugin loaded ahead from module `sha256`, in its real env; or
    /// the module at `path` loaded now.
    fn adopt_or_load(&self, sha256: &[u8; 32], path: &Path) -> Result<Box<dyn Plugin>, Refusal> {
        let Some(mut plugin) = self.ready.take(sha256) else {
            return self.load_path(path);
        };
        let env = loader::plugin_env(plugin.info(), &self.limits, &self.data_dir)
            .map_err(|e| Refusal::Storage(format!("cannot open the plugin's kv store: {e}")))?;
        *plugin.env_mut() = env;
        Ok(plugin)
    }

    fn load_path(&self, path: &Path) -> Result<Box<dyn Plugin>, Refusal> {
        loader::load_plugin(&*self.engine, path, &self.limits, &self.data_dir).map_err(|e| {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                message = format!("{message}: {s}");
                source = s.source();
            }
            Refusal::InvalidModule(message)
        })
    }
}

impl install::UpdateCommands for Installer {
    fn install(&mut self, registry: &mut Registry, payload: &[u8]) -> Result<Vec<u8>, Refusal> {
        let chunk = chunk::decode(payload)?;
        match chunk::receive(&mut self.files, &chunk, self.options.max_bundle_bytes)? {
            Progress::Partial { have, total } => {
                crash_point("chunk");
                return Ok(install::received(have, total));
            }
            Progress::Complete { .. } => {}
        }
        let mut staged = self.files.staged_bundle().map_err(storage)?;
        let verified = verify(
            &mut staged,
            &self.options.trust,
            self.options.max_bundle_bytes,
        )?;
        let manifest = verified.manifest;
        crash_point("verified");
        let name = manifest.name.clone();
        let source = Source::Bundle(manifest.sha256);
        let current = install::current_slot(&self.state, &name, registry);
        if current.as_ref().is_some_and(|c| c.source == source) {
            // A re-run of an install that already switched (crash, redelivery).
            return self.already_active(&name, registry);
        }
        policy::check_manifest(
            &manifest,
            env!("CARGO_PKG_VERSION"),
            self.state.highest(&name),
        )?;
        let path = self
            .files
            .keep_module(
                &manifest.sha256,
                verified.module_offset,
                verified.module_len,
            )
            .map_err(storage)?;
        crash_point("staged");
        let checked = self
            .adopt_or_load(&manifest.sha256, &path)
            .and_then(|plugin| {
                policy::check_describe(&manifest, plugin.info())?;
                install::check_claims(registry, plugin.info())?;
                Ok(plugin)
            });
        let plugin = match checked {
            Ok(plugin) => plugin,
            Err(refusal) => {
                // A refused module is not kept (unless a version uses it).
                if !self.state.references(&source) {
                    let _ = self.files.drop_source(&source);
                }
                return Err(refusal);
            }
        };
        let slot = Slot {
            version: manifest.version.clone(),
            source,
        };
        let mut next = self.state.clone();
        let dropped = next.switch(&name, slot, current.clone());
        self.files.save_state(&next).map_err(storage)?;
        self.set_state(next);
        crash_point("switched");
        registry
            .install(plugin)
            .map_err(|e| Refusal::Storage(format!("registry refused the checked plugin: {e}")))?;
        tracing::info!(plugin = %name, version = %manifest.version, previous = ?current.as_ref().map(|c| &c.version), "update: switched, on trial");
        if let Some(dropped) = dropped {
            let _ = self.files.drop_source(&dropped);
        }
        self.self_test(&name, registry)?;
        self.trials
            .insert(name.clone(), Trial::new(self.options.trial_commands));
        crash_point("trial");
        Ok(install::switched(&name, &manifest.version, current))
    }

    fn roll_back(
        &mut self,
        name: &str,
        registry: &mut Registry,
    ) -> Result<(String, String), Refusal> {
        Installer::roll_back(self, name, registry)
    }

    fn remove(&mut self, name: &str, registry: &mut Registry) -> Result<String, Refusal> {
        let loaded = registry.plugin(name).map(|p| p.info().version.clone());
        let Some(version) = loaded else {
            return Err(Refusal::NoSuchPlugin(name.into()));
        };
        let mut next = self.state.clone();
        let dropped = next.remove(name, &version);
        self.files.save_state(&next).map_err(storage)?;
        self.set_state(next);
        self.trials.remove(name);
        registry.uninstall(name);
        for source in dropped {
            let _ = self.files.drop_source(&source);
        }
        Ok(name.into())
    }
}

fn storage(e: std::io::Error) -> Refusal {
    Refusal::Storage(e.to_string())
}
