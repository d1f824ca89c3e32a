//! A request's state as the hub tracks it: the device's own states
//! (`relay_core::status::State`) plus what only the hub can know (`queued`
//! at the hub, `sent` to the broker, and the hub's own final decisions
//! `cancelled` and `timed_out`). The mapping to ESP RainMaker's and AWS IoT
//! Jobs' states is in `docs/hub.md`.

use relay_core::status::State as DeviceState;

/// Where a request is, from the app's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HubState {
    /// Stored at the hub; not handed to the broker yet (device offline, or
    /// behind the in-flight window).
    Queued,
    /// Published to the device's role topic; no status from the device yet.
    Sent,
    Accepted,
    Running,
    Retrying,
    Succeeded,
    Failed,
    Rejected,
    /// The TTL passed before the device started it (decided by the device,
    /// or by the hub for a request the device never acknowledged).
    Expired,
    /// Cancelled by an app before it was ever sent.
    Cancelled,
    /// An RPC whose deadline passed without a final status.
    TimedOut,
}

impl HubState {
    pub const ALL: [HubState; 11] = [
        HubState::Queued,
        HubState::Sent,
        HubState::Accepted,
        HubState::Running,
        HubState::Retrying,
        HubState::Succeeded,
        HubState::Failed,
        HubState::Rejected,
        HubState::Expired,
        HubState::Cancelled,
        HubState::TimedOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HubState::Queued => "queued",
            HubState::Sent => "sent",
            HubState::Accepted => "accepted",
            HubState::Running => "running",
            HubState::Retrying => "retrying",
            HubState::Succeeded => "succeeded",
            HubState::Failed => "failed",
            HubState::Rejected => "rejected",
            HubState::Expired => "expired",
            HubState::Cancelled => "cancelled",
            HubState::TimedOut => "timed_out",
        }
    }

    pub fn parse(s: &str) -> Option<HubState> {
        HubState::ALL.into_iter().find(|state| state.as_str() == s)
    }

    /// No status changes it any more (except a device's late final status
    /// replacing the hub's own `expired`; see `store`).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            HubState::Succeeded
                | HubState::Failed
                | HubState::Rejected
                | HubState::Expired
                | HubState::Cancelled
                | HubState::TimedOut
        )
    }

    pub fn from_device(state: DeviceState) -> HubState {
        match state {
            DeviceState::Accepted => HubState::Accepted,
            DeviceState::Running => HubState::Running,
            DeviceState::Retrying => HubState::Retrying,
            DeviceState::Succeeded => HubState::Succeeded,
            DeviceState::Failed => HubState::Failed,
            DeviceState::Rejected => HubState::Rejected,
            DeviceState::Expired => HubState::Expired,
        }
    }
}

impl std::fmt::Display for HubState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_finals_are_the_end_states() {
        for state in HubState::ALL {
            assert_eq!(HubState::parse(state.as_str()), Some(state));
        }
        let finals: Vec<_> = HubState::ALL.into_iter().filter(|s| s.is_final()).collect();
        assert_eq!(finals.len(), 6);
        for device in DeviceState::ALL {
            assert_eq!(
                HubState::from_device(device).as_str(),
                device.as_str(),
                "the device's names are kept"
            );
        }
    }
}
