//! `accepted` statuses held back under load, between the durability gates
//! (`pipeline`) and the publisher.
//!
//! Every status costs the broker a publish in and one out per subscriber,
//! and on a busy device the `accepted` of a command queued behind others is
//! superseded a few milliseconds later by its `running` or final status. So
//! while a command waits behind another, its `accepted` is held here, and
//! dropped when a later status of the same command is published first; one
//! that is still held after [`HOLD`] is published then (an app waiting for
//! `accepted` learns it late, never not at all, unless a later status says
//! more). Under sustained load this nearly halves the statuses per command
//! (about 1.95 -> 1.1), which is what the broker's capacity was spent on
//! (`docs/benchmarks.md`). An idle device's command is not queued, so its
//! `accepted` is never held. The protocol allows it: under load an
//! intermediate status may be coalesced into the next one; a final status
//! never is (only `accepted` is held here).
//!
//! Pure bookkeeping with the caller's clock (tokio's, virtual in tests).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use relay_core::status::Status;
use tokio::time::Instant;

/// Longest an `accepted` status is held.
pub const HOLD: Duration = Duration::from_secs(1);

/// See the module doc.
#[derive(Debug, Default)]
pub struct Held {
    /// Command id -> (hold number, status).
    by_id: HashMap<String, (u64, Status)>,
    /// (since, hold number, id), oldest first; entries whose hold number no
    /// longer matches `by_id` were superseded.
    order: VecDeque<(Instant, u64, String)>,
    next: u64,
}

impl Held {
    /// Holds `status` from `now` on.
    pub fn hold(&mut self, status: Status, now: Instant) {
        self.next += 1;
        self.order.push_back((now, self.next, status.id.clone()));
        self.by_id.insert(status.id.clone(), (self.next, status));
    }

    /// A later status of command `id` is being published: its held status
    /// is dropped. Returns whether one was.
    pub fn supersede(&mut self, id: &str) -> bool {
        self.by_id.remove(id).is_some()
    }

    /// The held statuses older than [`HOLD`] at `now`, oldest first.
    pub fn due(&mut self, now: Instant) -> Vec<Status> {
        let mut due = Vec::new();
        while let Some(since) = self.oldest() {
            if now.saturating_duration_since(since) < HOLD {
                break;
            }
            if let Some((_, _, id)) = self.order.pop_front() {
                due.extend(self.by_id.remove(&id).map(|(_, status)| status));
            }
        }
        due
    }

    /// When the oldest held status falls due.
    pub fn next_due(&mut self) -> Option<Instant> {
        self.oldest().map(|since| since + HOLD)
    }

    /// Since when the oldest live status is held (superseded entries at the
    /// front of `order` are dropped on the way).
    fn oldest(&mut self) -> Option<Instant> {
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
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Nothing is held.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_core::status::State;

    fn accepted(id: &str) -> Status {
        Status::new(id, "n", State::Accepted, 0, 0)
    }

    fn ids(statuses: Vec<Status>) -> Vec<String> {
        statuses.into_iter().map(|s| s.id).collect()
    }

    #[test]
    fn superseded_statuses_are_dropped_and_the_rest_fall_due_in_order() {
        let t0 = Instant::now();
        let mut held = Held::default();
        held.hold(accepted("a"), t0);
        held.hold(accepted("b"), t0 + Duration::from_millis(10));
        held.hold(accepted("c"), t0 + Duration::from_millis(20));
        assert_eq!(held.len(), 3);
        assert!(held.supersede("a"));
        assert!(!held.supersede("a"), "only once");
        assert!(!held.supersede("unknown"));
        assert_eq!(held.next_due(), Some(t0 + Duration::from_millis(10) + HOLD));
        assert!(held.due(t0 + HOLD).is_empty(), "b is not due yet");
        assert_eq!(ids(held.due(t0 + HOLD + Duration::from_millis(15))), ["b"]);
        assert_eq!(held.next_due(), Some(t0 + Duration::from_millis(20) + HOLD));
        assert_eq!(ids(held.drain()), ["c"]);
        assert!(held.is_empty());
        assert_eq!(held.next_due(), None);
    }

    #[test]
    fn a_command_held_again_counts_from_its_latest_hold() {
        let t0 = Instant::now();
        let mut held = Held::default();
        held.hold(accepted("a"), t0);
        assert!(held.supersede("a"));
        // A duplicate of the same command, accepted again later.
        held.hold(accepted("a"), t0 + Duration::from_millis(500));
        assert!(held.due(t0 + HOLD).is_empty());
        assert_eq!(ids(held.due(t0 + Duration::from_millis(500) + HOLD)), ["a"]);
        assert!(held.is_empty());
    }
}
