//! The dedupe memory: the last N final statuses by id, oldest forgotten
//! first. Bounded so a long-lived device does not grow without limit; the
//! same bound decides what compaction keeps in the journal.
//!
//! Each outcome also knows whether its final status reached the broker
//! (`Delivered` record); the undelivered ones are published again after a
//! restart.

use alloc::collections::BTreeMap;
use alloc::string::String;

use crate::status::Status;

#[derive(Debug, Clone)]
pub(super) struct Outcomes {
    capacity: usize,
    /// id -> (insertion stamp, final status, broker acked the status).
    by_id: BTreeMap<String, (u64, Status, bool)>,
    /// insertion stamp -> id, oldest first.
    order: BTreeMap<u64, String>,
    next_stamp: u64,
}

impl Outcomes {
    pub(super) fn new(capacity: usize) -> Self {
        Outcomes {
            capacity,
            by_id: BTreeMap::new(),
            order: BTreeMap::new(),
            next_stamp: 0,
        }
    }

    pub(super) fn get(&self, id: &str) -> Option<&Status> {
        self.by_id.get(id).map(|(_, s, _)| s)
    }

    pub(super) fn get_mut(&mut self, id: &str) -> Option<&mut Status> {
        self.by_id.get_mut(id).map(|(_, s, _)| s)
    }

    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Remembers `status` as the newest outcome, forgetting the oldest ones
    /// beyond the capacity.
    pub(super) fn remember(&mut self, status: Status) {
        self.forget(&status.id);
        if self.capacity == 0 {
            return;
        }
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.order.insert(stamp, status.id.clone());
        self.by_id.insert(status.id.clone(), (stamp, status, false));
        while self.by_id.len() > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.by_id.remove(&oldest);
        }
    }

    pub(super) fn forget(&mut self, id: &str) {
        if let Some((stamp, _, _)) = self.by_id.remove(id) {
            self.order.remove(&stamp);
        }
    }

    /// Marks the status of `id` delivered; true if it was remembered and
    /// not delivered before.
    pub(super) fn mark_delivered(&mut self, id: &str) -> bool {
        match self.by_id.get_mut(id) {
            Some((_, _, delivered)) if !*delivered => {
                *delivered = true;
                true
            }
            _ => false,
        }
    }

    /// Remembered statuses with their delivered flag, oldest first.
    pub(super) fn iter_delivery(&self) -> impl Iterator<Item = (&Status, bool)> {
        self.order
            .values()
            .filter_map(|id| self.by_id.get(id).map(|(_, s, d)| (s, *d)))
    }
}
