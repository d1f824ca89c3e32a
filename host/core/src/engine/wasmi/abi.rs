//! The canonical ABI of the `relay:plugin` world, by hand, for wasm32 guests
//! (what wit-bindgen 0.63 emits; checked against the echo plugin and a probe
//! guest that calls every import). Pure functions over the guest's linear
//! memory as a byte slice, so every rule is unit-tested without an engine.
//!
//! Every pointer/length pair is bounds-checked without overflow (in `usize`,
//! which is 32-bit on the device), records are checked for alignment as the
//! spec requires, strings are UTF-8-validated and discriminants range-checked.
//! Any violation is [`PluginError::Abi`]; nothing here can panic.
//!
//! Layouts (offsets in bytes, little endian; `string`/`list` = ptr u32 + len u32):
//! - `plugin-info` (size 24, align 4): name @0, version @8, commands @16.
//! - `command-spec` (size 24, align 4): name @0, roles @8 (`list<role>`, one
//!   byte each), budget-ms `option<u32>`: discriminant u8 @16, value @20.
//! - `handle`'s return area, `result<option<list<u8>>, handler-error>` (size 16,
//!   align 4): discriminant u8 @0; ok: option discriminant u8 @4, list @8;
//!   err: `error-kind` u8 @4, message @8.
//! - `kv-get`'s return area, `option<list<u8>>` (size 12, align 4):
//!   discriminant u8 @0, list @4.
//! - `kv-set`'s return area, `result<_, kv-error>` (size 2, align 1):
//!   discriminant u8 @0, `kv-error` u8 @1.

use alloc::{format, string::String, vec::Vec};
use core::ops::Range;

use crate::engine::describe::{bad_role, check_command_count, check_len, not_utf8, Field};
use crate::engine::output::{check_message, check_reply};
use crate::engine::PluginError;
use crate::limits::Limits;
use crate::plugin::{
    CommandSpec, ErrorKind, HandlerError, HandlerResult, KvError, LogLevel, PluginInfo, Role,
};

pub(super) const PLUGIN_INFO: Layout = Layout { size: 24, align: 4 };
pub(super) const COMMAND_SPEC: Layout = Layout { size: 24, align: 4 };
pub(super) const HANDLE_RESULT: Layout = Layout { size: 16, align: 4 };
pub(super) const KV_GET_RESULT: Layout = Layout { size: 12, align: 4 };
pub(super) const KV_SET_RESULT: Layout = Layout { size: 2, align: 1 };

/// Size and alignment of a type stored in guest memory.
#[derive(Debug, Clone, Copy)]
pub(super) struct Layout {
    pub size: u32,
    pub align: u32,
}

pub(super) fn abi(msg: impl Into<String>) -> PluginError {
    PluginError::Abi(msg.into())
}

/// The byte range `[ptr, ptr + len)` if it lies inside `mem`.
pub(super) fn range(mem: &[u8], ptr: u32, len: usize) -> Result<Range<usize>, PluginError> {
    let start = usize::try_from(ptr).map_err(|_| abi("pointer does not fit the host"))?;
    match start.checked_add(len) {
        Some(end) if end <= mem.len() => Ok(start..end),
        _ => Err(abi(format!(
            "{len} bytes at {ptr:#x} are out of bounds of a {}-byte memory",
            mem.len()
        ))),
    }
}

/// The range of `count` elements of `layout` at `ptr`, aligned.
fn array(mem: &[u8], ptr: u32, count: u32, layout: Layout) -> Result<Range<usize>, PluginError> {
    // Alignments are powers of two.
    if ptr & (layout.align - 1) != 0 {
        return Err(abi(format!(
            "pointer {ptr:#x} is not {}-byte aligned",
            layout.align
        )));
    }
    let bytes = usize::try_from(count)
        .ok()
        .and_then(|n| n.checked_mul(layout.size as usize))
        .ok_or_else(|| abi(format!("list of {count} elements overflows")))?;
    range(mem, ptr, bytes)
}

/// The range of one record of `layout` at `ptr` (a return area), aligned.
pub(super) fn record(mem: &[u8], ptr: u32, layout: Layout) -> Result<Range<usize>, PluginError> {
    array(mem, ptr, 1, layout)
}

pub(super) fn bytes(mem: &[u8], ptr: u32, len: u32) -> Result<&[u8], PluginError> {
    let len = usize::try_from(len).map_err(|_| abi("length does not fit the host"))?;
    Ok(&mem[range(mem, ptr, len)?])
}

pub(super) fn string(mem: &[u8], ptr: u32, len: u32) -> Result<&str, PluginError> {
    core::str::from_utf8(bytes(mem, ptr, len)?)
        .map_err(|e| abi(format!("string at {ptr:#x} is not UTF-8: {e}")))
}

// Readers of fields inside a record whose range was already checked; they
// still go through `get` so a wrong offset is an error, not a panic.
fn u8_at(mem: &[u8], at: usize) -> Result<u8, PluginError> {
    mem.get(at)
        .copied()
        .ok_or_else(|| abi("field out of bounds"))
}

fn u32_at(mem: &[u8], at: usize) -> Result<u32, PluginError> {
    let b = mem
        .get(at..at.wrapping_add(4))
        .ok_or_else(|| abi("field out of bounds"))?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// A `(ptr, len)` pair stored at `at`.
fn pair_at(mem: &[u8], at: usize) -> Result<(u32, u32), PluginError> {
    Ok((u32_at(mem, at)?, u32_at(mem, at + 4)?))
}

fn string_at(mem: &[u8], at: usize) -> Result<String, PluginError> {
    let (ptr, len) = pair_at(mem, at)?;
    Ok(string(mem, ptr, len)?.into())
}

fn option_disc(d: u8) -> Result<bool, PluginError> {
    match d {
        0 => Ok(false),
        1 => Ok(true),
        d => Err(abi(format!("invalid option discriminant {d}"))),
    }
}

pub(super) fn role(d: u8) -> Result<Role, PluginError> {
    Role::ALL
        .get(usize::from(d))
        .copied()
        .ok_or_else(|| abi(format!("invalid role {d}")))
}

pub(super) fn role_disc(role: Role) -> u32 {
    match role {
        Role::Admin => 0,
        Role::Primary => 1,
        Role::Secondary => 2,
    }
}

pub(super) fn log_level(d: u32) -> Result<LogLevel, PluginError> {
    use LogLevel::*;
    [Trace, Debug, Info, Warn, Error]
        .get(d as usize)
        .copied()
        .ok_or_else(|| abi(format!("invalid log level {d}")))
}

fn error_kind(d: u8) -> Result<ErrorKind, PluginError> {
    use ErrorKind::*;
    [Transient, InvalidArgument, OutOfBounds, Permanent]
        .get(usize::from(d))
        .copied()
        .ok_or_else(|| abi(format!("invalid error kind {d}")))
}

/// Lifts `describe`'s answer from its return area. Lengths are checked
/// against the bounds of `engine::describe` before anything is copied.
pub(super) fn lift_plugin_info(mem: &[u8], ptr: u32) -> Result<PluginInfo, PluginError> {
    let at = record(mem, ptr, PLUGIN_INFO)?.start;
    let name = bounded_string(mem, at, Field::PluginName)?;
    let version = bounded_string(mem, at + 8, Field::Version)?;
    let (list_ptr, count) = pair_at(mem, at + 16)?;
    let list = array(mem, list_ptr, count, COMMAND_SPEC)?;
    check_command_count(count as usize)?;
    let mut commands = Vec::with_capacity(count as usize);
    for (i, at) in list.step_by(COMMAND_SPEC.size as usize).enumerate() {
        commands.push(lift_command_spec(mem, at, i)?);
    }
    Ok(PluginInfo {
        name,
        version,
        commands,
    })
}

/// A string of `describe`'s answer: in bounds, then within its length
/// limit, then UTF-8.
fn bounded_string(mem: &[u8], at: usize, field: Field) -> Result<String, PluginError> {
    let (ptr, len) = pair_at(mem, at)?;
    let raw = bytes(mem, ptr, len)?;
    check_len(field, raw.len())?;
    core::str::from_utf8(raw)
        .map(Into::into)
        .map_err(|_| not_utf8(field))
}

fn lift_command_spec(mem: &[u8], at: usize, index: usize) -> Result<CommandSpec, PluginError> {
    let name = bounded_string(mem, at, Field::CommandName(index))?;
    let (roles_ptr, roles_len) = pair_at(mem, at + 8)?;
    let raw = bytes(mem, roles_ptr, roles_len)?;
    check_len(Field::Roles(index), raw.len())?;
    let roles = raw
        .iter()
        .enumerate()
        .map(|(j, &d)| role(d).map_err(|_| bad_role(index, j)))
        .collect::<Result<_, _>>()?;
    let budget_ms = match option_disc(u8_at(mem, at + 16)?)? {
        true => Some(u32_at(mem, at + 20)?),
        false => None,
    };
    Ok(CommandSpec {
        name,
        roles,
        budget_ms,
    })
}

/// Lifts `handle`'s result. The reply is bounds-checked, then its length
/// compared with `max_reply_bytes`, before a byte is copied: a guest claiming
/// a 1 GiB reply costs nothing. Bounds come first, as in wasmtime's lifting,
/// so both engines call a claim past the end of memory `Abi` and an
/// in-bounds reply over the limit `ReplyTooLarge`.
pub(super) fn lift_handle_result(
    mem: &[u8],
    ptr: u32,
    limits: &Limits,
) -> Result<HandlerResult, PluginError> {
    let at = record(mem, ptr, HANDLE_RESULT)?.start;
    match u8_at(mem, at)? {
        0 => {
            if !option_disc(u8_at(mem, at + 4)?)? {
                return Ok(Ok(None));
            }
            let (reply_ptr, len) = pair_at(mem, at + 8)?;
            let reply = bytes(mem, reply_ptr, len)?;
            check_reply(reply.len(), limits)?;
            Ok(Ok(Some(reply.to_vec())))
        }
        1 => {
            let kind = error_kind(u8_at(mem, at + 4)?)?;
            let (msg_ptr, msg_len) = pair_at(mem, at + 8)?;
            check_message(bytes(mem, msg_ptr, msg_len)?.len(), limits)?;
            let message = string_at(mem, at + 8)?;
            Ok(Err(HandlerError { kind, message }))
        }
        d => Err(abi(format!("invalid result discriminant {d}"))),
    }
}

/// Stores `kv-get`'s answer in its return area; `list` is where the value
/// was copied (already allocated through `cabi_realloc`).
pub(super) fn store_kv_get(
    mem: &mut [u8],
    retptr: u32,
    list: Option<(u32, u32)>,
) -> Result<(), PluginError> {
    let area = record(mem, retptr, KV_GET_RESULT)?;
    let out = &mut mem[area];
    match list {
        None => out[0] = 0,
        Some((ptr, len)) => {
            out[0] = 1;
            out[4..8].copy_from_slice(&ptr.to_le_bytes());
            out[8..12].copy_from_slice(&len.to_le_bytes());
        }
    }
    Ok(())
}

/// Stores `kv-set`'s answer in its return area.
pub(super) fn store_kv_set(
    mem: &mut [u8],
    retptr: u32,
    result: Result<(), KvError>,
) -> Result<(), PluginError> {
    let area = record(mem, retptr, KV_SET_RESULT)?;
    let out = &mut mem[area];
    match result {
        Ok(()) => out[0] = 0,
        Err(e) => {
            out[0] = 1;
            out[1] = match e {
                KvError::TooLarge => 0,
                KvError::QuotaExceeded => 1,
            };
        }
    }
    Ok(())
}

/// Copies `data` into a buffer the guest's `cabi_realloc` returned.
pub(super) fn store_bytes(mem: &mut [u8], ptr: u32, data: &[u8]) -> Result<(), PluginError> {
    let r = range(mem, ptr, data.len())?;
    mem[r].copy_from_slice(data);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim(max_reply_bytes: usize) -> Limits {
        Limits {
            max_reply_bytes,
            ..Limits::default()
        }
    }
    use alloc::vec;

    fn put(mem: &mut [u8], at: usize, words: &[u32]) {
        for (i, w) in words.iter().enumerate() {
            mem[at + 4 * i..at + 4 * i + 4].copy_from_slice(&w.to_le_bytes());
        }
    }

    /// A memory holding a valid `plugin-info` at 0 with one command.
    fn info_mem() -> Vec<u8> {
        let mut m = vec![0u8; 256];
        m[100..104].copy_from_slice(b"echo");
        m[110..115].copy_from_slice(b"1.0.0");
        m[120..124].copy_from_slice(b"ping");
        m[130..132].copy_from_slice(&[0, 2]);
        put(&mut m, 0, &[100, 4, 110, 5, 40, 1]);
        put(&mut m, 40, &[120, 4, 130, 2]);
        m[56] = 1;
        put(&mut m, 60, &[250]);
        m
    }

    #[test]
    fn lifts_plugin_info() {
        let info = lift_plugin_info(&info_mem(), 0).unwrap();
        assert_eq!(info.name, "echo");
        assert_eq!(info.version, "1.0.0");
        assert_eq!(
            info.commands,
            vec![CommandSpec {
                name: "ping".into(),
                roles: vec![Role::Admin, Role::Secondary],
                budget_ms: Some(250)
            }]
        );
    }

    #[test]
    fn rejects_bad_plugin_info() {
        let check = |m: &[u8], ptr: u32| {
            assert!(matches!(lift_plugin_info(m, ptr), Err(PluginError::Abi(_))))
        };
        let m = info_mem();
        check(&m, 2); // misaligned return area
        check(&m, 240); // return area past the end
        check(&m, u32::MAX - 3); // overflowing pointer
                                 // A role out of range and a name that is not UTF-8 are `Describe`
                                 // errors naming the field.
        let mut bad = m.clone();
        bad[130] = 3;
        assert_eq!(
            lift_plugin_info(&bad, 0),
            Err(PluginError::Describe(
                "command 0: role 0 is not a role (admin, primary, secondary)".into()
            ))
        );
        let mut bad = m.clone();
        bad[56] = 2; // option discriminant
        check(&bad, 0);
        let mut bad = m.clone();
        bad[100] = 0xff;
        assert!(matches!(
            lift_plugin_info(&bad, 0),
            Err(PluginError::Describe(msg)) if msg.ends_with("is not UTF-8")
        ));
        let mut bad = m.clone();
        put(&mut bad, 20, &[u32::MAX]); // 4 billion commands
        check(&bad, 0);
        let mut bad = m.clone();
        put(&mut bad, 16, &[42]); // misaligned command list
        check(&bad, 0);
        let mut bad = m;
        put(&mut bad, 0, &[u32::MAX, 2]); // name pointer wraps
        check(&bad, 0);
    }

    #[test]
    fn lifts_handle_results() {
        let mut m = vec![0u8; 64];
        m[32..35].copy_from_slice(b"abc");
        put(&mut m, 8, &[32, 3]);
        m[4] = 1;
        assert_eq!(
            lift_handle_result(&m, 0, &lim(3)),
            Ok(Ok(Some(b"abc".to_vec())))
        );
        assert_eq!(
            lift_handle_result(&m, 0, &lim(2)),
            Err(PluginError::ReplyTooLarge { size: 3, limit: 2 })
        );
        m[4] = 0;
        assert_eq!(lift_handle_result(&m, 0, &lim(3)), Ok(Ok(None)));
        m[0] = 1;
        m[4] = 2;
        let err = HandlerError {
            kind: ErrorKind::OutOfBounds,
            message: "abc".into(),
        };
        assert_eq!(lift_handle_result(&m, 0, &lim(3)), Ok(Err(err)));
        // The message counts against the reply limit too.
        assert_eq!(
            lift_handle_result(&m, 0, &lim(2)),
            Err(PluginError::ReplyTooLarge { size: 3, limit: 2 })
        );
        m[4] = 4;
        assert!(matches!(
            lift_handle_result(&m, 0, &lim(0)),
            Err(PluginError::Abi(_))
        ));
        m[0] = 2;
        assert!(matches!(
            lift_handle_result(&m, 0, &lim(0)),
            Err(PluginError::Abi(_))
        ));
        // A 1 GiB claim lies past the end of memory: Abi, as on wasmtime.
        m[0] = 0;
        m[4] = 1;
        put(&mut m, 8, &[0, 1 << 30]);
        assert!(matches!(
            lift_handle_result(&m, 0, &lim(10)),
            Err(PluginError::Abi(_))
        ));
        // In bounds but over the limit.
        put(&mut m, 8, &[0, 11]);
        assert_eq!(
            lift_handle_result(&m, 0, &lim(10)),
            Err(PluginError::ReplyTooLarge {
                size: 11,
                limit: 10
            })
        );
        // Within the limit but out of bounds.
        put(&mut m, 8, &[60, 8]);
        assert!(matches!(
            lift_handle_result(&m, 0, &lim(10)),
            Err(PluginError::Abi(_))
        ));
    }

    #[test]
    fn stores_import_results() {
        let mut m = vec![0xaau8; 16];
        store_kv_get(&mut m, 4, Some((0x1234, 7))).unwrap();
        assert_eq!(
            &m[4..16],
            &[1, 0xaa, 0xaa, 0xaa, 0x34, 0x12, 0, 0, 7, 0, 0, 0]
        );
        assert!(store_kv_get(&mut m, 6, None).is_err());
        assert!(store_kv_get(&mut m, 8, None).is_err());
        assert!(store_kv_set(&mut m, 15, Ok(())).is_err());
        store_kv_set(&mut m, 13, Err(KvError::QuotaExceeded)).unwrap();
        assert_eq!(&m[13..15], &[1, 1]);
        assert!(store_bytes(&mut m, 10, b"1234567").is_err());
        store_bytes(&mut m, 9, b"1234567").unwrap();
    }

    #[test]
    fn strings_and_enums() {
        assert_eq!(string(b"hello", 1, 3), Ok("ell"));
        assert!(string(b"\xff\xfe", 0, 2).is_err());
        assert!(bytes(b"abc", 2, 2).is_err());
        assert!(bytes(b"abc", u32::MAX, 2).is_err());
        assert_eq!(bytes(b"abc", 3, 0), Ok(&[][..]));
        assert_eq!(log_level(4), Ok(LogLevel::Error));
        assert!(log_level(5).is_err());
        assert!(role(3).is_err());
        for r in Role::ALL {
            assert_eq!(role(role_disc(r) as u8), Ok(r));
        }
    }
}
