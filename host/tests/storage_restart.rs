//! A restart on a full disk (issue 9, point 7): `relay run` must not exit in
//! a loop. The journal opens and replays without free space, the device
//! starts degraded (`storage_full`), runs the commands it had acknowledged,
//! takes nothing new until space returns, then takes it in order. On the
//! injected disk everywhere, and on a real full tmpfs (through `open_dir`,
//! the path `relay run` takes) where the test may mount one.

mod storage_support;

use std::sync::{Arc, Mutex};

use relay_core::envelope::Envelope;
use relay_core::plugin::Role;
use relay_core::status::State;
use relay_host::transport::FakeTransport;
use storage_support::*;

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
