//! The device loop's [`Link`]: what the machine decided to publish or ack in
//! one turn, queued here and carried out by the session afterwards (the
//! device loop is synchronous; the MQTT client is async), plus the topics
//! of `docs/protocol.md` section 2.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;

use relay_core::machine::Outgoing;
use relay_core::plugin::Role;
use relay_embedded::Link;
use rust_mqtt::types::PacketIdentifier;

/// What one turn of the device loop left to send.
#[derive(Default)]
pub struct Outbox {
    pub messages: VecDeque<Outgoing>,
    /// Deliveries to PUBACK, in the order the machine released them.
    pub acks: VecDeque<PacketIdentifier>,
}

impl Link for Outbox {
    type Token = Option<PacketIdentifier>;

    fn publish(&mut self, message: Outgoing) {
        self.messages.push_back(message);
    }

    fn ack(&mut self, token: Option<PacketIdentifier>) {
        let Some(token) = token else { return };
        self.acks.push_back(token);
    }
}

/// The device's topics under `<prefix>/<device>/`.
pub struct Topics {
    base: String,
}

impl Topics {
    pub fn new(prefix: &str, device: &str) -> Topics {
        Topics {
            base: format!("{prefix}/{device}"),
        }
    }

    /// What the device subscribes to.
    pub fn commands(&self) -> String {
        format!("{}/cmd/+", self.base)
    }

    pub fn presence(&self) -> String {
        format!("{}/presence", self.base)
    }

    /// Where `message` goes, its payload, and whether the broker retains it.
    pub fn outgoing(&self, message: &Outgoing) -> (String, alloc::vec::Vec<u8>, bool) {
        match message {
            Outgoing::Status(status) => {
                (format!("{}/status", self.base), status.to_msgpack(), false)
            }
            Outgoing::Event { name, payload } => (
                format!("{}/event/{name}", self.base),
                payload.clone(),
                false,
            ),
            Outgoing::Health(health) => {
                (format!("{}/health", self.base), health.to_msgpack(), true)
            }
        }
    }

    /// The role a delivery on `topic` carries (its last level), or the
    /// level itself, which the machine answers with `not_permitted`. `None`:
    /// not one of our command topics.
    pub fn role<'t>(&self, topic: &'t str) -> Option<Result<Role, &'t str>> {
        let level = topic
            .strip_prefix(self.base.as_str())?
            .strip_prefix("/cmd/")?;
        Some(Role::parse(level).ok_or(level))
    }
}
