//! What a wasmi store carries for one plugin instance: the plugin's
//! [`HostEnv`] (kv, clock, logger), the events of the current call, the
//! resource limiter and handles to the guest's memory and allocator that the
//! host functions need.

use alloc::{sync::Arc, vec::Vec};

use wasmi::{AsContextMut, Memory, Store, TypedFunc};

use super::limits::GuestLimiter;
use crate::engine::CallClock;
use crate::host_env::HostEnv;
use crate::limits::Limits;
use crate::plugin::Event;

/// `cabi_realloc(old_ptr, old_size, align, new_size) -> ptr`.
pub(super) type Realloc = TypedFunc<(u32, u32, u32, u32), u32>;

/// The guest exports the host functions use while the guest runs.
#[derive(Clone, Copy)]
pub(super) struct GuestHandles {
    pub memory: Memory,
    pub realloc: Realloc,
}

pub(super) struct GuestState {
    pub env: HostEnv,
    pub limiter: GuestLimiter,
    /// The plugin's limits (host functions check events against them).
    pub limits: Limits,
    /// Events emitted by the running call (contract point 14: returned, not
    /// published, by the engine).
    pub events: Vec<Event>,
    /// Set once the instance exists; `None` while its start function runs
    /// (host functions then look the exports up by name).
    pub guest: Option<GuestHandles>,
    /// `false` while the host runs `cabi_realloc` or a post-return: the
    /// canonical ABI forbids imports there (wasmtime traps the same way),
    /// which also bounds host -> guest -> host re-entry to one level, so a
    /// guest cannot recurse through `kv-get` and its allocator on the host
    /// stack.
    pub may_leave: bool,
    /// The clock of the time budget (`None`: no time budget, fuel only).
    pub clock: Option<Arc<dyn CallClock>>,
    /// When the current entry's time budget ends, on `clock`.
    pub deadline: Option<u64>,
}

impl GuestState {
    pub fn new(env: HostEnv, limits: &Limits, clock: Option<Arc<dyn CallClock>>) -> Self {
        GuestState {
            env,
            limiter: GuestLimiter::new(limits),
            limits: limits.clone(),
            events: Vec::new(),
            guest: None,
            may_leave: true,
            clock,
            deadline: None,
        }
    }

    /// Forgets what the previous call left behind and starts the time
    /// budget of the next one.
    pub fn begin_call(&mut self, budget_ms: u32) {
        self.events.clear();
        self.env.begin_call();
        self.limiter.exhausted = None;
        self.may_leave = true;
        self.deadline = self
            .clock
            .as_ref()
            .map(|c| c.now_ms().saturating_add(u64::from(budget_ms)));
    }

    /// The current entry has used up its time budget.
    pub fn past_deadline(&self) -> bool {
        match (&self.clock, self.deadline) {
            (Some(clock), Some(deadline)) => clock.now_ms() >= deadline,
            _ => false,
        }
    }
}

/// A store whose growth is governed by the state's limiter.
pub(super) fn new_store(engine: &wasmi::Engine, state: GuestState) -> Store<GuestState> {
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limiter);
    store
}

/// Runs `f`, a call of `cabi_realloc` or a post-return, with imports
/// forbidden (see [`GuestState::may_leave`]).
pub(super) fn without_imports<C, R>(mut ctx: C, f: impl FnOnce(&mut C) -> R) -> R
where
    C: AsContextMut<Data = GuestState>,
{
    ctx.as_context_mut().data_mut().may_leave = false;
    let result = f(&mut ctx);
    ctx.as_context_mut().data_mut().may_leave = true;
    result
}
