//! The MQTT topic layout of one device, in one place: the device (Linux
//! host and microcontroller) and the app side name topics through here.
//!
//! ```text
//! <prefix>/<device>/cmd/<role>     app -> device, role = admin | primary | secondary
//! <prefix>/<device>/status         device -> app, one message per status transition
//! <prefix>/<device>/event/<name>   device -> app, events emitted by handlers
//! <prefix>/<device>/health         device -> app, retained: takes commands or not
//! <prefix>/<device>/presence       device -> app, retained: online or offline (also the last will)
//! ```
//!
//! [`Topics`] names one device's topics; an app watching a fleet subscribes
//! to [`status_filter_all`] / [`presence_filter_all`] and reads the device id
//! back with [`parse_device_topic`].
//!
//! The role comes from the topic, never from the payload: the broker's ACL
//! decides who may publish where. The device subscribes to `cmd/+`, so a
//! publish on `cmd/<anything else>` reaches it too; [`Topics::parse_command`]
//! reports that level as `Err(level)` and the runtime answers it with a
//! `rejected` status (and acks it, so it is not redelivered forever).

use alloc::format;
use alloc::string::{String, ToString};

use crate::name::validate_name;
use crate::plugin::Role;

/// Default topic prefix.
pub const DEFAULT_PREFIX: &str = "relay";

/// Longest accepted prefix, in bytes.
pub const MAX_PREFIX_LEN: usize = 128;

/// A prefix, device id or event name that cannot be a topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("invalid device id {device:?}: {reason}")]
    Device { device: String, reason: String },
    #[error("invalid topic prefix {prefix:?}: {reason}")]
    Prefix {
        prefix: String,
        reason: &'static str,
    },
    #[error("invalid event name {name:?}: {reason}")]
    EventName { name: String, reason: String },
}

/// Checks a topic prefix: one or more non-empty levels separated by `/`, no
/// MQTT wildcards, no NUL, not a `$`-reserved topic.
pub fn validate_prefix(prefix: &str) -> Result<(), TopicError> {
    let fail = |reason| {
        Err(TopicError::Prefix {
            prefix: prefix.into(),
            reason,
        })
    };
    if prefix.is_empty() {
        return fail("it is empty");
    }
    if prefix.len() > MAX_PREFIX_LEN {
        return fail("it is longer than 128 bytes");
    }
    if prefix.starts_with('$') {
        return fail("topics starting with '$' are reserved by the broker");
    }
    if prefix.contains(['+', '#', '\0']) {
        return fail("it contains an MQTT wildcard ('+', '#') or NUL");
    }
    if prefix.split('/').any(str::is_empty) {
        return fail("it has an empty level (leading, trailing or double '/')");
    }
    Ok(())
}

/// Checks a device id: the seed naming rule (`[A-Za-z0-9_-]`, 1..=64), which
/// also keeps it a single topic level.
pub fn validate_device(device: &str) -> Result<(), TopicError> {
    validate_name(device).map_err(|e| TopicError::Device {
        device: device.into(),
        reason: e.to_string(),
    })
}

/// What a topic a device received means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandTopic {
    /// `<prefix>/<device>/cmd/<level>`: `Ok(role)` or `Err(level)` for an unknown role.
    Command(Result<Role, String>),
    /// Not under this device's `cmd/` at all.
    Foreign,
}

/// Topic names for one device under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
    device: String,
    /// `<prefix>/<device>/`, precomputed for parsing.
    base: String,
}

impl Topics {
    pub fn new(prefix: &str, device: &str) -> Result<Self, TopicError> {
        validate_prefix(prefix)?;
        validate_device(device)?;
        Ok(Self {
            prefix: prefix.into(),
            device: device.into(),
            base: format!("{prefix}/{device}/"),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn device(&self) -> &str {
        &self.device
    }

    /// The device's subscription: `<prefix>/<device>/cmd/+`.
    pub fn command_filter(&self) -> String {
        format!("{}cmd/+", self.base)
    }

    /// Where an app sends a command for `role`.
    pub fn command(&self, role: Role) -> String {
        format!("{}cmd/{}", self.base, role.as_str())
    }

    /// Where the device publishes status messages.
    pub fn status(&self) -> String {
        format!("{}status", self.base)
    }

    /// Where the device publishes its retained health message (ok, or
    /// degraded and why: `docs/protocol.md`, "Health").
    pub fn health(&self) -> String {
        format!("{}health", self.base)
    }

    /// Where the device publishes its retained presence and the broker its
    /// last will (online or offline: `docs/protocol.md`, "Presence").
    pub fn presence(&self) -> String {
        format!("{}presence", self.base)
    }

    /// Where the device publishes the event `name` (seed naming rule).
    pub fn event(&self, name: &str) -> Result<String, TopicError> {
        validate_name(name).map_err(|e| TopicError::EventName {
            name: name.into(),
            reason: e.to_string(),
        })?;
        Ok(format!("{}event/{name}", self.base))
    }

    /// An app's subscription to every event of the device.
    pub fn event_filter(&self) -> String {
        format!("{}event/+", self.base)
    }

    /// Classifies a topic the device received.
    pub fn parse_command(&self, topic: &str) -> CommandTopic {
        let Some(level) = topic
            .strip_prefix(self.base.as_str())
            .and_then(|rest| rest.strip_prefix("cmd/"))
        else {
            return CommandTopic::Foreign;
        };
        if level.contains('/') {
            return CommandTopic::Foreign;
        }
        CommandTopic::Command(Role::parse(level).ok_or_else(|| level.to_string()))
    }

    /// For an app: if `topic` is this device's `event/<name>`, the name.
    pub fn parse_event<'a>(&self, topic: &'a str) -> Option<&'a str> {
        topic
            .strip_prefix(self.base.as_str())?
            .strip_prefix("event/")
            .filter(|n| !n.contains('/'))
    }
}

/// Which per-device topic [`parse_device_topic`] recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceTopicKind {
    /// `<prefix>/<device>/status`
    Status,
    /// `<prefix>/<device>/presence`
    Presence,
    /// `<prefix>/<device>/health`
    Health,
}

impl DeviceTopicKind {
    /// The topic's last level.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceTopicKind::Status => "status",
            DeviceTopicKind::Presence => "presence",
            DeviceTopicKind::Health => "health",
        }
    }
}

/// Every device's status messages: `<prefix>/+/status`.
pub fn status_filter_all(prefix: &str) -> Result<String, TopicError> {
    validate_prefix(prefix)?;
    Ok(format!("{prefix}/+/status"))
}

/// Every device's presence (and last will): `<prefix>/+/presence`.
pub fn presence_filter_all(prefix: &str) -> Result<String, TopicError> {
    validate_prefix(prefix)?;
    Ok(format!("{prefix}/+/presence"))
}

/// For an app subscribed to a fleet filter: the device id and kind of a
/// `<prefix>/<device>/status`, `.../presence` or `.../health` topic. `None`
/// for anything else, including a device level that breaks the device rule.
pub fn parse_device_topic<'a>(prefix: &str, topic: &'a str) -> Option<(&'a str, DeviceTopicKind)> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    let (device, last) = rest.split_once('/')?;
    let kind = [
        DeviceTopicKind::Status,
        DeviceTopicKind::Presence,
        DeviceTopicKind::Health,
    ]
    .into_iter()
    .find(|k| k.as_str() == last)?;
    validate_device(device).ok()?;
    Some((device, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics() -> Topics {
        Topics::new("relay", "dev-1").unwrap()
    }

    #[test]
    fn builds_the_documented_topics() {
        let t = topics();
        assert_eq!(t.command_filter(), "relay/dev-1/cmd/+");
        assert_eq!(t.command(Role::Admin), "relay/dev-1/cmd/admin");
        assert_eq!(t.status(), "relay/dev-1/status");
        assert_eq!(t.health(), "relay/dev-1/health");
        assert_eq!(t.presence(), "relay/dev-1/presence");
        assert_eq!(t.event("door_open").unwrap(), "relay/dev-1/event/door_open");
        assert_eq!(t.event_filter(), "relay/dev-1/event/+");
        let nested = Topics::new("acme/site-3", "d").unwrap();
        assert_eq!(nested.status(), "acme/site-3/d/status");
    }

    #[test]
    fn parses_every_role() {
        let t = topics();
        for role in Role::ALL {
            assert_eq!(
                t.parse_command(&t.command(role)),
                CommandTopic::Command(Ok(role))
            );
        }
    }

    #[test]
    fn unknown_role_is_reported_not_dropped() {
        let t = topics();
        assert_eq!(
            t.parse_command("relay/dev-1/cmd/root"),
            CommandTopic::Command(Err("root".into()))
        );
        assert_eq!(
            t.parse_command("relay/dev-1/cmd/Admin"),
            CommandTopic::Command(Err("Admin".into()))
        );
        assert_eq!(
            t.parse_command("relay/dev-1/cmd/"),
            CommandTopic::Command(Err(String::new()))
        );
    }

    #[test]
    fn other_topics_are_foreign() {
        let t = topics();
        for topic in [
            "relay/dev-1/status",
            "relay/dev-2/cmd/admin",
            "relay/dev-1/cmd/admin/extra",
            "other/dev-1/cmd/admin",
            "relay/dev-1cmd/admin",
            "",
        ] {
            assert_eq!(t.parse_command(topic), CommandTopic::Foreign, "{topic}");
        }
    }

    #[test]
    fn parses_events_for_apps() {
        let t = topics();
        assert_eq!(t.parse_event("relay/dev-1/event/boot"), Some("boot"));
        assert_eq!(t.parse_event("relay/dev-1/status"), None);
        assert_eq!(t.parse_event("relay/dev-1/event/a/b"), None);
    }

    #[test]
    fn refuses_names_that_would_break_topics() {
        for prefix in [
            "", "/relay", "relay/", "a//b", "re+lay", "#", "$SYS", "a\0b",
        ] {
            assert!(Topics::new(prefix, "d").is_err(), "{prefix:?}");
        }
        for device in ["", "a/b", "+", "#", "dév", &"x".repeat(65)] {
            assert!(Topics::new("relay", device).is_err(), "{device:?}");
        }
        assert!(topics().event("a/b").is_err());
        assert!(topics().event("").is_err());
    }

    #[test]
    fn fleet_filters_cover_every_device() {
        assert_eq!(status_filter_all("relay").unwrap(), "relay/+/status");
        assert_eq!(
            presence_filter_all("acme/site-3").unwrap(),
            "acme/site-3/+/presence"
        );
        assert!(status_filter_all("a/#").is_err());
        assert!(presence_filter_all("").is_err());
    }

    #[test]
    fn parses_device_topics_for_fleet_watchers() {
        let t = topics();
        assert_eq!(
            parse_device_topic("relay", &t.status()),
            Some(("dev-1", DeviceTopicKind::Status))
        );
        assert_eq!(
            parse_device_topic("relay", &t.presence()),
            Some(("dev-1", DeviceTopicKind::Presence))
        );
        assert_eq!(
            parse_device_topic("relay", &t.health()),
            Some(("dev-1", DeviceTopicKind::Health))
        );
        let nested = Topics::new("acme/site-3", "d_9").unwrap();
        assert_eq!(
            parse_device_topic("acme/site-3", &nested.presence()),
            Some(("d_9", DeviceTopicKind::Presence))
        );
        for topic in [
            "relay/dev-1/cmd/admin",
            "relay/dev-1/event/boot",
            "relay/dev-1/status/extra",
            "relay/dev-1/statuses",
            "relay//status",
            "relay/a.b/status",
            "relay/status",
            "relayx/dev-1/status",
            "other/dev-1/status",
            "acme/site-3/d/status",
            "",
        ] {
            assert_eq!(parse_device_topic("relay", topic), None, "{topic}");
        }
        // The prefix must match whole levels.
        assert_eq!(parse_device_topic("acme", "acme/site-3/d/status"), None);
    }
}
