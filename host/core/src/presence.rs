//! The device's presence message: retained on `<prefix>/<device>/presence`,
//! so an app (or the hub) learns at once, and at any time, whether the
//! device is connected to the broker, and notices when it reconnected.
//!
//! Why a message of its own: statuses say what became of one command and
//! health says whether the device takes new commands, but neither says
//! whether it is *there*. MQTT has the tool for that, the last will: the
//! device registers an `online: false` presence with its CONNECT, and the
//! broker publishes it (retained) when the connection dies without a clean
//! DISCONNECT (power loss, kill -9, network gone past the keepalive). After
//! every CONNACK the device publishes `online: true` itself, and before a
//! clean DISCONNECT (which makes the broker discard the will) `online:
//! false`.
//!
//! Why `boot` and `session`: a reconnect can hide behind an unchanged
//! `online: true` (a short outage may never let the will fire, and the
//! broker it reconnected to may have lost its queue), so an app that must
//! act on a reconnect (send again what is unconfirmed) compares the pair:
//! `boot` is fixed for one run of the host process (unix ms of the device
//! clock when it started, made strictly increasing within a process),
//! `session` counts the MQTT connections within that run (1 for the first).
//! A different `boot` or a larger `session` is a new connection. The will
//! is fixed at start, before any connection, so it carries `session: 0` and
//! `at: 0`.
//!
//! The wire form is a msgpack map with the keys in the order `online, boot,
//! session, at`; decoding ignores unknown keys (an older app reads a newer
//! device) and accepts `nil` as an absent key. See `docs/protocol.md`,
//! "Presence".

use alloc::vec::Vec;

use crate::msgpack::{MsgpackError, Reader, Writer, DEFAULT_MAX_DEPTH};

/// One presence message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Presence {
    /// Connected to the broker (`false`: the will, or a clean shutdown).
    pub online: bool,
    /// Identifies one run of the host process: unix ms (device clock) when
    /// it started, strictly increasing within a process.
    pub boot: u64,
    /// MQTT connections so far within this `boot`, 1-based; 0 in the will
    /// (registered before the first connection).
    pub session: u32,
    /// When it was published (unix ms, device clock); 0 in the will.
    pub at: u64,
}

/// Why a presence message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresenceDecodeError {
    #[error("presence is not valid msgpack: {0}")]
    Msgpack(#[from] MsgpackError),
    #[error("presence field `{0}` is missing")]
    Missing(&'static str),
    #[error("presence field `{field}` is invalid: {source}")]
    Field {
        field: &'static str,
        source: MsgpackError,
    },
}

impl Presence {
    /// What the device publishes after a CONNACK: connection `session` of
    /// run `boot`, at `at`.
    pub fn online(boot: u64, session: u32, at: u64) -> Self {
        Presence {
            online: true,
            boot,
            session,
            at,
        }
    }

    /// The last will registered with every CONNECT of run `boot`.
    pub fn will(boot: u64) -> Self {
        Presence {
            online: false,
            boot,
            session: 0,
            at: 0,
        }
    }

    /// What the device publishes before a clean DISCONNECT.
    pub fn offline(boot: u64, session: u32, at: u64) -> Self {
        Presence {
            online: false,
            boot,
            session,
            at,
        }
    }

    /// `(boot, session)`: which connection this message is about. A new
    /// pair with `online` set means the device (re)connected.
    pub fn connection(&self) -> (u64, u32) {
        (self.boot, self.session)
    }

    /// The wire form (a msgpack map; see the module doc for key order).
    pub fn to_msgpack(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(48);
        w.map_len(4);
        w.str("online").bool(self.online);
        w.str("boot").uint(self.boot);
        w.str("session").uint(self.session.into());
        w.str("at").uint(self.at);
        w.into_vec()
    }

    /// Decodes a presence message (app side). Depth-bounded like every
    /// network input; unknown keys are ignored.
    pub fn from_msgpack(bytes: &[u8]) -> Result<Presence, PresenceDecodeError> {
        crate::msgpack::validate(bytes, DEFAULT_MAX_DEPTH)?;
        let mut r = Reader::new(bytes);
        let entries = r.read_map_len()?;
        let (mut online, mut boot, mut session, mut at) = (None, None, None, None);
        for _ in 0..entries {
            let Some(key) = r.read_key(DEFAULT_MAX_DEPTH)? else {
                // A non-string key is not ours: skip its value too.
                r.skip(DEFAULT_MAX_DEPTH)?;
                continue;
            };
            if r.read_nil()? {
                continue;
            }
            let field =
                |field: &'static str| move |source| PresenceDecodeError::Field { field, source };
            match key {
                b"online" => online = Some(r.read_bool().map_err(field("online"))?),
                b"boot" => boot = Some(r.read_u64().map_err(field("boot"))?),
                b"session" => session = Some(r.read_u32().map_err(field("session"))?),
                b"at" => at = Some(r.read_u64().map_err(field("at"))?),
                _ => r.skip(DEFAULT_MAX_DEPTH)?,
            }
        }
        Ok(Presence {
            online: online.ok_or(PresenceDecodeError::Missing("online"))?,
            boot: boot.ok_or(PresenceDecodeError::Missing("boot"))?,
            session: session.ok_or(PresenceDecodeError::Missing("session"))?,
            at: at.ok_or(PresenceDecodeError::Missing("at"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BOOT: u64 = 1_700_000_000_000;

    #[test]
    fn round_trips() {
        for p in [
            Presence::online(BOOT, 1, BOOT + 250),
            Presence::will(BOOT),
            Presence::offline(BOOT, 3, BOOT + 90_000),
            Presence::online(u64::MAX, u32::MAX, u64::MAX),
        ] {
            assert_eq!(Presence::from_msgpack(&p.to_msgpack()), Ok(p));
        }
    }

    #[test]
    fn is_readable_by_a_generic_decoder_in_key_order() {
        let bytes = Presence::online(BOOT, 2, BOOT + 5).to_msgpack();
        let v: serde_json::Value = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"online": true, "boot": BOOT, "session": 2, "at": BOOT + 5})
        );
        let mut r = Reader::new(&bytes);
        assert_eq!(r.read_map_len(), Ok(4));
        let mut keys = Vec::new();
        for _ in 0..4 {
            keys.push(r.read_str().unwrap());
            r.skip(DEFAULT_MAX_DEPTH).unwrap();
        }
        assert_eq!(keys, ["online", "boot", "session", "at"]);
    }

    #[test]
    fn decode_ignores_unknown_keys_and_nil() {
        let mut w = Writer::new();
        w.map_len(7);
        w.str("future").array_len(2).uint(1).str("x");
        w.uint(7).str("non-string key");
        w.str("at").uint(9);
        w.str("session").uint(4);
        w.str("note").nil();
        w.str("boot").uint(BOOT);
        w.str("online").bool(true);
        assert_eq!(
            Presence::from_msgpack(&w.into_vec()),
            Ok(Presence::online(BOOT, 4, 9))
        );
    }

    #[test]
    fn decode_errors_are_typed() {
        let mut w = Writer::new();
        w.map_len(3).str("online").bool(false);
        w.str("boot").uint(1).str("at").uint(2);
        assert_eq!(
            Presence::from_msgpack(&w.into_vec()),
            Err(PresenceDecodeError::Missing("session"))
        );
        let mut w = Writer::new();
        w.map_len(1).str("online").str("yes");
        assert!(matches!(
            Presence::from_msgpack(&w.into_vec()),
            Err(PresenceDecodeError::Field {
                field: "online",
                ..
            })
        ));
        let mut w = Writer::new();
        w.map_len(1).str("session").uint(u64::from(u32::MAX) + 1);
        assert!(matches!(
            Presence::from_msgpack(&w.into_vec()),
            Err(PresenceDecodeError::Field {
                field: "session",
                ..
            })
        ));
        assert!(matches!(
            Presence::from_msgpack(&[0x91, 0xc3]),
            Err(PresenceDecodeError::Msgpack(_))
        ));
        assert!(matches!(
            Presence::from_msgpack(&[0x84]),
            Err(PresenceDecodeError::Msgpack(_))
        ));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..100)) {
            let _ = Presence::from_msgpack(&bytes);
        }

        #[test]
        fn round_trips_any(online in any::<bool>(), boot in any::<u64>(), session in any::<u32>(), at in any::<u64>()) {
            let p = Presence { online, boot, session, at };
            prop_assert_eq!(Presence::from_msgpack(&p.to_msgpack()), Ok(p));
        }
    }
}
