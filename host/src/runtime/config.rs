//! `relay.toml`: everything `relay run` needs to know about one device, read
//! once at start. Not part of a command's path itself; it decides the knobs
//! of every step (broker link, journal, scheduler policy, engine limits).
//!
//! Decisions:
//! * **Unknown keys are errors** (`deny_unknown_fields`, and a key check for
//!   the `[limits]` table): a misspelt `max_atempts` silently falling back to
//!   the default is the kind of bug that only shows in production.
//! * **Durations are integer milliseconds** with an `_ms` suffix in the key
//!   name, so the unit is visible where the value is written.
//! * **Relative paths are relative to the config file's directory**, not to
//!   the working directory of whoever started the service.
//! * Every key except `device` has a default; `examples/relay.toml` lists
//!   them all with their defaults and meaning.

use std::path::{Path, PathBuf};
use std::time::Duration;

use relay_core::engine::EngineKind;
use relay_core::envelope::EnvelopeLimits;
use relay_core::limits::Limits;
use relay_core::scheduler::Policy;
use serde::Deserialize;

use crate::transport::topics::{validate_device, validate_prefix, DEFAULT_PREFIX};
use crate::transport::MqttConfig;

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The whole `relay.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Device id: the seed naming rule, part of every topic.
    pub device: String,
    /// Topic prefix (`<prefix>/<device>/cmd/<role>`).
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Directory of `*.wasm` plugins loaded at start.
    #[serde(default = "default_plugin_dir")]
    pub plugin_dir: PathBuf,
    /// Journal and plugin kv live here.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// `wasmtime` (JIT, Linux) or `wasmi` (interpreter).
    #[serde(default = "default_engine")]
    pub engine: EngineKind,
    #[serde(default)]
    pub broker: BrokerConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub journal: JournalConfig,
    #[serde(default)]
    pub envelope: EnvelopeConfig,
    #[serde(default)]
    pub runtime: RuntimeSection,
    #[serde(default)]
    pub updates: UpdatesConfig,
    /// Overrides of the plugin [`Limits`] (any of its fields).
    #[serde(default)]
    pub limits: toml::Table,
}

/// `[broker]`: where the device's MQTT broker is.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Default `relay-<device>`; must stay stable for the persistent session.
    pub client_id: Option<String>,
    pub keep_alive_ms: u64,
    pub connect_timeout_ms: u64,
    /// Reconnect backoff: first delay and cap (full jitter in between).
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    /// `[broker.tls]`: present = TLS (see `transport::tls`).
    pub tls: Option<crate::transport::TlsFiles>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            host: "127.0.0.1".into(),
            port: 1883,
            username: None,
            password: None,
            client_id: None,
            keep_alive_ms: 30_000,
            connect_timeout_ms: 5_000,
            reconnect_min_ms: 100,
            reconnect_max_ms: 30_000,
            tls: None,
        }
    }
}

/// `[retry]`: the scheduler's retry policy.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    pub delay_ms: u64,
    pub max_attempts: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        let p = Policy::default();
        RetryConfig {
            delay_ms: p.retry_delay_ms,
            max_attempts: p.max_attempts,
        }
    }
}

/// `[journal]`: dedupe memory and compaction.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// Final outcomes remembered for dedupe and `_status` queries.
    pub remembered_outcomes: usize,
    /// Rewrite the journal with only the live records after this many appends.
    pub compact_after_records: u64,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            remembered_outcomes: Policy::default().remembered_outcomes,
            compact_after_records: super::DEFAULT_COMPACT_AFTER_RECORDS,
        }
    }
}

/// `[envelope]`: limits on incoming command envelopes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvelopeConfig {
    pub max_bytes: usize,
    pub max_depth: usize,
}

impl Default for EnvelopeConfig {
    fn default() -> Self {
        let l = EnvelopeLimits::default();
        EnvelopeConfig {
            max_bytes: l.max_bytes,
            max_depth: l.max_depth,
        }
    }
}

/// `[runtime]`: shutdown and back-pressure.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSection {
    /// How long a graceful shutdown waits for the running handler.
    pub shutdown_deadline_ms: u64,
    /// Stop reading from the broker while this many commands are pending.
    pub max_pending: usize,
}

impl Default for RuntimeSection {
    fn default() -> Self {
        RuntimeSection {
            shutdown_deadline_ms: super::DEFAULT_SHUTDOWN_DEADLINE.as_millis() as u64,
            max_pending: super::DEFAULT_MAX_PENDING,
        }
    }
}

/// `[updates]`: over-the-air plugin updates (`docs/ota.md`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpdatesConfig {
    /// Public keys (64 hex chars, from `relay plugin keygen`) whose signed
    /// bundles this device installs. None: every bundle is refused.
    pub trusted_keys: Vec<String>,
    /// Key ids (16 hex chars) refused even when listed above.
    pub revoked_keys: Vec<String>,
    /// The largest bundle accepted.
    pub max_bundle_bytes: u64,
    /// Calls a new version must run without a trap or time-out before it
    /// is confirmed (until then, one rolls it back).
    pub trial_commands: u32,
}

impl Default for UpdatesConfig {
    fn default() -> Self {
        UpdatesConfig {
            trusted_keys: Vec::new(),
            revoked_keys: Vec::new(),
            max_bundle_bytes: super::installer::DEFAULT_MAX_BUNDLE_BYTES,
            trial_commands: super::installer::DEFAULT_TRIAL_COMMANDS,
        }
    }
}

impl UpdatesConfig {
    /// The installer's options, with the keys parsed.
    pub fn options(&self) -> Result<super::installer::UpdateOptions, ConfigError> {
        let invalid = |m: String| ConfigError::Invalid(m);
        let mut trust = relay_core::ota::verify::TrustedKeys::new();
        for key in &self.trusted_keys {
            let bytes: [u8; 32] = relay_core::ota::bundle::unhex(key.trim())
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    invalid(format!(
                        "updates.trusted_keys: {key:?} is not 64 hex characters"
                    ))
                })?;
            trust
                .trust(&bytes)
                .map_err(|e| invalid(format!("updates.trusted_keys: {key:?}: {e}")))?;
        }
        for id in &self.revoked_keys {
            let bytes: [u8; 8] = relay_core::ota::bundle::unhex(id.trim())
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    invalid(format!(
                        "updates.revoked_keys: {id:?} is not a 16 hex character key id"
                    ))
                })?;
            trust.revoke(bytes);
        }
        Ok(super::installer::UpdateOptions {
            trust,
            max_bundle_bytes: self.max_bundle_bytes,
            trial_commands: self.trial_commands,
        })
    }
}

fn default_prefix() -> String {
    DEFAULT_PREFIX.into()
}
fn default_plugin_dir() -> PathBuf {
    "plugins".into()
}
fn default_data_dir() -> PathBuf {
    "data".into()
}
fn default_engine() -> EngineKind {
    EngineKind::Wasmtime
}

impl Config {
    /// A config with every default, for `device`.
    pub fn for_device(device: impl Into<String>) -> Config {
        Config {
            device: device.into(),
            prefix: default_prefix(),
            plugin_dir: default_plugin_dir(),
            data_dir: default_data_dir(),
            engine: default_engine(),
            broker: BrokerConfig::default(),
            retry: RetryConfig::default(),
            journal: JournalConfig::default(),
            envelope: EnvelopeConfig::default(),
            runtime: RuntimeSection::default(),
            updates: UpdatesConfig::default(),
            limits: toml::Table::new(),
        }
    }

    /// Reads and validates `path`; relative paths inside become relative to
    /// the file's directory.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Config::parse(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.plugin_dir = base.join(&config.plugin_dir);
        config.data_dir = base.join(&config.data_dir);
        Ok(config)
    }

    /// Parses and validates TOML text (paths are kept as written).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: names, ranges, the `[limits]` keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if let Err(e) = validate_device(&self.device) {
            return invalid(e.to_string());
        }
        if let Err(e) = validate_prefix(&self.prefix) {
            return invalid(e.to_string());
        }
        if self.retry.max_attempts == 0 {
            return invalid("retry.max_attempts must be at least 1".into());
        }
        if self.runtime.max_pending == 0 {
            return invalid("runtime.max_pending must be at least 1".into());
        }
        if self.envelope.max_depth == 0 || self.envelope.max_bytes == 0 {
            return invalid("envelope.max_bytes and envelope.max_depth must be at least 1".into());
        }
        if self.broker.host.is_empty() {
            return invalid("broker.host is empty".into());
        }
        if let Some(tls) = &self.broker.tls {
            // Read and check the files now: a bad path is a start-up error,
            // not a reconnect loop.
            if let Err(e) = tls.client_config() {
                return invalid(format!("broker.tls: {e}"));
            }
        }
        if self.broker.username.is_none() && self.broker.password.is_some() {
            return invalid("broker.password is set without broker.username".into());
        }
        self.updates.options()?;
        self.plugin_limits().map(|_| ())
    }

    /// The plugin limits: defaults with the `[limits]` overrides applied.
    pub fn plugin_limits(&self) -> Result<Limits, ConfigError> {
        let defaults = toml::Table::try_from(Limits::default())
            .map_err(|e| ConfigError::Invalid(format!("limits: {e}")))?;
        let mut merged = defaults.clone();
        for (key, value) in &self.limits {
            if !defaults.contains_key(key) {
                let mut known: Vec<&str> = defaults.keys().map(String::as_str).collect();
                known.sort_unstable();
                return Err(ConfigError::Invalid(format!(
                    "unknown key limits.{key} (known: {})",
                    known.join(", ")
                )));
            }
            merged.insert(key.clone(), value.clone());
        }
        merged
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(format!("limits: {e}")))
    }

    /// The scheduler policy.
    pub fn policy(&self) -> Policy {
        Policy {
            retry_delay_ms: self.retry.delay_ms,
            max_attempts: self.retry.max_attempts,
            remembered_outcomes: self.journal.remembered_outcomes,
        }
    }

    pub fn envelope_limits(&self) -> EnvelopeLimits {
        EnvelopeLimits {
            max_bytes: self.envelope.max_bytes,
            max_depth: self.envelope.max_depth,
        }
    }

    pub fn shutdown_deadline(&self) -> Duration {
        Duration::from_millis(self.runtime.shutdown_deadline_ms)
    }

    /// The MQTT link settings.
    pub fn mqtt(&self) -> MqttConfig {
        let b = &self.broker;
        let mut m = MqttConfig::new(b.host.clone(), b.port, self.device.clone());
        m.prefix = self.prefix.clone();
        m.client_id = b.client_id.clone();
        m.credentials = b
            .username
            .clone()
            .map(|u| (u, b.password.clone().unwrap_or_default()));
        m.tls = b.tls.clone();
        m.keep_alive = Duration::from_millis(b.keep_alive_ms);
        m.connect_timeout = Duration::from_millis(b.connect_timeout_ms);
        m.backoff_base = Duration::from_millis(b.reconnect_min_ms.max(1));
        m.backoff_cap = Duration::from_millis(b.reconnect_max_ms.max(b.reconnect_min_ms).max(1));
        m
    }

    /// The runtime settings derived from this config.
    pub fn runtime_options(&self) -> Result<super::RuntimeOptions, ConfigError> {
        Ok(super::RuntimeOptions {
            policy: self.policy(),
            envelope_limits: self.envelope_limits(),
            shutdown_deadline: self.shutdown_deadline(),
            compact_after_records: self.journal.compact_after_records,
            max_pending: self.runtime.max_pending,
            storage_retry_ms: relay_core::machine::STORAGE_RETRY_MS,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[broker.tls]` is read with the config and its files are checked
    /// right away, so `relay run` stops at start with the path in the
    /// message (the working case is `tests/e2e_tls.rs`).
    #[test]
    fn broker_tls_files_are_checked_with_the_config() {
        let error = Config::parse("device = \"d1\"\n[broker.tls]\nca = \"/nonexistent/ca.pem\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("broker.tls") && error.contains("/nonexistent/ca.pem"),
            "{error}"
        );
        let unknown = Config::parse("device = \"d1\"\n[broker.tls]\ncafile = \"x\"\n");
        assert!(unknown.is_err(), "unknown keys are refused");
    }

    #[test]
    fn minimal_config_gets_every_default() {
        let c = Config::parse("device = \"dev-1\"").unwrap();
        assert_eq!(c, Config::for_device("dev-1"));
        assert_eq!(c.policy(), Policy::default());
        assert_eq!(c.plugin_limits().unwrap(), Limits::default());
    }

    #[test]
    fn sample_config_parses() {
        let text = include_str!("../../../examples/relay.toml");
        let c = Config::parse(text).unwrap();
        assert_eq!(c.device, "dev-1");
        c.plugin_limits().unwrap();
    }

    #[test]
    fn unknown_keys_are_errors() {
        for text in [
            "device = \"d\"\nmax_atempts = 3",
            "device = \"d\"\n[retry]\nmax_atempts = 3",
            "device = \"d\"\n[broker]\nhots = \"x\"",
            "device = \"d\"\n[limits]\nfuel = 3",
        ] {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(err.contains("unknown"), "{text}: {err}");
        }
    }

    #[test]
    fn bad_values_are_errors() {
        for text in [
            "",
            "device = \"a b\"",
            "device = \"d\"\nprefix = \"a/#\"",
            "device = \"d\"\nengine = \"v8\"",
            "device = \"d\"\n[retry]\nmax_attempts = 0",
            "device = \"d\"\n[limits]\nfuel_per_call = \"lots\"",
        ] {
            assert!(Config::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn limits_overrides_apply() {
        let c = Config::parse("device = \"d\"\n[limits]\nfuel_per_call = 7\ntime_budget_ms = 9")
            .unwrap();
        let l = c.plugin_limits().unwrap();
        assert_eq!((l.fuel_per_call, l.time_budget_ms), (7, 9));
        assert_eq!(l.max_memory_bytes, Limits::default().max_memory_bytes);
    }

    #[test]
    fn load_resolves_paths_against_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(&path, "device = \"d\"\ndata_dir = \"state\"").unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.data_dir, dir.path().join("state"));
        assert_eq!(c.plugin_dir, dir.path().join("plugins"));
        let missing = Config::load(dir.path().join("nope.toml")).unwrap_err();
        assert!(matches!(missing, ConfigError::Read { .. }));
    }
}
