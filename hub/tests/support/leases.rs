//! The store's part of several instances on one database, run on SQLite
//! (the crate's unit tests) and Postgres (`tests/postgres.rs`): leases
//! taken, held, renewed and taken over once run out; the polls a holder
//! makes; cancel asks reaching the holder only.

use relay_core::status::State;
use relay_hub::store::{Store, StoreError};
use relay_hub::HubState;

use super::records::{request, status};

pub async fn leases_share_the_devices_out(store: &Store) -> Result<(), StoreError> {
    let mut r2 = request("r2", &[2]);
    r2.device = "d2".into();
    store.submit(request("r1", &[1])).await?;
    store.submit(r2).await?;
    let mut unleased = store.unleased_devices(100).await?;
    unleased.sort();
    assert_eq!(unleased, ["d1", "d2"]);

    // `a` takes d1; `b` cannot while `a`'s lease runs; `a` may again.
    assert!(store.claim_lease("d1", "a", 1_000, 100).await?);
    assert!(!store.claim_lease("d1", "b", 1_100, 200).await?);
    assert!(store.claim_lease("d1", "a", 1_200, 300).await?);
    assert_eq!(store.unleased_devices(400).await?, ["d2"]);
    let held = store.renew_leases("a", 2_000).await?;
    assert_eq!(held.into_iter().collect::<Vec<_>>(), ["d1"]);

    // `a` stops renewing: once its lease ran out, `b` takes d1 over.
    assert!(!store.claim_lease("d1", "b", 3_000, 1_999).await?);
    assert!(store.claim_lease("d1", "b", 4_500, 2_500).await?);
    assert!(store.renew_leases("a", 5_000).await?.is_empty());
    assert_eq!(store.renew_leases("b", 5_000).await?.len(), 1);

    // The holder's polls: queued requests past a sequence number, and
    // states the device reported (through any instance).
    let queued = store.queued_after("b", 0).await?;
    assert_eq!(queued.len(), 1);
    let (seq, open) = &queued[0];
    assert_eq!(
        (open.device.as_str(), open.envelope.id.as_str()),
        ("d1", "r1")
    );
    assert!(store.queued_after("b", *seq).await?.is_empty());
    assert!(store.queued_after("a", 0).await?.is_empty());
    assert_eq!(store.open_requests_of("d1").await?.len(), 1);
    store
        .status("d1", status("r1", State::Accepted, 0, 3_000), 3_000)
        .await?;
    store.flush().await?;
    assert_eq!(
        store.heard_since("b", 2_900).await?,
        [("d1".to_owned(), "r1".to_owned(), HubState::Accepted)]
    );
    assert!(store.heard_since("b", 3_001).await?.is_empty());
    assert!(store.heard_since("a", 0).await?.is_empty());

    // A cancel ask reaches the holder only, until it drops it.
    store.ask_cancel("d1", "r1", 3_100).await?;
    store.ask_cancel("d1", "r1", 3_200).await?;
    assert!(store.cancel_asks("a").await?.is_empty());
    assert_eq!(
        store.cancel_asks("b").await?,
        [("d1".to_owned(), "r1".to_owned())]
    );
    store.drop_cancel_ask("d1", "r1").await?;
    assert!(store.cancel_asks("b").await?.is_empty());
    Ok(())
}
