//! Per-store resource limits (contract points 8 and 11). wasmtime asks the
//! store's [`ResourceLimiter`] before every memory or table growth; the
//! decision is `relay_core::limits::growth`, shared with wasmi. Growth past
//! the plugin's [`Limits`] is refused with a typed error, which wasmtime turns
//! into a trap ("trap on grow failure", identical to wasmi) and which
//! [`super::errors::classify`] recovers by downcasting, not by reading text.

use relay_core::limits::{growth, Growth, Limits, MEMORY_ABSOLUTE_MAX, TABLE_ABSOLUTE_MAX};
use wasmtime::ResourceLimiter;

/// Core instances, tables and memories that componentization itself adds to
/// every plugin (wit-component's shim and fixup modules plus their table).
/// They are the host's, not the guest's, so they do not count against
/// `Limits::max_instances`.
const ADAPTER_ENTITIES: usize = 3;

/// A guest crossed one of its limits. Raised as the error of a trap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum GuestLimit {
    #[error("linear memory would grow to {desired} bytes, the limit is {limit}")]
    Memory { desired: usize, limit: usize },
    #[error("table would grow to {desired} elements, the limit is {limit}")]
    Table { desired: usize, limit: usize },
}

/// The limiter stored in each plugin's `Store`.
#[derive(Debug, Clone)]
pub(super) struct GuestLimiter {
    max_memory_bytes: usize,
    max_table_elements: usize,
    max_entities: usize,
}

impl GuestLimiter {
    pub fn new(limits: &Limits) -> Self {
        GuestLimiter {
            max_memory_bytes: limits.max_memory_bytes,
            max_table_elements: limits.max_table_elements as usize,
            max_entities: (limits.max_instances as usize).saturating_add(ADAPTER_ENTITIES),
        }
    }
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let limit = self.max_memory_bytes;
        match growth(desired, limit, maximum, MEMORY_ABSOLUTE_MAX) {
            Growth::Allow => Ok(true),
            Growth::Refuse => Ok(false),
            Growth::Trap => Err(GuestLimit::Memory { desired, limit }.into()),
        }
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let limit = self.max_table_elements;
        match growth(desired, limit, maximum, TABLE_ABSOLUTE_MAX) {
            Growth::Allow => Ok(true),
            Growth::Refuse => Ok(false),
            Growth::Trap => Err(GuestLimit::Table { desired, limit }.into()),
        }
    }

    fn instances(&self) -> usize {
        self.max_entities
    }

    fn tables(&self) -> usize {
        self.max_entities
    }

    fn memories(&self) -> usize {
        self.max_entities
    }
}
