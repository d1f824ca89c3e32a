/*
 * hello-js: runs a JavaScript plugin (script.js, embedded at build time as
 * `hello_js_script`) in QuickJS (quickjs-ng) inside one Relay plugin module.
 *
 * Not the C kit's relay_plugin_impl.h: the kit's arena grows from
 * __heap_base by itself, which would collide with the malloc heap QuickJS
 * needs across calls, and its describe() wants a static command table while
 * ours comes from the script. So the ABI glue is here (same layouts as the
 * kit), the kit's msgpack reader/writer is reused, and the per-call "arena"
 * is a list of malloc blocks freed in the post-return functions.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "quickjs.h"

/* The kit's declarations (types, msgpack API). Then its msgpack
 * implementation only: it needs relay_alloc/relay_realloc/relay_strlen and
 * memcpy, which come from here and libc. */
#include "relay_plugin.h"
#define RELAY_PLUGIN_IMPLEMENTED
#include "relay_msgpack.h"

extern const char hello_js_script[];
extern const uint32_t hello_js_script_len;

#define IMPORT(NAME) __attribute__((import_module("relay:plugin/host@0.1.0"), import_name(NAME)))
#define EXPORT(NAME) __attribute__((export_name(NAME), visibility("default")))

IMPORT("log") void host_log(uint32_t level, const void *msg, uint32_t len);
IMPORT("kv-get") void host_kv_get(const void *key, uint32_t len, void *ret);
IMPORT("kv-set") void host_kv_set(const void *key, uint32_t klen, const void *val, uint32_t vlen, void *ret);
IMPORT("kv-delete") void host_kv_delete(const void *key, uint32_t len);
IMPORT("now-ms") int64_t host_now_ms(void);
IMPORT("emit") void host_emit(const void *name, uint32_t nlen, const void *payload, uint32_t plen);

/* used by shim.c for the libc clock */
int64_t hello_js_now_ms(void) { return host_now_ms(); }

/* ---- Per-call arena: malloc blocks, freed after each call ---- */

typedef struct block {
    struct block *next;
    uint32_t size;
    uint32_t pad[2]; /* keeps the data 16-aligned */
} block;

static block *call_blocks;

uint32_t relay_strlen(const char *s) { return (uint32_t)strlen(s); }

void *relay_alloc(uint32_t size, uint32_t align) {
    if (align > 16) return NULL;
    block *b = (block *)malloc(sizeof(block) + (size ? size : 1));
    if (!b) return NULL;
    b->next = call_blocks;
    b->size = size;
    call_blocks = b;
    return b + 1;
}

void *relay_realloc(void *old, uint32_t old_size, uint32_t new_size, uint32_t align) {
    if (old && new_size <= old_size) return old;
    void *p = relay_alloc(new_size, align);
    if (p && old) memcpy(p, old, old_size);
    return p; /* the old block is freed with the rest after the call */
}

static void arena_reset(void) {
    while (call_blocks) {
        block *n = call_blocks->next;
        free(call_blocks);
        call_blocks = n;
    }
}

EXPORT("cabi_realloc")
void *cabi_realloc(void *old, uint32_t old_size, uint32_t align, uint32_t new_size) {
    void *p = relay_realloc(old, old_size, new_size, align);
    if (!p) __builtin_trap();
    return p;
}

static void put32(uint8_t *at, uint32_t v) {
    at[0] = (uint8_t)v; at[1] = (uint8_t)(v >> 8); at[2] = (uint8_t)(v >> 16); at[3] = (uint8_t)(v >> 24);
}
static uint32_t get32(const uint8_t *at) {
    return at[0] | (uint32_t)at[1] << 8 | (uint32_t)at[2] << 16 | (uint32_t)at[3] << 24;
}

static char *arena_strdup(const char *s, size_t n) {
    char *p = (char *)relay_alloc((uint32_t)n + 1, 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

/* ---- The JS runtime, created on first use and kept across calls ---- */

/* QuickJS's own stack check (on the shadow stack in linear memory). It must
 * trip, as a catchable RangeError, before the engine's call-depth limit
 * (wasmi: max_stack_bytes / 128 frames; wasmtime: max_stack_bytes of native
 * stack), which traps the whole call. Measured with the default
 * max_stack_bytes (512 KiB): plain JS recursion uses ~260 B of shadow stack
 * per level and wasmtime traps between 400 and 800 levels; recursion
 * through Array.prototype.map ~630 B/level, wasmtime traps between 200 and
 * 300. 64 KiB gives ~250 / ~100 levels, a RangeError well before either. */
#ifndef HELLO_JS_STACK_LIMIT
#define HELLO_JS_STACK_LIMIT (64u << 10)
#endif

static JSRuntime *rt;
static JSContext *ctx;
static JSValue plugin_obj; /* the script's exported `plugin` */

typedef struct command {
    char *name;
    uint8_t roles[3];
    uint32_t role_count;
    uint32_t budget_ms;
    JSValue run;
} command;

static char *plugin_name, *plugin_version;
static command *commands;
static uint32_t command_count;

static void log_str(uint32_t level, const char *s) { host_log(level, s, (uint32_t)strlen(s)); }

static void log_exception(const char *what) {
    JSValue e = JS_GetException(ctx);
    const char *m = JS_ToCString(ctx, e);
    char buf[512];
    size_t n = strlen(what);
    if (n > 200) n = 200;
    memcpy(buf, what, n);
    buf[n++] = ':';
    buf[n++] = ' ';
    const char *src = m ? m : "(exception)";
    size_t k = strlen(src);
    if (k > sizeof buf - n - 1) k = sizeof buf - n - 1;
    memcpy(buf + n, src, k);
    buf[n + k] = 0;
    log_str(4, buf);
    if (m) JS_FreeCString(ctx, m);
    JS_FreeValue(ctx, e);
}

static _Noreturn void die(const char *what) {
    log_str(4, what);
    __builtin_trap();
}

/* msgpack -> JS */
static JSValue mp_to_js(relay_reader *r, int depth) {
    if (depth > RELAY_MP_MAX_DEPTH) return JS_ThrowTypeError(ctx, "payload nests too deeply");
    switch (relay_peek(r)) {
    case RELAY_MP_NIL:
        relay_read_nil(r);
        return JS_NULL;
    case RELAY_MP_BOOL: {
        bool b;
        relay_read_bool(r, &b);
        return JS_NewBool(ctx, b);
    }
    case RELAY_MP_INT: {
        int64_t i;
        uint64_t u;
        /* beyond 2^53 a number would lose digits: a BigInt then */
        if (relay_read_int(r, &i))
            return (i > 9007199254740991ll || i < -9007199254740991ll) ? JS_NewBigInt64(ctx, i)
                                                                       : JS_NewInt64(ctx, i);
        if (relay_read_uint(r, &u)) return JS_NewBigUint64(ctx, u);
        break;
    }
    case RELAY_MP_FLOAT: {
        double d;
        relay_read_float(r, &d);
        return JS_NewFloat64(ctx, d);
    }
    case RELAY_MP_STR: {
        relay_str s;
        relay_read_str(r, &s);
        return JS_NewStringLen(ctx, s.ptr, s.len);
    }
    case RELAY_MP_BIN: {
        relay_bytes b;
        relay_read_bin(r, &b);
        return JS_NewUint8ArrayCopy(ctx, b.ptr, b.len);
    }
    case RELAY_MP_ARRAY: {
        uint32_t n;
        relay_read_array(r, &n);
        if (n > r->len - r->pos) return JS_ThrowTypeError(ctx, "malformed payload (array length)");
        JSValue a = JS_NewArray(ctx);
        if (JS_IsException(a)) return a;
        for (uint32_t i = 0; i < n; i++) {
            JSValue v = mp_to_js(r, depth + 1);
            if (JS_IsException(v) || JS_SetPropertyUint32(ctx, a, i, v) < 0) {
                JS_FreeValue(ctx, a);
                return JS_EXCEPTION;
            }
        }
        return a;
    }
    case RELAY_MP_MAP: {
        uint32_t n;
        relay_read_map(r, &n);
        if (n > (r->len - r->pos) / 2) return JS_ThrowTypeError(ctx, "malformed payload (map length)");
        JSValue o = JS_NewObject(ctx);
        if (JS_IsException(o)) return o;
        for (uint32_t i = 0; i < n; i++) {
            JSAtom key;
            if (relay_peek(r) == RELAY_MP_STR) {
                relay_str s;
                relay_read_str(r, &s);
                key = JS_NewAtomLen(ctx, s.ptr, s.len);
            } else {
                JSValue k = mp_to_js(r, depth + 1);
                if (JS_IsException(k)) { JS_FreeValue(ctx, o); return k; }
                key = JS_ValueToAtom(ctx, k);
                JS_FreeValue(ctx, k);
            }
            if (key == JS_ATOM_NULL) { JS_FreeValue(ctx, o); return JS_EXCEPTION; }
            JSValue v = mp_to_js(r, depth + 1);
            int rc = JS_IsException(v) ? -1 : JS_DefinePropertyValue(ctx, o, key, v, JS_PROP_C_W_E);
            JS_FreeAtom(ctx, key);
            if (rc < 0) { JS_FreeValue(ctx, o); return JS_EXCEPTION; }
        }
        return o;
    }
    default:
        break;
    }
    return JS_ThrowTypeError(ctx, "malformed or unsupported msgpack payload");
}

/* JS -> msgpack; -1 with a pending exception on failure. */
static int js_to_mp(JSValueConst v, relay_writer *w, int depth) {
    if (depth > RELAY_MP_MAX_DEPTH) {
        JS_ThrowTypeError(ctx, "value nests too deeply (cyclic?)");
        return -1;
    }
    switch (JS_VALUE_GET_NORM_TAG(v)) {
    case JS_TAG_NULL:
    case JS_TAG_UNDEFINED:
        relay_write_nil(w);
        return 0;
    case JS_TAG_BOOL:
        relay_write_bool(w, JS_ToBool(ctx, v));
        return 0;
    case JS_TAG_INT:
        relay_write_int(w, JS_VALUE_GET_INT(v));
        return 0;
    case JS_TAG_FLOAT64: {
        double d = JS_VALUE_GET_FLOAT64(v);
        if (d == (double)(int64_t)d && d >= -9007199254740992.0 && d <= 9007199254740992.0)
            relay_write_int(w, (int64_t)d);
        else
            relay_write_f64(w, d);
        return 0;
    }
    case JS_TAG_BIG_INT:
    case JS_TAG_SHORT_BIG_INT: {
        int64_t i;
        uint64_t u;
        if (JS_ToBigInt64(ctx, &i, v) < 0) return -1;
        if (i < 0 && JS_ToBigUint64(ctx, &u, v) == 0) { /* 2^63..2^64-1 wrapped? */
            JSValue back = JS_NewBigUint64(ctx, u);
            bool big = JS_IsStrictEqual(ctx, v, back);
            JS_FreeValue(ctx, back);
            if (big) { relay_write_uint(w, u); return 0; }
        }
        relay_write_int(w, i);
        return 0;
    }
    case JS_TAG_STRING: {
        size_t n;
        const char *s = JS_ToCStringLen(ctx, &n, v);
        if (!s) return -1;
        relay_write_strn(w, s, (uint32_t)n);
        JS_FreeCString(ctx, s);
        return 0;
    }
    case JS_TAG_OBJECT:
        break;
    default:
        JS_ThrowTypeError(ctx, "cannot encode this value as msgpack");
        return -1;
    }
    if (JS_IsFunction(ctx, v)) {
        JS_ThrowTypeError(ctx, "cannot encode a function as msgpack");
        return -1;
    }
    if (JS_IsArrayBuffer(v) || JS_GetTypedArrayType(v) == JS_TYPED_ARRAY_UINT8) {
        size_t n;
        uint8_t *p = JS_IsArrayBuffer(v) ? JS_GetArrayBuffer(ctx, &n, v) : JS_GetUint8Array(ctx, &n, v);
        if (!p && n) return -1;
        relay_write_bin(w, p, (uint32_t)n);
        return 0;
    }
    if (JS_IsArray(v)) {
        int64_t n;
        if (JS_GetLength(ctx, v, &n) < 0) return -1;
        relay_write_array(w, (uint32_t)n);
        for (int64_t i = 0; i < n; i++) {
            JSValue e = JS_GetPropertyInt64(ctx, v, i);
            if (JS_IsException(e)) return -1;
            int rc = js_to_mp(e, w, depth + 1);
            JS_FreeValue(ctx, e);
            if (rc < 0) return -1;
        }
        return 0;
    }
    /* toJSON (Date and friends) */
    JSValue to_json = JS_GetPropertyStr(ctx, v, "toJSON");
    if (JS_IsException(to_json)) return -1;
    if (JS_IsFunction(ctx, to_json)) {
        JSValue j = JS_Call(ctx, to_json, v, 0, NULL);
        JS_FreeValue(ctx, to_json);
        if (JS_IsException(j)) return -1;
        int rc = js_to_mp(j, w, depth + 1);
        JS_FreeValue(ctx, j);
        return rc;
    }
    JS_FreeValue(ctx, to_json);
    /* a plain object: own enumerable string keys, undefined/function values skipped */
    JSPropertyEnum *tab;
    uint32_t len;
    if (JS_GetOwnPropertyNames(ctx, &tab, &len, v, JS_GPN_STRING_MASK | JS_GPN_ENUM_ONLY) < 0) return -1;
    JSValue *vals = (JSValue *)js_malloc(ctx, sizeof(JSValue) * (len ? len : 1));
    int rc = vals ? 0 : -1;
    uint32_t got = 0, count = 0;
    for (; rc == 0 && got < len; got++) {
        vals[got] = JS_GetProperty(ctx, v, tab[got].atom);
        if (JS_IsException(vals[got])) rc = -1;
        else if (!JS_IsUndefined(vals[got]) && !JS_IsFunction(ctx, vals[got])) count++;
    }
    if (rc == 0) {
        relay_write_map(w, count);
        for (uint32_t i = 0; rc == 0 && i < len; i++) {
            if (JS_IsUndefined(vals[i]) || JS_IsFunction(ctx, vals[i])) continue;
            const char *k = JS_AtomToCString(ctx, tab[i].atom);
            if (!k) { rc = -1; break; }
            relay_write_str(w, k);
            JS_FreeCString(ctx, k);
            rc = js_to_mp(vals[i], w, depth + 1);
        }
    }
    for (uint32_t i = 0; i < got; i++) JS_FreeValue(ctx, vals[i]);
    if (vals) js_free(ctx, vals);
    JS_FreePropertyEnum(ctx, tab, len);
    return rc;
}

/* ---- `relay` global: log, now, emit, kv ---- */

static JSValue js_log(JSContext *c, JSValueConst this_val, int argc, JSValueConst *argv) {
    (void)this_val;
    static const char *const levels[] = {"trace", "debug", "info", "warn", "error"};
    uint32_t level = 2;
    if (argc >= 2) {
        const char *l = JS_ToCString(c, argv[0]);
        if (!l) return JS_EXCEPTION;
        for (uint32_t i = 0; i < 5; i++)
            if (strcmp(l, levels[i]) == 0) level = i;
        JS_FreeCString(c, l);
    }
    size_t n;
    const char *m = JS_ToCStringLen(c, &n, argv[argc >= 2 ? 1 : 0]);
    if (!m) return JS_EXCEPTION;
    host_log(level, m, (uint32_t)n);
    JS_FreeCString(c, m);
    return JS_UNDEFINED;
}

static JSValue js_now(JSContext *c, JSValueConst this_val, int argc, JSValueConst *argv) {
    (void)this_val; (void)argc; (void)argv;
    return JS_NewFloat64(c, (double)host_now_ms());
}

static JSValue js_emit(JSContext *c, JSValueConst this_val, int argc, JSValueConst *argv) {
    (void)this_val;
    size_t n;
    const char *name = JS_ToCStringLen(c, &n, argv[0]);
    if (!name) return JS_EXCEPTION;
    relay_writer w;
    relay_writer_init(&w);
    if (argc >= 2 && !JS_IsUndefined(argv[1]) && js_to_mp(argv[1], &w, 0) < 0) {
        JS_FreeCString(c, name);
        return JS_EXCEPTION;
    }
    if (w.failed) { JS_FreeCString(c, name); return JS_ThrowOutOfMemory(c); }
    host_emit(name, (uint32_t)n, w.buf, w.len);
    JS_FreeCString(c, name);
    return JS_UNDEFINED;
}

/* kv values are stored msgpack-encoded */
static JSValue js_kv_get(JSContext *c, JSValueConst this_val, int argc, JSValueConst *argv) {
    (void)this_val; (void)argc;
    size_t n;
    const char *key = JS_ToCStringLen(c, &n, argv[0]);
    if (!key) return JS_EXCEPTION;
    uint8_t ret[12] __attribute__((aligned(4))) = {0};
    host_kv_get(key, (uint32_t)n, ret);
    JS_FreeCString(c, key);
    if (!ret[0]) return JS_UNDEFINED;
    relay_reader r = relay_reader_new((const void *)(uintptr_t)get32(ret + 4), get32(ret + 8));
    return mp_to_js(&r, 0);
}

static JSValue js_kv_set(JSContext *c, JSValueConst this_val, int argc, JSValueConst *argv) {
    (void)this_val;
    size_t n;
    relay_writer w;
    relay_writer_init(&w);
    if (js_to_mp(argc >= 2 ? argv[1] : JS_UNDEFINED, &w, 0) < 0) return JS_EXCEPTION;
    if (w.failed) return JS_ThrowOutOfMemory(c);
    const char *key = JS_ToCStringLen(c, &n, argv[0]);
    if (!key) return JS_EXCEPTION;
    uint8_t ret[2] = {0, 0};
    host_kv_set(key, (uint32_t)n, w.buf, w.len, ret);
    JS_FreeCString(c, key);
    if (ret[0]) return JS_ThrowRangeError(c, ret[1] == 0 ? "kv value too large" : "kv quota exceeded");
    return JS_UNDEFINED;
}

static JSValue js_kv_delete(JSContext *c, JSValueConst this_val, int argc, JSValueConst *argv) {
    (void)this_val; (void)argc;
    size_t n;
    const char *key = JS_ToCStringLen(c, &n, argv[0]);
    if (!key) return JS_EXCEPTION;
    host_kv_delete(key, (uint32_t)n);
    JS_FreeCString(c, key);
    return JS_UNDEFINED;
}

static const JSCFunctionListEntry kv_funcs[] = {
    JS_CFUNC_DEF("get", 1, js_kv_get),
    JS_CFUNC_DEF("set", 2, js_kv_set),
    JS_CFUNC_DEF("delete", 1, js_kv_delete),
};

static const JSCFunctionListEntry relay_funcs[] = {
    JS_CFUNC_DEF("log", 2, js_log),
    JS_CFUNC_DEF("now", 0, js_now),
    JS_CFUNC_DEF("emit", 2, js_emit),
};

/* ---- Loading the script ---- */

static char *js_strdup_prop(JSValueConst obj, const char *prop, const char *what) {
    JSValue v = JS_GetPropertyStr(ctx, obj, prop);
    if (!JS_IsString(v)) die(what);
    const char *s = JS_ToCString(ctx, v);
    JS_FreeValue(ctx, v);
    if (!s) die(what);
    char *copy = strdup(s);
    JS_FreeCString(ctx, s);
    if (!copy) die("out of memory");
    return copy;
}

static void drain_jobs(void) {
    JSContext *c;
    while (JS_ExecutePendingJob(rt, &c) > 0) {}
}

static void init(void) {
    if (rt) return;
    extern void __wasm_call_ctors(void);
    __wasm_call_ctors();
    rt = JS_NewRuntime();
    if (!rt) die("hello-js: JS_NewRuntime failed");
    JS_SetMemoryLimit(rt, 12u << 20);
    JS_SetMaxStackSize(rt, HELLO_JS_STACK_LIMIT);
    ctx = JS_NewContext(rt);
    if (!ctx) die("hello-js: JS_NewContext failed");

    JSValue global = JS_GetGlobalObject(ctx);
    JSValue relay = JS_NewObject(ctx);
    JSValue kv = JS_NewObject(ctx);
    JS_SetPropertyFunctionList(ctx, relay, relay_funcs, sizeof relay_funcs / sizeof relay_funcs[0]);
    JS_SetPropertyFunctionList(ctx, kv, kv_funcs, sizeof kv_funcs / sizeof kv_funcs[0]);
    JS_SetPropertyStr(ctx, relay, "kv", kv);
    JS_SetPropertyStr(ctx, global, "relay", relay);
    JS_FreeValue(ctx, global);

    JSValue mod = JS_Eval(ctx, hello_js_script, hello_js_script_len, "script.js",
                          JS_EVAL_TYPE_MODULE | JS_EVAL_FLAG_COMPILE_ONLY);
    if (JS_IsException(mod)) { log_exception("hello-js: script.js does not compile"); __builtin_trap(); }
    JSModuleDef *m = (JSModuleDef *)JS_VALUE_GET_PTR(mod);
    JSValue done = JS_EvalFunction(ctx, mod); /* consumes mod */
    if (JS_IsException(done)) { log_exception("hello-js: script.js threw"); __builtin_trap(); }
    drain_jobs();
    if (JS_PromiseState(ctx, done) == JS_PROMISE_REJECTED) {
        JS_Throw(ctx, JS_PromiseResult(ctx, done));
        log_exception("hello-js: script.js threw");
        __builtin_trap();
    }
    JS_FreeValue(ctx, done);
    JSValue ns = JS_GetModuleNamespace(ctx, m);
    plugin_obj = JS_GetPropertyStr(ctx, ns, "plugin");
    JS_FreeValue(ctx, ns);
    if (!JS_IsObject(plugin_obj)) die("hello-js: script.js must `export const plugin = {...}`");

    plugin_name = js_strdup_prop(plugin_obj, "name", "hello-js: plugin.name must be a string");
    plugin_version = js_strdup_prop(plugin_obj, "version", "hello-js: plugin.version must be a string");
    JSValue cmds = JS_GetPropertyStr(ctx, plugin_obj, "commands");
    if (!JS_IsObject(cmds)) die("hello-js: plugin.commands must be an object");
    JSPropertyEnum *tab;
    uint32_t len;
    if (JS_GetOwnPropertyNames(ctx, &tab, &len, cmds, JS_GPN_STRING_MASK | JS_GPN_ENUM_ONLY) < 0)
        die("hello-js: cannot list plugin.commands");
    commands = (command *)calloc(len ? len : 1, sizeof(command));
    if (!commands) die("out of memory");
    for (uint32_t i = 0; i < len; i++) {
        command *c = &commands[i];
        const char *k = JS_AtomToCString(ctx, tab[i].atom);
        c->name = strdup(k);
        JS_FreeCString(ctx, k);
        JSValue spec = JS_GetProperty(ctx, cmds, tab[i].atom);
        c->run = JS_GetPropertyStr(ctx, spec, "run");
        if (!JS_IsFunction(ctx, c->run)) die("hello-js: every command needs a run(payload) function");
        JSValue roles = JS_GetPropertyStr(ctx, spec, "roles");
        if (JS_IsUndefined(roles)) {
            c->role_count = 3;
            c->roles[0] = RELAY_ADMIN; c->roles[1] = RELAY_PRIMARY; c->roles[2] = RELAY_SECONDARY;
        } else {
            static const char *const names[] = {"admin", "primary", "secondary"};
            bool seen[3] = {false, false, false};
            int64_t n = 0;
            if (!JS_IsArray(roles) || JS_GetLength(ctx, roles, &n) < 0) die("hello-js: roles must be an array");
            for (int64_t j = 0; j < n; j++) {
                JSValue r = JS_GetPropertyInt64(ctx, roles, j);
                const char *s = JS_ToCString(ctx, r);
                JS_FreeValue(ctx, r);
                bool ok = false;
                for (uint32_t q = 0; s && q < 3; q++)
                    if (strcmp(s, names[q]) == 0) { ok = true; seen[q] = true; }
                if (s) JS_FreeCString(ctx, s);
                if (!ok) die("hello-js: roles are \"admin\", \"primary\", \"secondary\"");
            }
            for (uint32_t q = 0; q < 3; q++)
                if (seen[q]) c->roles[c->role_count++] = (uint8_t)q;
        }
        JS_FreeValue(ctx, roles);
        JSValue budget = JS_GetPropertyStr(ctx, spec, "budgetMs");
        if (!JS_IsUndefined(budget)) {
            uint32_t b;
            if (JS_ToUint32(ctx, &b, budget) < 0) die("hello-js: budgetMs must be a number");
            c->budget_ms = b;
        }
        JS_FreeValue(ctx, budget);
        JS_FreeValue(ctx, spec);
    }
    command_count = len;
    JS_FreePropertyEnum(ctx, tab, len);
    JS_FreeValue(ctx, cmds);
}

/* ---- The world's exports (layouts as in the C kit) ---- */

EXPORT("describe") uint8_t *describe(void) {
    init();
    uint8_t *info = (uint8_t *)relay_alloc(24, 4);
    uint8_t *specs = (uint8_t *)relay_alloc(24 * command_count, 4);
    if (!info || !specs) __builtin_trap();
    put32(info, (uint32_t)(uintptr_t)plugin_name);
    put32(info + 4, (uint32_t)strlen(plugin_name));
    put32(info + 8, (uint32_t)(uintptr_t)plugin_version);
    put32(info + 12, (uint32_t)strlen(plugin_version));
    put32(info + 16, (uint32_t)(uintptr_t)specs);
    put32(info + 20, command_count);
    for (uint32_t i = 0; i < command_count; i++) {
        uint8_t *s = specs + 24 * i;
        memset(s, 0, 24);
        put32(s, (uint32_t)(uintptr_t)commands[i].name);
        put32(s + 4, (uint32_t)strlen(commands[i].name));
        put32(s + 8, (uint32_t)(uintptr_t)commands[i].roles);
        put32(s + 12, commands[i].role_count);
        if (commands[i].budget_ms) { s[16] = 1; put32(s + 20, commands[i].budget_ms); }
    }
    return info;
}

EXPORT("cabi_post_describe") void post_describe(uint8_t *ret) {
    (void)ret;
    arena_reset();
}

static uint8_t ret_area[16] __attribute__((aligned(4)));

static uint8_t *ret_error(relay_error_kind kind, const char *msg, size_t n) {
    memset(ret_area, 0, sizeof ret_area);
    ret_area[0] = 1;
    ret_area[4] = (uint8_t)kind;
    /* QuickJS strings are valid UTF-8 except for lone surrogates; mend those */
    char *m = arena_strdup(msg, n);
    if (!m) { m = (char *)"out of memory"; n = strlen(m); }
    for (size_t i = 0; i + 2 < n; i++)
        if ((uint8_t)m[i] == 0xed && ((uint8_t)m[i + 1] & 0xe0) == 0xa0) m[i] = m[i + 1] = m[i + 2] = '?';
    put32(ret_area + 8, (uint32_t)(uintptr_t)m);
    put32(ret_area + 12, (uint32_t)n);
    return ret_area;
}

static uint8_t *ret_exception(void) {
    JSValue e = JS_GetException(ctx);
    relay_error_kind kind = RELAY_PERMANENT;
    if (JS_IsObject(e)) {
        JSValue k = JS_GetPropertyStr(ctx, e, "kind");
        const char *ks = JS_IsString(k) ? JS_ToCString(ctx, k) : NULL;
        JSValue nm = JS_GetPropertyStr(ctx, e, "name");
        const char *ns = JS_IsString(nm) ? JS_ToCString(ctx, nm) : NULL;
        if (ks && strcmp(ks, "transient") == 0) kind = RELAY_TRANSIENT;
        else if (ks && strcmp(ks, "invalid-argument") == 0) kind = RELAY_INVALID_ARGUMENT;
        else if (ks && strcmp(ks, "out-of-bounds") == 0) kind = RELAY_OUT_OF_BOUNDS;
        else if (ks && strcmp(ks, "permanent") == 0) kind = RELAY_PERMANENT;
        else if (ns && strcmp(ns, "RangeError") == 0) kind = RELAY_OUT_OF_BOUNDS;
        else if (ns && strcmp(ns, "TypeError") == 0) kind = RELAY_INVALID_ARGUMENT;
        if (ks) JS_FreeCString(ctx, ks);
        if (ns) JS_FreeCString(ctx, ns);
        JS_FreeValue(ctx, k);
        JS_FreeValue(ctx, nm);
    }
    size_t n = 0;
    const char *m = JS_ToCStringLen(ctx, &n, e);
    uint8_t *ret = m ? ret_error(kind, m, n) : ret_error(kind, "(exception)", 11);
    if (m) JS_FreeCString(ctx, m);
    else JS_FreeValue(ctx, JS_GetException(ctx));
    JS_FreeValue(ctx, e);
    return ret;
}

EXPORT("handle")
uint8_t *handle(const char *id, uint32_t id_len, const char *name, uint32_t name_len,
                const uint8_t *payload, uint32_t payload_len, uint32_t attempt, uint32_t role) {
    init();
    JS_UpdateStackTop(rt);
    command *cmd = NULL;
    for (uint32_t i = 0; i < command_count && !cmd; i++)
        if (strlen(commands[i].name) == name_len && memcmp(commands[i].name, name, name_len) == 0)
            cmd = &commands[i];
    if (!cmd) return ret_error(RELAY_PERMANENT, "unknown command", 15);

    JSValue arg;
    if (payload_len == 0) {
        arg = JS_UNDEFINED;
    } else {
        relay_reader r = relay_reader_new(payload, payload_len);
        arg = mp_to_js(&r, 0);
        if (JS_IsException(arg)) return ret_exception();
        if (!relay_at_end(&r)) {
            JS_FreeValue(ctx, arg);
            return ret_error(RELAY_INVALID_ARGUMENT, "malformed payload (trailing bytes)", 34);
        }
    }
    static const char *const role_names[] = {"admin", "primary", "secondary"};
    JSValue call = JS_NewObject(ctx);
    JS_SetPropertyStr(ctx, call, "id", JS_NewStringLen(ctx, id, id_len));
    JS_SetPropertyStr(ctx, call, "command", JS_NewStringLen(ctx, name, name_len));
    JS_SetPropertyStr(ctx, call, "attempt", JS_NewUint32(ctx, attempt));
    JS_SetPropertyStr(ctx, call, "role", JS_NewString(ctx, role < 3 ? role_names[role] : "?"));

    JSValueConst argv[2] = {arg, call};
    JSValue res = JS_Call(ctx, cmd->run, plugin_obj, 2, argv);
    JS_FreeValue(ctx, arg);
    JS_FreeValue(ctx, call);
    if (JS_IsException(res)) return ret_exception();
    /* async run(): settle the promise now (there is no event loop) */
    if (JS_IsPromise(res)) {
        drain_jobs();
        JSPromiseStateEnum st = JS_PromiseState(ctx, res);
        JSValue v = JS_PromiseResult(ctx, res);
        JS_FreeValue(ctx, res);
        if (st == JS_PROMISE_REJECTED) { JS_Throw(ctx, v); return ret_exception(); }
        if (st == JS_PROMISE_PENDING) {
            JS_FreeValue(ctx, v);
            return ret_error(RELAY_PERMANENT, "run() returned a promise that never settled", 43);
        }
        res = v;
    }
    drain_jobs();

    memset(ret_area, 0, sizeof ret_area);
    if (!JS_IsUndefined(res)) {
        relay_writer w;
        relay_writer_init(&w);
        int rc = js_to_mp(res, &w, 0);
        JS_FreeValue(ctx, res);
        if (rc < 0) return ret_exception();
        if (w.failed) return ret_error(RELAY_PERMANENT, "out of memory encoding the reply", 32);
        ret_area[4] = 1;
        put32(ret_area + 8, (uint32_t)(uintptr_t)w.buf);
        put32(ret_area + 12, w.len);
    }
    return ret_area;
}

EXPORT("cabi_post_handle") void post_handle(uint8_t *ret) {
    (void)ret;
    arena_reset();
}
