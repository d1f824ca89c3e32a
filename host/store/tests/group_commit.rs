//! Group commit through [`Journal`]: many concurrent submitters, every ticket
//! resolves, the log keeps submission order, and the number of fsyncs is far
//! below the number of records. No timing is asserted (that is the bench's job).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use relay_core::journal::{MemStorage, MemStorageError, ReplayReport, Storage};
use relay_store::{FileStorage, Journal, JournalError, Ticket};

/// A storage wrapper whose fsync is slow enough that submissions pile up,
/// and which logs the order records arrive in.
struct Recording<S> {
    inner: S,
    order: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl<S: Storage> Storage for Recording<S> {
    type Error = S::Error;
    fn append(&mut self, record: &[u8]) -> Result<(), S::Error> {
        self.order.lock().unwrap().push(record.to_vec());
        self.inner.append(record)
    }
    fn sync(&mut self) -> Result<(), S::Error> {
        self.inner.sync()
    }
    fn replay(&mut self, visit: &mut dyn FnMut(&[u8])) -> Result<ReplayReport, S::Error> {
        self.inner.replay(visit)
    }
    fn rewrite(&mut self, records: &mut dyn Iterator<Item = &[u8]>) -> Result<(), S::Error> {
        self.inner.rewrite(records)
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn concurrent_submitters_share_fsyncs_and_keep_order() -> Result<()> {
    const TASKS: u64 = 64;
    const PER_TASK: u64 = 50;
    let dir = tempfile::tempdir()?;
    let journal = Arc::new(Journal::spawn(FileStorage::open(dir.path())?)?);
    let resolved = Arc::new(AtomicU64::new(0));
    rt().block_on(async {
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let journal = journal.clone();
            let resolved = resolved.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..PER_TASK {
                    let rec = format!("{t:03}:{i:04}").into_bytes();
                    journal.append_one(rec).await.expect("durable");
                    resolved.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
    let stats = journal.stats();
    assert_eq!(resolved.load(Ordering::Relaxed), TASKS * PER_TASK);
    assert_eq!(stats.records, TASKS * PER_TASK);
    assert!(
        stats.syncs < stats.records,
        "{stats:?}: no batching happened"
    );
    assert!(stats.syncs >= 1);
    Arc::try_unwrap(journal).expect("sole owner").close()?;

    // Everything is on disk, and each task's records are in its own order.
    let (recs, _) = FileStorage::open(dir.path())?.replay_all()?;
    assert_eq!(recs.len() as u64, TASKS * PER_TASK);
    let mut next = vec![0u64; TASKS as usize];
    for r in recs {
        let s = String::from_utf8(r)?;
        let (t, i) = s.split_once(':').unwrap();
        let (t, i): (usize, u64) = (t.parse()?, i.parse()?);
        assert_eq!(i, next[t], "task {t} out of order");
        next[t] += 1;
    }
    Ok(())
}

#[test]
fn tickets_resolve_in_submission_order_and_log_matches() -> Result<()> {
    let order = Arc::new(Mutex::new(Vec::new()));
    let storage = Recording {
        inner: MemStorage::new(),
        order: order.clone(),
    };
    let journal = Journal::spawn(storage)?;
    let tickets: Vec<_> = (0..500u32)
        .map(|i| journal.append_one(i.to_le_bytes().to_vec()))
        .collect();
    // Resolving in order: once ticket k is done, every earlier one is too.
    let mut tickets = tickets.into_iter().collect::<Vec<_>>();
    let last = tickets.pop().unwrap();
    last.wait_blocking()?;
    for mut t in tickets {
        assert!(
            matches!(t.try_result(), Some(Ok(()))),
            "an earlier ticket is still pending"
        );
    }
    let written = order.lock().unwrap().clone();
    let expected: Vec<Vec<u8>> = (0..500u32).map(|i| i.to_le_bytes().to_vec()).collect();
    assert_eq!(written, expected);
    journal.close()?;
    Ok(())
}

#[test]
fn rewrite_is_ordered_between_appends() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let journal = Journal::spawn(FileStorage::open(dir.path())?)?;
    let a = journal.append(vec![b"old-1".to_vec(), b"old-2".to_vec()]);
    let r = journal.rewrite(vec![b"snapshot".to_vec()]);
    let b = journal.append_one(b"new".to_vec());
    let barrier = journal.append(Vec::new());
    for t in [a, r, b, barrier] {
        t.wait_blocking()?;
    }
    assert_eq!(journal.stats().rewrites, 1);
    journal.close()?;
    let (recs, _) = FileStorage::open(dir.path())?.replay_all()?;
    assert_eq!(recs, vec![b"snapshot".to_vec(), b"new".to_vec()]);
    Ok(())
}

#[test]
fn invalid_records_fail_at_submission() -> Result<()> {
    let journal = Journal::spawn(MemStorage::new())?;
    let bad = journal.append(vec![b"ok".to_vec(), Vec::new()]);
    assert!(matches!(
        bad.wait_blocking(),
        Err(JournalError::InvalidRecord(_))
    ));
    journal.append_one(b"fine".to_vec()).wait_blocking()?;
    assert_eq!(journal.stats().records, 1);
    Ok(())
}

/// A storage that fails its n-th sync.
struct FailingSync {
    inner: MemStorage,
    syncs_left: usize,
}

impl Storage for FailingSync {
    type Error = MemStorageError;
    fn append(&mut self, record: &[u8]) -> Result<(), MemStorageError> {
        self.inner.append(record)
    }
    fn sync(&mut self) -> Result<(), MemStorageError> {
        if self.syncs_left == 0 {
            self.inner.set_failing(true);
        }
        self.syncs_left = self.syncs_left.saturating_sub(1);
        self.inner.sync()
    }
    fn replay(&mut self, visit: &mut dyn FnMut(&[u8])) -> Result<ReplayReport, MemStorageError> {
        self.inner.replay(visit)
    }
    fn rewrite(&mut self, records: &mut dyn Iterator<Item = &[u8]>) -> Result<(), MemStorageError> {
        self.inner.rewrite(records)
    }
}

/// The first fsync succeeds, the second fails: that submission fails, and
/// so does everything after it, through `submit` (append or append_now).
fn failed_fsync_fails_everything_after(submit: fn(&Journal, Vec<u8>) -> Ticket) -> Result<()> {
    let journal = Journal::spawn(FailingSync {
        inner: MemStorage::new(),
        syncs_left: 1,
    })?;
    submit(&journal, b"first".to_vec()).wait_blocking()?;
    let failed = submit(&journal, b"second".to_vec()).wait_blocking();
    assert!(
        matches!(failed, Err(JournalError::Storage(_))),
        "{failed:?}"
    );
    let later = journal.append_one(b"third".to_vec()).wait_blocking();
    assert!(matches!(later, Err(JournalError::Storage(_))));
    assert!(matches!(journal.close(), Err(JournalError::Storage(_))));
    Ok(())
}

#[test]
fn a_failed_fsync_fails_its_batch_and_everything_after() -> Result<()> {
    failed_fsync_fails_everything_after(Journal::append_one)
}

#[test]
fn dropping_the_journal_commits_what_was_submitted() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let journal = Journal::spawn(FileStorage::open(dir.path())?)?;
    let tickets: Vec<_> = (0..100u32)
        .map(|i| journal.append_one(i.to_be_bytes().to_vec()))
        .collect();
    drop(journal);
    for t in tickets {
        t.wait_blocking()?;
    }
    let (recs, _) = FileStorage::open(dir.path())?.replay_all()?;
    assert_eq!(recs.len(), 100);
    Ok(())
}

#[test]
fn shared_mem_storage_simulates_a_crash_under_the_journal() -> Result<()> {
    use relay_store::SharedStorage;
    let mem = SharedStorage::new(MemStorage::new());
    let journal = Journal::spawn(mem.clone())?;
    rt().block_on(async {
        journal.append(vec![b"a".to_vec(), b"b".to_vec()]).await?;
        journal.append_one(b"c".to_vec()).wait().await
    })?;
    assert!(mem.lock().sync_count() >= 1);
    // Appended behind the journal's back and never synced: a crash loses it.
    mem.lock().append(b"unsynced")?;
    mem.lock().crash();
    let (recs, _) = mem.lock().replay_all()?;
    assert_eq!(recs, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    journal.close()?;
    Ok(())
}

#[test]
fn append_now_commits_in_the_caller_when_idle_and_queues_behind_earlier_work() -> Result<()> {
    let order = Arc::new(Mutex::new(Vec::new()));
    let mem = relay_store::SharedStorage::new(MemStorage::new());
    let storage = Recording {
        inner: mem.clone(),
        order: order.clone(),
    };
    let journal = Journal::spawn(storage)?;
    // Idle: committed (synced) before `append_now` returns, ticket resolved.
    let mut first = journal.append_now(vec![b"a".to_vec(), b"b".to_vec()]);
    assert!(matches!(first.try_result(), Some(Ok(()))));
    assert_eq!(mem.lock().sync_count(), 1);
    assert_eq!(journal.stats().syncs, 1);
    // Interleaved with queued appends: the log keeps submission order.
    let mut tickets = Vec::new();
    for i in 0..200u32 {
        let record = vec![i.to_le_bytes().to_vec()];
        tickets.push(if i % 3 == 0 {
            journal.append_now(record)
        } else {
            journal.append(record)
        });
    }
    for t in tickets {
        t.wait_blocking()?;
    }
    let mut expected = vec![b"a".to_vec(), b"b".to_vec()];
    expected.extend((0..200u32).map(|i| i.to_le_bytes().to_vec()));
    assert_eq!(*order.lock().unwrap(), expected);
    journal.close()?;
    let (recs, _) = mem.lock().replay_all()?;
    assert_eq!(recs, expected);
    Ok(())
}

#[test]
fn append_now_reports_a_failed_fsync_and_the_journal_stays_failed() -> Result<()> {
    failed_fsync_fails_everything_after(|journal, record| journal.append_now(vec![record]))
}
