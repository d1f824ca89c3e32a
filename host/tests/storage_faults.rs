//! Storage faults end to end (issue 9, point 7): the device runtime with the
//! [`FakeTransport`] as broker, on an injected journal disk that fills up
//! during the run (see `storage_support`), and a journal whose fsync fails.
//!
//! Asserted: every acked command reaches its final status, in FIFO order;
//! commands sent while the disk is full are not acked (an append the disk
//! refused is kept and retried, never lost) and run after the earlier ones
//! once space returns; the health message says degraded (`storage_full`)
//! and ok again; an `EIO` on fsync stops the device (fail-stop) with a
//! message that names the file and what to do. No timing is asserted: every
//! wait is for an observable event, bounded by `LIMIT`.

mod storage_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use relay_core::journal::{ReplayReport, Storage};
use relay_core::plugin::Role;
use relay_core::status::State;
use relay_host::runtime::RuntimeHandle;
use relay_host::transport::FakeTransport;
use relay_store::{FileStorage, StoreError};
use storage_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_holds_new_commands_finishes_accepted_ones_and_resumes_in_order() {
    let mem = Mem::default();
    let (calls, gate) = (Arc::default(), Gate::default());
    let (transport, remote) = FakeTransport::new("dev-1").unwrap();
    let handle = builder(&calls, &gate)
        .open(mem.clone())
        .unwrap()
        .start(Arc::new(transport))
        .unwrap();
    until("ok at start", || health(&remote) == [ok()]).await;
    // Accepted and acked: `g` runs (blocked), `a0..a4` wait behind it.
    let mut acked = vec![remote.send_command(Role::Admin, command("g", "gate"))];
    let a = ids("a", 5);
    acked.extend(
        a.iter()
            .map(|id| remote.send_command(Role::Admin, command(id, "ok"))),
    );
    until("all acked", || remote.acked() == acked).await;

    // The disk fills up; the next records go into the reserve.
    fill(&mem);
    gate.open();
    until("degraded", || health(&remote).contains(&degraded())).await;
    // Sent while the disk is full: not acked, not run.
    let b = ids("b", 3);
    let held: Vec<u64> = b
        .iter()
        .map(|id| remote.send_command(Role::Admin, command(id, "ok")))
        .collect();
    // Everything accepted before still finishes and reports.
    until("the accepted commands finish", || {
        let f = finals(&remote);
        f.contains_key("g") && a.iter().all(|id| f.contains_key(id))
    })
    .await;
    assert_eq!(remote.unacked(), held, "nothing new is acked while full");
    assert!(
        statuses(&remote).iter().all(|s| !s.id.starts_with('b')),
        "nothing new is taken while full"
    );
    assert!(mem.lock().reserve_in_use());
    assert!(handle.state().await.unwrap().storage_full);

    // Space returns: ok again, the held commands are acked and run, in order.
    free(&mem);
    until("ok again", || health(&remote).last() == Some(&ok())).await;
    until("the held commands finish", || {
        let f = finals(&remote);
        b.iter().all(|id| f.contains_key(id))
    })
    .await;
    until("all acked", || remote.unacked().is_empty()).await;
    assert_eq!(health(&remote), [ok(), degraded(), ok()]);
    let f = finals(&remote);
    let want: Vec<String> = ["g".to_string()].into_iter().chain(a).chain(b).collect();
    for id in &want {
        assert_eq!(f[id], State::Succeeded, "{id}");
    }
    let order = calls.lock().unwrap().clone();
    assert_eq!(
        order, want,
        "FIFO: held commands run after the earlier ones"
    );
    handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_the_full_disk_refuses_is_held_and_retried_and_nothing_is_lost() {
    let mem = Mem::default();
    let (calls, gate) = (Arc::default(), Gate::default());
    let (transport, remote) = FakeTransport::new("dev-1").unwrap();
    let handle = builder(&calls, &gate)
        .open(mem.clone())
        .unwrap()
        .start(Arc::new(transport))
        .unwrap();
    let mut acked = vec![remote.send_command(Role::Admin, command("g", "gate"))];
    let a = ids("a", 3);
    acked.extend(
        a.iter()
            .map(|id| remote.send_command(Role::Admin, command(id, "ok"))),
    );
    until("all acked", || remote.acked() == acked).await;
    // No room at all, not even a reserve: the next append is refused.
    {
        let mut storage = mem.lock();
        let used = storage.log().len();
        storage.set_capacity(Some(used), 0);
    }
    let b = ids("b", 3);
    let held: Vec<u64> = b
        .iter()
        .map(|id| remote.send_command(Role::Admin, command(id, "ok")))
        .collect();
    until("degraded", || health(&remote).contains(&degraded())).await;
    gate.open();
    // The accepted commands run (the refused ones may too, if they were
    // read before the refusal: their PUBACKs and statuses wait all the
    // same). The refused ones are kept, not acked, and the journal holds
    // nothing of them while the disk is full.
    until("the accepted handlers ran", || {
        calls.lock().unwrap().len() >= 4
    })
    .await;
    assert_eq!(remote.unacked(), held);
    assert!(finals(&remote).is_empty(), "no status before its records");
    assert!(!replayed_ids(&mem).iter().any(|id| id.starts_with('b')));
    // Space returns: the retry writes them, in order, and everything reports.
    free(&mem);
    until("all acked", || remote.unacked().is_empty()).await;
    let mut want = acked.clone();
    want.extend(&held);
    assert_eq!(remote.acked(), want, "PUBACKs in arrival order");
    let everything: Vec<String> = ["g".to_string()].into_iter().chain(a).chain(b).collect();
    until("every command is final", || {
        let f = finals(&remote);
        everything
            .iter()
            .all(|id| f.get(id) == Some(&State::Succeeded))
    })
    .await;
    assert_eq!(*calls.lock().unwrap(), everything, "FIFO");
    until("ok again", || health(&remote).last() == Some(&ok())).await;
    handle.shutdown().await.unwrap();
    assert_eq!(
        replayed_ids(&mem),
        everything,
        "every command is journaled once"
    );
}

/// A file journal whose fsync fails with `EIO` once `fail` is set.
struct FailingFsync {
    inner: FileStorage,
    fail: Arc<AtomicBool>,
}

impl Storage for FailingFsync {
    type Error = StoreError;
    fn append(&mut self, record: &[u8]) -> Result<(), StoreError> {
        self.inner.append(record)
    }
    fn sync(&mut self) -> Result<(), StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::SyncFailed {
                path: self.inner.path().to_path_buf(),
                source: std::io::Error::from_raw_os_error(5),
            });
        }
        self.inner.sync()
    }
    fn replay(&mut self, visit: &mut dyn FnMut(&[u8])) -> Result<ReplayReport, StoreError> {
        self.inner.replay(visit)
    }
    fn rewrite(&mut self, records: &mut dyn Iterator<Item = &[u8]>) -> Result<(), StoreError> {
        self.inner.rewrite(records)
    }
    fn is_no_space(&self, error: &StoreError) -> bool {
        error.is_no_space()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eio_on_fsync_stops_the_device_with_a_message_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let fail = Arc::new(AtomicBool::new(false));
    let storage = FailingFsync {
        inner: FileStorage::open(dir.path()).unwrap(),
        fail: fail.clone(),
    };
    let (calls, gate) = (Arc::default(), Gate::default());
    gate.open();
    let (transport, remote) = FakeTransport::new("dev-1").unwrap();
    let mut handle: RuntimeHandle = builder(&calls, &gate)
        .open(storage)
        .unwrap()
        .start(Arc::new(transport))
        .unwrap();
    let first = remote.send_command(Role::Admin, command("a", "ok"));
    until("acked", || remote.acked() == [first]).await;
    fail.store(true, Ordering::SeqCst);
    let second = remote.send_command(Role::Admin, command("b", "ok"));
    let error = tokio::time::timeout(LIMIT, handle.stopped())
        .await
        .expect("the device stops")
        .expect_err("a journal failure");
    let message = error.to_string();
    for part in [
        "journal.log",
        "fsync",
        "fail-stop",
        "restart relay",
        "dmesg",
    ] {
        assert!(message.contains(part), "{part:?} in {message}");
    }
    assert_eq!(remote.acked(), [first], "b was never acked: {second}");
}
