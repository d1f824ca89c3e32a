//! Step 5 on Linux: one loaded plugin and its calls. By default the instance
//! is reused across successful calls (guest statics persist, exactly as on
//! wasmi), and thrown away with its whole `Store` after any `Err` (contract
//! point 13): the next call instantiates afresh from the pre-linked
//! `PluginPre`, while the `HostEnv` (kv, logger, clock) moves over untouched.

use std::sync::Arc;

use relay_core::engine::output::{check_message, check_reply};
use relay_core::engine::{call_budget_ms, validate_info, EnvFactory, Plugin, PluginError};
use relay_core::host_env::HostEnv;
use relay_core::limits::Limits;
use relay_core::plugin::{CallOutcome, HandlerError, HandlerResult, Invocation, PluginInfo};
use wasmtime::Store;

use super::bindings::{self, wit, State};
use super::errors::classify;
use super::ticker::deadline_ticks;
use super::{InstancePolicy, Runtime};

/// A plugin loaded by [`super::WasmtimeEngine`].
pub struct WasmtimePlugin {
    info: PluginInfo,
    limits: Limits,
    policy: InstancePolicy,
    runtime: Arc<Runtime>,
    pre: bindings::PluginPre<State>,
    store: Store<State>,
    /// `None` after a failed call: the next call instantiates afresh.
    live: Option<bindings::Plugin>,
    /// The metering's out-of-fuel function (see [`classify`]).
    exhausted: u32,
}

impl WasmtimePlugin {
    /// Load steps 5-6: instantiate, run `describe` in a detached env,
    /// validate it, then attach the plugin's real env.
    pub(super) fn boot(
        runtime: Arc<Runtime>,
        pre: bindings::PluginPre<State>,
        limits: &Limits,
        policy: InstancePolicy,
        exhausted: u32,
        make_env: EnvFactory<'_>,
    ) -> Result<Self, PluginError> {
        let mut store = new_store(
            &runtime.engine,
            State::new(HostEnv::detached(limits), limits),
        );
        let (live, info) = {
            let _active = runtime.ticker.enter();
            let boot_error = |e| boot_error(e, exhausted);
            arm(&mut store, limits.time_budget_ms);
            let live = pre.instantiate(&mut store).map_err(boot_error)?;
            arm(&mut store, limits.time_budget_ms);
            let info = live.call_describe(&mut store).map_err(boot_error)?;
            (live, PluginInfo::from(info))
        };
        validate_info(&info)?;
        store.data_mut().env = make_env(&info);
        Ok(WasmtimePlugin {
            info,
            limits: limits.clone(),
            policy,
            runtime,
            pre,
            store,
            live: Some(live),
            exhausted,
        })
    }

    fn call(&mut self, cmd: &Invocation) -> Result<CallOutcome, PluginError> {
        let budget_ms = call_budget_ms(&self.info, &self.limits, &cmd.name);
        let exhausted = self.exhausted;
        let _active = self.runtime.ticker.enter();
        let live = match self.live.take() {
            Some(live) => live,
            None => {
                arm(&mut self.store, budget_ms);
                self.pre
                    .instantiate(&mut self.store)
                    .map_err(|e| classify(&e, exhausted))?
            }
        };
        self.store.data_mut().events.clear();
        self.store.data_mut().env.begin_call();
        arm(&mut self.store, budget_ms);
        let returned = live
            .call_handle(&mut self.store, bindings::command(cmd))
            .map_err(|e| classify(&e, exhausted))?;
        let result = self.check_result(returned)?;
        let events = std::mem::take(&mut self.store.data_mut().events);
        self.live = Some(live);
        Ok(CallOutcome { result, events })
    }

    /// Contract point 11 for the handler's own answer. (wasmtime has already
    /// copied the list out of guest memory here — it runs the post-return
    /// inside `call`, so the list cannot be inspected in place — but that
    /// copy is bounded by `max_memory_bytes`.)
    fn check_result(
        &self,
        returned: Result<Option<Vec<u8>>, wit::HandlerError>,
    ) -> Result<HandlerResult, PluginError> {
        match &returned {
            Ok(Some(reply)) => check_reply(reply.len(), &self.limits)?,
            Ok(None) => {}
            Err(e) => check_message(e.message.len(), &self.limits)?,
        }
        Ok(returned.map_err(|e| HandlerError {
            kind: e.kind.into(),
            message: e.message,
        }))
    }

    /// Drops the instance and its store (and so all guest memory), keeping the env.
    fn recycle(&mut self) {
        self.live = None;
        let env = std::mem::replace(
            &mut self.store.data_mut().env,
            HostEnv::detached(&self.limits),
        );
        self.store = new_store(&self.runtime.engine, State::new(env, &self.limits));
    }
}

impl Plugin for WasmtimePlugin {
    fn info(&self) -> &PluginInfo {
        &self.info
    }

    fn handle(&mut self, cmd: &Invocation) -> Result<CallOutcome, PluginError> {
        if self.policy == InstancePolicy::FreshPerCall {
            self.recycle();
        }
        let outcome = self.call(cmd);
        if outcome.is_err() {
            self.recycle();
        }
        outcome
    }

    fn env(&self) -> &HostEnv {
        &self.store.data().env
    }

    fn env_mut(&mut self) -> &mut HostEnv {
        &mut self.store.data_mut().env
    }
}

/// A store with the plugin's limiter installed.
pub(super) fn new_store(engine: &wasmtime::Engine, state: State) -> Store<State> {
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limiter);
    store
}

/// Starts the time budget of one entry into the guest (its fuel is refilled
/// by the module's own entry wrappers).
pub(super) fn arm(store: &mut Store<State>, budget_ms: u32) {
    store.set_epoch_deadline(deadline_ticks(budget_ms));
}

/// Contract point 5: anything going wrong while instantiating or describing.
fn boot_error(e: wasmtime::Error, exhausted: u32) -> PluginError {
    PluginError::Instantiate(match classify(&e, exhausted) {
        // Not a guest ABI fault at this stage: wasmtime's own words (without
        // the backtrace it attaches as context) say more.
        PluginError::Abi(_) => e.root_cause().to_string(),
        typed => typed.to_string(),
    })
}
