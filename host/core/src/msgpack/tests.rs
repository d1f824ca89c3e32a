//! The walker's bounds on hostile input, the reader and the writer.

use super::*;
use alloc::vec;
use proptest::prelude::*;

fn nested_arrays(depth: usize) -> Vec<u8> {
    let mut v = vec![0x91; depth];
    v.push(0x01);
    v
}

#[test]
fn scalars_and_containers_span_exactly() {
    let cases: &[&[u8]] = &[
        &[0x00],
        &[0xc0],
        &[0xcc, 0xff],
        &[0xcf, 0, 0, 0, 0, 0, 0, 0, 1],
        &[0xa3, b'a', b'b', b'c'],
        &[0xc4, 0x02, 1, 2],
        &[0xd4, 0x01, 0x02],
        &[0xc7, 0x01, 0x05, 0xaa],
        &[0x92, 0x01, 0x81, 0xa1, b'k', 0x90],
        &[0x80],
        &[0xdc, 0x00, 0x02, 0xc2, 0xc3],
    ];
    for case in cases {
        let mut with_tail = case.to_vec();
        with_tail.push(0x7f);
        assert_eq!(skip_value(&with_tail, 0, 32), Ok(case.len()), "{case:x?}");
        assert_eq!(validate(case, 32), Ok(()));
        assert_eq!(skip_value_unbounded(&with_tail, 0), Ok(case.len()));
    }
}

#[test]
fn ten_thousand_levels_fail_without_recursion() {
    let deep = nested_arrays(10_000);
    assert_eq!(
        skip_value(&deep, 0, 32),
        Err(MsgpackError::TooDeep { at: 32, limit: 32 })
    );
    // The unbounded scan walks it with O(1) memory.
    assert_eq!(skip_value_unbounded(&deep, 0), Ok(deep.len()));
    let maps: Vec<u8> = core::iter::repeat_n([0x81, 0x00], 10_000)
        .flatten()
        .chain([0xc0])
        .collect();
    assert!(matches!(
        skip_value(&maps, 0, 32),
        Err(MsgpackError::TooDeep { .. })
    ));
}

#[test]
fn depth_limit_is_inclusive() {
    assert_eq!(validate(&nested_arrays(32), 32), Ok(()));
    assert!(validate(&nested_arrays(33), 32).is_err());
    assert_eq!(validate(&[0x01], 0), Ok(()));
    assert!(validate(&[0x90], 0).is_err());
}

#[test]
fn hostile_lengths_fail_fast() {
    // array32 / map32 / str32 / bin32 / ext32 claiming ~4 billion items or bytes.
    for bytes in [
        &[0xdd, 0xff, 0xff, 0xff, 0xff, 0x01][..],
        &[0xdf, 0xff, 0xff, 0xff, 0xff, 0x01, 0x01],
        &[0xdb, 0xff, 0xff, 0xff, 0xff, b'a'],
        &[0xc6, 0xff, 0xff, 0xff, 0xff],
        &[0xc9, 0xff, 0xff, 0xff, 0xff, 0x01],
    ] {
        assert!(
            matches!(
                skip_value(bytes, 0, 32),
                Err(MsgpackError::Truncated { .. })
            ),
            "{bytes:x?}"
        );
        assert!(skip_value_unbounded(bytes, 0).is_err());
    }
}

#[test]
fn malformed_input() {
    assert_eq!(
        validate(&[], 32),
        Err(MsgpackError::Truncated { at: 0, left: 0 })
    );
    assert_eq!(
        validate(&[0xc1], 32),
        Err(MsgpackError::ReservedMarker { at: 0 })
    );
    assert_eq!(
        validate(&[0x01, 0x02], 32),
        Err(MsgpackError::TrailingBytes { at: 1, count: 1 })
    );
    assert!(matches!(
        validate(&[0x92, 0x01], 32),
        Err(MsgpackError::Truncated { .. })
    ));
    assert!(matches!(
        validate(&[0xcd, 0x01], 32),
        Err(MsgpackError::Truncated { .. })
    ));
}

#[test]
fn typed_reads() {
    let mut w = Writer::new();
    w.map_len(2)
        .str("n")
        .uint(300)
        .str("s")
        .str("hé")
        .array_len(1)
        .bin(&[1, 2])
        .nil();
    let bytes = w.into_vec();
    let mut r = Reader::new(&bytes);
    assert_eq!(r.read_map_len(), Ok(2));
    assert_eq!(r.read_str(), Ok("n"));
    assert_eq!(r.read_u64(), Ok(300));
    assert_eq!(r.read_str(), Ok("s"));
    assert_eq!(r.read_str(), Ok("hé"));
    assert_eq!(r.read_array_len(), Ok(1));
    assert_eq!(r.read_bin(), Ok(&[1u8, 2][..]));
    assert_eq!(r.read_nil(), Ok(true));
    assert_eq!(r.finish(), Ok(()));
}

#[test]
fn unsigned_reads_accept_nonnegative_signed_encodings() {
    assert_eq!(Reader::new(&[0xd0, 0x05]).read_u64(), Ok(5));
    assert_eq!(
        Reader::new(&[0xd3, 0, 0, 0, 0, 0, 0, 1, 0]).read_u64(),
        Ok(256)
    );
    assert!(matches!(
        Reader::new(&[0xd0, 0xff]).read_u64(),
        Err(MsgpackError::OutOfRange { .. })
    ));
    assert!(matches!(
        Reader::new(&[0xff]).read_u64(),
        Err(MsgpackError::OutOfRange { .. })
    ));
    assert!(matches!(
        Reader::new(&[0xcb, 0, 0, 0, 0, 0, 0, 0, 0]).read_u64(),
        Err(MsgpackError::WrongType { .. })
    ));
    assert!(matches!(
        Reader::new(&[0xcf, 0, 0, 0, 1, 0, 0, 0, 0]).read_u32(),
        Err(MsgpackError::OutOfRange { .. })
    ));
    assert!(matches!(
        Reader::new(&[0xa2, 0xff, 0xfe]).read_str(),
        Err(MsgpackError::InvalidUtf8 { at: 0 })
    ));
}

/// Any value rmp-serde can encode (from a JSON-like tree) is spanned
/// exactly, and agrees with rmp's own length estimator.
fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..8)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn spans_any_encoded_value(value in arb_json(), tail in prop::collection::vec(any::<u8>(), 0..4)) {
        let mut bytes = rmp_serde::to_vec(&value).unwrap();
        let len = bytes.len();
        bytes.extend_from_slice(&tail);
        prop_assert_eq!(skip_value(&bytes, 0, 32), Ok(len));
        prop_assert_eq!(skip_value_unbounded(&bytes, 0), Ok(len));
    }

    #[test]
    fn never_panics_and_stays_in_bounds(bytes in prop::collection::vec(any::<u8>(), 0..256), depth in 0usize..40) {
        if let Ok(end) = skip_value(&bytes, 0, depth) {
            prop_assert!(end <= bytes.len());
            prop_assert_eq!(skip_value_unbounded(&bytes, 0), Ok(end));
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash(depth in 33usize..20_000) {
        let deep = nested_arrays(depth);
        let is_too_deep = matches!(skip_value(&deep, 0, 32), Err(MsgpackError::TooDeep { .. }));
        prop_assert!(is_too_deep);
    }
}
