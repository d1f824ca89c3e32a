//! Relay guest kit for Zig: write a command-handler plugin as one core wasm
//! module speaking the canonical ABI of `wit/relay-plugin.wit` (the layout
//! wit-bindgen emits for wasm32), without wit-bindgen.
//!
//! A plugin's root file declares
//!
//!     pub const plugin = relay.Plugin{ .name = "x", .version = "1.0.0",
//!         .commands = &.{ relay.command("echo", .{}, echo) } };
//!     comptime { relay.exportPlugin(plugin); }
//!
//! and `exportPlugin` exports `describe`, `handle`, the post-returns and
//! `cabi_realloc` for it (nothing else: the host refuses unknown imports and
//! the build exports only these names). Guide: `docs/lang-zig.md`.
//!
//! The contract, compared line by line with the host's table
//! (`host/core/src/engine/module/world.rs`) by a Rust test:
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

const std = @import("std");
pub const msgpack = @import("msgpack.zig");

// ---------------------------------------------------------------- types

/// Who sent a command (from the MQTT topic, never from the payload).
pub const Role = enum(u8) { admin = 0, primary = 1, secondary = 2 };
pub const all_roles: []const Role = &.{ .admin, .primary, .secondary };

/// Why a handler failed. The host retries only `transient`.
pub const ErrorKind = enum(u8) { transient = 0, invalid_argument = 1, out_of_bounds = 2, permanent = 3 };

pub const LogLevel = enum(u32) { trace = 0, debug = 1, info = 2, warn = 3, err = 4 };

/// One delivery of a command. The slices live in the call's arena: valid
/// until the handler returns, so copy what must outlive the call (to kv).
pub const Command = struct {
    id: []const u8,
    name: []const u8,
    /// msgpack bytes; empty when the command had no payload.
    payload: []const u8,
    /// 1 for the first attempt, counting up on retries.
    attempt: u32,
    role: Role,
};

/// What a handler returns: `ok()`, `reply(bytes)` or `fail(kind, msg)`.
pub const Result = union(enum) {
    ok,
    /// msgpack bytes (the host checks them against its reply limit, 256 KiB).
    reply: []const u8,
    err: struct { kind: ErrorKind, message: []const u8 },
};

pub fn ok() Result {
    return .ok;
}
pub fn reply(bytes: []const u8) Result {
    return .{ .reply = bytes };
}
pub fn fail(kind: ErrorKind, message: []const u8) Result {
    return .{ .err = .{ .kind = kind, .message = message } };
}
/// `fail` with a formatted message (in the arena; falls back to the format
/// string itself if the arena is exhausted).
pub fn failf(kind: ErrorKind, comptime fmt: []const u8, args: anytype) Result {
    const msg = std.fmt.allocPrint(allocator(), fmt, args) catch fmt;
    return fail(kind, msg);
}

/// The uniform handler the dispatcher calls; `command` adapts the author's.
pub const Handler = *const fn (cmd: *const Command) Result;

pub const Spec = struct {
    /// `[A-Za-z0-9_-]`, 1..64 chars.
    name: []const u8,
    roles: []const Role = all_roles,
    /// CPU/time budget of one attempt, in ms; null = the host's default.
    budget_ms: ?u32 = null,
    handler: Handler,
};

pub const Options = struct {
    roles: []const Role = all_roles,
    budget_ms: ?u32 = null,
};

/// A command table entry from a handler `fn (*const Command) R`, where R is
/// `Result` or `E!Result`. With an error union, handlers can `try`: msgpack
/// errors become `invalid-argument`, `OutOfMemory` `transient`, anything
/// else `permanent`, each with the error's name as the message.
pub fn command(comptime name: []const u8, comptime opts: Options, comptime handler: anytype) Spec {
    const R = @typeInfo(@TypeOf(handler)).@"fn".return_type.?;
    const Wrap = struct {
        fn call(cmd: *const Command) Result {
            if (@typeInfo(R) != .error_union) return handler(cmd);
            return handler(cmd) catch |e| fromError(e);
        }
    };
    return .{ .name = name, .roles = opts.roles, .budget_ms = opts.budget_ms, .handler = &Wrap.call };
}

pub fn fromError(e: anyerror) Result {
    const kind: ErrorKind = if (e == error.OutOfMemory)
        .transient
    else if (isMsgpackError(e))
        .invalid_argument
    else
        .permanent;
    return failf(kind, "invalid payload: {s}", .{@errorName(e)});
}

fn isMsgpackError(e: anyerror) bool {
    inline for (@typeInfo(msgpack.Error).error_set.error_names.?) |m| {
        if (e == @field(anyerror, m)) return true;
    }
    return false;
}

pub const Plugin = struct {
    /// The name the plugin is loaded by (`[A-Za-z0-9_-]`, 1..64 chars).
    name: []const u8,
    /// Semver, e.g. `1.2.0`.
    version: []const u8,
    commands: []const Spec,
};

// ------------------------------------------------------- host capabilities

const host_module = "relay:plugin/host@0.1.0";

/// Return areas the host writes results into (layouts: wasmi/abi.rs header).
const KvGetRet = extern struct { tag: u8, _pad: [3]u8 = undefined, ptr: [*]u8, len: usize };
const KvSetRet = extern struct { tag: u8, err: u8 };

const host = struct {
    extern "relay:plugin/host@0.1.0" fn log(level: u32, ptr: [*]const u8, len: usize) void;
    extern "relay:plugin/host@0.1.0" fn @"kv-get"(kp: [*]const u8, kl: usize, ret: *KvGetRet) void;
    extern "relay:plugin/host@0.1.0" fn @"kv-set"(kp: [*]const u8, kl: usize, vp: [*]const u8, vl: usize, ret: *KvSetRet) void;
    extern "relay:plugin/host@0.1.0" fn @"kv-delete"(kp: [*]const u8, kl: usize) void;
    extern "relay:plugin/host@0.1.0" fn @"now-ms"() u64;
    extern "relay:plugin/host@0.1.0" fn emit(np: [*]const u8, nl: usize, pp: [*]const u8, pl: usize) void;
};

/// A structured log line (the host caps line length and lines per call).
pub fn log(level: LogLevel, message: []const u8) void {
    host.log(@backingInt(level), message.ptr, message.len);
}
pub fn logf(level: LogLevel, comptime fmt: []const u8, args: anytype) void {
    log(level, std.fmt.allocPrint(allocator(), fmt, args) catch fmt);
}

/// The value under `key` in the plugin's persistent store, or null. The
/// bytes are in the call's arena (the host allocates them via cabi_realloc).
pub fn kvGet(key: []const u8) ?[]const u8 {
    var ret: KvGetRet = undefined;
    host.@"kv-get"(key.ptr, key.len, &ret);
    return if (ret.tag == 1) ret.ptr[0..ret.len] else null;
}

pub const KvError = error{
    /// Key or value exceeds the per-entry limit.
    TooLarge,
    /// The plugin's total store quota would be exceeded.
    QuotaExceeded,
};

pub fn kvSet(key: []const u8, value: []const u8) KvError!void {
    var ret: KvSetRet = undefined;
    host.@"kv-set"(key.ptr, key.len, value.ptr, value.len, &ret);
    if (ret.tag == 0) return;
    return if (ret.err == 0) error.TooLarge else error.QuotaExceeded;
}

pub fn kvDelete(key: []const u8) void {
    host.@"kv-delete"(key.ptr, key.len);
}

/// Wall-clock time, unix milliseconds.
pub fn nowMs() u64 {
    return host.@"now-ms"();
}

/// Ask the host to publish an event (msgpack payload) after the call.
pub fn emit(name: []const u8, payload: []const u8) void {
    host.emit(name.ptr, name.len, payload.ptr, payload.len);
}

// ------------------------------------------------------------------ arena

/// One bump arena for everything a call allocates: the host's copies of the
/// arguments (via cabi_realloc), kv-get values, replies. It is reset when
/// the host is done with a call's result (cabi_post_handle), so no handler
/// frees anything. It lives above the module's initial memory (stack and
/// data are below), growing linear memory a page at a time; wasm memory
/// never shrinks, so the pages are reused by the next call.
const Arena = struct {
    var base: usize = 0; // 0 until first use
    var top: usize = 0;
    var last: usize = 0; // start of the most recent allocation

    const page = 65536;

    fn init() void {
        if (base == 0) {
            base = @wasmMemorySize(0) * page;
            top = base;
            last = base;
        }
    }
    fn reset() void {
        init();
        top = base;
        last = base;
    }
    /// Makes `[0, end)` addressable. False when the host refuses to grow
    /// memory (the default limit is 16 MiB).
    fn ensure(end: usize) bool {
        const have = @wasmMemorySize(0) * page;
        if (end <= have) return true;
        const pages = (end - have + page - 1) / page;
        return @wasmMemoryGrow(0, pages) != -1;
    }
    fn alloc(len: usize, alignment: usize) ?[*]u8 {
        init();
        const p = std.mem.alignForward(usize, top, alignment);
        const end = std.math.add(usize, p, len) catch return null;
        if (!ensure(end)) return null;
        last = p;
        top = end;
        return @ptrFromInt(p);
    }
    /// In place when `p` is the most recent allocation.
    fn resize(p: usize, new_len: usize) bool {
        if (p != last) return false;
        const end = std.math.add(usize, p, new_len) catch return false;
        if (!ensure(end)) return false;
        top = end;
        return true;
    }

    const vtable = std.mem.Allocator.VTable{
        .alloc = vAlloc,
        .resize = vResize,
        .remap = vRemap,
        .free = vFree,
    };
    fn vAlloc(_: *anyopaque, len: usize, a: std.mem.Alignment, _: usize) ?[*]u8 {
        return alloc(len, a.toByteUnits());
    }
    fn vResize(_: *anyopaque, m: []u8, _: std.mem.Alignment, new_len: usize, _: usize) bool {
        return resize(@intFromPtr(m.ptr), new_len) or new_len <= m.len;
    }
    fn vRemap(ctx: *anyopaque, m: []u8, a: std.mem.Alignment, new_len: usize, r: usize) ?[*]u8 {
        return if (vResize(ctx, m, a, new_len, r)) m.ptr else null;
    }
    fn vFree(_: *anyopaque, m: []u8, _: std.mem.Alignment, _: usize) void {
        // Only the most recent allocation can be given back.
        if (@intFromPtr(m.ptr) == last and last + m.len == top) top = last;
    }
};

/// The per-call arena as a `std.mem.Allocator`. Everything allocated from it
/// is released after the host has read the call's result: never keep
/// pointers into it across calls.
pub fn allocator() std.mem.Allocator {
    return .{ .ptr = undefined, .vtable = &Arena.vtable };
}

/// A msgpack writer over the call's arena; `reply(w.bytes())` when done.
pub fn writer() msgpack.Writer {
    return msgpack.Writer.init(allocator());
}

// ---------------------------------------------------------- ABI exports

fn cabiRealloc(old: ?[*]u8, old_size: usize, alignment: usize, new_size: usize) callconv(.c) ?[*]u8 {
    // The canonical ABI's rule for empty lists: any non-null, aligned
    // pointer; the host checks alignment, so return the alignment itself.
    if (new_size == 0) return @ptrFromInt(alignment);
    if (old) |o| {
        if (Arena.resize(@intFromPtr(o), new_size)) return o;
    }
    // Realloc must keep the contents when it moves; a failure to grow is a
    // trap, as in wit-bindgen's allocator (the host then reports it).
    const p = Arena.alloc(new_size, alignment) orelse @trap();
    if (old) |o| @memcpy(p[0..@min(old_size, new_size)], o[0..@min(old_size, new_size)]);
    return p;
}

const Str = extern struct { ptr: [*]const u8, len: usize };
/// `command-spec`: size 24, align 4.
const SpecAbi = extern struct { name: Str, roles: Str, budget_tag: u8, budget: u32 };
/// `plugin-info`: size 24, align 4.
const InfoAbi = extern struct { name: Str, version: Str, commands: [*]const SpecAbi, count: usize };
/// `handle`'s return area: size 16, align 4 (the same slots serve ok and err).
/// `sub` is the option tag for ok, the error-kind for err.
const HandleRet = extern struct { tag: u8, _p0: [3]u8 = .{ 0, 0, 0 }, sub: u8, _p1: [3]u8 = .{ 0, 0, 0 }, ptr: [*]const u8, len: usize };

comptime {
    std.debug.assert(@sizeOf(SpecAbi) == 24 and @offsetOf(SpecAbi, "budget_tag") == 16 and @offsetOf(SpecAbi, "budget") == 20);
    std.debug.assert(@sizeOf(InfoAbi) == 24 and @sizeOf(HandleRet) == 16 and @sizeOf(KvGetRet) == 12);
}

fn str(comptime s: []const u8) Str {
    return .{ .ptr = s.ptr, .len = s.len };
}

fn checkName(comptime what: []const u8, comptime n: []const u8) void {
    if (n.len == 0 or n.len > 64) @compileError(what ++ " '" ++ n ++ "' must be 1..64 chars");
    for (n) |c| switch (c) {
        'A'...'Z', 'a'...'z', '0'...'9', '_', '-' => {},
        else => @compileError(what ++ " '" ++ n ++ "' may contain only [A-Za-z0-9_-]"),
    };
}

/// The plugin this module exports, checked at compile time so a bad table
/// is a build error rather than a load failure on a device.
fn Exports(comptime p: Plugin) type {
    checkName("plugin name", p.name);
    if (p.version.len == 0) @compileError("plugin version is empty");
    if (p.commands.len == 0) @compileError("a plugin needs at least one command");
    for (p.commands, 0..) |c, i| {
        checkName("command name", c.name);
        if (c.roles.len == 0) @compileError("command '" ++ c.name ++ "' allows no role");
        for (p.commands[0..i]) |d| {
            if (std.mem.eql(u8, c.name, d.name)) @compileError("duplicate command '" ++ c.name ++ "'");
        }
    }
    return struct {
        const specs = blk: {
            var out: [p.commands.len]SpecAbi = undefined;
            for (p.commands, &out) |c, *o| {
                var roles: [c.roles.len]u8 = undefined;
                for (c.roles, &roles) |r, *b| b.* = @backingInt(r);
                const frozen = roles;
                o.* = .{
                    .name = str(c.name),
                    .roles = str(&frozen),
                    .budget_tag = if (c.budget_ms == null) 0 else 1,
                    .budget = c.budget_ms orelse 0,
                };
            }
            break :blk out;
        };
        const info = InfoAbi{ .name = str(p.name), .version = str(p.version), .commands = &specs, .count = specs.len };
        var ret: HandleRet = undefined;

        fn describe() callconv(.c) *const InfoAbi {
            return &info; // static data: nothing to free
        }
        fn postDescribe(_: u32) callconv(.c) void {}
        // The host has copied the result out: everything of this call goes.
        // (After a failed call the host starts a fresh instance instead.)
        fn postHandle(_: u32) callconv(.c) void {
            Arena.reset();
        }

        fn handle(
            id: [*]const u8,
            id_len: usize,
            name: [*]const u8,
            name_len: usize,
            payload: [*]const u8,
            payload_len: usize,
            attempt: u32,
            role: u32,
        ) callconv(.c) *HandleRet {
            const cmd = Command{
                .id = id[0..id_len],
                .name = name[0..name_len],
                .payload = payload[0..payload_len],
                .attempt = attempt,
                // The host only sends 0..2; anything else is its bug, not ours.
                .role = std.enums.fromInt(Role, role) orelse .secondary,
            };
            const r = dispatch(&cmd);
            switch (r) {
                .ok => ret = .{ .tag = 0, .sub = 0, .ptr = @ptrFromInt(1), .len = 0 },
                .reply => |b| ret = .{ .tag = 0, .sub = 1, .ptr = nonNull(b), .len = b.len },
                .err => |e| ret = .{ .tag = 1, .sub = @backingInt(e.kind), .ptr = nonNull(e.message), .len = e.message.len },
            }
            return &ret;
        }

        fn dispatch(cmd: *const Command) Result {
            // The registry already refused unknown names and roles; checking
            // again costs little and keeps a misrouted call harmless.
            inline for (p.commands) |c| {
                if (std.mem.eql(u8, cmd.name, c.name)) {
                    if (std.mem.indexOfScalar(Role, c.roles, cmd.role) == null)
                        return fail(.permanent, "role not permitted");
                    return c.handler(cmd);
                }
            }
            return fail(.permanent, "unknown command");
        }
    };
}

/// An empty slice's pointer may be anything; the host wants it in bounds.
fn nonNull(b: []const u8) [*]const u8 {
    return if (b.len == 0) @ptrFromInt(1) else b.ptr;
}

/// Exports `plugin` as this module's describe/handle/post-returns/realloc.
/// Call it once, from a `comptime` block of the plugin's root file:
///
///     comptime { relay.exportPlugin(plugin); }
///
/// (Zig analyses an imported file's own `comptime` blocks only on demand, so
/// the kit cannot reliably export by itself; this line is the demand.)
pub fn exportPlugin(comptime p: Plugin) void {
    const E = Exports(p);
    @export(&E.describe, .{ .name = "describe" });
    @export(&E.handle, .{ .name = "handle" });
    @export(&E.postDescribe, .{ .name = "cabi_post_describe" });
    @export(&E.postHandle, .{ .name = "cabi_post_handle" });
    @export(&cabiRealloc, .{ .name = "cabi_realloc" });
}
