//! The HTTP/JSON API. Every route but `/health` needs `Authorization:
//! Bearer <token>` (401 without a known token, 403 without a role on the
//! device). A submit is validated (400 with a code), committed, handed to
//! the forwarder, and only then answered (201, or 200 for the same id
//! again, 409 for the same id with other content).
//!
//! | route | |
//! |-------|-|
//! | `POST /v1/devices/{device}/requests[?wait_ms=N]` | submit; with `wait_ms`, answer once final or after N ms |
//! | `GET /v1/devices/{device}/requests[?state=S&limit=N&offset=M]` | a device's requests, newest first, and counts by state |
//! | `GET /v1/devices/{device}/requests/{id}[?wait_ms=N]` | one request with its history |
//! | `POST /v1/devices/{device}/requests/{id}/cancel` | cancel one never sent |
//! | `GET /v1/devices/{device}/events[?access_token=T]` | server-sent events: the device's request states, live (`crate::events`) |
//! | `GET /v1/devices` | devices this user may see, with presence |
//! | `GET /health` | liveness |
//! | `GET /`, `GET /ui` | the web page, no auth (`crate::web`) |

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use crate::forward::CancelError;
use crate::service::ServiceHandle;
use crate::state::HubState;
use crate::store::{Change, ListFilter, OpenRequest, Received, RequestView, Store, Submitted};
use crate::submit::{validate, SubmitBody, SubmitLimits};
use crate::users::{User, Users};

/// Longest a caller may wait in one call.
pub const MAX_WAIT_MS: u64 = 300_000;

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    pub service: ServiceHandle,
    pub users: Arc<Users>,
    pub limits: SubmitLimits,
    /// One of several instances: what others record is seen by polling.
    pub cluster: Option<crate::cluster::ClusterOptions>,
}

impl ApiState {
    /// How often a waiter reads the store again when another instance may
    /// record what it waits for (alone, the commit announcements suffice).
    fn poll_every(&self) -> Option<Duration> {
        self.cluster
            .as_ref()
            .map(|c| Duration::from_millis(c.sync_ms.clamp(50, 1_000)))
    }
}

/// An error answer: `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "hub: store error");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store", e.to_string())
    }
}

pub fn router(state: ApiState) -> Router {
    let events = crate::events::routes(crate::events::EventsState::of(&state));
    Router::new()
        .route("/health", get(|| async { Json(json!({"ok": true})) }))
        .route("/v1/devices", get(devices))
        .route("/v1/devices/{device}/requests", post(submit).get(list))
        .route("/v1/devices/{device}/requests/{id}", get(get_one))
        .route("/v1/devices/{device}/requests/{id}/cancel", post(cancel))
        .merge(crate::rollout::api::routes())
        .with_state(state)
        .merge(events)
        .merge(crate::web::routes())
}

pub(crate) fn authenticate(state: &ApiState, headers: &HeaderMap) -> Result<User, ApiError> {
    user_for(
        &state.users,
        bearer(headers),
        "a known token is required: `Authorization: Bearer <token>`",
    )
}

/// The token of an `Authorization: Bearer <token>` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// The user holding `token`, or 401 saying `how` to present one.
pub(crate) fn user_for(users: &Users, token: Option<&str>, how: &str) -> Result<User, ApiError> {
    users
        .authenticate(token)
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", how))
}

pub(crate) fn role_on(user: &User, device: &str) -> Result<relay_core::plugin::Role, ApiError> {
    user.role_for(device).ok_or_else(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("user {:?} holds no role on device {device:?}", user.name),
        )
    })
}

#[derive(Debug, Default, serde::Deserialize)]
struct WaitQuery {
    wait_ms: Option<u64>,
}

async fn submit(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(device): Path<String>,
    Query(query): Query<WaitQuery>,
    body: Result<Json<SubmitBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let user = authenticate(&state, &headers)?;
    let role = role_on(&user, &device)?;
    let Json(body) =
        body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.body_text()))?;
    let now = relay_client::unix_ms();
    let request = validate(&device, body, &user.name, role, now, &state.limits)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.code(), e.to_string()))?;
    let id = request.id.clone();
    let queued = RequestView::queued(&request);
    let waiter = Waiter::new(&state.store);
    let (status, known) = match store_and_forward(&state.store, &state.service, request).await? {
        Submitted::Created => (StatusCode::CREATED, Some(queued)),
        Submitted::Duplicate => (StatusCode::OK, None),
        Submitted::Conflict => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "id_conflict",
                format!("request {id:?} exists for device {device:?} with other content"),
            ))
        }
    };
    let view = wait_for(&state, waiter, &device, &id, query.wait_ms, known).await?;
    Ok((status, Json(view)).into_response())
}

/// Stores `request` and, once it is durable and new, hands it to the
/// forwarder: the one way a request enters the hub (the API, rollouts).
pub(crate) async fn store_and_forward(
    store: &Store,
    service: &ServiceHandle,
    request: crate::submit::NewRequest,
) -> Result<Submitted, crate::store::StoreError> {
    let open = OpenRequest {
        device: request.device.clone(),
        role: request.role,
        envelope: request.envelope(),
        deadline_at: request.deadline_at,
        state: HubState::Queued,
    };
    let submitted = store.submit(request).await?;
    if submitted == Submitted::Created {
        service.forward(open).await;
    }
    Ok(submitted)
}

async fn get_one(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path((device, id)): Path<(String, String)>,
    Query(query): Query<WaitQuery>,
) -> Result<Json<RequestView>, ApiError> {
    let user = authenticate(&state, &headers)?;
    role_on(&user, &device)?;
    let waiter = Waiter::new(&state.store);
    Ok(Json(
        wait_for(&state, waiter, &device, &id, query.wait_ms, None).await?,
    ))
}

/// What a waiter listens to, subscribed before the request can change.
struct Waiter {
    changes: broadcast::Receiver<Change>,
    received: broadcast::Receiver<Received>,
}

impl Waiter {
    fn new(store: &Store) -> Self {
        Waiter {
            changes: store.changes(),
            received: store.received(),
        }
    }
}

/// Why a waiter woke up.
enum Wake {
    /// Read the request again.
    Read,
    /// The device's final status arrived (committed within one commit).
    Final(Box<RequestView>),
    Done,
}

/// The request now (`known`, or read), or once it is final, or when
/// `wait_ms` ran out. A final status is answered as soon as the hub
/// receives it, built from the status itself; its record is committed
/// right behind it.
async fn wait_for(
    state: &ApiState,
    mut waiter: Waiter,
    device: &str,
    id: &str,
    wait_ms: Option<u64>,
    known: Option<RequestView>,
) -> Result<RequestView, ApiError> {
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(wait_ms.unwrap_or(0).min(MAX_WAIT_MS));
    let mut known = known;
    loop {
        let view = match known.take() {
            Some(view) => view,
            None => stored(state, device, id).await?,
        };
        if view.state.is_final() || tokio::time::Instant::now() >= deadline {
            return Ok(view);
        }
        let until = match state.poll_every() {
            Some(every) => deadline.min(tokio::time::Instant::now() + every),
            None => deadline,
        };
        let wake = loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break Wake::Read,
                change = waiter.changes.recv() => match change {
                    Err(RecvError::Lagged(_)) => break Wake::Read,
                    Err(RecvError::Closed) => break Wake::Done,
                    Ok(c) if c.device == device && c.id == id => break Wake::Read,
                    Ok(_) => {}
                },
                received = waiter.received.recv() => match received {
                    Err(RecvError::Lagged(_)) => break Wake::Read,
                    Err(RecvError::Closed) => break Wake::Done,
                    Ok(r) if r.device == device => {
                        if let Some(done) = view.finished_by(&r.status, r.at) {
                            break Wake::Final(Box::new(done));
                        }
                    }
                    Ok(_) => {}
                },
            }
        };
        match wake {
            Wake::Read => {}
            Wake::Final(done) => return Ok(*done),
            Wake::Done => return Ok(view),
        }
    }
}

#[derive(Debug, Default, serde::Deserialize)]
struct ListQuery {
    state: Option<String>,
    limit: Option<u32>,
    offset: Option<u32>,
}

async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(device): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let user = authenticate(&state, &headers)?;
    role_on(&user, &device)?;
    let filter_state = match query.state.as_deref() {
        None => None,
        Some(s) => Some(HubState::parse(s).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_state",
                format!("unknown state {s:?}"),
            )
        })?),
    };
    let filter = ListFilter {
        state: filter_state,
        limit: query.limit,
        offset: query.offset,
    };
    let requests = state.store.list(&device, &filter).await?;
    let counts: serde_json::Map<String, serde_json::Value> = state
        .store
        .count_by_state(&device)
        .await?
        .into_iter()
        .map(|(s, n)| (s.as_str().to_owned(), json!(n)))
        .collect();
    Ok(Json(
        json!({"device": device, "counts": counts, "requests": requests}),
    ))
}

async fn cancel(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path((device, id)): Path<(String, String)>,
) -> Result<Json<RequestView>, ApiError> {
    let user = authenticate(&state, &headers)?;
    role_on(&user, &device)?;
    match state.service.cancel(&device, &id).await {
        Ok(()) => {
            let now = relay_client::unix_ms();
            state
                .store
                .finish(&device, &id, HubState::Cancelled, now)
                .await?;
        }
        Err(CancelError::AlreadySent { .. }) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "already_sent",
                format!("request {id:?} was already sent to the device; only a request never sent can be cancelled"),
            ))
        }
        Err(CancelError::Unknown { .. }) => {
            if let Some(cluster) = &state.cluster {
                ask_holder_to_cancel(&state, cluster, &device, &id).await?;
            }
        }
    }
    let view = stored(&state, &device, &id).await?;
    if view.state != HubState::Cancelled {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_pending",
            format!("request {id:?} is {} and cannot be cancelled", view.state),
        ));
    }
    Ok(Json(view))
}

/// One of several instances, without `device`'s lease: ask its holder
/// (through the store) and wait until the request is no longer `queued`
/// or the holder had time to answer.
async fn ask_holder_to_cancel(
    state: &ApiState,
    cluster: &crate::cluster::ClusterOptions,
    device: &str,
    id: &str,
) -> Result<(), ApiError> {
    if stored(state, device, id).await?.state != HubState::Queued {
        return Ok(());
    }
    state
        .store
        .ask_cancel(device, id, relay_client::unix_ms())
        .await?;
    let give_up =
        tokio::time::Instant::now() + Duration::from_millis(cluster.lease_ms + 4 * cluster.sync_ms);
    while tokio::time::Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(cluster.sync_ms.clamp(20, 500) / 2)).await;
        if stored(state, device, id).await?.state != HubState::Queued {
            return Ok(());
        }
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_holder",
        format!(
            "no hub instance answered the cancel of {id:?} in time; it is still queued, try again"
        ),
    ))
}

/// The stored request, or 404.
async fn stored(state: &ApiState, device: &str, id: &str) -> Result<RequestView, ApiError> {
    state.store.get(device, id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no request {id:?} for device {device:?}"),
        )
    })
}

async fn devices(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let user = authenticate(&state, &headers)?;
    let devices: Vec<_> = state
        .store
        .devices()
        .await?
        .into_iter()
        .filter(|d| user.role_for(&d.device).is_some())
        .collect();
    Ok(Json(json!({"devices": devices})))
}
