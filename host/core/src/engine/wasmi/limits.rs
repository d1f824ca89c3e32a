//! Resource limits of one wasmi plugin (contract points 1, 7, 8, 9): the
//! engine [`Config`] (fuel metering, call-depth and value-stack caps, parse
//! limits) and the store's [`ResourceLimiter`] (memory, tables, instances).
//!
//! wasmi's `Config` is per engine, so the plugin's `Limits` decide it and every
//! plugin gets its own engine (see `mod.rs` for why that is also what keeps a
//! long-running device from accumulating compiled code).

use wasmi::errors::{MemoryError, TableError};
use wasmi::{CompilationMode, Config, EnforcedLimits, ResourceLimiter};
use wasmi_core::LimiterError;

use crate::limits::Limits;

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
/// - Fuel metering is on: it is wasmi's only CPU limit (no epochs, no
///   threads on a microcontroller).
/// - Validation is eager and translation lazy: invalid bytes fail at load
///   (contract point 2) while a cold load only translates what runs. With
///   `validated_before` (the exact bytes passed full validation on an
///   earlier load, see `ValidatedModules`) both are lazy.
/// - [`EnforcedLimits::strict`] bounds globals/tables/segments/params and
///   rejects modules whose bodies are suspiciously small on average (the
///   known attack on lazy translation); its function cap equals the default
///   `Limits::max_functions`, a lower one is checked by
///   [`check_function_count`].
pub(super) fn engine_config(limits: &Limits, validated_before: bool) -> Config {
    let mode = if validated_before {
        CompilationMode::Lazy
    } else {
        CompilationMode::LazyTranslation
    };
    let mut config = Config::default();
    config
        .consume_fuel(true)
        .compilation_mode(mode)
        .enforced_limits(EnforcedLimits::strict())
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

fn within(desired: usize, cap: usize, maximum: Option<usize>) -> bool {
    desired <= cap && maximum.is_none_or(|max| desired <= max)
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool, LimiterError> {
        if within(desired, self.max_memory_bytes, maximum) {
            Ok(true)
        } else {
            Err(self.deny(Exhausted::Memory))
        }
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
        if within(desired, self.max_table_elements, maximum) {
            Ok(true)
        } else {
            Err(self.deny(Exhausted::Table))
        }
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

/// Checks `Limits::max_functions` (imported plus defined functions, as the
/// wasmtime engine counts them) when it is below the cap of
/// [`EnforcedLimits::strict`], whose fields cannot be set one by one. Reads
/// only section headers; anything malformed was already reported by the
/// validator, so this never rejects a module on its own parsing.
pub(super) fn check_function_count(
    wasm: &[u8],
    imported: usize,
    max_functions: u32,
) -> Result<(), usize> {
    let defined = declared_function_count(wasm).map_or(0, |n| n as usize);
    let total = defined.saturating_add(imported);
    if total > max_functions as usize {
        Err(total)
    } else {
        Ok(())
    }
}

/// The count of the function section (defined functions), if the module has
/// one and its headers parse.
fn declared_function_count(wasm: &[u8]) -> Option<u32> {
    const FUNCTION_SECTION: u8 = 3;
    let mut rest = wasm.get(8..)?; // magic + version
    while let Some((&id, after_id)) = rest.split_first() {
        let (size, body) = read_leb_u32(after_id)?;
        let size = usize::try_from(size).ok()?;
        let section = body.get(..size)?;
        if id == FUNCTION_SECTION {
            return read_leb_u32(section).map(|(count, _)| count);
        }
        rest = body.get(size..)?;
    }
    None
}

fn read_leb_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let mut value: u32 = 0;
    for (i, &byte) in bytes.iter().enumerate().take(5) {
        value |= u32::from(byte & 0x7f).checked_shl(7 * i as u32)?;
        if byte & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb_and_function_count() {
        assert_eq!(read_leb_u32(&[0xe5, 0x8e, 0x26]), Some((624_485, &[][..])));
        assert_eq!(read_leb_u32(&[0x80, 0x80]), None);
        let wasm = wat::parse_str("(module (func) (func) (func))").unwrap();
        assert_eq!(declared_function_count(&wasm), Some(3));
        assert_eq!(check_function_count(&wasm, 0, 3), Ok(()));
        assert_eq!(check_function_count(&wasm, 0, 2), Err(3));
        assert_eq!(check_function_count(&wasm, 2, 4), Err(5));
        assert_eq!(declared_function_count(b"\0asm\x01\0\0\0\x03\xff"), None);
        assert_eq!(declared_function_count(b"junk"), None);
    }

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
        // The module's own maximum also counts (wasmtime's limiter does the same).
        assert!(l.memory_growing(0, 65_536 * 2, Some(65_536)).is_err());
    }

    #[test]
    fn stack_config_never_panics() {
        for bytes in [0, 1, 999, 1_000, 512 * 1024, usize::MAX] {
            let limits = Limits {
                max_stack_bytes: bytes,
                ..Limits::default()
            };
            let _ = engine_config(&limits, false);
            assert!((MIN_CALL_DEPTH..=MAX_CALL_DEPTH).contains(&max_call_depth(&limits)));
        }
    }
}
