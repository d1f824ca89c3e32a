/*
 * thermostat-c: a target temperature kept in the host's kv store, written
 * in C against guest-sdk/c/relay_plugin.h; plus the conformance commands
 * (plugins/conformance/README.md) every guest language implements, so the
 * C kit is held to the same scenarios as the Rust SDK.
 *
 * The target lives in kv (key `target`, a msgpack float64), never in a
 * global: the arena is reset after every call and the instance may be
 * reloaded at any time.
 */
#define RELAY_PLUGIN_IMPLEMENTATION
#include "relay_plugin.h"

#define MIN_CELSIUS 5.0
#define MAX_CELSIUS 35.0

/* {"target": <float or nil>} */
static relay_result reply_target(bool set, double celsius) {
    relay_writer w;
    relay_writer_init(&w);
    relay_write_map(&w, 1);
    relay_write_str(&w, "target");
    if (set) relay_write_f64(&w, celsius);
    else relay_write_nil(&w);
    return relay_reply_writer(&w);
}

/* set_target {"celsius": number}: 5..=35, stored, echoed back. */
static relay_result set_target(relay_call *call) {
    relay_reader v;
    double celsius;
    if (!relay_payload_field(call, "celsius", &v))
        return relay_error(RELAY_INVALID_ARGUMENT, "payload must be a map with `celsius`");
    if (!relay_read_number(&v, &celsius))
        return relay_error(RELAY_INVALID_ARGUMENT, "`celsius` must be a number");
    /* Written so that NaN fails too. */
    if (!(celsius >= MIN_CELSIUS && celsius <= MAX_CELSIUS))
        return relay_errorf(RELAY_OUT_OF_BOUNDS, "celsius %.1f is outside 5..=35", celsius);

    relay_writer stored;
    relay_writer_init(&stored);
    relay_write_f64(&stored, celsius);
    if (stored.failed || relay_kv_set("target", stored.buf, stored.len) != RELAY_KV_OK)
        return relay_error(RELAY_TRANSIENT, "could not store the target");
    relay_logf(RELAY_INFO, "target set to %.1f", celsius);
    return reply_target(true, celsius);
}

/* status: the stored target, nil before the first set_target. */
static relay_result status(relay_call *call) {
    (void)call;
    relay_bytes stored;
    if (!relay_kv_get("target", &stored)) return reply_target(false, 0);
    relay_reader r = relay_reader_new(stored.ptr, stored.len);
    double celsius;
    if (!relay_read_number(&r, &celsius))
        return relay_error(RELAY_PERMANENT, "stored `target` is not a number");
    return reply_target(true, celsius);
}

/* ---- Conformance commands ---- */

static relay_result echo(relay_call *call) {
    return relay_reply(call->payload.ptr, call->payload.len);
}

static relay_result check(relay_call *call) {
    relay_reader v;
    int64_t value;
    if (!relay_payload_field(call, "value", &v) || !relay_read_int(&v, &value))
        return relay_error(RELAY_INVALID_ARGUMENT, "payload must be {\"value\": <integer>}");
    if (value < 0 || value > 100)
        return relay_errorf(RELAY_OUT_OF_BOUNDS, "value %lld is outside 0..=100", (long long)value);
    relay_writer w;
    relay_writer_init(&w);
    relay_write_map(&w, 2);
    relay_write_str(&w, "value");
    relay_write_int(&w, value);
    relay_write_str(&w, "ok");
    relay_write_bool(&w, true);
    return relay_reply_writer(&w);
}

#define MAX_FILL 1000000u

static relay_result fill(relay_call *call) {
    relay_reader v;
    uint64_t n;
    if (!relay_payload_field(call, "bytes", &v) || !relay_read_uint(&v, &n))
        return relay_error(RELAY_INVALID_ARGUMENT, "payload must be {\"bytes\": <unsigned integer>}");
    if (n > MAX_FILL)
        return relay_errorf(RELAY_OUT_OF_BOUNDS, "%llu bytes is over %u", (unsigned long long)n, MAX_FILL);
    relay_writer w;
    relay_writer_init(&w);
    relay_write_bin_header(&w, (uint32_t)n);
    uint8_t *body = relay_write_reserve(&w, (uint32_t)n);
    if (body) __builtin_memset(body, 0x2a, (uint32_t)n);
    return relay_reply_writer(&w);
}

static relay_result store(relay_call *call) {
    if (relay_kv_set("slot", call->payload.ptr, call->payload.len) != RELAY_KV_OK)
        return relay_error(RELAY_TRANSIENT, "kv refused the value");
    return relay_ok();
}

static relay_result load(relay_call *call) {
    (void)call;
    relay_bytes value;
    if (!relay_kv_get("slot", &value)) return relay_error(RELAY_PERMANENT, "empty");
    return relay_reply(value.ptr, value.len);
}

static relay_result emit(relay_call *call) {
    relay_emit("ping", call->payload.ptr, call->payload.len);
    relay_log(RELAY_INFO, "emitted");
    return relay_ok();
}

static relay_result now(relay_call *call) {
    (void)call;
    relay_writer w;
    relay_writer_init(&w);
    relay_write_map(&w, 1);
    relay_write_str(&w, "now_ms");
    relay_write_uint(&w, relay_now_ms());
    return relay_reply_writer(&w);
}

static const relay_command commands[] = {
    {"set_target", RELAY_ROLE_ADMIN | RELAY_ROLE_PRIMARY, 0, set_target},
    {"status", RELAY_ROLES_ALL, 0, status},
    {"echo", RELAY_ROLES_ALL, 0, echo},
    {"check", RELAY_ROLES_ALL, 0, check},
    {"fill", RELAY_ROLES_ALL, 0, fill},
    {"store", RELAY_ROLE_ADMIN, 0, store},
    {"load", RELAY_ROLES_ALL, 0, load},
    {"emit", RELAY_ROLES_ALL, 0, emit},
    {"now", RELAY_ROLES_ALL, 0, now},
};

RELAY_PLUGIN("thermostat-c", "1.0.0", commands);
