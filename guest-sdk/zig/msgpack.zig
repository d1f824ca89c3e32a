//! msgpack for Relay plugins: a zero-copy, bounds-checked reader and a small
//! writer. Payloads come from the network, so every malformed input is an
//! error value (`Error`), never a trap or an out-of-bounds read: a plugin that
//! traps on garbage is restarted by the host, one that returns
//! `invalid-argument` is not.
//!
//! This file does not depend on the rest of the kit (nor on wasm), so
//! `zig test msgpack.zig` runs its tests natively.

const std = @import("std");

pub const Error = error{
    /// The input ends inside a value.
    Truncated,
    /// The reserved byte 0xc1.
    Invalid,
    /// Arrays/maps nested deeper than `max_depth`.
    TooDeep,
    /// `decode` found bytes after the one value.
    TrailingBytes,
    /// A typed accessor (`expectUint`, `expectMap`, ...) met another type.
    WrongType,
    /// `Map.require` found no such key.
    MissingField,
};

/// Nesting bound of `skip`, the same as the host's msgpack decoder, so the
/// plugin never accepts what the host would call garbage.
pub const max_depth = 128;

pub const Value = union(enum) {
    nil,
    boolean: bool,
    /// Signed encodings (negative fixint, int 8..64).
    int: i64,
    /// Unsigned encodings (positive fixint, uint 8..64).
    uint: u64,
    float: f64,
    str: []const u8,
    bin: []const u8,
    array: Array,
    map: Map,
    ext: struct { type: i8, data: []const u8 },

    /// Any integer that fits i64 (whichever encoding the sender picked).
    pub fn asInt(v: Value) ?i64 {
        return switch (v) {
            .int => |i| i,
            .uint => |u| if (u <= std.math.maxInt(i64)) @intCast(u) else null,
            else => null,
        };
    }
    /// Any non-negative integer.
    pub fn asUint(v: Value) ?u64 {
        return switch (v) {
            .uint => |u| u,
            .int => |i| if (i >= 0) @intCast(i) else null,
            else => null,
        };
    }
    pub fn asFloat(v: Value) ?f64 {
        return if (v == .float) v.float else null;
    }
    pub fn asBool(v: Value) ?bool {
        return if (v == .boolean) v.boolean else null;
    }
    pub fn asStr(v: Value) ?[]const u8 {
        return if (v == .str) v.str else null;
    }
    pub fn asBin(v: Value) ?[]const u8 {
        return if (v == .bin) v.bin else null;
    }
    pub fn isNil(v: Value) bool {
        return v == .nil;
    }

    // The `expect*` forms return `error.WrongType`, for handlers that `try`
    // (the kit turns msgpack errors into `invalid-argument`).
    pub fn expectInt(v: Value) Error!i64 {
        return v.asInt() orelse error.WrongType;
    }
    pub fn expectUint(v: Value) Error!u64 {
        return v.asUint() orelse error.WrongType;
    }
    pub fn expectStr(v: Value) Error![]const u8 {
        return v.asStr() orelse error.WrongType;
    }
    pub fn expectBin(v: Value) Error![]const u8 {
        return v.asBin() orelse error.WrongType;
    }
    pub fn expectBool(v: Value) Error!bool {
        return v.asBool() orelse error.WrongType;
    }
    pub fn expectMap(v: Value) Error!Map {
        return if (v == .map) v.map else error.WrongType;
    }
    pub fn expectArray(v: Value) Error!Array {
        return if (v == .array) v.array else error.WrongType;
    }
};

/// An array's elements, already validated by `skip` when it was read.
pub const Array = struct {
    len: u32,
    /// Exactly the encoded elements.
    body: []const u8,

    pub fn iterator(a: Array) Iterator {
        return .{ .r = .{ .buf = a.body }, .left = a.len };
    }
    pub const Iterator = struct {
        r: Reader,
        left: u32,
        pub fn next(it: *Iterator) Error!?Value {
            if (it.left == 0) return null;
            it.left -= 1;
            return try it.r.read();
        }
    };
};

/// A map's entries, already validated by `skip` when it was read.
pub const Map = struct {
    len: u32,
    /// Exactly the encoded key/value pairs.
    body: []const u8,

    pub const Entry = struct { key: Value, value: Value };

    /// The value under the string key `key`, or null. Other keys (of any
    /// type) are skipped; the first match wins, as in most decoders.
    pub fn get(m: Map, key: []const u8) Error!?Value {
        var r = Reader{ .buf = m.body };
        var i: u32 = 0;
        while (i < m.len) : (i += 1) {
            const k = try r.read();
            if (k == .str and std.mem.eql(u8, k.str, key)) return try r.read();
            try r.skip();
        }
        return null;
    }
    pub fn require(m: Map, key: []const u8) Error!Value {
        return (try m.get(key)) orelse error.MissingField;
    }
    pub fn iterator(m: Map) Iterator {
        return .{ .r = .{ .buf = m.body }, .left = m.len };
    }
    pub const Iterator = struct {
        r: Reader,
        left: u32,
        pub fn next(it: *Iterator) Error!?Entry {
            if (it.left == 0) return null;
            it.left -= 1;
            const k = try it.r.read();
            return .{ .key = k, .value = try it.r.read() };
        }
    };
};

/// Decodes `bytes` as exactly one msgpack value (trailing bytes are an
/// error: the host's decoder treats such input as garbage, so do we).
pub fn decode(bytes: []const u8) Error!Value {
    var r = Reader{ .buf = bytes };
    const v = try r.read();
    if (r.pos != bytes.len) return error.TrailingBytes;
    return v;
}

/// Decodes a payload that must be a map (the common case for commands).
pub fn decodeMap(bytes: []const u8) Error!Map {
    return (try decode(bytes)).expectMap();
}

pub const Reader = struct {
    buf: []const u8,
    pos: usize = 0,

    fn take(r: *Reader, n: usize) Error![]const u8 {
        // `n` may come from a 32-bit length field: compare without adding.
        if (n > r.buf.len - r.pos) return error.Truncated;
        const s = r.buf[r.pos .. r.pos + n];
        r.pos += n;
        return s;
    }
    fn be(r: *Reader, comptime T: type) Error!T {
        const s = try r.take(@sizeOf(T));
        var x: u64 = 0;
        for (s) |b| x = (x << 8) | b;
        const U = @Int(.unsigned, @bitSizeOf(T));
        return @bitCast(@as(U, @truncate(x)));
    }

    const Header = union(enum) { scalar: Value, array: u32, map: u32 };

    /// One value's header; containers report their element count and leave
    /// the reader at their first element.
    fn header(r: *Reader) Error!Header {
        const b = (try r.take(1))[0];
        const s = struct {
            fn v(x: Value) Header {
                return .{ .scalar = x };
            }
        }.v;
        return switch (b) {
            0x00...0x7f => s(.{ .uint = b }),
            0x80...0x8f => .{ .map = b & 0x0f },
            0x90...0x9f => .{ .array = b & 0x0f },
            0xa0...0xbf => s(.{ .str = try r.take(b & 0x1f) }),
            0xc0 => s(.nil),
            0xc1 => error.Invalid,
            0xc2, 0xc3 => s(.{ .boolean = b == 0xc3 }),
            0xc4 => s(.{ .bin = try r.take(try r.be(u8)) }),
            0xc5 => s(.{ .bin = try r.take(try r.be(u16)) }),
            0xc6 => s(.{ .bin = try r.take(try r.be(u32)) }),
            0xc7, 0xc8, 0xc9 => blk: {
                const n: u32 = switch (b) {
                    0xc7 => try r.be(u8),
                    0xc8 => try r.be(u16),
                    else => try r.be(u32),
                };
                const t = try r.be(i8);
                break :blk s(.{ .ext = .{ .type = t, .data = try r.take(n) } });
            },
            0xca => s(.{ .float = @as(f32, @bitCast(try r.be(u32))) }),
            0xcb => s(.{ .float = @bitCast(try r.be(u64)) }),
            0xcc => s(.{ .uint = try r.be(u8) }),
            0xcd => s(.{ .uint = try r.be(u16) }),
            0xce => s(.{ .uint = try r.be(u32) }),
            0xcf => s(.{ .uint = try r.be(u64) }),
            0xd0 => s(.{ .int = try r.be(i8) }),
            0xd1 => s(.{ .int = try r.be(i16) }),
            0xd2 => s(.{ .int = try r.be(i32) }),
            0xd3 => s(.{ .int = try r.be(i64) }),
            0xd4, 0xd5, 0xd6, 0xd7, 0xd8 => blk: {
                const n = @as(usize, 1) << @intCast(b - 0xd4);
                const t = try r.be(i8);
                break :blk s(.{ .ext = .{ .type = t, .data = try r.take(n) } });
            },
            0xd9 => s(.{ .str = try r.take(try r.be(u8)) }),
            0xda => s(.{ .str = try r.take(try r.be(u16)) }),
            0xdb => s(.{ .str = try r.take(try r.be(u32)) }),
            0xdc => .{ .array = try r.be(u16) },
            0xdd => .{ .array = try r.be(u32) },
            0xde => .{ .map = try r.be(u16) },
            0xdf => .{ .map = try r.be(u32) },
            0xe0...0xff => s(.{ .int = @as(i8, @bitCast(b)) }),
        };
    }

    /// Reads one value. A container is skipped over (validating everything
    /// inside it) and returned as a view of its body.
    pub fn read(r: *Reader) Error!Value {
        const start = r.pos;
        switch (try r.header()) {
            .scalar => |v| return v,
            .array => |n| {
                const body = r.pos;
                r.pos = start;
                try r.skip();
                return .{ .array = .{ .len = n, .body = r.buf[body..r.pos] } };
            },
            .map => |n| {
                const body = r.pos;
                r.pos = start;
                try r.skip();
                return .{ .map = .{ .len = n, .body = r.buf[body..r.pos] } };
            },
        }
    }

    /// Moves past one whole value. Iterative with an explicit, bounded stack
    /// of "items left" counters, so hostile nesting costs no wasm stack.
    pub fn skip(r: *Reader) Error!void {
        var left: [max_depth + 1]u64 = undefined;
        var depth: usize = 0;
        left[0] = 1;
        while (true) {
            while (left[depth] == 0) {
                if (depth == 0) return;
                depth -= 1;
            }
            left[depth] -= 1;
            const items: u64 = switch (try r.header()) {
                .scalar => continue,
                .array => |n| n,
                .map => |n| @as(u64, n) * 2,
            };
            if (depth == max_depth) return error.TooDeep;
            depth += 1;
            left[depth] = items;
        }
    }
};

/// Appends msgpack to a buffer from any `std.mem.Allocator` (in a plugin,
/// `relay.allocator()`, the per-call arena). Integers and lengths use the
/// smallest encoding, like the host's encoder.
pub const Writer = struct {
    gpa: std.mem.Allocator,
    buf: []u8 = &.{},
    len: usize = 0,

    pub const WriteError = error{OutOfMemory};

    pub fn init(gpa: std.mem.Allocator) Writer {
        return .{ .gpa = gpa };
    }
    /// The bytes written so far (valid until the next write or `deinit`).
    pub fn bytes(w: *const Writer) []const u8 {
        return w.buf[0..w.len];
    }
    pub fn deinit(w: *Writer) void {
        w.gpa.free(w.buf);
        w.* = .{ .gpa = w.gpa };
    }

    fn reserve(w: *Writer, n: usize) WriteError![]u8 {
        const need = std.math.add(usize, w.len, n) catch return error.OutOfMemory;
        if (need > w.buf.len) {
            const cap = @max(need, w.buf.len * 2, 64);
            w.buf = try w.gpa.realloc(w.buf, cap);
        }
        defer w.len = need;
        return w.buf[w.len..need];
    }
    fn byte(w: *Writer, b: u8) WriteError!void {
        (try w.reserve(1))[0] = b;
    }
    fn be(w: *Writer, comptime T: type, x: T) WriteError!void {
        const U = @Int(.unsigned, @bitSizeOf(T));
        const u: U = @bitCast(x);
        const out = try w.reserve(@sizeOf(T));
        inline for (0..@sizeOf(T)) |i| out[i] = @truncate(u >> (8 * (@sizeOf(T) - 1 - i)));
    }
    fn tagged(w: *Writer, tag: u8, comptime T: type, x: T) WriteError!void {
        try w.byte(tag);
        try w.be(T, x);
    }
    fn lenHeader(w: *Writer, n: usize, fix: ?u8, fix_max: usize, t8: ?u8, t16: u8, t32: u8) WriteError!void {
        if (fix != null and n <= fix_max) return w.byte(fix.? | @as(u8, @intCast(n)));
        if (t8 != null and n <= 0xff) return w.tagged(t8.?, u8, @intCast(n));
        if (n <= 0xffff) return w.tagged(t16, u16, @intCast(n));
        if (n > 0xffff_ffff) return error.OutOfMemory; // cannot be encoded
        return w.tagged(t32, u32, @intCast(n));
    }

    pub fn nil(w: *Writer) WriteError!void {
        return w.byte(0xc0);
    }
    pub fn boolean(w: *Writer, b: bool) WriteError!void {
        return w.byte(if (b) 0xc3 else 0xc2);
    }
    pub fn uint(w: *Writer, x: u64) WriteError!void {
        if (x <= 0x7f) return w.byte(@intCast(x));
        if (x <= 0xff) return w.tagged(0xcc, u8, @intCast(x));
        if (x <= 0xffff) return w.tagged(0xcd, u16, @intCast(x));
        if (x <= 0xffff_ffff) return w.tagged(0xce, u32, @intCast(x));
        return w.tagged(0xcf, u64, x);
    }
    pub fn int(w: *Writer, x: i64) WriteError!void {
        if (x >= 0) return w.uint(@intCast(x));
        if (x >= -32) return w.byte(@bitCast(@as(i8, @intCast(x))));
        if (x >= std.math.minInt(i8)) return w.tagged(0xd0, i8, @intCast(x));
        if (x >= std.math.minInt(i16)) return w.tagged(0xd1, i16, @intCast(x));
        if (x >= std.math.minInt(i32)) return w.tagged(0xd2, i32, @intCast(x));
        return w.tagged(0xd3, i64, x);
    }
    pub fn float(w: *Writer, x: f64) WriteError!void {
        return w.tagged(0xcb, f64, x);
    }
    pub fn str(w: *Writer, s: []const u8) WriteError!void {
        try w.lenHeader(s.len, 0xa0, 31, 0xd9, 0xda, 0xdb);
        @memcpy(try w.reserve(s.len), s);
    }
    pub fn bin(w: *Writer, b: []const u8) WriteError!void {
        @memcpy(try w.binUninit(b.len), b);
    }
    /// A `bin` header for `n` bytes and the space for them, to fill in place
    /// (no second copy of a large reply).
    pub fn binUninit(w: *Writer, n: usize) WriteError![]u8 {
        try w.lenHeader(n, null, 0, 0xc4, 0xc5, 0xc6);
        return w.reserve(n);
    }
    /// Then write `n` values.
    pub fn arrayHeader(w: *Writer, n: usize) WriteError!void {
        return w.lenHeader(n, 0x90, 15, null, 0xdc, 0xdd);
    }
    /// Then write `n` key/value pairs (2n values).
    pub fn mapHeader(w: *Writer, n: usize) WriteError!void {
        return w.lenHeader(n, 0x80, 15, null, 0xde, 0xdf);
    }
    /// Bytes that already are msgpack, copied unchanged.
    pub fn raw(w: *Writer, b: []const u8) WriteError!void {
        @memcpy(try w.reserve(b.len), b);
    }
};

// ---- tests (`python3 -m ziglang test msgpack.zig`) ----

const testing = std.testing;

test "scalars round-trip through writer and reader" {
    var w = Writer.init(testing.allocator);
    defer w.deinit();
    const ints = [_]i64{ 0, 1, 127, 128, 255, 256, 65535, 65536, -1, -32, -33, -128, -129, -32768, -32769, std.math.minInt(i64), std.math.maxInt(i64) };
    try w.arrayHeader(ints.len + 5);
    for (ints) |i| try w.int(i);
    try w.uint(std.math.maxInt(u64));
    try w.str("hi");
    try w.bin(&.{ 0, 0xff });
    try w.nil();
    try w.float(3.5);
    const a = try (try decode(w.bytes())).expectArray();
    var it = a.iterator();
    for (ints) |i| try testing.expectEqual(i, (try it.next()).?.asInt().?);
    try testing.expectEqual(std.math.maxInt(u64), (try it.next()).?.asUint().?);
    try testing.expectEqualStrings("hi", (try it.next()).?.asStr().?);
    try testing.expectEqualSlices(u8, &.{ 0, 0xff }, (try it.next()).?.asBin().?);
    try testing.expect((try it.next()).?.isNil());
    try testing.expectEqual(3.5, (try it.next()).?.asFloat().?);
    try testing.expectEqual(null, try it.next());
}

test "map lookup skips other keys and nested values" {
    // {"a": [1, {"x": nil}], 7: "seven", "b": true}
    const bytes = [_]u8{ 0x83, 0xa1, 'a', 0x92, 0x01, 0x81, 0xa1, 'x', 0xc0, 0x07, 0xa5, 's', 'e', 'v', 'e', 'n', 0xa1, 'b', 0xc3 };
    const m = try decodeMap(&bytes);
    try testing.expectEqual(true, (try m.require("b")).asBool().?);
    try testing.expectEqual(null, try m.get("c"));
    try testing.expectError(error.MissingField, m.require("c"));
    try testing.expectEqual(@as(u32, 2), (try m.require("a")).array.len);
}

test "malformed input is an error, never a trap" {
    try testing.expectError(error.Truncated, decode(&.{}));
    try testing.expectError(error.Invalid, decode(&.{ 0xc1, 0xff }));
    try testing.expectError(error.Truncated, decode(&.{ 0x81, 0xa5, 'v', 'a', 'l', 'u', 'e' }));
    try testing.expectError(error.Truncated, decode(&.{ 0xc6, 0xff, 0xff, 0xff, 0xff, 0x00 }));
    try testing.expectError(error.Truncated, decode(&.{ 0xdf, 0xff, 0xff, 0xff, 0xff }));
    try testing.expectError(error.TrailingBytes, decode(&.{ 0x01, 0x02 }));
    var deep: [max_depth + 2]u8 = undefined;
    @memset(&deep, 0x91);
    deep[deep.len - 1] = 0xc0;
    try testing.expectError(error.TooDeep, decode(&deep));
    try testing.expectError(error.WrongType, (try decode(&.{0x05})).expectStr());
}
