//! The trial of a freshly switched version: its `self-test` before any
//! command, the verdict after each of its first calls, and the rollback a
//! failing verdict calls for (state first, then the registry).

use super::*;

impl Installer {
    /// Runs the plugin's `self-test` command, if it lists one; a failure
    /// rolls the plugin back.
    pub(super) fn self_test(&mut self, name: &str, registry: &mut Registry) -> Result<(), Refusal> {
        let Some(failure) = install::self_test(registry, name) else {
            return Ok(());
        };
        tracing::warn!(plugin = name, %failure, "update: self-test failed, rolling back");
        self.roll_back(name, registry)?;
        Err(Refusal::SelfTestFailed(failure))
    }

    /// After a plugin call: counts it against the plugin's trial and rolls
    /// the version back on a trap or a time-out. Returns the event that
    /// reports a rollback.
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
                match self.files.save_state(&next) {
                    Ok(()) => {
                        self.set_state(next);
                        crash_point("confirmed");
                        tracing::info!(plugin, "update: version confirmed");
                        let version = registry.plugin(plugin).map(|p| p.info().version.clone());
                        install::confirmed(plugin, version.as_deref())
                    }
                    Err(error) => {
                        tracing::error!(plugin, %error, "update: cannot save the confirmation (stays on trial)");
                        Vec::new()
                    }
                }
            }
            Verdict::RollBack => {
                let from = registry.plugin(plugin).map(|p| p.info().version.clone());
                match self.roll_back(plugin, registry) {
                    Ok((to, _)) => {
                        tracing::warn!(plugin, %to, "update: version on trial failed, rolled back");
                        install::rolled_back(plugin, from.as_deref(), &to, result)
                    }
                    Err(error) => {
                        tracing::error!(plugin, %error, "update: rollback failed");
                        Vec::new()
                    }
                }
            }
        }
    }

    /// True while `plugin` has a version on trial.
    pub fn on_trial(&self, plugin: &str) -> bool {
        self.trials.contains_key(plugin)
    }

    /// Back to the previous version: `(to, from)` versions.
    pub(super) fn roll_back(
        &mut self,
        name: &str,
        registry: &mut Registry,
    ) -> Result<(String, String), Refusal> {
        let from = install::current_slot(&self.state, name, registry);
        let mut next = self.state.clone();
        let (previous, dropped) = next
            .roll_back(name)
            .ok_or_else(|| Refusal::NoPrevious(name.into()))?;
        let plugin = self.load(name, &previous).map_err(|e| {
            Refusal::InvalidModule(format!("the previous version does not load: {e}"))
        })?;
        self.files.save_state(&next).map_err(storage)?;
        self.set_state(next);
        self.trials.remove(name);
        // The previous version may claim commands the failed one dropped:
        // unload the failed one first.
        registry.uninstall(name);
        registry.install(plugin).map_err(|e| Refusal::Conflict {
            command: name.into(),
            owner: e.to_string(),
        })?;
        if let Some(dropped) = dropped {
            let _ = self.files.drop_source(&dropped);
        }
        Ok((
            previous.version,
            from.map(|f| f.version).unwrap_or_default(),
        ))
    }
}
