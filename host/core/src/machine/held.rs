//! `accepted` statuses held back under load, between the durability gates
//! (`pipeline`) and the publish effects.
//!
//! Every status costs the broker a publish in and one out per subscriber,
//! and on a busy device the `accepted` of a command queued behind others is
//! superseded a few milliseconds later by its `running` or final status. So
//! while a command waits behind another, its `accepted` is held here, and
//! dropped when a later status of the same command is published first; one
//! that is still held after [`HOLD_MS`] is published then (an app waiting for
//! `accepted` learns it late, never not at all, unless a later status says
//! more). Under sustained load this nearly halves the statuses per command
//! (about 1.95 -> 1.1), which is what the broker's capacity was spent on
//! (`docs/benchmarks.md`). An idle device's command is not queued, so its
//! `accepted` is never held. The protocol allows it: under load an
//! intermediate status may be coalesced into the next one; a final status
//! never is (only `accepted` is held here).
//!
//! Pure bookkeeping; time is the machine's monotonic milliseconds.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;

use crate::status::Status;

/// Longest an `accepted` status is held, in milliseconds.
pub const HOLD_MS: u64 = 1000;

/// When a status held since `since` falls due. Milliseconds are whole: a
/// status held at x.9 ms must not go out at x+1000.0, before a full hold.
fn due_at(since: u64) -> u64 {
    since + HOLD_MS + 1
}

/// See the module doc.
#[derive(Debug, Default)]
pub struct Held {
    /// Command id -> (hold number, status).
    by_id: BTreeMap<String, (u64, Status)>,
    /// (since, hold number, id), oldest first; entries whose hold number no
    /// longer matches `by_id` were superseded.
    order: VecDeque<(u64, u64, String)>,
    next: u64,
}

impl Held {
    /// Holds `status` from `now` on.
    pub fn hold(&mut self, status: Status, now: u64) {
        self.next += 1;
        self.order.push_back((now, self.next, status.id.clone()));
        self.by_id.insert(status.id.clone(), (self.next, status));
    }

    /// A later status of command `id` is being published: its held status
    /// is dropped. Returns whether one was.
    pub fn supersede(&mut self, id: &str) -> bool {
        self.by_id.remove(id).is_some()
    }

    /// The held statuses older than [`HOLD_MS`] at `now`, oldest first.
    pub fn due(&mut self, now: u64) -> Vec<Status> {
        let mut due = Vec::new();
        while let Some(since) = self.oldest() {
            if now < due_at(since) {
                break;
            }
            if let Some((_, _, id)) = self.order.pop_front() {
                due.extend(self.by_id.remove(&id).map(|(_, status)| status));
            }
        }
        due
    }

    /// When the oldest held status falls due.
    pub fn next_due(&self) -> Option<u64> {
        self.order
            .iter()
            .find(|(_, n, id)| self.by_id.get(id).is_some_and(|(m, _)| m == n))
            .map(|(since, _, _)| due_at(*since))
    }

    /// Since when the oldest live status is held (superseded entries at the
    /// front of `order` are dropped on the way).
    fn oldest(&mut self) -> Option<u64> {
        while let Some((since, n, id)) = self.order.front() {
            if self.by_id.get(id).is_some_and(|(m, _)| m == n) {
                return Some(*since);
            }
            self.order.pop_front();
        }
        None
    }

    /// Every held status, oldest first (shutdown: they are still true).
    pub fn drain(&mut self) -> Vec<Status> {
        let mut all = Vec::new();
        while self.oldest().is_some() {
            if let Some((_, _, id)) = self.order.pop_front() {
                all.extend(self.by_id.remove(&id).map(|(_, status)| status));
            }
        }
        all
    }

    /// Statuses held now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Nothing is held.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::State;

    fn accepted(id: &str) -> Status {
        Status::new(id, "n", State::Accepted, 0, 0)
    }

    fn ids(statuses: Vec<Status>) -> Vec<String> {
        statuses.into_iter().map(|s| s.id).collect()
    }

    #[test]
    fn superseded_statuses_are_dropped_and_the_rest_fall_due_in_order() {
        let t0 = 1_000_000u64;
        let mut held = Held::default();
        held.hold(accepted("a"), t0);
        held.hold(accepted("b"), t0 + 10);
        held.hold(accepted("c"), t0 + 20);
        assert_eq!(held.len(), 3);
        assert!(held.supersede("a"));
        assert!(!held.supersede("a"), "only once");
        assert!(!held.supersede("unknown"));
        assert_eq!(held.next_due(), Some(t0 + 10 + HOLD_MS + 1));
        assert!(held.due(t0 + HOLD_MS).is_empty(), "b is not due yet");
        assert_eq!(ids(held.due(t0 + HOLD_MS + 15)), ["b"]);
        assert_eq!(held.next_due(), Some(t0 + 20 + HOLD_MS + 1));
        assert_eq!(ids(held.drain()), ["c"]);
        assert!(held.is_empty());
        assert_eq!(held.next_due(), None);
    }

    #[test]
    fn a_command_held_again_counts_from_its_latest_hold() {
        let t0 = 1_000_000u64;
        let mut held = Held::default();
        held.hold(accepted("a"), t0);
        assert!(held.supersede("a"));
        // A duplicate of the same command, accepted again later.
        held.hold(accepted("a"), t0 + 500);
        assert!(held.due(t0 + HOLD_MS).is_empty());
        assert!(held.due(t0 + 500 + HOLD_MS).is_empty(), "a full hold first");
        assert_eq!(ids(held.due(t0 + 500 + HOLD_MS + 1)), ["a"]);
        assert!(held.is_empty());
    }
}
