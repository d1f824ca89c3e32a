//! The conformance commands (`plugins/conformance/README.md`) in Rust: the
//! reference the C, C++, AssemblyScript and Zig plugins are held to, by the
//! same scenarios on both engines, and the baseline of the per-language
//! benchmark (`docs/benchmarks.md`).

use relay_guest::prelude::*;

/// Replies its payload unchanged.
#[command(name = "echo", roles(all))]
pub fn echo(_ctx: &mut Ctx, payload: Raw) -> Result<Raw, Error> {
    Ok(payload)
}

#[derive(Deserialize)]
pub struct Check {
    value: i64,
}

#[derive(Serialize)]
pub struct Checked {
    value: i64,
    ok: bool,
}

/// `{"value": 0..=100}` back, or the error kind that says what is wrong.
#[command(name = "check", roles(all))]
pub fn check(_ctx: &mut Ctx, req: Check) -> Result<Checked, Error> {
    if !(0..=100).contains(&req.value) {
        return Err(Error::out_of_bounds(format!(
            "value {} is outside 0..=100",
            req.value
        )));
    }
    Ok(Checked {
        value: req.value,
        ok: true,
    })
}

#[derive(Deserialize)]
pub struct Fill {
    bytes: u64,
}

/// Largest reply `fill` builds.
const MAX_FILL: u64 = 1_000_000;

/// A msgpack `bin` of `bytes` bytes of `0x2a`.
#[command(name = "fill", roles(all))]
pub fn fill(_ctx: &mut Ctx, req: Fill) -> Result<Raw, Error> {
    if req.bytes > MAX_FILL {
        return Err(Error::out_of_bounds(format!(
            "{} bytes is over {MAX_FILL}",
            req.bytes
        )));
    }
    let n = req.bytes as usize;
    let mut out = Vec::with_capacity(n + 5);
    match n {
        0..=0xff => out.extend_from_slice(&[0xc4, n as u8]),
        0x100..=0xffff => {
            out.push(0xc5);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(0xc6);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
    out.resize(out.len() + n, 0x2a);
    Ok(Raw(out))
}

/// Keeps the payload under kv key `slot`.
#[command(name = "store", roles(admin))]
pub fn store(ctx: &mut Ctx, payload: Raw) -> Result<(), Error> {
    ctx.kv_set("slot", &payload.0)
        .map_err(|e| Error::transient(format!("kv refused: {e:?}")))
}

/// What `store` kept.
#[command(name = "load", roles(all))]
pub fn load(ctx: &mut Ctx) -> Result<Raw, Error> {
    ctx.kv_get("slot")
        .map(Raw)
        .ok_or_else(|| Error::permanent("empty"))
}

/// Emits `ping` with the payload.
#[command(name = "emit", roles(all))]
pub fn emit(ctx: &mut Ctx, payload: Raw) -> Result<(), Error> {
    ctx.emit_raw("ping", &payload.0);
    ctx.log(Level::Info, "emitted");
    Ok(())
}

#[derive(Serialize)]
pub struct Now {
    now_ms: u64,
}

/// The host's clock.
#[command(name = "now", roles(all))]
pub fn now(ctx: &mut Ctx) -> Result<Now, Error> {
    Ok(Now {
        now_ms: ctx.now_ms(),
    })
}

relay_guest::plugin!(
    name = "conformance-rs",
    commands = [echo, check, fill, store, load, emit, now]
);
