// Relay guest kit for AssemblyScript: the `relay:plugin` world's canonical
// ABI (what wit-bindgen emits for wasm32, see wit/relay-plugin.wit and
// host/core/src/engine/module/world.rs), wrappers for the host imports,
// command registration and dispatch. msgpack lives in ./msgpack.ts and is
// re-exported here, so a plugin imports everything from this one file.
//
// The lines below are the contract this file implements; a Rust test
// compares them with the host's table (world.rs), so keep them verbatim.
//
// relay-abi: world relay:plugin@0.1.0
// relay-abi: import relay:plugin/host@0.1.0#log(i32, i32, i32)
// relay-abi: import relay:plugin/host@0.1.0#kv-get(i32, i32, i32)
// relay-abi: import relay:plugin/host@0.1.0#kv-set(i32, i32, i32, i32, i32)
// relay-abi: import relay:plugin/host@0.1.0#kv-delete(i32, i32)
// relay-abi: import relay:plugin/host@0.1.0#now-ms() -> i64
// relay-abi: import relay:plugin/host@0.1.0#emit(i32, i32, i32, i32)
// relay-abi: export describe() -> i32
// relay-abi: export handle(i32, i32, i32, i32, i32, i32, i32, i32) -> i32
// relay-abi: export cabi_post_describe(i32)
// relay-abi: export cabi_post_handle(i32)
// relay-abi: export cabi_realloc(i32, i32, i32, i32) -> i32
//
// Memory model. Plugins build with `--runtime stub`: a bump allocator that
// never frees (no GC, ~6 KB modules, no shadow stack). Everything allocated
// while the module starts (the command table from `plugin(...)`) is kept; at
// the first entry into any export the kit marks the heap top, and
// `cabi_post_describe` / `cabi_post_handle` rewind the heap to that mark.
// So each call starts from the same heap: arguments lowered by the host,
// strings, readers, writers, replies all live exactly one call. Keeping a
// reference to any of them in a global across calls is a use-after-free.
//
// Every module must link with `--use abort=~lib/relay-guest-as/assembly/relay/relayAbort`
// (build.sh does): the host grants no `env.abort`, and a failed assertion or
// an out-of-memory then traps, which the host reports as `trap`.

import { BLOCK_OVERHEAD } from "rt/common";
import { Reader, Writer } from "./msgpack";
export { Reader, Writer, Kind, MAX_DEPTH, validUtf8, utf8Chars } from "./msgpack";

// ---- host imports (relay:plugin/host@0.1.0) --------------------------------

// @ts-ignore: decorator
@external("relay:plugin/host@0.1.0", "log")
declare function hostLog(level: i32, msgPtr: usize, msgLen: usize): void;
// @ts-ignore: decorator
@external("relay:plugin/host@0.1.0", "kv-get")
declare function hostKvGet(keyPtr: usize, keyLen: usize, retArea: usize): void;
// @ts-ignore: decorator
@external("relay:plugin/host@0.1.0", "kv-set")
declare function hostKvSet(keyPtr: usize, keyLen: usize, valPtr: usize, valLen: usize, retArea: usize): void;
// @ts-ignore: decorator
@external("relay:plugin/host@0.1.0", "kv-delete")
declare function hostKvDelete(keyPtr: usize, keyLen: usize): void;
// @ts-ignore: decorator
@external("relay:plugin/host@0.1.0", "now-ms")
declare function hostNowMs(): u64;
// @ts-ignore: decorator
@external("relay:plugin/host@0.1.0", "emit")
declare function hostEmit(namePtr: usize, nameLen: usize, payloadPtr: usize, payloadLen: usize): void;

// ---- the world's types, with the WIT discriminants --------------------------

/** Who sent a command (from the MQTT topic, never from the payload). */
export enum Role { Admin = 0, Primary = 1, Secondary = 2 }

/** Why a handler failed; the host retries only `Transient`. */
export enum ErrorKind { Transient = 0, InvalidArgument = 1, OutOfBounds = 2, Permanent = 3 }

export enum Level { Trace = 0, Debug = 1, Info = 2, Warn = 3, Error = 4 }

/** `kvSet`'s answer: `None` when stored. */
export enum KvError { None = -1, TooLarge = 0, QuotaExceeded = 1 }

/** Every role, for commands anyone may call. */
export const ALL_ROLES: Role[] = [Role.Admin, Role.Primary, Role.Secondary];

// Return areas: static, so they exist before any allocation and survive the
// arena reset that follows a call (the host reads them before post-return).
const HANDLE_RET: usize = memory.data(16, 4); // result<option<list<u8>>, handler-error>
const KV_RET: usize = memory.data(12, 4);     // option<list<u8>> (kv-set uses 2 bytes of it)
const INFO: usize = memory.data(24, 4);       // plugin-info

// ---- strings across the ABI ------------------------------------------------

// AssemblyScript strings are UTF-16; the ABI's are UTF-8. REPLACE turns a lone
// surrogate into U+FFFD: the default (WTF-8) would hand the host invalid UTF-8,
// which it refuses as an ABI violation (a trap, not an error).
function utf8(s: string): ArrayBuffer {
  return String.UTF8.encode(s, false, String.UTF8.ErrorMode.REPLACE);
}

// @ts-ignore: decorator
@inline function addr(buf: ArrayBuffer): usize { return changetype<usize>(buf); }

// ---- host wrappers ----------------------------------------------------------

/** A log line attributed to the plugin (the host truncates and rate-limits). */
export function log(level: Level, message: string): void {
  const m = utf8(message);
  hostLog(level, addr(m), <usize>m.byteLength);
}

/** The value under `key`, or null. The bytes are a copy valid for this call. */
export function kvGet(key: string): Uint8Array | null {
  const k = utf8(key);
  hostKvGet(addr(k), <usize>k.byteLength, KV_RET);
  if (load<u8>(KV_RET) == 0) return null;
  // The host put the value in memory it got from cabi_realloc (this call's arena).
  const n = load<u32>(KV_RET, 8);
  const out = new Uint8Array(<i32>n);
  memory.copy(out.dataStart, <usize>load<u32>(KV_RET, 4), <usize>n);
  return out;
}

/** Stores `value` under `key`; `KvError.None` on success. */
export function kvSet(key: string, value: Uint8Array): KvError {
  const k = utf8(key);
  hostKvSet(addr(k), <usize>k.byteLength, value.dataStart, <usize>value.length, KV_RET);
  return load<u8>(KV_RET) == 0 ? KvError.None : <KvError>load<u8>(KV_RET, 1);
}

export function kvDelete(key: string): void {
  const k = utf8(key);
  hostKvDelete(addr(k), <usize>k.byteLength);
}

/** Wall-clock time, unix milliseconds (u64: an i64 in wasm, fine in AssemblyScript). */
export function nowMs(): u64 {
  return hostNowMs();
}

/** Asks the host to publish event `name` with msgpack `payload` after the call. */
export function emit(name: string, payload: Uint8Array): void {
  const n = utf8(name);
  hostEmit(addr(n), <usize>n.byteLength, payload.dataStart, <usize>payload.length);
}

/** `emit` with a writer's bytes, without copying them. */
export function emitWriter(name: string, payload: Writer): void {
  const n = utf8(name);
  hostEmit(addr(n), <usize>n.byteLength, payload.ptr, <usize>payload.length);
}

// ---- commands ---------------------------------------------------------------

/** One delivery of a command, as the handler sees it (valid for this call only). */
export class Command {
  constructor(
    public id: string,
    public name: string,
    /** The raw msgpack payload; empty when the command had none. */
    public payload: Uint8Array,
    /** 1 for the first attempt, counting up on retries. */
    public attempt: u32,
    public role: Role,
  ) {}

  get hasPayload(): bool { return this.payload.length > 0; }

  /** A msgpack reader over the payload. */
  reader(): Reader { return Reader.of(this.payload); }
}

/** What a handler returns: build it with `ok`, `okBytes` or `error`. */
export class Outcome {
  isError: bool = false;
  hasReply: bool = false;
  ptr: usize = 0;
  len: usize = 0;
  kind: ErrorKind = ErrorKind.Permanent;
  message: string = "";
}

/** Success; with a writer, its bytes are the msgpack reply. */
export function ok(reply: Writer | null = null): Outcome {
  const o = new Outcome();
  if (reply !== null) {
    o.hasReply = true;
    o.ptr = reply.ptr;
    o.len = <usize>reply.length;
  }
  return o;
}

/** Success replying `bytes` as they are (they must be one msgpack value). */
export function okBytes(bytes: Uint8Array): Outcome {
  const o = new Outcome();
  o.hasReply = true;
  o.ptr = bytes.dataStart;
  o.len = <usize>bytes.length;
  return o;
}

/** Failure of `kind`; the message goes back to the sender. */
export function error(kind: ErrorKind, message: string): Outcome {
  const o = new Outcome();
  o.isError = true;
  o.kind = kind;
  o.message = message;
  return o;
}

/** A handler: a plain (non-closure) function. */
export type Handler = (cmd: Command) => Outcome;

/** One entry of the command table; make it with `command(...)`. */
export class CommandSpec {
  /** The name as UTF-8, made once at start so dispatch compares bytes. */
  nameUtf8: ArrayBuffer;
  constructor(public name: string, public roles: Role[], public handler: Handler, public budgetMs: u32) {
    this.nameUtf8 = utf8(name);
  }
}

/**
 * Declares a command: `[A-Za-z0-9_-]{1,64}` name, the roles that may call it
 * (the host refuses the others before the plugin runs), its handler and an
 * optional time budget per attempt in ms (0: the host's default).
 */
export function command(name: string, roles: Role[], handler: Handler, budgetMs: u32 = 0): CommandSpec {
  return new CommandSpec(name, roles, handler, budgetMs);
}

class PluginDef {
  constructor(public name: Uint8Array, public version: Uint8Array, public commands: CommandSpec[]) {}
}

let registered: PluginDef | null = null;

/**
 * Registers the plugin. Call it once, at the top level of the entry file:
 * top-level code runs when the module starts, before any export, so the
 * table is allocated below the arena mark and survives every call.
 */
export function plugin(name: string, version: string, commands: CommandSpec[]): void {
  if (registered !== null) unreachable(); // plugin() called twice
  registered = new PluginDef(Uint8Array.wrap(utf8(name)), Uint8Array.wrap(utf8(version)), commands);
}

// ---- the arena ----------------------------------------------------------------

// A zero-size block at the heap top as it was when the first export ran.
let mark: usize = 0;

function enter(): void {
  if (mark == 0) mark = heap.alloc(0);
}

// Rewinds the stub's bump offset to `mark`. The stub has no "set offset",
// but it frees the last block by moving its offset back to that block's
// start; so the mark block is stretched to end at the current offset and
// freed. Relies on the stub's block header (`mmInfo` = payload size, just
// before the pointer), which is why assemblyscript is pinned exactly.
function rewind(): void {
  if (mark == 0) return;
  const top = heap.alloc(0);
  const offset = top + load<usize>(top - BLOCK_OVERHEAD);
  store<usize>(mark - BLOCK_OVERHEAD, offset - mark);
  heap.free(mark);
  const again = heap.alloc(0);
  if (again != mark) unreachable(); // the runtime changed under us
}

// ---- exports (re-exported by the plugin's entry file) ------------------------

/** `cabi_realloc`: the host's allocator for arguments and kv-get values. */
export function cabi_realloc(oldPtr: usize, oldSize: usize, align: usize, newSize: usize): usize {
  enter();
  if (newSize == 0) return align; // a valid, empty allocation (what wit-bindgen returns)
  // The stub aligns blocks to 16; the canonical ABI never asks for more,
  // but over-allocate if it does rather than return a misaligned pointer.
  const extra: usize = align > 16 ? align : 0;
  let p = heap.alloc(newSize + extra);
  if (extra) p = (p + align - 1) & ~(align - 1);
  if (oldPtr != 0 && oldSize != 0) memory.copy(p, oldPtr, oldSize < newSize ? oldSize : newSize);
  return p;
}

/** `describe() -> plugin-info`: name, version and the command table. */
export function describe(): usize {
  enter();
  const def = registered;
  if (def === null) {
    log(Level.Error, "no plugin(...) call at the top level of the entry file");
    unreachable();
    return 0;
  }
  const cmds = def.commands;
  const n = cmds.length;
  const specs = heap.alloc(24 * <usize>max<i32>(n, 1));
  for (let i = 0; i < n; i++) {
    const c = cmds[i];
    const at = specs + <usize>(24 * i);
    const roles = heap.alloc(<usize>max<i32>(c.roles.length, 1));
    for (let r = 0; r < c.roles.length; r++) store<u8>(roles + <usize>r, <u8>c.roles[r]);
    store<u32>(at, <u32>addr(c.nameUtf8));
    store<u32>(at, <u32>c.nameUtf8.byteLength, 4);
    store<u32>(at, <u32>roles, 8);
    store<u32>(at, <u32>c.roles.length, 12);
    store<u32>(at, c.budgetMs > 0 ? 1 : 0, 16); // option<u32>: tag, then value at 20
    store<u32>(at, c.budgetMs, 20);
  }
  store<u32>(INFO, <u32>def.name.dataStart);
  store<u32>(INFO, <u32>def.name.length, 4);
  store<u32>(INFO, <u32>def.version.dataStart, 8);
  store<u32>(INFO, <u32>def.version.length, 12);
  store<u32>(INFO, <u32>specs, 16);
  store<u32>(INFO, <u32>n, 20);
  return INFO;
}

export function cabi_post_describe(_ret: usize): void {
  rewind();
}

/** `handle(command) -> result<option<list<u8>>, handler-error>`. */
export function handle(
  idPtr: usize, idLen: usize, namePtr: usize, nameLen: usize,
  payloadPtr: usize, payloadLen: usize, attempt: u32, role: u32,
): usize {
  enter();
  const def = registered;
  let out: Outcome;
  if (def === null) {
    out = error(ErrorKind.Permanent, "plugin not registered");
  } else {
    let spec: CommandSpec | null = null;
    const cmds = def.commands;
    for (let i = 0; i < cmds.length; i++) {
      const c = cmds[i];
      if (<usize>c.nameUtf8.byteLength == nameLen && memory.compare(addr(c.nameUtf8), namePtr, nameLen) == 0) {
        spec = c;
        break;
      }
    }
    const name = String.UTF8.decodeUnsafe(namePtr, nameLen);
    if (spec === null) {
      // The host's registry answers unknown commands before a plugin runs;
      // this is only reached by a host that skipped it.
      out = error(ErrorKind.Permanent, "unknown command " + name);
    } else {
      const payload = new Uint8Array(<i32>payloadLen);
      memory.copy(payload.dataStart, payloadPtr, payloadLen);
      const cmd = new Command(String.UTF8.decodeUnsafe(idPtr, idLen), name, payload, attempt, <Role>role);
      const h = spec.handler;
      out = h(cmd);
    }
  }
  if (out.isError) {
    const m = utf8(out.message);
    store<u32>(HANDLE_RET, 1);            // err (the tag is one byte; 0s pad it)
    store<u32>(HANDLE_RET, <u32>out.kind, 4);
    store<u32>(HANDLE_RET, <u32>addr(m), 8);
    store<u32>(HANDLE_RET, <u32>m.byteLength, 12);
  } else {
    store<u32>(HANDLE_RET, 0);            // ok
    store<u32>(HANDLE_RET, out.hasReply ? 1 : 0, 4);
    store<u32>(HANDLE_RET, <u32>out.ptr, 8);
    store<u32>(HANDLE_RET, <u32>out.len, 12);
  }
  return HANDLE_RET;
}

export function cabi_post_handle(_ret: usize): void {
  rewind();
}

/**
 * The `abort` every module links to (`--use abort=...`): the host offers no
 * `env.abort`. It must not call the host: abort is reachable from the start
 * function (an allocation can fail there), and the host refuses modules whose
 * start function can reach an import.
 */
export function relayAbort(message: string | null, fileName: string | null, line: u32, column: u32): void {
  unreachable();
}
