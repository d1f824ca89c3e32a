/*
 * relay_msgpack.h: the msgpack reader and writer of the Relay C/C++ kit.
 * Include relay_plugin.h, not this file.
 *
 * Payloads come from anyone allowed to publish a command, so the reader
 * treats them as hostile: every read is bounds-checked, a malformed value
 * sets a sticky error instead of trapping, and skipping is iterative with a
 * depth bound. Reading the wrong type returns false and leaves the reader
 * where it was, so a handler can try another type or answer
 * invalid-argument. Strings and binaries are returned in place (pointers
 * into the payload), never copied.
 *
 * The writer appends to a buffer in the call's arena and always picks the
 * smallest encoding; if memory runs out it sets `failed` and ignores further
 * writes, so a handler checks once, at the end (relay_reply_writer does).
 */
#ifndef RELAY_MSGPACK_H
#define RELAY_MSGPACK_H

#ifndef RELAY_PLUGIN_H
#error "include relay_plugin.h instead of relay_msgpack.h"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Deepest nesting of arrays/maps the reader accepts. */
#define RELAY_MP_MAX_DEPTH 64

typedef enum relay_mp_type {
    RELAY_MP_NONE = 0, /* end of input, or the reader is in error */
    RELAY_MP_NIL,
    RELAY_MP_BOOL,
    RELAY_MP_INT, /* any integer: relay_read_int / relay_read_uint */
    RELAY_MP_FLOAT,
    RELAY_MP_STR,
    RELAY_MP_BIN,
    RELAY_MP_ARRAY,
    RELAY_MP_MAP,
    RELAY_MP_EXT
} relay_mp_type;

typedef enum relay_mp_error {
    RELAY_MP_OK = 0,
    RELAY_MP_TRUNCATED = 1, /* a value runs past the end of the input */
    RELAY_MP_INVALID = 2,   /* the reserved byte 0xc1 */
    RELAY_MP_TOO_DEEP = 3   /* nesting over RELAY_MP_MAX_DEPTH */
} relay_mp_error;

typedef struct relay_reader {
    const uint8_t *data;
    uint32_t len;
    uint32_t pos;
    relay_mp_error error; /* sticky: once set, every read fails */
} relay_reader;

relay_reader relay_reader_new(const void *data, uint32_t len);
/* The type of the next value (RELAY_MP_NONE at the end or on error). */
relay_mp_type relay_peek(relay_reader *r);
bool relay_at_end(const relay_reader *r);

bool relay_read_nil(relay_reader *r);
bool relay_read_bool(relay_reader *r, bool *out);
/* An integer in int64_t range (any msgpack int encoding). */
bool relay_read_int(relay_reader *r, int64_t *out);
/* A non-negative integer. */
bool relay_read_uint(relay_reader *r, uint64_t *out);
/* A float32 or float64. */
bool relay_read_float(relay_reader *r, double *out);
/* Any integer or float, as a double. */
bool relay_read_number(relay_reader *r, double *out);
/* A str (bytes in place, NOT NUL-terminated, UTF-8 not checked). */
bool relay_read_str(relay_reader *r, relay_str *out);
bool relay_read_bin(relay_reader *r, relay_bytes *out);
/* Headers: the caller then reads `count` values (2 * count for a map). */
bool relay_read_array(relay_reader *r, uint32_t *count);
bool relay_read_map(relay_reader *r, uint32_t *count);
/* Skips one whole value, checking it is well-formed. */
bool relay_skip(relay_reader *r);
/* Skips one whole value and returns its encoded bytes (to copy it). */
bool relay_read_raw(relay_reader *r, relay_bytes *out);
/* With `map` before a map: positions `value` at the value of the first
 * str key equal to `key`. `map` itself does not move. False when it is not
 * a map, is malformed before the key, or has no such key. */
bool relay_map_find(const relay_reader *map, const char *key, relay_reader *value);
/* A str equal to the NUL-terminated `lit`. */
bool relay_str_eq(relay_str s, const char *lit);

typedef struct relay_writer {
    uint8_t *buf; /* in the arena: valid until the call ends */
    uint32_t len;
    uint32_t cap;
    bool failed; /* out of memory: later writes are dropped */
} relay_writer;

void relay_writer_init(relay_writer *w);
/* Appends `n` uninitialized bytes and returns them (NULL on failure). */
uint8_t *relay_write_reserve(relay_writer *w, uint32_t n);
void relay_write_raw(relay_writer *w, const void *data, uint32_t n);
void relay_write_nil(relay_writer *w);
void relay_write_bool(relay_writer *w, bool v);
void relay_write_int(relay_writer *w, int64_t v);
void relay_write_uint(relay_writer *w, uint64_t v);
void relay_write_f64(relay_writer *w, double v);
/* A NUL-terminated string; relay_write_strn for one with a length. */
void relay_write_str(relay_writer *w, const char *s);
void relay_write_strn(relay_writer *w, const char *s, uint32_t len);
void relay_write_bin(relay_writer *w, const void *data, uint32_t len);
/* Header of a bin whose `len` bytes the caller appends next (reserve/raw). */
void relay_write_bin_header(relay_writer *w, uint32_t len);
void relay_write_array(relay_writer *w, uint32_t count);
/* A map of `count` pairs: write key, value, key, value... */
void relay_write_map(relay_writer *w, uint32_t count);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* RELAY_MSGPACK_H */

/* ======================================================================== */
#if defined(RELAY_PLUGIN_IMPLEMENTED) && !defined(RELAY_MSGPACK_IMPLEMENTED)
/* Emitted from relay_plugin.h's implementation part, after memcpy & co. */
#define RELAY_MSGPACK_IMPLEMENTED

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Reader ---- */

/* One decoded header: `size` header bytes, then `body` bytes of payload
 * (str/bin/ext); `n` is the length or element count. */
typedef struct relay__head {
    relay_mp_type type;
    uint32_t size;
    uint32_t body;
    uint32_t n;
    bool neg;
    uint64_t u; /* int bits (two's complement when neg), float bits, bool */
} relay__head;

relay_reader relay_reader_new(const void *data, uint32_t len) {
    relay_reader r;
    r.data = (const uint8_t *)data;
    r.len = data ? len : 0;
    r.pos = 0;
    r.error = RELAY_MP_OK;
    return r;
}

bool relay_at_end(const relay_reader *r) { return r->error == RELAY_MP_OK && r->pos >= r->len; }

static uint64_t relay__be(const uint8_t *p, uint32_t n) {
    uint64_t v = 0;
    for (uint32_t i = 0; i < n; i++) v = (v << 8) | p[i];
    return v;
}

/* Decodes the header at r->pos; on malformed input sets r->error. */
static bool relay__head_at(relay_reader *r, relay__head *h) {
    if (r->error) return false;
    if (r->pos >= r->len) { r->error = RELAY_MP_TRUNCATED; return false; }
    const uint8_t *p = r->data + r->pos;
    uint32_t left = r->len - r->pos;
    uint8_t b = p[0];
    uint32_t extra = 0; /* header bytes after the first */
    h->size = 1; h->body = 0; h->n = 0; h->neg = false; h->u = 0;
    if (b <= 0x7f) { h->type = RELAY_MP_INT; h->u = b; return true; }
    if (b >= 0xe0) { h->type = RELAY_MP_INT; h->neg = true; h->u = (uint64_t)(int64_t)(int8_t)b; return true; }
    if (b <= 0x8f) { h->type = RELAY_MP_MAP; h->n = b & 0x0f; return true; }
    if (b <= 0x9f) { h->type = RELAY_MP_ARRAY; h->n = b & 0x0f; return true; }
    if (b <= 0xbf) { h->type = RELAY_MP_STR; h->n = h->body = b & 0x1f; goto body; }
    switch (b) {
    case 0xc0: h->type = RELAY_MP_NIL; return true;
    case 0xc1: r->error = RELAY_MP_INVALID; return false;
    case 0xc2: case 0xc3: h->type = RELAY_MP_BOOL; h->u = b & 1; return true;
    case 0xc4: case 0xc5: case 0xc6: h->type = RELAY_MP_BIN; extra = 1u << (b - 0xc4); break;
    case 0xc7: case 0xc8: case 0xc9: h->type = RELAY_MP_EXT; extra = 1u << (b - 0xc7); break;
    case 0xca: h->type = RELAY_MP_FLOAT; extra = 4; break;
    case 0xcb: h->type = RELAY_MP_FLOAT; extra = 8; break;
    case 0xcc: case 0xcd: case 0xce: case 0xcf: h->type = RELAY_MP_INT; extra = 1u << (b - 0xcc); break;
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: h->type = RELAY_MP_INT; extra = 1u << (b - 0xd0); break;
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
        h->type = RELAY_MP_EXT; h->n = h->body = 1u << (b - 0xd4); extra = 1; break;
    case 0xd9: case 0xda: case 0xdb: h->type = RELAY_MP_STR; extra = 1u << (b - 0xd9); break;
    case 0xdc: case 0xdd: h->type = RELAY_MP_ARRAY; extra = 2u << (b - 0xdc); break;
    default: h->type = RELAY_MP_MAP; extra = 2u << (b - 0xde); break; /* 0xde, 0xdf */
    }
    if (left - 1 < extra) { r->error = RELAY_MP_TRUNCATED; return false; }
    h->size = 1 + extra;
    if (h->type == RELAY_MP_EXT) {
        if (b >= 0xc7 && b <= 0xc9) { h->n = h->body = (uint32_t)relay__be(p + 1, extra - 0); h->size += 1; }
        if (left < h->size) { r->error = RELAY_MP_TRUNCATED; return false; }
    } else if (h->type == RELAY_MP_INT) {
        uint64_t v = relay__be(p + 1, extra);
        if (b >= 0xd0) { /* signed: sign-extend */
            uint32_t bits = extra * 8;
            if (bits < 64 && (v >> (bits - 1)) & 1) v |= ~0ull << bits;
            h->neg = (int64_t)v < 0;
        }
        h->u = v;
        return true;
    } else if (h->type == RELAY_MP_FLOAT) {
        h->u = relay__be(p + 1, extra);
        if (extra == 4) { /* widen the float32 bits */
            uint32_t bits32 = (uint32_t)h->u;
            float f;
            memcpy(&f, &bits32, 4);
            double d = f;
            memcpy(&h->u, &d, 8);
        }
        return true;
    } else {
        h->n = (uint32_t)relay__be(p + 1, extra);
        if (h->type == RELAY_MP_STR || h->type == RELAY_MP_BIN) h->body = h->n;
        else return true; /* array/map: elements are checked as they are read */
    }
body:
    if (left - h->size < h->body || left < h->size) { r->error = RELAY_MP_TRUNCATED; return false; }
    return true;
}

/* The header at r->pos if it has type `t` (the reader does not move). */
static bool relay__expect(relay_reader *r, relay_mp_type t, relay__head *h) {
    relay_reader probe = *r;
    if (!relay__head_at(&probe, h)) { r->error = probe.error; return false; }
    return h->type == t;
}

static void relay__advance(relay_reader *r, const relay__head *h) { r->pos += h->size + h->body; }

relay_mp_type relay_peek(relay_reader *r) {
    relay__head h;
    relay_reader probe = *r;
    if (probe.pos >= probe.len && !probe.error) return RELAY_MP_NONE;
    if (!relay__head_at(&probe, &h)) { r->error = probe.error; return RELAY_MP_NONE; }
    return h.type;
}

bool relay_read_nil(relay_reader *r) {
    relay__head h;
    if (!relay__expect(r, RELAY_MP_NIL, &h)) return false;
    relay__advance(r, &h);
    return true;
}

bool relay_read_bool(relay_reader *r, bool *out) {
    relay__head h;
    if (!relay__expect(r, RELAY_MP_BOOL, &h)) return false;
    *out = h.u != 0;
    relay__advance(r, &h);
    return true;
}

bool relay_read_int(relay_reader *r, int64_t *out) {
    relay__head h;
    if (!relay__expect(r, RELAY_MP_INT, &h)) return false;
    if (!h.neg && h.u > (uint64_t)INT64_MAX) return false;
    *out = (int64_t)h.u;
    relay__advance(r, &h);
    return true;
}

bool relay_read_uint(relay_reader *r, uint64_t *out) {
    relay__head h;
    if (!relay__expect(r, RELAY_MP_INT, &h) || h.neg) return false;
    *out = h.u;
    relay__advance(r, &h);
    return true;
}

bool relay_read_float(relay_reader *r, double *out) {
    relay__head h;
    if (!relay__expect(r, RELAY_MP_FLOAT, &h)) return false;
    memcpy(out, &h.u, 8);
    relay__advance(r, &h);
    return true;
}

bool relay_read_number(relay_reader *r, double *out) {
    relay__head h;
    if (relay__expect(r, RELAY_MP_FLOAT, &h)) return relay_read_float(r, out);
    if (r->error || h.type != RELAY_MP_INT) return false;
    *out = h.neg ? (double)(int64_t)h.u : (double)h.u;
    relay__advance(r, &h);
    return true;
}

bool relay_read_str(relay_reader *r, relay_str *out) {
    relay__head h;
    if (!relay__expect(r, RELAY_MP_STR, &h)) return false;
    out->ptr = (const char *)r->data + r->pos + h.size;
    out->len = h.body;
    relay__advance(r, &h);
    return true;
}

bool relay_read_bin(relay_reader *r, relay_bytes *out) {
    relay__head h;
    if (!relay__expect(r, RELAY_MP_BIN, &h)) return false;
    out->ptr = r->data + r->pos + h.size;
    out->len = h.body;
    relay__advance(r, &h);
    return true;
}

bool relay_read_array(relay_reader *r, uint32_t *count) {
    relay__head h;
    if (!relay__expect(r, RELAY_MP_ARRAY, &h)) return false;
    *count = h.n;
    relay__advance(r, &h);
    return true;
}

bool relay_read_map(relay_reader *r, uint32_t *count) {
    relay__head h;
    if (!relay__expect(r, RELAY_MP_MAP, &h)) return false;
    *count = h.n;
    relay__advance(r, &h);
    return true;
}

bool relay_skip(relay_reader *r) {
    /* remaining[d]: values still to skip at depth d; no recursion. */
    uint64_t remaining[RELAY_MP_MAX_DEPTH];
    int depth = 0;
    relay_reader w = *r;
    remaining[0] = 1;
    for (;;) {
        while (depth >= 0 && remaining[depth] == 0) depth--;
        if (depth < 0) break;
        relay__head h;
        if (!relay__head_at(&w, &h)) { r->error = w.error; return false; }
        remaining[depth]--;
        relay__advance(&w, &h);
        if ((h.type == RELAY_MP_ARRAY || h.type == RELAY_MP_MAP) && h.n) {
            if (depth + 1 >= RELAY_MP_MAX_DEPTH) { r->error = RELAY_MP_TOO_DEEP; return false; }
            remaining[++depth] = h.type == RELAY_MP_MAP ? 2ull * h.n : h.n;
        }
    }
    r->pos = w.pos;
    return true;
}

bool relay_read_raw(relay_reader *r, relay_bytes *out) {
    uint32_t start = r->pos;
    if (!relay_skip(r)) return false;
    out->ptr = r->data + start;
    out->len = r->pos - start;
    return true;
}

bool relay_str_eq(relay_str s, const char *lit) {
    uint32_t n = relay_strlen(lit);
    return n == s.len && memcmp(s.ptr, lit, n) == 0;
}

bool relay_map_find(const relay_reader *map, const char *key, relay_reader *value) {
    relay_reader r = *map;
    uint32_t n;
    if (!relay_read_map(&r, &n)) return false;
    for (uint32_t i = 0; i < n; i++) {
        relay_str k;
        if (relay_read_str(&r, &k)) {
            if (relay_str_eq(k, key)) { *value = r; return true; }
        } else if (!relay_skip(&r)) {
            return false;
        }
        if (!relay_skip(&r)) return false;
    }
    return false;
}

/* ---- Writer ---- */

void relay_writer_init(relay_writer *w) {
    w->buf = NULL; w->len = 0; w->cap = 0; w->failed = false;
}

uint8_t *relay_write_reserve(relay_writer *w, uint32_t n) {
    if (w->failed) return NULL;
    if (n > 0xffffffffu - w->len) { w->failed = true; return NULL; }
    uint32_t need = w->len + n;
    if (need > w->cap) {
        uint32_t cap = w->cap < 64 ? 64 : w->cap;
        while (cap < need) cap = cap > 0x7fffffffu ? need : cap * 2;
        uint8_t *buf = (uint8_t *)relay_realloc(w->buf, w->cap, cap, 1);
        if (!buf) { w->failed = true; return NULL; }
        w->buf = buf;
        w->cap = cap;
    }
    uint8_t *at = w->buf + w->len;
    w->len = need;
    return at;
}

void relay_write_raw(relay_writer *w, const void *data, uint32_t n) {
    uint8_t *at = relay_write_reserve(w, n);
    if (at && n) memcpy(at, data, n);
}

/* A marker byte followed by `n` big-endian bytes of `v`. */
static void relay__tagged(relay_writer *w, uint8_t tag, uint64_t v, uint32_t n) {
    uint8_t *at = relay_write_reserve(w, 1 + n);
    if (!at) return;
    at[0] = tag;
    for (uint32_t i = 0; i < n; i++) at[1 + i] = (uint8_t)(v >> (8 * (n - 1 - i)));
}

void relay_write_nil(relay_writer *w) { relay__tagged(w, 0xc0, 0, 0); }
void relay_write_bool(relay_writer *w, bool v) { relay__tagged(w, v ? 0xc3 : 0xc2, 0, 0); }

void relay_write_uint(relay_writer *w, uint64_t v) {
    if (v <= 0x7f) relay__tagged(w, (uint8_t)v, 0, 0);
    else if (v <= 0xff) relay__tagged(w, 0xcc, v, 1);
    else if (v <= 0xffff) relay__tagged(w, 0xcd, v, 2);
    else if (v <= 0xffffffffu) relay__tagged(w, 0xce, v, 4);
    else relay__tagged(w, 0xcf, v, 8);
}

void relay_write_int(relay_writer *w, int64_t v) {
    if (v >= 0) relay_write_uint(w, (uint64_t)v);
    else if (v >= -32) relay__tagged(w, (uint8_t)(int8_t)v, 0, 0);
    else if (v >= -128) relay__tagged(w, 0xd0, (uint64_t)v, 1);
    else if (v >= -32768) relay__tagged(w, 0xd1, (uint64_t)v, 2);
    else if (v >= -2147483647 - 1) relay__tagged(w, 0xd2, (uint64_t)v, 4);
    else relay__tagged(w, 0xd3, (uint64_t)v, 8);
}

void relay_write_f64(relay_writer *w, double v) {
    uint64_t bits;
    memcpy(&bits, &v, 8);
    relay__tagged(w, 0xcb, bits, 8);
}

/* fix (one byte, `fix | n` when n <= fixmax) or marker + 8/16/32-bit length. */
static void relay__len_header(relay_writer *w, uint32_t n, uint8_t fix, uint32_t fixmax,
                              uint8_t m8, uint8_t m16, uint8_t m32) {
    if (fix && n <= fixmax) relay__tagged(w, (uint8_t)(fix | n), 0, 0);
    else if (m8 && n <= 0xff) relay__tagged(w, m8, n, 1);
    else if (n <= 0xffff) relay__tagged(w, m16, n, 2);
    else relay__tagged(w, m32, n, 4);
}

void relay_write_strn(relay_writer *w, const char *s, uint32_t len) {
    relay__len_header(w, len, 0xa0, 31, 0xd9, 0xda, 0xdb);
    relay_write_raw(w, s, len);
}

void relay_write_str(relay_writer *w, const char *s) { relay_write_strn(w, s, relay_strlen(s)); }

void relay_write_bin_header(relay_writer *w, uint32_t len) {
    relay__len_header(w, len, 0, 0, 0xc4, 0xc5, 0xc6);
}

void relay_write_bin(relay_writer *w, const void *data, uint32_t len) {
    relay_write_bin_header(w, len);
    relay_write_raw(w, data, len);
}

void relay_write_array(relay_writer *w, uint32_t count) {
    relay__len_header(w, count, 0x90, 15, 0, 0xdc, 0xdd);
}

void relay_write_map(relay_writer *w, uint32_t count) {
    relay__len_header(w, count, 0x80, 15, 0, 0xde, 0xdf);
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* RELAY_PLUGIN_IMPLEMENTATION */
