// ratelimit-as: token buckets per key, in AssemblyScript, plus the
// conformance commands every guest language implements
// (plugins/conformance/README.md). Built by ../build.sh.

import {
  plugin, command, Command, Outcome, ok, okBytes, error, ErrorKind, Role, ALL_ROLES, Level,
  Reader, Writer, Kind, KvError, log, kvGet, kvSet, kvDelete, nowMs, emit, utf8Chars,
} from "relay-guest-as/assembly/relay";

// The ABI entry points live in the kit; asc exports only what the entry file
// exports, so every plugin re-exports these five (and, to stay small, nothing
// else).
export {
  describe, handle, cabi_realloc, cabi_post_describe, cabi_post_handle,
} from "relay-guest-as/assembly/relay";

// ---- token buckets ------------------------------------------------------------

const CAPACITY: i64 = 10;
/** One token comes back every REFILL_MS of the host clock. */
const REFILL_MS: i64 = 1000;
const MAX_KEY_CHARS = 32;
const MAX_COST: i64 = 100;
/** kv keys are `rl:<key>`; the host's kv keys are at most 128 bytes. */
const PREFIX = "rl:";
const MAX_KV_KEY_BYTES = 128;

// The `key` field of a take/reset payload, or an error outcome explaining why
// not. AssemblyScript has no tuples, so the error goes out through a global;
// readKey clears it first, so it never points into an earlier call's arena.
let keyError: Outcome | null = null;

function readKey(r: Reader): string {
  keyError = null;
  const v = r.get("key");
  if (v === null) {
    keyError = error(ErrorKind.InvalidArgument, r.ok ? "missing field `key`" : "invalid payload: " + r.error);
    return "";
  }
  if (!v.readStrBytes()) {
    keyError = error(ErrorKind.InvalidArgument, "`key`: " + v.error);
    return "";
  }
  // Characters are Unicode code points (what a user would count), not the
  // UTF-16 units of an AssemblyScript string.
  const chars = utf8Chars(v.strPtr, v.strLen);
  if (chars < 1 || chars > MAX_KEY_CHARS) {
    keyError = error(ErrorKind.OutOfBounds, "`key` has " + chars.toString() + " characters, allowed 1..=32");
    return "";
  }
  if (<i32>v.strLen + PREFIX.length > MAX_KV_KEY_BYTES) {
    keyError = error(ErrorKind.OutOfBounds, "`key` is " + v.strLen.toString() + " bytes of UTF-8, at most 125");
    return "";
  }
  return String.UTF8.decodeUnsafe(v.strPtr, v.strLen);
}

/** Reads a payload that must be one well-formed msgpack map. */
function mapPayload(cmd: Command): Reader | null {
  const r = cmd.reader();
  if (!r.valid()) return null;
  if (r.peek() != Kind.Map) { r.fail("expected a map"); return null; }
  return r;
}

function badPayload(cmd: Command): Outcome {
  const r = cmd.reader();
  r.valid();
  return error(ErrorKind.InvalidArgument, "invalid payload: " + (r.ok ? "expected a map" : r.error));
}

// A bucket as stored: `{"tokens": n, "at": ms}`, where `at` is the instant the
// tokens were last counted (kept in the past by the unused fraction of a
// refill, so partial progress is not lost between takes).
class Bucket {
  constructor(public tokens: i64, public at: i64) {}
}

function loadBucket(kvKey: string, now: i64): Bucket {
  const raw = kvGet(kvKey);
  if (raw === null) return new Bucket(CAPACITY, now);
  const r = Reader.of(raw);
  const t = r.get("tokens");
  const a = r.get("at");
  if (t !== null && a !== null) {
    const tokens = t.readInt();
    const at = a.readInt();
    if (t.ok && a.ok && tokens >= 0 && tokens <= CAPACITY) return new Bucket(tokens, at);
  }
  // Not ours or damaged: a limiter that fails closed on its own corrupt state
  // would lock a key out forever, so start it full again (and say so).
  log(Level.Warn, "bucket " + kvKey + " was unreadable; starting it full");
  return new Bucket(CAPACITY, now);
}

function take(cmd: Command): Outcome {
  const r = mapPayload(cmd);
  if (r === null) return badPayload(cmd);
  const key = readKey(r);
  const bad = keyError;
  if (bad !== null) return bad;

  let cost: i64 = 1;
  const c = r.get("cost");
  if (c !== null) {
    if (c.peek() != Kind.Int) return error(ErrorKind.InvalidArgument, "`cost` must be an integer");
    const big = c.readInt();
    // An integer too large for i64 is still just out of range.
    cost = c.ok ? big : MAX_COST + 1;
    if (cost < 1 || cost > MAX_COST) return error(ErrorKind.OutOfBounds, "`cost` is outside 1..=100");
  }

  const now = <i64>nowMs();
  const kvKey = PREFIX + key;
  const b = loadBucket(kvKey, now);
  // A clock that went backwards refills nothing (and does not move `at`).
  const elapsed = now > b.at ? now - b.at : 0;
  const refill = elapsed / REFILL_MS;
  b.tokens += refill;
  b.at += refill * REFILL_MS;
  if (b.tokens >= CAPACITY) {
    b.tokens = CAPACITY;
    if (now > b.at) b.at = now; // a full bucket does not bank time
  }
  const allowed = b.tokens >= cost;
  if (allowed) b.tokens -= cost;

  const stored = new Writer().map(2).str("tokens").int(b.tokens).str("at").int(b.at);
  if (kvSet(kvKey, stored.toBytes()) != KvError.None) {
    return error(ErrorKind.Transient, "the kv store refused the bucket");
  }
  return ok(new Writer().map(2).str("allowed").bool(allowed).str("remaining").int(b.tokens));
}

function reset(cmd: Command): Outcome {
  const r = mapPayload(cmd);
  if (r === null) return badPayload(cmd);
  const key = readKey(r);
  const bad = keyError;
  if (bad !== null) return bad;
  kvDelete(PREFIX + key);
  return ok();
}

// ---- conformance (plugins/conformance/README.md) -------------------------------

function echo(cmd: Command): Outcome {
  return cmd.hasPayload ? okBytes(cmd.payload) : ok();
}

function check(cmd: Command): Outcome {
  const r = cmd.reader();
  const v = r.get("value");
  if (v === null) return error(ErrorKind.InvalidArgument, r.ok ? "missing field `value`" : "invalid payload: " + r.error);
  const value = v.readInt();
  if (!v.ok) return error(ErrorKind.InvalidArgument, "`value`: " + v.error);
  if (value < 0 || value > 100) return error(ErrorKind.OutOfBounds, "value " + value.toString() + " is outside 0..=100");
  return ok(new Writer().map(2).str("value").int(value).str("ok").bool(true));
}

const MAX_FILL: u64 = 1_000_000;

function fill(cmd: Command): Outcome {
  const r = cmd.reader();
  const v = r.get("bytes");
  if (v === null) return error(ErrorKind.InvalidArgument, r.ok ? "missing field `bytes`" : "invalid payload: " + r.error);
  const n = v.readUint();
  if (!v.ok) return error(ErrorKind.InvalidArgument, "`bytes`: " + v.error);
  if (n > MAX_FILL) return error(ErrorKind.OutOfBounds, n.toString() + " bytes is over 1000000");
  return ok(new Writer().binHeader(<u32>n).repeat(0x2a, <u32>n));
}

function store(cmd: Command): Outcome {
  if (kvSet("slot", cmd.payload) != KvError.None) return error(ErrorKind.Transient, "kv refused the value");
  return ok();
}

function load(cmd: Command): Outcome {
  const v = kvGet("slot");
  return v === null ? error(ErrorKind.Permanent, "empty") : okBytes(v);
}

function emitPing(cmd: Command): Outcome {
  emit("ping", cmd.payload);
  log(Level.Info, "emitted");
  return ok();
}

function now(cmd: Command): Outcome {
  return ok(new Writer().map(1).str("now_ms").uint(nowMs()));
}

plugin("ratelimit-as", "1.0.0", [
  command("take", [Role.Admin, Role.Primary], take),
  command("reset", [Role.Admin], reset),
  command("echo", ALL_ROLES, echo),
  command("check", ALL_ROLES, check),
  command("fill", ALL_ROLES, fill),
  command("store", [Role.Admin], store),
  command("load", ALL_ROLES, load),
  command("emit", ALL_ROLES, emitPing),
  command("now", ALL_ROLES, now),
]);
