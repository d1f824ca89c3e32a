//! Where each of the device loop's messages goes: the topics of
//! `relay_core::topics` (the same layout the Linux host and the apps use),
//! with the retain flag of each kind.

use alloc::string::String;
use alloc::vec::Vec;

use relay_core::machine::Outgoing;
pub use relay_core::topics::Topics;

/// One message ready for the wire.
pub(crate) struct Route {
    pub topic: String,
    pub payload: Vec<u8>,
    /// Health is retained, so a new subscriber sees the current state.
    pub retain: bool,
}

/// The topic, payload and retain flag of `message`; `None` for an event
/// whose name cannot be a topic level (the plugin API refuses those, so
/// this is defence only).
pub(crate) fn route(topics: &Topics, message: &Outgoing) -> Option<Route> {
    Some(match message {
        Outgoing::Status(status) => Route {
            topic: topics.status(),
            payload: status.to_msgpack(),
            retain: false,
        },
        Outgoing::Event { name, payload } => Route {
            topic: topics.event(name).ok()?,
            payload: payload.clone(),
            retain: false,
        },
        Outgoing::Health(health) => Route {
            topic: topics.health(),
            payload: health.to_msgpack(),
            retain: true,
        },
    })
}
