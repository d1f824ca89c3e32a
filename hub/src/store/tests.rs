//! The store on a real SQLite file (Postgres runs the same code in the
//! hub's Postgres tests).

use relay_core::status::State;

use super::*;

#[path = "../../tests/support/leases.rs"]
mod leases;
#[path = "../../tests/support/records.rs"]
mod records;

use records::{request, status};

async fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite:{}", dir.path().join("hub.db").display());
    (dir, Store::open(&url).await.expect("open"))
}

#[tokio::test]
async fn submit_is_idempotent_by_id_and_refuses_a_different_request_with_the_same_id() {
    let (_dir, store) = open().await;
    assert_eq!(
        store.submit(request("r1", &[1])).await.unwrap(),
        Submitted::Created
    );
    assert_eq!(
        store.submit(request("r1", &[1])).await.unwrap(),
        Submitted::Duplicate
    );
    assert_eq!(
        store.submit(request("r1", &[2])).await.unwrap(),
        Submitted::Conflict
    );
    let open = store.open_requests().await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].envelope.payload, [1]);
}

#[tokio::test]
async fn statuses_make_a_history_and_the_final_one_sticks() {
    let (_dir, store) = open().await;
    let mut changes = store.changes();
    store.submit(request("r1", &[])).await.unwrap();
    store.sent("d1", "r1", 1_100).await.unwrap();
    for (state, attempt, at) in [
        (State::Accepted, 0, 1_200),
        (State::Running, 1, 1_300),
        (State::Succeeded, 1, 1_400),
        (State::Succeeded, 1, 1_400), // the final status again, after a resend
    ] {
        store
            .status("d1", status("r1", state, attempt, at), at)
            .await
            .unwrap();
    }
    // A late hub decision does not override the device.
    assert!(!store
        .finish("d1", "r1", HubState::Expired, 2_000)
        .await
        .unwrap());
    let view = store.get("d1", "r1").await.unwrap().expect("stored");
    assert_eq!(view.state, HubState::Succeeded);
    assert_eq!(view.reply, Some(serde_json::json!("ok")));
    let states: Vec<_> = view.history.unwrap().iter().map(|t| t.state).collect();
    assert_eq!(
        states,
        [
            HubState::Queued,
            HubState::Sent,
            HubState::Accepted,
            HubState::Running,
            HubState::Succeeded
        ]
    );
    let mut seen = Vec::new();
    while let Ok(change) = changes.try_recv() {
        seen.push(change.state);
    }
    assert_eq!(seen.last(), Some(&HubState::Succeeded));
    assert!(store.open_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn only_a_queued_request_can_be_cancelled_and_the_device_overrides_a_hub_expiry() {
    let (_dir, store) = open().await;
    store.submit(request("a", &[])).await.unwrap();
    store.submit(request("b", &[])).await.unwrap();
    store.sent("d1", "b", 1_100).await.unwrap();
    assert!(store
        .finish("d1", "a", HubState::Cancelled, 1_200)
        .await
        .unwrap());
    assert!(!store
        .finish("d1", "b", HubState::Cancelled, 1_200)
        .await
        .unwrap());
    assert!(store
        .finish("d1", "b", HubState::Expired, 10_000)
        .await
        .unwrap());
    store
        .status("d1", status("b", State::Succeeded, 1, 9_000), 10_500)
        .await
        .unwrap();
    store.flush().await.unwrap();
    let b = store.get("d1", "b").await.unwrap().unwrap();
    assert_eq!(b.state, HubState::Succeeded);
    let a = store.get("d1", "a").await.unwrap().unwrap();
    assert_eq!(
        (a.state, a.code.as_deref()),
        (HubState::Cancelled, Some("cancelled"))
    );
    let list = store
        .list(
            "d1",
            &ListFilter {
                state: Some(HubState::Cancelled),
                ..ListFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(list.len(), 1);
}

#[tokio::test]
async fn many_concurrent_submits_are_all_durable_and_in_order() {
    let (dir, store) = open().await;
    let mut tasks = Vec::new();
    for i in 0..500 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.submit(request(&format!("r{i:04}"), &[])).await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), Submitted::Created);
    }
    store.presence("d1", true, (5, 2), 7).await.unwrap();
    drop(store);
    // Reopened: everything is there.
    let url = format!("sqlite:{}", dir.path().join("hub.db").display());
    let store = Store::open(&url).await.unwrap();
    assert_eq!(store.open_requests().await.unwrap().len(), 500);
    let devices = store.devices().await.unwrap();
    assert_eq!(
        (devices.len(), devices[0].online, devices[0].session),
        (1, true, 2)
    );
}

#[tokio::test]
async fn leases_share_the_devices_out() {
    let (_dir, store) = open().await;
    leases::leases_share_the_devices_out(&store).await.unwrap();
}

#[tokio::test]
async fn statuses_arriving_out_of_order_never_move_a_request_back() {
    let (_dir, store) = open().await;
    store.submit(request("r1", &[])).await.unwrap();
    store.sent("d1", "r1", 1_100).await.unwrap();
    // Two instances each took some of the device's statuses: the final one
    // is recorded before the earlier ones.
    for (state, attempt) in [
        (State::Running, 1),
        (State::Retrying, 1),
        (State::Succeeded, 2),
        (State::Running, 2),
        (State::Accepted, 0),
        (State::Retrying, 1),
    ] {
        store
            .status("d1", status("r1", state, attempt, 1_200), 1_200)
            .await
            .unwrap();
    }
    store.flush().await.unwrap();
    let r1 = store.get("d1", "r1").await.unwrap().unwrap();
    assert_eq!((r1.state, r1.attempt), (HubState::Succeeded, 2));
    assert_eq!(r1.reply, Some(serde_json::json!("ok")));
    // A later attempt moves it on; an earlier step does not.
    store.submit(request("r2", &[])).await.unwrap();
    for (state, attempt) in [
        (State::Retrying, 1),
        (State::Running, 2),
        (State::Running, 1),
    ] {
        store
            .status("d1", status("r2", state, attempt, 1_300), 1_300)
            .await
            .unwrap();
    }
    store.flush().await.unwrap();
    let r2 = store.get("d1", "r2").await.unwrap().unwrap();
    assert_eq!((r2.state, r2.attempt), (HubState::Running, 2));
}

#[tokio::test]
async fn a_waiter_answered_from_a_received_final_status_sees_what_the_store_then_records() {
    let (_dir, store) = open().await;
    let new = request("r1", &[]);
    let queued = RequestView::queued(&new);
    store.submit(new).await.unwrap();
    let stored = store.get("d1", "r1").await.unwrap().unwrap();
    assert_eq!(queued, stored, "the submitter's view is the stored one");
    let running = status("r1", State::Running, 1, 1_100);
    assert!(queued.finished_by(&running, 1_100).is_none(), "not final");
    let done = status("r1", State::Succeeded, 1, 1_200);
    let early = queued.finished_by(&done, 1_200).unwrap();
    store.status("d1", done, 1_200).await.unwrap();
    store.flush().await.unwrap();
    let recorded = store.get("d1", "r1").await.unwrap().unwrap();
    assert_eq!(
        (early.state, early.attempt, &early.reply, early.updated_at),
        (
            recorded.state,
            recorded.attempt,
            &recorded.reply,
            recorded.updated_at
        )
    );
    assert!(early
        .finished_by(&status("r1", State::Failed, 2, 1_300), 1_300)
        .is_none());
}
