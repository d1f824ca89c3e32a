//! The trial of a freshly switched version on a microcontroller: its
//! `self-test` before any command, the verdict after each of its first
//! calls (`relay_core::ota::trial`), and the rollback a failing verdict
//! calls for (state first, then the registry).

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use embedded_storage::nor_flash::NorFlash;
use relay_core::msgpack::Writer;
use relay_core::ota::trial::Verdict;
use relay_core::ota::{self, Refusal};
use relay_core::plugin::{Event, Invocation, Role};
use relay_core::registry::Registry;
use relay_core::scheduler::AttemptResult;

use super::{install, Updater, UPDATE_EVENT};

impl<F: NorFlash> Updater<F> {
    /// Runs the plugin's `self-test` command, if it lists one; a failure
    /// rolls the plugin back.
    pub(super) fn self_test(&mut self, name: &str, registry: &mut Registry) -> Result<(), Refusal> {
        let lists_it = registry
            .plugin(name)
            .is_some_and(|p| p.info().commands.iter().any(|c| c.name == ota::SELF_TEST));
        if !lists_it {
            return Ok(());
        }
        let test = Invocation {
            id: format!("_self-test-{name}"),
            name: ota::SELF_TEST.into(),
            payload: Vec::new(),
            attempt: 1,
            role: Role::Admin,
        };
        let failure = match registry.plugin_mut(name).map(|p| p.handle(&test)) {
            Some(Ok(out)) => out
                .result
                .err()
                .map(|e| format!("{}: {}", e.kind.as_str(), e.message)),
            Some(Err(trap)) => Some(format!("{trap}")),
            None => Some("the plugin is gone".into()),
        };
        let Some(failure) = failure else {
            return Ok(());
        };
        self.roll_back(name, registry)?;
        Err(Refusal::SelfTestFailed(failure))
    }

    /// True while `plugin` has a version on trial.
    pub fn on_trial(&self, plugin: &str) -> bool {
        self.trials.contains_key(plugin)
    }

    /// After a call of `plugin`: counts it against its trial, confirms the
    /// version or rolls it back. The `_update` event that reports either.
    pub fn after_call(
        &mut self,
        registry: &mut Registry,
        plugin: &str,
        result: &AttemptResult,
    ) -> Vec<Event> {
        let Some(trial) = self.trials.get_mut(plugin) else {
            return Vec::new();
        };
        let failure = match result {
            AttemptResult::Failed { code, .. } => Some(code),
            _ => None,
        };
        let mut w = Writer::new();
        match trial.after_call(failure) {
            Verdict::Continue => return Vec::new(),
            Verdict::Confirm => {
                self.trials.remove(plugin);
                let mut next = self.state.clone();
                next.confirm(plugin);
                if self.regions.save(&next).is_err() {
                    // Stays on trial; the next boot tries again.
                    return Vec::new();
                }
                self.state = next;
                let version = registry.plugin(plugin).map(|p| p.info().version.clone());
                w.map_len(3).str("plugin").str(plugin);
                w.str("action").str("confirmed");
                w.str("version").opt_str(version.as_deref());
            }
            Verdict::RollBack => {
                let reason = match result {
                    AttemptResult::Failed { code, message, .. } => format!("{code}: {message}"),
                    _ => String::new(),
                };
                let from = registry.plugin(plugin).map(|p| p.info().version.clone());
                let Ok((to, _)) = self.roll_back(plugin, registry) else {
                    return Vec::new();
                };
                w.map_len(5).str("plugin").str(plugin);
                w.str("action").str("rolled_back");
                w.str("from").opt_str(from.as_deref()).str("to").str(&to);
                w.str("reason").str(&reason);
            }
        }
        vec![Event {
            name: UPDATE_EVENT.into(),
            payload: w.into_vec(),
        }]
    }

    /// Back to the previous version: `(to, from)` versions.
    pub(super) fn roll_back(
        &mut self,
        name: &str,
        registry: &mut Registry,
    ) -> Result<(String, String), Refusal> {
        let from = self.current_slot(name, registry);
        let mut next = self.state.clone();
        let (previous, _) = next
            .roll_back(name)
            .ok_or_else(|| Refusal::NoPrevious(name.into()))?;
        let plugin = self.load(name, &previous).map_err(|e| {
            Refusal::InvalidModule(format!("the previous version does not load: {e}"))
        })?;
        self.regions.save(&next)?;
        self.state = next;
        self.trials.remove(name);
        // The previous version may claim commands the failed one dropped:
        // unload the failed one first.
        registry.uninstall(name);
        install(registry, plugin)?;
        Ok((
            previous.version,
            from.map(|f| f.version).unwrap_or_default(),
        ))
    }
}
