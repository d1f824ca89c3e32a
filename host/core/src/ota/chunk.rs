//! Receiving a bundle in chunks (`_install` commands), written to staging
//! storage as they arrive, so a microcontroller never holds a whole bundle
//! in RAM and a transfer resumes after a reconnect or a crash.
//!
//! Payload of one `_install`: `{"bundle": <64 hex chars>, "offset": u64,
//! "total": u64, "data": bin}`. `bundle` names the transfer (the sender
//! uses the sha256 of the whole bundle); it only keeps two transfers apart,
//! trust comes from the signature checked at the end.
//!
//! Rules, all decided here:
//! - chunks come in order (the FIFO guarantees it); a chunk starting past
//!   what is staged is refused (`bundle_chunk_gap`), since a chunk before it
//!   failed and the transfer must start again;
//! - a chunk at or before the staged end is written at its offset and the
//!   staged length becomes its end: a redelivered or re-run chunk leaves the
//!   same bytes, so receiving is idempotent;
//! - a chunk of another transfer at offset 0 discards the staged one (one
//!   transfer at a time bounds the storage an update may use);
//! - the chunk that reaches `total` completes the bundle.

use alloc::format;
use alloc::string::{String, ToString};

use crate::msgpack::{Reader, DEFAULT_MAX_DEPTH};

use super::Refusal;

/// One decoded `_install` payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk<'a> {
    pub transfer: [u8; 32],
    pub offset: u64,
    pub total: u64,
    pub data: &'a [u8],
}

/// Decodes an `_install` payload.
pub fn decode(payload: &[u8]) -> Result<Chunk<'_>, Refusal> {
    const USAGE: &str =
        "expected {\"bundle\": <64 hex chars>, \"offset\": int, \"total\": int, \"data\": bin}";
    let bad = |_| Refusal::BadRequest(USAGE.into());
    let mut r = Reader::new(payload);
    let (mut transfer, mut offset, mut total, mut data) = (None, None, None, None);
    for _ in 0..r.read_map_len().map_err(bad)? {
        match r.read_key(DEFAULT_MAX_DEPTH).map_err(bad)? {
            Some(b"bundle") => transfer = Some(parse_hex32(r.read_str().map_err(bad)?)?),
            Some(b"offset") => offset = Some(r.read_u64().map_err(bad)?),
            Some(b"total") => total = Some(r.read_u64().map_err(bad)?),
            Some(b"data") => data = Some(r.read_bin().map_err(bad)?),
            _ => r.skip(DEFAULT_MAX_DEPTH).map_err(bad)?,
        }
    }
    match (transfer, offset, total, data) {
        (Some(transfer), Some(offset), Some(total), Some(data)) => Ok(Chunk {
            transfer,
            offset,
            total,
            data,
        }),
        _ => Err(Refusal::BadRequest(USAGE.into())),
    }
}

/// The transfer id senders use: the hex sha256 of the whole bundle.
pub fn transfer_id(bundle: &[u8]) -> String {
    use sha2::Digest;
    super::bundle::hex(&sha2::Sha256::digest(bundle))
}

/// One `_install` payload.
pub fn encode(transfer: &str, offset: u64, total: u64, data: &[u8]) -> alloc::vec::Vec<u8> {
    let mut w = crate::msgpack::Writer::with_capacity(data.len() + 128);
    w.map_len(4)
        .str("bundle")
        .str(transfer)
        .str("offset")
        .uint(offset)
        .str("total")
        .uint(total)
        .str("data")
        .bin(data);
    w.into_vec()
}

/// The `_install` payloads of `bundle` in chunks of `size` bytes, in
/// order, as `relay plugin push` and the hub's rollouts send them.
pub fn payloads(bundle: &[u8], size: usize) -> alloc::vec::Vec<alloc::vec::Vec<u8>> {
    let transfer = transfer_id(bundle);
    let size = size.max(1);
    bundle
        .chunks(size)
        .enumerate()
        .map(|(i, data)| encode(&transfer, (i * size) as u64, bundle.len() as u64, data))
        .collect()
}

/// The `{"name": ...}` payload of `_rollback` and `_remove`.
pub fn decode_name(payload: &[u8]) -> Result<String, Refusal> {
    let usage = || Refusal::BadRequest("expected {\"name\": \"<plugin>\"}".into());
    let mut r = Reader::new(payload);
    for _ in 0..r.read_map_len().map_err(|_| usage())? {
        match r.read_key(DEFAULT_MAX_DEPTH).map_err(|_| usage())? {
            Some(b"name") => return r.read_str().map(str::to_string).map_err(|_| usage()),
            _ => r.skip(DEFAULT_MAX_DEPTH).map_err(|_| usage())?,
        }
    }
    Err(usage())
}

fn parse_hex32(s: &str) -> Result<[u8; 32], Refusal> {
    super::bundle::unhex(s)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Refusal::BadRequest(format!("bundle id {s:?} is not 64 hex characters")))
}

/// Where chunks are kept until the bundle is complete: a file on Linux, a
/// flash partition on a microcontroller. One transfer at a time.
pub trait Staging {
    /// The staged transfer and how many bytes of it are stored.
    fn current(&mut self) -> Result<Option<([u8; 32], u64)>, String>;
    /// Drops any staged transfer and starts `transfer`, empty.
    fn start(&mut self, transfer: &[u8; 32]) -> Result<(), String>;
    /// Writes `data` at `offset`, makes the staged length `offset +
    /// data.len()`, and makes it durable before returning.
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), String>;
}

/// How far a transfer is after one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// `have` of `total` bytes are staged.
    Partial { have: u64, total: u64 },
    /// The bundle is complete in staging.
    Complete { total: u64 },
}

/// Stages one chunk (see the module doc for the rules).
pub fn receive(
    staging: &mut impl Staging,
    chunk: &Chunk<'_>,
    max_bytes: u64,
) -> Result<Progress, Refusal> {
    if chunk.total > max_bytes {
        return Err(Refusal::TooLarge {
            size: chunk.total,
            max: max_bytes,
        });
    }
    let end = chunk
        .offset
        .checked_add(chunk.data.len() as u64)
        .filter(|&end| end <= chunk.total)
        .ok_or_else(|| {
            Refusal::BadRequest(format!(
                "chunk {}+{} runs past the bundle's {} bytes",
                chunk.offset,
                chunk.data.len(),
                chunk.total
            ))
        })?;
    let have = match staging.current().map_err(Refusal::Storage)? {
        Some((transfer, have)) if transfer == chunk.transfer => have,
        _ if chunk.offset == 0 => {
            staging.start(&chunk.transfer).map_err(Refusal::Storage)?;
            0
        }
        _ => {
            return Err(Refusal::ChunkGap {
                have: 0,
                got: chunk.offset,
            })
        }
    };
    if chunk.offset > have {
        return Err(Refusal::ChunkGap {
            have,
            got: chunk.offset,
        });
    }
    staging
        .write(chunk.offset, chunk.data)
        .map_err(Refusal::Storage)?;
    Ok(if end == chunk.total {
        Progress::Complete { total: end }
    } else {
        Progress::Partial {
            have: end,
            total: chunk.total,
        }
    })
}

/// Staging in RAM, for tests and for devices with room for a bundle.
#[derive(Debug, Default)]
pub struct MemStaging {
    pub transfer: Option<[u8; 32]>,
    pub bytes: alloc::vec::Vec<u8>,
}

impl Staging for MemStaging {
    fn current(&mut self) -> Result<Option<([u8; 32], u64)>, String> {
        Ok(self.transfer.map(|t| (t, self.bytes.len() as u64)))
    }
    fn start(&mut self, transfer: &[u8; 32]) -> Result<(), String> {
        self.transfer = Some(*transfer);
        self.bytes.clear();
        Ok(())
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), String> {
        let offset = usize::try_from(offset).map_err(|e| e.to_string())?;
        self.bytes.truncate(offset);
        self.bytes.extend_from_slice(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msgpack::Writer;

    fn chunk(t: u8, offset: u64, total: u64, data: &[u8]) -> Chunk<'_> {
        Chunk {
            transfer: [t; 32],
            offset,
            total,
            data,
        }
    }

    #[test]
    fn chunks_stage_in_order_idempotently_and_complete() {
        let mut s = MemStaging::default();
        let p = receive(&mut s, &chunk(1, 0, 6, b"abc"), 100).unwrap();
        assert_eq!(p, Progress::Partial { have: 3, total: 6 });
        // Redelivered first chunk: same bytes, same length.
        receive(&mut s, &chunk(1, 0, 6, b"abc"), 100).unwrap();
        assert_eq!(s.bytes, b"abc");
        assert_eq!(
            receive(&mut s, &chunk(1, 5, 6, b"f"), 100),
            Err(Refusal::ChunkGap { have: 3, got: 5 })
        );
        let p = receive(&mut s, &chunk(1, 3, 6, b"def"), 100).unwrap();
        assert_eq!(p, Progress::Complete { total: 6 });
        assert_eq!(s.bytes, b"abcdef");
        // Another transfer must start at 0, and replaces the staged one.
        assert!(matches!(
            receive(&mut s, &chunk(2, 3, 6, b"xyz"), 100),
            Err(Refusal::ChunkGap { have: 0, got: 3 })
        ));
        receive(&mut s, &chunk(2, 0, 6, b"xyz"), 100).unwrap();
        assert_eq!(s.bytes, b"xyz");
        assert!(matches!(
            receive(&mut s, &chunk(2, 0, 600, b"xyz"), 100),
            Err(Refusal::TooLarge { .. })
        ));
        assert!(matches!(
            receive(&mut s, &chunk(2, 4, 6, b"xyz"), 100),
            Err(Refusal::BadRequest(_))
        ));
    }

    #[test]
    fn payloads_decode_or_say_what_is_expected() {
        let bytes = encode(&"ab".repeat(32), 0, 3, b"abc");
        let c = decode(&bytes).unwrap();
        assert_eq!((c.transfer, c.total, c.data), ([0xab; 32], 3, &b"abc"[..]));
        assert!(matches!(decode(&[0x80]), Err(Refusal::BadRequest(_))));
        let mut w = Writer::new();
        w.map_len(1).str("name").str("echo");
        assert_eq!(decode_name(w.as_slice()).unwrap(), "echo");
        assert!(decode_name(&[0xc0]).is_err());
    }

    #[test]
    fn a_bundle_splits_into_chunks_that_stage_back_to_it() {
        let bundle: alloc::vec::Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut s = MemStaging::default();
        let all = payloads(&bundle, 300);
        assert_eq!(all.len(), 4);
        for (i, p) in all.iter().enumerate() {
            let done = receive(&mut s, &decode(p).unwrap(), 10_000).unwrap();
            assert_eq!(matches!(done, Progress::Complete { .. }), i == 3);
        }
        assert_eq!(s.bytes, bundle);
    }
}
