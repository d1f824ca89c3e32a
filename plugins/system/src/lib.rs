//! The `system` plugin: device-level commands, each restricted by role.
//!
//! Role in the data path: shows events and role checks. The plugin cannot
//! reboot or blink anything itself (it is sandboxed); it asks the host to
//! publish an event (`rebooting`, `identify`) that the device's agent acts
//! on, and records what it did in kv. Roles follow ESP RainMaker: only an
//! admin may reboot or wipe, any registered user may ask the device to
//! identify itself.
//!
//! kv keys owned by this plugin (all removed by `factory-reset`):
//! [`LAST_REBOOT_KEY`], [`REBOOTS_KEY`].

use relay_guest::prelude::*;

/// Unix ms of the last accepted `reboot`.
pub const LAST_REBOOT_KEY: &str = "last_reboot_ms";
/// Number of accepted `reboot` commands.
pub const REBOOTS_KEY: &str = "reboots";
/// Every key `factory-reset` clears.
pub const OWNED_KEYS: [&str; 2] = [LAST_REBOOT_KEY, REBOOTS_KEY];

pub const DEFAULT_REBOOT_DELAY_MS: u32 = 1000;
pub const MAX_REBOOT_DELAY_MS: u32 = 60_000;
pub const DEFAULT_BLINKS: u32 = 3;
pub const MAX_BLINKS: u32 = 10;

/// `reboot` payload; no payload = reboot after 1 s.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Reboot {
    /// 0..=60000; default 1000.
    pub delay_ms: Option<u32>,
}

/// Event `rebooting`.
#[derive(Debug, Serialize)]
pub struct Rebooting {
    pub delay_ms: u32,
}

/// `identify` payload; no payload = 3 blinks.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Identify {
    /// 1..=10; default 3.
    pub blink: Option<u32>,
}

/// Event `identify`.
#[derive(Debug, Serialize)]
pub struct Blink {
    pub blink: u32,
}

/// Reply of `identify`.
#[derive(Debug, Serialize)]
pub struct Identity {
    pub name: &'static str,
    pub version: &'static str,
    pub now_ms: u64,
    pub reboots: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_reboot_ms: Option<u64>,
}

/// Reply of `factory-reset`.
#[derive(Debug, Serialize)]
pub struct Cleared {
    pub cleared: u32,
}

/// Ask the device to reboot after `delay_ms`: emits `rebooting`. Admin only.
#[command(name = "reboot", roles(admin), budget_ms = 100)]
pub fn reboot(ctx: &mut Ctx, req: Reboot) -> Result<(), Error> {
    let delay_ms = req.delay_ms.unwrap_or(DEFAULT_REBOOT_DELAY_MS);
    if delay_ms > MAX_REBOOT_DELAY_MS {
        return Err(Error::out_of_bounds(format!(
            "delay_ms = {delay_ms} is outside 0..={MAX_REBOOT_DELAY_MS}"
        )));
    }
    let reboots = ctx
        .kv_get_as::<u64>(REBOOTS_KEY)?
        .unwrap_or(0)
        .saturating_add(1);
    let now_ms = ctx.now_ms();
    ctx.kv_set_as(REBOOTS_KEY, &reboots)?;
    ctx.kv_set_as(LAST_REBOOT_KEY, &now_ms)?;
    ctx.emit("rebooting", &Rebooting { delay_ms })?;
    relay_guest::log::warn!(ctx, "reboot requested");
    Ok(())
}

/// Blink to be found (`identify` event) and say who we are. Any role.
#[command(name = "identify", roles(admin, primary, secondary), budget_ms = 100)]
pub fn identify(ctx: &mut Ctx, req: Identify) -> Result<Identity, Error> {
    let blink = req.blink.unwrap_or(DEFAULT_BLINKS);
    if !(1..=MAX_BLINKS).contains(&blink) {
        return Err(Error::out_of_bounds(format!(
            "blink = {blink} is outside 1..={MAX_BLINKS}"
        )));
    }
    ctx.emit("identify", &Blink { blink })?;
    Ok(Identity {
        name: PLUGIN.name,
        version: PLUGIN.version,
        now_ms: ctx.now_ms(),
        reboots: ctx.kv_get_as::<u64>(REBOOTS_KEY)?.unwrap_or(0),
        last_reboot_ms: ctx.kv_get_as::<u64>(LAST_REBOOT_KEY)?,
    })
}

/// Forget everything this plugin stored; replies how many keys existed.
/// Admin only.
#[command(name = "factory-reset", roles(admin))]
pub fn factory_reset(ctx: &mut Ctx) -> Result<Cleared, Error> {
    let mut cleared = 0;
    for key in OWNED_KEYS {
        if ctx.kv_get(key).is_some() {
            ctx.kv_delete(key);
            cleared += 1;
        }
    }
    ctx.emit("factory-reset", &Cleared { cleared })?;
    Ok(Cleared { cleared })
}

relay_guest::plugin!(
    name = "system",
    commands = [reboot, identify, factory_reset]
);

#[cfg(test)]
mod tests {
    use super::*;
    use relay_guest::testing::{decode, msgpack, MockHost};
    use relay_guest::ErrorKind;
    use serde_json::{json, Value as Json};

    fn call(
        host: MockHost,
        command: &str,
        role: Role,
        payload: Json,
    ) -> (Result<Option<Json>, Error>, MockHost) {
        let bytes = if payload.is_null() {
            Vec::new()
        } else {
            msgpack(&payload).expect("encodes")
        };
        let mut ctx = Ctx::for_test(command, role).with_host(host);
        let reply = PLUGIN
            .handle(&mut ctx, &bytes)
            .map(|reply| reply.map(|bytes| decode::<Json>(&bytes).expect("reply decodes")));
        (reply, ctx.into_host())
    }

    fn events(host: &MockHost) -> Vec<(String, Json)> {
        host.events
            .iter()
            .map(|(name, payload)| {
                (
                    name.clone(),
                    decode::<Json>(payload).expect("event decodes"),
                )
            })
            .collect()
    }

    #[test]
    fn reboot_emits_and_records() {
        let host = MockHost {
            now_ms: 1_700_000_000_000,
            ..MockHost::default()
        };
        let (reply, host) = call(host, "reboot", Role::Admin, json!({"delay_ms": 250}));
        assert_eq!(reply, Ok(None));
        assert_eq!(
            events(&host),
            [("rebooting".to_string(), json!({"delay_ms": 250}))]
        );
        assert_eq!(
            decode::<u64>(&host.kv[LAST_REBOOT_KEY]),
            Ok(1_700_000_000_000)
        );
        assert_eq!(decode::<u64>(&host.kv[REBOOTS_KEY]), Ok(1));
    }

    #[test]
    fn reboot_delay_is_bounded() {
        let (reply, host) = call(
            MockHost::default(),
            "reboot",
            Role::Admin,
            json!({"delay_ms": 60_001}),
        );
        assert_eq!(reply.expect_err("too long").kind(), ErrorKind::OutOfBounds);
        assert!(host.events.is_empty() && host.kv.is_empty());
    }

    #[test]
    fn only_admin_reboots_or_resets_but_anyone_identifies() {
        for role in [Role::Primary, Role::Secondary] {
            let (reply, _) = call(MockHost::default(), "reboot", role, Json::Null);
            assert_eq!(
                reply.expect_err("not permitted").kind(),
                ErrorKind::Permanent
            );
            let (reply, _) = call(MockHost::default(), "factory-reset", role, Json::Null);
            assert_eq!(
                reply.expect_err("not permitted").kind(),
                ErrorKind::Permanent
            );
            let (reply, host) = call(MockHost::default(), "identify", role, Json::Null);
            assert_eq!(
                reply,
                Ok(Some(
                    json!({"name": "system", "version": env!("CARGO_PKG_VERSION"), "now_ms": 0, "reboots": 0})
                ))
            );
            assert_eq!(
                events(&host),
                [("identify".to_string(), json!({"blink": 3}))]
            );
        }
    }

    #[test]
    fn factory_reset_clears_the_owned_keys() {
        let (_, host) = call(MockHost::default(), "reboot", Role::Admin, Json::Null);
        let (reply, host) = call(
            MockHost {
                events: Vec::new(),
                ..host
            },
            "factory-reset",
            Role::Admin,
            Json::Null,
        );
        assert_eq!(reply, Ok(Some(json!({"cleared": 2}))));
        assert!(host.kv.is_empty());
        assert_eq!(
            events(&host),
            [("factory-reset".to_string(), json!({"cleared": 2}))]
        );
    }
}
