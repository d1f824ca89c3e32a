//! [`Ctx`]: one command delivery as the handler sees it.
//!
//! Role in the data path: built by `handle` from the world's `command`
//! record, passed to the handler, dropped when it returns. It carries the
//! command's metadata (id, name, attempt, role) and offers the host's
//! capabilities as safe methods; the typed helpers use the same
//! depth-bounded, named msgpack codec as payloads and replies.

use crate::codec;
use crate::host::Host;
use crate::{Error, KvError, Level, Role};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The current command and the host's capabilities.
#[derive(Debug)]
pub struct Ctx {
    id: String,
    command: String,
    attempt: u32,
    role: Role,
    host: Host,
}

impl Ctx {
    pub(crate) fn new(id: String, command: String, attempt: u32, role: Role, host: Host) -> Self {
        Ctx {
            id,
            command,
            attempt,
            role,
            host,
        }
    }

    /// The command's id (unique per command, the same on every retry).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The command's name, e.g. `"deploy"`.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// 1 for the first attempt, counting up on retries of a `transient` error.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Who sent the command (already checked against the command's roles).
    pub fn role(&self) -> Role {
        self.role
    }

    /// Write a log line, attributed to this plugin by the host.
    pub fn log(&self, level: Level, message: &str) {
        self.host.log(level, message)
    }

    /// Wall-clock time, unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.host.now_ms()
    }

    /// The raw bytes stored under `key`, if any.
    pub fn kv_get(&self, key: &str) -> Option<Vec<u8>> {
        self.host.kv_get(key)
    }

    /// Store raw bytes under `key` (persistent, per plugin, size-bounded).
    pub fn kv_set(&mut self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.host.kv_set(key, value)
    }

    /// Remove `key`; removing an absent key is not an error.
    pub fn kv_delete(&mut self, key: &str) {
        self.host.kv_delete(key)
    }

    /// Read and decode a msgpack value stored with [`Ctx::kv_set_as`].
    ///
    /// A stored value that no longer decodes (e.g. written by an older plugin
    /// version with another type) is a `permanent` error naming the key.
    pub fn kv_get_as<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        match self.host.kv_get(key) {
            None => Ok(None),
            Some(bytes) => codec::decode(&bytes).map(Some).map_err(|detail| {
                Error::permanent(["kv value under `", key, "` does not decode: ", &detail].concat())
            }),
        }
    }

    /// Encode `value` as named msgpack and store it under `key`.
    pub fn kv_set_as<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), Error> {
        let bytes = codec::encode(value).map_err(|detail| {
            Error::permanent(["kv value for `", key, "` does not encode: ", &detail].concat())
        })?;
        Ok(self.host.kv_set(key, &bytes)?)
    }

    /// Ask the host to publish event `name` with `payload` (named msgpack)
    /// after this call returns.
    pub fn emit<T: Serialize + ?Sized>(&mut self, name: &str, payload: &T) -> Result<(), Error> {
        let bytes = codec::encode(payload).map_err(|detail| {
            Error::permanent(["event `", name, "` does not encode: ", &detail].concat())
        })?;
        self.host.emit(name, &bytes);
        Ok(())
    }

    /// Emit an event whose payload is already msgpack bytes.
    pub fn emit_raw(&mut self, name: &str, payload: &[u8]) {
        self.host.emit(name, payload)
    }
}

/// Native test support: a `Ctx` over an in-memory [`MockHost`](crate::testing::MockHost).
#[cfg(not(target_arch = "wasm32"))]
impl Ctx {
    /// A first-attempt delivery of `command` by `role` on an empty mock host.
    pub fn for_test(command: &str, role: Role) -> Self {
        Ctx::new(
            "test-command".into(),
            command.into(),
            1,
            role,
            Host::default(),
        )
    }

    /// The same delivery as attempt number `attempt`.
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// The same delivery on a prepared host (e.g. kv from an earlier call).
    pub fn with_host(mut self, host: Host) -> Self {
        self.host = host;
        self
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    pub fn host_mut(&mut self) -> &mut Host {
        &mut self.host
    }

    pub fn into_host(self) -> Host {
        self.host
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::decode;
    use crate::ErrorKind;

    #[test]
    fn typed_kv_round_trips_through_named_msgpack() {
        let mut ctx = Ctx::for_test("t", Role::Admin);
        assert_eq!(ctx.kv_get_as::<i64>("count").expect("absent is ok"), None);
        ctx.kv_set_as("count", &41i64).expect("stored");
        assert_eq!(ctx.kv_get_as::<i64>("count").expect("decodes"), Some(41));
        assert_eq!(ctx.kv_get("count"), Some(vec![41]));
        ctx.kv_delete("count");
        assert_eq!(ctx.kv_get("count"), None);
    }

    #[test]
    fn undecodable_kv_value_is_a_permanent_error_naming_the_key() {
        let mut ctx = Ctx::for_test("t", Role::Admin);
        ctx.kv_set("count", b"\xa3abc").expect("stored");
        let err = ctx
            .kv_get_as::<i64>("count")
            .expect_err("a string is no i64");
        assert_eq!(err.kind(), ErrorKind::Permanent);
        assert!(err.message().contains("`count`"), "{}", err.message());
    }

    #[test]
    fn kv_limit_maps_to_a_permanent_error() {
        let host = Host {
            max_value_bytes: Some(4),
            ..Host::default()
        };
        let mut ctx = Ctx::for_test("t", Role::Admin).with_host(host);
        let err = ctx.kv_set_as("big", "0123456789").expect_err("too large");
        assert_eq!(err.kind(), ErrorKind::Permanent);
    }

    #[test]
    fn events_and_logs_reach_the_host_in_order() {
        #[derive(Serialize)]
        struct Rebooting {
            delay_ms: u32,
        }
        let mut ctx = Ctx::for_test("reboot", Role::Admin).with_attempt(2);
        ctx.log(Level::Info, "going down");
        ctx.emit("rebooting", &Rebooting { delay_ms: 100 })
            .expect("encodes");
        assert_eq!(ctx.attempt(), 2);
        let host = ctx.into_host();
        assert_eq!(host.logs.borrow().len(), 1);
        let (name, payload) = &host.events[0];
        assert_eq!(name, "rebooting");
        let payload: serde_json::Value = decode(payload).expect("decodes");
        assert_eq!(payload, serde_json::json!({"delay_ms": 100}));
    }
}
