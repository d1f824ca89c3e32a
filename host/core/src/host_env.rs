//! Capabilities granted to a plugin (the WIT `host` interface): logging, a
//! per-plugin bounded key-value store and wall-clock time. Both engines call
//! into one [`HostEnv`], so quotas and truncation behave identically on
//! wasmtime and wasmi (the differential test depends on it). Storage and
//! clock are traits: a file/flash store and a real clock on devices, an
//! in-memory store and a fixed clock in the harness.

use alloc::{boxed::Box, collections::BTreeMap, string::String, vec::Vec};

use crate::limits::Limits;
use crate::plugin::{KvError, LogLevel};

/// Raw storage behind a plugin's kv namespace. Limits are enforced by
/// [`HostEnv`], not here, so every backend gets the same rules.
pub trait KvStore: Send {
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    fn put(&mut self, key: &str, value: &[u8]);
    fn delete(&mut self, key: &str);
    /// All entries, sorted by key.
    fn entries(&self) -> Vec<(String, Vec<u8>)>;
    /// Make previous writes durable. Called by the runtime after each call,
    /// before the call's outcome is journaled; an error means the writes are
    /// not durable (the runtime must not report the call as done).
    fn flush(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// Wall clock, unix milliseconds.
pub trait Clock: Send {
    fn now_ms(&self) -> u64;
}

/// Where plugin log lines go (tracing on the host, a buffer in the harness).
pub trait Logger: Send {
    fn log(&mut self, plugin: &str, level: LogLevel, message: &str);
}

/// In-memory kv, for tests, the harness and `describe`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MemKv(pub BTreeMap<String, Vec<u8>>);

impl KvStore for MemKv {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.0.get(key).cloned()
    }
    fn put(&mut self, key: &str, value: &[u8]) {
        self.0.insert(key.into(), value.to_vec());
    }
    fn delete(&mut self, key: &str) {
        self.0.remove(key);
    }
    fn entries(&self) -> Vec<(String, Vec<u8>)> {
        self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// A clock that always answers the same instant (harness, differential tests).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub u64);

impl Clock for FixedClock {
    fn now_ms(&self) -> u64 {
        self.0
    }
}

/// Sends plugin logs to `tracing`, tagged with the plugin name.
#[cfg(feature = "tracing")]
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingLogger;

#[cfg(feature = "tracing")]
impl Logger for TracingLogger {
    fn log(&mut self, plugin: &str, level: LogLevel, message: &str) {
        match level {
            LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            LogLevel::Info => tracing::info!(plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

/// Drops plugin logs (a build without `tracing` and nowhere to print).
#[derive(Debug, Default, Clone, Copy)]
pub struct NullLogger;

impl Logger for NullLogger {
    fn log(&mut self, _plugin: &str, _level: LogLevel, _message: &str) {}
}

/// Keeps log lines in memory (harness and tests).
#[derive(Debug, Default, Clone)]
pub struct MemLogger(pub Vec<(LogLevel, String)>);

impl Logger for MemLogger {
    fn log(&mut self, _plugin: &str, level: LogLevel, message: &str) {
        self.0.push((level, message.into()));
    }
}

/// Size limits of one kv namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLimits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub max_total_bytes: usize,
}

impl From<&Limits> for KvLimits {
    fn from(l: &Limits) -> Self {
        KvLimits {
            max_key_bytes: l.max_kv_key_bytes,
            max_value_bytes: l.max_kv_value_bytes,
            max_total_bytes: l.max_kv_total_bytes,
        }
    }
}

/// The environment one plugin instance sees. Owned by the engine's store.
pub struct HostEnv {
    plugin: String,
    kv: Box<dyn KvStore>,
    clock: Box<dyn Clock>,
    logger: Box<dyn Logger>,
    kv_limits: KvLimits,
    max_log_bytes: usize,
    max_log_lines_per_call: usize,
    max_log_bytes_per_call: usize,
    /// Lines and bytes logged by the current call.
    logged_lines: usize,
    logged_bytes: usize,
    /// Sum of key + value bytes currently stored, kept to check the quota in O(1).
    kv_used: usize,
    read_only: bool,
}

impl HostEnv {
    pub fn new(
        plugin: impl Into<String>,
        kv: Box<dyn KvStore>,
        clock: Box<dyn Clock>,
        logger: Box<dyn Logger>,
        limits: &Limits,
    ) -> Self {
        let kv_used = kv.entries().iter().map(|(k, v)| k.len() + v.len()).sum();
        HostEnv {
            plugin: plugin.into(),
            kv,
            clock,
            logger,
            kv_limits: limits.into(),
            max_log_bytes: limits.max_log_bytes,
            max_log_lines_per_call: limits.max_log_lines_per_call,
            max_log_bytes_per_call: limits.max_log_bytes_per_call,
            logged_lines: 0,
            logged_bytes: 0,
            kv_used,
            read_only: false,
        }
    }

    /// The env `describe` runs in: logs go to tracing (if built with it),
    /// the kv is empty and refuses writes (a plugin's identity must not
    /// depend on its state).
    pub fn detached(limits: &Limits) -> Self {
        #[cfg(feature = "tracing")]
        let logger: Box<dyn Logger> = Box::new(TracingLogger);
        #[cfg(not(feature = "tracing"))]
        let logger: Box<dyn Logger> = Box::new(NullLogger);
        let mut env = HostEnv::new(
            "<loading>",
            Box::new(MemKv::default()),
            Box::new(FixedClock(0)),
            logger,
            limits,
        );
        env.read_only = true;
        env
    }

    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    /// Starts a call's log budget (both engines call it as a call begins).
    pub fn begin_call(&mut self) {
        self.logged_lines = 0;
        self.logged_bytes = 0;
    }

    /// Logs `message`, truncated to `max_log_bytes` (at a char boundary),
    /// within the call's budget of lines and bytes. The first line past the
    /// budget is replaced by one that says so; later ones are dropped.
    pub fn log(&mut self, level: LogLevel, message: &str) {
        let mut end = message.len().min(self.max_log_bytes);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let over = self.logged_lines >= self.max_log_lines_per_call
            || self.logged_bytes + end > self.max_log_bytes_per_call;
        if over {
            if self.logged_lines <= self.max_log_lines_per_call {
                self.logged_lines = self.max_log_lines_per_call + 1;
                self.logger.log(
                    &self.plugin,
                    LogLevel::Warn,
                    "log budget of this call used up: later lines of the call are dropped",
                );
            }
            return;
        }
        self.logged_lines += 1;
        self.logged_bytes += end;
        self.logger.log(&self.plugin, level, &message[..end]);
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    pub fn kv_get(&self, key: &str) -> Option<Vec<u8>> {
        self.kv.get(key)
    }

    pub fn kv_set(&mut self, key: &str, value: &[u8]) -> Result<(), KvError> {
        let l = self.kv_limits;
        if key.len() > l.max_key_bytes || value.len() > l.max_value_bytes {
            return Err(KvError::TooLarge);
        }
        let old = self.kv.get(key).map(|v| key.len() + v.len()).unwrap_or(0);
        let used = self.kv_used - old + key.len() + value.len();
        if used > l.max_total_bytes || self.read_only {
            return Err(KvError::QuotaExceeded);
        }
        self.kv.put(key, value);
        self.kv_used = used;
        Ok(())
    }

    pub fn kv_delete(&mut self, key: &str) {
        if self.read_only {
            return;
        }
        if let Some(v) = self.kv.get(key) {
            self.kv_used -= key.len() + v.len();
            self.kv.delete(key);
        }
    }

    pub fn kv_entries(&self) -> Vec<(String, Vec<u8>)> {
        self.kv.entries()
    }

    pub fn kv_used_bytes(&self) -> usize {
        self.kv_used
    }

    /// Makes the plugin's kv writes durable (see [`KvStore::flush`]).
    pub fn flush(&mut self) -> Result<(), String> {
        self.kv.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(limits: Limits) -> HostEnv {
        HostEnv::new(
            "t",
            Box::new(MemKv::default()),
            Box::new(FixedClock(7)),
            Box::new(MemLogger::default()),
            &limits,
        )
    }

    #[test]
    fn kv_enforces_entry_and_total_limits() {
        let mut e = env(Limits {
            max_kv_key_bytes: 4,
            max_kv_value_bytes: 8,
            max_kv_total_bytes: 20,
            ..Limits::default()
        });
        assert_eq!(e.kv_set("toolong", b"x"), Err(KvError::TooLarge));
        assert_eq!(e.kv_set("k", &[0; 9]), Err(KvError::TooLarge));
        e.kv_set("a", &[1; 8]).unwrap();
        e.kv_set("b", &[2; 8]).unwrap();
        assert_eq!(e.kv_used_bytes(), 18);
        assert_eq!(e.kv_set("c", &[3; 8]), Err(KvError::QuotaExceeded));
        // Overwriting an entry only counts the difference.
        e.kv_set("a", &[4; 2]).unwrap();
        e.kv_set("c", &[3; 5]).unwrap();
        e.kv_delete("b");
        e.kv_delete("missing");
        assert_eq!(e.kv_used_bytes(), 3 + 6);
        assert_eq!(e.kv_get("a"), Some(alloc::vec![4; 2]));
        assert_eq!(e.now_ms(), 7);
    }

    #[test]
    fn log_budget_per_call() {
        extern crate std;
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Shared(Arc<Mutex<Vec<String>>>);
        impl Logger for Shared {
            fn log(&mut self, _plugin: &str, _level: LogLevel, message: &str) {
                self.0.lock().unwrap().push(message.into());
            }
        }
        let lines = Shared::default();
        let limits = Limits {
            max_log_bytes: 4,
            max_log_lines_per_call: 3,
            max_log_bytes_per_call: 10,
            ..Limits::default()
        };
        let mut e = HostEnv::new(
            "t",
            Box::new(MemKv::default()),
            Box::new(FixedClock(7)),
            Box::new(lines.clone()),
            &limits,
        );
        for _ in 0..5 {
            e.log(LogLevel::Info, "abcdef");
        }
        // 4 + 4 bytes; a third line would pass 10: one notice, then nothing.
        let got = lines.0.lock().unwrap().clone();
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[..2], ["abcd", "abcd"]);
        assert!(got[2].contains("log budget"));
        e.begin_call();
        e.log(LogLevel::Info, "ab");
        assert_eq!(lines.0.lock().unwrap().last().unwrap(), "ab");
    }

    #[test]
    fn detached_env_refuses_writes() {
        let mut e = HostEnv::detached(&Limits::default());
        assert_eq!(e.kv_set("k", b"v"), Err(KvError::QuotaExceeded));
        assert_eq!(e.kv_get("k"), None);
    }
}
