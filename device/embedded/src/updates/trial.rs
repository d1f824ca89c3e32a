//! The trial of a freshly switched version on a microcontroller: its
//! `self-test` before any command, the verdict after each of its first
//! calls (`relay_core::ota::trial`), and the rollback a failing verdict
//! calls for (state first, then the registry).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use embedded_storage::nor_flash::NorFlash;
use relay_core::ota::install;
use relay_core::ota::trial::Verdict;
use relay_core::ota::Refusal;
use relay_core::plugin::Event;
use relay_core::registry::Registry;
use relay_core::scheduler::AttemptResult;

use super::{swap_in, Updater};

impl<F: NorFlash> Updater<F> {
    /// Runs the plugin's `self-test` command, if it lists one; a failure
    /// rolls the plugin back.
    pub(super) fn self_test(&mut self, name: &str, registry: &mut Registry) -> Result<(), Refusal> {
        let Some(failure) = install::self_test(registry, name) else {
            return Ok(());
        };
        self.roll_back(name, registry)?;
        Err(Refusal::SelfTestFailed(failure))
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
        match trial.after_attempt(result) {
            Verdict::Continue => Vec::new(),
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
                install::confirmed(plugin, version.as_deref())
            }
            Verdict::RollBack => {
                let from = registry.plugin(plugin).map(|p| p.info().version.clone());
                match self.roll_back(plugin, registry) {
                    Ok((to, _)) => install::rolled_back(plugin, from.as_deref(), &to, result),
                    Err(_) => Vec::new(),
                }
            }
        }
    }

    /// Back to the previous version: `(to, from)` versions.
    pub(super) fn roll_back(
        &mut self,
        name: &str,
        registry: &mut Registry,
    ) -> Result<(String, String), Refusal> {
        let from = install::current_slot(&self.state, name, registry);
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
        swap_in(registry, plugin)?;
        Ok((
            previous.version,
            from.map(|f| f.version).unwrap_or_default(),
        ))
    }
}
