//! Resource limits of one wasmi plugin (contract points 1, 7, 8, 9): the
//! engine [`Config`] (fuel metering, call-depth and value-stack caps, parse
//! limits) and the store's [`ResourceLimiter`] (memory, tables, instances).
//!
//! wasmi's `Config` is per engine, so the plugin's `Limits` decide it and every
//! plugin gets its own engine (see `mod.rs` for why that is also what keeps a
//! long-running device from accumulating compiled code).

use wasmi::errors::{MemoryError, TableError};
use wasmi::{CompilationMode, Config, CustomFuelCosts, EnforcedLimits, ResourceLimiter};
use wasmi_core::LimiterError;

use crate::limits::{growth, Growth, Limits, MEMORY_ABSOLUTE_MAX, TABLE_ABSOLUTE_MAX};

/// wasmi's own default initial value-stack height (bytes); the cap must not
/// be below it or `Config` panics.
const MIN_VALUE_STACK_BYTES: usize = 1_000;

/// Rough lower bound of what one wasm call frame costs, used to turn the
/// byte budget `Limits::max_stack_bytes` into a call-depth cap: 512 KiB
/// allows 4096 nested calls, in the range wasmtime allows with 512 KiB of
/// native stack, so recursion depth behaves alike on both engines.
const BYTES_PER_FRAME: usize = 128;
const MIN_CALL_DEPTH: usize = 64;
const MAX_CALL_DEPTH: usize = 65_536;

/// The wasmi configuration for a plugin loaded under `limits`.
///
/// - Fuel metering is on, but only to cut calls into time slices (wasmi has
///   no epochs); the CPU budget is the module's own counter
///   (`engine::module`).
/// - Compilation is lazy: the load step has validated the bodies already
///   (or knows these exact bytes passed before), and wasmi still validates
///   each body when it first runs. Compiling costs no wasmi fuel: running
///   out of fuel while a function compiles cannot be resumed, so it would
///   fail a call at a slice boundary, at random. Compile work is bounded by
///   the module's size instead.
/// - Copying (bulk memory, `memory.grow`, tables) costs no wasmi fuel
///   either: the module's own counter charges it, and a growth that ran out
///   of wasmi fuel at the end of a slice would fail as if the memory cap
///   were hit.
/// - Custom sections are not kept: nothing reads them, and they can be
///   most of a module's bytes.
/// - wasmi's own parse limits are off: the load step's one acceptance rule
///   (`engine::module::check`) is at least as strict, and the same on both
///   engines.
pub(super) fn engine_config(limits: &Limits) -> Config {
    let mut config = Config::default();
    config
        .consume_fuel(true)
        .compilation_mode(CompilationMode::Lazy)
        .ignore_custom_sections(true)
        .fuel_cost(CustomFuelCosts {
            bytes_copied_per_fuel: u32::MAX,
            fuel_per_bytes_translated: 0,
            fuel_per_bytes_validated: 0,
        })
        .enforced_limits(EnforcedLimits::default())
        .set_max_recursion_depth(max_call_depth(limits))
        .set_max_stack_height(limits.max_stack_bytes.max(MIN_VALUE_STACK_BYTES));
    config
}

fn max_call_depth(limits: &Limits) -> usize {
    (limits.max_stack_bytes / BYTES_PER_FRAME).clamp(MIN_CALL_DEPTH, MAX_CALL_DEPTH)
}

/// Which resource a denied growth concerned; read after a
/// `GrowthOperationLimited` trap to tell `MemoryLimit` from a table trap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Exhausted {
    Memory,
    Table,
}

/// The store limiter: growth past a cap traps (both engines trap on grow
/// failure, so a Rust guest's allocator cannot hide the failure) and the
/// reason is remembered for the error mapping.
#[derive(Debug)]
pub(super) struct GuestLimiter {
    max_memory_bytes: usize,
    max_table_elements: usize,
    max_instances: usize,
    /// Set when a growth was denied during the current call.
    pub exhausted: Option<Exhausted>,
}

impl GuestLimiter {
    pub fn new(limits: &Limits) -> Self {
        GuestLimiter {
            max_memory_bytes: limits.max_memory_bytes,
            max_table_elements: usize::try_from(limits.max_table_elements).unwrap_or(usize::MAX),
            max_instances: usize::try_from(limits.max_instances).unwrap_or(usize::MAX),
            exhausted: None,
        }
    }

    fn deny(&mut self, what: Exhausted) -> LimiterError {
        self.exhausted = Some(what);
        LimiterError::ResourceLimiterDeniedAllocation
    }
}

/// wasmi's answer for [`growth`]'s decision.
fn decide(
    limiter: &mut GuestLimiter,
    what: Exhausted,
    growth: Growth,
) -> Result<bool, LimiterError> {
    match growth {
        Growth::Allow => Ok(true),
        Growth::Refuse => Ok(false),
        Growth::Trap => Err(limiter.deny(what)),
    }
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool, LimiterError> {
        let growth = growth(desired, self.max_memory_bytes, maximum, MEMORY_ABSOLUTE_MAX);
        decide(self, Exhausted::Memory, growth)
    }

    fn memory_grow_failed(&mut self, _error: &MemoryError) -> Result<(), LimiterError> {
        Err(self.deny(Exhausted::Memory))
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool, LimiterError> {
        let growth = growth(
            desired,
            self.max_table_elements,
            maximum,
            TABLE_ABSOLUTE_MAX,
        );
        decide(self, Exhausted::Table, growth)
    }

    fn table_grow_failed(&mut self, _error: &TableError) -> Result<(), LimiterError> {
        Err(self.deny(Exhausted::Table))
    }

    fn instances(&self) -> usize {
        self.max_instances
    }

    fn tables(&self) -> usize {
        self.max_instances
    }

    fn memories(&self) -> usize {
        self.max_instances
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_denies_past_caps_and_remembers_why() {
        let limits = Limits {
            max_memory_bytes: 2 * 65_536,
            max_table_elements: 10,
            ..Limits::default()
        };
        let mut l = GuestLimiter::new(&limits);
        assert!(matches!(l.memory_growing(0, 2 * 65_536, None), Ok(true)));
        assert_eq!(l.exhausted, None);
        assert!(l.memory_growing(0, 3 * 65_536, None).is_err());
        assert_eq!(l.exhausted, Some(Exhausted::Memory));
        assert!(l.table_growing(0, 11, None).is_err());
        assert_eq!(l.exhausted, Some(Exhausted::Table));
        // Past the module's own maximum, `memory.grow` returns -1 (no trap).
        l.exhausted = None;
        assert!(matches!(
            l.memory_growing(0, 65_536 * 2, Some(65_536)),
            Ok(false)
        ));
        assert!(matches!(l.table_growing(0, 5, Some(4)), Ok(false)));
        assert_eq!(l.exhausted, None);
    }

    #[test]
    fn stack_config_never_panics() {
        for bytes in [0, 1, 999, 1_000, 512 * 1024, usize::MAX] {
            let limits = Limits {
                max_stack_bytes: bytes,
                ..Limits::default()
            };
            let _ = engine_config(&limits);
            assert!((MIN_CALL_DEPTH..=MAX_CALL_DEPTH).contains(&max_call_depth(&limits)));
        }
    }
}
