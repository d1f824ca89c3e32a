// msgpack for Relay plugins: a bounds-checked reader over guest memory and a
// growable writer. Payloads, replies, events and (by convention) kv values are
// msgpack, so every handler needs both; this file has no host imports and no
// ABI knowledge, so it is usable (and testable) on its own.
//
// The reader never traps on bad input: a plugin receives whatever bytes a
// sender published, and a trap would cost a whole instance for what is an
// `invalid-argument`. Every read checks the remaining length first; the first
// problem is kept in `error` and every later read returns a default value, so
// a handler can read several fields and check once.

/** Deepest nesting `skip`/`valid` follow; deeper input is an error, not a stack overflow. */
export const MAX_DEPTH: i32 = 64;

/** What the next value is, from its first byte. */
export enum Kind { Nil, Bool, Int, Float, Str, Bin, Array, Map, Ext, Invalid, End }

/** Big-endian loads (msgpack is big-endian, wasm little-endian). */
// @ts-ignore: decorator
@inline function be16(p: usize): u32 { return <u32>bswap<u16>(load<u16>(p)); }
// @ts-ignore: decorator
@inline function be32(p: usize): u32 { return bswap<u32>(load<u32>(p)); }
// @ts-ignore: decorator
@inline function be64(p: usize): u64 { return bswap<u64>(load<u64>(p)); }

/** True when `[p, p + n)` is well-formed UTF-8 (no overlongs, surrogates or values past U+10FFFF). */
export function validUtf8(p: usize, n: usize): bool {
  const end = p + n;
  while (p < end) {
    const b = <u32>load<u8>(p);
    if (b < 0x80) { p++; continue; }
    let need: usize, min: u32, cp: u32;
    if ((b & 0xe0) == 0xc0) { need = 1; min = 0x80; cp = b & 0x1f; }
    else if ((b & 0xf0) == 0xe0) { need = 2; min = 0x800; cp = b & 0x0f; }
    else if ((b & 0xf8) == 0xf0) { need = 3; min = 0x10000; cp = b & 0x07; }
    else return false;
    if (end - p <= need) return false;
    for (let i: usize = 1; i <= need; i++) {
      const c = <u32>load<u8>(p + i);
      if ((c & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (c & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    p += need + 1;
  }
  return true;
}

/** Code points in valid UTF-8 (the bytes that do not continue a sequence). */
export function utf8Chars(p: usize, n: usize): i32 {
  let count = 0;
  for (let i: usize = 0; i < n; i++) if ((load<u8>(p + i) & 0xc0) != 0x80) count++;
  return count;
}

// Whole size of a value whose size its first byte decides (header included);
// 0 for values with a length field (str, bin, array, map, ext 8/16/32).
function fixedSize(b: u32): u64 {
  if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) return 1;
  if (b == 0xcc || b == 0xd0) return 2;
  if (b == 0xcd || b == 0xd1) return 3;
  if (b == 0xce || b == 0xd2 || b == 0xca) return 5;
  if (b == 0xcf || b == 0xd3 || b == 0xcb) return 9;
  if (b >= 0xd4 && b <= 0xd8) return 2 + (<u64>1 << (b - 0xd4)); // fixext: type + 2^k bytes
  return 0;
}

/**
 * Reads msgpack values in place, from `[ptr, ptr + len)`.
 *
 * The bytes are not copied: a reader over a command's payload is valid for
 * that call only (the arena is reset when the call returns).
 */
export class Reader {
  /** The first problem met, or "" while everything read so far was fine. */
  error: string = "";
  private pos: usize;
  private end: usize;

  constructor(ptr: usize, len: usize) {
    this.pos = ptr;
    this.end = ptr + len;
  }

  /** A reader over a byte array (which must outlive it). */
  static of(bytes: Uint8Array): Reader {
    return new Reader(bytes.dataStart, <usize>bytes.length);
  }

  get ok(): bool { return this.error.length == 0; }
  /** Bytes not read yet. */
  get remaining(): usize { return this.end - this.pos; }

  /** Records `msg` (the first one wins) and returns false, so `return this.fail(..)` reads well. */
  fail(msg: string): bool {
    if (this.error.length == 0) this.error = msg;
    return false;
  }

  private need(n: u64): bool {
    if (!this.ok) return false;
    if (<u64>(this.end - this.pos) < n) return this.fail("truncated msgpack");
    return true;
  }

  /** The kind of the next value, without consuming it. */
  peek(): Kind {
    if (!this.ok) return Kind.Invalid;
    if (this.pos >= this.end) return Kind.End;
    const b = <u32>load<u8>(this.pos);
    if (b <= 0x7f || b >= 0xe0 || (b >= 0xcc && b <= 0xd3)) return Kind.Int;
    if (b <= 0x8f || b == 0xde || b == 0xdf) return Kind.Map;
    if (b <= 0x9f || b == 0xdc || b == 0xdd) return Kind.Array;
    if (b <= 0xbf || (b >= 0xd9 && b <= 0xdb)) return Kind.Str;
    if (b == 0xc0) return Kind.Nil;
    if (b == 0xc2 || b == 0xc3) return Kind.Bool;
    if (b >= 0xc4 && b <= 0xc6) return Kind.Bin;
    if (b == 0xca || b == 0xcb) return Kind.Float;
    if ((b >= 0xc7 && b <= 0xc9) || (b >= 0xd4 && b <= 0xd8)) return Kind.Ext;
    return Kind.Invalid; // 0xc1, never used
  }

  private wrongType(want: string): bool {
    return this.fail("expected " + want);
  }

  /** Consumes a nil; false (and an error) for anything else. */
  readNil(): bool {
    if (!this.need(1)) return false;
    if (load<u8>(this.pos) != 0xc0) return this.wrongType("nil");
    this.pos++;
    return true;
  }

  readBool(): bool {
    if (!this.need(1)) return false;
    const b = <u32>load<u8>(this.pos);
    if (b != 0xc2 && b != 0xc3) return this.wrongType("a boolean");
    this.pos++;
    return b == 0xc3;
  }

  /**
   * Any msgpack integer that fits i64; 0 and an error otherwise. The header
   * is consumed only on success, so a caller may try `readUint` next.
   */
  readInt(): i64 {
    if (!this.need(1)) return 0;
    const b = <u32>load<u8>(this.pos);
    if (b == 0xcf) { // uint64 may not fit
      if (!this.need(9)) return 0;
      const v = be64(this.pos + 1);
      if (v > <u64>i64.MAX_VALUE) { this.fail("integer does not fit i64"); return 0; }
      this.pos += 9;
      return <i64>v;
    }
    return this.int64(b, "an integer");
  }

  /** Any non-negative msgpack integer; 0 and an error otherwise. */
  readUint(): u64 {
    if (!this.need(1)) return 0;
    const b = <u32>load<u8>(this.pos);
    if (b == 0xcf) {
      if (!this.need(9)) return 0;
      this.pos += 9;
      return be64(this.pos - 8);
    }
    const save = this.pos;
    const v = this.int64(b, "a non-negative integer");
    if (this.ok && v < 0) {
      this.pos = save;
      this.fail("expected a non-negative integer");
      return 0;
    }
    return <u64>v;
  }

  // Every integer encoding but uint64, as i64.
  private int64(b: u32, want: string): i64 {
    if (b <= 0x7f) { this.pos++; return <i64>b; }
    if (b >= 0xe0) { this.pos++; return <i64><i8>b; }
    let size: usize;
    switch (b) {
      case 0xcc: case 0xd0: size = 1; break;
      case 0xcd: case 0xd1: size = 2; break;
      case 0xce: case 0xd2: size = 4; break;
      case 0xd3: size = 8; break;
      default: this.wrongType(want); return 0;
    }
    if (!this.need(1 + size)) return 0;
    const p = this.pos + 1;
    this.pos += 1 + size;
    switch (b) {
      case 0xcc: return <i64>load<u8>(p);
      case 0xcd: return <i64>be16(p);
      case 0xce: return <i64>be32(p);
      case 0xd0: return <i64>load<i8>(p);
      case 0xd1: return <i64><i16>be16(p);
      case 0xd2: return <i64><i32>be32(p);
      default: return <i64>be64(p);
    }
  }

  /** A float32/float64, or an integer converted; 0 and an error otherwise. */
  readFloat(): f64 {
    if (!this.need(1)) return 0;
    const b = <u32>load<u8>(this.pos);
    if (b == 0xca) {
      if (!this.need(5)) return 0;
      this.pos += 5;
      return <f64>reinterpret<f32>(be32(this.pos - 4));
    }
    if (b == 0xcb) {
      if (!this.need(9)) return 0;
      this.pos += 9;
      return reinterpret<f64>(be64(this.pos - 8));
    }
    if (b == 0xcf) return <f64>this.readUint();
    return <f64>this.int64(b, "a number");
  }

  // Length of a str (`str` true) or bin header; -1 and an error when it is not one.
  private lenHeader(str: bool): i64 {
    if (!this.need(1)) return -1;
    const b = <u32>load<u8>(this.pos);
    if (str && b >= 0xa0 && b <= 0xbf) { this.pos++; return <i64>(b & 0x1f); }
    const base: u32 = str ? 0xd9 : 0xc4;
    if (b < base || b > base + 2) { this.wrongType(str ? "a string" : "binary data"); return -1; }
    const width: usize = <usize>1 << (b - base);
    if (!this.need(1 + width)) return -1;
    const p = this.pos + 1;
    const n: u32 = width == 1 ? <u32>load<u8>(p) : width == 2 ? be16(p) : be32(p);
    this.pos += 1 + width;
    return <i64>n;
  }

  /**
   * A str's bytes, checked to be UTF-8: `[strPtr, strPtr + strLen)` after a
   * true return. Lets a handler measure or compare without making a string.
   */
  strPtr: usize = 0;
  strLen: usize = 0;
  readStrBytes(): bool {
    const n = this.lenHeader(true);
    if (n < 0 || !this.need(<u64>n)) return false;
    if (!validUtf8(this.pos, <usize>n)) return this.fail("string is not UTF-8");
    this.strPtr = this.pos;
    this.strLen = <usize>n;
    this.pos += <usize>n;
    return true;
  }

  /** A str as an AssemblyScript (UTF-16) string; "" and an error otherwise. */
  readStr(): string {
    if (!this.readStrBytes()) return "";
    return String.UTF8.decodeUnsafe(this.strPtr, this.strLen);
  }

  /** A bin's bytes (copied); an empty array and an error otherwise. */
  readBin(): Uint8Array {
    const n = this.lenHeader(false);
    if (n < 0 || !this.need(<u64>n)) return new Uint8Array(0);
    const out = new Uint8Array(<i32>n);
    memory.copy(out.dataStart, this.pos, <usize>n);
    this.pos += <usize>n;
    return out;
  }

  // Count of an array (`map` false) or map header; -1 and an error otherwise.
  private countHeader(map: bool): i64 {
    if (!this.need(1)) return -1;
    const b = <u32>load<u8>(this.pos);
    const fix: u32 = map ? 0x80 : 0x90;
    if ((b & 0xf0) == fix) { this.pos++; return <i64>(b & 0x0f); }
    const base: u32 = map ? 0xde : 0xdc;
    if (b != base && b != base + 1) { this.wrongType(map ? "a map" : "an array"); return -1; }
    const width: usize = b == base ? 2 : 4;
    if (!this.need(1 + width)) return -1;
    const n = width == 2 ? be16(this.pos + 1) : be32(this.pos + 1);
    this.pos += 1 + width;
    return <i64>n;
  }

  /** Consumes an array header: its element count, or -1 and an error. */
  readArray(): i64 { return this.countHeader(false); }
  /** Consumes a map header: its entry count (key + value pairs), or -1 and an error. */
  readMap(): i64 { return this.countHeader(true); }

  /** Skips one whole value (nested up to MAX_DEPTH); false and an error if it is malformed. */
  skip(): bool { return this.skipAt(0); }

  private skipAt(depth: i32): bool {
    if (depth >= MAX_DEPTH) return this.fail("msgpack nested too deeply");
    if (!this.need(1)) return false;
    const b = <u32>load<u8>(this.pos);
    let items: i64 = 0; // nested values to skip after the header
    let bytes: u64 = fixedSize(b); // whole size of a value with no length field
    const kind = this.peek();
    if (kind == Kind.Str || kind == Kind.Bin) {
      const n = this.lenHeader(kind == Kind.Str);
      if (n < 0) return false;
      bytes = <u64>n;
    } else if (kind == Kind.Array) {
      items = this.readArray();
    } else if (kind == Kind.Map) {
      const n = this.readMap();
      items = n < 0 ? n : n * 2;
    } else if (kind == Kind.Ext && bytes == 0) { // ext 8/16/32: length, type, data
      const width: usize = <usize>1 << (b - 0xc7);
      if (!this.need(1 + width)) return false;
      const p = this.pos + 1;
      bytes = 1 + <u64>(width == 1 ? <u32>load<u8>(p) : width == 2 ? be16(p) : be32(p));
      this.pos += 1 + width;
    } else if (kind == Kind.Invalid) {
      return this.fail("invalid msgpack byte 0x" + b.toString(16));
    }
    if (items < 0 || !this.need(bytes)) return false;
    this.pos += <usize>bytes;
    for (let i: i64 = 0; i < items; i++) if (!this.skipAt(depth + 1)) return false;
    return true;
  }

  /**
   * True when the rest of the input is exactly one well-formed value. Does
   * not move the reader; records an error when false.
   */
  valid(): bool {
    if (!this.ok) return false;
    const save = this.pos;
    if (this.pos >= this.end) return this.fail("empty payload");
    const good = this.skip() && (this.pos == this.end || this.fail("trailing bytes after msgpack value"));
    this.pos = save;
    return good;
  }

  /**
   * The value under string key `key` of the map at the reader's position:
   * a new reader over exactly that value, or null. Null with `ok` still true
   * means the key is absent; null with an error means this is not a map or
   * it is malformed up to that key. The reader itself does not move, so
   * several keys can be looked up in turn. The first matching key wins.
   */
  get(key: string): Reader | null {
    if (!this.ok) return null;
    const save = this.pos;
    const want = String.UTF8.encode(key);
    const wantLen = <usize>want.byteLength;
    let found: Reader | null = null;
    const n = this.readMap();
    for (let i: i64 = 0; i < n; i++) {
      let isKey = false;
      if (this.peek() == Kind.Str) {
        if (!this.readStrBytes()) break;
        isKey = this.strLen == wantLen && memory.compare(this.strPtr, changetype<usize>(want), wantLen) == 0;
      } else if (!this.skip()) break; // a key of another type never matches
      const at = this.pos;
      if (!this.skip()) break;
      if (isKey) { found = new Reader(at, this.pos - at); break; }
    }
    this.pos = save;
    return this.ok ? found : null;
  }
}

/**
 * Builds msgpack into a growable buffer in the arena, smallest encoding for
 * every integer and length (what the host's decoder and other SDKs produce).
 * Every method returns the writer, so a reply reads as one chain:
 * `new Writer().map(2).str("allowed").bool(true).str("remaining").int(3)`.
 */
export class Writer {
  private buf: usize = 0;
  private len: usize = 0;
  private cap: usize = 0;

  /** Start of the encoded bytes (0 while empty) and their count. */
  get ptr(): usize { return this.buf; }
  get length(): i32 { return <i32>this.len; }

  private reserve(n: usize): usize {
    if (this.len + n > this.cap) {
      let cap = this.cap < 64 ? <usize>64 : this.cap * 2;
      while (cap < this.len + n) cap *= 2;
      // The stub runtime grows the last block in place, so a writer built
      // without other allocations in between costs no copies.
      this.buf = this.buf == 0 ? heap.alloc(cap) : heap.realloc(this.buf, cap);
      this.cap = cap;
    }
    const at = this.buf + this.len;
    this.len += n;
    return at;
  }

  private byte(b: u32): Writer { store<u8>(this.reserve(1), b); return this; }
  private tag16(tag: u32, v: u32): Writer { const p = this.reserve(3); store<u8>(p, tag); store<u16>(p + 1, bswap<u16>(<u16>v)); return this; }
  private tag32(tag: u32, v: u32): Writer { const p = this.reserve(5); store<u8>(p, tag); store<u32>(p + 1, bswap<u32>(v)); return this; }
  private tag64(tag: u32, v: u64): Writer { const p = this.reserve(9); store<u8>(p, tag); store<u64>(p + 1, bswap<u64>(v)); return this; }

  nil(): Writer { return this.byte(0xc0); }
  bool(v: bool): Writer { return this.byte(v ? 0xc3 : 0xc2); }

  uint(v: u64): Writer {
    if (v < 0x80) return this.byte(<u32>v);
    if (v < 0x100) { this.byte(0xcc); return this.byte(<u32>v); }
    if (v < 0x10000) return this.tag16(0xcd, <u32>v);
    if (v < 0x100000000) return this.tag32(0xce, <u32>v);
    return this.tag64(0xcf, v);
  }

  int(v: i64): Writer {
    if (v >= 0) return this.uint(<u64>v);
    if (v >= -32) return this.byte(<u32>(<i32>v & 0xff));
    if (v >= -128) { this.byte(0xd0); return this.byte(<u32>(<i32>v & 0xff)); }
    if (v >= -32768) return this.tag16(0xd1, <u32>(<i32>v & 0xffff));
    if (v >= -2147483648) return this.tag32(0xd2, <u32><i32>v);
    return this.tag64(0xd3, <u64>v);
  }

  float(v: f64): Writer { return this.tag64(0xcb, reinterpret<u64>(v)); }

  // A str or bin header for `n` bytes; bin has no fix form.
  private lenHeader(n: u32, str: bool): Writer {
    if (str && n < 32) return this.byte(0xa0 | n);
    const base: u32 = str ? 0xd9 : 0xc4;
    if (n < 0x100) { this.byte(base); return this.byte(n); }
    if (n < 0x10000) return this.tag16(base + 1, n);
    return this.tag32(base + 2, n);
  }

  /** A string, encoded to UTF-8 (a lone surrogate becomes U+FFFD, so the output is always valid). */
  str(s: string): Writer {
    const n = <usize>String.UTF8.byteLength(s);
    this.lenHeader(<u32>n, true);
    String.UTF8.encodeUnsafe(changetype<usize>(s), s.length, this.reserve(n), false, String.UTF8.ErrorMode.REPLACE);
    return this;
  }

  bin(bytes: Uint8Array): Writer {
    this.lenHeader(<u32>bytes.length, false);
    return this.raw(bytes);
  }

  /** A bin header alone: follow it with exactly `n` bytes (`raw`, `repeat`). */
  binHeader(n: u32): Writer { return this.lenHeader(n, false); }

  array(n: u32): Writer { return (n < 16) ? this.byte(0x90 | n) : n < 0x10000 ? this.tag16(0xdc, n) : this.tag32(0xdd, n); }
  /** A map of `n` entries: follow it with n key, value pairs. */
  map(n: u32): Writer { return (n < 16) ? this.byte(0x80 | n) : n < 0x10000 ? this.tag16(0xde, n) : this.tag32(0xdf, n); }

  /** Bytes appended as they are (already-encoded msgpack, or a bin's body). */
  raw(bytes: Uint8Array): Writer {
    const n = <usize>bytes.length;
    memory.copy(this.reserve(n), bytes.dataStart, n);
    return this;
  }

  /** `n` copies of `byte`. */
  repeat(byte: u8, n: u32): Writer {
    memory.fill(this.reserve(<usize>n), byte, <usize>n);
    return this;
  }

  /** A copy of the bytes written so far. */
  toBytes(): Uint8Array {
    const out = new Uint8Array(<i32>this.len);
    memory.copy(out.dataStart, this.buf, this.len);
    return out;
  }
}
