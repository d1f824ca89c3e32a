//! Request and status records for the store tests, on SQLite (the
//! crate's unit tests) and Postgres (`tests/postgres.rs`) alike.

#![allow(dead_code)]

use relay_core::envelope::Kind;
use relay_core::plugin::Role;
use relay_core::status::{State, Status};
use relay_hub::submit::NewRequest;

pub fn request(id: &str, payload: &[u8]) -> NewRequest {
    NewRequest {
        device: "d1".into(),
        id: id.into(),
        name: "echo".into(),
        kind: Kind::Command,
        role: Role::Primary,
        payload: payload.to_vec(),
        submitted_by: "alice".into(),
        submitted_at: 1_000,
        expires_at: 10_000,
        deadline_at: None,
    }
}

pub fn status(id: &str, state: State, attempt: u32, at: u64) -> Status {
    Status {
        id: id.into(),
        name: "echo".into(),
        status: state,
        attempt,
        code: None,
        message: None,
        reply: (state == State::Succeeded).then(|| vec![0xa2, b'o', b'k']),
        next_attempt_at: None,
        plugin: None,
        at,
    }
}
