//! Keeps the byte-level examples of `docs/protocol.md` true: every block
//! marked `<!-- hex:NAME -->` must equal what our encoders produce for the
//! example NAME defined here, and must decode back to it. On a mismatch the
//! test prints the block to paste.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use super::{Envelope, Kind};
use crate::presence::Presence;
use crate::status::{Code, State, Status};

const DOC: &str = include_str!("../../../../docs/protocol.md");

const SENT: u64 = 1_700_000_000_000;

/// The wire examples of the protocol document, by name.
fn examples() -> Vec<(&'static str, Vec<u8>)> {
    let on_true = vec![0x81, 0xa2, b'o', b'n', 0xc3]; // {"on": true}
    vec![
        (
            "envelope-command",
            Envelope::new("req-1", "set_led", SENT)
                .with_payload(on_true.clone())
                .with_expires_at(SENT + 30_000)
                .to_msgpack(),
        ),
        (
            "envelope-rpc",
            Envelope::new("r-7", "ping", SENT)
                .with_kind(Kind::Rpc)
                .to_msgpack(),
        ),
        (
            "status-accepted",
            Status::new("req-1", "set_led", State::Accepted, 0, SENT + 3).to_msgpack(),
        ),
        (
            "status-retrying",
            Status::new("req-1", "set_led", State::Retrying, 1, SENT + 9)
                .with_code(Code::HandlerError, "bus busy")
                .with_next_attempt_at(SENT + 5_009)
                .to_msgpack(),
        ),
        (
            "status-succeeded",
            Status::new("req-1", "set_led", State::Succeeded, 2, SENT + 5_012)
                .with_reply(Some(on_true))
                .to_msgpack(),
        ),
        (
            "status-rejected",
            Status::new("", "", State::Rejected, 0, SENT + 1)
                .with_code(Code::InvalidPayload, "envelope field `id` is missing")
                .to_msgpack(),
        ),
        (
            "presence-online",
            Presence::online(SENT, 2, SENT + 1_234).to_msgpack(),
        ),
        ("presence-will", Presence::will(SENT).to_msgpack()),
    ]
}

/// Hex, 16 bytes per line, as the document shows it.
fn hex_block(bytes: &[u8]) -> String {
    let lines: Vec<String> = bytes
        .chunks(16)
        .map(|c| {
            c.iter()
                .map(|b| alloc::format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    lines.join("\n")
}

/// The fenced block after `<!-- hex:NAME -->`, whitespace removed.
fn doc_hex(name: &str) -> Option<String> {
    let marker = alloc::format!("<!-- hex:{name} -->");
    let after = &DOC[DOC.find(&marker)? + marker.len()..];
    let start = after.find("```")?;
    let body = &after[start + 3..];
    let body = &body[body.find('\n')? + 1..];
    let end = body.find("```")?;
    Some(body[..end].split_whitespace().collect())
}

#[test]
fn protocol_doc_hex_examples_match_the_encoders() {
    let mut stale = String::new();
    for (name, bytes) in examples() {
        let want: String = hex_block(&bytes).split_whitespace().collect();
        if doc_hex(name).as_deref() != Some(want.as_str()) {
            stale += &alloc::format!("<!-- hex:{name} -->\n```text\n{}\n```\n", hex_block(&bytes));
        }
        // Each example is valid for its decoder.
        if name.starts_with("envelope") {
            assert!(Envelope::from_msgpack(&bytes).is_ok(), "{name}");
        } else if name.starts_with("presence") {
            assert!(Presence::from_msgpack(&bytes).is_ok(), "{name}");
        } else {
            assert!(Status::from_msgpack(&bytes).is_ok(), "{name}");
        }
    }
    assert!(
        stale.is_empty(),
        "docs/protocol.md has stale examples; they should read:\n{stale}"
    );
}
