//! Group commit: the front the tokio runtime writes the journal through.
//!
//! One fsync costs ~0.27 ms on our disk, so one fsync per command caps the
//! device at ~3,800 commands/s. [`Journal`] hands every submission to a
//! dedicated writer thread that owns the [`Storage`]; while that thread sits
//! in an fsync, new submissions pile up in its channel, and the next round
//! takes all of them: one write and one fsync for the whole batch. Under load
//! the batch grows by itself; idle, a lone command pays exactly one fsync and
//! waits for nothing else (no timer, no added latency).
//!
//! A caller with a thread of its own may instead commit in that thread when
//! nothing is queued ([`Journal::append_now`]): the same writer, under the
//! same lock, without the two hand-offs.
//!
//! Keeping fsync on its own thread also means it never blocks a tokio worker
//! (the runtime awaits a [`Ticket`], backed by a `tokio::sync::oneshot`, which
//! needs no particular runtime).
//!
//! # Ordering
//!
//! Requests are processed in submission order: records land in the log in
//! the order `append` was called, and tickets resolve in that order (a
//! ticket resolving means every record submitted before it is durable too).
//! A [`Journal::rewrite`] is ordered like an append: it replaces the log
//! after all earlier appends were committed, and later appends go to the new
//! log; the records it is given must therefore already reflect every record
//! submitted before it.
//!
//! # Failure
//!
//! A failed write or fsync fails every ticket of its batch and makes the
//! journal refuse everything afterwards (see the file backend's poisoning):
//! the runtime must stop acknowledging and restart from a replay.
//!
//! **Out of space** is different ([`JournalError::NoSpace`], see
//! `crate::space`): the storage rolled back to its last sync and stays
//! usable. The writer keeps the records of the failed appends, and of every
//! append submitted after them, in order ("parked"), fails their tickets,
//! and appends nothing more until [`Journal::retry`], which writes the parked
//! records first. So the log never gets a hole, and the caller decides when
//! to try again. A compaction that finds no room for its new file is
//! skipped (the old log is intact and complete): its ticket succeeds.
//! [`Journal::probe`] asks the storage to make its reserve whole again, and
//! [`Journal::reserve_in_use`] tells whether appends are using it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use relay_core::journal::{FrameError, Storage, MAX_RECORD_LEN};
use tokio::sync::oneshot;

pub use crate::ticket::Ticket;

/// Most requests one round takes from the channel; bounds a batch's memory
/// and keeps a flood from delaying the first waiters forever.
const MAX_BATCH_REQUESTS: usize = 4096;

/// Why a journal write did not become durable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    /// Refused at submission: nothing of that call was written.
    #[error("invalid journal record: {0}")]
    InvalidRecord(#[from] FrameError),
    /// The storage failed (now or in an earlier batch); the journal refuses
    /// all further work.
    #[error("journal storage failed: {0}")]
    Storage(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// The writer thread is gone (the journal was closed or it panicked).
    #[error("the journal writer has stopped")]
    Closed,
    /// The storage is out of space: nothing of this submission was written,
    /// the writer keeps it, and appends wait for [`Journal::retry`].
    #[error("no space for the journal: {0}")]
    NoSpace(#[source] Arc<dyn std::error::Error + Send + Sync>),
}

impl JournalError {
    /// See [`JournalError::NoSpace`].
    pub fn is_no_space(&self) -> bool {
        matches!(self, JournalError::NoSpace(_))
    }
}

type Done = oneshot::Sender<Result<(), JournalError>>;

enum Op {
    Append(Vec<Vec<u8>>),
    Rewrite(Vec<Vec<u8>>),
    /// Unblock after an out-of-space failure: the parked records, then these.
    Retry(Vec<Vec<u8>>),
    /// Try to make the storage's reserve whole again.
    Probe,
}

struct Request {
    op: Op,
    done: Done,
}

/// Counters of the writer thread, readable at any time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Records appended.
    pub records: u64,
    /// Fsyncs that committed appended records (one per batch).
    pub syncs: u64,
    /// Rewrites (compactions) committed.
    pub rewrites: u64,
}

#[derive(Default)]
struct Counters {
    records: AtomicU64,
    syncs: AtomicU64,
    rewrites: AtomicU64,
}

/// Group-committing front of a [`Storage`]. Dropping it (or
/// [`Journal::close`]) lets the writer finish every submitted request, then
/// joins it; no accepted submission is lost on a graceful shutdown.
pub struct Journal {
    tx: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    /// The storage's writer: used by the thread, or by [`Journal::append_now`]
    /// in the caller's thread when nothing is queued.
    writer: Arc<Mutex<Box<dyn Commit>>>,
    /// Requests sent to the thread and not committed yet.
    queued: Arc<AtomicUsize>,
    counters: Arc<Counters>,
    /// The storage's [`Storage::reserve_in_use`] after the last commit.
    reserve: Arc<AtomicBool>,
}

/// A writer, type-erased so that [`Journal`] needs no type parameter.
trait Commit: Send {
    fn commit(&mut self, batch: &mut Vec<Request>);
    fn failure(&self) -> Option<JournalError>;
}

impl<S> Commit for Writer<S>
where
    S: Storage + Send,
    S::Error: std::error::Error + Send + Sync + 'static,
{
    fn commit(&mut self, batch: &mut Vec<Request>) {
        Writer::commit(self, batch)
    }

    fn failure(&self) -> Option<JournalError> {
        self.failed.clone()
    }
}

fn lock(writer: &Mutex<Box<dyn Commit>>) -> MutexGuard<'_, Box<dyn Commit>> {
    writer
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Journal {
    /// Starts the writer thread, which takes ownership of `storage`. Replay
    /// the storage *before* handing it over.
    pub fn spawn<S>(storage: S) -> std::io::Result<Journal>
    where
        S: Storage + Send + 'static,
        S::Error: std::error::Error + Send + Sync + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let reserve = Arc::new(AtomicBool::new(storage.reserve_in_use()));
        let writer: Arc<Mutex<Box<dyn Commit>>> = Arc::new(Mutex::new(Box::new(Writer {
            storage,
            failed: None,
            full: None,
            parked: Vec::new(),
            unsynced: Vec::new(),
            dirty: false,
            reserve: reserve.clone(),
            counters: counters.clone(),
        })));
        let queued = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (writer, queued) = (writer.clone(), queued.clone());
            std::thread::Builder::new()
                .name("relay-journal".into())
                .spawn(move || run(&writer, &queued, rx))?
        };
        Ok(Journal {
            tx: Some(tx),
            thread: Some(thread),
            writer,
            queued,
            counters,
            reserve,
        })
    }

    /// Like [`Journal::append`], but when nothing submitted earlier is
    /// still queued, commits in the calling thread (write + fsync) before
    /// returning, with the ticket already resolved; otherwise it queues
    /// behind the earlier submissions, as `append` does.
    ///
    /// For a caller with a thread of its own and nothing else to do until
    /// the commit is done (the runtime's driver when it is idle): it saves
    /// the two thread wake-ups of a hand-off to the writer, which on a small
    /// or busy machine cost as much as the fsync. It blocks for the fsync,
    /// so never call it from a thread that other work shares.
    pub fn append_now(&self, records: Vec<Vec<u8>>) -> Ticket {
        if let Err(e) = validate(&records) {
            return Ticket::ready(Err(e.into()));
        }
        if self.queued.load(Ordering::SeqCst) > 0 || self.tx.is_none() {
            return self.submit(Op::Append(records));
        }
        // Nothing queued: the thread is idle (or about to park), so the
        // order of commits is kept.
        let (done, rx) = oneshot::channel();
        lock(&self.writer).commit(&mut vec![Request {
            op: Op::Append(records),
            done,
        }]);
        Ticket::pending(rx)
    }

    /// Appends `records` (each 1..=`MAX_RECORD_LEN` bytes) in order; the
    /// ticket resolves once they, and everything submitted earlier, are
    /// durable. An empty list is a barrier: it resolves when everything
    /// submitted before it is durable.
    pub fn append(&self, records: Vec<Vec<u8>>) -> Ticket {
        if let Err(e) = validate(&records) {
            return Ticket::ready(Err(e.into()));
        }
        self.submit(Op::Append(records))
    }

    /// [`Journal::append`] of a single record.
    pub fn append_one(&self, record: Vec<u8>) -> Ticket {
        self.append(vec![record])
    }

    /// Atomically replaces the log with `records` (compaction), after every
    /// earlier submission was committed. See the module docs on ordering.
    pub fn rewrite(&self, records: Vec<Vec<u8>>) -> Ticket {
        if let Err(e) = validate(&records) {
            return Ticket::ready(Err(e.into()));
        }
        self.submit(Op::Rewrite(records))
    }

    /// After an out-of-space failure: appends the parked records (those of
    /// every append refused since), then `records`, and appends normally
    /// again. The ticket fails with [`JournalError::NoSpace`] again (the
    /// records parked again) while there is still no room.
    pub fn retry(&self, records: Vec<Vec<u8>>) -> Ticket {
        if let Err(e) = validate(&records) {
            return Ticket::ready(Err(e.into()));
        }
        self.submit(Op::Retry(records))
    }

    /// In order after everything submitted before: asks the storage to make
    /// its reserve whole again (space may have returned); then read
    /// [`Journal::reserve_in_use`]. A still-full disk is not an error.
    pub fn probe(&self) -> Ticket {
        self.submit(Op::Probe)
    }

    /// The storage is writing into its reserve (the disk gave no more), as
    /// of the last commit or probe.
    pub fn reserve_in_use(&self) -> bool {
        self.reserve.load(Ordering::SeqCst)
    }

    /// Counters so far (tests assert `syncs < records` under concurrency).
    pub fn stats(&self) -> JournalStats {
        JournalStats {
            records: self.counters.records.load(Ordering::Relaxed),
            syncs: self.counters.syncs.load(Ordering::Relaxed),
            rewrites: self.counters.rewrites.load(Ordering::Relaxed),
        }
    }

    /// Finishes every submitted request and stops the writer. Returns the
    /// storage failure that stopped the journal earlier, if any.
    pub fn close(mut self) -> Result<(), JournalError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), JournalError> {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                return Err(JournalError::Closed);
            }
        }
        match lock(&self.writer).failure() {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }

    fn submit(&self, op: Op) -> Ticket {
        let (done, rx) = oneshot::channel();
        let Some(tx) = &self.tx else {
            return Ticket::ready(Err(JournalError::Closed));
        };
        self.queued.fetch_add(1, Ordering::SeqCst);
        match tx.send(Request { op, done }) {
            Ok(()) => Ticket::pending(rx),
            Err(_) => {
                self.queued.fetch_sub(1, Ordering::SeqCst);
                Ticket::ready(Err(JournalError::Closed))
            }
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("stats", &self.stats())
            .finish()
    }
}

fn validate(records: &[Vec<u8>]) -> Result<(), FrameError> {
    for r in records {
        if r.is_empty() {
            return Err(FrameError::Empty);
        }
        if r.len() > MAX_RECORD_LEN {
            return Err(FrameError::TooLarge { len: r.len() });
        }
    }
    Ok(())
}

/// The writer thread: takes whatever piled up in the channel and commits
/// it as one batch.
fn run(writer: &Mutex<Box<dyn Commit>>, queued: &AtomicUsize, rx: mpsc::Receiver<Request>) {
    let mut batch = Vec::new();
    // `recv` fails once every sender is gone and the channel is drained.
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH_REQUESTS {
            match rx.try_recv() {
                Ok(req) => batch.push(req),
                Err(_) => break,
            }
        }
        let n = batch.len();
        lock(writer).commit(&mut batch);
        queued.fetch_sub(n, Ordering::SeqCst);
    }
}

/// The writer's state (behind the journal's lock).
struct Writer<S> {
    storage: S,
    /// Set by the first storage failure; every later request gets it.
    failed: Option<JournalError>,
    /// Set by an out-of-space failure until [`Op::Retry`]: appends are parked.
    full: Option<JournalError>,
    /// Records refused for lack of space, in submission order.
    parked: Vec<Vec<u8>>,
    /// Records appended since the last sync (parked if the disk is full).
    unsynced: Vec<Vec<u8>>,
    /// Something was appended since the last sync.
    dirty: bool,
    reserve: Arc<AtomicBool>,
    counters: Arc<Counters>,
}

impl<S> Writer<S>
where
    S: Storage,
    S::Error: std::error::Error + Send + Sync + 'static,
{
    /// Writes a batch in order with one fsync, then resolves its tickets in
    /// order. A rewrite or probe inside the batch first commits the appends
    /// before it.
    fn commit(&mut self, batch: &mut Vec<Request>) {
        let mut waiting: Vec<Done> = Vec::with_capacity(batch.len());
        for Request { op, done } in batch.drain(..) {
            if let Some(err) = &self.failed {
                let _ = done.send(Err(err.clone()));
                continue;
            }
            match op {
                Op::Append(records) => match &self.full {
                    Some(full) => {
                        self.parked.extend(records);
                        let _ = done.send(Err(full.clone()));
                    }
                    None => self.append(records, done, &mut waiting),
                },
                Op::Retry(records) => {
                    self.full = None;
                    let mut all = std::mem::take(&mut self.parked);
                    all.extend(records);
                    self.append(all, done, &mut waiting);
                }
                Op::Rewrite(records) => {
                    self.sync(&mut waiting);
                    if let Some(err) = self.failed.as_ref().or(self.full.as_ref()) {
                        let _ = done.send(Err(err.clone()));
                        continue;
                    }
                    match self.storage.rewrite(&mut records.iter().map(Vec::as_slice)) {
                        Ok(()) => {
                            self.counters.rewrites.fetch_add(1, Ordering::Relaxed);
                            self.note_reserve();
                            let _ = done.send(Ok(()));
                        }
                        Err(e) if self.storage.is_no_space(&e) => {
                            // The old log is intact and holds every record.
                            tracing::warn!(error = %e, "journal: compaction skipped, no room for the new file");
                            let _ = done.send(Ok(()));
                        }
                        Err(e) => self.fail(e, &mut vec![done]),
                    }
                }
                Op::Probe => {
                    self.sync(&mut waiting);
                    if let Some(err) = self.failed.as_ref().or(self.full.as_ref()) {
                        let _ = done.send(Err(err.clone()));
                        continue;
                    }
                    match self.storage.restore_reserve() {
                        Ok(()) => {
                            self.note_reserve();
                            let _ = done.send(Ok(()));
                        }
                        Err(e) => self.fail(e, &mut vec![done]),
                    }
                }
            }
        }
        self.sync(&mut waiting);
    }

    fn append(&mut self, records: Vec<Vec<u8>>, done: Done, waiting: &mut Vec<Done>) {
        let appended = records.iter().try_for_each(|r| self.storage.append(r));
        self.dirty |= !records.is_empty();
        waiting.push(done);
        let n = records.len() as u64;
        self.unsynced.extend(records);
        match appended {
            Ok(()) => {
                self.counters.records.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => self.fail(e, waiting),
        }
    }

    /// Fsyncs if anything was appended, then resolves `waiting` in order.
    fn sync(&mut self, waiting: &mut Vec<Done>) {
        if let Some(err) = &self.failed {
            for done in waiting.drain(..) {
                let _ = done.send(Err(err.clone()));
            }
            return;
        }
        if self.dirty {
            self.dirty = false;
            match self.storage.sync() {
                Ok(()) => {
                    self.counters.syncs.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => return self.fail(e, waiting),
            }
            self.unsynced.clear();
            self.note_reserve();
        }
        for done in waiting.drain(..) {
            let _ = done.send(Ok(()));
        }
    }

    fn note_reserve(&self) {
        self.reserve
            .store(self.storage.reserve_in_use(), Ordering::SeqCst);
    }

    fn fail(&mut self, e: S::Error, waiting: &mut Vec<Done>) {
        if self.storage.is_no_space(&e) {
            // The storage rolled back to its last sync: keep what it lost.
            tracing::warn!(error = %e, "journal: no space; holding the records until a retry");
            let err = JournalError::NoSpace(Arc::new(e));
            for done in waiting.drain(..) {
                let _ = done.send(Err(err.clone()));
            }
            self.parked.append(&mut self.unsynced);
            self.dirty = false;
            self.full = Some(err);
            self.note_reserve();
            return;
        }
        tracing::error!(error = %e, "journal: storage failed; refusing further writes");
        let err = JournalError::Storage(Arc::new(e));
        for done in waiting.drain(..) {
            let _ = done.send(Err(err.clone()));
        }
        self.failed = Some(err);
    }
}
