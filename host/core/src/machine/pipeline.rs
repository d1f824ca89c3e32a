//! Durability gates: what may happen only after some journal records are on
//! disk (a PUBACK, a status, a careful start), kept in one ordered queue.
//!
//! Between the scheduler (step 3) and the network, this is what turns "every
//! record before it is durable" into code without ever awaiting one fsync at
//! a time. Every record the scheduler emits is numbered (`emitted`); records
//! collect in an outbox that the machine submits as **one** group-commit
//! append per turn of the driver's loop, so the `Accepted` and `Started` records of a
//! command that starts on arrival share a batch (one fsync). An action that
//! needs the first `n` records durable waits here as `(n, action)`; when a
//! journal ticket resolves, `durable` advances and the ready prefix of the
//! queue is released, in order. Thresholds are non-decreasing in queue order
//! (each is at most the number of records emitted so far), so releasing a
//! prefix keeps PUBACKs in arrival order and statuses in emission order.
//!
//! **Lazy records.** An outcome record (`Finished`, `Delivered`) gates
//! nothing urgent: a final status waits only for the records before its
//! `Finished`. Submitting it alone would cost an fsync of its own, and the
//! next command's `Accepted` would queue behind that fsync. So lazy records
//! may wait in the outbox ([`Pipeline::must_submit`] is false) until an
//! eager record joins them or the machine's short linger ends; a crash in
//! that window re-runs the command that just finished, the same as a crash
//! during its fsync would.
//!
//! Pure bookkeeping, no I/O; `A` is the transport's ack token.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

use crate::scheduler::Start;
use crate::status::Status;

/// Something that waits for durability.
#[derive(Debug)]
pub enum Gated<A> {
    /// Let this message's PUBACK go.
    Ack(A),
    /// Publish this status.
    Publish(Status),
    /// Publish this event (emitted by a call; released with its final status).
    Event { name: String, payload: Vec<u8> },
    /// Run this attempt (only `persist_first` starts wait here).
    Start(Start),
}

/// See the module doc.
#[derive(Debug)]
pub struct Pipeline<A> {
    /// Records emitted so far (the outbox included).
    emitted: u64,
    /// Records known durable.
    durable: u64,
    /// Records handed to the journal (submitted or superseded).
    submitted: u64,
    /// Records emitted but not yet submitted to the journal.
    outbox: Vec<Vec<u8>>,
    /// The outbox holds a record that must not wait (not lazy).
    outbox_urgent: bool,
    waiting: VecDeque<(u64, Gated<A>)>,
}

impl<A> Default for Pipeline<A> {
    fn default() -> Self {
        Pipeline {
            emitted: 0,
            durable: 0,
            submitted: 0,
            outbox: Vec::new(),
            outbox_urgent: false,
            waiting: VecDeque::new(),
        }
    }
}

impl<A> Pipeline<A> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of records emitted so far.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    /// Number of records known durable.
    pub fn durable(&self) -> u64 {
        self.durable
    }

    /// Queues one encoded record for the next submission.
    pub fn record(&mut self, bytes: Vec<u8>) {
        self.outbox.push(bytes);
        self.outbox_urgent = true;
        self.emitted += 1;
    }

    /// Queues a lazy record (see the module doc): it may wait for the next
    /// eager record or the driver's linger.
    pub fn record_lazy(&mut self, bytes: Vec<u8>) {
        self.outbox.push(bytes);
        self.emitted += 1;
    }

    /// The outbox must be submitted now: it holds an eager record, or a
    /// gated action waits for one of its records.
    pub fn must_submit(&self) -> bool {
        !self.outbox.is_empty()
            && (self.outbox_urgent
                || self
                    .waiting
                    .back()
                    .is_some_and(|(n, _)| *n > self.submitted))
    }

    /// The outbox holds records (lazy or not).
    pub fn has_outbox(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// `gated` may happen once the first `after` records are durable. Ready
    /// items come back from [`Pipeline::release`], in order.
    pub fn gate(&mut self, after: u64, gated: Gated<A>) {
        debug_assert!(
            after <= self.emitted,
            "cannot wait for a record not emitted yet"
        );
        debug_assert!(
            self.waiting.back().is_none_or(|(n, _)| *n <= after),
            "gates must be ordered"
        );
        self.waiting.push_back((after, gated));
    }

    /// Takes the outbox for one journal append; `covered` is the record
    /// count that becomes durable when its ticket resolves.
    pub fn take_batch(&mut self) -> Option<(Vec<Vec<u8>>, u64)> {
        if self.outbox.is_empty() {
            return None;
        }
        self.outbox_urgent = false;
        self.submitted = self.emitted;
        Some((core::mem::take(&mut self.outbox), self.emitted))
    }

    /// Records up to `covered` are durable.
    pub fn durable_up_to(&mut self, covered: u64) {
        self.durable = self.durable.max(covered);
    }

    /// Everything whose records are durable, in gate order.
    pub fn release(&mut self) -> Vec<Gated<A>> {
        let mut ready = Vec::new();
        while self
            .waiting
            .front()
            .is_some_and(|(n, _)| *n <= self.durable)
        {
            if let Some((_, gated)) = self.waiting.pop_front() {
                ready.push(gated);
            }
        }
        ready
    }

    /// PUBACKs waiting for durability: messages received and not acked.
    pub fn acks_waiting(&self) -> usize {
        self.waiting
            .iter()
            .filter(|(_, gated)| matches!(gated, Gated::Ack(_)))
            .count()
    }

    /// Items still waiting for durability.
    #[cfg(test)]
    pub fn waiting_len(&self) -> usize {
        self.waiting.len()
    }

    /// True when nothing is waiting and nothing is left to submit.
    #[cfg(test)]
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.outbox.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::State;
    use alloc::format;

    fn status(id: &str) -> Gated<()> {
        Gated::Publish(Status::new(id, "n", State::Accepted, 0, 0))
    }

    fn ids(items: Vec<Gated<()>>) -> Vec<String> {
        items
            .into_iter()
            .map(|g| match g {
                Gated::Publish(s) => s.id,
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn releases_in_order_once_durable() {
        let mut p = Pipeline::new();
        p.gate(0, status("free"));
        p.record(b"a".to_vec());
        p.gate(1, status("a"));
        p.record(b"b".to_vec());
        p.record(b"c".to_vec());
        p.gate(3, status("c"));
        assert_eq!(ids(p.release()), ["free"]);
        let (batch, covered) = p.take_batch().unwrap();
        assert_eq!((batch.len(), covered), (3, 3));
        assert!(p.take_batch().is_none());
        p.durable_up_to(1);
        assert_eq!(ids(p.release()), ["a"]);
        assert_eq!(p.waiting_len(), 1);
        p.durable_up_to(3);
        assert_eq!(ids(p.release()), ["c"]);
        assert!(p.is_idle());
    }

    #[test]
    fn lazy_records_wait_unless_something_needs_them() {
        let mut p = Pipeline::new();
        p.record(b"accepted".to_vec());
        p.gate(1, status("a"));
        assert!(p.must_submit(), "an eager record goes at once");
        p.take_batch().unwrap();
        // An outcome whose status waits only for the records before it.
        p.gate(1, status("final"));
        p.record_lazy(b"finished".to_vec());
        assert!(p.has_outbox() && !p.must_submit(), "a lazy record may wait");
        // The next command's record takes it along, one batch.
        p.record(b"accepted-2".to_vec());
        assert!(p.must_submit());
        let (batch, covered) = p.take_batch().unwrap();
        assert_eq!((batch.len(), covered), (2, 3));
        // A lazy record something waits for (a PUBACK after a rejection) goes at once.
        p.record_lazy(b"finished-2".to_vec());
        assert!(!p.must_submit());
        p.gate(4, status("ack"));
        assert!(p.must_submit());
    }
}
