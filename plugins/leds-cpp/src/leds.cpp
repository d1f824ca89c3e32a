// leds-cpp: eight LEDs whose on/off state is one byte in the host's kv
// store, written in C++17 (no exceptions, no RTTI, no standard library)
// against guest-sdk/c/relay_plugin.h; plus the conformance commands
// (plugins/conformance/README.md), so the kit is held to the same
// scenarios from C++ as from C.
//
// The mask lives in kv (key `mask`, one raw byte: bit i = LED i), never in
// a global: the arena is reset after every call and the instance may be
// reloaded at any time. A byte below 0x80 also reads as a msgpack integer,
// which is how scenario files show it.
#define RELAY_PLUGIN_IMPLEMENTATION
#include "relay_plugin.h"

namespace {

constexpr uint32_t kLedCount = 8;
constexpr const char *kMaskKey = "mask";
constexpr uint32_t kMaxFill = 1000000;

// A reply built in the arena; the writer is plain C, this only shortens calls.
class Reply {
  public:
    Reply() { relay_writer_init(&w_); }
    Reply &map(uint32_t n) { relay_write_map(&w_, n); return *this; }
    Reply &key(const char *k) { relay_write_str(&w_, k); return *this; }
    Reply &value(int64_t v) { relay_write_int(&w_, v); return *this; }
    Reply &value(uint64_t v) { relay_write_uint(&w_, v); return *this; }
    Reply &value(bool v) { relay_write_bool(&w_, v); return *this; }
    relay_writer *writer() { return &w_; }
    relay_result done() const { return relay_reply_writer(&w_); }

  private:
    relay_writer w_;
};

// The stored mask; false (with an error in `err`) when the kv value is corrupt.
bool load_mask(uint8_t *mask, relay_result *err) {
    relay_bytes stored;
    if (!relay_kv_get(kMaskKey, &stored)) {
        *mask = 0;
        return true;
    }
    if (stored.len != 1) {
        *err = relay_errorf(RELAY_PERMANENT, "stored `mask` is %u bytes, not 1", stored.len);
        return false;
    }
    *mask = stored.ptr[0];
    return true;
}

relay_result reply_mask(uint8_t mask) {
    return Reply().map(1).key("mask").value(static_cast<uint64_t>(mask)).done();
}

// set_led {"index": 0..7, "on": bool} -> {"mask": int}
relay_result set_led(relay_call *call) {
    relay_reader index_v, on_v;
    int64_t index;
    bool on;
    if (!relay_payload_field(call, "index", &index_v) || !relay_read_int(&index_v, &index))
        return relay_error(RELAY_INVALID_ARGUMENT, "`index` must be an integer");
    if (!relay_payload_field(call, "on", &on_v) || !relay_read_bool(&on_v, &on))
        return relay_error(RELAY_INVALID_ARGUMENT, "`on` must be a boolean");
    if (index < 0 || index >= static_cast<int64_t>(kLedCount))
        return relay_errorf(RELAY_OUT_OF_BOUNDS, "index %lld is outside 0..=7",
                            static_cast<long long>(index));

    uint8_t mask;
    relay_result err;
    if (!load_mask(&mask, &err)) return err;
    const uint8_t bit = static_cast<uint8_t>(1u << index);
    mask = on ? static_cast<uint8_t>(mask | bit) : static_cast<uint8_t>(mask & ~bit);
    if (relay_kv_set(kMaskKey, &mask, 1) != RELAY_KV_OK)
        return relay_error(RELAY_TRANSIENT, "could not store the mask");
    relay_logf(RELAY_DEBUG, "led %lld %s", static_cast<long long>(index), on ? "on" : "off");
    return reply_mask(mask);
}

relay_result leds(relay_call *) {
    uint8_t mask;
    relay_result err;
    if (!load_mask(&mask, &err)) return err;
    return reply_mask(mask);
}

// ---- Conformance commands ----

relay_result echo(relay_call *call) { return relay_reply(call->payload.ptr, call->payload.len); }

relay_result check(relay_call *call) {
    relay_reader v;
    int64_t value;
    if (!relay_payload_field(call, "value", &v) || !relay_read_int(&v, &value))
        return relay_error(RELAY_INVALID_ARGUMENT, "payload must be {\"value\": <integer>}");
    if (value < 0 || value > 100)
        return relay_errorf(RELAY_OUT_OF_BOUNDS, "value %lld is outside 0..=100",
                            static_cast<long long>(value));
    return Reply().map(2).key("value").value(value).key("ok").value(true).done();
}

relay_result fill(relay_call *call) {
    relay_reader v;
    uint64_t n;
    if (!relay_payload_field(call, "bytes", &v) || !relay_read_uint(&v, &n))
        return relay_error(RELAY_INVALID_ARGUMENT, "payload must be {\"bytes\": <unsigned integer>}");
    if (n > kMaxFill)
        return relay_errorf(RELAY_OUT_OF_BOUNDS, "%llu bytes is over %u",
                            static_cast<unsigned long long>(n), kMaxFill);
    Reply r;
    relay_write_bin_header(r.writer(), static_cast<uint32_t>(n));
    if (uint8_t *body = relay_write_reserve(r.writer(), static_cast<uint32_t>(n)))
        __builtin_memset(body, 0x2a, static_cast<uint32_t>(n));
    return r.done();
}

relay_result store(relay_call *call) {
    if (relay_kv_set("slot", call->payload.ptr, call->payload.len) != RELAY_KV_OK)
        return relay_error(RELAY_TRANSIENT, "kv refused the value");
    return relay_ok();
}

relay_result load(relay_call *) {
    relay_bytes value;
    if (!relay_kv_get("slot", &value)) return relay_error(RELAY_PERMANENT, "empty");
    return relay_reply(value.ptr, value.len);
}

relay_result emit(relay_call *call) {
    relay_emit("ping", call->payload.ptr, call->payload.len);
    relay_log(RELAY_INFO, "emitted");
    return relay_ok();
}

relay_result now(relay_call *) {
    return Reply().map(1).key("now_ms").value(static_cast<uint64_t>(relay_now_ms())).done();
}

const relay_command commands[] = {
    {"set_led", RELAY_ROLE_ADMIN | RELAY_ROLE_PRIMARY, 0, set_led},
    {"leds", RELAY_ROLES_ALL, 0, leds},
    {"echo", RELAY_ROLES_ALL, 0, echo},
    {"check", RELAY_ROLES_ALL, 0, check},
    {"fill", RELAY_ROLES_ALL, 0, fill},
    {"store", RELAY_ROLE_ADMIN, 0, store},
    {"load", RELAY_ROLES_ALL, 0, load},
    {"emit", RELAY_ROLES_ALL, 0, emit},
    {"now", RELAY_ROLES_ALL, 0, now},
};

} // namespace

RELAY_PLUGIN("leds-cpp", "1.0.0", commands);
