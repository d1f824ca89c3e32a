//! JSON <-> msgpack for the app side: `relay send` takes a JSON payload, and
//! replies (msgpack) are shown as JSON. Depth is checked before decoding
//! (rmpv and rmp-serde recurse without a cap).

use relay_core::msgpack::{validate, DEFAULT_MAX_DEPTH};
use rmpv::Value;
use serde_json::{Map, Number, Value as Json};

/// Encodes a JSON value as one msgpack value (maps stay maps with string keys).
pub fn json_to_msgpack(value: &Json) -> Vec<u8> {
    // Serializing a JSON value into a Vec cannot fail: every JSON value has a msgpack form.
    rmp_serde::to_vec_named(value).unwrap_or_default()
}

/// Parses `text` as JSON and encodes it as msgpack. The error says where the
/// JSON went wrong (line and column).
pub fn parse_json_payload(text: &str) -> Result<Vec<u8>, String> {
    let value: Json = serde_json::from_str(text).map_err(|e| {
        format!(
            "invalid JSON payload at line {}, column {}: {e}",
            e.line(),
            e.column()
        )
    })?;
    Ok(json_to_msgpack(&value))
}

/// Decodes one msgpack value for display. Binary becomes an array of byte
/// values, extension types `{"ext": type, "data": [...]}`, non-string map keys
/// their JSON text, NaN/infinite floats `null`.
pub fn msgpack_to_json(bytes: &[u8]) -> Result<Json, String> {
    validate(bytes, DEFAULT_MAX_DEPTH).map_err(|e| format!("invalid msgpack: {e}"))?;
    let mut reader = bytes;
    let value =
        rmpv::decode::read_value(&mut reader).map_err(|e| format!("invalid msgpack: {e}"))?;
    Ok(to_json(value))
}

fn to_json(value: Value) -> Json {
    match value {
        Value::Nil => Json::Null,
        Value::Boolean(b) => Json::Bool(b),
        Value::Integer(i) => {
            if let Some(u) = i.as_u64() {
                Json::Number(u.into())
            } else if let Some(s) = i.as_i64() {
                Json::Number(s.into())
            } else {
                Json::Null
            }
        }
        Value::F32(f) => Number::from_f64(f.into()).map_or(Json::Null, Json::Number),
        Value::F64(f) => Number::from_f64(f).map_or(Json::Null, Json::Number),
        Value::String(s) => Json::String(s.into_str().unwrap_or_else(|| "<invalid utf-8>".into())),
        Value::Binary(b) => Json::Array(b.into_iter().map(|x| Json::Number(x.into())).collect()),
        Value::Array(items) => Json::Array(items.into_iter().map(to_json).collect()),
        Value::Map(entries) => {
            let mut map = Map::new();
            for (k, v) in entries {
                let key = match k {
                    Value::String(s) => s.into_str().unwrap_or_default(),
                    other => to_json(other).to_string(),
                };
                map.insert(key, to_json(v));
            }
            Json::Object(map)
        }
        Value::Ext(kind, data) => serde_json::json!({ "ext": kind, "data": data }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trips_through_msgpack() {
        let v = json!({"a": [1, -2, 3.5, "x", null, true], "b": {"c": "d"}});
        assert_eq!(msgpack_to_json(&json_to_msgpack(&v)).unwrap(), v);
    }

    #[test]
    fn bad_json_reports_the_position() {
        let err = parse_json_payload("{\"a\": 1,\n  oops}").unwrap_err();
        assert!(err.contains("line 2, column 3"), "{err}");
    }

    #[test]
    fn deep_msgpack_is_refused_not_overflowed() {
        let mut bomb = vec![0x91u8; 10_000];
        bomb.push(0xc0);
        assert!(msgpack_to_json(&bomb).is_err());
    }

    #[test]
    fn binary_and_odd_keys_are_shown() {
        let mut bytes = Vec::new();
        rmpv::encode::write_value(
            &mut bytes,
            &Value::Map(vec![(Value::from(1), Value::Binary(vec![1, 2]))]),
        )
        .unwrap();
        assert_eq!(msgpack_to_json(&bytes).unwrap(), json!({"1": [1, 2]}));
    }
}
