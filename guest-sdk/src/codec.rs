//! Payload decoding and reply encoding (msgpack via rmp-serde).
//!
//! Role in the data path: between the world's byte lists and the handler's
//! serde types. Decoding is depth-bounded ([`MAX_PAYLOAD_DEPTH`]) because
//! rmp-serde recurses once per nesting level and a guest stack is only
//! 16 KiB: a hostile payload must become `invalid-argument`, not a stack
//! overflow. Replies use named (map) encoding so structs arrive as JSON-like
//! maps, which is what callers and the scenario files expect.

use crate::{Ctx, Error};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Deepest array/map nesting a payload (or stored kv value) may have.
pub const MAX_PAYLOAD_DEPTH: usize = 32;

/// msgpack `nil`: what an empty payload is first read as.
const MSGPACK_NIL: &[u8] = &[0xc0];
/// msgpack `{}`: what an empty payload is read as when the type refuses nil.
const MSGPACK_EMPTY_MAP: &[u8] = &[0x80];

/// A type a handler can take as its payload.
///
/// Implemented for every `serde::Deserialize` type and for [`Raw`]. An empty
/// payload (the command had none) decodes as msgpack `nil` if the type accepts
/// it (`Option<T>`, `()`), otherwise as an empty map, so a request struct
/// whose fields all have defaults accepts "no payload" too.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a command payload",
    label = "the payload type must implement `serde::Deserialize` (owned) or be `relay_guest::Raw`",
    note = "add `#[derive(Deserialize)]` to the type, or take `Raw` for the undecoded msgpack bytes"
)]
pub trait Payload: Sized {
    /// Decode the command's payload bytes.
    fn from_payload(bytes: &[u8]) -> Result<Self, Error>;
}

/// A type a handler can return as its reply.
///
/// Implemented for every `serde::Serialize` type (encoded as named msgpack)
/// and for [`Raw`] (sent as is). A handler returning `()` sends no reply.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a command reply",
    label = "the reply type must implement `serde::Serialize` or be `relay_guest::Raw`",
    note = "add `#[derive(Serialize)]` to the type, or return `()` for no reply"
)]
pub trait Reply {
    /// Encode into the reply bytes (`None` = no reply).
    fn into_reply(self) -> Result<Option<Vec<u8>>, Error>;
}

/// Undecoded msgpack bytes, for handlers that pass data through (`echo`).
///
/// As a payload it is the command's bytes untouched (empty when there was no
/// payload); as a reply it is sent byte for byte, and an empty `Raw` means
/// "no reply".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Raw(pub Vec<u8>);

impl<T: DeserializeOwned> Payload for T {
    fn from_payload(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.is_empty() {
            return decode(MSGPACK_NIL)
                .or_else(|_| decode(MSGPACK_EMPTY_MAP))
                .map_err(|err| Error::invalid_argument(join("missing payload: ", &err)));
        }
        decode(bytes).map_err(|err| Error::invalid_argument(join("invalid payload: ", &err)))
    }
}

impl Payload for Raw {
    fn from_payload(bytes: &[u8]) -> Result<Self, Error> {
        Ok(Raw(bytes.to_vec()))
    }
}

impl<T: Serialize> Reply for T {
    fn into_reply(self) -> Result<Option<Vec<u8>>, Error> {
        encode(&self)
            .map(Some)
            .map_err(|err| Error::permanent(join("reply does not encode: ", &err)))
    }
}

impl Reply for Raw {
    fn into_reply(self) -> Result<Option<Vec<u8>>, Error> {
        Ok(if self.0.is_empty() {
            None
        } else {
            Some(self.0)
        })
    }
}

/// Decode one msgpack value that must fill `bytes` exactly, depth-bounded.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut deserializer = rmp_serde::Deserializer::new(bytes);
    deserializer.set_max_depth(MAX_PAYLOAD_DEPTH);
    let value = T::deserialize(&mut deserializer).map_err(|err| err.to_string())?;
    if !deserializer.get_ref().is_empty() {
        return Err(String::from("trailing bytes after the msgpack value"));
    }
    Ok(value)
}

/// Encode with field names (maps, not arrays) so replies read like JSON.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    rmp_serde::to_vec_named(value).map_err(|err| err.to_string())
}

fn join(prefix: &str, detail: &str) -> String {
    let mut message = String::with_capacity(prefix.len() + detail.len());
    message.push_str(prefix);
    message.push_str(detail);
    message
}

/// Handler `fn(&mut Ctx, T) -> Result<R, Error>`: decode, call, encode.
pub fn run_payload<T: Payload, R: Reply>(
    ctx: &mut Ctx,
    payload: &[u8],
    handler: impl FnOnce(&mut Ctx, T) -> Result<R, Error>,
) -> Result<Option<Vec<u8>>, Error> {
    let request = T::from_payload(payload)?;
    handler(ctx, request)?.into_reply()
}

/// Handler `fn(&mut Ctx, T) -> Result<(), Error>`: no reply.
pub fn run_payload_unit<T: Payload>(
    ctx: &mut Ctx,
    payload: &[u8],
    handler: impl FnOnce(&mut Ctx, T) -> Result<(), Error>,
) -> Result<Option<Vec<u8>>, Error> {
    let request = T::from_payload(payload)?;
    handler(ctx, request)?;
    Ok(None)
}

/// Handler `fn(&mut Ctx) -> Result<R, Error>`: the payload is ignored.
pub fn run_plain<R: Reply>(
    ctx: &mut Ctx,
    _payload: &[u8],
    handler: impl FnOnce(&mut Ctx) -> Result<R, Error>,
) -> Result<Option<Vec<u8>>, Error> {
    handler(ctx)?.into_reply()
}

/// Handler `fn(&mut Ctx) -> Result<(), Error>`: payload ignored, no reply.
pub fn run_plain_unit(
    ctx: &mut Ctx,
    _payload: &[u8],
    handler: impl FnOnce(&mut Ctx) -> Result<(), Error>,
) -> Result<Option<Vec<u8>>, Error> {
    handler(ctx)?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Config {
        version: String,
        replicas: u32,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default)]
    struct AllDefaults {
        by: Option<i64>,
    }

    #[derive(Serialize)]
    struct Value {
        value: i64,
    }

    fn msgpack(value: serde_json::Value) -> Vec<u8> {
        rmp_serde::to_vec_named(&value).expect("test value encodes")
    }

    #[test]
    fn decodes_a_map_payload_into_the_struct() {
        let bytes = msgpack(json!({"version": "1.2.0", "replicas": 3}));
        let config = Config::from_payload(&bytes).expect("decodes");
        assert_eq!(
            config,
            Config {
                version: "1.2.0".into(),
                replicas: 3
            }
        );
    }

    #[test]
    fn malformed_payload_is_invalid_argument_with_the_serde_reason() {
        let err = Config::from_payload(&msgpack(json!({"version": "1.2.0"})))
            .expect_err("replicas missing");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(
            err.message().contains("missing field `replicas`"),
            "{}",
            err.message()
        );

        let err = Config::from_payload(&[0xc1]).expect_err("0xc1 is never valid msgpack");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(
            err.message().starts_with("invalid payload: "),
            "{}",
            err.message()
        );
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = msgpack(json!(7));
        bytes.push(0x01);
        let err = u32::from_payload(&bytes).expect_err("trailing byte");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(
            err.message().contains("trailing bytes"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn empty_payload_reads_as_nil_then_as_empty_map() {
        assert_eq!(
            Option::<Config>::from_payload(&[]).expect("nil -> None"),
            None
        );
        assert_eq!(
            AllDefaults::from_payload(&[]).expect("{} -> defaults"),
            AllDefaults::default()
        );
        let err = Config::from_payload(&[]).expect_err("required fields");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(
            err.message().starts_with("missing payload: "),
            "{}",
            err.message()
        );
    }

    #[test]
    fn deep_nesting_is_refused_not_recursed() {
        // 10,000 nested one-element arrays would overflow a 16 KiB guest stack.
        let mut deep = vec![0x91; 10_000];
        deep.push(0xc0);
        let err = serde::de::IgnoredAny::from_payload(&deep).expect_err("depth bounded");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.message().contains("depth"), "{}", err.message());

        let mut shallow = vec![0x91; MAX_PAYLOAD_DEPTH - 1];
        shallow.push(0xc0);
        serde::de::IgnoredAny::from_payload(&shallow).expect("nesting within the bound decodes");
    }

    #[test]
    fn replies_are_named_maps() {
        let bytes = Value { value: 42 }
            .into_reply()
            .expect("encodes")
            .expect("some");
        // fixmap(1), fixstr(5) "value", positive fixint 42
        assert_eq!(bytes, [&[0x81, 0xa5][..], b"value", &[42]].concat());
    }

    #[test]
    fn raw_passes_bytes_through_and_empty_means_no_reply() {
        let input = [0x93, 0x01, 0xa1, b'x', 0xc0];
        let raw = Raw::from_payload(&input).expect("raw never fails");
        assert_eq!(raw.into_reply().expect("ok"), Some(input.to_vec()));
        assert_eq!(
            Raw::from_payload(&[])
                .expect("ok")
                .into_reply()
                .expect("ok"),
            None
        );
    }
}
