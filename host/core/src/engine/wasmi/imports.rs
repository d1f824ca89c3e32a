//! The world's `host` interface served to a wasmi guest: the six imports of
//! `relay:plugin/host@0.1.0` with their canonical-ABI core signatures, the
//! link check (contract point 3) and the host functions themselves.
//!
//! Arguments are read in place from guest memory (bounds-checked, UTF-8
//! validated) and handed to [`HostEnv`] without copying; only what the host
//! keeps (an event) or what goes back to the guest (a kv value, allocated with
//! the guest's `cabi_realloc`) is copied. A violation ends the call with the
//! contract's error through [`HostTrap`](super::trap::HostTrap).
//!
//! Host work on guest bytes costs fuel ([`charge`]), as the same work in
//! guest code would: wasmi has no wall-clock limit, so without it a guest
//! could make the host validate 16 MiB of UTF-8 per `log` call, millions of
//! times, for the fuel of the calls alone.

use alloc::format;

use wasmi::errors::LinkerError;
use wasmi::{Caller, Extern, ExternType, Linker, Memory, Module, TrapCode, ValType};

use super::abi;
use super::state::{without_imports, GuestState, Realloc};
use crate::engine::PluginError;
use crate::plugin::Event;

pub(super) const HOST_MODULE: &str = "relay:plugin/host@0.1.0";

use ValType::{I32, I64};

/// Name, core parameters and core results of every import, as wit-bindgen
/// lowers them for wasm32 (results that do not fit one core value go through
/// a trailing return-area pointer).
pub(super) const IMPORTS: [(&str, &[ValType], &[ValType]); 6] = [
    ("log", &[I32, I32, I32], &[]),
    ("kv-get", &[I32, I32, I32], &[]),
    ("kv-set", &[I32, I32, I32, I32, I32], &[]),
    ("kv-delete", &[I32, I32], &[]),
    ("now-ms", &[], &[I64]),
    ("emit", &[I32, I32, I32, I32], &[]),
];

/// Every import must be one of [`IMPORTS`] with exactly its signature.
pub(super) fn check_imports(module: &Module) -> Result<(), PluginError> {
    for import in module.imports() {
        let (m, name) = (import.module(), import.name());
        let expected = IMPORTS
            .iter()
            .find(|(n, ..)| m == HOST_MODULE && *n == name);
        match (expected, import.ty()) {
            (Some((_, params, results)), ExternType::Func(ty))
                if ty.params() == *params && ty.results() == *results => {}
            (Some(_), ty) => {
                return Err(PluginError::Link(format!(
                    "import {m}.{name} has the wrong type {ty:?}"
                )));
            }
            (None, _) => {
                return Err(PluginError::Link(format!(
                    "unexpected import {m}.{name}: only the functions of {HOST_MODULE} are provided"
                )));
            }
        }
    }
    Ok(())
}

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
    let ptr = without_imports(&mut ctx, |ctx| realloc.call(ctx, (0, 0, align, len32)))?;
    if ptr & (align.max(1) - 1) != 0 {
        return Err(abi::abi(format!(
            "cabi_realloc returned {ptr:#x}, not {align}-byte aligned"
        ))
        .into());
    }
    abi::range(memory.data(&ctx), ptr, len)?;
    Ok(ptr)
}

/// Bytes of host work that cost one unit of fuel (about what a guest's
/// own copy loop pays per 8 bytes).
const BYTES_PER_FUEL: usize = 8;

/// Bounds-checks the guest's `(ptr, len)` arguments, then takes fuel for
/// the bytes the host is about to read (out of bounds stays `Abi`, whatever
/// the claimed length).
fn charge(caller: &mut Caller<'_, GuestState>, memory: Memory, args: &[(u32, u32)]) -> HostResult {
    let mut bytes = 0usize;
    for &(ptr, len) in args {
        bytes = bytes.saturating_add(abi::bytes(memory.data(&*caller), ptr, len)?.len());
    }
    charge_bytes(caller, bytes)
}

fn charge_bytes(caller: &mut Caller<'_, GuestState>, bytes: usize) -> HostResult {
    let cost = (bytes / BYTES_PER_FUEL) as u64;
    if cost == 0 {
        return Ok(());
    }
    let fuel = caller.get_fuel()?;
    match fuel.checked_sub(cost) {
        Some(left) => caller.set_fuel(left),
        None => {
            caller.set_fuel(0)?;
            Err(TrapCode::OutOfFuel.into())
        }
    }
}

fn log(mut caller: Caller<'_, GuestState>, level: u32, ptr: u32, len: u32) -> HostResult {
    enter(&caller)?;
    let level = abi::log_level(level)?;
    let memory = memory(&caller)?;
    charge(&mut caller, memory, &[(ptr, len)])?;
    let (mem, state) = memory.data_and_store_mut(&mut caller);
    state.env.log(level, abi::string(mem, ptr, len)?);
    Ok(())
}

fn kv_get(mut caller: Caller<'_, GuestState>, ptr: u32, len: u32, retptr: u32) -> HostResult {
    enter(&caller)?;
    let memory = memory(&caller)?;
    charge(&mut caller, memory, &[(ptr, len)])?;
    let value = {
        let (mem, state) = memory.data_and_store_mut(&mut caller);
        state.env.kv_get(abi::string(mem, ptr, len)?)
    };
    let list = match value {
        None => None,
        Some(value) => {
            charge_bytes(&mut caller, value.len())?;
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
    charge(&mut caller, memory, &[(kptr, klen), (vptr, vlen)])?;
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
    charge(&mut caller, memory, &[(ptr, len)])?;
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
    charge(&mut caller, memory, &[(nptr, nlen), (pptr, plen)])?;
    let (mem, state) = memory.data_and_store_mut(&mut caller);
    let name = abi::string(mem, nptr, nlen)?;
    let payload = abi::bytes(mem, pptr, plen)?;
    let bounds = state.bounds;
    if payload.len() > bounds.max_reply_bytes {
        return Err(PluginError::ReplyTooLarge {
            size: payload.len(),
            limit: bounds.max_reply_bytes,
        }
        .into());
    }
    if state.events.len() >= bounds.max_events {
        let size = state.events.len() + 1;
        return Err(PluginError::ReplyTooLarge {
            size,
            limit: bounds.max_events,
        }
        .into());
    }
    state.events.push(Event {
        name: name.into(),
        payload: payload.to_vec(),
    });
    Ok(())
}
