//! The events route in process (`tower::ServiceExt::oneshot` on the
//! router, the body read as it streams) on a real SQLite store: auth by
//! header and by `access_token`, the device filter, the order of a
//! request's states as the store commits them, and the `resync` events.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures_util::StreamExt;
use relay_core::envelope::Kind;
use relay_core::plugin::Role;
use relay_core::status::{State, Status};
use serde_json::{json, Value};
use tower::ServiceExt;

use super::*;
use crate::submit::NewRequest;

const ADMIN: &str = "events-admin-token-0123456789abcdef";
const OUTSIDER: &str = "events-outsider-token-0123456789abcd";

fn users() -> Users {
    let text = format!(
        "[[user]]\nname = \"admin\"\ntoken_sha256 = \"{}\"\ngrants = [{{ devices = \"*\", role = \"admin\" }}]\n\n\
         [[user]]\nname = \"outsider\"\ntoken_sha256 = \"{}\"\ngrants = [{{ devices = \"other-*\", role = \"secondary\" }}]\n",
        crate::users::token_hash(ADMIN),
        crate::users::token_hash(OUTSIDER),
    );
    Users::parse(&text).expect("users parse")
}

async fn state() -> (tempfile::TempDir, EventsState) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite:{}", dir.path().join("hub.db").display());
    let store = Store::open(&url).await.expect("open");
    let state = EventsState {
        store,
        users: Arc::new(users()),
        resync_every: None,
    };
    (dir, state)
}

fn request(device: &str, id: &str) -> NewRequest {
    NewRequest {
        device: device.into(),
        id: id.into(),
        name: "echo".into(),
        kind: Kind::Command,
        role: Role::Admin,
        payload: Vec::new(),
        submitted_by: "admin".into(),
        submitted_at: 1_000,
        expires_at: u64::MAX / 2,
        deadline_at: None,
    }
}

fn status(id: &str, state: State, at: u64) -> Status {
    Status {
        id: id.into(),
        name: "echo".into(),
        status: state,
        attempt: u32::from(state != State::Accepted),
        code: None,
        message: None,
        reply: None,
        next_attempt_at: None,
        plugin: None,
        at,
    }
}

async fn open(state: &EventsState, uri: &str, bearer: Option<&str>) -> axum::response::Response {
    let mut builder = Request::get(uri);
    if let Some(token) = bearer {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    routes(state.clone())
        .oneshot(builder.body(Body::empty()).expect("request"))
        .await
        .expect("infallible")
}

/// Reads a streaming SSE body event by event.
struct Reader {
    body: axum::body::BodyDataStream,
    buffer: String,
}

impl Reader {
    fn new(response: axum::response::Response) -> Reader {
        Reader {
            body: response.into_body().into_data_stream(),
            buffer: String::new(),
        }
    }

    /// The next event as `(event, data)`, skipping comments; fails after 10 s.
    async fn next(&mut self) -> (String, Value) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                if event.is_empty() {
                    continue; // a comment (keep-alive) or a bare `retry:`
                }
                let data = serde_json::from_str(&data).expect("event data is JSON");
                return (event, data);
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.body.next())
                .await
                .expect("an event within 10 s")
                .expect("the stream is still open")
                .expect("the body reads");
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8 events"));
        }
    }
}

async fn error_code(response: axum::response::Response) -> String {
    let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .expect("body");
    let value: Value = serde_json::from_slice(&bytes).expect("JSON error");
    value["error"]["code"].as_str().unwrap_or("").to_owned()
}

#[tokio::test]
async fn refuses_without_a_known_token_or_a_role_on_the_device() {
    let (_dir, state) = state().await;
    let uri = "/v1/devices/d1/events";
    let response = open(&state, uri, None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(response).await, "unauthorized");
    let response = open(&state, uri, Some("not-a-token")).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = open(&state, "/v1/devices/d1/events?access_token=nope", None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = open(&state, uri, Some(OUTSIDER)).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(response).await, "forbidden");
    let response = open(&state, &format!("{uri}?access_token={OUTSIDER}"), None).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn streams_the_device_s_committed_states_in_order_by_header_or_query_token() {
    let (_dir, state) = state().await;
    let by_header = open(&state, "/v1/devices/d1/events", Some(ADMIN)).await;
    let by_query = open(
        &state,
        &format!("/v1/devices/d1/events?access_token={ADMIN}"),
        None,
    )
    .await;
    for response in [&by_header, &by_query] {
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "{:?}",
            response.headers()
        );
    }
    let mut readers = [Reader::new(by_header), Reader::new(by_query)];
    for reader in &mut readers {
        assert_eq!(
            reader.next().await,
            ("ready".into(), json!({"device": "d1"}))
        );
    }

    let store = &state.store;
    store.submit(request("d1", "r1")).await.unwrap();
    store.submit(request("d2", "x1")).await.unwrap(); // another device: not sent
    store.sent("d1", "r1", 1_100).await.unwrap();
    for (s, at) in [
        (State::Accepted, 1_200),
        (State::Running, 1_300),
        (State::Succeeded, 1_400),
    ] {
        store.status("d1", status("r1", s, at), at).await.unwrap();
    }
    store.submit(request("d1", "r2")).await.unwrap();
    store
        .finish("d1", "r2", crate::HubState::Cancelled, 1_500)
        .await
        .unwrap();

    let expected = [
        ("r1", "queued"),
        ("r1", "sent"),
        ("r1", "accepted"),
        ("r1", "running"),
        ("r1", "succeeded"),
        ("r2", "queued"),
        ("r2", "cancelled"),
    ];
    for reader in &mut readers {
        for (id, s) in expected {
            assert_eq!(
                reader.next().await,
                (
                    "state".into(),
                    json!({"device": "d1", "id": id, "state": s})
                )
            );
        }
    }
    // What the events announced is what a read returns.
    let stored = store.get("d1", "r1").await.unwrap().expect("r1 stored");
    assert_eq!(stored.state, crate::HubState::Succeeded);
}

#[tokio::test]
async fn a_client_that_fell_behind_is_told_to_read_again() {
    let (tx, rx) = broadcast::channel(2);
    let feed = Feed {
        changes: rx,
        device: "d1".into(),
        resync: None,
        started: false,
    };
    for i in 0..5 {
        tx.send(Change {
            device: "d1".into(),
            id: format!("r{i}"),
            state: crate::HubState::Queued,
        })
        .unwrap();
    }
    let response = Sse::new(feed.into_stream()).into_response();
    let mut reader = Reader::new(response);
    assert_eq!(reader.next().await.0, "ready");
    assert_eq!(
        reader.next().await,
        (
            "resync".into(),
            json!({"device": "d1", "reason": "lagged", "missed": 3})
        )
    );
    // Then it goes on with what the channel still holds.
    assert_eq!(reader.next().await.1["id"], "r3");
    assert_eq!(reader.next().await.1["id"], "r4");
}

#[tokio::test]
async fn with_other_instances_the_client_is_told_to_read_again_periodically() {
    let (_dir, mut state) = state().await;
    state.resync_every = Some(Duration::from_millis(50));
    let mut reader = Reader::new(open(&state, "/v1/devices/d1/events", Some(ADMIN)).await);
    assert_eq!(reader.next().await.0, "ready");
    assert_eq!(
        reader.next().await,
        (
            "resync".into(),
            json!({"device": "d1", "reason": "poll", "missed": 0})
        )
    );
}
