//! Maps whatever wasmtime reports for a failed call to the contract's typed
//! [`PluginError`] (points 7-12). Decisions are made on types — our own
//! [`GuestLimit`] raised by the limiter or a host import, then
//! [`wasmtime::Trap`] codes — never on message text. Anything else wasmtime
//! returns from an entered call comes from its canonical-ABI lifting and
//! lowering (bad pointer, invalid UTF-8, bad realloc result...) -> `Abi`.

use relay_core::engine::PluginError;
use wasmtime::Trap;

use super::limiter::GuestLimit;

/// Classifies the error of a call into the guest (instantiate, describe or
/// handle). `exhausted` is the metering's out-of-fuel function: a trap whose
/// innermost frame is that function is the fuel running out, not the guest's
/// own `unreachable` (see `relay_core::engine::module`).
pub(super) fn classify(err: &wasmtime::Error, exhausted: u32) -> PluginError {
    let in_exhausted = err
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .and_then(|bt| bt.frames().first())
        .is_some_and(|frame| frame.func_index() == exhausted);
    if in_exhausted && err.downcast_ref::<Trap>() == Some(&Trap::UnreachableCodeReached) {
        return PluginError::OutOfFuel;
    }
    if let Some(limit) = err.downcast_ref::<GuestLimit>() {
        return match *limit {
            GuestLimit::Memory { .. } => PluginError::MemoryLimit,
            GuestLimit::Table { .. } => PluginError::Trap(limit.to_string()),
        };
    }
    // Raised by a host import with the shared checks (`emit`).
    if let Some(e) = err.downcast_ref::<PluginError>() {
        return e.clone();
    }
    if let Some(trap) = err.downcast_ref::<Trap>() {
        return match *trap {
            Trap::OutOfFuel => PluginError::OutOfFuel,
            Trap::Interrupt => PluginError::Timeout,
            Trap::StackOverflow => PluginError::StackOverflow,
            Trap::StringOutOfBounds
            | Trap::ListOutOfBounds
            | Trap::InvalidDiscriminant
            | Trap::InvalidChar
            | Trap::UnalignedPointer => PluginError::Abi(trap.to_string()),
            _ => PluginError::Trap(trap.to_string()),
        };
    }
    if err.downcast_ref::<wasmtime::OutOfMemory>().is_some() {
        return PluginError::Trap("host could not allocate memory for the call".into());
    }
    // The root cause only: wasmtime attaches the wasm backtrace as context,
    // which is noise in a status message.
    PluginError::Abi(err.root_cause().to_string())
}
