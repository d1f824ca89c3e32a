//! The `counter` plugin: an integer kept in the plugin's kv store.
//!
//! Role in the data path: the smallest handler with state. The value lives
//! in the host's per-plugin kv under [`COUNT_KEY`] (msgpack integer), outside
//! the wasm instance, so it survives a trap, a plugin reload and a host
//! restart. Roles follow the RainMaker idea: anyone may read, admin and
//! primary users may count, only admin may reset.

use relay_guest::prelude::*;

/// kv key holding the current value (a msgpack integer; absent = 0).
pub const COUNT_KEY: &str = "count";

/// `increment` payload; no payload at all means `{by: 1}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Increment {
    /// Step, may be negative; defaults to 1.
    pub by: Option<i64>,
}

/// Reply of `increment` and `get`.
#[derive(Debug, Serialize)]
pub struct Value {
    pub value: i64,
}

/// Add `by` (default 1) and reply with the new value.
/// Leaving the i64 range is `out-of-bounds`; the stored value is unchanged.
#[command(name = "increment", roles(admin, primary))]
pub fn increment(ctx: &mut Ctx, req: Increment) -> Result<Value, Error> {
    let by = req.by.unwrap_or(1);
    let value = current(ctx)?
        .checked_add(by)
        .ok_or_else(|| Error::out_of_bounds("increment would leave the counter's i64 range"))?;
    ctx.kv_set_as(COUNT_KEY, &value)?;
    Ok(Value { value })
}

/// The current value (0 before the first increment).
#[command(name = "get", roles(all))]
pub fn get(ctx: &mut Ctx) -> Result<Value, Error> {
    Ok(Value {
        value: current(ctx)?,
    })
}

/// Back to 0 (the key is removed). No reply.
#[command(name = "reset", roles(admin))]
pub fn reset(ctx: &mut Ctx) -> Result<(), Error> {
    ctx.kv_delete(COUNT_KEY);
    relay_guest::log::info!(ctx, "counter reset");
    Ok(())
}

fn current(ctx: &Ctx) -> Result<i64, Error> {
    Ok(ctx.kv_get_as::<i64>(COUNT_KEY)?.unwrap_or(0))
}

relay_guest::plugin!(name = "counter", commands = [increment, get, reset]);

#[cfg(test)]
mod tests {
    use super::*;
    use relay_guest::testing::{decode, msgpack, MockHost};
    use relay_guest::ErrorKind;
    use serde_json::{json, Value as Json};

    fn call(
        host: MockHost,
        command: &str,
        payload: Json,
    ) -> (Result<Option<Json>, Error>, MockHost) {
        let bytes = if payload.is_null() {
            Vec::new()
        } else {
            msgpack(&payload).expect("encodes")
        };
        let mut ctx = Ctx::for_test(command, Role::Admin).with_host(host);
        let reply = PLUGIN
            .handle(&mut ctx, &bytes)
            .map(|reply| reply.map(|bytes| decode::<Json>(&bytes).expect("reply decodes")));
        (reply, ctx.into_host())
    }

    #[test]
    fn counts_from_zero_and_keeps_the_value_in_kv() {
        let (reply, host) = call(MockHost::default(), "increment", Json::Null);
        assert_eq!(reply, Ok(Some(json!({"value": 1}))));
        let (reply, host) = call(host, "increment", json!({"by": 5}));
        assert_eq!(reply, Ok(Some(json!({"value": 6}))));
        let (reply, host) = call(host, "get", Json::Null);
        assert_eq!(reply, Ok(Some(json!({"value": 6}))));
        assert_eq!(host.kv.get(COUNT_KEY), Some(&vec![6]));
        let (reply, host) = call(host, "reset", Json::Null);
        assert_eq!(reply, Ok(None));
        assert!(host.kv.is_empty());
    }

    #[test]
    fn overflow_is_out_of_bounds_and_leaves_the_value() {
        let mut host = MockHost::default();
        host.kv
            .insert(COUNT_KEY.into(), msgpack(&i64::MAX).expect("encodes"));
        let (reply, host) = call(host, "increment", Json::Null);
        assert_eq!(reply.expect_err("overflow").kind(), ErrorKind::OutOfBounds);
        let (reply, _) = call(host, "get", Json::Null);
        assert_eq!(reply, Ok(Some(json!({"value": i64::MAX}))));
    }

    #[test]
    fn a_wrong_payload_is_invalid_argument() {
        for payload in [json!({"by": "two"}), json!({"step": 2}), json!("two")] {
            let (reply, _) = call(MockHost::default(), "increment", payload.clone());
            assert_eq!(
                reply.expect_err("bad payload").kind(),
                ErrorKind::InvalidArgument,
                "{payload}"
            );
        }
    }
}
