//! Maps everything wasmi can report into the typed [`PluginError`] of the
//! engine contract, by wasmi's [`TrapCode`] and by our own host-error type,
//! never by matching message strings.

use alloc::string::ToString;
use core::fmt;

use wasmi::errors::HostError;
use wasmi::TrapCode;

use super::limits::Exhausted;
use crate::engine::PluginError;

/// Raised by a host function (an ABI violation, a too-large event, ...).
/// wasmi carries it through the guest's stack unchanged and we downcast it
/// back, so the guest's failure keeps its exact variant.
#[derive(Debug)]
pub(super) struct HostTrap(pub PluginError);

impl fmt::Display for HostTrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl HostError for HostTrap {}

impl From<PluginError> for wasmi::Error {
    fn from(e: PluginError) -> Self {
        wasmi::Error::host(HostTrap(e))
    }
}

/// The contract's error for a failed guest call (`handle`, `cabi_realloc`,
/// a post-return, the start function). `exhausted` is what the store's
/// limiter denied during the call, if anything; `fuel` is the metering's
/// counter after the call (negative: the `unreachable` that ended the call
/// was the meter's, see `engine::module`).
pub(super) fn classify(
    err: &wasmi::Error,
    exhausted: Option<Exhausted>,
    fuel: Option<i64>,
) -> PluginError {
    if let Some(HostTrap(e)) = err.downcast_ref::<HostTrap>() {
        return e.clone();
    }
    if fuel.is_some_and(|f| f < 0) {
        return PluginError::OutOfFuel;
    }
    match err.as_trap_code() {
        Some(TrapCode::OutOfFuel) => PluginError::OutOfFuel,
        Some(TrapCode::StackOverflow) => PluginError::StackOverflow,
        Some(TrapCode::GrowthOperationLimited) => match exhausted {
            Some(Exhausted::Table) => PluginError::Trap("table grew past its limit".into()),
            Some(Exhausted::Memory) | None => PluginError::MemoryLimit,
        },
        // The host could not allocate what an allowed growth needed.
        Some(TrapCode::OutOfSystemMemory) => PluginError::MemoryLimit,
        Some(code) => PluginError::Trap(code.trap_message().into()),
        None => PluginError::Trap(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_trap_codes_and_host_errors() {
        let c = |e: wasmi::Error, x| classify(&e, x, None);
        assert_eq!(c(TrapCode::OutOfFuel.into(), None), PluginError::OutOfFuel);
        assert_eq!(
            c(TrapCode::StackOverflow.into(), None),
            PluginError::StackOverflow
        );
        assert_eq!(
            c(
                TrapCode::GrowthOperationLimited.into(),
                Some(Exhausted::Memory)
            ),
            PluginError::MemoryLimit
        );
        assert!(matches!(
            c(
                TrapCode::GrowthOperationLimited.into(),
                Some(Exhausted::Table)
            ),
            PluginError::Trap(_)
        ));
        assert_eq!(
            c(TrapCode::UnreachableCodeReached.into(), None),
            PluginError::Trap("wasm `unreachable` instruction executed".into())
        );
        let e: wasmi::Error = PluginError::ReplyTooLarge { size: 2, limit: 1 }.into();
        assert_eq!(c(e, None), PluginError::ReplyTooLarge { size: 2, limit: 1 });
        assert!(matches!(c(wasmi::Error::new("boom"), None), PluginError::Trap(m) if m == "boom"));
        let unreachable = || wasmi::Error::from(TrapCode::UnreachableCodeReached);
        assert_eq!(
            classify(&unreachable(), None, Some(-3)),
            PluginError::OutOfFuel
        );
        assert!(matches!(
            classify(&unreachable(), None, Some(0)),
            PluginError::Trap(_)
        ));
    }
}
