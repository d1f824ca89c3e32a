//! The writer task: drains the write queue, applies a batch in one
//! transaction (group commit), answers the submitters, then announces the
//! state changes. A batch that fails is retried one write per transaction,
//! so one bad write cannot fail the others.

use relay_core::status::Status;
use sqlx::{AnyConnection, AnyPool, Connection, Row};
use tokio::sync::{broadcast, mpsc};

use super::{to_i64, Change, StoreError, Submitted, Write, OPEN};
use crate::state::HubState;
use crate::submit::NewRequest;

/// Most writes in one transaction.
const BATCH: usize = 512;

pub(super) async fn writer(
    pool: AnyPool,
    mut queue: mpsc::Receiver<Write>,
    changes: broadcast::Sender<Change>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        if queue.recv_many(&mut batch, BATCH).await == 0 {
            return;
        }
        let mut conn = match pool.acquire().await {
            Ok(conn) => conn,
            Err(e) => {
                fail_all(&mut batch, &e.to_string());
                continue;
            }
        };
        let mut announced = Vec::new();
        match apply_batch(&mut conn, &batch, &mut announced).await {
            Ok(results) => {
                for (write, result) in batch.drain(..).zip(results) {
                    answer(write, Ok(result));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "store: batch failed, retrying one by one");
                announced.clear();
                for write in batch.drain(..) {
                    let result =
                        apply_batch(&mut conn, std::slice::from_ref(&write), &mut announced)
                            .await
                            .map(|mut r| r.pop().unwrap_or(Outcome::None));
                    if let Err(e) = &result {
                        tracing::error!(error = %e, "store: write failed");
                    }
                    answer(write, result);
                }
            }
        }
        for change in announced {
            let _ = changes.send(change);
        }
    }
}

/// What one write did, for its answer.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Submitted(Submitted),
    Finished(bool),
    None,
}

fn answer(write: Write, result: Result<Outcome, StoreError>) {
    match write {
        Write::Submit(_, tx) => {
            let _ = tx.send(result.map(|o| match o {
                Outcome::Submitted(s) => s,
                _ => Submitted::Created,
            }));
        }
        Write::Finish { done: Some(tx), .. } | Write::Flush(tx) => {
            let _ = tx.send(result.map(|o| matches!(o, Outcome::Finished(true))));
        }
        _ => {}
    }
}

fn fail_all(batch: &mut Vec<Write>, error: &str) {
    for write in batch.drain(..) {
        answer(
            write,
            Err(StoreError::Corrupt(format!("no connection: {error}"))),
        );
    }
}

async fn apply_batch(
    conn: &mut AnyConnection,
    batch: &[Write],
    announced: &mut Vec<Change>,
) -> Result<Vec<Outcome>, StoreError> {
    let mut tx = conn.begin().await?;
    let mut results = Vec::with_capacity(batch.len());
    let before = announced.len();
    for write in batch {
        let outcome = match write {
            Write::Submit(request, _) => {
                Outcome::Submitted(submit(&mut tx, request, announced).await?)
            }
            Write::Sent { device, id, at } => {
                transition_if(
                    &mut tx,
                    device,
                    id,
                    HubState::Sent,
                    "('queued')",
                    *at,
                    announced,
                )
                .await?;
                Outcome::None
            }
            Write::Status { device, status, at } => {
                record_status(&mut tx, device, status, *at, announced).await?;
                Outcome::None
            }
            Write::Finish {
                device,
                id,
                state,
                at,
                ..
            } => {
                let from = if *state == HubState::Cancelled {
                    "('queued')"
                } else {
                    OPEN
                };
                Outcome::Finished(
                    transition_if(&mut tx, device, id, *state, from, *at, announced).await?,
                )
            }
            Write::Presence {
                device,
                online,
                connection,
                at,
            } => {
                sqlx::query(
                    "INSERT INTO devices (device, online, boot, session, seen_at)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (device) DO UPDATE SET online = excluded.online,
                       boot = excluded.boot, session = excluded.session, seen_at = excluded.seen_at",
                )
                .bind(device.as_str())
                .bind(i64::from(*online))
                .bind(to_i64(connection.0))
                .bind(i64::from(connection.1))
                .bind(to_i64(*at))
                .execute(&mut *tx)
                .await?;
                Outcome::None
            }
            Write::Flush(_) => Outcome::None,
        };
        results.push(outcome);
    }
    match tx.commit().await {
        Ok(()) => Ok(results),
        Err(e) => {
            announced.truncate(before);
            Err(e.into())
        }
    }
}

async fn submit(
    conn: &mut AnyConnection,
    r: &NewRequest,
    announced: &mut Vec<Change>,
) -> Result<Submitted, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO requests (device, id, name, kind, role, payload, submitted_by,
            submitted_at, expires_at, deadline_at, state, attempt, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'queued', 0, $11)
         ON CONFLICT (device, id) DO NOTHING RETURNING seq",
    )
    .bind(r.device.as_str())
    .bind(r.id.as_str())
    .bind(r.name.as_str())
    .bind(r.kind.as_str())
    .bind(r.role.as_str())
    .bind(r.payload.clone())
    .bind(r.submitted_by.as_str())
    .bind(to_i64(r.submitted_at))
    .bind(to_i64(r.expires_at))
    .bind(r.deadline_at.map(to_i64))
    .bind(to_i64(r.submitted_at))
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = inserted {
        let seq: i64 = row.try_get(0)?;
        history(conn, seq, HubState::Queued, 0, None, None, r.submitted_at).await?;
        announced.push(Change {
            device: r.device.clone(),
            id: r.id.clone(),
            state: HubState::Queued,
        });
        return Ok(Submitted::Created);
    }
    let row = sqlx::query("SELECT name, kind, payload FROM requests WHERE device = $1 AND id = $2")
        .bind(r.device.as_str())
        .bind(r.id.as_str())
        .fetch_one(&mut *conn)
        .await?;
    let (name, kind, payload): (String, String, Vec<u8>) =
        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    Ok(
        if name == r.name && kind == r.kind.as_str() && payload == r.payload {
            Submitted::Duplicate
        } else {
            Submitted::Conflict
        },
    )
}

/// Moves `(device, id)` to `state` if it is in one of `from`; `true` if it did.
async fn transition_if(
    conn: &mut AnyConnection,
    device: &str,
    id: &str,
    state: HubState,
    from: &str,
    at: u64,
    announced: &mut Vec<Change>,
) -> Result<bool, StoreError> {
    let (code, message) = match state {
        HubState::Expired => (
            Some("expired"),
            Some("the TTL passed before the device acknowledged the request"),
        ),
        HubState::TimedOut => (
            Some("timed_out"),
            Some("the RPC's deadline passed without a final status"),
        ),
        HubState::Cancelled => (Some("cancelled"), Some("cancelled before it was sent")),
        _ => (None, None),
    };
    let row = sqlx::query(&format!(
        "UPDATE requests SET state = $1, code = $2, message = $3, updated_at = $4
         WHERE device = $5 AND id = $6 AND state IN {from} RETURNING seq, attempt"
    ))
    .bind(state.as_str())
    .bind(code)
    .bind(message)
    .bind(to_i64(at))
    .bind(device)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(false);
    };
    let (seq, attempt): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    history(conn, seq, state, attempt, code, message, at).await?;
    announced.push(Change {
        device: device.into(),
        id: id.into(),
        state,
    });
    Ok(true)
}

/// A device's status: history always (unless it repeats the final state),
/// the request's state unless it is final already. A device's own final
/// status replaces the hub's `expired` (the device knows best whether it ran).
async fn record_status(
    conn: &mut AnyConnection,
    device: &str,
    status: &Status,
    at: u64,
    announced: &mut Vec<Change>,
) -> Result<(), StoreError> {
    let row = sqlx::query("SELECT seq, state FROM requests WHERE device = $1 AND id = $2")
        .bind(device)
        .bind(status.id.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else {
        return Ok(()); // not sent through this hub
    };
    let seq: i64 = row.try_get(0)?;
    let current: String = row.try_get(1)?;
    let current = HubState::parse(&current)
        .ok_or_else(|| StoreError::Corrupt(format!("state {current:?}")))?;
    let new = HubState::from_device(status.status);
    if current.is_final() && current == new {
        return Ok(()); // a final status again (a resend was answered)
    }
    let code = status.code.as_ref().map(|c| c.as_str().to_owned());
    history(
        conn,
        seq,
        new,
        i64::from(status.attempt),
        code.as_deref(),
        status.message.as_deref(),
        status.at,
    )
    .await?;
    // Statuses of one request may arrive out of order (several instances
    // share the status subscription, each taking some), so a status moves
    // the request only forward: to a later attempt, a later step of the
    // same attempt, or a final state; checked in the UPDATE itself so a
    // concurrent writer's commit is seen.
    let updated = sqlx::query(&format!(
        "UPDATE requests SET state = $1, attempt = $2, code = $3, message = $4, reply = $5,
           updated_at = $6
         WHERE seq = $7 AND (
           (state IN {OPEN} AND ($8 = 1 OR attempt < $2 OR (attempt = $2 AND {RANK} < $9)))
           OR (state = 'expired' AND $8 = 1))"
    ))
    .bind(new.as_str())
    .bind(i64::from(status.attempt))
    .bind(code)
    .bind(status.message.clone())
    .bind(status.reply.clone())
    .bind(to_i64(at))
    .bind(seq)
    .bind(i64::from(new.is_final()))
    .bind(rank(new))
    .execute(&mut *conn)
    .await?;
    if updated.rows_affected() > 0 {
        announced.push(Change {
            device: device.into(),
            id: status.id.clone(),
            state: new,
        });
    }
    Ok(())
}

/// The order of a request's states within one attempt, as SQL over the
/// `state` column (finals are handled apart).
const RANK: &str = "(CASE state WHEN 'queued' THEN 0 WHEN 'sent' THEN 1 WHEN 'accepted' THEN 2
    WHEN 'running' THEN 3 WHEN 'retrying' THEN 4 ELSE 5 END)";

/// [`RANK`] of `state`.
fn rank(state: HubState) -> i64 {
    match state {
        HubState::Queued => 0,
        HubState::Sent => 1,
        HubState::Accepted => 2,
        HubState::Running => 3,
        HubState::Retrying => 4,
        _ => 5,
    }
}

async fn history(
    conn: &mut AnyConnection,
    seq: i64,
    state: HubState,
    attempt: i64,
    code: Option<&str>,
    message: Option<&str>,
    at: u64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO transitions (request_seq, at, state, attempt, code, message)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(seq)
    .bind(to_i64(at))
    .bind(state.as_str())
    .bind(attempt)
    .bind(code)
    .bind(message)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
