//! The machine's vocabulary: its options, the effects it returns, its
//! counters and state snapshot, and the monotonic clock it derives from the
//! wall time it is given.

use alloc::string::String;
use alloc::vec::Vec;

use super::builtins::BuiltinAccess;
use crate::envelope::EnvelopeLimits;
use crate::plugin::Invocation;

use super::outgoing::Outgoing;

/// How long lazy records (outcomes, see `pipeline`) may wait for an eager
/// record to share its fsync before they are submitted alone. A crash in
/// this window re-runs the command that just finished (as a crash during
/// its fsync would); under traffic the next command comes much sooner.
pub const LAZY_LINGER_MS: u64 = 5;

/// Default journal size (records appended) that triggers a compaction.
pub const DEFAULT_COMPACT_AFTER_RECORDS: u64 = 20_000;
/// Default cap on pending commands before the device stops reading.
pub const DEFAULT_MAX_PENDING: usize = 10_000;

/// The machine's knobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineOptions {
    pub envelope_limits: EnvelopeLimits,
    /// Compact the journal after this many appended records (0: never).
    pub compact_after_records: u64,
    /// Stop reading new messages while this many commands are pending (the
    /// broker keeps the rest; nothing is acked that is not journaled).
    pub max_pending: usize,
    /// Which roles may call the built-ins.
    pub builtins: BuiltinAccess,
    /// While the disk is full: how often to retry a refused append and to
    /// check whether space returned (ms).
    pub storage_retry_ms: u64,
}

impl Default for MachineOptions {
    fn default() -> Self {
        MachineOptions {
            envelope_limits: EnvelopeLimits::default(),
            compact_after_records: DEFAULT_COMPACT_AFTER_RECORDS,
            max_pending: DEFAULT_MAX_PENDING,
            builtins: BuiltinAccess::default(),
            storage_retry_ms: super::space::STORAGE_RETRY_MS,
        }
    }
}

/// Something for the driver to carry out; `A` is the link's ack token.
#[derive(Debug)]
pub enum Effect<A> {
    /// Append these encoded records as one group commit, then report
    /// [`Machine::on_durable`](super::Machine::on_durable)`(covered)`. `idle`: no other commit is in
    /// flight and nothing waits behind the command at hand, so nothing can
    /// happen before this commit is done (a driver may write it inline
    /// instead of handing it to a writer thread).
    Append {
        records: Vec<Vec<u8>>,
        covered: u64,
        idle: bool,
    },
    /// Replace the journal by this snapshot (compaction), then report
    /// [`Machine::on_durable`](super::Machine::on_durable)`(covered)`. Every record it covers was
    /// submitted before it, so one skipped for lack of space loses nothing.
    Rewrite { records: Vec<Vec<u8>>, covered: u64 },
    /// After an append failed for lack of space: append what the journal
    /// refused since (it kept it, in order), then these records; report
    /// [`Machine::on_durable`](super::Machine::on_durable)`(covered)` or [`Machine::on_append_failed`](super::Machine::on_append_failed).
    Retry { records: Vec<Vec<u8>>, covered: u64 },
    /// Ask the journal to make its reserve whole again (space may have
    /// returned), then report [`Machine::on_probed`](super::Machine::on_probed).
    Probe,
    /// Publish a status or event (its records are durable).
    Publish(Outgoing),
    /// Acknowledge this delivery (its records are durable).
    Ack(A),
    /// Run this attempt on the handler.
    Start(Invocation),
    /// This command was queued and will start in its turn: a driver may
    /// prepare for it meanwhile (the Linux host receives an `_install`
    /// chunk, and verifies and compiles a complete bundle, ahead of its
    /// turn, so only the switch is left when it comes). Advisory: ignoring
    /// it changes nothing but timing. Emitted for `_install` only, when it
    /// is accepted and, after a restart, for those still pending.
    Upcoming(Invocation),
}

/// A snapshot of the machine's state (tests, diagnostics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineState {
    pub pending: usize,
    pub remembered: usize,
    pub running: Option<(String, u32)>,
    pub records_emitted: u64,
    pub records_durable: u64,
    /// The scheduler's next wake-up (unix ms).
    pub next_wakeup: Option<u64>,
    /// The journal's disk is full: new commands wait (see `space`).
    pub storage_full: bool,
}

/// Counters the machine keeps (the driver adds its own I/O counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Deliveries refused with a `rejected` status before or instead of queuing.
    pub rejected: u64,
    /// Intermediate statuses dropped because a later one superseded them.
    pub coalesced: u64,
    /// Journal compactions started.
    pub compactions: u64,
}

/// Milliseconds that never run backwards, derived from the wall clock the
/// caller passes in: the linger and the hold must end even if the wall
/// clock is set back (the scheduler keeps wall time: statuses carry it).
#[derive(Debug, Default)]
pub(super) struct Monotonic {
    last_wall: Option<u64>,
    now: u64,
}

impl Monotonic {
    pub(super) fn advance(&mut self, wall: u64) -> u64 {
        if let Some(last) = self.last_wall {
            self.now += wall.saturating_sub(last);
        }
        self.last_wall = Some(wall);
        self.now
    }

    /// The wall time at which monotonic time `at` is reached, seen from `wall`.
    pub(super) fn to_wall(&self, at: u64, wall: u64) -> u64 {
        wall.saturating_add(at.saturating_sub(self.now))
    }
}
