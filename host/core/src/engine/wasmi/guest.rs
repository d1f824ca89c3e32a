//! The world's exports called on a wasmi instance: the export check
//! (contract point 2), instantiation, and `describe` / `handle` with their
//! lowering (arguments copied into guest memory through `cabi_realloc`),
//! lifting ([`abi`]) and post-return (`cabi_post_*`, called after the result
//! has been read so the guest may free it).

use alloc::format;

use wasmi::{Extern, ExternType, Instance, Linker, Memory, Module, Store, TypedFunc, ValType};

use super::abi;
use super::imports::guest_alloc;
use super::state::{without_imports, GuestHandles, GuestState, Realloc};
use super::trap::classify;
use crate::engine::PluginError;
use crate::limits::Limits;
use crate::plugin::{CallOutcome, Invocation, PluginInfo};

use ValType::I32;

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
}

/// Required function exports and their core signatures.
const REQUIRED: [(&str, &[ValType], &[ValType]); 3] = [
    ("cabi_realloc", &[I32, I32, I32, I32], &[I32]),
    ("describe", &[], &[I32]),
    ("handle", &[I32, I32, I32, I32, I32, I32, I32, I32], &[I32]),
];

/// Optional: a guest without them simply has nothing to free.
const POST_RETURNS: [&str; 2] = ["cabi_post_describe", "cabi_post_handle"];

/// The module exports what the world needs, with the right types.
pub(super) fn check_exports(module: &Module) -> Result<(), PluginError> {
    let invalid = |msg: alloc::string::String| Err(PluginError::InvalidModule(msg));
    if !matches!(module.get_export("memory"), Some(ExternType::Memory(_))) {
        return invalid("missing export `memory` (a linear memory)".into());
    }
    let post: [(&str, &[ValType], &[ValType]); 2] = POST_RETURNS.map(|n| (n, &[I32][..], &[][..]));
    for (name, params, results) in REQUIRED.into_iter().chain(post) {
        match module.get_export(name) {
            Some(ExternType::Func(ty)) if ty.params() == params && ty.results() == results => {}
            None if POST_RETURNS.contains(&name) => {}
            None => return invalid(format!("missing export `{name}`")),
            Some(ty) => return invalid(format!("export `{name}` has the wrong type {ty:?}")),
        }
    }
    Ok(())
}

/// Instantiates `module` in `store` (running its start function, if any,
/// under the call's fuel) and caches the handles the host functions need.
pub(super) fn instantiate(
    linker: &Linker<GuestState>,
    module: &Module,
    store: &mut Store<GuestState>,
    limits: &Limits,
) -> Result<Exports, PluginError> {
    store.data_mut().guest = None;
    store.data_mut().begin_call();
    set_fuel(store, limits)?;
    let instance = linker
        .instantiate_and_start(&mut *store, module)
        .map_err(|e| classify(&e, store.data().limiter.exhausted))?;
    let exports = resolve(store, instance)?;
    store.data_mut().guest = Some(GuestHandles {
        memory: exports.memory,
        realloc: exports.realloc,
    });
    Ok(exports)
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
    })
}

fn set_fuel(store: &mut Store<GuestState>, limits: &Limits) -> Result<(), PluginError> {
    store
        .set_fuel(limits.fuel_per_call)
        .map_err(|e| PluginError::Trap(format!("fuel: {e}")))
}

/// Maps a wasmi error of the running call.
fn fail(store: &Store<GuestState>, e: wasmi::Error) -> PluginError {
    classify(&e, store.data().limiter.exhausted)
}

/// Runs `describe` and lifts its answer.
pub(super) fn describe(
    store: &mut Store<GuestState>,
    ex: &Exports,
    limits: &Limits,
) -> Result<PluginInfo, PluginError> {
    store.data_mut().begin_call();
    set_fuel(store, limits)?;
    let ret = ex
        .describe
        .call(&mut *store, ())
        .map_err(|e| fail(store, e))?;
    let info = abi::lift_plugin_info(ex.memory.data(&*store), ret)?;
    if let Some(post) = ex.post_describe {
        without_imports(&mut *store, |store| post.call(store, ret)).map_err(|e| fail(store, e))?;
    }
    Ok(info)
}

/// Runs `handle` for `cmd`: lowers the command, calls, lifts the result,
/// lets the guest free it, and returns the events the call emitted.
pub(super) fn handle(
    store: &mut Store<GuestState>,
    ex: &Exports,
    cmd: &Invocation,
    limits: &Limits,
) -> Result<CallOutcome, PluginError> {
    store.data_mut().begin_call();
    set_fuel(store, limits)?;
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
    let ret = ex
        .handle
        .call(&mut *store, params)
        .map_err(|e| fail(store, e))?;
    let result = abi::lift_handle_result(ex.memory.data(&*store), ret, limits.max_reply_bytes)?;
    if let Some(post) = ex.post_handle {
        without_imports(&mut *store, |store| post.call(store, ret)).map_err(|e| fail(store, e))?;
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
    let ptr = guest_alloc(&mut *store, ex.memory, ex.realloc, 1, data.len())
        .map_err(|e| fail(store, e))?;
    abi::store_bytes(ex.memory.data_mut(&mut *store), ptr, data)?;
    // `guest_alloc` proved the length fits in u32.
    Ok((ptr, data.len() as u32))
}
