//! What one call may hand back (reply, error message, events), checked by
//! the same functions on both engines so a limit means the same on wasmtime
//! and wasmi, at the limit and one past it. Every check runs on lengths,
//! before anything is copied out of the guest.

use crate::engine::PluginError;
use crate::limits::Limits;

/// Longest event name (names travel in status messages and logs).
pub const MAX_EVENT_NAME_BYTES: usize = 256;

fn at_most(size: usize, limit: usize) -> Result<(), PluginError> {
    if size > limit {
        Err(PluginError::ReplyTooLarge { size, limit })
    } else {
        Ok(())
    }
}

/// A handler's reply: at most `max_reply_bytes`.
pub fn check_reply(len: usize, limits: &Limits) -> Result<(), PluginError> {
    at_most(len, limits.max_reply_bytes)
}

/// A handler error's message: at most `max_reply_bytes`, like a reply.
pub fn check_message(len: usize, limits: &Limits) -> Result<(), PluginError> {
    at_most(len, limits.max_reply_bytes)
}

/// One more event after `emitted` in this call: at most
/// `max_events_per_call` events, names of at most [`MAX_EVENT_NAME_BYTES`],
/// payloads of at most `max_reply_bytes`.
pub fn check_event(
    emitted: usize,
    name_len: usize,
    payload_len: usize,
    limits: &Limits,
) -> Result<(), PluginError> {
    at_most(name_len, MAX_EVENT_NAME_BYTES)?;
    at_most(payload_len, limits.max_reply_bytes)?;
    at_most(emitted + 1, limits.max_events_per_call)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_hold_at_the_limit_and_fail_one_past() {
        let limits = Limits {
            max_reply_bytes: 10,
            max_events_per_call: 2,
            ..Limits::default()
        };
        assert_eq!(check_reply(10, &limits), Ok(()));
        assert_eq!(
            check_reply(11, &limits),
            Err(PluginError::ReplyTooLarge {
                size: 11,
                limit: 10
            })
        );
        assert_eq!(check_message(10, &limits), Ok(()));
        assert!(check_message(11, &limits).is_err());
        assert_eq!(check_event(1, 256, 10, &limits), Ok(()));
        assert!(check_event(1, 257, 0, &limits).is_err());
        assert!(check_event(1, 0, 11, &limits).is_err());
        assert_eq!(
            check_event(2, 0, 0, &limits),
            Err(PluginError::ReplyTooLarge { size: 3, limit: 2 })
        );
    }
}
