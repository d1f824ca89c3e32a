/*
 * relay_plugin.h: write Relay command handlers in C or C++.
 *
 * The kit implements the canonical ABI of the `relay:plugin` world
 * (wit/relay-plugin.wit) for a freestanding wasm32 module, so a plugin is one
 * C/C++ file with a command table and one function per command; no libc, no
 * WASI, no wit-bindgen. Header-only: include it everywhere, and define
 * RELAY_PLUGIN_IMPLEMENTATION before including it in exactly one file (that
 * pulls in relay_plugin_impl.h; the msgpack reader and writer are in
 * relay_msgpack.h, included from here).
 *
 * Memory model: every allocation (the host's arguments, kv values, replies,
 * formatted messages) comes from one bump arena that is reset after each
 * `describe` and `handle` call, so nothing is ever freed by hand and a
 * handler cannot leak. The flip side: no pointer into the arena survives
 * the call that produced it. Keep state in the kv store, not in globals
 * pointing at call data.
 *
 * The flat signatures below are what the host checks every module against
 * (host/core/src/engine/module/world.rs); a Rust test compares these lines
 * with that table, so they must stay verbatim:
 *
 * relay-abi: world relay:plugin@0.1.0
 * relay-abi: import relay:plugin/host@0.1.0#log(i32, i32, i32)
 * relay-abi: import relay:plugin/host@0.1.0#kv-get(i32, i32, i32)
 * relay-abi: import relay:plugin/host@0.1.0#kv-set(i32, i32, i32, i32, i32)
 * relay-abi: import relay:plugin/host@0.1.0#kv-delete(i32, i32)
 * relay-abi: import relay:plugin/host@0.1.0#now-ms() -> i64
 * relay-abi: import relay:plugin/host@0.1.0#emit(i32, i32, i32, i32)
 * relay-abi: export describe() -> i32
 * relay-abi: export handle(i32, i32, i32, i32, i32, i32, i32, i32) -> i32
 * relay-abi: export cabi_post_describe(i32)
 * relay-abi: export cabi_post_handle(i32)
 * relay-abi: export cabi_realloc(i32, i32, i32, i32) -> i32
 *
 * Build (see docs/lang-c.md):
 *   clang --target=wasm32-unknown-unknown -Oz -nostdlib -mbulk-memory \
 *     -Wl,--no-entry -Wl,--stack-first -Wl,-z,stack-size=65536 \
 *     -Wl,--initial-memory=131072 -Wl,--strip-all -I guest-sdk/c plugin.c -o plugin.wasm
 */
#ifndef RELAY_PLUGIN_H
#define RELAY_PLUGIN_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if !defined(__wasm32__)
#error "relay_plugin.h targets wasm32 (--target=wasm32-unknown-unknown)"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Roles, error kinds, log levels (discriminants of the WIT enums) ---- */

typedef enum relay_role {
    RELAY_ADMIN = 0,
    RELAY_PRIMARY = 1,
    RELAY_SECONDARY = 2
} relay_role;

/* Role masks for the command table: OR them together. */
#define RELAY_ROLE_ADMIN 1u
#define RELAY_ROLE_PRIMARY 2u
#define RELAY_ROLE_SECONDARY 4u
#define RELAY_ROLES_ALL 7u

typedef enum relay_error_kind {
    RELAY_TRANSIENT = 0,        /* worth retrying: the host retries only this */
    RELAY_INVALID_ARGUMENT = 1, /* malformed payload */
    RELAY_OUT_OF_BOUNDS = 2,    /* a value outside its permitted range */
    RELAY_PERMANENT = 3         /* will never succeed */
} relay_error_kind;

typedef enum relay_log_level {
    RELAY_TRACE = 0,
    RELAY_DEBUG = 1,
    RELAY_INFO = 2,
    RELAY_WARN = 3,
    RELAY_ERROR = 4
} relay_log_level;

/* What relay_kv_set answers (0 = stored; else the host's kv-error + 1). */
typedef enum relay_kv_status {
    RELAY_KV_OK = 0,
    RELAY_KV_TOO_LARGE = 1,     /* key or value over the per-entry limit */
    RELAY_KV_QUOTA_EXCEEDED = 2 /* the plugin's total quota would be exceeded */
} relay_kv_status;

/* A byte string that is not NUL-terminated. */
typedef struct relay_bytes {
    const uint8_t *ptr;
    uint32_t len;
} relay_bytes;

typedef struct relay_str {
    const char *ptr;
    uint32_t len;
} relay_str;

/* ---- The arena ---- */

/* `size` bytes aligned to `align` (a power of two), valid until the current
 * call returns; NULL when the memory limit is reached. */
void *relay_alloc(uint32_t size, uint32_t align);
/* Grows (in place when `old` is the newest block) or copies. */
void *relay_realloc(void *old, uint32_t old_size, uint32_t new_size, uint32_t align);

uint32_t relay_strlen(const char *s);

#ifdef __cplusplus
} /* extern "C" */
#endif

#include "relay_msgpack.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Commands ---- */

/* One delivery of a command. Every pointer is valid during the call only. */
typedef struct relay_call {
    relay_str id;
    relay_str name;
    relay_bytes payload; /* msgpack; len 0 when the command had no payload */
    uint32_t attempt;    /* 1 for the first attempt */
    relay_role role;
} relay_call;

/* What a handler returns; build it with relay_ok / relay_reply* / relay_error*. */
typedef struct relay_result {
    uint8_t tag; /* 0 ok without reply, 1 ok with reply, 2 error */
    uint8_t kind; /* relay_error_kind when tag == 2 */
    const uint8_t *data; /* the reply, or the error message (UTF-8) */
    uint32_t len;
} relay_result;

typedef relay_result (*relay_handler)(relay_call *call);

typedef struct relay_command {
    const char *name;    /* [A-Za-z0-9_-], 1..64 chars */
    uint32_t roles;      /* RELAY_ROLE_* mask */
    uint32_t budget_ms;  /* per-attempt budget; 0 = the host's default */
    relay_handler handler;
} relay_command;

typedef struct relay_plugin {
    const char *name;    /* [A-Za-z0-9_-], 1..64 chars */
    const char *version; /* semver */
    const relay_command *commands;
    uint32_t command_count;
} relay_plugin;

/* The plugin's table, defined once with RELAY_PLUGIN(...). */
extern const relay_plugin relay_plugin_table;

/* RELAY_PLUGIN("name", "1.0.0", commands) with `commands` a relay_command
 * array (its length is taken with sizeof). */
#define RELAY_PLUGIN(NAME, VERSION, COMMANDS)                                  \
    const relay_plugin relay_plugin_table = {                                  \
        NAME, VERSION, COMMANDS, (uint32_t)(sizeof(COMMANDS) / sizeof((COMMANDS)[0]))}

/* A reader over the call's payload. */
relay_reader relay_payload(const relay_call *call);
/* Finds `key` in the payload's top-level map: false when the payload is not
 * a well-formed map or has no such key. */
bool relay_payload_field(const relay_call *call, const char *key, relay_reader *value);

/* Success without a reply. */
relay_result relay_ok(void);
/* Success with these msgpack bytes as the reply (valid until the call ends:
 * arena, payload or static data). An empty reply is no reply. */
relay_result relay_reply(const void *data, uint32_t len);
/* Success with what `w` wrote; an error if the writer ran out of memory. */
relay_result relay_reply_writer(const relay_writer *w);
/* Failure with a message (copied into the arena if not valid UTF-8). */
relay_result relay_error(relay_error_kind kind, const char *message);
/* Failure with a relay_fmt-formatted message. */
relay_result relay_errorf(relay_error_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A NUL-terminated string in the arena. Understands %% %c %s %.*s %d %i %u
 * %x %ld %lu %lld %llu %llx and %f / %.Nf (N <= 9); width flags are not
 * supported. Never NULL (an empty string when out of memory). */
const char *relay_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *relay_vfmt(const char *fmt, va_list ap);

/* ---- Host capabilities ---- */

void relay_log(relay_log_level level, const char *message);
void relay_logf(relay_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The value under `key` (copied into the arena); false when there is none. */
bool relay_kv_get(const char *key, relay_bytes *value);
relay_kv_status relay_kv_set(const char *key, const void *value, uint32_t len);
void relay_kv_delete(const char *key);
/* Wall-clock time, unix milliseconds. */
uint64_t relay_now_ms(void);
/* Publishes event `name` with a msgpack payload after the call. */
void relay_emit(const char *name, const void *payload, uint32_t len);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* RELAY_PLUGIN_H */

/* One source file defines RELAY_PLUGIN_IMPLEMENTATION to get the code. */
#if defined(RELAY_PLUGIN_IMPLEMENTATION)
#include "relay_plugin_impl.h"
#endif
