//! Native unit testing of handlers, without a wasm engine.
//!
//! Role in the data path: stands in for the host on non-wasm targets. A
//! [`MockHost`] keeps kv, clock, logs and events in memory; build a
//! [`Ctx`](crate::Ctx) on it with [`Ctx::for_test`](crate::Ctx::for_test),
//! then call a handler function directly or the whole plugin through the
//! `PLUGIN` static that `plugin!` defines. The engine-level harness
//! (`relay test`, `relay_harness`) runs the built `.wasm` instead; this
//! is the fast inner loop.
//!
//! ```ignore
//! let mut ctx = Ctx::for_test("increment", Role::Admin);
//! let reply = PLUGIN.handle(&mut ctx, &testing::msgpack(&json!({"by": 2}))?)?;
//! assert_eq!(testing::decode::<serde_json::Value>(&reply.unwrap())?, json!({"value": 2}));
//! assert_eq!(ctx.host().kv.len(), 1);
//! ```

use crate::{codec, Error, KvError, Level};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::cell::RefCell;
use std::collections::BTreeMap;

/// An in-memory host: what the real host offers, observable by tests.
#[derive(Clone, Debug, Default)]
pub struct MockHost {
    /// The plugin's key-value store.
    pub kv: BTreeMap<String, Vec<u8>>,
    /// What `now_ms` answers.
    pub now_ms: u64,
    /// `kv_set` fails with `too-large` above this many value bytes (if set).
    pub max_value_bytes: Option<usize>,
    /// Log lines in order.
    pub logs: RefCell<Vec<(Level, String)>>,
    /// Emitted events in order: (name, msgpack payload).
    pub events: Vec<(String, Vec<u8>)>,
}

impl MockHost {
    pub fn log(&self, level: Level, message: &str) {
        self.logs.borrow_mut().push((level, message.to_owned()));
    }

    pub fn kv_get(&self, key: &str) -> Option<Vec<u8>> {
        self.kv.get(key).cloned()
    }

    pub fn kv_set(&mut self, key: &str, value: &[u8]) -> Result<(), KvError> {
        if self.max_value_bytes.is_some_and(|max| value.len() > max) {
            return Err(KvError::TooLarge);
        }
        self.kv.insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    pub fn kv_delete(&mut self, key: &str) {
        self.kv.remove(key);
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    pub fn emit(&mut self, name: &str, payload: &[u8]) {
        self.events.push((name.to_owned(), payload.to_vec()));
    }
}

/// Encode a test value the way a caller would send it (named msgpack).
pub fn msgpack<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    codec::encode(value).map_err(Error::invalid_argument)
}

/// Decode a reply, event payload or kv value for an assertion.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    codec::decode(bytes).map_err(Error::invalid_argument)
}
