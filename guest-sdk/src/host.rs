//! The backend behind [`Ctx`](crate::Ctx): where host calls go.
//!
//! Role in the data path: every capability a handler uses (log, kv, clock,
//! events) ends here. On wasm32 these are the world's imports
//! (`relay:plugin/host`), reached through the wit-bindgen bindings; on any
//! other target they go to an in-memory [`MockHost`](crate::testing::MockHost)
//! so a plugin's handlers can be unit-tested natively with `cargo test`.

#[cfg(not(target_arch = "wasm32"))]
pub use crate::testing::MockHost as Host;
#[cfg(target_arch = "wasm32")]
pub use imports::Host;

#[cfg(target_arch = "wasm32")]
mod imports {
    use crate::bindings::relay::plugin::host;
    use crate::{KvError, Level};

    /// The real host: each method is one import call.
    #[derive(Debug, Default)]
    pub struct Host;

    impl Host {
        pub fn log(&self, level: Level, message: &str) {
            host::log(level, message)
        }

        pub fn kv_get(&self, key: &str) -> Option<Vec<u8>> {
            host::kv_get(key)
        }

        pub fn kv_set(&mut self, key: &str, value: &[u8]) -> Result<(), KvError> {
            host::kv_set(key, value)
        }

        pub fn kv_delete(&mut self, key: &str) {
            host::kv_delete(key)
        }

        pub fn now_ms(&self) -> u64 {
            host::now_ms()
        }

        pub fn emit(&mut self, name: &str, payload: &[u8]) {
            host::emit(name, payload)
        }
    }
}
