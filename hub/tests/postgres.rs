//! The store's one code path on Postgres: a real server started by the test
//! (`initdb` + `pg_ctl` in a temp dir, on a free loopback port, as the
//! `postgres` user when run as root since initdb refuses root), then the
//! same operations the SQLite tests run: idempotent submit, statuses and
//! history, cancel and expiry, concurrent submits through group commit,
//! and everything still there after a reopen; and the leases several hub
//! instances share the devices out with.

mod support;

use std::time::{Duration, Instant};

use anyhow::Result;
use relay_core::status::State;
use relay_hub::store::{ListFilter, Store, Submitted};
use relay_hub::HubState;
use support::postgres::Postgres;
use support::records::{request, status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_works_the_same_on_postgres() -> Result<()> {
    let pg = tokio::task::spawn_blocking(Postgres::start).await??;
    let store = Store::open(&pg.url()).await?;
    assert_eq!(store.submit(request("r1", &[1])).await?, Submitted::Created);
    assert_eq!(
        store.submit(request("r1", &[1])).await?,
        Submitted::Duplicate
    );
    assert_eq!(
        store.submit(request("r1", &[2])).await?,
        Submitted::Conflict
    );
    store.sent("d1", "r1", 1_100).await?;
    for (state, attempt, at) in [
        (State::Accepted, 0, 1_200),
        (State::Running, 1, 1_300),
        (State::Succeeded, 1, 1_400),
        (State::Succeeded, 1, 1_400),
    ] {
        store
            .status("d1", status("r1", state, attempt, at), at)
            .await?;
    }
    store.submit(request("c", &[])).await?;
    assert!(store.finish("d1", "c", HubState::Cancelled, 1_500).await?);
    store.submit(request("e", &[])).await?;
    assert!(store.finish("d1", "e", HubState::Expired, 10_000).await?);
    store.flush().await?;
    let r1 = store.get("d1", "r1").await?.expect("stored");
    assert_eq!(r1.state, HubState::Succeeded);
    assert_eq!(r1.reply, Some(serde_json::json!("ok")));
    assert_eq!(r1.history.as_ref().map(Vec::len), Some(5));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..500 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.submit(request(&format!("m{i:04}"), &[])).await
        }));
    }
    for task in tasks {
        assert_eq!(task.await??, Submitted::Created);
    }
    println!(
        "500 concurrent durable submits on Postgres: {:?}",
        started.elapsed()
    );
    store.presence("d1", true, (5, 2), 7).await?;
    drop(store);
    let store = Store::open(&pg.url()).await?;
    assert_eq!(store.open_requests().await?.len(), 500);
    let cancelled = store
        .list(
            "d1",
            &ListFilter {
                state: Some(HubState::Cancelled),
                ..ListFilter::default()
            },
        )
        .await?;
    assert_eq!(cancelled.len(), 1);
    let devices = store.devices().await?;
    assert_eq!((devices[0].online, devices[0].session), (true, 2));
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_work_the_same_on_postgres() -> Result<()> {
    let pg = tokio::task::spawn_blocking(Postgres::start).await??;
    let store = Store::open(&pg.url()).await?;
    support::leases::leases_share_the_devices_out(&store).await?;
    Ok(())
}
