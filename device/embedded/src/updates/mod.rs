//! Plugin updates on a microcontroller: `_install`, `_rollback` and
//! `_remove` carried out on flash, with the decisions of `relay_core::ota`
//! (what to trust, what the state becomes) and the order of the Linux
//! host's installer, so one complete, runnable version is active at every
//! instant and a power cut at any point leaves the state before a step or
//! after it:
//!
//! 1. each chunk is staged in a bundle region (durable when the command
//!    finishes); at the last one the bundle is verified on flash (key,
//!    signature, the module's sha256) and its manifest checked (world,
//!    host version, anti-rollback);
//! 2. the module is read into RAM and loaded; its `describe()` must match
//!    the manifest and its commands must not clash: nothing changed yet;
//! 3. **switch**: the new state is stored (the commit point), then the
//!    plugin replaces the old one in the registry;
//! 4. the new version's `self-test`, then its trial (`trial.rs`): a failure
//!    rolls back to the previous version, which stays in its region.
//!
//! A reboot applies the stored state over the plugins the firmware carries
//! ([`Updater::open`]). Replies and events are the Linux host's, so the
//! CLI and the hub drive both alike.

mod regions;
mod trial;

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use embedded_storage::nor_flash::NorFlash;
use relay_core::engine::{Engine, Plugin};
use relay_core::host_env::HostEnv;
use relay_core::limits::Limits;
use relay_core::ota::chunk::{self, Progress};
use relay_core::ota::install::{self, UpdateCommands};
use relay_core::ota::state::{Slot, Source, UpdateState};
use relay_core::ota::trial::Trial;
use relay_core::ota::verify::TrustedKeys;
use relay_core::ota::{policy, Refusal};
use relay_core::plugin::{Event, Invocation, PluginInfo};
use relay_core::registry::Registry;
use relay_core::scheduler::AttemptResult;

pub use regions::{Layout, Regions};

pub use relay_core::ota::install::UPDATE_EVENT;

/// Update settings.
#[derive(Debug, Clone)]
pub struct UpdateOptions {
    pub trust: TrustedKeys,
    pub max_bundle_bytes: u64,
    /// Calls a new version must survive before it is confirmed.
    pub trial_commands: u32,
    /// The firmware's version, for manifests that need a minimum one.
    pub host_version: &'static str,
}

/// Makes the [`HostEnv`] of a plugin being loaded (its kv, clock, logger).
pub type MakeEnv = Box<dyn FnMut(&PluginInfo) -> HostEnv>;

/// See the module doc.
pub struct Updater<F: NorFlash> {
    regions: Regions<F>,
    state: UpdateState,
    options: UpdateOptions,
    engine: Box<dyn Engine>,
    limits: Limits,
    make_env: MakeEnv,
    /// The modules the firmware carries, by plugin name (rollback targets).
    factory: BTreeMap<String, &'static [u8]>,
    trials: BTreeMap<String, Trial>,
}

type Outcome = (AttemptResult, Vec<Event>);

impl<F: NorFlash> Updater<F> {
    /// Opens the update partition and applies its state over `registry`,
    /// which holds the `factory` plugins: updated versions replace them,
    /// removed ones are unloaded, a version on trial restarts its trial. A
    /// version that no longer loads is rolled back at once.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        flash: F,
        layout: Layout,
        options: UpdateOptions,
        engine: Box<dyn Engine>,
        limits: Limits,
        make_env: MakeEnv,
        factory: BTreeMap<String, &'static [u8]>,
        registry: &mut Registry,
    ) -> Result<Self, Refusal> {
        let (regions, state) =
            Regions::open(flash, layout, &options.trust, options.max_bundle_bytes)?;
        let mut updater = Updater {
            regions,
            state,
            options,
            engine,
            limits,
            make_env,
            factory,
            trials: BTreeMap::new(),
        };
        let names: Vec<String> = updater.state.plugins.keys().cloned().collect();
        for name in names {
            updater.restore(&name, registry);
        }
        Ok(updater)
    }

    fn restore(&mut self, name: &str, registry: &mut Registry) {
        let entry = self.state.plugins[name].clone();
        let Some(active) = entry.active else {
            registry.uninstall(name);
            return;
        };
        if active.source == Source::Factory && registry.plugin(name).is_some() && !entry.trial {
            return;
        }
        let restored = self
            .load(name, &active)
            .and_then(|plugin| swap_in(registry, plugin));
        match restored {
            Ok(()) if entry.trial => {
                self.trials
                    .insert(name.into(), Trial::new(self.options.trial_commands));
            }
            Ok(()) => {}
            Err(_) => {
                // Nothing better to do than the previous version; if that
                // fails too the plugin stays out until the next install.
                let _ = self.roll_back(name, registry);
            }
        }
    }

    /// The update state (what `_plugins` reports beside each plugin).
    pub fn state(&self) -> &UpdateState {
        &self.state
    }

    /// Carries out one update command.
    pub fn run(&mut self, registry: &mut Registry, cmd: &Invocation) -> Outcome {
        (install::run(self, registry, cmd), Vec::new())
    }

    fn already_active(&mut self, name: &str, registry: &mut Registry) -> Result<Vec<u8>, Refusal> {
        let on_trial = self.state.plugins.get(name).is_some_and(|p| p.trial);
        if on_trial {
            self.self_test(name, registry)?;
        }
        Ok(install::already_installed(registry, name, on_trial))
    }

    fn load(&mut self, name: &str, slot: &Slot) -> Result<Box<dyn Plugin>, Refusal> {
        let owned;
        let module: &[u8] = match &slot.source {
            Source::Bundle(sha) => {
                owned = self.regions.module(sha)?;
                &owned
            }
            Source::Factory => self.factory.get(name).copied().ok_or_else(|| {
                Refusal::InvalidModule(format!("the firmware carries no plugin {name:?}"))
            })?,
        };
        let make_env = &mut self.make_env;
        self.engine
            .load(module, &self.limits, &mut |info| make_env(info))
            .map_err(|e| Refusal::InvalidModule(e.to_string()))
    }

    /// The partition's flash back (a simulated reset).
    pub fn into_flash(self) -> F {
        self.regions.into_flash()
    }
}

fn swap_in(registry: &mut Registry, plugin: Box<dyn Plugin>) -> Result<(), Refusal> {
    registry
        .install(plugin)
        .map(drop)
        .map_err(|e| Refusal::Storage(format!("registry refused the checked plugin: {e}")))
}

impl<F: NorFlash> UpdateCommands for Updater<F> {
    fn install(&mut self, registry: &mut Registry, payload: &[u8]) -> Result<Vec<u8>, Refusal> {
        let chunk = chunk::decode(payload)?;
        let max = self.options.max_bundle_bytes;
        let mut staging = self.regions.staging(&chunk.transfer, &self.state)?;
        if let Progress::Partial { have, total } = chunk::receive(&mut staging, &chunk, max)? {
            return Ok(install::received(have, total));
        }
        let verified = self
            .regions
            .verify_staged(&chunk.transfer, &self.options.trust, max)?;
        let manifest = verified.manifest;
        let name = manifest.name.clone();
        let source = Source::Bundle(manifest.sha256);
        let current = install::current_slot(&self.state, &name, registry);
        if current.as_ref().is_some_and(|c| c.source == source) {
            // A re-run of an install that already switched.
            return self.already_active(&name, registry);
        }
        policy::check_manifest(
            &manifest,
            self.options.host_version,
            self.state.highest(&name),
        )?;
        let plugin = self.load(
            &name,
            &Slot {
                version: manifest.version.clone(),
                source,
            },
        )?;
        policy::check_describe(&manifest, plugin.info())?;
        install::check_claims(registry, plugin.info())?;
        let slot = Slot {
            version: manifest.version.clone(),
            source,
        };
        let mut next = self.state.clone();
        next.switch(&name, slot, current.clone());
        self.regions.save(&next)?;
        self.state = next;
        swap_in(registry, plugin)?;
        self.self_test(&name, registry)?;
        self.trials
            .insert(name.clone(), Trial::new(self.options.trial_commands));
        Ok(install::switched(&name, &manifest.version, current))
    }

    fn roll_back(
        &mut self,
        name: &str,
        registry: &mut Registry,
    ) -> Result<(String, String), Refusal> {
        Updater::roll_back(self, name, registry)
    }

    fn remove(&mut self, name: &str, registry: &mut Registry) -> Result<String, Refusal> {
        let Some(version) = registry.plugin(name).map(|p| p.info().version.clone()) else {
            return Err(Refusal::NoSuchPlugin(name.into()));
        };
        let mut next = self.state.clone();
        next.remove(name, &version);
        self.regions.save(&next)?;
        self.state = next;
        self.trials.remove(name);
        registry.uninstall(name);
        Ok(name.into())
    }
}

impl<F: NorFlash> crate::Updates for Updater<F> {
    fn run(&mut self, registry: &mut Registry, cmd: &Invocation) -> (AttemptResult, Vec<Event>) {
        Updater::run(self, registry, cmd)
    }

    fn after_call(
        &mut self,
        registry: &mut Registry,
        plugin: &str,
        result: &AttemptResult,
    ) -> Vec<Event> {
        Updater::after_call(self, registry, plugin, result)
    }

    fn listed(&self, infos: Vec<PluginInfo>) -> Vec<relay_core::machine::Listed> {
        infos
            .into_iter()
            .map(|info| relay_core::machine::Listed {
                update: self.state.plugins.get(&info.name).map(|p| p.note()),
                info,
            })
            .collect()
    }
}
