//! [`Harness`]: one plugin on one engine, driven from Rust tests.
//!
//! Role in the data path: stands in for the device host. The plugin is
//! installed into a real [`Registry`] and every call goes through
//! `Registry::dispatch`, so the role checks and the unknown-command answer are
//! exactly what a device would do. The host capabilities are in-memory
//! fakes shared with the harness: a [`MemKv`] that outlives the plugin (so
//! [`Harness::restart`] simulates a host restart with the state kept), a
//! settable clock (a [`FixedClock`] value behind a shared cell) and a
//! [`MemLogger`] whose lines [`Harness::logs`] returns.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use relay_core::engine::{Engine, EngineKind};
use relay_core::host_env::{Clock, FixedClock, HostEnv, KvStore, Logger, MemKv, MemLogger};
use relay_core::limits::Limits;
use relay_core::plugin::{Event, Invocation, LogLevel, PluginInfo, Role};
use relay_core::registry::Registry;
use serde_json::Value as Json;

use super::outcome::{events_to_json, kv_to_json, CallResult, Observation, Outcome};
use super::HarnessError;
use crate::value::json_to_msgpack;

/// The clock every harness starts at (2023-11-14T22:13:20Z), fixed so runs repeat.
pub const DEFAULT_NOW_MS: u64 = 1_700_000_000_000;

/// How a [`Harness`] starts.
#[derive(Debug, Clone)]
pub struct HarnessOptions {
    pub limits: Limits,
    pub now_ms: u64,
    /// Initial kv contents (raw bytes; encode with `value::json_to_msgpack`).
    pub kv: BTreeMap<String, Vec<u8>>,
}

impl Default for HarnessOptions {
    fn default() -> Self {
        HarnessOptions {
            limits: Limits::default(),
            now_ms: DEFAULT_NOW_MS,
            kv: BTreeMap::new(),
        }
    }
}

/// A plugin loaded on one engine, with in-memory host capabilities.
pub struct Harness {
    engine: Arc<dyn Engine>,
    wasm: Arc<[u8]>,
    limits: Limits,
    registry: Registry,
    info: PluginInfo,
    kv: SharedKv,
    clock: SharedClock,
    logs: SharedLogger,
    events: Vec<Event>,
    role: Role,
    attempt: u32,
    calls: u64,
}

impl Harness {
    /// Loads the module at `path` on a new engine of `kind`, default options.
    pub fn load(path: impl AsRef<Path>, kind: EngineKind) -> Result<Harness, HarnessError> {
        Harness::load_with(path, kind, HarnessOptions::default())
    }

    /// Loads the module at `path` on a new engine of `kind`.
    pub fn load_with(
        path: impl AsRef<Path>,
        kind: EngineKind,
        options: HarnessOptions,
    ) -> Result<Harness, HarnessError> {
        let wasm = super::read_artifact(path.as_ref())?;
        Harness::new(super::engine(kind)?, wasm, options)
    }

    /// Loads `wasm` on an existing engine (share one engine across many
    /// harnesses; engines are `Send + Sync`).
    pub fn new(
        engine: Arc<dyn Engine>,
        wasm: impl Into<Arc<[u8]>>,
        options: HarnessOptions,
    ) -> Result<Harness, HarnessError> {
        let HarnessOptions { limits, now_ms, kv } = options;
        let mut harness = Harness {
            engine,
            wasm: wasm.into(),
            limits,
            registry: Registry::new(),
            info: PluginInfo {
                name: String::new(),
                version: String::new(),
                commands: Vec::new(),
            },
            kv: SharedKv(Arc::new(Mutex::new(MemKv(kv)))),
            clock: SharedClock(Arc::new(AtomicU64::new(now_ms))),
            logs: SharedLogger::default(),
            events: Vec::new(),
            role: Role::Admin,
            attempt: 1,
            calls: 0,
        };
        harness.install()?;
        Ok(harness)
    }

    /// Loads the artifact again and swaps it in, as a host restart would:
    /// the instance (and any guest memory) is new, the kv store is kept.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.install()
    }

    fn install(&mut self) -> Result<(), HarnessError> {
        let (kv, clock, logs, limits) = (
            self.kv.clone(),
            self.clock.clone(),
            self.logs.clone(),
            self.limits.clone(),
        );
        let mut make_env = move |info: &PluginInfo| {
            HostEnv::new(
                info.name.clone(),
                Box::new(kv.clone()),
                Box::new(clock.clone()),
                Box::new(logs.clone()),
                &limits,
            )
        };
        let plugin = self.engine.load(&self.wasm, &self.limits, &mut make_env)?;
        let info = plugin.info().clone();
        self.registry.install(plugin)?;
        self.info = info;
        Ok(())
    }

    /// The engine running the plugin.
    pub fn engine(&self) -> EngineKind {
        self.engine.kind()
    }

    /// What the plugin's `describe` returned.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// The role of the following calls (default admin).
    pub fn as_role(&mut self, role: Role) -> &mut Self {
        self.role = role;
        self
    }

    /// The attempt number of the following calls (default 1).
    pub fn with_attempt(&mut self, attempt: u32) -> &mut Self {
        self.attempt = attempt;
        self
    }

    /// Sets the clock the plugin reads (unix ms).
    pub fn set_now(&mut self, now_ms: u64) -> &mut Self {
        self.clock.0.store(now_ms, Ordering::Relaxed);
        self
    }

    /// The clock the plugin reads (unix ms).
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Calls `command` with `payload` encoded as msgpack (`Json::Null` is
    /// msgpack nil; use [`Harness::call_empty`] for no payload at all).
    pub fn call(&mut self, command: &str, payload: Json) -> Result<CallResult, HarnessError> {
        let bytes = json_to_msgpack(&payload)?;
        Ok(self.call_raw(command, bytes))
    }

    /// Calls `command` with an empty payload.
    pub fn call_empty(&mut self, command: &str) -> CallResult {
        self.call_raw(command, Vec::new())
    }

    /// Calls `command` with raw payload bytes (which need not be msgpack).
    pub fn call_raw(&mut self, command: &str, payload: Vec<u8>) -> CallResult {
        self.calls += 1;
        let cmd = Invocation {
            id: format!("call-{}", self.calls),
            name: command.into(),
            payload,
            attempt: self.attempt,
            role: self.role,
        };
        self.invoke(&cmd)
    }

    /// Runs a fully specified invocation through the registry.
    pub fn invoke(&mut self, cmd: &Invocation) -> CallResult {
        let (outcome, events) = Outcome::from_dispatch(self.registry.dispatch(cmd));
        self.events.extend(events.iter().cloned());
        CallResult { outcome, events }
    }

    /// Runs `cmd` and records what it left: outcome, events and the whole kv.
    pub fn observe(&mut self, cmd: &Invocation) -> Observation {
        let CallResult { outcome, events } = self.invoke(cmd);
        Observation {
            outcome,
            events,
            kv: self.kv_raw(),
        }
    }

    /// The kv store, raw.
    pub fn kv_raw(&self) -> BTreeMap<String, Vec<u8>> {
        self.kv.lock().0.clone()
    }

    /// The kv store as a JSON object, values decoded from msgpack.
    pub fn kv_json(&self) -> Json {
        kv_to_json(&self.kv_raw())
    }

    /// Stores `value` (encoded as msgpack) under `key`, through the plugin's
    /// env so the kv limits apply as they would to the plugin.
    pub fn set_kv_json(&mut self, key: &str, value: &Json) -> Result<(), HarnessError> {
        let bytes = json_to_msgpack(value)?;
        let name = self.info.name.clone();
        let plugin = self
            .registry
            .plugin_mut(&name)
            .ok_or_else(|| HarnessError::Unexpected(format!("plugin {name:?} is not installed")))?;
        plugin.env_mut().kv_set(key, &bytes)?;
        Ok(())
    }

    /// Every event emitted since the harness was created (across restarts).
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// [`Harness::events`] as `[{"name": ..., "payload": <decoded>}]`.
    pub fn events_json(&self) -> Json {
        events_to_json(&self.events)
    }

    /// Forgets the recorded events.
    pub fn clear_events(&mut self) {
        self.events.clear();
    }

    /// Every log line the plugin wrote while handling calls, in order (lines
    /// written during `describe` go to tracing, as on a device).
    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        self.logs
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    /// Forgets the captured log lines.
    pub fn clear_logs(&mut self) {
        self.logs
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clear();
    }
}

/// A [`MemKv`] shared between the harness and every plugin instance it loads.
#[derive(Clone)]
struct SharedKv(Arc<Mutex<MemKv>>);

impl SharedKv {
    fn lock(&self) -> MutexGuard<'_, MemKv> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl KvStore for SharedKv {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().get(key)
    }
    fn put(&mut self, key: &str, value: &[u8]) {
        self.lock().put(key, value)
    }
    fn delete(&mut self, key: &str) {
        self.lock().delete(key)
    }
    fn entries(&self) -> Vec<(String, Vec<u8>)> {
        self.lock().entries()
    }
}

/// A [`FixedClock`] whose instant the harness can move.
#[derive(Clone)]
struct SharedClock(Arc<AtomicU64>);

impl Clock for SharedClock {
    fn now_ms(&self) -> u64 {
        FixedClock(self.0.load(Ordering::Relaxed)).now_ms()
    }
}

/// A [`MemLogger`] the harness can read.
#[derive(Clone, Default)]
struct SharedLogger(Arc<Mutex<MemLogger>>);

impl Logger for SharedLogger {
    fn log(&mut self, plugin: &str, level: LogLevel, message: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .log(plugin, level, message)
    }
}
