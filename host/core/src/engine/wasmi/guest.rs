//! The world's exports called on a wasmi instance: instantiation (and the
//! start function, which the load step turned into an export), and
//! `describe` / `handle` with their lowering (arguments copied into guest
//! memory through `cabi_realloc`), lifting ([`abi`]) and post-return
//! (`cabi_post_*`, called after the result has been read so the guest may
//! free it).
//!
//! Every entry runs through [`run`]: wasmi's own fuel only cuts the call
//! into slices, between which the call's deadline is checked (wasmi has no
//! epochs); the CPU budget itself is the fuel counter the load step put into
//! the module, read back after a trap to tell "out of fuel" apart.

use alloc::format;

use wasmi::{
    Extern, Global, Instance, Linker, Memory, Module, Store, TypedFunc, TypedResumableCall,
    WasmParams, WasmResults,
};

use super::abi;
use super::imports::guest_alloc;
use super::state::{without_imports, GuestHandles, GuestState, Realloc};
use super::trap::classify;
use crate::engine::module::{FUEL_EXPORT, START_EXPORT};
use crate::engine::PluginError;
use crate::limits::Limits;
use crate::plugin::{CallOutcome, Invocation, PluginInfo};

/// wasmi fuel per slice: the time budget is checked this often. About
/// 0.1-0.5 ms of guest code on a desktop, a few ms on a microcontroller.
pub(super) const SLICE: u64 = 100_000;

/// `handle`'s eight flat parameters: id, name, payload (ptr, len each),
/// attempt and role.
type HandleParams = (u32, u32, u32, u32, u32, u32, u32, u32);

/// Typed handles to the exports of one instance.
#[derive(Clone, Copy)]
pub(super) struct Exports {
    memory: Memory,
    realloc: Realloc,
    describe: TypedFunc<(), u32>,
    handle: TypedFunc<HandleParams, u32>,
    post_describe: Option<TypedFunc<u32, ()>>,
    post_handle: Option<TypedFunc<u32, ()>>,
    /// The metering's fuel counter (negative once it ran out).
    fuel: Option<Global>,
}

/// Optional: a guest without them simply has nothing to free.
const POST_RETURNS: [&str; 2] = ["cabi_post_describe", "cabi_post_handle"];

/// Instantiates `module` in `store`, runs its start function (exported as
/// [`START_EXPORT`] by the load step) under one entry's budget, and caches
/// the handles the host functions need.
pub(super) fn instantiate(
    linker: &Linker<GuestState>,
    module: &Module,
    store: &mut Store<GuestState>,
    limits: &Limits,
) -> Result<Exports, PluginError> {
    store.data_mut().guest = None;
    store.data_mut().begin_call(limits.time_budget_ms);
    let instance = linker
        .instantiate_and_start(&mut *store, module)
        .map_err(|e| classify(&e, store.data().limiter.exhausted, None))?;
    let exports = resolve(store, instance)?;
    store.data_mut().guest = Some(GuestHandles {
        memory: exports.memory,
        realloc: exports.realloc,
    });
    let start = instance
        .get_func(&*store, START_EXPORT)
        .and_then(|f| f.typed::<(), ()>(&*store).ok());
    if let Some(start) = start {
        run(store, &exports, &start, ())?;
    }
    Ok(exports)
}

/// Calls `func` to completion in fuel slices, checking the deadline
/// between slices; a failure is classified with the store's state.
pub(super) fn run<P: WasmParams, R: WasmResults>(
    store: &mut Store<GuestState>,
    ex: &Exports,
    func: &TypedFunc<P, R>,
    params: P,
) -> Result<R, PluginError> {
    let fail = |store: &Store<GuestState>, e: &wasmi::Error| {
        let fuel = ex.fuel.map(|g| g.get(store).i64().unwrap_or(0));
        classify(e, store.data().limiter.exhausted, fuel)
    };
    let refuel = |store: &mut Store<GuestState>, at_least: u64| {
        store
            .set_fuel(SLICE.max(at_least))
            .map_err(|e| PluginError::Trap(format!("fuel: {e}")))
    };
    refuel(store, 0)?;
    let mut call = func
        .call_resumable(&mut *store, params)
        .map_err(|e| fail(store, &e))?;
    loop {
        match call {
            TypedResumableCall::Finished(results) => return Ok(results),
            TypedResumableCall::HostTrap(pending) => return Err(fail(store, pending.host_error())),
            TypedResumableCall::OutOfFuel(pending) => {
                if store.data().past_deadline() {
                    return Err(PluginError::Timeout);
                }
                refuel(store, pending.required_fuel())?;
                call = pending.resume(&mut *store).map_err(|e| fail(store, &e))?;
            }
        }
    }
}

fn resolve(store: &Store<GuestState>, instance: Instance) -> Result<Exports, PluginError> {
    // `check_exports` ran on the module, so these only fail on a wasmi bug;
    // still an error, never a panic.
    let missing = |name: &str| PluginError::InvalidModule(format!("export `{name}` unusable"));
    let func = |name: &'static str| instance.get_func(store, name).ok_or_else(|| missing(name));
    let post = |name| {
        instance
            .get_func(store, name)
            .and_then(|f| f.typed(store).ok())
    };
    Ok(Exports {
        memory: instance
            .get_export(store, "memory")
            .and_then(Extern::into_memory)
            .ok_or_else(|| missing("memory"))?,
        realloc: func("cabi_realloc")?
            .typed(store)
            .map_err(|_| missing("cabi_realloc"))?,
        describe: func("describe")?
            .typed(store)
            .map_err(|_| missing("describe"))?,
        handle: func("handle")?
            .typed(store)
            .map_err(|_| missing("handle"))?,
        post_describe: post(POST_RETURNS[0]),
        post_handle: post(POST_RETURNS[1]),
        fuel: instance
            .get_export(store, FUEL_EXPORT)
            .and_then(Extern::into_global),
    })
}

/// Runs `describe` and lifts its answer.
pub(super) fn describe(
    store: &mut Store<GuestState>,
    ex: &Exports,
    limits: &Limits,
) -> Result<PluginInfo, PluginError> {
    store.data_mut().begin_call(limits.time_budget_ms);
    let ret = run(store, ex, &ex.describe, ())?;
    let info = abi::lift_plugin_info(ex.memory.data(&*store), ret)?;
    if let Some(post) = ex.post_describe {
        without_imports(&mut *store, |store| run(store, ex, &post, ret))?;
    }
    Ok(info)
}

/// Runs `handle` for `cmd` within `budget_ms`: lowers the command, calls,
/// lifts the result, lets the guest free it, and returns the events the
/// call emitted.
pub(super) fn handle(
    store: &mut Store<GuestState>,
    ex: &Exports,
    cmd: &Invocation,
    limits: &Limits,
    budget_ms: u32,
) -> Result<CallOutcome, PluginError> {
    store.data_mut().begin_call(budget_ms);
    let (id, id_len) = lower_bytes(store, ex, cmd.id.as_bytes())?;
    let (name, name_len) = lower_bytes(store, ex, cmd.name.as_bytes())?;
    let (payload, payload_len) = lower_bytes(store, ex, &cmd.payload)?;
    let role = abi::role_disc(cmd.role);
    let params = (
        id,
        id_len,
        name,
        name_len,
        payload,
        payload_len,
        cmd.attempt,
        role,
    );
    let ret = run(store, ex, &ex.handle, params)?;
    let result = abi::lift_handle_result(ex.memory.data(&*store), ret, limits)?;
    if let Some(post) = ex.post_handle {
        without_imports(&mut *store, |store| run(store, ex, &post, ret))?;
    }
    let events = core::mem::take(&mut store.data_mut().events);
    Ok(CallOutcome { result, events })
}

/// Copies a string or byte list into a fresh guest allocation; returns the
/// flat `(ptr, len)` pair.
fn lower_bytes(
    store: &mut Store<GuestState>,
    ex: &Exports,
    data: &[u8],
) -> Result<(u32, u32), PluginError> {
    let ptr = guest_alloc(&mut *store, ex.memory, ex.realloc, 1, data.len()).map_err(|e| {
        let fuel = ex.fuel.map(|g| g.get(&*store).i64().unwrap_or(0));
        classify(&e, store.data().limiter.exhausted, fuel)
    })?;
    abi::store_bytes(ex.memory.data_mut(&mut *store), ptr, data)?;
    // `guest_alloc` proved the length fits in u32.
    Ok((ptr, data.len() as u32))
}
