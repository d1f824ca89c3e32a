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
