//! Helpers of the storage-fault tests (`storage_faults.rs`,
//! `storage_restart.rs`): a device on the [`FakeTransport`] with an `ok` and
//! a `gate` handler, an injected disk (a [`MemStorage`] with a capacity and a
//! reserve, shared with the test so it can fill and free it during a run), a
//! real small disk (a tmpfs the test mounts where it may: root, as in CI),
//! and waits for what the fake broker saw, bounded by [`LIMIT`].

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use relay_core::envelope::Envelope;
use relay_core::journal::{MemStorage, Storage};
use relay_core::plugin::{HandlerResult, Invocation};
use relay_core::status::{State, Status};
use relay_host::runtime::{Runtime, RuntimeBuilder, RuntimeOptions};
use relay_host::transport::{FakeRemote, Outbound};
use relay_store::SharedStorage;

pub const LIMIT: Duration = Duration::from_secs(30);
/// Room kept for the records of accepted commands in the injected disk.
pub const RESERVE: usize = 16 << 10;

pub type Mem = SharedStorage<MemStorage>;

pub fn options() -> RuntimeOptions {
    RuntimeOptions {
        storage_retry_ms: 10,
        shutdown_deadline: Duration::from_millis(200),
        ..RuntimeOptions::default()
    }
}

pub fn command(id: &str, name: &str) -> Vec<u8> {
    Envelope::new(id, name, relay_host::runtime::clock::unix_ms()).to_msgpack()
}

/// A latch the `gate` handler blocks on until the test opens it.
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    pub fn open(&self) {
        *self.0 .0.lock().unwrap() = true;
        self.0 .1.notify_all();
    }
    pub fn wait(&self) {
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
pub fn builder(calls: &Arc<Mutex<Vec<String>>>, gate: &Gate) -> RuntimeBuilder {
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
pub async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub fn statuses(remote: &FakeRemote) -> Vec<Status> {
    remote
        .published()
        .iter()
        .filter(|p| p.to == Outbound::Status)
        .map(|p| Status::from_msgpack(&p.payload).unwrap())
        .collect()
}

pub fn finals(remote: &FakeRemote) -> HashMap<String, State> {
    statuses(remote)
        .into_iter()
        .filter(|s| s.is_final())
        .map(|s| (s.id, s.status))
        .collect()
}

/// The health messages so far: (state, reason).
pub fn health(remote: &FakeRemote) -> Vec<(String, Option<String>)> {
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

pub fn degraded() -> (String, Option<String>) {
    ("degraded".into(), Some("storage_full".into()))
}

pub fn ok() -> (String, Option<String>) {
    ("ok".into(), None)
}

/// Fills the injected disk: the log may grow by the reserve only.
pub fn fill(mem: &Mem) {
    let mut storage = mem.lock();
    let used = storage.log().len();
    storage.set_capacity(Some(used + RESERVE), RESERVE);
}

pub fn free(mem: &Mem) {
    mem.lock().set_capacity(None, 0);
}

pub fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// Ids of the `Accepted` records a crash now would replay.
pub fn replayed_ids(mem: &Mem) -> Vec<String> {
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

/// A tmpfs of `size` mounted on a temp dir, unmounted on drop.
pub struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    pub fn mount(size: &str) -> Option<SmallFs> {
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

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the filesystem is full.
    pub fn fill(&self) -> PathBuf {
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
