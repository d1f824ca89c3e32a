//! The hub's HTTP API from Rust (`docs/hub.md`): submit a request, read it
//! (optionally waiting until it is final), cancel it. The hub stores the
//! request before it answers, so unlike [`crate::Client::send`] a device
//! that is offline, or has never connected, still gets it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), relay_client::hub::HubError> {
//! use std::time::Duration;
//! use relay_client::hub::{HubClient, HubSubmit};
//!
//! let hub = HubClient::new("http://127.0.0.1:8080", Some("token".into()));
//! let submitted = hub.submit("dev-1", &HubSubmit::command("increment")).await?;
//! let done = hub.get("dev-1", &submitted.id, Some(Duration::from_secs(30))).await?;
//! println!("{}: {}", done.id, done.state);
//! # Ok(()) }
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// A failed hub call.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("hub unreachable or bad answer: {0}")]
    Http(#[from] reqwest::Error),
    #[error("hub refused ({status}, {code}): {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
}

impl HubError {
    /// The API's error code (`unauthorized`, `forbidden`, `not_found`, ...).
    pub fn code(&self) -> Option<&str> {
        match self {
            HubError::Api { code, .. } => Some(code),
            HubError::Http(_) => None,
        }
    }
}

/// What to submit (the fields of `POST /v1/devices/{device}/requests`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct HubSubmit {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Json>,
    /// Raw msgpack, base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_msgpack: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
}

impl HubSubmit {
    pub fn command(name: impl Into<String>) -> Self {
        HubSubmit {
            name: name.into(),
            ..HubSubmit::default()
        }
    }

    /// The payload as raw msgpack bytes (empty: no payload).
    pub fn with_msgpack(mut self, bytes: &[u8]) -> Self {
        use base64::Engine as _;
        self.payload_msgpack =
            (!bytes.is_empty()).then(|| base64::engine::general_purpose::STANDARD.encode(bytes));
        self
    }
}

/// A request as the hub reports it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct HubRequest {
    pub device: String,
    pub id: String,
    pub name: String,
    pub kind: String,
    pub role: String,
    pub state: String,
    pub attempt: u64,
    pub code: Option<String>,
    pub message: Option<String>,
    pub reply: Option<Json>,
    pub submitted_at: u64,
    pub updated_at: u64,
    #[serde(default)]
    pub history: Option<Vec<Json>>,
}

impl HubRequest {
    /// No status changes it any more.
    pub fn is_final(&self) -> bool {
        matches!(
            self.state.as_str(),
            "succeeded" | "failed" | "rejected" | "expired" | "cancelled" | "timed_out"
        )
    }
}

/// A hub at `base` (e.g. `http://127.0.0.1:8080`).
#[derive(Debug, Clone)]
pub struct HubClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

impl HubClient {
    pub fn new(base: impl Into<String>, token: Option<String>) -> Self {
        HubClient {
            base: base.into().trim_end_matches('/').to_owned(),
            token,
            http: reqwest::Client::new(),
        }
    }

    fn requests(&self, device: &str) -> String {
        format!("{}/v1/devices/{device}/requests", self.base)
    }

    async fn answer(&self, request: reqwest::RequestBuilder) -> Result<HubRequest, HubError> {
        let json = self.json(request).await?;
        serde_json::from_value(json).map_err(|e| HubError::Api {
            status: 200,
            code: "invalid_answer".into(),
            message: e.to_string(),
        })
    }

    /// Submits; returns once the hub stored it (or, with `wait`, once final
    /// or after `wait`).
    pub async fn submit_and_wait(
        &self,
        device: &str,
        submit: &HubSubmit,
        wait: Option<Duration>,
    ) -> Result<HubRequest, HubError> {
        let mut request = self.http.post(self.requests(device)).json(submit);
        if let Some(wait) = wait {
            request = request.query(&[("wait_ms", wait.as_millis().to_string())]);
        }
        self.answer(request).await
    }

    pub async fn submit(&self, device: &str, submit: &HubSubmit) -> Result<HubRequest, HubError> {
        self.submit_and_wait(device, submit, None).await
    }

    /// The request and its history; with `wait`, once final or after `wait`.
    pub async fn get(
        &self,
        device: &str,
        id: &str,
        wait: Option<Duration>,
    ) -> Result<HubRequest, HubError> {
        let mut request = self.http.get(format!("{}/{id}", self.requests(device)));
        if let Some(wait) = wait {
            request = request.query(&[("wait_ms", wait.as_millis().to_string())]);
        }
        self.answer(request).await
    }

    pub async fn cancel(&self, device: &str, id: &str) -> Result<HubRequest, HubError> {
        self.answer(
            self.http
                .post(format!("{}/{id}/cancel", self.requests(device))),
        )
        .await
    }

    /// The ids of the devices this user may see.
    pub async fn devices(&self) -> Result<Vec<String>, HubError> {
        let v = self
            .json(self.http.get(format!("{}/v1/devices", self.base)))
            .await?;
        Ok(v["devices"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["device"].as_str().map(str::to_string))
            .collect())
    }

    /// Starts a plugin rollout (`POST /v1/rollouts`); returns the rollout.
    pub async fn create_rollout(&self, rollout: &Json) -> Result<Json, HubError> {
        self.json(
            self.http
                .post(format!("{}/v1/rollouts", self.base))
                .json(rollout),
        )
        .await
    }

    /// One rollout with every device's result.
    pub async fn rollout(&self, id: &str) -> Result<Json, HubError> {
        self.json(self.http.get(format!("{}/v1/rollouts/{id}", self.base)))
            .await
    }

    /// Every rollout this user may see.
    pub async fn rollouts(&self) -> Result<Json, HubError> {
        self.json(self.http.get(format!("{}/v1/rollouts", self.base)))
            .await
    }

    /// Stops starting devices of a rollout.
    pub async fn abort_rollout(&self, id: &str) -> Result<Json, HubError> {
        self.json(
            self.http
                .post(format!("{}/v1/rollouts/{id}/abort", self.base)),
        )
        .await
    }

    async fn json(&self, request: reqwest::RequestBuilder) -> Result<Json, HubError> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().await?;
        let status = response.status();
        if status.is_success() {
            return Ok(response.json().await?);
        }
        let text = response.text().await?;
        let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => (body.error.code, body.error.message),
            Err(_) => ("http".into(), text),
        };
        Err(HubError::Api {
            status: status.as_u16(),
            code,
            message,
        })
    }
}
