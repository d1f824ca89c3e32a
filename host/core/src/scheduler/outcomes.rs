//! The dedupe memory: the last N final statuses by id, oldest forgotten
//! first. Bounded so a long-lived device does not grow without limit; the
//! same bound decides what compaction keeps in the journal.

use alloc::collections::BTreeMap;
use alloc::string::String;

use crate::status::Status;

#[derive(Debug, Clone)]
pub(super) struct Outcomes {
    capacity: usize,
    /// id -> (insertion stamp, final status).
    by_id: BTreeMap<String, (u64, Status)>,
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
        self.by_id.get(id).map(|(_, s)| s)
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
        self.by_id.insert(status.id.clone(), (stamp, status));
        while self.by_id.len() > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.by_id.remove(&oldest);
        }
    }

    pub(super) fn forget(&mut self, id: &str) {
        if let Some((stamp, _)) = self.by_id.remove(id) {
            self.order.remove(&stamp);
        }
    }

    /// Remembered statuses, oldest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Status> {
        self.order.values().filter_map(|id| self.get(id))
    }
}
