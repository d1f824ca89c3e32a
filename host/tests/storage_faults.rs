//! Storage faults end to end (issue 9, point 7): the device runtime with the
//! [`FakeTransport`] as broker, on a journal whose disk fills up.
//!
//! - The injected disk is a [`MemStorage`] with a capacity and a reserve
//!   (an append past the capacity fails like `ENOSPC`), shared with the test
//!   so it can fill it and free it during the run: deterministic everywhere.
//! - The restart test also runs on a real small filesystem (a tmpfs mounted
//!   by the test) where the test may mount one (root, as in CI); elsewhere it
//!   says so and runs on the injected disk only.
//! - A failed fsync (`EIO`) stops the device with a message that names the
//!   file and what to do (fail-stop).
//!
//! Asserted: every acked command reaches its final status, in FIFO order,
//! commands sent while the disk is full are neither acked nor run until
//! space returns and then run after the earlier ones, the health message
//! says degraded (`storage_full`) and ok again, and a restart on a full disk
//! runs what was journaled instead of exiting. No timing is asserted: every
//! wait is for an observable event, bounded by [`LIMIT`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use relay_core::envelope::Envelope;
use relay_core::journal::{MemStorage, ReplayReport, Storage};
use relay_core::plugin::{HandlerResult, Invocation, Role};
use relay_core::status::{State, Status};
use relay_host::runtime::{Runtime, RuntimeBuilder, RuntimeHandle, RuntimeOptions};
use relay_host::transport::{FakeRemote, FakeTransport, Outbound};
use relay_store::{FileStorage, SharedStorage, StoreError};

const LIMIT: Duration = Duration::from_secs(30);
/// Room kept for the records of accepted commands in the injected disk.
const RESERVE: usize = 16 << 10;

type Mem = SharedStorage<MemStorage>;

fn options() -> RuntimeOptions {
    RuntimeOptions {
        storage_retry_ms: 10,
        shutdown_deadline: Duration::from_millis(200),
        ..RuntimeOptions::default()
    }
}

fn command(id: &str, name: &str) -> Vec<u8> {
    Envelope::new(id, name, relay_host::runtime::clock::unix_ms()).to_msgpack()
}

/// A latch the `gate` handler blocks on until the test opens it.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn open(&self) {
        *self.0 .0.lock().unwrap() = true;
        self.0 .1.notify_all();
    }
    fn wait(&self) {
        let (lock, cv) = &*self.0;
        let mut open = lock.lock().unwrap();
        while !*open {
            let (guard, timeout) = cv.wait_timeout(open, LIMIT).unwrap();
            open = guard;
            if timeout.timed_out() {
                break;
            }
        }
    }
}

/// Handlers: `ok` succeeds, `gate` waits for the gate. Calls are recorded.
fn builder(calls: &Arc<Mutex<Vec<String>>>, gate: &Gate) -> RuntimeBuilder {
    let (c, g) = (calls.clone(), gate.clone());
    let builder = Runtime::builder()
        .options(options())
        .listen("gate", move |inv: &Invocation| -> HandlerResult {
            c.lock().unwrap().push(inv.id.clone());
            g.wait();
            Ok(None)
        })
        .unwrap();
    let c = calls.clone();
    builder
        .listen("ok", move |inv: &Invocation| -> HandlerResult {
            c.lock().unwrap().push(inv.id.clone());
            Ok(None)
        })
        .unwrap()
}

/// Polls `cond` until it holds (a hang becomes a failure after [`LIMIT`]).
async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn statuses(remote: &FakeRemote) -> Vec<Status> {
    remote
        .published()
        .iter()
        .filter(|p| p.to == Outbound::Status)
        .map(|p| Status::from_msgpack(&p.payload).unwrap())
        .collect()
}

fn finals(remote: &FakeRemote) -> HashMap<String, State> {
    statuses(remote)
        .into_iter()
        .filter(|s| s.is_final())
        .map(|s| (s.id, s.status))
        .collect()
}

/// The health messages so far: (state, reason).
fn health(remote: &FakeRemote) -> Vec<(String, Option<String>)> {
    remote
        .published()
        .iter()
        .filter(|p| p.to == Outbound::Health)
        .map(|p| {
            assert_eq!(p.topic, "relay/dev-1/health");
            let v: serde_json::Value = rmp_serde::from_slice(&p.payload).unwrap();
            let reason = v["reason"].as_str().map(str::to_string);
            (v["state"].as_str().unwrap().to_string(), reason)
        })
        .collect()
}

fn degraded() -> (String, Option<String>) {
    ("degraded".into(), Some("storage_full".into()))
}

fn ok() -> (String, Option<String>) {
    ("ok".into(), None)
}

/// Fills the injected disk: the log may grow by the reserve only.
fn fill(mem: &Mem) {
    let mut storage = mem.lock();
    let used = storage.log().len();
    storage.set_capacity(Some(used + RESERVE), RESERVE);
}

fn free(mem: &Mem) {
    mem.lock().set_capacity(None, 0);
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

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

/// Ids of the `Accepted` records a crash now would replay.
fn replayed_ids(mem: &Mem) -> Vec<String> {
    let mut image = mem.lock().clone();
    image.crash();
    image
        .replay_all()
        .unwrap()
        .0
        .iter()
        .filter_map(|r| match relay_core::journal::record::Record::decode(r) {
            Ok(relay_core::journal::record::Record::Accepted(c)) => Some(c.id),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_on_a_full_injected_disk_runs_the_journaled_commands() {
    // First run: five commands acked while the first one blocks, then a
    // shutdown that abandons it.
    let mem = Mem::default();
    let (calls, gate) = (Arc::default(), Gate::default());
    let (transport, remote) = FakeTransport::new("dev-1").unwrap();
    let handle = builder(&calls, &gate)
        .open(mem.clone())
        .unwrap()
        .start(Arc::new(transport))
        .unwrap();
    let pending = ids("p", 5);
    let sent: Vec<u64> = pending
        .iter()
        .map(|id| remote.send_command(Role::Admin, command(id, "gate")))
        .collect();
    until("all acked", || remote.acked() == sent).await;
    handle.shutdown().await.unwrap();
    gate.open();

    // The disk is full when the device starts again.
    fill(&mem);
    let calls: Arc<Mutex<Vec<String>>> = Arc::default();
    let (transport, remote) = FakeTransport::new("dev-1").unwrap();
    let handle = builder(&calls, &gate)
        .open(mem.clone())
        .unwrap()
        .start(Arc::new(transport))
        .unwrap();
    until("degraded", || health(&remote).contains(&degraded())).await;
    until("the journaled commands finish", || {
        let f = finals(&remote);
        pending
            .iter()
            .all(|id| f.get(id) == Some(&State::Succeeded))
    })
    .await;
    let held = remote.send_command(Role::Admin, command("late", "ok"));
    assert_eq!(remote.unacked(), [held]);
    free(&mem);
    until("the late command finishes", || {
        finals(&remote).contains_key("late")
    })
    .await;
    assert_eq!(health(&remote).last(), Some(&ok()));
    handle.shutdown().await.unwrap();
}

/// A tmpfs of `size` mounted on a temp dir, unmounted on drop.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> Option<SmallFs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: cannot mount a tmpfs here (needs root and mount rights)");
            return None;
        }
        Some(SmallFs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the filesystem is full.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![1u8; 4096];
        while file
            .write_all(&chunk)
            .and_then(|()| file.sync_data())
            .is_ok()
        {}
        path
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_on_a_real_full_disk_opens_and_runs_the_journaled_commands() {
    // 16 MiB: the journal's preallocation and reserve (3 MiB) fit, then the
    // filler takes the rest.
    let Some(fs) = SmallFs::mount("16m") else {
        return;
    };
    let data = fs.path().join("data");
    let (calls, gate) = (Arc::default(), Gate::default());
    let (transport, remote) = FakeTransport::new("dev-1").unwrap();
    let handle = builder(&calls, &gate)
        .open_dir(&data)
        .unwrap()
        .start(Arc::new(transport))
        .unwrap();
    let pending = ids("p", 5);
    let sent: Vec<u64> = pending
        .iter()
        .map(|id| remote.send_command(Role::Admin, command(id, "gate")))
        .collect();
    until("all acked", || remote.acked() == sent).await;
    // The disk fills up; big commands use up the journal's room ahead until
    // it writes into its reserve.
    let filler = fs.fill();
    let payload = relay_core::msgpack::Writer::new()
        .bin(&vec![7u8; 200 << 10])
        .as_slice()
        .to_vec();
    let mut big = 0;
    while !health(&remote).contains(&degraded()) {
        let id = format!("big{big}");
        let env = Envelope::new(&id, "ok", 0).with_payload(payload.clone());
        let msg = remote.send_command(Role::Admin, env.to_msgpack());
        until("acked or degraded", || {
            remote.acked().contains(&msg) || health(&remote).contains(&degraded())
        })
        .await;
        big += 1;
        assert!(big < 100, "never degraded");
    }
    handle.shutdown().await.unwrap();
    gate.open();

    // `relay run` again on the full disk: it opens, replays and runs.
    let (transport, remote) = FakeTransport::new("dev-1").unwrap();
    let handle = builder(&Arc::default(), &gate)
        .open_dir(&data)
        .expect("the journal opens on a full disk")
        .start(Arc::new(transport))
        .unwrap();
    until("degraded", || health(&remote).contains(&degraded())).await;
    until("the journaled commands finish", || {
        let f = finals(&remote);
        pending
            .iter()
            .all(|id| f.get(id) == Some(&State::Succeeded))
    })
    .await;
    std::fs::remove_file(filler).unwrap();
    until("ok again", || health(&remote).last() == Some(&ok())).await;
    let late = remote.send_command(Role::Admin, command("late", "ok"));
    until("the late command finishes", || {
        finals(&remote).contains_key("late")
    })
    .await;
    until("acked", || remote.acked().contains(&late)).await;
    handle.shutdown().await.unwrap();
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
