//! The machine on a full disk: what it does when the journal cannot grow.
//!
//! A PUBACK promises that the command is journaled, and a status that its
//! records are; neither may be given for what the disk did not take. Two
//! signals come from the driver:
//!
//! - **The reserve is in use** ([`Machine::on_space`] after a commit): the
//!   disk gave no more and the journal is writing into the room it keeps in
//!   reserve (`relay_store::space`). The machine stops reading new
//!   commands (the broker keeps them unacknowledged: the MQTT in-flight
//!   window bounds how many the link holds), so that room is left to the
//!   records of the commands already accepted, which keep running and
//!   reporting.
//! - **An append failed for lack of space** ([`Machine::on_append_failed`]):
//!   not even the reserve held it. The journal keeps the refused records in
//!   order and appends nothing until [`Effect::Retry`]; their PUBACKs and
//!   statuses wait (gated as always), nothing is lost, and every
//!   `retry_ms` the machine retries, with every earlier commit settled first.
//!
//! Either way the device is **degraded**: a retained health message says so
//! (reason `storage_full`), and every `retry_ms` an [`Effect::Probe`] asks
//! the journal to make its reserve whole again. When a commit or a probe
//! finds the reserve whole, the device is ok again, says so, and reads the
//! commands the broker kept, in their arrival order, behind the ones it
//! accepted before (FIFO holds). All timing is the virtual time passed in.

use alloc::vec::Vec;

use super::health::{Health, HealthReason, HealthState};
use super::{Effect, Machine, Outgoing};

/// Default interval between retries and probes while the disk is full.
pub const STORAGE_RETRY_MS: u64 = 1000;

/// The machine's view of its storage.
#[derive(Debug, Default)]
pub(super) struct Space {
    degraded: Option<Degraded>,
    /// A probe was handed out and has not come back.
    probing: bool,
    /// A retry was handed out and has not come back.
    retrying: bool,
    /// A health message went out since start.
    announced: bool,
}

#[derive(Debug)]
struct Degraded {
    /// Since when (wall ms).
    since: u64,
    /// An append failed: nothing is submitted but the retry.
    blocked: bool,
    /// The next retry (blocked) or probe (monotonic ms).
    next_try: u64,
}

impl Space {
    pub(super) fn degraded(&self) -> bool {
        self.degraded.is_some()
    }
}

impl<A> Machine<A> {
    /// An `Append`, `Retry` or `Rewrite` failed because the storage is out
    /// of space (any other journal failure is fatal: the driver stops).
    pub fn on_append_failed(&mut self, now: u64) {
        let mono = self.clock.advance(now);
        self.commits_in_flight = self.commits_in_flight.saturating_sub(1);
        self.space.retrying = false;
        let next_try = mono + self.options.storage_retry_ms;
        match &mut self.space.degraded {
            Some(degraded) => {
                degraded.blocked = true;
                degraded.next_try = next_try;
            }
            None => {
                crate::diag::event!(warn, "journal: no space for an append; new commands wait");
                self.space.degraded = Some(Degraded {
                    since: now,
                    blocked: true,
                    next_try,
                });
                self.publish_health(now);
            }
        }
    }

    /// After a commit: whether the journal is writing into its reserve.
    pub fn on_space(&mut self, reserve_in_use: bool, now: u64) {
        let mono = self.clock.advance(now);
        match &self.space.degraded {
            None if reserve_in_use => {
                crate::diag::event!(warn, "journal: the disk is full; new commands wait");
                self.space.degraded = Some(Degraded {
                    since: now,
                    blocked: false,
                    next_try: mono + self.options.storage_retry_ms,
                });
                self.publish_health(now);
            }
            None if !self.space.announced => self.publish_health(now),
            Some(degraded) if !reserve_in_use && !degraded.blocked => {
                crate::diag::event!(info, "journal: space returned; taking new commands again");
                self.space.degraded = None;
                self.publish_health(now);
            }
            _ => {}
        }
    }

    /// An [`Effect::Probe`] came back; `reserve_in_use` as for
    /// [`Machine::on_space`].
    pub fn on_probed(&mut self, reserve_in_use: bool, now: u64) {
        let mono = self.clock.advance(now);
        self.space.probing = false;
        let retry_ms = self.options.storage_retry_ms;
        if let Some(degraded) = &mut self.space.degraded {
            degraded.next_try = mono + retry_ms;
        }
        self.on_space(reserve_in_use, now);
    }

    /// A commit came back durable: a retry that succeeded unblocks.
    pub(super) fn space_durable(&mut self, mono: u64) {
        if core::mem::take(&mut self.space.retrying) {
            let retry_ms = self.options.storage_retry_ms;
            if let Some(degraded) = &mut self.space.degraded {
                degraded.blocked = false;
                degraded.next_try = mono + retry_ms;
            }
        }
    }

    /// Submission while degraded: the retry when one is due, a probe when
    /// one is due. `true`: submit nothing else now.
    pub(super) fn submit_degraded(&mut self, mono: u64) -> bool {
        let Some(degraded) = &self.space.degraded else {
            return false;
        };
        let due = mono >= degraded.next_try;
        if degraded.blocked {
            if due && self.commits_in_flight == 0 && !self.space.retrying {
                let (records, covered) = self
                    .pipeline
                    .take_batch()
                    .unwrap_or_else(|| (Vec::new(), self.pipeline.emitted()));
                self.lazy_since = None;
                self.commits_in_flight += 1;
                self.space.retrying = true;
                self.effects.push(Effect::Retry { records, covered });
            }
            return true;
        }
        if due && !self.space.probing {
            self.space.probing = true;
            self.effects.push(Effect::Probe);
        }
        false
    }

    /// The start-up probe: a first health message once the journal answers.
    pub(super) fn probe_at_start(&mut self) {
        self.space.probing = true;
        self.effects.push(Effect::Probe);
    }

    /// When the next retry or probe is due (wall ms), if one will be.
    pub(super) fn space_wakeup(&self, now: u64) -> Option<u64> {
        let degraded = self.space.degraded.as_ref()?;
        let waits = if degraded.blocked {
            self.commits_in_flight == 0 && !self.space.retrying
        } else {
            !self.space.probing
        };
        waits.then(|| self.clock.to_wall(degraded.next_try, now))
    }

    fn publish_health(&mut self, now: u64) {
        self.space.announced = true;
        let health = match &self.space.degraded {
            Some(degraded) => Health {
                state: HealthState::Degraded,
                reason: Some(HealthReason::StorageFull),
                message: Some(
                    "the journal's disk is full: new commands are not acknowledged (the broker \
                     keeps them) until space returns; accepted commands keep running"
                        .into(),
                ),
                since: degraded.since,
                pending: self.scheduler.pending_len() as u64,
                unacked: self.pipeline.acks_waiting() as u64,
                at: now,
            },
            None => Health {
                state: HealthState::Ok,
                reason: None,
                message: None,
                since: now,
                pending: self.scheduler.pending_len() as u64,
                unacked: self.pipeline.acks_waiting() as u64,
                at: now,
            },
        };
        self.effects.push(Effect::Publish(Outgoing::Health(health)));
    }
}
