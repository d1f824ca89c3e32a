//! The rollout routes. Creating, reading and aborting a rollout needs the
//! admin role on every one of its devices (an update is an admin command on
//! each of them).
//!
//! | route | |
//! |-------|-|
//! | `POST /v1/rollouts` | `{bundle_base64, devices, rate_per_min, abort_failed_percent, min_executed, device_timeout_ms?, chunk_bytes?}` -> 201 the rollout |
//! | `GET /v1/rollouts` | every rollout the user may see, newest first |
//! | `GET /v1/rollouts/{id}` | one rollout, its counts and every device's result |
//! | `POST /v1/rollouts/{id}/abort` | stop starting devices (the running ones finish) |

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use relay_core::plugin::Role;
use serde_json::json;

use crate::api::{authenticate, ApiError, ApiState};
use crate::store::{NewRollout, RolloutRow, TargetRow};
use crate::users::User;

/// Chunk size when the request names none (under the device's envelope limit).
pub const DEFAULT_CHUNK_BYTES: u64 = 64 * 1024;
pub const DEFAULT_DEVICE_TIMEOUT_MS: u64 = 10 * 60_000;
/// The largest bundle a rollout takes.
pub const MAX_BUNDLE_BYTES: usize = 8 * 1024 * 1024;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/rollouts", post(create).get(list))
        .route("/v1/rollouts/{id}", get(one))
        .route("/v1/rollouts/{id}/abort", post(abort))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    bundle_base64: String,
    devices: Vec<String>,
    rate_per_min: u64,
    abort_failed_percent: u64,
    min_executed: u64,
    device_timeout_ms: Option<u64>,
    chunk_bytes: Option<u64>,
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

fn admin_on_all(user: &User, devices: &[String]) -> Result<(), ApiError> {
    for device in devices {
        if user.role_for(device) != Some(Role::Admin) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("user {:?} is not admin on device {device:?}", user.name),
            ));
        }
    }
    Ok(())
}

async fn create(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Json<CreateBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let user = authenticate(&state, &headers)?;
    let Json(body) = body.map_err(|e| bad("invalid_json", e.body_text()))?;
    if body.devices.is_empty() {
        return Err(bad("no_devices", "a rollout needs at least one device"));
    }
    let mut devices = body.devices.clone();
    devices.sort();
    devices.dedup();
    if devices.len() != body.devices.len() {
        return Err(bad("duplicate_device", "a device is listed twice"));
    }
    for device in &body.devices {
        relay_client::topics::validate_device(device)
            .map_err(|e| bad("invalid_device", e.to_string()))?;
    }
    admin_on_all(&user, &body.devices)?;
    if body.rate_per_min == 0 || body.abort_failed_percent > 100 {
        return Err(bad(
            "invalid_rollout",
            "rate_per_min must be at least 1 and abort_failed_percent at most 100",
        ));
    }
    let chunk_bytes = body.chunk_bytes.unwrap_or(DEFAULT_CHUNK_BYTES);
    if chunk_bytes == 0 || chunk_bytes as usize > state.limits.max_envelope_bytes - 1024 {
        return Err(bad(
            "invalid_rollout",
            "chunk_bytes must fit a device's envelope",
        ));
    }
    let bundle = base64::engine::general_purpose::STANDARD
        .decode(&body.bundle_base64)
        .map_err(|e| bad("invalid_bundle", format!("bundle_base64: {e}")))?;
    if bundle.len() > MAX_BUNDLE_BYTES {
        return Err(bad(
            "bundle_too_large",
            format!("{} bytes, at most {MAX_BUNDLE_BYTES}", bundle.len()),
        ));
    }
    // Read, not trusted: the devices verify the signature.
    let manifest = manifest_of(&bundle).map_err(|e| bad("invalid_bundle", e))?;
    let now = relay_client::unix_ms();
    let id = format!("{:x}{:04x}", now, rand::random::<u16>());
    let rollout = NewRollout {
        id: id.clone(),
        bundle,
        plugin: manifest.name,
        version: manifest.version,
        created_by: user.name.clone(),
        created_at: now,
        rate_per_min: body.rate_per_min,
        abort_failed_percent: body.abort_failed_percent,
        min_executed: body.min_executed,
        device_timeout_ms: body.device_timeout_ms.unwrap_or(DEFAULT_DEVICE_TIMEOUT_MS),
        chunk_bytes,
        devices: body.devices,
    };
    state.store.create_rollout(&rollout).await?;
    tracing::info!(rollout = %id, plugin = %rollout.plugin, version = %rollout.version, devices = rollout.devices.len(), "rollout: created");
    Ok((StatusCode::CREATED, Json(view(&state, &id).await?)))
}

fn manifest_of(bundle: &[u8]) -> Result<relay_core::ota::Manifest, String> {
    let header = relay_core::ota::bundle::Header::parse(bundle).map_err(|e| e.to_string())?;
    let end = header.signature_offset();
    let manifest = bundle
        .get(relay_core::ota::HEADER_LEN..end)
        .ok_or("the bundle is truncated")?;
    relay_core::ota::Manifest::decode(manifest)
}

async fn view(state: &ApiState, id: &str) -> Result<serde_json::Value, ApiError> {
    let Some(rollout) = state.store.rollouts(Some(id)).await?.pop() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no rollout {id:?}"),
        ));
    };
    let targets = state.store.rollout_targets(id).await?;
    Ok(render(&rollout, &targets))
}

fn render(rollout: &RolloutRow, targets: &[TargetRow]) -> serde_json::Value {
    let mut counts = serde_json::Map::new();
    for state in [
        "pending",
        "running",
        "succeeded",
        "failed",
        "timed_out",
        "cancelled",
    ] {
        let n = targets.iter().filter(|t| t.state == state).count();
        counts.insert(state.into(), n.into());
    }
    let mut v = serde_json::to_value(rollout).unwrap_or_default();
    v["counts"] = counts.into();
    v["devices"] = serde_json::to_value(targets).unwrap_or_default();
    v
}

async fn devices_of(state: &ApiState, id: &str) -> Result<Vec<String>, ApiError> {
    let targets = state.store.rollout_targets(id).await?;
    Ok(targets.into_iter().map(|t| t.device).collect())
}

async fn one(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let user = authenticate(&state, &headers)?;
    let v = view(&state, &id).await?;
    let devices = devices_of(&state, &id).await?;
    admin_on_all(&user, &devices)?;
    Ok(Json(v))
}

async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let user = authenticate(&state, &headers)?;
    let mut out = Vec::new();
    for rollout in state.store.rollouts(None).await? {
        let targets = state.store.rollout_targets(&rollout.id).await?;
        let devices: Vec<String> = targets.iter().map(|t| t.device.clone()).collect();
        if admin_on_all(&user, &devices).is_ok() {
            let mut v = render(&rollout, &targets);
            if let Some(map) = v.as_object_mut() {
                map.remove("devices");
            }
            out.push(v);
        }
    }
    Ok(Json(json!({ "rollouts": out })))
}

async fn abort(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let user = authenticate(&state, &headers)?;
    let devices = devices_of(&state, &id).await?;
    if devices.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no rollout {id:?}"),
        ));
    }
    admin_on_all(&user, &devices)?;
    let reason = format!("aborted by {}", user.name);
    state
        .store
        .end_rollout(&id, "aborted", Some(&reason), relay_client::unix_ms())
        .await?;
    Ok(Json(view(&state, &id).await?))
}
