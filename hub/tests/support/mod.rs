//! What the hub's integration tests share.

pub mod leases;
pub mod postgres;
pub mod records;
