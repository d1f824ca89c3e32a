/*
 * relay_plugin_impl.h: the implementation part of the Relay C/C++ kit.
 * Not included directly: define RELAY_PLUGIN_IMPLEMENTATION before including
 * relay_plugin.h in exactly one source file, which pulls this in.
 *
 * It holds the host imports, the world's exports (describe, handle, the
 * post-returns and cabi_realloc), the bump arena, memcpy & co. for a
 * freestanding module, message formatting and UTF-8 mending.
 */
#ifndef RELAY_PLUGIN_IMPLEMENTED
#define RELAY_PLUGIN_IMPLEMENTED

#ifndef RELAY_PLUGIN_H
#error "define RELAY_PLUGIN_IMPLEMENTATION and include relay_plugin.h instead"
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define RELAY__IMPORT(NAME) \
    __attribute__((import_module("relay:plugin/host@0.1.0"), import_name(NAME)))
#define RELAY__EXPORT(NAME) __attribute__((export_name(NAME), visibility("default")))

RELAY__IMPORT("log") void relay__host_log(uint32_t level, const void *msg, uint32_t len);
RELAY__IMPORT("kv-get") void relay__host_kv_get(const void *key, uint32_t len, void *ret);
RELAY__IMPORT("kv-set")
void relay__host_kv_set(const void *key, uint32_t klen, const void *val, uint32_t vlen, void *ret);
RELAY__IMPORT("kv-delete") void relay__host_kv_delete(const void *key, uint32_t len);
RELAY__IMPORT("now-ms") int64_t relay__host_now_ms(void);
RELAY__IMPORT("emit")
void relay__host_emit(const void *name, uint32_t nlen, const void *payload, uint32_t plen);

/* clang lowers struct copies and loops to these; with -mbulk-memory the
 * builtins become memory.copy / memory.fill, otherwise plain loops (LLVM
 * does not turn a loop inside a function named memcpy back into a call). */
void *memcpy(void *dst, const void *src, size_t n) {
#ifdef __wasm_bulk_memory__
    __builtin_memcpy(dst, src, n);
#else
    uint8_t *d = (uint8_t *)dst;
    const uint8_t *s = (const uint8_t *)src;
    while (n--) *d++ = *s++;
#endif
    return dst;
}
void *memmove(void *dst, const void *src, size_t n) {
#ifdef __wasm_bulk_memory__
    __builtin_memmove(dst, src, n);
#else
    uint8_t *d = (uint8_t *)dst;
    const uint8_t *s = (const uint8_t *)src;
    if (d < s) {
        while (n--) *d++ = *s++;
    } else {
        while (n--) d[n] = s[n];
    }
#endif
    return dst;
}
void *memset(void *dst, int c, size_t n) {
#ifdef __wasm_bulk_memory__
    __builtin_memset(dst, c, n);
#else
    uint8_t *d = (uint8_t *)dst;
    while (n--) *d++ = (uint8_t)c;
#endif
    return dst;
}
int memcmp(const void *a, const void *b, size_t n) {
    const uint8_t *x = (const uint8_t *)a, *y = (const uint8_t *)b;
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i]) return x[i] < y[i] ? -1 : 1;
    return 0;
}

uint32_t relay_strlen(const char *s) {
    uint32_t n = 0;
    while (s[n]) n++;
    return n;
}

#include "relay_msgpack.h" /* its implementation part */

/* ---- Arena: from __heap_base up, growing memory on demand ---- */

extern unsigned char __heap_base;
static uintptr_t relay__top;

static uintptr_t relay__base(void) { return (uintptr_t)&__heap_base; }

static bool relay__ensure(uint64_t end) {
    uint64_t have = (uint64_t)__builtin_wasm_memory_size(0) << 16;
    if (end <= have) return true;
    uint64_t pages = (end - have + 0xffff) >> 16;
    return __builtin_wasm_memory_grow(0, (size_t)pages) != (size_t)-1;
}

void *relay_alloc(uint32_t size, uint32_t align) {
    if (!relay__top) relay__top = relay__base();
    if (align == 0) align = 1;
    uint64_t p = ((uint64_t)relay__top + align - 1) & ~(uint64_t)(align - 1);
    uint64_t end = p + size;
    if (end > 0xffffffffull || !relay__ensure(end)) return NULL;
    relay__top = (uintptr_t)end;
    return (void *)(uintptr_t)p;
}

void *relay_realloc(void *old, uint32_t old_size, uint32_t new_size, uint32_t align) {
    if (!old) return relay_alloc(new_size, align);
    uintptr_t at = (uintptr_t)old;
    if (at + old_size == relay__top) { /* the newest block: grow in place */
        uint64_t end = (uint64_t)at + new_size;
        if (end > 0xffffffffull || !relay__ensure(end)) return NULL;
        relay__top = (uintptr_t)end;
        return old;
    }
    if (new_size <= old_size) return old;
    void *p = relay_alloc(new_size, align);
    if (p) memcpy(p, old, old_size);
    return p;
}

static void relay__reset(void) { relay__top = relay__base(); }

RELAY__EXPORT("cabi_realloc")
void *cabi_realloc(void *old, uint32_t old_size, uint32_t align, uint32_t new_size) {
    void *p = relay_realloc(old, old_size, new_size, align);
    if (!p) __builtin_trap(); /* the host reports the memory limit */
    return p;
}

/* ---- UTF-8: the host refuses strings that are not, so messages are mended ---- */

static bool relay__utf8_ok(const uint8_t *s, uint32_t n, uint32_t *bad) {
    uint32_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        uint32_t k, min, cp;
        if (c < 0x80) { i++; continue; }
        if ((c & 0xe0) == 0xc0) { k = 1; min = 0x80; cp = c & 0x1f; }
        else if ((c & 0xf0) == 0xe0) { k = 2; min = 0x800; cp = c & 0x0f; }
        else if ((c & 0xf8) == 0xf0) { k = 3; min = 0x10000; cp = c & 0x07; }
        else goto fail;
        if (n - i <= k) goto fail;
        for (uint32_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80) goto fail;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) goto fail;
        i += k + 1;
        continue;
    fail:
        *bad = i;
        return false;
    }
    return true;
}

/* `s` as valid UTF-8: itself, or an arena copy with bad bytes as '?'. */
static relay_str relay__mend(const char *s, uint32_t n) {
    relay_str out = {s, n};
    uint32_t bad;
    if (relay__utf8_ok((const uint8_t *)s, n, &bad)) return out;
    char *copy = (char *)relay_alloc(n, 1);
    if (!copy) { out.ptr = "?"; out.len = 1; return out; }
    memcpy(copy, s, n);
    uint32_t at = 0;
    while (!relay__utf8_ok((const uint8_t *)copy + at, n - at, &bad)) {
        copy[at + bad] = '?';
        at += bad + 1;
    }
    out.ptr = copy;
    return out;
}

/* ---- Results ---- */

relay_result relay_ok(void) {
    relay_result r;
    r.tag = 0; r.kind = 0; r.data = NULL; r.len = 0;
    return r;
}

relay_result relay_reply(const void *data, uint32_t len) {
    relay_result r = relay_ok();
    if (len) { r.tag = 1; r.data = (const uint8_t *)data; r.len = len; }
    return r;
}

relay_result relay_reply_writer(const relay_writer *w) {
    if (w->failed) return relay_error(RELAY_PERMANENT, "out of memory building the reply");
    return relay_reply(w->buf, w->len);
}

relay_result relay_error(relay_error_kind kind, const char *message) {
    relay_str m = relay__mend(message, relay_strlen(message));
    relay_result r;
    r.tag = 2; r.kind = (uint8_t)kind; r.data = (const uint8_t *)m.ptr; r.len = m.len;
    return r;
}

relay_result relay_errorf(relay_error_kind kind, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const char *m = relay_vfmt(fmt, ap);
    va_end(ap);
    return relay_error(kind, m);
}

/* ---- Formatting ---- */

static void relay__put_u64(relay_writer *w, uint64_t v, unsigned base) {
    char digits[20];
    int n = 0;
    do { digits[n++] = "0123456789abcdef"[v % base]; v /= base; } while (v);
    while (n) relay_write_raw(w, &digits[--n], 1);
}

static void relay__put_f64(relay_writer *w, double v, int prec) {
    if (v != v) { relay_write_raw(w, "nan", 3); return; }
    if (v < 0) { relay_write_raw(w, "-", 1); v = -v; }
    if (v > 1.7976931348623157e308) { relay_write_raw(w, "inf", 3); return; }
    int exp10 = 0;
    while (v >= 1e18) { v /= 10; exp10++; }
    uint64_t scale = 1;
    for (int i = 0; i < prec; i++) scale *= 10;
    uint64_t ip = (uint64_t)v;
    uint64_t frac = (uint64_t)((v - (double)ip) * (double)scale + 0.5);
    if (frac >= scale) { ip++; frac -= scale; }
    relay__put_u64(w, ip, 10);
    if (prec > 0) {
        char d[9];
        for (int i = prec - 1; i >= 0; i--) { d[i] = (char)('0' + frac % 10); frac /= 10; }
        relay_write_raw(w, ".", 1);
        relay_write_raw(w, d, (uint32_t)prec);
    }
    if (exp10) { relay_write_raw(w, "e+", 2); relay__put_u64(w, (uint64_t)exp10, 10); }
}

const char *relay_vfmt(const char *fmt, va_list ap) {
    relay_writer w;
    relay_writer_init(&w);
    for (const char *p = fmt; *p; p++) {
        if (*p != '%') { relay_write_raw(&w, p, 1); continue; }
        p++;
        int prec = -1, longs = 0;
        if (*p == '.') {
            p++;
            if (*p == '*') { prec = va_arg(ap, int); p++; }
            else for (prec = 0; *p >= '0' && *p <= '9'; p++) prec = prec * 10 + (*p - '0');
        }
        while (*p == 'l') { longs++; p++; }
        switch (*p) {
        case '%': relay_write_raw(&w, "%", 1); break;
        case 'c': { char c = (char)va_arg(ap, int); relay_write_raw(&w, &c, 1); break; }
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s) s = "(null)";
            uint32_t n = 0;
            while (s[n] && (prec < 0 || n < (uint32_t)prec)) n++;
            relay_write_raw(&w, s, n);
            break;
        }
        case 'd': case 'i': {
            int64_t v = longs >= 2 ? va_arg(ap, long long) : longs ? va_arg(ap, long) : va_arg(ap, int);
            if (v < 0) relay_write_raw(&w, "-", 1);
            relay__put_u64(&w, v < 0 ? 0 - (uint64_t)v : (uint64_t)v, 10);
            break;
        }
        case 'u': case 'x': {
            uint64_t v = longs >= 2 ? va_arg(ap, unsigned long long)
                         : longs ? va_arg(ap, unsigned long) : va_arg(ap, unsigned);
            relay__put_u64(&w, v, *p == 'x' ? 16 : 10);
            break;
        }
        case 'f': relay__put_f64(&w, va_arg(ap, double), prec < 0 ? 6 : prec > 9 ? 9 : prec); break;
        case '\0': p--; break;
        default: relay_write_raw(&w, p - 1, 2); break;
        }
    }
    relay_write_raw(&w, "", 1); /* the NUL */
    return w.failed ? "" : (const char *)w.buf;
}

const char *relay_fmt(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const char *s = relay_vfmt(fmt, ap);
    va_end(ap);
    return s;
}

/* ---- Host capabilities ---- */

void relay_log(relay_log_level level, const char *message) {
    relay_str m = relay__mend(message, relay_strlen(message));
    relay__host_log((uint32_t)level, m.ptr, m.len);
}

void relay_logf(relay_log_level level, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    relay_log(level, relay_vfmt(fmt, ap));
    va_end(ap);
}

bool relay_kv_get(const char *key, relay_bytes *value) {
    /* option<list<u8>>: tag u8 @0, ptr @4, len @8 */
    uint32_t area[3] = {0, 0, 0};
    relay__host_kv_get(key, relay_strlen(key), area);
    if ((area[0] & 0xff) != 1) return false;
    value->ptr = (const uint8_t *)(uintptr_t)area[1];
    value->len = area[2];
    return true;
}

relay_kv_status relay_kv_set(const char *key, const void *value, uint32_t len) {
    /* result<_, kv-error>: tag u8 @0, kv-error u8 @1 */
    uint8_t area[2] = {0, 0};
    relay__host_kv_set(key, relay_strlen(key), value, len, area);
    return area[0] ? (relay_kv_status)(area[1] + 1) : RELAY_KV_OK;
}

void relay_kv_delete(const char *key) { relay__host_kv_delete(key, relay_strlen(key)); }

uint64_t relay_now_ms(void) { return (uint64_t)relay__host_now_ms(); }

void relay_emit(const char *name, const void *payload, uint32_t len) {
    relay__host_emit(name, relay_strlen(name), payload, len);
}

/* ---- The world's exports ---- */

relay_reader relay_payload(const relay_call *call) {
    return relay_reader_new(call->payload.ptr, call->payload.len);
}

bool relay_payload_field(const relay_call *call, const char *key, relay_reader *value) {
    relay_reader r = relay_payload(call);
    return relay_map_find(&r, key, value);
}

static void relay__put32(uint8_t *at, uint32_t v) {
    at[0] = (uint8_t)v; at[1] = (uint8_t)(v >> 8); at[2] = (uint8_t)(v >> 16); at[3] = (uint8_t)(v >> 24);
}

static void relay__put_ptr(uint8_t *at, const void *p) { relay__put32(at, (uint32_t)(uintptr_t)p); }

/* plugin-info (24 B): name @0, version @8, commands @16; command-spec
 * (24 B): name @0, roles @8 (one byte per role), budget option<u32>: tag @16,
 * value @20. Built in the arena; cabi_post_describe resets it. */
RELAY__EXPORT("describe") uint8_t *relay__describe(void) {
    const relay_plugin *p = &relay_plugin_table;
    uint8_t *info = (uint8_t *)relay_alloc(24, 4);
    uint8_t *specs = (uint8_t *)relay_alloc(24 * p->command_count, 4);
    if (!info || !specs) __builtin_trap();
    relay__put_ptr(info, p->name);
    relay__put32(info + 4, relay_strlen(p->name));
    relay__put_ptr(info + 8, p->version);
    relay__put32(info + 12, relay_strlen(p->version));
    relay__put_ptr(info + 16, specs);
    relay__put32(info + 20, p->command_count);
    static const uint8_t all_roles[3] = {RELAY_ADMIN, RELAY_PRIMARY, RELAY_SECONDARY};
    for (uint32_t i = 0; i < p->command_count; i++) {
        const relay_command *c = &p->commands[i];
        uint8_t *s = specs + 24 * i;
        uint8_t *roles = (uint8_t *)relay_alloc(3, 1);
        if (!roles) __builtin_trap();
        uint32_t n = 0;
        for (uint32_t r = 0; r < 3; r++)
            if (c->roles & (1u << r)) roles[n++] = all_roles[r];
        memset(s, 0, 24);
        relay__put_ptr(s, c->name);
        relay__put32(s + 4, relay_strlen(c->name));
        relay__put_ptr(s + 8, roles);
        relay__put32(s + 12, n);
        if (c->budget_ms) { s[16] = 1; relay__put32(s + 20, c->budget_ms); }
    }
    return info;
}

RELAY__EXPORT("cabi_post_describe") void relay__post_describe(uint8_t *ret) {
    (void)ret;
    relay__reset();
}

/* result<option<list<u8>>, handler-error> (16 B): tag @0; ok: option tag @4,
 * list @8/@12; err: error-kind @4, message @8/@12. */
static uint8_t relay__ret[16] __attribute__((aligned(4)));

RELAY__EXPORT("handle")
uint8_t *relay__handle(const char *id, uint32_t id_len, const char *name, uint32_t name_len,
                       const uint8_t *payload, uint32_t payload_len, uint32_t attempt,
                       uint32_t role) {
    const relay_plugin *p = &relay_plugin_table;
    relay_result r;
    const relay_command *cmd = NULL;
    for (uint32_t i = 0; i < p->command_count && !cmd; i++) {
        const char *n = p->commands[i].name;
        if (relay_strlen(n) == name_len && memcmp(n, name, name_len) == 0) cmd = &p->commands[i];
    }
    if (cmd) {
        relay_call call;
        call.id.ptr = id; call.id.len = id_len;
        call.name.ptr = name; call.name.len = name_len;
        call.payload.ptr = payload; call.payload.len = payload_len;
        call.attempt = attempt;
        call.role = (relay_role)role;
        r = cmd->handler(&call);
    } else {
        r = relay_error(RELAY_PERMANENT, "unknown command");
    }
    memset(relay__ret, 0, sizeof relay__ret);
    if (r.tag == 2) {
        relay__ret[0] = 1;
        relay__ret[4] = r.kind;
    } else {
        relay__ret[4] = r.tag; /* option: 1 = some(reply) */
    }
    relay__put_ptr(relay__ret + 8, r.data);
    relay__put32(relay__ret + 12, r.len);
    return relay__ret;
}

RELAY__EXPORT("cabi_post_handle") void relay__post_handle(uint8_t *ret) {
    (void)ret;
    relay__reset();
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* RELAY_PLUGIN_IMPLEMENTED */
