/* The {{name}} plugin (C). Add commands to `commands` below; `relay test`
 * runs scenarios/ on both engines. The kit is vendored in relay/. */
#define RELAY_PLUGIN_IMPLEMENTATION
#include "relay_plugin.h"

/* hello {"name": string up to 32 bytes} -> {"hello": name} ("world" by default). */
static relay_result hello(relay_call *call) {
    relay_str name = {"world", 5};
    if (call->payload.len > 0) {
        relay_reader v;
        if (relay_payload_field(call, "name", &v) && !relay_read_str(&v, &name))
            return relay_error(RELAY_INVALID_ARGUMENT, "`name` must be a string");
    }
    if (name.len > 32) return relay_error(RELAY_OUT_OF_BOUNDS, "name is longer than 32 bytes");
    relay_writer w;
    relay_writer_init(&w);
    relay_write_map(&w, 1);
    relay_write_str(&w, "hello");
    relay_write_strn(&w, name.ptr, name.len);
    return relay_reply_writer(&w);
}

static const relay_command commands[] = {
    {"hello", RELAY_ROLES_ALL, 0, hello},
};

RELAY_PLUGIN("{{name}}", "0.1.0", commands);
