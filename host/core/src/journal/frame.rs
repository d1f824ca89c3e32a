//! CRC framing of journal records: how opaque record bytes become a log that
//! survives a crash at any byte. Every backend (file, flash, memory) stores
//! the same frames, so one decoder decides what a crash left behind.
//!
//! ```text
//! frame = len: u32 LE | crc: u32 LE (crc32 of payload) | payload: len bytes
//! ```
//!
//! Decoding walks frames from the start and stops at the first one that is
//! incomplete ([`FrameEnd::Torn`], what an append cut short by a crash looks
//! like) or invalid ([`FrameEnd::Corrupt`]: a zero or over-limit length, or a
//! CRC mismatch). Everything before that point is returned, nothing after it:
//! the valid records are therefore always a prefix of what was appended, even
//! when the device wrote pages out of order before losing power (the hole
//! stops decoding, later frames are not trusted). There is no resync after a
//! bad frame on purpose: a record found past damage could be a stale or
//! misaligned one, and handing it to the scheduler would break the prefix
//! property the runtime's ordering depends on.
//!
//! Lengths are bounded by [`MAX_RECORD_LEN`] so a flipped length bit cannot
//! make a reader allocate gigabytes, and zero-length records are refused so a
//! zero-filled region (a file extended by a crash, erased flash reads `0xff`
//! which fails the length check) never decodes as an endless run of empty
//! records.

use alloc::vec::Vec;

/// Bytes before each payload: length and CRC, both `u32` little endian.
pub const FRAME_HEADER_LEN: usize = 8;

/// Largest accepted record payload (1 MiB). Journal records are small (a
/// command envelope is bounded far below this); the limit exists so that a
/// corrupt length field is recognised as corruption, not trusted.
pub const MAX_RECORD_LEN: usize = 1 << 20;

/// Why a record cannot be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a journal record must not be empty")]
    Empty,
    #[error("journal record of {len} bytes exceeds the {MAX_RECORD_LEN}-byte limit")]
    TooLarge { len: usize },
}

/// What made a complete frame invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// Length is zero or above [`MAX_RECORD_LEN`].
    BadLength { len: u32 },
    /// The payload's CRC differs from the stored one.
    CrcMismatch { stored: u32, computed: u32 },
}

/// Where and why the valid part of a log ends. Offsets are relative to the
/// buffer handed to the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameEnd {
    /// The buffer ends exactly after the last valid frame.
    Clean,
    /// The buffer ends inside the frame starting at `offset` (its header or
    /// payload is incomplete): an append cut short by a crash.
    Torn { offset: usize },
    /// The frame starting at `offset` is complete but invalid.
    Corrupt { offset: usize, reason: Corruption },
}

impl FrameEnd {
    /// Byte offset where validity ends (`None` for [`FrameEnd::Clean`]).
    pub fn offset(&self) -> Option<usize> {
        match *self {
            FrameEnd::Clean => None,
            FrameEnd::Torn { offset } | FrameEnd::Corrupt { offset, .. } => Some(offset),
        }
    }
}

/// Size of the frame holding a payload of `payload_len` bytes.
pub const fn frame_len(payload_len: usize) -> usize {
    FRAME_HEADER_LEN + payload_len
}

/// CRC-32 (IEEE, as in zlib) of a payload: crc32fast (hardware-assisted
/// where the CPU has it) on an operating system, [`compact_checksum`] on a
/// microcontroller. Both compute the same value, so a journal moves between them.
#[cfg(not(target_os = "none"))]
pub fn checksum(payload: &[u8]) -> u32 {
    crc32fast::hash(payload)
}

/// CRC-32 (IEEE, as in zlib) of a payload.
#[cfg(target_os = "none")]
pub fn checksum(payload: &[u8]) -> u32 {
    compact_checksum(payload)
}

/// The same CRC-32 with a 1 KiB table (`crc`'s `Table<1>`) instead of
/// crc32fast's 16 KiB: flash is what a microcontroller lacks, and its journal
/// records are a few hundred bytes.
pub fn compact_checksum(payload: &[u8]) -> u32 {
    const CRC: crc::Crc<u32, crc::Table<1>> =
        crc::Crc::<u32, crc::Table<1>>::new(&crc::CRC_32_ISO_HDLC);
    CRC.checksum(payload)
}

/// Appends the frame of `payload` to `out`. On error `out` is unchanged.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    if payload.is_empty() {
        return Err(FrameError::Empty);
    }
    if payload.len() > MAX_RECORD_LEN {
        return Err(FrameError::TooLarge { len: payload.len() });
    }
    out.reserve(frame_len(payload.len()));
    // Fits: MAX_RECORD_LEN < u32::MAX.
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&checksum(payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// Decodes the frame starting at `offset`: its payload and the offset of the
/// next frame, or why the log's valid part ends here.
pub fn decode_frame(buf: &[u8], offset: usize) -> Result<(&[u8], usize), FrameEnd> {
    let rest = buf.get(offset..).unwrap_or(&[]);
    if rest.is_empty() {
        return Err(FrameEnd::Clean);
    }
    let Some((header, body)) = rest.split_first_chunk::<FRAME_HEADER_LEN>() else {
        return Err(FrameEnd::Torn { offset });
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let stored = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 || len as usize > MAX_RECORD_LEN {
        let reason = Corruption::BadLength { len };
        return Err(FrameEnd::Corrupt { offset, reason });
    }
    let Some(payload) = body.get(..len as usize) else {
        return Err(FrameEnd::Torn { offset });
    };
    let computed = checksum(payload);
    if computed != stored {
        let reason = Corruption::CrcMismatch { stored, computed };
        return Err(FrameEnd::Corrupt { offset, reason });
    }
    Ok((payload, offset + frame_len(payload.len())))
}

/// Iterator over the valid records of a log buffer, zero-copy. After it
/// returns `None`, [`Frames::end`] says why and [`Frames::valid_len`] where.
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    buf: &'a [u8],
    pos: usize,
    end: Option<FrameEnd>,
}

/// Walks the frames of `buf` from its start.
pub fn frames(buf: &[u8]) -> Frames<'_> {
    Frames {
        buf,
        pos: 0,
        end: None,
    }
}

impl<'a> Frames<'a> {
    /// Bytes of `buf` covered by the records yielded so far.
    pub fn valid_len(&self) -> usize {
        self.pos
    }

    /// Why iteration stopped; `None` while records remain.
    pub fn end(&self) -> Option<FrameEnd> {
        self.end
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.end.is_some() {
            return None;
        }
        match decode_frame(self.buf, self.pos) {
            Ok((payload, next)) => {
                self.pos = next;
                Some(payload)
            }
            Err(end) => {
                self.end = Some(end);
                None
            }
        }
    }
}

/// A whole log buffer, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// The valid records, in log order.
    pub records: Vec<&'a [u8]>,
    /// Length of the valid prefix of the buffer; a writer continues here.
    pub valid_len: usize,
    /// Why decoding stopped.
    pub end: FrameEnd,
}

/// Decodes every valid record of `buf`, stopping at the first torn or
/// corrupt frame.
pub fn decode_frames(buf: &[u8]) -> Decoded<'_> {
    let mut it = frames(buf);
    let records = it.by_ref().collect();
    Decoded {
        records,
        valid_len: it.valid_len(),
        end: it.end().unwrap_or(FrameEnd::Clean),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    fn log_of(records: &[Vec<u8>]) -> Vec<u8> {
        let mut log = Vec::new();
        for r in records {
            encode_frame(r, &mut log).unwrap();
        }
        log
    }

    #[test]
    fn round_trips_records() {
        let recs = vec![b"a".to_vec(), vec![7; 300], b"hello".to_vec()];
        let log = log_of(&recs);
        let d = decode_frames(&log);
        assert_eq!(
            d.records,
            recs.iter().map(Vec::as_slice).collect::<Vec<_>>()
        );
        assert_eq!(d.valid_len, log.len());
        assert_eq!(d.end, FrameEnd::Clean);
    }

    #[test]
    fn refuses_empty_and_oversized_records() {
        let mut out = vec![1, 2];
        assert_eq!(encode_frame(b"", &mut out), Err(FrameError::Empty));
        let big = vec![0; MAX_RECORD_LEN + 1];
        assert_eq!(
            encode_frame(&big, &mut out),
            Err(FrameError::TooLarge {
                len: MAX_RECORD_LEN + 1
            })
        );
        assert_eq!(out, vec![1, 2]);
        encode_frame(&big[..MAX_RECORD_LEN], &mut out).unwrap();
        assert_eq!(decode_frame(&out, 2).unwrap().0.len(), MAX_RECORD_LEN);
    }

    #[test]
    fn torn_header_and_torn_payload_are_torn() {
        let log = log_of(&[b"one".to_vec(), b"two".to_vec()]);
        let second = frame_len(3);
        for cut in second + 1..log.len() {
            let d = decode_frames(&log[..cut]);
            assert_eq!(d.records, vec![b"one".as_slice()]);
            assert_eq!(d.valid_len, second);
            assert_eq!(d.end, FrameEnd::Torn { offset: second });
        }
    }

    #[test]
    fn zero_filled_tail_is_corrupt_not_empty_records() {
        let mut log = log_of(&[b"x".to_vec()]);
        let at = log.len();
        log.extend_from_slice(&[0; 64]);
        let d = decode_frames(&log);
        assert_eq!(d.records.len(), 1);
        let reason = Corruption::BadLength { len: 0 };
        assert_eq!(d.end, FrameEnd::Corrupt { offset: at, reason });
        // Erased NOR flash reads 0xff: an absurd length, also corrupt.
        let erased = [0xff; 16];
        assert!(matches!(
            decode_frames(&erased).end,
            FrameEnd::Corrupt { offset: 0, .. }
        ));
    }

    #[test]
    fn corrupt_middle_frame_stops_decoding() {
        let mut log = log_of(&[b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
        let second = frame_len(3);
        log[second + FRAME_HEADER_LEN] ^= 0x01; // flip a payload bit of "two"
        let d = decode_frames(&log);
        assert_eq!(d.records, vec![b"one".as_slice()]);
        assert_eq!(d.valid_len, second);
        assert_eq!(d.end.offset(), Some(second));
        assert!(matches!(
            d.end,
            FrameEnd::Corrupt {
                reason: Corruption::CrcMismatch { .. },
                ..
            }
        ));
    }

    fn records() -> impl Strategy<Value = Vec<Vec<u8>>> {
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..200), 0..20)
    }

    proptest! {
        #[test]
        fn both_checksums_agree(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            prop_assert_eq!(compact_checksum(&bytes), crc32fast::hash(&bytes));
        }

        #[test]
        fn any_truncation_replays_a_prefix(recs in records(), cut in any::<proptest::sample::Index>()) {
            let log = log_of(&recs);
            let cut = cut.index(log.len() + 1);
            let d = decode_frames(&log[..cut]);
            prop_assert!(d.records.len() <= recs.len());
            for (got, want) in d.records.iter().zip(&recs) {
                prop_assert_eq!(*got, want.as_slice());
            }
            prop_assert!(d.valid_len <= cut);
            // A cut on a frame boundary loses nothing before it.
            let boundary: usize = recs[..d.records.len()].iter().map(|r| frame_len(r.len())).sum();
            prop_assert_eq!(d.valid_len, boundary);
        }

        #[test]
        fn bit_flips_never_yield_a_bad_record(
            recs in records(),
            flips in proptest::collection::vec((any::<proptest::sample::Index>(), 0u8..8), 1..8),
        ) {
            let mut log = log_of(&recs);
            if log.is_empty() {
                return Ok(());
            }
            for (at, bit) in &flips {
                let i = at.index(log.len());
                log[i] ^= 1 << bit;
            }
            let d = decode_frames(&log);
            // Every record returned carries a matching CRC and lies in the buffer.
            let mut pos = 0;
            for r in &d.records {
                let (payload, next) = decode_frame(&log, pos).unwrap();
                prop_assert_eq!(payload, *r);
                prop_assert_eq!(checksum(r), u32::from_le_bytes(log[pos + 4..pos + 8].try_into().unwrap()));
                pos = next;
            }
            prop_assert_eq!(pos, d.valid_len);
            // CRC-32 catches any burst of up to 32 bits and all odd flip counts, so
            // what survives is, barring a 2^-32 collision, a prefix of the originals.
            for (got, want) in d.records.iter().zip(&recs) {
                prop_assert_eq!(*got, want.as_slice());
            }
            // Frames before the first flipped byte are intact and returned.
            let first_flip = flips.iter().map(|(at, _)| at.index(log.len())).min().unwrap();
            let mut intact = 0;
            let mut off = 0;
            for r in &recs {
                if off + frame_len(r.len()) > first_flip { break; }
                off += frame_len(r.len());
                intact += 1;
            }
            prop_assert!(d.records.len() >= intact);
            for (got, want) in d.records.iter().zip(&recs).take(intact) {
                prop_assert_eq!(*got, want.as_slice());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let d = decode_frames(&bytes);
            prop_assert!(d.valid_len <= bytes.len());
            for r in d.records {
                prop_assert!(!r.is_empty() && r.len() <= MAX_RECORD_LEN);
            }
        }
    }
}
