//! The world's `host` interface served to a wasmi guest: the six imports of
//! `relay:plugin/host@0.1.0` (the load step already checked that the module
//! imports nothing else, with the right signatures) and the host functions
//! themselves.
//!
//! Arguments are read in place from guest memory (bounds-checked, UTF-8
//! validated) and handed to [`HostEnv`] without copying; only what the host
//! keeps (an event) or what goes back to the guest (a kv value, allocated with
//! the guest's `cabi_realloc`) is copied. A violation ends the call with the
//! contract's error through [`HostTrap`](super::trap::HostTrap). What host
//! work costs in fuel is charged by the metering code in the guest itself,
//! the same on both engines (`engine::module`).

use alloc::format;

use wasmi::errors::LinkerError;
use wasmi::{Caller, Extern, Linker, Memory};

use super::abi;
use super::state::{without_imports, GuestState, Realloc};
use crate::engine::output::check_event;
use crate::engine::PluginError;
use crate::plugin::Event;

use crate::engine::module::world::HOST_MODULE;

/// Adds the host functions to `linker`.
pub(super) fn define(linker: &mut Linker<GuestState>) -> Result<(), LinkerError> {
    linker
        .func_wrap(HOST_MODULE, "log", log)?
        .func_wrap(HOST_MODULE, "kv-get", kv_get)?
        .func_wrap(HOST_MODULE, "kv-set", kv_set)?
        .func_wrap(HOST_MODULE, "kv-delete", kv_delete)?
        .func_wrap(HOST_MODULE, "now-ms", now_ms)?
        .func_wrap(HOST_MODULE, "emit", emit)?;
    Ok(())
}

type HostResult<T = ()> = Result<T, wasmi::Error>;

/// Every host function starts here: imports are refused while the host
/// itself is calling into the guest (`cabi_realloc`, post-returns).
fn enter(caller: &Caller<'_, GuestState>) -> Result<(), PluginError> {
    if caller.data().may_leave {
        Ok(())
    } else {
        Err(PluginError::Trap(
            "import called from cabi_realloc or a post-return function".into(),
        ))
    }
}

fn memory(caller: &Caller<'_, GuestState>) -> Result<Memory, PluginError> {
    if let Some(g) = caller.data().guest {
        return Ok(g.memory);
    }
    // While the start function runs the handles are not cached yet.
    caller
        .get_export("memory")
        .and_then(Extern::into_memory)
        .ok_or_else(|| abi::abi("guest exports no memory"))
}

fn realloc(caller: &Caller<'_, GuestState>) -> Result<Realloc, PluginError> {
    if let Some(g) = caller.data().guest {
        return Ok(g.realloc);
    }
    caller
        .get_export("cabi_realloc")
        .and_then(Extern::into_func)
        .and_then(|f| f.typed(caller).ok())
        .ok_or_else(|| abi::abi("guest exports no cabi_realloc"))
}

/// Allocates `len` bytes aligned to `align` in the guest through its
/// `cabi_realloc`, checking what it returns like the canonical ABI does.
pub(super) fn guest_alloc(
    ctx: impl wasmi::AsContextMut<Data = GuestState>,
    memory: Memory,
    realloc: Realloc,
    align: u32,
    len: usize,
) -> Result<u32, wasmi::Error> {
    let mut ctx = ctx;
    let len32 = u32::try_from(len).map_err(|_| abi::abi("value does not fit a 32-bit guest"))?;
    // The call is bounded by the module's own fuel counter; wasmi's fuel
    // (time slices, see `guest::run`) cannot be resumed inside a host
    // function, so it gets enough for any call the counter allows.
    let slice = ctx.as_context().get_fuel().unwrap_or(0);
    ctx.as_context_mut().set_fuel(u64::MAX / 2)?;
    let ptr = without_imports(&mut ctx, |ctx| realloc.call(ctx, (0, 0, align, len32)));
    ctx.as_context_mut().set_fuel(slice)?;
    let ptr = ptr?;
    if ptr & (align.max(1) - 1) != 0 {
        return Err(abi::abi(format!(
            "cabi_realloc returned {ptr:#x}, not {align}-byte aligned"
        ))
        .into());
    }
    abi::range(memory.data(&ctx), ptr, len)?;
    Ok(ptr)
}

fn log(mut caller: Caller<'_, GuestState>, level: u32, ptr: u32, len: u32) -> HostResult {
    enter(&caller)?;
    let level = abi::log_level(level)?;
    let memory = memory(&caller)?;
    let (mem, state) = memory.data_and_store_mut(&mut caller);
    state.env.log(level, abi::string(mem, ptr, len)?);
    Ok(())
}

fn kv_get(mut caller: Caller<'_, GuestState>, ptr: u32, len: u32, retptr: u32) -> HostResult {
    enter(&caller)?;
    let memory = memory(&caller)?;
    let value = {
        let (mem, state) = memory.data_and_store_mut(&mut caller);
        state.env.kv_get(abi::string(mem, ptr, len)?)
    };
    let list = match value {
        None => None,
        Some(value) => {
            let realloc = realloc(&caller)?;
            let at = guest_alloc(&mut caller, memory, realloc, 1, value.len())?;
            abi::store_bytes(memory.data_mut(&mut caller), at, &value)?;
            // `guest_alloc` proved the length fits in u32.
            Some((at, value.len() as u32))
        }
    };
    abi::store_kv_get(memory.data_mut(&mut caller), retptr, list)?;
    Ok(())
}

fn kv_set(
    mut caller: Caller<'_, GuestState>,
    kptr: u32,
    klen: u32,
    vptr: u32,
    vlen: u32,
    retptr: u32,
) -> HostResult {
    enter(&caller)?;
    let memory = memory(&caller)?;
    let (mem, state) = memory.data_and_store_mut(&mut caller);
    let result = state
        .env
        .kv_set(abi::string(mem, kptr, klen)?, abi::bytes(mem, vptr, vlen)?);
    abi::store_kv_set(mem, retptr, result)?;
    Ok(())
}

fn kv_delete(mut caller: Caller<'_, GuestState>, ptr: u32, len: u32) -> HostResult {
    enter(&caller)?;
    let memory = memory(&caller)?;
    let (mem, state) = memory.data_and_store_mut(&mut caller);
    state.env.kv_delete(abi::string(mem, ptr, len)?);
    Ok(())
}

fn now_ms(caller: Caller<'_, GuestState>) -> HostResult<u64> {
    enter(&caller)?;
    Ok(caller.data().env.now_ms())
}

fn emit(
    mut caller: Caller<'_, GuestState>,
    nptr: u32,
    nlen: u32,
    pptr: u32,
    plen: u32,
) -> HostResult {
    enter(&caller)?;
    let memory = memory(&caller)?;
    let (mem, state) = memory.data_and_store_mut(&mut caller);
    let name = abi::string(mem, nptr, nlen)?;
    let payload = abi::bytes(mem, pptr, plen)?;
    check_event(state.events.len(), name.len(), payload.len(), &state.limits)?;
    state.events.push(Event {
        name: name.into(),
        payload: payload.to_vec(),
    });
    Ok(())
}
