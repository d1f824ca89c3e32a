//! fwinfo-zig: firmware helpers (CRC-32 of a blob, build info, a device
//! label kept in kv) plus the conformance commands every guest language
//! implements (`plugins/conformance/README.md`), written with the Zig kit.
//! Built by `build.sh`; scenarios in `scenarios/` and `plugins/conformance`.

const std = @import("std");
const builtin = @import("builtin");
const relay = @import("relay");
const mp = relay.msgpack;

pub const plugin = relay.Plugin{
    .name = "fwinfo-zig",
    .version = "1.0.0",
    .commands = &.{
        relay.command("checksum", .{ .budget_ms = 2000 }, checksum),
        relay.command("fw_info", .{}, fwInfo),
        relay.command("set_label", .{ .roles = &.{.admin} }, setLabel),
        relay.command("label", .{}, label),
        // conformance
        relay.command("echo", .{}, echo),
        relay.command("check", .{}, check),
        relay.command("fill", .{}, fill),
        relay.command("store", .{ .roles = &.{.admin} }, store),
        relay.command("load", .{}, load),
        relay.command("emit", .{}, emitPing),
        relay.command("now", .{}, now),
    },
};

comptime {
    relay.exportPlugin(plugin);
}

// ------------------------------------------------------------- domain

/// Largest blob `checksum` accepts: firmware chunks, not whole images.
const max_checksum_bytes = 65536;

/// `{"data": bin}` -> `{"crc32": <IEEE CRC-32, as zlib.crc32>, "len": n}`.
fn checksum(cmd: *const relay.Command) !relay.Result {
    const m = mp.decodeMap(cmd.payload) catch return relay.fail(.invalid_argument, "payload must be a map {\"data\": bin}");
    const v = (try m.get("data")) orelse return relay.fail(.invalid_argument, "missing \"data\"");
    const data = v.asBin() orelse return relay.fail(.invalid_argument, "\"data\" must be bin");
    if (data.len > max_checksum_bytes)
        return relay.failf(.out_of_bounds, "data is {d} bytes, over {d}", .{ data.len, max_checksum_bytes });
    var w = relay.writer();
    try w.mapHeader(2);
    try w.str("crc32");
    try w.uint(std.hash.Crc32.hash(data));
    try w.str("len");
    try w.uint(data.len);
    return relay.reply(w.bytes());
}

fn fwInfo(_: *const relay.Command) !relay.Result {
    var w = relay.writer();
    try w.mapHeader(3);
    try w.str("name");
    try w.str(plugin.name);
    try w.str("version");
    try w.str(plugin.version);
    try w.str("zig");
    // The compiler that built this module, not a hard-coded string.
    try w.str(builtin.zig_version_string);
    return relay.reply(w.bytes());
}

const label_key = "label";

/// `{"label": string of 1..32 bytes, UTF-8}`, kept in kv as a msgpack str
/// so `label` can reply the stored bytes as they are.
fn setLabel(cmd: *const relay.Command) !relay.Result {
    const m = mp.decodeMap(cmd.payload) catch return relay.fail(.invalid_argument, "payload must be a map {\"label\": string}");
    const v = (try m.get("label")) orelse return relay.fail(.invalid_argument, "missing \"label\"");
    const s = v.asStr() orelse return relay.fail(.invalid_argument, "\"label\" must be a string");
    if (!std.unicode.utf8ValidateSlice(s)) return relay.fail(.invalid_argument, "\"label\" is not UTF-8");
    if (s.len < 1 or s.len > 32) return relay.failf(.out_of_bounds, "label is {d} bytes, must be 1..32", .{s.len});
    var w = relay.writer();
    try w.str(s);
    relay.kvSet(label_key, w.bytes()) catch |e| return relay.failf(.transient, "kv refused: {s}", .{@errorName(e)});
    return relay.ok();
}

fn label(_: *const relay.Command) relay.Result {
    const stored = relay.kvGet(label_key) orelse return relay.fail(.permanent, "no label");
    return relay.reply(stored);
}

// -------------------------------------------------------- conformance

fn echo(cmd: *const relay.Command) relay.Result {
    return if (cmd.payload.len == 0) relay.ok() else relay.reply(cmd.payload);
}

/// `{"value": 0..=100}` back with `"ok": true`.
fn check(cmd: *const relay.Command) !relay.Result {
    const m = mp.decodeMap(cmd.payload) catch return relay.fail(.invalid_argument, "payload must be a map {\"value\": integer}");
    const v = (try m.get("value")) orelse return relay.fail(.invalid_argument, "missing \"value\"");
    // Two encodings of integers: a huge uint is simply out of bounds.
    const in_range = switch (v) {
        .int => |i| i >= 0 and i <= 100,
        .uint => |u| u <= 100,
        else => return relay.fail(.invalid_argument, "\"value\" must be an integer"),
    };
    if (!in_range) return relay.fail(.out_of_bounds, "value is outside 0..=100");
    var w = relay.writer();
    try w.mapHeader(2);
    try w.str("value");
    try w.uint(v.asUint().?);
    try w.str("ok");
    try w.boolean(true);
    return relay.reply(w.bytes());
}

const max_fill = 1_000_000;

/// A msgpack bin of `bytes` bytes of 0x2a. Over 256 KiB the host refuses
/// the reply (`too_large`): that limit is the host's to enforce.
fn fill(cmd: *const relay.Command) !relay.Result {
    const m = mp.decodeMap(cmd.payload) catch return relay.fail(.invalid_argument, "payload must be a map {\"bytes\": n}");
    const v = (try m.get("bytes")) orelse return relay.fail(.invalid_argument, "missing \"bytes\"");
    const n = v.asUint() orelse return relay.fail(.invalid_argument, "\"bytes\" must be a non-negative integer");
    if (n > max_fill) return relay.failf(.out_of_bounds, "{d} bytes is over {d}", .{ n, max_fill });
    var w = relay.writer();
    @memset(try w.binUninit(@intCast(n)), 0x2a);
    return relay.reply(w.bytes());
}

fn store(cmd: *const relay.Command) relay.Result {
    relay.kvSet("slot", cmd.payload) catch |e| return relay.failf(.transient, "kv refused: {s}", .{@errorName(e)});
    return relay.ok();
}

fn load(_: *const relay.Command) relay.Result {
    return relay.reply(relay.kvGet("slot") orelse return relay.fail(.permanent, "empty"));
}

fn emitPing(cmd: *const relay.Command) relay.Result {
    relay.emit("ping", cmd.payload);
    relay.log(.info, "emitted");
    return relay.ok();
}

fn now(_: *const relay.Command) !relay.Result {
    var w = relay.writer();
    try w.mapHeader(1);
    try w.str("now_ms");
    try w.uint(relay.nowMs());
    return relay.reply(w.bytes());
}
