//! The {{name}} plugin (Zig). Add commands to `plugin` below; `relay test`
//! runs scenarios/ on both engines. The kit is vendored in relay/.

const relay = @import("relay");
const mp = relay.msgpack;

pub const plugin = relay.Plugin{
    .name = "{{name}}",
    .version = "0.1.0",
    .commands = &.{
        relay.command("hello", .{}, hello),
    },
};

comptime {
    relay.exportPlugin(plugin);
}

/// hello {"name": string up to 32 bytes} -> {"hello": name} ("world" by default).
fn hello(cmd: *const relay.Command) !relay.Result {
    var name: []const u8 = "world";
    if (cmd.payload.len > 0) {
        const m = mp.decodeMap(cmd.payload) catch return relay.fail(.invalid_argument, "payload must be a map");
        if (try m.get("name")) |v| {
            name = v.asStr() orelse return relay.fail(.invalid_argument, "`name` must be a string");
        }
    }
    if (name.len > 32) return relay.fail(.out_of_bounds, "name is longer than 32 bytes");
    var w = relay.writer();
    try w.mapHeader(1);
    try w.str("hello");
    try w.str(name);
    return relay.reply(w.bytes());
}
