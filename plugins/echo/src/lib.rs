//! The `echo` plugin: replies with the command's payload, byte for byte.
//!
//! Role in the data path: the smallest real handler, the baseline of the
//! per-call benchmark and the first thing to try on a new device. It takes
//! [`Raw`] so the payload is never decoded: whatever msgpack value arrives
//! is the reply (no payload = no reply).

use relay_guest::prelude::*;

/// Any role may echo: it reads and changes nothing.
#[command(name = "echo", roles(all))]
pub fn echo(_ctx: &mut Ctx, payload: Raw) -> Result<Raw, Error> {
    Ok(payload)
}

relay_guest::plugin!(name = "echo", commands = [echo]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_with_the_payload_unchanged() {
        let payload = [0x82, 0xa1, b'a', 0x01, 0xa1, b'b', 0x92, 0xc0, 0xcb];
        let payload = [&payload[..], &1.5f64.to_be_bytes()].concat();
        for role in [Role::Admin, Role::Primary, Role::Secondary] {
            let mut ctx = Ctx::for_test("echo", role);
            assert_eq!(PLUGIN.handle(&mut ctx, &payload), Ok(Some(payload.clone())));
        }
    }

    #[test]
    fn no_payload_means_no_reply() {
        let mut ctx = Ctx::for_test("echo", Role::Secondary);
        assert_eq!(PLUGIN.handle(&mut ctx, &[]), Ok(None));
    }
}
