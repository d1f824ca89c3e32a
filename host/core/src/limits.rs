//! Resource limits applied to every plugin call, on both engines. Defaults are
//! safe for a microcontroller-class device; a plugin's manifest or the host
//! config may raise them.

/// Per-plugin limits. Every field is enforced by both engines.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Largest accepted module, in bytes (checked before parsing).
    pub max_module_bytes: usize,
    /// Linear memory cap, in bytes (a `memory.grow` past it fails / traps).
    pub max_memory_bytes: usize,
    /// Maximum table elements.
    pub max_table_elements: u32,
    /// Maximum instances / memories / tables per store.
    pub max_instances: u32,
    /// CPU budget of one call, in fuel units (roughly one per wasm instruction).
    pub fuel_per_call: u64,
    /// Wall-clock budget of one call in milliseconds (wasmtime epochs); a
    /// command's own `budget-ms` lowers it.
    pub time_budget_ms: u32,
    /// Largest reply, event payload, or other byte list a guest may hand back.
    pub max_reply_bytes: usize,
    /// Per-entry kv limits and the total quota.
    pub max_kv_key_bytes: usize,
    pub max_kv_value_bytes: usize,
    pub max_kv_total_bytes: usize,
    /// Events one call may emit.
    pub max_events_per_call: usize,
    /// Longest log line kept (longer ones are truncated).
    pub max_log_bytes: usize,
    /// Log lines one call may write; later ones are dropped (after one line
    /// saying so), so a logging loop cannot flood the device's log.
    pub max_log_lines_per_call: usize,
    /// Log bytes one call may write in total (after truncation per line).
    pub max_log_bytes_per_call: usize,
    /// Maximum wasm call-stack depth (wasmi) / stack bytes (wasmtime).
    pub max_stack_bytes: usize,
    /// Parse-time limits: functions, globals, data segments, etc.
    pub max_functions: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_module_bytes: 4 * 1024 * 1024,
            max_memory_bytes: 16 * 1024 * 1024,
            max_table_elements: 10_000,
            max_instances: 4,
            fuel_per_call: 100_000_000,
            time_budget_ms: 5_000,
            max_reply_bytes: 256 * 1024,
            max_kv_key_bytes: 128,
            max_kv_value_bytes: 16 * 1024,
            max_kv_total_bytes: 256 * 1024,
            max_events_per_call: 16,
            max_log_bytes: 1024,
            max_log_lines_per_call: 64,
            max_log_bytes_per_call: 16 * 1024,
            max_stack_bytes: 512 * 1024,
            max_functions: 10_000,
        }
    }
}

/// What a store limiter answers when a guest's memory or table would grow
/// to `desired` (bytes or elements). Both engines' limiters ask this one
/// function, because wasmtime and wasmi consult their limiter at different
/// points of a `grow` (wasmi after checking the declared maximum, wasmtime
/// before), so the order must be fixed here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Growth {
    /// Grow.
    Allow,
    /// `memory.grow` / `table.grow` returns -1, as plain wasm says for a
    /// growth past the declared maximum or the index type's range.
    Refuse,
    /// The plugin's cap is crossed: the call traps (`MemoryLimit` for
    /// memory), so a guest allocator cannot hide the failure.
    Trap,
}

/// Elements a 32-bit table can hold at most (its size must fit the index).
pub const TABLE_ABSOLUTE_MAX: usize = u32::MAX as usize;

/// Bytes a 32-bit memory can hold at most (65,536 pages of 64 KiB).
pub const MEMORY_ABSOLUTE_MAX: usize = match 1usize.checked_shl(32) {
    Some(bytes) => bytes,
    None => usize::MAX,
};

/// The one growth rule: the module's own maximum and the absolute maximum
/// first (-1), then the plugin's `cap` (trap).
pub fn growth(desired: usize, cap: usize, maximum: Option<usize>, absolute: usize) -> Growth {
    if desired > absolute || maximum.is_some_and(|max| desired > max) {
        Growth::Refuse
    } else if desired > cap {
        Growth::Trap
    } else {
        Growth::Allow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_checks_the_declared_maximum_before_the_cap() {
        assert_eq!(growth(10, 20, None, 100), Growth::Allow);
        assert_eq!(growth(30, 20, None, 100), Growth::Trap);
        assert_eq!(growth(30, 20, Some(25), 100), Growth::Refuse);
        assert_eq!(growth(15, 20, Some(12), 100), Growth::Refuse);
        assert_eq!(growth(101, 200, None, 100), Growth::Refuse);
    }
}
