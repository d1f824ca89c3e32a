//! The `deploy` plugin: validate a deployment config, store it, report it.
//!
//! Role in the data path: shows the three failure kinds a handler chooses
//! between, and how the host's retry loop looks from inside a plugin.
//! - A payload that is not a config (wrong type, missing or unknown field,
//!   version that is not semver) is `invalid-argument`: resending the same
//!   bytes can never work.
//! - A well-formed config with a number outside its range is
//!   `out-of-bounds`, naming the field and the range.
//! - `fail_times: n` makes attempts 1..=n fail `transient` before anything
//!   is stored (the host retries those), so attempt n+1 succeeds: a
//!   deterministic demo of retries using [`Ctx::attempt`].
//!
//! A stored config lives in kv under [`CONFIG_KEY`] and survives restarts;
//! each successful deploy also emits a `deployed` event.

use relay_guest::prelude::*;
use std::ops::RangeInclusive;

/// kv key of the last deployed config (named msgpack map).
pub const CONFIG_KEY: &str = "config";
pub const REPLICAS: RangeInclusive<i64> = 1..=16;
pub const TIMEOUT_S: RangeInclusive<i64> = 1..=3600;
const MAX_VERSION_LEN: usize = 64;

/// The `deploy` payload (unknown fields are refused, to catch typos).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `MAJOR.MINOR.PATCH`, optionally `-pre` / `+build`.
    pub version: String,
    /// 1..=16 (read as i64 so a negative or huge number is a bounds error,
    /// not a type error).
    pub replicas: i64,
    /// 1..=3600 seconds.
    pub timeout_s: i64,
    /// Fail transiently on attempts 1..=n (demo of retries); not stored.
    #[serde(default, skip_serializing)]
    pub fail_times: Option<u32>,
}

/// Reply of `deploy`.
#[derive(Debug, Serialize)]
pub struct Stored {
    pub stored: bool,
    pub version: String,
}

/// Event `deployed`, emitted after a config is stored.
#[derive(Debug, Serialize)]
pub struct Deployed<'a> {
    pub version: &'a str,
    pub replicas: i64,
}

/// Reply of `get-config`: `{deployed: false}` before the first deploy.
#[derive(Debug, Serialize)]
pub struct CurrentConfig {
    pub deployed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<Config>,
}

/// Validate, (maybe) fail transiently, store, announce.
#[command(name = "deploy", roles(admin, primary), budget_ms = 2000)]
pub fn deploy(ctx: &mut Ctx, config: Config) -> Result<Stored, Error> {
    validate(&config)?;
    if let Some(fail_times) = config.fail_times {
        if ctx.attempt() <= fail_times {
            relay_guest::log::warn!(
                ctx,
                "deploy: simulated transient failure on attempt {}",
                ctx.attempt()
            );
            return Err(Error::transient(format!(
                "simulated transient failure on attempt {} of {fail_times} planned",
                ctx.attempt()
            )));
        }
    }
    ctx.kv_set_as(CONFIG_KEY, &config)?;
    ctx.emit(
        "deployed",
        &Deployed {
            version: &config.version,
            replicas: config.replicas,
        },
    )?;
    relay_guest::log::info!(ctx, "deployed {} x{}", config.version, config.replicas);
    Ok(Stored {
        stored: true,
        version: config.version,
    })
}

/// The last stored config, if any. Read-only, so every role may ask.
#[command(name = "get-config", roles(all))]
pub fn get_config(ctx: &mut Ctx) -> Result<CurrentConfig, Error> {
    let config = ctx.kv_get_as::<Config>(CONFIG_KEY)?;
    Ok(CurrentConfig {
        deployed: config.is_some(),
        config,
    })
}

/// Bounds and syntax checks, in field order so the first problem is named.
pub fn validate(config: &Config) -> Result<(), Error> {
    if !is_semver(&config.version) {
        return Err(Error::invalid_argument(format!(
            "version `{}` is not semver (MAJOR.MINOR.PATCH, at most {MAX_VERSION_LEN} chars)",
            config.version
        )));
    }
    check_range("replicas", config.replicas, REPLICAS)?;
    check_range("timeout_s", config.timeout_s, TIMEOUT_S)
}

fn check_range(field: &str, value: i64, range: RangeInclusive<i64>) -> Result<(), Error> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(Error::out_of_bounds(format!(
        "{field} = {value} is outside {}..={}",
        range.start(),
        range.end()
    )))
}

/// `MAJOR.MINOR.PATCH` of digits without leading zeros, then optionally `-` or `+` and
/// `[0-9A-Za-z.+-]+`.
fn is_semver(version: &str) -> bool {
    if version.len() > MAX_VERSION_LEN {
        return false;
    }
    let (core, tail) = match version.find(['-', '+']) {
        Some(at) => (&version[..at], Some(&version[at + 1..])),
        None => (version, None),
    };
    let numbers_ok = core.split('.').count() == 3
        && core.split('.').all(|part| {
            !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_digit())
                && (part == "0" || !part.starts_with('0'))
        });
    let tail_ok = tail.is_none_or(|tail| {
        !tail.is_empty()
            && tail
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    });
    numbers_ok && tail_ok
}

relay_guest::plugin!(name = "deploy", commands = [deploy, get_config]);

#[cfg(test)]
mod tests {
    use super::*;
    use relay_guest::testing::{decode, msgpack, MockHost};
    use relay_guest::ErrorKind;
    use serde_json::{json, Value as Json};

    fn call(
        host: MockHost,
        command: &str,
        attempt: u32,
        payload: Json,
    ) -> (Result<Option<Json>, Error>, MockHost) {
        let bytes = msgpack(&payload).expect("encodes");
        let mut ctx = Ctx::for_test(command, Role::Primary)
            .with_attempt(attempt)
            .with_host(host);
        let reply = PLUGIN
            .handle(&mut ctx, &bytes)
            .map(|reply| reply.map(|bytes| decode::<Json>(&bytes).expect("reply decodes")));
        (reply, ctx.into_host())
    }

    #[test]
    fn stores_a_valid_config_and_announces_it() {
        let (reply, host) = call(
            MockHost::default(),
            "deploy",
            1,
            json!({"version": "1.4.0", "replicas": 3, "timeout_s": 60}),
        );
        assert_eq!(reply, Ok(Some(json!({"stored": true, "version": "1.4.0"}))));
        assert_eq!(host.events.len(), 1);
        assert_eq!(host.events[0].0, "deployed");
        assert_eq!(
            decode::<Json>(&host.events[0].1),
            Ok(json!({"version": "1.4.0", "replicas": 3}))
        );
        let (reply, _) = call(host, "get-config", 1, Json::Null);
        assert_eq!(
            reply,
            Ok(Some(
                json!({"deployed": true, "config": {"version": "1.4.0", "replicas": 3, "timeout_s": 60}})
            ))
        );
    }

    #[test]
    fn out_of_range_numbers_are_out_of_bounds_naming_the_field() {
        for (payload, field) in [
            (
                json!({"version": "1.0.0", "replicas": 0, "timeout_s": 60}),
                "replicas = 0 is outside 1..=16",
            ),
            (
                json!({"version": "1.0.0", "replicas": 17, "timeout_s": 60}),
                "replicas = 17",
            ),
            (
                json!({"version": "1.0.0", "replicas": 1, "timeout_s": 3601}),
                "timeout_s = 3601",
            ),
            (
                json!({"version": "1.0.0", "replicas": -4, "timeout_s": 1}),
                "replicas = -4",
            ),
        ] {
            let (reply, host) = call(MockHost::default(), "deploy", 1, payload);
            let err = reply.expect_err(field);
            assert_eq!(err.kind(), ErrorKind::OutOfBounds);
            assert!(err.message().contains(field), "{}", err.message());
            assert!(host.kv.is_empty() && host.events.is_empty());
        }
    }

    #[test]
    fn malformed_configs_are_invalid_argument() {
        for payload in [
            json!({"version": "1.0", "replicas": 1, "timeout_s": 1}),
            json!({"version": "latest", "replicas": 1, "timeout_s": 1}),
            json!({"version": "1.0.0", "replicas": "3", "timeout_s": 1}),
            json!({"version": "1.0.0", "timeout_s": 1}),
            json!({"version": "1.0.0", "replicas": 1, "timeout_s": 1, "replica": 2}),
            json!("1.0.0"),
        ] {
            let (reply, _) = call(MockHost::default(), "deploy", 1, payload.clone());
            assert_eq!(
                reply.expect_err("malformed").kind(),
                ErrorKind::InvalidArgument,
                "{payload}"
            );
        }
    }

    #[test]
    fn fail_times_fails_transiently_until_the_attempt_after() {
        let payload =
            json!({"version": "2.0.0-rc.1", "replicas": 2, "timeout_s": 30, "fail_times": 2});
        let mut host = MockHost::default();
        for attempt in 1..=2 {
            let (reply, next) = call(host, "deploy", attempt, payload.clone());
            assert_eq!(
                reply.expect_err("planned failure").kind(),
                ErrorKind::Transient
            );
            assert!(next.kv.is_empty());
            host = next;
        }
        let (reply, host) = call(host, "deploy", 3, payload);
        assert_eq!(
            reply,
            Ok(Some(json!({"stored": true, "version": "2.0.0-rc.1"})))
        );
        assert!(host.kv.contains_key(CONFIG_KEY));
    }

    #[test]
    fn semver_check() {
        for good in [
            "0.0.1",
            "1.2.3",
            "1.2.3-rc.1",
            "1.2.3+build.7",
            "10.0.0-alpha-2",
        ] {
            assert!(is_semver(good), "{good}");
        }
        for bad in [
            "",
            "1.2",
            "1.2.3.4",
            "1..3",
            "a.b.c",
            "1.2.3-",
            "1.2.3 ",
            "v1.2.3",
            "1.02.3",
            &"1".repeat(65),
        ] {
            assert!(!is_semver(bad), "{bad}");
        }
    }
}
