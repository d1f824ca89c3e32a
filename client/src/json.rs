//! The one JSON <-> msgpack mapping of Relay's app side: `relay send`
//! payloads and replies, `relay watch` events, the [`crate::Client`]'s JSON
//! payloads, and `relay test` scenarios all use it, so a reply printed by
//! `relay send --json` pastes into a scenario unchanged.
//!
//! Decoding is our own small reader (not `rmpv`) because it must judge
//! *every* byte string a device or plugin can produce: it rejects the
//! reserved marker `0xc1` and trailing bytes (which `rmpv` accepts), and
//! bounds nesting ([`MAX_DEPTH`]) so a hostile reply cannot overflow the
//! caller's stack.
//!
//! Mapping (also in `docs/scenarios.md`):
//! - nil, bool, integers, floats, strings, arrays, maps map to their JSON twins;
//!   non-string map keys become their JSON text (`1` -> `"1"`).
//! - msgpack `bin` is `{"$bin": "<hex>"}`, `ext` is
//!   `{"$ext": {"type": <i8>, "data": "<hex>"}}`, a non-finite float is
//!   `{"$f64": "NaN" | "inf" | "-inf"}`.
//! - bytes that are not exactly one valid msgpack value are
//!   `{"$bytes": "<hex>"}` (a whole value only; on encode it sends the raw
//!   bytes, which is how scenarios send garbage).
//! - `{"$nil": true}` is msgpack nil (TOML has no null).

use serde_json::{Map, Number, Value as Json};

/// Deepest array/map nesting decoded; deeper values count as raw bytes.
pub const MAX_DEPTH: usize = 128;

/// A JSON value that cannot be encoded (bad hex, misplaced marker).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode value as msgpack: {0}")]
pub struct EncodeError(pub String);

/// Encodes a scenario value as one msgpack value. A top-level
/// `{"$bytes": "<hex>"}` is sent as those raw bytes instead.
pub fn json_to_msgpack(value: &Json) -> Result<Vec<u8>, EncodeError> {
    if let Some(hex) = marker(value, "$bytes") {
        let hex = hex
            .as_str()
            .ok_or_else(|| EncodeError("$bytes takes a hex string".into()))?;
        return from_hex(hex);
    }
    let mut out = Vec::new();
    encode(value, &mut out, 0)?;
    Ok(out)
}

/// Decodes one msgpack value; anything else becomes `{"$bytes": "<hex>"}`.
pub fn msgpack_to_json(bytes: &[u8]) -> Json {
    let mut reader = Reader { bytes, pos: 0 };
    match reader.value(MAX_DEPTH) {
        Some(v) if reader.pos == bytes.len() => v,
        _ => tagged("$bytes", Json::String(to_hex(bytes))),
    }
}

/// Rewrites the spellings TOML forces on authors into plain JSON:
/// `{"$nil": true}` becomes `null`, a TOML datetime becomes its string.
pub fn normalize(value: Json) -> Json {
    match value {
        Json::Object(map) => {
            if map.len() == 1 {
                if map.get("$nil") == Some(&Json::Bool(true)) {
                    return Json::Null;
                }
                if let Some(Json::String(s)) = map.get("$__toml_private_datetime") {
                    return Json::String(s.clone());
                }
            }
            Json::Object(map.into_iter().map(|(k, v)| (k, normalize(v))).collect())
        }
        Json::Array(items) => Json::Array(items.into_iter().map(normalize).collect()),
        other => other,
    }
}

/// Equality as a scenario author means it: numbers compare by value (`1`
/// equals `1.0`), objects by key set, everything else exactly.
pub fn json_matches(expected: &Json, actual: &Json) -> bool {
    match (expected, actual) {
        (Json::Number(a), Json::Number(b)) => numbers_equal(a, b),
        (Json::Array(a), Json::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| json_matches(x, y))
        }
        (Json::Object(a), Json::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, x)| b.get(k).is_some_and(|y| json_matches(x, y)))
        }
        _ => expected == actual,
    }
}

fn numbers_equal(a: &Number, b: &Number) -> bool {
    if a.is_f64() || b.is_f64() {
        return a.as_f64() == b.as_f64();
    }
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => x == y,
        _ => a.as_u64() == b.as_u64(),
    }
}

/// Parses `text` as JSON and encodes it as msgpack (with the mapping's
/// `$bin`/`$ext`/`$bytes` markers). The error says where the JSON went wrong
/// (line and column).
pub fn parse_json_payload(text: &str) -> Result<Vec<u8>, String> {
    let value: Json = serde_json::from_str(text).map_err(|e| {
        format!(
            "invalid JSON payload at line {}, column {}: {e}",
            e.line(),
            e.column()
        )
    })?;
    json_to_msgpack(&value).map_err(|e| e.to_string())
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn from_hex(hex: &str) -> Result<Vec<u8>, EncodeError> {
    let hex: String = hex.chars().filter(|c| !c.is_whitespace()).collect();
    if hex.len() % 2 == 1 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(EncodeError(format!(
            "{hex:?} is not an even number of hex digits"
        )));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|e| EncodeError(e.to_string())))
        .collect()
}

fn tagged(tag: &str, value: Json) -> Json {
    let mut map = Map::new();
    map.insert(tag.into(), value);
    Json::Object(map)
}

/// The value of a single-key object `{tag: value}`.
fn marker<'a>(value: &'a Json, tag: &str) -> Option<&'a Json> {
    match value {
        Json::Object(map) if map.len() == 1 => map.get(tag),
        _ => None,
    }
}

fn encode(value: &Json, out: &mut Vec<u8>, depth: usize) -> Result<(), EncodeError> {
    use rmp::encode as e;
    let io = |err: rmp::encode::ValueWriteError| EncodeError(err.to_string());
    if depth > MAX_DEPTH {
        return Err(EncodeError(format!(
            "nested deeper than {MAX_DEPTH} levels"
        )));
    }
    match value {
        Json::Null => e::write_nil(out).map_err(|e| EncodeError(e.to_string()))?,
        Json::Bool(b) => e::write_bool(out, *b).map_err(|e| EncodeError(e.to_string()))?,
        Json::Number(n) => {
            if let Some(u) = n.as_u64() {
                e::write_uint(out, u).map_err(io)?;
            } else if let Some(i) = n.as_i64() {
                e::write_sint(out, i).map_err(io)?;
            } else {
                e::write_f64(out, n.as_f64().unwrap_or(f64::NAN)).map_err(io)?;
            }
        }
        Json::String(s) => e::write_str(out, s).map_err(io)?,
        Json::Array(items) => {
            e::write_array_len(out, len32(items.len())?).map_err(io)?;
            for item in items {
                encode(item, out, depth + 1)?;
            }
        }
        Json::Object(map) => return encode_object(map, value, out, depth),
    }
    Ok(())
}

fn encode_object(
    map: &Map<String, Json>,
    value: &Json,
    out: &mut Vec<u8>,
    depth: usize,
) -> Result<(), EncodeError> {
    use rmp::encode as e;
    let io = |err: rmp::encode::ValueWriteError| EncodeError(err.to_string());
    let hex_of = |v: &Json, what: &str| {
        v.as_str()
            .ok_or_else(|| EncodeError(format!("{what} takes a hex string")))
            .and_then(from_hex)
    };
    if let Some(hex) = marker(value, "$bin") {
        let data = hex_of(hex, "$bin")?;
        return e::write_bin(out, &data).map_err(io);
    }
    if let Some(ext) = marker(value, "$ext") {
        let ty = ext
            .get("type")
            .and_then(Json::as_i64)
            .and_then(|t| i8::try_from(t).ok());
        let (Some(ty), Some(data)) = (ty, ext.get("data")) else {
            return Err(EncodeError(
                "$ext takes {\"type\": <i8>, \"data\": \"<hex>\"}".into(),
            ));
        };
        let data = hex_of(data, "$ext data")?;
        e::write_ext_meta(out, len32(data.len())?, ty).map_err(io)?;
        out.extend_from_slice(&data);
        return Ok(());
    }
    if let Some(f) = marker(value, "$f64") {
        let v = match f.as_str() {
            Some("NaN") => f64::NAN,
            Some("inf") => f64::INFINITY,
            Some("-inf") => f64::NEG_INFINITY,
            _ => {
                return Err(EncodeError(
                    "$f64 takes \"NaN\", \"inf\" or \"-inf\"".into(),
                ))
            }
        };
        return e::write_f64(out, v).map_err(io);
    }
    if marker(value, "$bytes").is_some() {
        return Err(EncodeError(
            "$bytes must be the whole payload, not part of it".into(),
        ));
    }
    e::write_map_len(out, len32(map.len())?).map_err(io)?;
    for (k, v) in map {
        e::write_str(out, k).map_err(io)?;
        encode(v, out, depth + 1)?;
    }
    Ok(())
}

fn len32(n: usize) -> Result<u32, EncodeError> {
    u32::try_from(n).map_err(|_| EncodeError(format!("length {n} exceeds msgpack's u32")))
}

/// A bounds-checked msgpack reader producing JSON. `None` = not valid msgpack.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.pos.checked_add(n)?;
        let slice = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(slice)
    }

    fn be<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn len(&mut self, width: usize) -> Option<usize> {
        Some(match width {
            1 => self.be::<1>()?[0] as usize,
            2 => u16::from_be_bytes(self.be()?) as usize,
            _ => u32::from_be_bytes(self.be()?) as usize,
        })
    }

    fn value(&mut self, depth: usize) -> Option<Json> {
        let marker = self.be::<1>()?[0];
        Some(match marker {
            0x00..=0x7f => Json::from(marker),
            0xe0..=0xff => Json::from(marker as i8),
            0x80..=0x8f => self.map((marker & 0x0f) as usize, depth)?,
            0x90..=0x9f => self.array((marker & 0x0f) as usize, depth)?,
            0xa0..=0xbf => self.str((marker & 0x1f) as usize)?,
            0xc0 => Json::Null,
            0xc2 => Json::Bool(false),
            0xc3 => Json::Bool(true),
            0xc4..=0xc6 => {
                let n = self.len(1 << (marker - 0xc4))?;
                tagged("$bin", Json::String(to_hex(self.take(n)?)))
            }
            0xc7..=0xc9 => {
                let n = self.len(1 << (marker - 0xc7))?;
                self.ext(n)?
            }
            0xca => float(f32::from_be_bytes(self.be()?) as f64),
            0xcb => float(f64::from_be_bytes(self.be()?)),
            0xcc => Json::from(self.be::<1>()?[0]),
            0xcd => Json::from(u16::from_be_bytes(self.be()?)),
            0xce => Json::from(u32::from_be_bytes(self.be()?)),
            0xcf => Json::from(u64::from_be_bytes(self.be()?)),
            0xd0 => Json::from(self.be::<1>()?[0] as i8),
            0xd1 => Json::from(i16::from_be_bytes(self.be()?)),
            0xd2 => Json::from(i32::from_be_bytes(self.be()?)),
            0xd3 => Json::from(i64::from_be_bytes(self.be()?)),
            0xd4..=0xd8 => self.ext(1 << (marker - 0xd4))?,
            0xd9..=0xdb => {
                let n = self.len(1 << (marker - 0xd9))?;
                self.str(n)?
            }
            0xdc | 0xdd => {
                let n = self.len(if marker == 0xdc { 2 } else { 4 })?;
                self.array(n, depth)?
            }
            0xde | 0xdf => {
                let n = self.len(if marker == 0xde { 2 } else { 4 })?;
                self.map(n, depth)?
            }
            // 0xc1 is reserved: never valid msgpack.
            0xc1 => return None,
        })
    }

    fn str(&mut self, n: usize) -> Option<Json> {
        let s = std::str::from_utf8(self.take(n)?).ok()?;
        Some(Json::String(s.to_owned()))
    }

    fn ext(&mut self, n: usize) -> Option<Json> {
        let ty = self.be::<1>()?[0] as i8;
        let data = to_hex(self.take(n)?);
        let mut body = Map::new();
        body.insert("type".into(), Json::from(ty));
        body.insert("data".into(), Json::String(data));
        Some(tagged("$ext", Json::Object(body)))
    }

    /// Every element takes at least one byte, so a count larger than the
    /// bytes left is invalid; checking it first stops huge preallocation.
    fn remaining_fits(&self, n: usize) -> bool {
        n <= self.bytes.len() - self.pos
    }

    fn array(&mut self, n: usize, depth: usize) -> Option<Json> {
        if depth == 0 || !self.remaining_fits(n) {
            return None;
        }
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.value(depth - 1)?);
        }
        Some(Json::Array(items))
    }

    fn map(&mut self, n: usize, depth: usize) -> Option<Json> {
        if depth == 0 || !self.remaining_fits(n.checked_mul(2)?) {
            return None;
        }
        let mut map = Map::new();
        for _ in 0..n {
            let key = match self.value(depth - 1)? {
                Json::String(s) => s,
                other => other.to_string(),
            };
            let value = self.value(depth - 1)?;
            map.insert(key, value);
        }
        Some(Json::Object(map))
    }
}

fn float(f: f64) -> Json {
    match Number::from_f64(f) {
        Some(n) => Json::Number(n),
        None if f.is_nan() => tagged("$f64", Json::from("NaN")),
        None if f > 0.0 => tagged("$f64", Json::from("inf")),
        None => tagged("$f64", Json::from("-inf")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn json_round_trips_through_msgpack() {
        let v = serde_json::json!({"a": [1, -2, 3.5, "x", null, true], "b": {"c": "d"}});
        assert_eq!(msgpack_to_json(&json_to_msgpack(&v).unwrap()), v);
    }

    #[test]
    fn bad_json_reports_the_position() {
        let err = parse_json_payload("{\"a\": 1,\n  oops}").unwrap_err();
        assert!(err.contains("line 2, column 3"), "{err}");
    }

    #[test]
    fn deep_msgpack_is_shown_as_bytes_not_overflowed() {
        let mut bomb = vec![0x91u8; 10_000];
        bomb.push(0xc0);
        let shown = msgpack_to_json(&bomb);
        assert!(shown.get("$bytes").is_some(), "{shown}");
    }

    #[test]
    fn binary_and_odd_keys_are_shown_in_the_scenario_spelling() {
        // {1: bin [1, 2]}
        let bytes = [0x81, 0x01, 0xc4, 0x02, 0x01, 0x02];
        assert_eq!(
            msgpack_to_json(&bytes),
            serde_json::json!({"1": {"$bin": "0102"}})
        );
        assert_eq!(
            parse_json_payload(r#"{"1": {"$bin": "0102"}}"#).unwrap(),
            [0x81, 0xa1, b'1', 0xc4, 0x02, 0x01, 0x02]
        );
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_plain_values() {
        let v = json!({"a": 1, "b": [-1, 300, -70000, 1.5, "x", null, true], "c": {"d": u64::MAX}});
        let bytes = json_to_msgpack(&v).unwrap();
        assert_eq!(msgpack_to_json(&bytes), v);
    }

    #[test]
    fn integers_use_the_compact_encoding() {
        assert_eq!(json_to_msgpack(&json!(1)).unwrap(), [0x01]);
        assert_eq!(json_to_msgpack(&json!(-1)).unwrap(), [0xff]);
        assert_eq!(
            json_to_msgpack(&json!({"by": 2})).unwrap(),
            [0x81, 0xa2, b'b', b'y', 0x02]
        );
    }

    #[test]
    fn markers_round_trip() {
        for v in [
            json!({"$bin": "00ff"}),
            json!({"$ext": {"type": -1, "data": "0102"}}),
            json!({"$f64": "NaN"}),
            json!([{"$f64": "-inf"}, {"$bin": ""}]),
        ] {
            assert_eq!(msgpack_to_json(&json_to_msgpack(&v).unwrap()), v, "{v}");
        }
        assert_eq!(
            json_to_msgpack(&json!({"$bytes": "c1 ff"})).unwrap(),
            [0xc1, 0xff]
        );
        assert!(json_to_msgpack(&json!([{"$bytes": "00"}])).is_err());
        assert!(json_to_msgpack(&json!({"$bytes": "abc"})).is_err());
    }

    #[test]
    fn invalid_msgpack_is_shown_as_bytes() {
        for bad in [
            &[0xc1][..],
            &[],
            &[0x01, 0x02],
            &[0x92, 0x01],
            &[0xdd, 0xff, 0xff, 0xff, 0xff],
            &[0xa2, 0xff, 0xfe],
        ] {
            assert_eq!(
                msgpack_to_json(bad),
                json!({"$bytes": to_hex(bad)}),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let mut deep = vec![0x91; 100_000];
        deep.push(0xc0);
        assert_eq!(
            msgpack_to_json(&deep)["$bytes"].as_str().map(str::len),
            Some(deep.len() * 2)
        );
    }

    #[test]
    fn non_string_keys_become_text() {
        assert_eq!(msgpack_to_json(&[0x81, 0x01, 0xc3]), json!({"1": true}));
    }

    #[test]
    fn numbers_match_by_value() {
        assert!(json_matches(&json!({"v": 1}), &json!({"v": 1.0})));
        assert!(!json_matches(&json!({"v": 1}), &json!({"v": 2})));
        assert!(!json_matches(&json!({"v": 1}), &json!({"v": 1, "w": 2})));
        assert!(json_matches(&json!([u64::MAX]), &json!([u64::MAX])));
    }

    #[test]
    fn normalize_spells_null_and_dates() {
        let v = json!({"a": {"$nil": true}, "b": [{"$__toml_private_datetime": "1979-05-27"}]});
        assert_eq!(normalize(v), json!({"a": null, "b": ["1979-05-27"]}));
    }
}
