//! How statuses look on the terminal: one line of text for people, one
//! JSON object per line for scripts (`--json`). Shared by `send`, `status`
//! and `watch`, so the same status reads the same everywhere. Payloads and
//! replies go through the one JSON<->msgpack mapping
//! ([`relay_client::json`]): a reply printed here pastes into a scenario.

use relay_client::json::msgpack_to_json;
use relay_core::status::Status;

use crate::time::{now_ms, relative, timestamp};

/// One status as a JSON object (times in unix ms, plus readable `*_time`
/// strings); the reply decoded from msgpack.
pub fn status_json(status: &Status) -> serde_json::Value {
    let mut v = serde_json::json!({
        "id": status.id,
        "name": status.name,
        "status": status.status.as_str(),
        "attempt": status.attempt,
        "at": status.at,
        "at_time": timestamp(status.at),
    });
    if let Some(code) = &status.code {
        v["code"] = code.as_str().into();
    }
    if let Some(message) = &status.message {
        v["message"] = message.as_str().into();
    }
    if let Some(reply) = &status.reply {
        v["reply"] = msgpack_to_json(reply);
    }
    if let Some(next) = status.next_attempt_at {
        v["next_attempt_at"] = next.into();
        v["next_attempt_time"] = timestamp(next).into();
    }
    if let Some(plugin) = &status.plugin {
        v["plugin"] = plugin.as_str().into();
    }
    v
}

/// One status as a line of text: `succeeded attempt=1 reply={"ok":true}`;
/// a retry says when: `next_attempt=2026-12-05T10:00:05.000Z (in 4.9s)`.
pub fn status_line(status: &Status) -> String {
    let mut line = format!("{} attempt={}", status.status, status.attempt);
    if let Some(code) = &status.code {
        line.push_str(&format!(" code={code}"));
    }
    if let Some(next) = status.next_attempt_at {
        line.push_str(&format!(
            " next_attempt={} ({})",
            timestamp(next),
            relative(next, now_ms())
        ));
    }
    if let Some(reply) = &status.reply {
        line.push_str(&format!(" reply={}", msgpack_to_json(reply)));
    }
    if let Some(message) = &status.message {
        line.push_str(&format!(" message={message:?}"));
    }
    if let Some(plugin) = &status.plugin {
        line.push_str(&format!(" plugin={plugin}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_core::status::{Code, State};

    #[test]
    fn status_rendering() {
        let s =
            Status::new("id1", "echo", State::Failed, 5, 7).with_code(Code::HandlerError, "boom");
        assert_eq!(
            status_line(&s),
            "failed attempt=5 code=handler_error message=\"boom\""
        );
        let json = status_json(&s);
        assert_eq!(json["code"], "handler_error");
        assert_eq!(json["attempt"], 5);
    }

    #[test]
    fn retries_and_replies_read_well() {
        let s = Status::new("id1", "echo", State::Retrying, 1, 7)
            .with_code(Code::HandlerError, "busy")
            .with_next_attempt_at(1_700_000_005_000);
        let line = status_line(&s);
        assert!(
            line.contains("next_attempt=2023-11-14T22:13:25.000Z ("),
            "{line}"
        );
        assert_eq!(
            status_json(&s)["next_attempt_time"],
            "2023-11-14T22:13:25.000Z"
        );
        let s = Status::new("id1", "echo", State::Succeeded, 1, 7)
            .with_reply(Some(vec![0x81, 0xa1, b'b', 0xc4, 0x01, 0xff]));
        assert_eq!(
            status_json(&s)["reply"],
            serde_json::json!({"b": {"$bin": "ff"}}),
            "binary in the scenario spelling"
        );
    }
}
