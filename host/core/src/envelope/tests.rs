use super::*;
use alloc::vec;
use proptest::prelude::*;

fn env() -> Envelope {
    Envelope::new("req-1", "set_led", 1_700_000_000_000)
        .with_payload(vec![0x81, 0xa2, b'o', b'n', 0xc3])
        .with_expires_at(1_700_000_030_000)
}

/// Encodes a map from `(key, raw value)` pairs, in order.
fn map(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = Writer::new();
    w.map_len(entries.len() as u32);
    for (k, v) in entries {
        w.str(k).raw(v);
    }
    w.into_vec()
}

fn s(v: &str) -> Vec<u8> {
    let mut w = Writer::new();
    w.str(v);
    w.into_vec()
}

fn u(v: u64) -> Vec<u8> {
    let mut w = Writer::new();
    w.uint(v);
    w.into_vec()
}

fn nested(depth: usize) -> Vec<u8> {
    let mut v = vec![0x91; depth];
    v.push(0x00);
    v
}

fn reject(bytes: &[u8]) -> Rejection {
    Envelope::from_msgpack(bytes).expect_err("must be rejected")
}

#[test]
fn round_trips() {
    for e in [
        env(),
        Envelope::new("x", "y", 0),
        env().with_kind(Kind::Rpc),
    ] {
        assert_eq!(Envelope::from_msgpack(&e.to_msgpack()), Ok(e));
    }
}

#[test]
fn is_readable_by_a_generic_decoder() {
    let v: serde_json::Value = rmp_serde::from_slice(&env().to_msgpack()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"id": "req-1", "name": "set_led", "kind": "command", "payload": {"on": true},
                           "sent_at": 1_700_000_000_000u64, "expires_at": 1_700_000_030_000u64})
    );
}

#[test]
fn payload_keeps_its_original_bytes() {
    // 5 as uint16 (not the canonical fixint) and a float: kept byte for byte.
    let payload: &[u8] = &[
        0x92, 0xcd, 0x00, 0x05, 0xcb, 0x40, 0x09, 0x21, 0xfb, 0x54, 0x44, 0x2d, 0x18,
    ];
    let bytes = map(&[
        ("id", &s("a")),
        ("payload", payload),
        ("name", &s("n")),
        ("sent_at", &u(1)),
    ]);
    assert_eq!(Envelope::from_msgpack(&bytes).unwrap().payload, payload);
    // A nil payload is a payload; an absent one is empty.
    let bytes = map(&[
        ("id", &s("a")),
        ("payload", &[0xc0]),
        ("name", &s("n")),
        ("sent_at", &u(1)),
    ]);
    assert_eq!(Envelope::from_msgpack(&bytes).unwrap().payload, [0xc0]);
}

#[test]
fn unknown_keys_nil_optionals_and_signed_ints_are_accepted() {
    let bytes = map(&[
        ("trace", &[0x92, 0x01, 0x02]),
        ("id", &s("a:b/c~1")),
        ("name", &s("n")),
        ("kind", &[0xc0]),
        ("expires_at", &[0xc0]),
        ("sent_at", &[0xd3, 0, 0, 0, 0, 0, 0, 0, 7]),
    ]);
    let e = Envelope::from_msgpack(&bytes).unwrap();
    assert_eq!(
        (e.kind, e.expires_at, e.sent_at, e.payload.len()),
        (Kind::Command, None, 7, 0)
    );
    // A non-string key is ignored like an unknown one.
    let mut w = Writer::new();
    w.map_len(4)
        .uint(1)
        .uint(2)
        .str("id")
        .str("a")
        .str("name")
        .str("n")
        .str("sent_at")
        .uint(0);
    assert!(Envelope::from_msgpack(&w.into_vec()).is_ok());
}

#[test]
fn ids() {
    for ok in [
        "a",
        "550e8400-e29b-41d4-a716-446655440000",
        "app:42/x",
        "~!",
        &"z".repeat(64),
    ] {
        assert_eq!(validate_id(ok), Ok(()), "{ok}");
    }
    assert_eq!(validate_id(""), Err(IdError::Empty));
    assert_eq!(
        validate_id(&"z".repeat(65)),
        Err(IdError::TooLong { len: 65 })
    );
    for (bad, ch) in [
        ("a b", ' '),
        ("a\nb", '\n'),
        ("é", 'é'),
        ("a\u{7f}", '\u{7f}'),
    ] {
        assert_eq!(
            validate_id(bad),
            Err(IdError::InvalidChar { ch }),
            "{bad:?}"
        );
    }
}

/// Every failure: its code, and whether the rejection still names the id.
#[test]
fn every_failure_has_a_code_and_keeps_a_readable_id() {
    let id = s("req-9");
    let name = s("set_led");
    let t = u(5);
    let deep = nested(10_000);
    let too_big = vec![0xc4, 0xff, 0xff, 0xff, 0xff]; // bin32 claiming 4 GiB
    let huge = {
        let mut w = Writer::new();
        w.bin(&vec![0u8; DEFAULT_MAX_ENVELOPE_BYTES]);
        w.into_vec()
    };
    let cases: Vec<(&str, Vec<u8>, Code, Option<&str>)> = vec![
        ("not msgpack", vec![0xc1], Code::InvalidPayload, None),
        ("empty", vec![], Code::InvalidPayload, None),
        ("not a map", vec![0x93, 1, 2, 3], Code::InvalidPayload, None),
        (
            "trailing bytes",
            [env().to_msgpack(), vec![0x00]].concat(),
            Code::InvalidPayload,
            Some("req-1"),
        ),
        (
            "depth bomb after id",
            map(&[
                ("id", &id),
                ("name", &name),
                ("sent_at", &t),
                ("payload", &deep),
            ]),
            Code::InvalidPayload,
            Some("req-9"),
        ),
        (
            "depth bomb before id",
            map(&[
                ("payload", &deep),
                ("id", &id),
                ("name", &name),
                ("sent_at", &t),
            ]),
            Code::InvalidPayload,
            Some("req-9"),
        ),
        (
            "hostile length after id",
            [
                vec![0x82],
                s("id"),
                id.clone(),
                s("payload"),
                too_big.clone(),
            ]
            .concat(),
            Code::InvalidPayload,
            Some("req-9"),
        ),
        (
            "truncated after id",
            map(&[("id", &id), ("name", &name)])[..12].to_vec(),
            Code::InvalidPayload,
            Some("req-9"),
        ),
        (
            "too large",
            map(&[
                ("id", &id),
                ("name", &name),
                ("sent_at", &t),
                ("payload", &huge),
            ]),
            Code::TooLarge,
            Some("req-9"),
        ),
        (
            "missing id",
            map(&[("name", &name), ("sent_at", &t)]),
            Code::InvalidPayload,
            None,
        ),
        (
            "missing name",
            map(&[("id", &id), ("sent_at", &t)]),
            Code::InvalidPayload,
            Some("req-9"),
        ),
        (
            "missing sent_at",
            map(&[("id", &id), ("name", &name)]),
            Code::InvalidPayload,
            Some("req-9"),
        ),
        (
            "invalid id",
            map(&[("id", &s("a b")), ("name", &name), ("sent_at", &t)]),
            Code::InvalidPayload,
            None,
        ),
        (
            "id too long",
            map(&[
                ("id", &s(&"x".repeat(65))),
                ("name", &name),
                ("sent_at", &t),
            ]),
            Code::InvalidPayload,
            None,
        ),
        (
            "id not a string",
            map(&[("id", &u(7)), ("name", &name), ("sent_at", &t)]),
            Code::InvalidPayload,
            None,
        ),
        (
            "duplicate id",
            map(&[
                ("id", &id),
                ("id", &s("other")),
                ("name", &name),
                ("sent_at", &t),
            ]),
            Code::InvalidPayload,
            None,
        ),
        (
            "invalid name",
            map(&[("id", &id), ("name", &s("set/led")), ("sent_at", &t)]),
            Code::InvalidPayload,
            Some("req-9"),
        ),
        (
            "name not a string",
            map(&[("id", &id), ("name", &[0xc3]), ("sent_at", &t)]),
            Code::InvalidPayload,
            Some("req-9"),
        ),
        (
            "unknown kind",
            map(&[
                ("id", &id),
                ("name", &name),
                ("kind", &s("job")),
                ("sent_at", &t),
            ]),
            Code::InvalidPayload,
            Some("req-9"),
        ),
        (
            "sent_at negative",
            map(&[("id", &id), ("name", &name), ("sent_at", &[0xff])]),
            Code::InvalidPayload,
            Some("req-9"),
        ),
        (
            "sent_at float",
            map(&[
                ("id", &id),
                ("name", &name),
                ("sent_at", &[0xca, 0, 0, 0, 0]),
            ]),
            Code::InvalidPayload,
            Some("req-9"),
        ),
        (
            "sent_at string",
            map(&[("id", &id), ("name", &name), ("sent_at", &s("now"))]),
            Code::InvalidPayload,
            Some("req-9"),
        ),
        (
            "expires_at string",
            map(&[
                ("id", &id),
                ("name", &name),
                ("sent_at", &t),
                ("expires_at", &s("x")),
            ]),
            Code::InvalidPayload,
            Some("req-9"),
        ),
        (
            "duplicate payload",
            map(&[
                ("id", &id),
                ("name", &name),
                ("sent_at", &t),
                ("payload", &t),
                ("payload", &t),
            ]),
            Code::InvalidPayload,
            Some("req-9"),
        ),
    ];
    for (what, bytes, code, want_id) in cases {
        let r = reject(&bytes);
        assert_eq!(r.code(), code, "{what}: {}", r.error);
        assert_eq!(r.id.as_deref(), want_id, "{what}: {}", r.error);
        let status = r.to_status(42);
        assert_eq!(
            (status.status, status.attempt, status.at),
            (State::Rejected, 0, 42),
            "{what}"
        );
        assert_eq!(status.id, want_id.unwrap_or(""), "{what}");
        assert_eq!(status.code, Some(code), "{what}");
        assert!(!status.message.unwrap_or_default().is_empty(), "{what}");
    }
}

#[test]
fn rejections_name_the_command_when_they_can() {
    let r = reject(&map(&[("name", &s("reboot")), ("id", &s("a b"))]));
    assert_eq!((r.id.as_deref(), r.name.as_deref()), (None, Some("reboot")));
    assert_eq!(r.to_status(0).name, "reboot");
}

#[test]
fn limits_are_configurable() {
    let bytes = env().to_msgpack();
    let tight = EnvelopeLimits {
        max_bytes: bytes.len() - 1,
        ..Default::default()
    };
    assert!(matches!(
        decode(&bytes, &tight).unwrap_err().error,
        EnvelopeError::TooLarge { .. }
    ));
    let exact = EnvelopeLimits {
        max_bytes: bytes.len(),
        ..Default::default()
    };
    assert!(decode(&bytes, &exact).is_ok());
    // The map counts as one level: payload {"on": true} makes depth 2.
    assert!(decode(
        &bytes,
        &EnvelopeLimits {
            max_depth: 2,
            ..Default::default()
        }
    )
    .is_ok());
    let shallow = EnvelopeLimits {
        max_depth: 1,
        ..Default::default()
    };
    assert!(matches!(
        decode(&bytes, &shallow).unwrap_err().error,
        EnvelopeError::Msgpack(MsgpackError::TooDeep { limit: 1, .. })
    ));
}

#[test]
fn check_mirrors_the_device() {
    assert_eq!(env().check(&EnvelopeLimits::default()), Ok(()));
    let bad = Envelope::new("a", "no spaces", 0);
    assert!(matches!(
        bad.check(&EnvelopeLimits::default()),
        Err(EnvelopeError::InvalidName(_))
    ));
    let bad = Envelope::new("a", "n", 0).with_payload(vec![0x92, 0x01]);
    assert!(matches!(
        bad.check(&EnvelopeLimits::default()),
        Err(EnvelopeError::Msgpack(_))
    ));
}

#[test]
fn commands_carry_the_topic_role() {
    let cmd = Command::new(env(), Role::Secondary, 7, 99);
    assert_eq!(
        (cmd.role, cmd.seq, cmd.accepted_at),
        (Role::Secondary, 7, 99)
    );
    let inv = cmd.invocation(3);
    assert_eq!(
        (inv.id.as_str(), inv.attempt, inv.role),
        ("req-1", 3, Role::Secondary)
    );
    assert_eq!(inv.payload, env().payload);
    assert!(!cmd.is_expired(1_700_000_029_999));
    assert!(cmd.is_expired(1_700_000_030_000));
}

fn arb_envelope() -> impl Strategy<Value = Envelope> {
    (
        "[!-~]{1,64}",
        "[A-Za-z0-9_-]{1,64}",
        any::<bool>(),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
        any::<u64>(),
        prop::option::of(any::<u64>()),
    )
        .prop_map(|(id, name, rpc, payload, sent_at, expires_at)| Envelope {
            id,
            name,
            kind: if rpc { Kind::Rpc } else { Kind::Command },
            payload: payload
                .map(|b| rmp_serde::to_vec(&serde_bytes_like(b)).unwrap())
                .unwrap_or_default(),
            sent_at,
            expires_at,
        })
}

/// A msgpack value built from bytes: an array of small ints.
fn serde_bytes_like(b: Vec<u8>) -> Vec<u64> {
    b.into_iter().map(u64::from).collect()
}

proptest! {
    #[test]
    fn round_trips_any(e in arb_envelope()) {
        prop_assert_eq!(Envelope::from_msgpack(&e.to_msgpack()), Ok(e));
    }

    #[test]
    fn never_panics_on_noise(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = Envelope::from_msgpack(&bytes);
    }

    /// Mutations of a valid envelope: no panic; anything accepted re-encodes
    /// to something that decodes to the same envelope.
    #[test]
    fn mutations_are_safe(e in arb_envelope(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
        let mut bytes = e.to_msgpack();
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        match Envelope::from_msgpack(&bytes) {
            Ok(d) => prop_assert_eq!(Envelope::from_msgpack(&d.to_msgpack()), Ok(d)),
            Err(r) => {
                let id_ok = r.id.as_deref().is_none_or(|id| validate_id(id).is_ok());
                prop_assert!(id_ok);
            }
        }
    }
}
