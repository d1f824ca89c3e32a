//! Server-sent events: `GET /v1/devices/{device}/events` streams the
//! state changes of one device's requests as `text/event-stream`, so a
//! page (or any app) sees a request move to its final state without
//! polling.
//!
//! The stream follows [`Store::changes`], which the store's writer
//! announces only after the change is committed, so every event names a
//! state a read would return. Events:
//!
//! | `event:` | `data:` | meaning |
//! |----------|---------|---------|
//! | `ready` | `{"device"}` | subscribed: every change from here on is sent; read the list now |
//! | `state` | `{"device","id","state"}` | a request of the device changed state |
//! | `resync` | `{"device","reason","missed"}` | changes may have been missed (`lagged`: this client fell behind the broadcast; `poll`: other hub instances record changes this one does not announce); read again |
//!
//! Comments (`: keep-alive`) go out every 15 s so proxies keep the
//! connection open. Auth is the API's: `Authorization: Bearer <token>`
//! (401 without a known token, 403 without a role on the device). Browsers'
//! `EventSource` cannot set headers, so this route alone also takes the
//! token as `?access_token=<token>`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::stream::Stream;
use serde_json::json;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::api::{self, ApiError, ApiState};
use crate::store::{Change, Store};
use crate::users::Users;

/// How often an idle stream sends a keep-alive comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How often a stream tells its client to read again when other hub
/// instances share the database: their commits are not announced here.
pub const CLUSTER_RESYNC: Duration = Duration::from_secs(2);

/// What the events route needs.
#[derive(Clone)]
pub struct EventsState {
    pub store: Store,
    pub users: Arc<Users>,
    /// Set when other instances write to the same database.
    pub resync_every: Option<Duration>,
}

impl EventsState {
    pub fn of(api: &ApiState) -> EventsState {
        EventsState {
            store: api.store.clone(),
            users: api.users.clone(),
            resync_every: api.cluster.as_ref().map(|_| CLUSTER_RESYNC),
        }
    }
}

/// The events route, with its own state (merge it into the API router).
pub fn routes(state: EventsState) -> Router {
    Router::new()
        .route("/v1/devices/{device}/events", get(events))
        .with_state(state)
}

#[derive(Debug, Default, serde::Deserialize)]
struct EventsQuery {
    access_token: Option<String>,
}

async fn events(
    State(state): State<EventsState>,
    headers: HeaderMap,
    Path(device): Path<String>,
    Query(query): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let token = api::bearer(&headers).or(query.access_token.as_deref());
    let user = api::user_for(
        &state.users,
        token,
        "a known token is required: `Authorization: Bearer <token>` or `?access_token=<token>`",
    )?;
    api::role_on(&user, &device)?;
    // Subscribed before the answer starts: nothing committed after the
    // client's `ready` can be missed.
    let feed = Feed {
        changes: state.store.changes(),
        device,
        resync: state.resync_every.map(|every| {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick
        }),
        started: false,
    };
    let sse = Sse::new(feed.into_stream())
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"));
    let mut response = sse.into_response();
    // Tells buffering reverse proxies (nginx) to pass events on at once.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// One client's stream: the store's changes, filtered to its device.
struct Feed {
    changes: broadcast::Receiver<Change>,
    device: String,
    resync: Option<tokio::time::Interval>,
    started: bool,
}

/// What the feed waits on next.
enum Next {
    Change(Result<Change, RecvError>),
    Tick,
}

impl Feed {
    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> {
        futures_util::stream::unfold(self, |mut feed| async move {
            let event = feed.next_event().await?;
            Some((Ok(event), feed))
        })
    }

    /// The next event, or `None` once the store is gone.
    async fn next_event(&mut self) -> Option<Event> {
        if !self.started {
            self.started = true;
            return Some(
                Event::default()
                    .event("ready")
                    .retry(Duration::from_secs(2))
                    .data(json!({"device": self.device}).to_string()),
            );
        }
        loop {
            let next = match &mut self.resync {
                Some(tick) => tokio::select! {
                    change = self.changes.recv() => Next::Change(change),
                    _ = tick.tick() => Next::Tick,
                },
                None => Next::Change(self.changes.recv().await),
            };
            match next {
                Next::Change(Ok(change)) if change.device == self.device => {
                    return Some(state_event(&change));
                }
                Next::Change(Ok(_)) => {}
                Next::Change(Err(RecvError::Lagged(missed))) => {
                    return Some(self.resync_event("lagged", missed));
                }
                Next::Change(Err(RecvError::Closed)) => return None,
                Next::Tick => return Some(self.resync_event("poll", 0)),
            }
        }
    }

    fn resync_event(&self, reason: &str, missed: u64) -> Event {
        let data = json!({"device": self.device, "reason": reason, "missed": missed});
        Event::default().event("resync").data(data.to_string())
    }
}

fn state_event(change: &Change) -> Event {
    let data = json!({
        "device": change.device,
        "id": change.id,
        "state": change.state.as_str(),
    });
    Event::default().event("state").data(data.to_string())
}

#[cfg(test)]
mod tests;
