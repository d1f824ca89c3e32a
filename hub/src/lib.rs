//! The Relay hub: the durable half of delivery, from apps to devices.
//!
//! An app submits a request over HTTP/JSON; the hub validates it, commits
//! it to its store (SQLite by default, Postgres for fleets) and only then
//! answers with the request id. It forwards requests to each device in
//! submission order over MQTT, at most a window at a time, and records every
//! status the device publishes, so a request's state can be asked at any
//! time, also while its device is offline. See `docs/hub.md`.
//!
//! One command's path through the hub, top to bottom:
//!
//! | module | role |
//! |--------|------|
//! | `api` | HTTP/JSON: submit, get, list, cancel, wait; users and roles |
//! | `submit` | validation of a submitted request, before anything is stored |
//! | `store` | the durable record: requests, their transitions, devices |
//! | `forward` | sans-IO: what to send to which device when, TTL, deadlines |
//! | `mqtt` | the broker link: publishes envelopes, reads statuses and presence |
//! | `service` | the I/O loop that feeds `forward` and carries out its effects |
//! | `cluster` | several instances on one database: leases, polls, cancel asks |
//! | `events` | server-sent events: a device's request states, live |
//! | `web` | the web page: devices, plugins, requests, a send form |
//! | `rollout` | plugin rollouts: one signed bundle to many devices, at a rate, with abort criteria |

// The store's unit tests share record builders with the integration tests,
// which name the crate `relay_hub`.
#[cfg(test)]
extern crate self as relay_hub;

pub mod forward;
pub mod state;
pub mod store;
pub mod submit;

pub use state::HubState;
pub mod api;
pub mod cluster;
pub mod events;
pub mod mqtt;
pub mod rollout;
pub mod run;
pub mod service;
pub mod users;
pub mod web;
