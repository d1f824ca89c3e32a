//! Plugin rollouts: one signed bundle to many devices, at a rate, with
//! abort criteria and a per-device timeout (AWS IoT Jobs' rollout
//! semantics). The hub does not verify the bundle (devices hold the trusted
//! keys and verify it themselves); it streams it to each device as
//! `_install` chunk requests through its durable queue, and reads each
//! device's result from the final state of the last chunk.
//!
//! - [`plan`]: the decisions (sans-IO, tested in virtual time);
//! - [`driver`]: the loop that carries them out against the store;
//! - [`api`]: `POST /v1/rollouts`, `GET /v1/rollouts[/{id}]`,
//!   `POST /v1/rollouts/{id}/abort`.
//!
//! Rollouts live in the store (`rollouts`, `rollout_targets`), so one
//! survives a hub restart and continues where it was.

pub mod api;
pub mod driver;
pub mod plan;
