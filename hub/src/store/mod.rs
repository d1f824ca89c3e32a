//! The hub's durable record: every request, every transition, every
//! device's presence. One code path for SQLite (the embedded default: one
//! file, WAL, `synchronous=FULL`) and Postgres (fleets), through sqlx's
//! `Any` driver.
//!
//! All writes go through one writer task that commits them in batches
//! (group commit): a submit is answered only once the transaction holding
//! it is durable, and many submits share one fsync. Status and presence
//! records ride the same queue, so they are stored in the order they came.
//! After each commit the writer announces the state changes on a broadcast
//! channel, which the API's waiters listen to. A device's status is also
//! announced as soon as it is received ([`Store::received`]), before its
//! commit: a caller waiting for a final status is answered from it at once,
//! one commit earlier (the record follows within that commit; if the hub
//! dies first, the device is asked again and answers the same).

mod lease;
mod read;
mod rollouts;
mod schema;
mod write;

pub use read::{DeviceView, ListFilter, OpenRequest, RequestView, TransitionView};
pub use rollouts::{NewRollout, RolloutRow, TargetRow};
pub use schema::Backend;

use std::str::FromStr;

use relay_core::status::Status;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::AnyPool;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::state::HubState;
use crate::submit::NewRequest;

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL {0:?}: use sqlite:<path> or postgres://...")]
    Url(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("the store's writer has stopped")]
    Stopped,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// What a submit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// Stored now.
    Created,
    /// The same id was submitted before with the same content: one request.
    Duplicate,
    /// The same id was submitted before with different content.
    Conflict,
}

/// A state change, announced after it is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub device: String,
    pub id: String,
    pub state: HubState,
}

/// A device's status as received, before it is committed.
#[derive(Debug, Clone)]
pub struct Received {
    pub device: String,
    pub status: std::sync::Arc<Status>,
    pub at: u64,
}

/// One queued write.
#[derive(Debug)]
pub(crate) enum Write {
    Submit(
        Box<NewRequest>,
        oneshot::Sender<Result<Submitted, StoreError>>,
    ),
    Sent {
        device: String,
        id: String,
        at: u64,
    },
    Status {
        device: String,
        status: Box<Status>,
        at: u64,
    },
    Finish {
        device: String,
        id: String,
        state: HubState,
        at: u64,
        done: Option<oneshot::Sender<Result<bool, StoreError>>>,
    },
    Presence {
        device: String,
        online: bool,
        connection: (u64, u32),
        at: u64,
    },
    /// Answered once every write queued before it is committed.
    Flush(oneshot::Sender<Result<bool, StoreError>>),
}

/// The store handle (cheap to clone).
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    writes: mpsc::Sender<Write>,
    changes: broadcast::Sender<Change>,
    received: broadcast::Sender<Received>,
}

impl Store {
    /// Opens (creating if needed) the database at `url`: `sqlite:<path>` or
    /// `postgres://user@host:port/db`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of(url).ok_or_else(|| StoreError::Url(url.into()))?;
        let url = match backend {
            Backend::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        for pragma in [
                            "PRAGMA journal_mode=WAL",
                            "PRAGMA synchronous=FULL",
                            "PRAGMA busy_timeout=10000",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        for statement in backend.schema() {
            sqlx::query(&statement).execute(&pool).await?;
        }
        let (writes, queue) = mpsc::channel(4096);
        let (changes, _) = broadcast::channel(16_384);
        let (received, _) = broadcast::channel(16_384);
        tokio::spawn(write::writer(pool.clone(), queue, changes.clone()));
        Ok(Store {
            pool,
            backend,
            writes,
            changes,
            received,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Stores `request`; returns once it is durable.
    pub async fn submit(&self, request: NewRequest) -> Result<Submitted, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Write::Submit(Box::new(request), tx)).await?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }

    /// The hub ends a request itself; `Ok(false)` if it was final already
    /// (or, for `cancelled`, no longer `queued`).
    pub async fn finish(
        &self,
        device: &str,
        id: &str,
        state: HubState,
        at: u64,
    ) -> Result<bool, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Write::Finish {
            device: device.into(),
            id: id.into(),
            state,
            at,
            done: Some(tx),
        })
        .await?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }

    /// Waits until every write queued so far is committed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Write::Flush(tx)).await?;
        rx.await.map_err(|_| StoreError::Stopped)?.map(|_| ())
    }

    /// Queues a write without waiting for its commit.
    pub(crate) async fn send(&self, write: Write) -> Result<(), StoreError> {
        self.writes
            .send(write)
            .await
            .map_err(|_| StoreError::Stopped)
    }

    /// Records that `id` was published (a `queued` request becomes `sent`).
    pub async fn sent(&self, device: &str, id: &str, at: u64) -> Result<(), StoreError> {
        self.send(Write::Sent {
            device: device.into(),
            id: id.into(),
            at,
        })
        .await
    }

    /// Records a status the device published.
    pub async fn status(&self, device: &str, status: Status, at: u64) -> Result<(), StoreError> {
        if self.received.receiver_count() > 0 {
            let _ = self.received.send(Received {
                device: device.into(),
                status: std::sync::Arc::new(status.clone()),
                at,
            });
        }
        self.send(Write::Status {
            device: device.into(),
            status: Box::new(status),
            at,
        })
        .await
    }

    /// Records a device's presence.
    pub async fn presence(
        &self,
        device: &str,
        online: bool,
        connection: (u64, u32),
        at: u64,
    ) -> Result<(), StoreError> {
        self.send(Write::Presence {
            device: device.into(),
            online,
            connection,
            at,
        })
        .await
    }

    /// State changes from now on.
    pub fn changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Device statuses from now on, as they are received (before commit).
    pub fn received(&self) -> broadcast::Receiver<Received> {
        self.received.subscribe()
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// The states a request can still leave, as an SQL list.
const OPEN: &str = "('queued','sent','accepted','running','retrying')";

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

#[cfg(test)]
mod tests;
