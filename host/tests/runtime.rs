//! The device runtime end to end without a broker (issue 3): the
//! [`FakeTransport`] plays the broker and the apps, the journal runs on
//! [`MemStorage`] (shared with the test so it can inspect it and simulate a
//! crash) or on files in a tempdir, handlers are native (`listen`).
//!
//! What is asserted: FIFO order; PUBACKs only after the journal is durable
//! and in arrival order; retries (min(k+1, 5) attempts, spacing, final
//! status) on short real delays and on the real 5 s in virtual time;
//! permanent errors not retried; expiry; RPC replies and RPCs not waiting
//! behind a retrying command; dedupe of redeliveries; every kind of bad
//! input rejected with a code and acked; restart from the journal (graceful
//! and after a crash) resuming in order with attempt counters continued;
//! graceful shutdown losing nothing; the built-in `_status` / `_plugins`.
//!
//! No timed assertions: every wait is for an observable event, bounded by a
//! generous [`LIMIT`] that only turns a hang into a failure.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use relay_core::envelope::{Envelope, Kind};
use relay_core::journal::record::Record;
use relay_core::journal::{MemStorage, ReplayReport, Storage};
use relay_core::plugin::{ErrorKind, HandlerError, HandlerResult, Invocation, Role};
use relay_core::scheduler::Policy;
use relay_core::status::{Code, State, Status};
use relay_host::runtime::{Runtime, RuntimeHandle, RuntimeOptions, TokioClock};
use relay_host::transport::fake::Published;
use relay_host::transport::{FakeRemote, FakeTransport, Outbound};
use relay_store::SharedStorage;

/// Upper bound of any single wait: a hang becomes a failure, never a pass.
const LIMIT: Duration = Duration::from_secs(30);

type Mem = SharedStorage<MemStorage>;

fn options(delay_ms: u64) -> RuntimeOptions {
    RuntimeOptions {
        policy: Policy {
            retry_delay_ms: delay_ms,
            ..Policy::default()
        },
        ..RuntimeOptions::default()
    }
}

fn now_ms() -> u64 {
    relay_host::runtime::clock::unix_ms()
}

fn msgpack(v: serde_json::Value) -> Vec<u8> {
    rmp_serde::to_vec_named(&v).expect("json encodes as msgpack")
}

fn command(id: &str, name: &str) -> Envelope {
    Envelope::new(id, name, now_ms())
}

/// Records every call: (id, attempt), in call order.
#[derive(Clone, Default)]
struct Calls(Arc<Mutex<Vec<(String, u32)>>>);

impl Calls {
    fn push(&self, inv: &Invocation) {
        self.0.lock().unwrap().push((inv.id.clone(), inv.attempt));
    }
    fn all(&self) -> Vec<(String, u32)> {
        self.0.lock().unwrap().clone()
    }
    fn count(&self, id: &str) -> usize {
        self.all().iter().filter(|(i, _)| i == id).count()
    }
}

/// A device under test.
struct Rig {
    handle: RuntimeHandle,
    remote: FakeRemote,
    calls: Calls,
    /// Bound waits by [`LIMIT`] (off on paused time, where a timeout would
    /// fire as soon as the runtime idles waiting for a thread).
    bounded: bool,
}

/// Handlers every rig has:
/// - `ok`: succeeds, replies with its payload;
/// - `flaky`: payload `{"fail": k}` fails transiently on attempts 1..=k;
/// - `bad_arg`, `oob`, `perm`: fail with that error kind;
/// - `gate`: blocks until the test opens the [`Gate`] given to [`Rig::start`].
fn listen_all(
    builder: relay_host::runtime::RuntimeBuilder,
    calls: &Calls,
    gate: &Gate,
) -> relay_host::runtime::RuntimeBuilder {
    let c = calls.clone();
    let builder = builder
        .listen("ok", move |inv: &Invocation| -> HandlerResult {
            c.push(inv);
            Ok((!inv.payload.is_empty()).then(|| inv.payload.clone()))
        })
        .unwrap();
    let c = calls.clone();
    let builder = builder
        .listen("flaky", move |inv: &Invocation| -> HandlerResult {
            c.push(inv);
            let v: serde_json::Value = rmp_serde::from_slice(&inv.payload).unwrap_or_default();
            let fail = v["fail"].as_u64().unwrap_or(0) as u32;
            if inv.attempt <= fail {
                Err(HandlerError {
                    kind: ErrorKind::Transient,
                    message: format!("busy {}", inv.attempt),
                })
            } else {
                Ok(None)
            }
        })
        .unwrap();
    let mut builder = builder;
    for (name, kind) in [
        ("bad_arg", ErrorKind::InvalidArgument),
        ("oob", ErrorKind::OutOfBounds),
        ("perm", ErrorKind::Permanent),
    ] {
        let c = calls.clone();
        builder = builder
            .listen(name, move |inv: &Invocation| -> HandlerResult {
                c.push(inv);
                Err(HandlerError {
                    kind,
                    message: "no".into(),
                })
            })
            .unwrap();
    }
    let c = calls.clone();
    let g = gate.clone();
    builder
        .listen("gate", move |inv: &Invocation| -> HandlerResult {
            c.push(inv);
            g.wait();
            Ok(None)
        })
        .unwrap()
}

/// A latch a handler blocks on until the test opens it.
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

impl Rig {
    fn start(storage: Mem, options: RuntimeOptions, gate: &Gate) -> Rig {
        Self::start_with(
            storage,
            options,
            gate,
            Calls::default(),
            relay_host::runtime::Runtime::builder(),
        )
    }

    fn start_with(
        storage: Mem,
        options: RuntimeOptions,
        gate: &Gate,
        calls: Calls,
        builder: relay_host::runtime::RuntimeBuilder,
    ) -> Rig {
        let (transport, remote) = FakeTransport::new("dev-1").unwrap();
        let builder = listen_all(builder.options(options), &calls, gate);
        let handle = builder
            .open(storage)
            .unwrap()
            .start(Arc::new(transport))
            .unwrap();
        Rig {
            handle,
            remote,
            calls,
            bounded: true,
        }
    }

    fn send(&self, env: &Envelope) -> u64 {
        self.remote.send_command(Role::Admin, env.to_msgpack())
    }

    /// Next published status (events are skipped).
    async fn next_status(&self) -> Status {
        loop {
            let next = if self.bounded {
                tokio::time::timeout(LIMIT, self.remote.next_published())
                    .await
                    .expect("a status within the limit")
            } else {
                self.remote.next_published().await
            };
            let p: Published = next.expect("the link is open");
            if p.to == Outbound::Status {
                return Status::from_msgpack(&p.payload).expect("statuses decode");
            }
        }
    }

    /// Every status up to and including the final status of `id`.
    async fn until_final(&self, id: &str) -> Vec<Status> {
        let mut seen = Vec::new();
        loop {
            let s = self.next_status().await;
            let done = s.id == id && s.is_final();
            seen.push(s);
            if done {
                return seen;
            }
        }
    }

    /// The final status of `id` (skipping everything before it).
    async fn final_of(&self, id: &str) -> Status {
        self.until_final(id)
            .await
            .pop()
            .expect("at least the final status")
    }

    /// Waits until the driver has submitted and synced everything so far.
    async fn settle(&self) {
        for _ in 0..10_000 {
            let st = self.handle.state().await.expect("runtime alive");
            if st.records_durable == st.records_emitted {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("journal never caught up");
    }

    /// Waits until every delivered message was acked.
    async fn all_acked(&self) {
        for _ in 0..10_000 {
            if self.remote.unacked().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("unacked messages left: {:?}", self.remote.unacked());
    }
}

fn records(storage: &Mem) -> Vec<Record> {
    let mut image: MemStorage = storage.lock().clone();
    image.crash();
    let (bytes, _): (Vec<Vec<u8>>, ReplayReport) = image.replay_all().unwrap();
    bytes.iter().map(|b| Record::decode(b).unwrap()).collect()
}

fn accepted_ids(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| {
            if let Record::Accepted(c) = r {
                Some(c.id.clone())
            } else {
                None
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_run_in_arrival_order_and_all_succeed() {
    let rig = Rig::start(Mem::default(), options(10), &Gate::default());
    let ids: Vec<String> = (0..50).map(|i| format!("c{i:02}")).collect();
    for id in &ids {
        rig.send(&command(id, "ok").with_payload(msgpack(serde_json::json!({ "n": id }))));
    }
    let mut finals = HashMap::new();
    while finals.len() < ids.len() {
        let s = rig.next_status().await;
        if s.is_final() {
            finals.insert(s.id.clone(), s);
        }
    }
    for id in &ids {
        let s = &finals[id];
        assert_eq!((s.status, s.attempt), (State::Succeeded, 1), "{id}");
        assert_eq!(
            s.reply.as_deref(),
            Some(&msgpack(serde_json::json!({ "n": id }))[..])
        );
    }
    let order: Vec<String> = rig.calls.all().into_iter().map(|(id, _)| id).collect();
    assert_eq!(order, ids, "strict FIFO in arrival order");
    rig.all_acked().await;
    rig.handle.shutdown().await.unwrap();
}

/// A storage whose `sync` blocks until the test lets it through.
#[derive(Clone)]
struct SlowSync {
    inner: Mem,
    open: Gate,
}

impl Storage for SlowSync {
    type Error = relay_core::journal::MemStorageError;
    fn append(&mut self, record: &[u8]) -> Result<(), Self::Error> {
        self.inner.append(record)
    }
    fn sync(&mut self) -> Result<(), Self::Error> {
        self.open.wait();
        self.inner.sync()
    }
    fn replay(&mut self, visit: &mut dyn FnMut(&[u8])) -> Result<ReplayReport, Self::Error> {
        self.inner.replay(visit)
    }
    fn rewrite(&mut self, records: &mut dyn Iterator<Item = &[u8]>) -> Result<(), Self::Error> {
        self.inner.rewrite(records)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puback_waits_for_fsync_and_leaves_in_arrival_order() {
    let mem = Mem::default();
    let fsync = Gate::default();
    let storage = SlowSync {
        inner: mem.clone(),
        open: fsync.clone(),
    };
    let (transport, remote) = FakeTransport::new("dev-1").unwrap();
    let calls = Calls::default();
    let c = calls.clone();
    let handle = Runtime::builder()
        .options(options(10))
        .listen("ok", move |inv: &Invocation| -> HandlerResult {
            c.push(inv);
            Ok(None)
        })
        .unwrap()
        .open(storage)
        .unwrap()
        .start(Arc::new(transport))
        .unwrap();
    let msgs: Vec<u64> = (0..5)
        .map(|i| remote.send_command(Role::Primary, command(&format!("p{i}"), "ok").to_msgpack()))
        .collect();
    // Wait until the driver took all five (their `Accepted` records exist).
    for _ in 0..10_000 {
        if handle.state().await.unwrap().records_emitted >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(handle.state().await.unwrap().records_emitted >= 5);
    // fsync is blocked: nothing may be acked or announced yet.
    assert!(
        remote.acked().is_empty(),
        "PUBACK before the journal was durable"
    );
    assert!(
        remote.published().is_empty(),
        "status before the journal was durable"
    );
    assert!(mem.lock().synced_len() == 0);
    fsync.open();
    for _ in 0..10_000 {
        if remote.acked().len() == msgs.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(remote.acked(), msgs, "PUBACKs in arrival order");
    // Every acked command is in the durable journal.
    let durable = accepted_ids(&records(&mem));
    for i in 0..5 {
        assert!(
            durable.contains(&format!("p{i}")),
            "p{i} acked but not durable"
        );
    }
    handle.shutdown().await.unwrap();
    let stats_records = records(&mem).len();
    assert!(
        stats_records >= 15,
        "accepted, started and finished for each: {stats_records}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_follow_the_policy_for_k_failures() {
    let delay = 20;
    let rig = Rig::start(Mem::default(), options(delay), &Gate::default());
    for k in 0..=6u32 {
        let id = format!("k{k}");
        rig.send(&command(&id, "flaky").with_payload(msgpack(serde_json::json!({ "fail": k }))));
        let seen: Vec<Status> = rig
            .until_final(&id)
            .await
            .into_iter()
            .filter(|s| s.id == id)
            .collect();
        let attempts = (k + 1).min(5);
        assert_eq!(rig.calls.count(&id), attempts as usize, "k = {k}");
        let last = seen.last().unwrap();
        assert_eq!(last.attempt, attempts, "k = {k}");
        if k < 5 {
            assert_eq!(
                (last.status, last.code.clone()),
                (State::Succeeded, None),
                "k = {k}"
            );
        } else {
            assert_eq!(
                (last.status, last.code.clone()),
                (State::Failed, Some(Code::HandlerError)),
                "k = {k}"
            );
            assert_eq!(
                last.message.as_deref(),
                Some("busy 5"),
                "the last error is reported"
            );
        }
        let retrying: Vec<&Status> = seen
            .iter()
            .filter(|s| s.status == State::Retrying)
            .collect();
        assert_eq!(retrying.len() as u32, attempts - 1, "k = {k}");
        for (i, r) in retrying.iter().enumerate() {
            assert_eq!(r.attempt, i as u32 + 1);
            assert_eq!(
                r.next_attempt_at,
                Some(r.at + delay),
                "spaced by the configured delay"
            );
            assert_eq!(r.code, Some(Code::HandlerError));
        }
    }
    rig.handle.shutdown().await.unwrap();
}

/// The real 5 s delay, on tokio's paused clock: the test takes no real time.
#[tokio::test(start_paused = true)]
async fn default_retry_delay_is_five_seconds_in_virtual_time() {
    let calls = Calls::default();
    let builder = Runtime::builder().clock(TokioClock::new(1_700_000_000_000));
    let mut rig = Rig::start_with(
        Mem::default(),
        RuntimeOptions::default(),
        &Gate::default(),
        calls,
        builder,
    );
    rig.bounded = false;
    let env = Envelope::new("v1", "flaky", 1_700_000_000_000)
        .with_payload(msgpack(serde_json::json!({ "fail": 9 })));
    rig.send(&env);
    let seen: Vec<Status> = rig.until_final("v1").await;
    let last = seen.last().unwrap();
    assert_eq!((last.status, last.attempt), (State::Failed, 5));
    assert_eq!(rig.calls.count("v1"), 5);
    // (`running` statuses may be coalesced into the `retrying` that follows
    // at the same virtual instant; `retrying` never is.)
    let retrying: Vec<&Status> = seen
        .iter()
        .filter(|s| s.status == State::Retrying)
        .collect();
    assert_eq!(retrying.len(), 4, "{seen:?}");
    for r in &retrying {
        assert_eq!(r.next_attempt_at, Some(r.at + 5_000));
    }
    // Handlers take no virtual time, so attempt n+1 ends 5 s after attempt n.
    let ends: Vec<u64> = retrying.iter().map(|s| s.at).chain([last.at]).collect();
    for pair in ends.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            (5_000..5_002).contains(&gap),
            "{gap} ms between attempts: {seen:?}"
        );
    }
    rig.handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_are_not_retried() {
    let rig = Rig::start(Mem::default(), options(10), &Gate::default());
    for (name, code) in [
        ("bad_arg", Code::InvalidArgument),
        ("oob", Code::OutOfBounds),
        ("perm", Code::HandlerError),
    ] {
        let id = format!("{name}-1");
        rig.send(&command(&id, name));
        let s = rig.final_of(&id).await;
        assert_eq!(
            (s.status, s.attempt, s.code),
            (State::Failed, 1, Some(code)),
            "{name}"
        );
        assert_eq!(rig.calls.count(&id), 1);
    }
    rig.handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_commands_never_run() {
    let gate = Gate::default();
    let rig = Rig::start(Mem::default(), options(10), &gate);
    // Already expired on arrival.
    rig.send(&command("old", "ok").with_expires_at(1));
    let s = rig.final_of("old").await;
    assert_eq!(
        (s.status, s.code, s.attempt),
        (State::Expired, Some(Code::Expired), 0)
    );
    // Expires while queued behind a running command.
    rig.send(&command("head", "gate"));
    rig.send(&command("late", "ok").with_expires_at(now_ms() + 50));
    let s = rig.final_of("late").await;
    assert_eq!((s.status, s.code), (State::Expired, Some(Code::Expired)));
    gate.open();
    let s = rig.final_of("head").await;
    assert_eq!(s.status, State::Succeeded);
    assert_eq!(rig.calls.count("old") + rig.calls.count("late"), 0);
    rig.handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_gets_its_reply_and_does_not_wait_behind_a_retrying_command() {
    // A retry delay far beyond the test: the RPC can only finish in the pause.
    let rig = Rig::start(Mem::default(), options(3_600_000), &Gate::default());
    rig.send(&command("slow", "flaky").with_payload(msgpack(serde_json::json!({ "fail": 9 }))));
    loop {
        let s = rig.next_status().await;
        if s.id == "slow" && s.status == State::Retrying {
            break;
        }
    }
    let payload = msgpack(serde_json::json!({"q": [1, 2, 3]}));
    rig.send(
        &command("rpc-1", "ok")
            .with_kind(Kind::Rpc)
            .with_payload(payload.clone()),
    );
    let s = rig.final_of("rpc-1").await;
    assert_eq!((s.status, s.attempt), (State::Succeeded, 1));
    assert_eq!(s.reply, Some(payload));
    let state = rig.handle.state().await.unwrap();
    assert_eq!(state.pending, 1, "the retrying command is still waiting");
    // An RPC is never retried.
    rig.send(
        &command("rpc-2", "flaky")
            .with_kind(Kind::Rpc)
            .with_payload(msgpack(serde_json::json!({ "fail": 1 }))),
    );
    let s = rig.final_of("rpc-2").await;
    assert_eq!(
        (s.status, s.attempt, s.code),
        (State::Failed, 1, Some(Code::HandlerError))
    );
    rig.handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_finished_command_republishes_its_status_and_never_reruns() {
    let gate = Gate::default();
    let rig = Rig::start(Mem::default(), options(10), &gate);
    let env = command("once", "ok").with_payload(msgpack(serde_json::json!("x")));
    let first_msg = rig.send(&env);
    let first = rig.final_of("once").await;
    let again_msg = rig.send(&env);
    let again = rig.next_status().await;
    assert_eq!(
        again, first,
        "the recorded final status, same `at` and reply"
    );
    assert_eq!(rig.calls.count("once"), 1);
    // A duplicate of a pending command: acked, no second run.
    let gate_env = command("pending", "gate");
    rig.send(&gate_env);
    rig.send(&gate_env);
    rig.all_acked().await;
    assert!(rig.remote.acked().starts_with(&[first_msg, again_msg]));
    gate.open();
    rig.final_of("pending").await;
    assert_eq!(rig.calls.count("pending"), 1);
    rig.handle.shutdown().await.unwrap();
}

/// Envelope bytes with a custom map (for wrong types / missing fields).
fn raw_map(entries: Vec<(&str, rmpv::Value)>) -> Vec<u8> {
    let map = rmpv::Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (rmpv::Value::from(k), v))
            .collect(),
    );
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &map).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_are_rejected_with_a_code_and_acked() {
    let rig = Rig::start(Mem::default(), options(10), &Gate::default());
    // 10,000 nested arrays as the payload.
    let mut deep = command("deep", "ok").to_msgpack();
    deep[0] += 1; // one more map entry
    deep.extend_from_slice(&[0xa7]);
    deep.extend_from_slice(b"payload");
    deep.extend(std::iter::repeat_n(0x91, 10_000));
    deep.push(0xc0);
    let huge = command("huge", "ok")
        .with_payload(msgpack(serde_json::json!("x".repeat(300 * 1024))))
        .to_msgpack();
    let cases: Vec<(&str, Vec<u8>, &str, Code)> = vec![
        (
            "invalid msgpack",
            vec![0xc1, 0x00],
            "",
            Code::InvalidPayload,
        ),
        (
            "not a map",
            msgpack(serde_json::json!([1, 2])),
            "",
            Code::InvalidPayload,
        ),
        ("10,000 deep", deep, "deep", Code::InvalidPayload),
        ("oversize", huge, "huge", Code::TooLarge),
        (
            "invalid name",
            command("badname", "no spaces allowed").to_msgpack(),
            "badname",
            Code::InvalidPayload,
        ),
        (
            "missing id",
            raw_map(vec![("name", "ok".into()), ("sent_at", 1.into())]),
            "",
            Code::InvalidPayload,
        ),
        (
            "id of the wrong type",
            raw_map(vec![
                ("id", 7.into()),
                ("name", "ok".into()),
                ("sent_at", 1.into()),
            ]),
            "",
            Code::InvalidPayload,
        ),
        (
            "sent_at of the wrong type",
            raw_map(vec![
                ("id", "wt".into()),
                ("name", "ok".into()),
                ("sent_at", "now".into()),
            ]),
            "wt",
            Code::InvalidPayload,
        ),
        (
            "unknown command",
            command("nobody", "nobody_listens").to_msgpack(),
            "nobody",
            Code::UnknownCommand,
        ),
        (
            "unknown reserved command",
            command("rsv", "_reboot").to_msgpack(),
            "rsv",
            Code::UnknownCommand,
        ),
    ];
    for (what, bytes, id, code) in cases {
        rig.remote.send_command(Role::Primary, bytes);
        let s = loop {
            let s = rig.next_status().await;
            if s.is_final() {
                break s;
            }
        };
        assert_eq!(
            (s.id.as_str(), s.status, s.code.clone()),
            (id, State::Rejected, Some(code)),
            "{what}: {s:?}"
        );
    }
    // A topic whose role level is not a role.
    rig.remote
        .send_raw("root", command("rooted", "ok").to_msgpack());
    let s = rig.final_of("rooted").await;
    assert_eq!(
        (s.status, s.code),
        (State::Rejected, Some(Code::NotPermitted))
    );
    // Everything was acked (no redelivery loop), and the host still works.
    rig.all_acked().await;
    rig.send(&command("after", "ok"));
    assert_eq!(rig.final_of("after").await.status, State::Succeeded);
    assert_eq!(
        rig.calls.all(),
        vec![("after".to_string(), 1)],
        "no bad input reached a handler"
    );
    // A redelivery of a rejected command gets the same answer.
    rig.send(&command("nobody", "nobody_listens"));
    assert_eq!(rig.next_status().await.code, Some(Code::UnknownCommand));
    rig.handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_pending_commands_in_order_with_attempts_continued() {
    let mem = Mem::default();
    let rig = Rig::start(mem.clone(), options(200), &Gate::default());
    rig.send(&command("a", "flaky").with_payload(msgpack(serde_json::json!({ "fail": 1 }))));
    rig.send(&command("b", "ok"));
    rig.send(&command("c", "ok"));
    loop {
        let s = rig.next_status().await;
        if s.id == "a" && s.status == State::Retrying {
            break;
        }
    }
    rig.all_acked().await;
    let report = rig.handle.shutdown().await.unwrap();
    assert_eq!((report.pending, report.abandoned), (3, None));

    mem.lock().crash(); // whatever was not synced is gone (nothing, after a graceful stop)
    let rig = Rig::start(mem.clone(), options(200), &Gate::default());
    let s = rig.final_of("c").await;
    assert_eq!(s.status, State::Succeeded);
    assert_eq!(
        rig.calls.all(),
        vec![
            ("a".to_string(), 2),
            ("b".to_string(), 1),
            ("c".to_string(), 1)
        ],
        "resumed in order; a's attempt counter continued"
    );
    rig.handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_handler_reruns_it_as_the_next_attempt() {
    let mem = Mem::default();
    let gate = Gate::default();
    let old = Rig::start(mem.clone(), options(10), &gate);
    old.send(&command("x", "gate"));
    old.send(&command("y", "ok"));
    loop {
        let s = old.next_status().await;
        if s.id == "x" && s.status == State::Running {
            break;
        }
    }
    old.settle().await;
    // kill -9 now: the disk holds exactly what was synced.
    let mut image = mem.lock().clone();
    image.crash();
    let open = Gate::default();
    open.open();
    let rig = Rig::start(SharedStorage::new(image), options(10), &open);
    let x = rig.until_final("x").await;
    // Its `running` may be coalesced into the final status, which says attempt 2.
    let last = x.last().unwrap();
    assert_eq!((last.status, last.attempt), (State::Succeeded, 2), "{x:?}");
    assert_eq!(rig.final_of("y").await.status, State::Succeeded);
    assert_eq!(
        rig.calls.all(),
        vec![("x".to_string(), 2), ("y".to_string(), 1)]
    );
    rig.handle.shutdown().await.unwrap();
    gate.open();
    old.handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_waits_for_the_handler_and_loses_nothing() {
    let mem = Mem::default();
    let gate = Gate::default();
    let rig = Rig::start(mem.clone(), options(10), &gate);
    let mut envs = vec![command("g0", "gate")];
    envs.extend((1..30).map(|i| command(&format!("g{i}"), "ok")));
    for env in &envs {
        rig.send(env);
    }
    loop {
        let s = rig.next_status().await;
        if s.id == "g0" && s.status == State::Running {
            break;
        }
    }
    rig.handle.request_shutdown();
    gate.open();
    let Rig {
        handle,
        remote,
        calls,
        ..
    } = rig;
    let report = handle.shutdown().await.unwrap();
    assert_eq!(
        report.abandoned, None,
        "the running handler was allowed to finish"
    );
    let published: Vec<Status> = remote
        .published()
        .iter()
        .filter(|p| p.to == Outbound::Status)
        .map(|p| Status::from_msgpack(&p.payload).unwrap())
        .collect();
    assert!(
        published
            .iter()
            .any(|s| s.id == "g0" && s.status == State::Succeeded),
        "its final status left"
    );

    // Restart on the same journal; the broker redelivers what was not acked.
    let unacked = remote.unacked();
    let rig = Rig::start_with(
        mem.clone(),
        options(10),
        &Gate::default(),
        calls.clone(),
        Runtime::builder(),
    );
    for env in envs
        .iter()
        .filter(|e| unacked.iter().any(|m| *m as usize == id_index(&e.id)))
    {
        rig.send(env);
    }
    for env in &envs {
        if env.id != "g0" {
            rig.final_of(&env.id).await;
        }
    }
    for env in &envs {
        assert_eq!(calls.count(&env.id), 1, "{} ran exactly once", env.id);
    }
    let order: Vec<String> = calls.all().into_iter().map(|(id, _)| id).collect();
    assert_eq!(order, envs.iter().map(|e| e.id.clone()).collect::<Vec<_>>());
    rig.handle.shutdown().await.unwrap();
}

/// Message ids of the fake are arrival indexes; envelopes `g<i>` were sent i-th.
fn id_index(id: &str) -> usize {
    id.trim_start_matches('g').parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_abandons_a_handler_past_the_deadline() {
    let gate = Gate::default();
    let opts = RuntimeOptions {
        shutdown_deadline: Duration::from_millis(50),
        ..options(10)
    };
    let mem = Mem::default();
    let rig = Rig::start(mem.clone(), opts, &gate);
    rig.send(&command("stuck", "gate"));
    loop {
        let s = rig.next_status().await;
        if s.status == State::Running {
            break;
        }
    }
    let report = rig.handle.shutdown().await.unwrap();
    gate.open();
    assert_eq!(report.abandoned, Some(("stuck".to_string(), 1)));
    assert_eq!(report.pending, 1);
    assert!(records(&mem)
        .iter()
        .any(|r| matches!(r, Record::Started { id, attempt: 1, .. } if id == "stuck")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtins_answer_status_and_plugin_queries() {
    let rig = Rig::start(Mem::default(), options(10), &Gate::default());
    rig.send(&command("q-target", "ok"));
    let target = rig.final_of("q-target").await;
    let query =
        command("q1", "_status").with_payload(msgpack(serde_json::json!({"id": "q-target"})));
    rig.send(&query);
    let s = rig.final_of("q1").await;
    assert_eq!(s.status, State::Succeeded);
    assert_eq!(Status::from_msgpack(&s.reply.unwrap()).unwrap(), target);
    assert_eq!(rig.handle.status_of("q-target").await, Some(target));

    rig.send(&command("q2", "_plugins"));
    let s = rig.final_of("q2").await;
    assert_eq!(
        (s.status, s.reply),
        (State::Succeeded, Some(vec![0x90])),
        "no plugins loaded: an empty list"
    );

    // Admin only.
    rig.remote
        .send_command(Role::Secondary, command("q3", "_plugins").to_msgpack());
    let s = rig.final_of("q3").await;
    assert_eq!(
        (s.status, s.code),
        (State::Rejected, Some(Code::NotPermitted))
    );
    rig.handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_and_off_take_effect_for_later_commands() {
    let rig = Rig::start(Mem::default(), options(10), &Gate::default());
    rig.send(&command("l1", "late_listener"));
    assert_eq!(rig.final_of("l1").await.code, Some(Code::UnknownCommand));
    rig.handle
        .listen("late_listener", |_: &Invocation| -> HandlerResult {
            Ok(Some(vec![0xc3]))
        })
        .unwrap();
    assert!(rig
        .handle
        .listen("late_listener", |_: &Invocation| -> HandlerResult {
            Ok(None)
        })
        .is_err());
    rig.send(&command("l2", "late_listener"));
    assert_eq!(rig.final_of("l2").await.reply, Some(vec![0xc3]));
    assert!(rig.handle.off("late_listener"));
    assert!(!rig.handle.off("late_listener"));
    rig.send(&command("l3", "late_listener"));
    assert_eq!(rig.final_of("l3").await.code, Some(Code::UnknownCommand));
    rig.handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_journal_survives_restart_and_compacts() {
    let dir = tempfile::tempdir().unwrap();
    let opts = RuntimeOptions {
        compact_after_records: 30,
        ..options(10)
    };
    let run = |ids: std::ops::Range<u32>| {
        let opts = opts.clone();
        let path = dir.path().to_path_buf();
        async move {
            let (transport, remote) = FakeTransport::new("dev-1").unwrap();
            let calls = Calls::default();
            let c = calls.clone();
            let handle = Runtime::builder()
                .options(opts)
                .listen("ok", move |inv: &Invocation| -> HandlerResult {
                    c.push(inv);
                    Ok(None)
                })
                .unwrap()
                .open_dir(&path)
                .unwrap()
                .start(Arc::new(transport))
                .unwrap();
            let rig = Rig {
                handle,
                remote,
                calls,
                bounded: true,
            };
            for i in ids.clone() {
                rig.send(&command(&format!("f{i}"), "ok"));
            }
            for i in ids {
                rig.final_of(&format!("f{i}")).await;
            }
            rig
        }
    };
    let rig = run(0..40).await;
    assert!(
        rig.handle.stats().compactions >= 1,
        "{:?}",
        rig.handle.stats()
    );
    rig.handle.shutdown().await.unwrap();
    // Restart: earlier ids are remembered (dedupe survives compaction).
    let rig = run(40..41).await;
    rig.send(&command("f3", "ok"));
    assert_eq!(rig.next_status().await.id, "f3");
    assert_eq!(
        rig.calls.count("f3"),
        0,
        "deduped from the compacted journal"
    );
    rig.handle.shutdown().await.unwrap();
}

/// The bundled `echo` artifact (built by `cargo xtask build-plugins`).
fn echo_wasm() -> std::path::PathBuf {
    relay_host::bundled::plugin("echo")
        .expect("the bundled plugins are built first: run `cargo xtask build-plugins`")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_plugin_from_the_plugin_dir_replies_on_wasmi() {
    use relay_core::engine::EngineKind;
    use relay_host::runtime::{loader, Handlers};

    let plugins = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::copy(echo_wasm(), plugins.path().join("echo.wasm")).unwrap();
    std::fs::write(plugins.path().join("README.txt"), "not a plugin").unwrap();
    let engine = relay_host::engine::build(EngineKind::Wasmi).unwrap();
    let handlers = Handlers::default();
    let limits = relay_core::limits::Limits::default();
    let loaded =
        loader::load_dir(&*engine, plugins.path(), &limits, data.path(), &handlers).unwrap();
    assert_eq!(
        loaded.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["echo"]
    );

    let (transport, remote) = FakeTransport::new("dev-1").unwrap();
    let handle = Runtime::builder()
        .options(options(10))
        .handlers(handlers)
        .open_dir(data.path())
        .unwrap()
        .start(Arc::new(transport))
        .unwrap();
    let rig = Rig {
        handle,
        remote,
        calls: Calls::default(),
        bounded: true,
    };
    let payload = msgpack(serde_json::json!({"hello": "world"}));
    rig.remote.send_command(
        Role::Secondary,
        command("e1", "echo")
            .with_payload(payload.clone())
            .to_msgpack(),
    );
    let s = rig.final_of("e1").await;
    assert_eq!(
        (s.status, s.attempt, s.reply),
        (State::Succeeded, 1, Some(payload))
    );

    rig.send(&command("e2", "_plugins"));
    let s = rig.final_of("e2").await;
    let list: serde_json::Value = rmp_serde::from_slice(&s.reply.unwrap()).unwrap();
    assert_eq!(list[0]["name"], "echo");
    assert_eq!(list[0]["commands"][0]["name"], "echo");
    rig.handle.shutdown().await.unwrap();
}

#[test]
fn loader_refuses_two_plugins_with_one_name_and_a_missing_dir() {
    use relay_core::engine::EngineKind;
    use relay_host::runtime::loader::{self, LoadError};
    use relay_host::runtime::Handlers;

    let plugins = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::copy(echo_wasm(), plugins.path().join("a.wasm")).unwrap();
    std::fs::copy(echo_wasm(), plugins.path().join("b.wasm")).unwrap();
    let engine = relay_host::engine::build(EngineKind::Wasmi).unwrap();
    let limits = relay_core::limits::Limits::default();
    let err = loader::load_dir(
        &*engine,
        plugins.path(),
        &limits,
        data.path(),
        &Handlers::default(),
    )
    .unwrap_err();
    assert!(matches!(err, LoadError::SameName { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("a.wasm") && text.contains("b.wasm"), "{text}");

    std::fs::write(plugins.path().join("b.wasm"), b"not wasm").unwrap();
    let err = loader::load_dir(
        &*engine,
        plugins.path(),
        &limits,
        data.path(),
        &Handlers::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, LoadError::Load { .. }) && err.to_string().contains("b.wasm"),
        "{err}"
    );

    let missing = plugins.path().join("nope");
    let err = loader::load_dir(
        &*engine,
        &missing,
        &limits,
        data.path(),
        &Handlers::default(),
    )
    .unwrap_err();
    assert!(matches!(err, LoadError::Dir { .. }), "{err}");
}

/// Records in the journal image (a copy, so the live storage is untouched).
fn journal_records(mem: &Mem) -> Vec<Record> {
    let mut image = mem.lock().clone();
    let (records, _) = image.replay_all().unwrap();
    records.iter().map(|r| Record::decode(r).unwrap()).collect()
}

/// kill -9 after an outcome is durable but before the broker acknowledged
/// its final status: the restarted host publishes that status again (from
/// the journal, without re-running the handler). A status the broker did
/// acknowledge is journaled `Delivered` and not published again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_statuses_the_broker_never_acked_are_published_again_after_a_crash() {
    let mem = Mem::default();
    let old = Rig::start(mem.clone(), options(10), &Gate::default());
    // Acknowledged normally: journaled as delivered.
    old.send(&command("acked", "ok"));
    assert_eq!(old.final_of("acked").await.status, State::Succeeded);
    let mut delivered = false;
    for _ in 0..5_000 {
        old.settle().await;
        delivered = journal_records(&mem)
            .iter()
            .any(|r| matches!(r, Record::Delivered { id } if id == "acked"));
        if delivered {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        delivered,
        "the PUBACK of acked's final status was journaled"
    );

    // The broker goes quiet: these statuses leave but are never acknowledged.
    old.remote.hold_publish_acks(true);
    old.send(&command("lost-1", "ok"));
    old.send(&command("lost-2", "ok"));
    let first = old.final_of("lost-1").await;
    let second = old.final_of("lost-2").await;
    old.settle().await;
    let mut image = mem.lock().clone();
    image.crash();

    let rig = Rig::start(SharedStorage::new(image), options(10), &Gate::default());
    let again = vec![rig.next_status().await, rig.next_status().await];
    assert_eq!(
        again,
        vec![first, second],
        "the same recorded statuses, in order"
    );
    assert!(rig.calls.all().is_empty(), "no handler ran again");
    // Nothing else is re-published (`acked` was delivered): the next status
    // is the one of a new command.
    rig.send(&command("next", "ok"));
    assert_eq!(rig.next_status().await.id, "next");
    rig.handle.shutdown().await.unwrap();
    old.handle.shutdown().await.unwrap();
}

/// Under load the `accepted` of a queued command is held back
/// (`relay_core::machine`): dropped when its next status goes out first,
/// published anyway once it was held for `HOLD`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_of_a_queued_command_is_held_back_then_coalesced_or_published() {
    use std::time::Instant;
    const HOLD: Duration = Duration::from_millis(relay_host::core::machine::HOLD_MS);
    let gate = Gate::default();
    let rig = Rig::start(Mem::default(), options(10), &gate);
    // The device is idle: `g1` starts at once, its `accepted` is not held
    // (it leaves with its `running`, coalesced into it: same commit).
    let sent = Instant::now();
    rig.send(&command("g1", "gate"));
    let first = rig.next_status().await;
    assert_eq!(first.id, "g1");
    assert!(!first.is_final());
    // `q0` waits behind `g1`, which blocks: its `accepted` goes out only
    // after the hold, while `g1` still runs.
    rig.send(&command("q0", "ok"));
    let mut seen = Vec::new();
    let q0 = loop {
        let s = rig.next_status().await;
        if s.id == "q0" {
            break s;
        }
        seen.push(s);
    };
    assert_eq!(q0.status, State::Accepted);
    assert!(sent.elapsed() >= HOLD, "published before the hold ended");
    assert!(
        seen.iter().all(|s| s.id == "g1" && !s.is_final()),
        "{seen:?}"
    );
    // Ten more queue up behind `g1`; the gate opens; they run within the
    // hold, so their `accepted` is superseded by their next status.
    let ids: Vec<String> = (1..=10).map(|i| format!("q{i}")).collect();
    let queued_at = Instant::now();
    for id in &ids {
        rig.send(&command(id, "ok"));
    }
    rig.all_acked().await;
    gate.open();
    let mut statuses: HashMap<String, Vec<State>> = HashMap::new();
    let mut finals_at = HashMap::new();
    while finals_at.len() < ids.len() {
        let s = rig.next_status().await;
        if s.is_final() && ids.contains(&s.id) {
            finals_at.insert(s.id.clone(), queued_at.elapsed());
        }
        statuses.entry(s.id.clone()).or_default().push(s.status);
    }
    for id in &ids {
        let states = &statuses[id];
        assert_eq!(states.last(), Some(&State::Succeeded), "{id}: {states:?}");
        assert_eq!(states.iter().filter(|s| **s == State::Succeeded).count(), 1);
        // In order: whatever intermediate status went out precedes the final.
        let rank = |s: &State| match s {
            State::Accepted => 0,
            State::Running => 1,
            _ => 2,
        };
        assert!(
            states.windows(2).all(|w| rank(&w[0]) <= rank(&w[1])),
            "{id}: {states:?}"
        );
        // Final within the hold of its queueing: its `accepted` was never due.
        if finals_at[id] < HOLD {
            assert!(!states.contains(&State::Accepted), "{id}: {states:?}");
        }
    }
    assert!(rig.handle.stats().statuses_coalesced >= 1);
    rig.handle.shutdown().await.unwrap();
}

/// A final status the broker acknowledges while the host is shutting down
/// gracefully is journaled as delivered: the restart does not publish it
/// again. (Found by the bad-input test: a SIGTERM right after the app saw a
/// status used to lose the ack, and the restarted host re-sent it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_that_arrive_during_shutdown_are_journaled_as_delivered() {
    let mem = Mem::default();
    let rig = Rig::start(mem.clone(), options(10), &Gate::default());
    rig.remote.hold_publish_acks(true);
    rig.send(&command("late-ack", "ok"));
    assert_eq!(rig.final_of("late-ack").await.status, State::Succeeded);
    let Rig { handle, remote, .. } = rig;
    let stopping = tokio::spawn(handle.shutdown());
    // The broker acknowledges only now, while the runtime stops.
    tokio::time::sleep(Duration::from_millis(50)).await;
    remote.hold_publish_acks(false);
    stopping.await.unwrap().unwrap();
    let delivered = journal_records(&mem)
        .iter()
        .any(|r| matches!(r, Record::Delivered { id } if id == "late-ack"));
    assert!(delivered, "the late PUBACK was journaled before the stop");
    // Restarted: nothing to publish again.
    let again = Rig::start(mem.clone(), options(10), &Gate::default());
    again.send(&command("after", "ok"));
    let seen = again.until_final("after").await;
    assert!(seen.iter().all(|s| s.id == "after"), "{seen:?}");
    again.handle.shutdown().await.unwrap();
}
