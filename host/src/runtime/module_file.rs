//! Reads a plugin module from its file without the custom sections no
//! engine uses, so loading holds what runs, not what the file carries.
//!
//! Custom sections (debug info, `producers`, padding, a signer's notes)
//! can be most of a file, and neither engine needs them: the metering
//! rewrite would copy them and wasmi would keep them. Reading section by
//! section and skipping them keeps a load's memory tied to the module's
//! code rather than to its file's size. The `name` section stays (trap
//! messages name functions with it).
//!
//! Anything unexpected in the section layout (a truncated header, a size
//! past the end) is not this reader's to judge: it falls back to the file's
//! plain bytes, and the load step's acceptance rule reports the fault. A
//! file over the module size limit is read as is too, so that rule still
//! refuses it by size.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::path::Path;

const CUSTOM: u8 = 0;
const KEPT_CUSTOM: &[u8] = b"name";

/// The module at `path` without its unused custom sections (see the module
/// doc); `max_module_bytes` is the load limit.
pub fn read_module(path: &Path, max_module_bytes: usize) -> io::Result<Vec<u8>> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    if len > max_module_bytes as u64 {
        return std::fs::read(path);
    }
    match strip(BufReader::with_capacity(16 * 1024, file), len) {
        Ok(Some(wasm)) => Ok(wasm),
        Ok(None) => std::fs::read(path),
        Err(e) => Err(e),
    }
}

/// `Ok(None)`: not a section layout this reader follows.
fn strip<R: Read + Seek>(mut r: R, len: u64) -> io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    let mut header = [0u8; 8];
    if len < 8 || r.read_exact(&mut header).is_err() {
        return Ok(None);
    }
    out.extend_from_slice(&header);
    let mut at = 8u64;
    while at < len {
        let mut raw = Vec::with_capacity(16);
        let Some(id) = byte(&mut r, &mut raw)? else {
            return Ok(None);
        };
        let Some(size) = leb_u32(&mut r, &mut raw)? else {
            return Ok(None);
        };
        let body_at = at + raw.len() as u64;
        let end = body_at + u64::from(size);
        if end > len {
            return Ok(None);
        }
        let mut consumed = 0u64;
        let keep = if id == CUSTOM {
            let before = raw.len();
            let Some(name_len) = leb_u32(&mut r, &mut raw)? else {
                return Ok(None);
            };
            if u64::from(name_len) + (raw.len() - before) as u64 > u64::from(size) {
                return Ok(None);
            }
            let mut name = vec![0; name_len as usize];
            r.read_exact(&mut name)?;
            raw.extend_from_slice(&name);
            consumed = (raw.len() - before) as u64;
            name == KEPT_CUSTOM
        } else {
            true
        };
        let rest = u64::from(size) - consumed;
        if keep {
            out.extend_from_slice(&raw);
            let start = out.len();
            out.resize(start + rest as usize, 0);
            r.read_exact(&mut out[start..])?;
        } else {
            r.seek_relative(rest as i64)?;
        }
        at = end;
    }
    Ok(Some(out))
}

fn byte(r: &mut impl Read, raw: &mut Vec<u8>) -> io::Result<Option<u8>> {
    let mut b = [0u8; 1];
    match r.read(&mut b)? {
        0 => Ok(None),
        _ => {
            raw.push(b[0]);
            Ok(Some(b[0]))
        }
    }
}

/// An unsigned LEB128 of at most 5 bytes (a u32), its bytes kept in `raw`.
fn leb_u32(r: &mut impl Read, raw: &mut Vec<u8>) -> io::Result<Option<u32>> {
    let mut value = 0u64;
    for i in 0..5 {
        let Some(b) = byte(r, raw)? else {
            return Ok(None);
        };
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(u32::try_from(value).ok());
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn custom(name: &str, payload_len: usize) -> Vec<u8> {
        let mut body = Vec::new();
        leb(name.len(), &mut body);
        body.extend_from_slice(name.as_bytes());
        body.resize(body.len() + payload_len, 0xab);
        let mut s = vec![CUSTOM];
        leb(body.len(), &mut s);
        s.extend(body);
        s
    }

    fn run(bytes: &[u8]) -> Option<Vec<u8>> {
        strip(Cursor::new(bytes), bytes.len() as u64).unwrap()
    }

    const HEADER: &[u8] = b"\0asm\x01\0\0\0";
    // A type section with one `() -> ()`.
    const TYPES: &[u8] = &[1, 4, 1, 0x60, 0, 0];

    #[test]
    fn unused_custom_sections_are_left_out_and_the_rest_is_kept_byte_for_byte() {
        let mut file = HEADER.to_vec();
        file.extend(custom("producers", 10));
        file.extend_from_slice(TYPES);
        file.extend(custom("pad", 300_000));
        file.extend(custom("name", 3));
        let mut want = HEADER.to_vec();
        want.extend_from_slice(TYPES);
        want.extend(custom("name", 3));
        assert_eq!(run(&file), Some(want));
    }

    #[test]
    fn a_layout_it_does_not_follow_is_left_to_the_acceptance_rule() {
        let mut past_the_end = HEADER.to_vec();
        past_the_end.extend_from_slice(&[1, 40, 1]);
        assert_eq!(run(&past_the_end), None);
        let mut name_too_long = HEADER.to_vec();
        name_too_long.extend_from_slice(&[0, 2, 9, b'x']);
        assert_eq!(run(&name_too_long), None);
        assert_eq!(run(b"\0asm"), None);
        let mut endless_leb = HEADER.to_vec();
        endless_leb.extend_from_slice(&[1, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(run(&endless_leb), None);
    }
}
