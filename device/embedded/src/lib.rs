//! The device loop for a microcontroller: the Linux host's counterpart,
//! `no_std` + `alloc`, with the same decisions.
//!
//! Everything that decides is shared: the [`Machine`] (envelopes,
//! scheduler, commit pipeline, built-ins, full storage), the [`Registry`]
//! and whatever engine its plugins were loaded with (wasmi). This loop only
//! carries out the machine's effects, one after the other, on one thread:
//!
//! - `Append` / `Retry` / `Rewrite` / `Probe` go to the journal
//!   ([`Storage`]: the flash log on a device) and are reported back at once
//!   (a microcontroller has nothing to overlap a flash write with);
//! - `Start` runs the handler inline, so a call and its outcome happen in
//!   the same turn;
//! - `Publish` and `Ack` go to the [`Link`] (MQTT on a device, a script in
//!   the emulated one);
//! - `Upcoming` is ignored (no thread to prepare an install ahead);
//! - the update commands go to the [`Updates`] the device was given
//!   ([`updates::Updater`] on flash), which also judges each call of a
//!   version on trial; a device given none refuses them
//!   ([`UPDATES_UNSUPPORTED`]).
//!
//! Time is passed in (`now`, unix ms): the caller owns the clock and sleeps
//! until [`Device::next_wakeup`]. A storage failure other than a full
//! medium stops the device ([`DeviceError::Storage`]), as on Linux: nothing
//! more is acknowledged, and a restart replays the journal.

#![no_std]

extern crate alloc;

pub mod outbox;
#[cfg(feature = "wasmi")]
pub mod plugins;
pub mod scenario;
pub mod updates;

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use relay_core::journal::record::Record;
use relay_core::journal::{ReplayReport, Storage};
use relay_core::machine::{Effect, Listed, Machine, MachineOptions, Outgoing};
use relay_core::plugin::{Event, Invocation, Role};
use relay_core::registry::Registry;
use relay_core::scheduler::{AttemptResult, Policy};
use relay_core::status::{Code, Status};

/// Why `_install`, `_rollback` and `_remove` are refused by a device built
/// without an update partition.
pub const UPDATES_UNSUPPORTED: &str =
    "this device has no update partition: plugin updates over the air are off";

/// What carries out the update commands and judges versions on trial
/// ([`updates::Updater`]; a trait so the loop does not carry its flash type).
pub trait Updates {
    /// One `_install`, `_rollback` or `_remove`.
    fn run(&mut self, registry: &mut Registry, cmd: &Invocation) -> (AttemptResult, Vec<Event>);
    /// After a call `plugin` ran: the events its trial's verdict calls for.
    fn after_call(
        &mut self,
        registry: &mut Registry,
        plugin: &str,
        result: &AttemptResult,
    ) -> Vec<Event>;
    /// Each plugin's update state, for `_plugins`.
    fn listed(&self, infos: Vec<relay_core::plugin::PluginInfo>) -> Vec<Listed>;
}

/// Finished commands a microcontroller remembers, for dedupe.
pub const REMEMBERED_OUTCOMES: usize = 64;

/// The scheduler policy of a microcontroller: the Linux host's retries (5 s
/// apart, at most 5 attempts) with [`REMEMBERED_OUTCOMES`] remembered
/// outcomes instead of 1,024. Each costs about 750 bytes of heap (its final
/// status, reply included) and as much journal on flash; a duplicate
/// delivery comes while its command is among the broker's few unacked
/// messages or just after, long before 64 more commands have finished.
pub fn policy() -> Policy {
    Policy {
        remembered_outcomes: REMEMBERED_OUTCOMES,
        ..Policy::default()
    }
}

/// Where statuses and events go, and where deliveries are acknowledged.
pub trait Link {
    /// What acknowledges one delivery (an MQTT packet id).
    type Token;
    fn publish(&mut self, message: Outgoing);
    fn ack(&mut self, token: Self::Token);
}

/// Why the device stopped.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError<E: core::fmt::Debug + core::fmt::Display> {
    /// The journal failed (not for lack of space): restart and replay.
    #[error("journal failed: {0}")]
    Storage(E),
}

/// What replaying the journal found at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    pub report: ReplayReport,
    /// Records that did not decode (skipped, as on Linux).
    pub undecodable: usize,
}

/// The device: its machine, journal and handlers. See the crate doc.
pub struct Device<S: Storage, L: Link> {
    machine: Machine<L::Token>,
    storage: S,
    registry: Registry,
    effects: Vec<Effect<L::Token>>,
    /// Compaction was asked for and not done yet.
    compaction_asked: bool,
    updates: Option<alloc::boxed::Box<dyn Updates>>,
}

impl<S: Storage, L: Link> Device<S, L> {
    /// Replays `storage` and rebuilds the machine from it; re-runs and
    /// re-publications the restart calls for happen at the first
    /// [`Device::tick`].
    pub fn open(
        mut storage: S,
        registry: Registry,
        policy: Policy,
        options: MachineOptions,
        now: u64,
    ) -> Result<(Self, Restored), DeviceError<S::Error>> {
        let mut records = Vec::new();
        let mut undecodable = 0;
        let report = storage
            .replay(&mut |bytes| match Record::decode(bytes) {
                Ok(record) => records.push(record),
                Err(_) => undecodable += 1,
            })
            .map_err(DeviceError::Storage)?;
        let machine = Machine::restore(policy, records, options, now);
        let device = Device {
            machine,
            storage,
            registry,
            effects: Vec::new(),
            compaction_asked: false,
            updates: None,
        };
        Ok((
            device,
            Restored {
                report,
                undecodable,
            },
        ))
    }

    /// Carries out update commands with `updates` (see [`Updates`]).
    pub fn with_updates(mut self, updates: alloc::boxed::Box<dyn Updates>) -> Self {
        self.updates = Some(updates);
        self
    }

    /// A delivery on the command topic whose last level gave `role`.
    pub fn on_message(
        &mut self,
        role: Result<Role, &str>,
        payload: &[u8],
        token: L::Token,
        now: u64,
        link: &mut L,
    ) -> Result<(), DeviceError<S::Error>> {
        let (registry, updates) = (&self.registry, &self.updates);
        self.machine.on_message(role, payload, token, now, || {
            let infos = registry.plugins().cloned().collect();
            match updates {
                Some(updates) => updates.listed(infos),
                None => infos.into_iter().map(Listed::from).collect(),
            }
        });
        self.tick(now, link)
    }

    /// The broker acknowledged the final status of `id`.
    pub fn on_delivered(
        &mut self,
        id: &str,
        now: u64,
        link: &mut L,
    ) -> Result<(), DeviceError<S::Error>> {
        self.machine.on_delivered(id, now);
        self.tick(now, link)
    }

    /// Ends a turn at `now` (and wakes the device when
    /// [`Device::next_wakeup`] has passed): carries out everything the
    /// machine decided, until it decides nothing more.
    pub fn tick(&mut self, now: u64, link: &mut L) -> Result<(), DeviceError<S::Error>> {
        loop {
            self.machine.tick(now);
            let mut effects = core::mem::take(&mut self.effects);
            self.machine.take_effects(&mut effects);
            if effects.is_empty() {
                self.effects = effects;
                return Ok(());
            }
            for effect in effects.drain(..) {
                self.carry_out(effect, now, link)?;
            }
            self.effects = effects;
        }
    }

    fn carry_out(
        &mut self,
        effect: Effect<L::Token>,
        now: u64,
        link: &mut L,
    ) -> Result<(), DeviceError<S::Error>> {
        match effect {
            Effect::Append {
                records, covered, ..
            }
            | Effect::Retry { records, covered } => {
                let written = records
                    .iter()
                    .try_for_each(|r| self.storage.append(r))
                    .and_then(|()| self.storage.sync());
                self.committed(written, covered, now)?;
            }
            Effect::Rewrite { records, covered } => {
                let written = self.storage.rewrite(&mut records.iter().map(Vec::as_slice));
                self.compaction_asked = false;
                self.committed(written, covered, now)?;
            }
            Effect::Probe => {
                self.storage
                    .restore_reserve()
                    .map_err(DeviceError::Storage)?;
                let full = self.storage.reserve_in_use();
                self.machine.on_probed(full, now);
            }
            Effect::Publish(message) => link.publish(message),
            Effect::Ack(token) => link.ack(token),
            Effect::Start(invocation) if relay_core::ota::is_update_command(&invocation.name) => {
                let (result, events) = match &mut self.updates {
                    Some(updates) => updates.run(&mut self.registry, &invocation),
                    None => (
                        AttemptResult::Rejected {
                            code: Code::UnknownCommand,
                            message: UPDATES_UNSUPPORTED.to_string(),
                        },
                        Vec::new(),
                    ),
                };
                self.machine
                    .on_attempt_done_by(&invocation.id, result, events, None, now);
            }
            Effect::Start(invocation) => {
                let plugin = match self.registry.resolve(&invocation.name, invocation.role) {
                    Ok((_, relay_core::registry::Owner::Plugin(name))) => Some(name.clone()),
                    _ => None,
                };
                let ran_by = self
                    .registry
                    .plugin_version_for(&invocation.name, invocation.role);
                let (result, mut events) =
                    AttemptResult::from_dispatch(self.registry.dispatch(&invocation));
                let refused = matches!(result, AttemptResult::Rejected { .. });
                let ran_by = ran_by.filter(|_| !refused);
                if let (Some(updates), Some(plugin), false) = (&mut self.updates, plugin, refused) {
                    events.extend(updates.after_call(&mut self.registry, &plugin, &result));
                }
                self.machine
                    .on_attempt_done_by(&invocation.id, result, events, ran_by, now);
            }
            Effect::Upcoming(_) => {}
        }
        Ok(())
    }

    fn committed(
        &mut self,
        written: Result<(), S::Error>,
        covered: u64,
        now: u64,
    ) -> Result<(), DeviceError<S::Error>> {
        match written {
            Ok(()) => {
                self.machine.on_durable(covered, now);
                self.machine.on_space(self.storage.reserve_in_use(), now);
                if !self.compaction_asked && self.wants_compaction() {
                    self.compaction_asked = true;
                    self.machine.request_compaction();
                }
                Ok(())
            }
            Err(e) if self.storage.is_no_space(&e) => {
                self.machine.on_append_failed(now);
                Ok(())
            }
            Err(e) => Err(DeviceError::Storage(e)),
        }
    }

    fn wants_compaction(&self) -> bool {
        self.storage.wants_compaction()
    }

    /// When the device must be ticked again (unix ms), if ever.
    pub fn next_wakeup(&self, now: u64) -> Option<u64> {
        self.machine.next_wakeup(now)
    }

    /// The last known status of request `id` (what `_status` answers).
    pub fn status_of(&self, id: &str) -> Option<Status> {
        self.machine.status_of(id)
    }

    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The journal back (a simulated reset: open it again).
    pub fn into_storage(self) -> S {
        self.storage
    }

    /// A short description of the machine's state (logs).
    pub fn describe(&self) -> String {
        let s = self.machine.state();
        alloc::format!(
            "pending {} remembered {} durable {}/{}",
            s.pending,
            s.remembered,
            s.records_durable,
            s.records_emitted
        )
        .to_string()
    }
}
