//! The device's health message: retained on `<prefix>/<device>/health`, so
//! an operator (or a dashboard) subscribing at any time learns at once
//! whether the device takes new commands, and if not, why, since when and
//! what it still holds. Statuses say what became of one command; only this
//! says why commands sent now are not being acknowledged.
//!
//! The machine publishes it on every transition (and once after start, so a
//! retained `degraded` from before a restart does not outlive its cause).
//! Wire format in `docs/protocol.md`, "Health".

use alloc::string::String;
use alloc::vec::Vec;

use crate::msgpack::Writer;

/// Whether the device takes new commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    /// Everything works.
    Ok,
    /// New commands are not acknowledged (the broker keeps them); the
    /// commands already accepted still run and report.
    Degraded,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Ok => "ok",
            HealthState::Degraded => "degraded",
        }
    }
}

/// Why the device is degraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthReason {
    /// The journal cannot grow: the disk is full.
    StorageFull,
}

impl HealthReason {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthReason::StorageFull => "storage_full",
        }
    }
}

/// One health message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub state: HealthState,
    /// Set when degraded.
    pub reason: Option<HealthReason>,
    /// What it means for the operator, when degraded.
    pub message: Option<String>,
    /// Since when (unix ms, device clock) the device is in `state`.
    pub since: u64,
    /// Commands accepted and not final.
    pub pending: u64,
    /// Messages received and not acknowledged (their records are not
    /// durable yet; the broker keeps them too).
    pub unacked: u64,
    /// When this message was made (unix ms, device clock).
    pub at: u64,
}

impl Health {
    /// The msgpack map published (keys in this order; `reason` and
    /// `message` only when degraded).
    pub fn to_msgpack(&self) -> Vec<u8> {
        let optional = self.reason.is_some() as u32 + self.message.is_some() as u32;
        let mut w = Writer::with_capacity(128);
        w.map_len(5 + optional);
        w.str("state").str(self.state.as_str());
        if let Some(reason) = self.reason {
            w.str("reason").str(reason.as_str());
        }
        if let Some(message) = &self.message {
            w.str("message").str(message);
        }
        w.str("since").uint(self.since);
        w.str("pending").uint(self.pending);
        w.str("unacked").uint(self.unacked);
        w.str("at").uint(self.at);
        w.into_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_degraded_health_is_a_map_with_its_reason() {
        let health = Health {
            state: HealthState::Degraded,
            reason: Some(HealthReason::StorageFull),
            message: Some("full".into()),
            since: 1,
            pending: 2,
            unacked: 3,
            at: 4,
        };
        let bytes = health.to_msgpack();
        assert_eq!(bytes[0], 0x87, "a map of 7 entries");
        let mut r = crate::msgpack::Reader::new(&bytes);
        assert_eq!(r.read_map_len().unwrap(), 7);
        assert_eq!(r.read_str().unwrap(), "state");
        assert_eq!(r.read_str().unwrap(), "degraded");
        assert_eq!(r.read_str().unwrap(), "reason");
        assert_eq!(r.read_str().unwrap(), "storage_full");
    }
}
