//! The typed bridge between wasmtime's component model and the core types:
//! `bindgen!` generates the world's Rust side from `wit/` (the same file the
//! guests are built from), and [`State`] — the data of each plugin's `Store` —
//! implements the `relay:plugin/host` imports by delegating to
//! [`relay_core::host_env::HostEnv`], so quotas and truncation are exactly the
//! ones wasmi applies.

use relay_core::engine::output::check_event;
use relay_core::host_env::HostEnv;
use relay_core::limits::Limits;
use relay_core::plugin as core;

use super::limiter::GuestLimiter;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    // `emit` enforces the event limits, so it may trap.
    imports: { "relay:plugin/host.emit": trappable },
    // Commands are lowered straight from `&Invocation` fields, no copies.
    ownership: Borrowing { duplicate_if_necessary: true },
});

pub(super) use relay::plugin::types as wit;

/// Everything one plugin's `Store` owns besides the instance.
pub(super) struct State {
    pub env: HostEnv,
    pub limiter: GuestLimiter,
    /// Events emitted during the current call (contract point 14).
    pub events: Vec<core::Event>,
    limits: Limits,
}

impl State {
    pub fn new(env: HostEnv, limits: &Limits) -> Self {
        State {
            env,
            limiter: GuestLimiter::new(limits),
            events: Vec::new(),
            limits: limits.clone(),
        }
    }
}

impl wit::Host for State {}

impl relay::plugin::host::Host for State {
    fn log(&mut self, level: wit::LogLevel, message: String) {
        self.env.log(level.into(), &message);
    }

    fn kv_get(&mut self, key: String) -> Option<Vec<u8>> {
        self.env.kv_get(&key)
    }

    fn kv_set(&mut self, key: String, value: Vec<u8>) -> Result<(), wit::KvError> {
        self.env.kv_set(&key, &value).map_err(|e| match e {
            core::KvError::TooLarge => wit::KvError::TooLarge,
            core::KvError::QuotaExceeded => wit::KvError::QuotaExceeded,
        })
    }

    fn kv_delete(&mut self, key: String) {
        self.env.kv_delete(&key);
    }

    fn now_ms(&mut self) -> u64 {
        self.env.now_ms()
    }

    fn emit(&mut self, name: String, payload: Vec<u8>) -> wasmtime::Result<()> {
        check_event(self.events.len(), name.len(), payload.len(), &self.limits)?;
        self.events.push(core::Event { name, payload });
        Ok(())
    }
}

impl From<wit::LogLevel> for core::LogLevel {
    fn from(level: wit::LogLevel) -> Self {
        match level {
            wit::LogLevel::Trace => core::LogLevel::Trace,
            wit::LogLevel::Debug => core::LogLevel::Debug,
            wit::LogLevel::Info => core::LogLevel::Info,
            wit::LogLevel::Warn => core::LogLevel::Warn,
            wit::LogLevel::Error => core::LogLevel::Error,
        }
    }
}

impl From<core::Role> for wit::Role {
    fn from(role: core::Role) -> Self {
        match role {
            core::Role::Admin => wit::Role::Admin,
            core::Role::Primary => wit::Role::Primary,
            core::Role::Secondary => wit::Role::Secondary,
        }
    }
}

impl From<wit::Role> for core::Role {
    fn from(role: wit::Role) -> Self {
        match role {
            wit::Role::Admin => core::Role::Admin,
            wit::Role::Primary => core::Role::Primary,
            wit::Role::Secondary => core::Role::Secondary,
        }
    }
}

impl From<wit::ErrorKind> for core::ErrorKind {
    fn from(kind: wit::ErrorKind) -> Self {
        match kind {
            wit::ErrorKind::Transient => core::ErrorKind::Transient,
            wit::ErrorKind::InvalidArgument => core::ErrorKind::InvalidArgument,
            wit::ErrorKind::OutOfBounds => core::ErrorKind::OutOfBounds,
            wit::ErrorKind::Permanent => core::ErrorKind::Permanent,
        }
    }
}

impl From<wit::PluginInfo> for core::PluginInfo {
    fn from(info: wit::PluginInfo) -> Self {
        core::PluginInfo {
            name: info.name,
            version: info.version,
            commands: info
                .commands
                .into_iter()
                .map(|c| core::CommandSpec {
                    name: c.name,
                    roles: c.roles.into_iter().map(Into::into).collect(),
                    budget_ms: c.budget_ms,
                })
                .collect(),
        }
    }
}

/// Borrows an invocation as the WIT `command` record (lowered without copies).
pub(super) fn command(cmd: &core::Invocation) -> wit::Command<'_> {
    wit::Command {
        id: &cmd.id,
        name: &cmd.name,
        payload: &cmd.payload,
        attempt: cmd.attempt,
        role: cmd.role.into(),
    }
}
