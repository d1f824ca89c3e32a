//! The device journal on NOR flash: `relay_core::journal::Storage` over any
//! [`NorFlash`] (`embedded-storage`), `no_std` + `alloc`, power-loss safe at
//! every write. Beside it, what plugin updates keep on flash: [`bundle`]
//! (chunks staged into a region and read back as a bundle) and [`record`]
//! (the update state, replaced atomically); [`shared::Shared`] lets both
//! live on one chip.
//!
//! Why a log of our own rather than `sequential-storage`: the journal needs
//! exactly two things, appends made durable in groups (one flash write per
//! group commit) and an atomic replacement of the whole log (compaction),
//! and a queue or map crate offers neither the second nor the group write.
//! With two halves the replacement is one header write, and the format is
//! small enough to check at every write a power cut can hit (the tests do).
//!
//! # Layout
//!
//! The partition is split in two halves, A and B (each whole erase
//! sectors). The active half holds a header and a log of **units**:
//!
//! ```text
//! half   = header | unit | unit | ... | erased (0xff)
//! header = magic "RLYJ" | generation: u32 | crc32 of both | pad   (written last)
//! unit   = len: u32 | crc32 of the frames: u32 | pad | frames | pad to the write size
//! ```
//!
//! `frames` are the core's CRC frames (`journal::frame`), one per record.
//! A unit is one `sync` (a group commit): its frames are written first and
//! its header last, so a unit whose header is missing, torn or wrong is the
//! end of the log, and everything before it is intact. Replay walks the
//! units and stops at the first that is not valid: the records are always a
//! prefix of what was appended.
//!
//! **Compaction** (`rewrite`) erases the other half, writes the records
//! there as units, and then writes that half's header with the next
//! generation. At start the half with the valid header of the higher
//! generation is the log: a power cut before the header leaves the old log,
//! after it the new one, never a mix.
//!
//! **After a power cut** the bytes past the last valid unit may be half
//! written, and NOR flash cannot be written twice without an erase. Replay
//! checks that they are erased; if not, the next write first moves the
//! valid units to the other half (a copy and a header), so nothing is ever
//! written over a torn unit.
//!
//! **Space.** The last `reserve` bytes of a half are used only once the
//! rest is full ([`Storage::reserve_in_use`]), as the file journal's
//! reserve is; a sync that does not fit at all fails with
//! [`FlashLogError::NoSpace`] and drops nothing that was durable. The
//! device asks the machine for a compaction once a half is half full
//! ([`Storage::wants_compaction`]), so the reserve is for the burst in
//! between. Wear: each compaction erases one half, so sectors wear evenly
//! across both halves.

#![no_std]

extern crate alloc;

pub mod bundle;
pub mod ram;
pub mod record;
pub mod shared;

use alloc::vec;
use alloc::vec::Vec;

use embedded_storage::nor_flash::NorFlash;
use relay_core::journal::frame::{checksum, decode_frames, encode_frame, FrameError};
use relay_core::journal::{Discarded, FrameEnd, ReplayReport, Storage};

const MAGIC: [u8; 4] = *b"RLYJ";
const ERASED: u32 = u32::MAX;
/// Records rewritten into one unit (bytes of frames), bounding the RAM a
/// compaction and a replay need besides the largest record.
const REWRITE_UNIT: usize = 2048;
/// Bytes read at a time when checking that a tail is erased or copying.
const CHUNK: usize = 256;

/// Why a [`FlashLog`] call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FlashLogError<E: core::fmt::Debug> {
    #[error("flash error: {0:?}")]
    Flash(E),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("no space left: the records do not fit in the {capacity}-byte log")]
    NoSpace { capacity: u32 },
    #[error("a flash write failed before: reopen the log (replay) before using it")]
    Failed,
    #[error("bad partition: {0}")]
    Layout(&'static str),
}

/// Counters (benchmarks, tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlashStats {
    pub units_written: u64,
    pub bytes_written: u64,
    pub sectors_erased: u64,
    pub compactions: u64,
    pub moves: u64,
}

/// See the crate doc.
pub struct FlashLog<F: NorFlash> {
    flash: F,
    /// Partition start and the size of one half.
    base: u32,
    half: u32,
    active: u32,
    generation: u32,
    /// Where the next unit goes, relative to the active half.
    end: u32,
    /// Frames appended since the last sync.
    pending: Vec<u8>,
    reserve: u32,
    /// Bytes past `end` are not erased (a torn write): move before writing.
    must_move: bool,
    failed: bool,
    discarded: Option<Discarded>,
    stats: FlashStats,
}

impl<F: NorFlash> core::fmt::Debug for FlashLog<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FlashLog")
            .field("half", &self.half)
            .field("active", &self.active)
            .field("generation", &self.generation)
            .field("end", &self.end)
            .finish()
    }
}

type Result<T, F> =
    core::result::Result<T, FlashLogError<<F as embedded_storage::nor_flash::ErrorType>::Error>>;

const fn align(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

impl<F: NorFlash> FlashLog<F> {
    /// Bytes every read and write is aligned to.
    const ALIGN: usize = if F::WRITE_SIZE > F::READ_SIZE {
        F::WRITE_SIZE
    } else {
        F::READ_SIZE
    };
    const HEADER_LEN: usize = align(16, Self::ALIGN);
    const UNIT_HEADER_LEN: usize = align(8, Self::ALIGN);

    /// Opens the log in `len` bytes of `flash` from `base` (both whole
    /// pairs of erase sectors), formatting it if it holds no log. `reserve`:
    /// bytes of each half kept for the commands already accepted. Call
    /// [`Storage::replay`] before anything else.
    pub fn open(mut flash: F, base: u32, len: u32, reserve: u32) -> Result<FlashLog<F>, F> {
        let sector = F::ERASE_SIZE as u32;
        if !base.is_multiple_of(sector) || !len.is_multiple_of(2 * sector) || len == 0 {
            return Err(FlashLogError::Layout(
                "base and length must be whole erase sectors, two halves of equal size",
            ));
        }
        if base as usize + len as usize > flash.capacity() {
            return Err(FlashLogError::Layout(
                "the partition passes the flash's end",
            ));
        }
        let half = len / 2;
        if half as usize <= Self::HEADER_LEN + Self::UNIT_HEADER_LEN + reserve as usize {
            return Err(FlashLogError::Layout(
                "a half is too small for its header and reserve",
            ));
        }
        let headers = [
            read_header::<F>(&mut flash, base)?,
            read_header::<F>(&mut flash, base + half)?,
        ];
        let mut log = FlashLog {
            flash,
            base,
            half,
            active: 0,
            generation: 0,
            end: Self::HEADER_LEN as u32,
            pending: Vec::new(),
            reserve,
            must_move: false,
            failed: false,
            discarded: None,
            stats: FlashStats::default(),
        };
        match headers {
            [Some(a), Some(b)] => {
                log.active = u32::from(b > a);
                log.generation = a.max(b);
            }
            [Some(a), None] => log.generation = a,
            [None, Some(b)] => (log.active, log.generation) = (1, b),
            [None, None] => log.format()?,
        }
        Ok(log)
    }

    /// The flash back (tests: to power-cycle it and open it again).
    pub fn into_flash(self) -> F {
        self.flash
    }

    pub fn stats(&self) -> FlashStats {
        self.stats
    }

    /// Bytes of the active half in use (header, units, pending frames).
    pub fn used(&self) -> u32 {
        self.end + self.pending.len() as u32
    }

    /// The size of one half (the most the log may hold).
    pub fn capacity(&self) -> u32 {
        self.half
    }

    fn half_base(&self, which: u32) -> u32 {
        self.base + which * self.half
    }

    fn flash_err(&mut self, e: F::Error) -> FlashLogError<F::Error> {
        self.failed = true;
        FlashLogError::Flash(e)
    }

    fn erase_half(&mut self, which: u32) -> Result<(), F> {
        let from = self.half_base(which);
        // Sector by sector: a cut leaves the sectors before it erased.
        let sector = F::ERASE_SIZE as u32;
        for at in (from..from + self.half).step_by(sector as usize) {
            self.flash
                .erase(at, at + sector)
                .map_err(|e| self.flash_err(e))?;
            self.stats.sectors_erased += 1;
        }
        Ok(())
    }

    fn write(&mut self, at: u32, bytes: &[u8]) -> Result<(), F> {
        self.flash.write(at, bytes).map_err(|e| self.flash_err(e))?;
        self.stats.bytes_written += bytes.len() as u64;
        Ok(())
    }

    fn read(&mut self, at: u32, bytes: &mut [u8]) -> Result<(), F> {
        self.flash.read(at, bytes).map_err(FlashLogError::Flash)
    }

    fn write_header(&mut self, which: u32, generation: u32) -> Result<(), F> {
        let mut header = vec![0u8; Self::HEADER_LEN];
        header[..4].copy_from_slice(&MAGIC);
        header[4..8].copy_from_slice(&generation.to_le_bytes());
        let crc = checksum(&header[..8]);
        header[8..12].copy_from_slice(&crc.to_le_bytes());
        self.write(self.half_base(which), &header)
    }

    /// A blank log in half A.
    fn format(&mut self) -> Result<(), F> {
        self.erase_half(0)?;
        self.write_header(0, 1)?;
        (self.active, self.generation, self.end) = (0, 1, Self::HEADER_LEN as u32);
        Ok(())
    }

    /// Writes `frames` as one unit at `at` (relative to half `which`):
    /// frames first, header last.
    fn write_unit(&mut self, which: u32, at: u32, frames: &mut Vec<u8>) -> Result<u32, F> {
        let len = frames.len();
        let body = align(len, Self::ALIGN);
        let crc = checksum(frames);
        frames.resize(body, 0xff);
        let start = self.half_base(which) + at;
        self.write(start + Self::UNIT_HEADER_LEN as u32, frames)?;
        let mut header = vec![0xffu8; Self::UNIT_HEADER_LEN];
        header[..4].copy_from_slice(&(len as u32).to_le_bytes());
        header[4..8].copy_from_slice(&crc.to_le_bytes());
        self.write(start, &header)?;
        frames.truncate(len);
        self.stats.units_written += 1;
        Ok(at + (Self::UNIT_HEADER_LEN + body) as u32)
    }

    /// Bytes a unit of `frames` bytes takes.
    fn unit_len(frames: usize) -> u32 {
        (Self::UNIT_HEADER_LEN + align(frames, Self::ALIGN)) as u32
    }

    /// Moves the valid units to the other half (the tail after them is not
    /// erased), with the next generation.
    fn move_to_other_half(&mut self) -> Result<(), F> {
        let other = 1 - self.active;
        self.erase_half(other)?;
        let mut buf = [0u8; CHUNK];
        let mut at = Self::HEADER_LEN as u32;
        while at < self.end {
            let n = (self.end - at).min(CHUNK as u32) as usize;
            self.read(self.half_base(self.active) + at, &mut buf[..n])?;
            self.write(self.half_base(other) + at, &buf[..n])?;
            at += n as u32;
        }
        self.switch_to(other)?;
        self.stats.moves += 1;
        Ok(())
    }

    fn switch_to(&mut self, which: u32) -> Result<(), F> {
        let generation = self.generation.wrapping_add(1).max(1);
        self.write_header(which, generation)?;
        (self.active, self.generation) = (which, generation);
        self.must_move = false;
        Ok(())
    }

    /// The unit at `at` of the active half: its frames, or why the log
    /// ends there (`None`: erased, a clean end).
    fn read_unit(&mut self, at: u32) -> Result<core::result::Result<Vec<u8>, Option<FrameEnd>>, F> {
        let offset = (at as usize).saturating_sub(Self::HEADER_LEN);
        let torn = Err(Some(FrameEnd::Torn { offset }));
        if at as usize + Self::UNIT_HEADER_LEN > self.half as usize {
            return Ok(Err(None));
        }
        let mut header = vec![0u8; Self::UNIT_HEADER_LEN];
        self.read(self.half_base(self.active) + at, &mut header)?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len == ERASED && crc == ERASED {
            return Ok(Err(None));
        }
        if len == 0 || at as u64 + u64::from(Self::unit_len(len as usize)) > u64::from(self.half) {
            return Ok(torn);
        }
        let mut frames = vec![0u8; align(len as usize, Self::ALIGN)];
        self.read(
            self.half_base(self.active) + at + Self::UNIT_HEADER_LEN as u32,
            &mut frames,
        )?;
        frames.truncate(len as usize);
        if checksum(&frames) != crc {
            return Ok(torn);
        }
        Ok(Ok(frames))
    }

    /// Whether the active half is erased from `at` to its end.
    fn erased_from(&mut self, at: u32) -> Result<bool, F> {
        let mut buf = [0u8; CHUNK];
        let mut pos = at;
        while pos < self.half {
            let n = (self.half - pos).min(CHUNK as u32) as usize;
            self.read(self.half_base(self.active) + pos, &mut buf[..n])?;
            if buf[..n].iter().any(|b| *b != 0xff) {
                return Ok(false);
            }
            pos += n as u32;
        }
        Ok(true)
    }
}

/// The generation of a valid header at `at`, if there is one.
fn read_header<F: NorFlash>(flash: &mut F, at: u32) -> Result<Option<u32>, F> {
    let mut header = vec![0u8; FlashLog::<F>::HEADER_LEN];
    flash.read(at, &mut header).map_err(FlashLogError::Flash)?;
    let generation = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let crc = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    Ok(
        (header[..4] == MAGIC && checksum(&header[..8]) == crc && generation != 0)
            .then_some(generation),
    )
}

impl<F: NorFlash> Storage for FlashLog<F> {
    type Error = FlashLogError<F::Error>;

    fn append(&mut self, record: &[u8]) -> Result<(), F> {
        if self.failed {
            return Err(FlashLogError::Failed);
        }
        encode_frame(record, &mut self.pending)?;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), F> {
        if self.failed {
            return Err(FlashLogError::Failed);
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.end + Self::unit_len(self.pending.len()) > self.half {
            self.pending.clear();
            return Err(FlashLogError::NoSpace {
                capacity: self.half,
            });
        }
        if self.must_move {
            self.move_to_other_half()?;
        }
        let mut frames = core::mem::take(&mut self.pending);
        let written = self.write_unit(self.active, self.end, &mut frames);
        frames.clear();
        self.pending = frames;
        self.end = written?;
        Ok(())
    }

    fn replay(&mut self, visit: &mut dyn FnMut(&[u8])) -> Result<ReplayReport, F> {
        let mut at = Self::HEADER_LEN as u32;
        let mut records = 0;
        self.discarded = None;
        let end = loop {
            let frames = match self.read_unit(at)? {
                Ok(frames) => frames,
                Err(end) => break end,
            };
            let decoded = decode_frames(&frames);
            if decoded.end != FrameEnd::Clean {
                // A unit's CRC held but its frames do not: damage, not a cut.
                let offset = at as usize - Self::HEADER_LEN;
                break Some(FrameEnd::Torn { offset });
            }
            for record in decoded.records {
                visit(record);
                records += 1;
            }
            at += Self::unit_len(frames.len());
        };
        self.end = at;
        self.failed = false;
        self.pending.clear();
        if end.is_some() || !self.erased_from(at)? {
            self.must_move = true;
            let end = end.unwrap_or(FrameEnd::Torn {
                offset: at as usize - Self::HEADER_LEN,
            });
            self.discarded = Some(Discarded {
                end,
                bytes: u64::from(self.half - at),
            });
        }
        Ok(ReplayReport {
            records,
            discarded: self.discarded,
        })
    }

    fn rewrite(&mut self, records: &mut dyn Iterator<Item = &[u8]>) -> Result<(), F> {
        if self.failed {
            return Err(FlashLogError::Failed);
        }
        let other = 1 - self.active;
        self.erase_half(other)?;
        let mut at = Self::HEADER_LEN as u32;
        let mut unit = Vec::with_capacity(REWRITE_UNIT);
        let mut records = records.peekable();
        while let Some(record) = records.next() {
            encode_frame(record, &mut unit)?;
            if unit.len() >= REWRITE_UNIT || records.peek().is_none() {
                if at + Self::unit_len(unit.len()) > self.half {
                    // The old log stays; the other half is merely erased.
                    return Err(FlashLogError::NoSpace {
                        capacity: self.half,
                    });
                }
                at = self.write_unit(other, at, &mut unit)?;
                unit.clear();
            }
        }
        self.switch_to(other)?;
        self.end = at;
        self.pending.clear();
        self.stats.compactions += 1;
        Ok(())
    }

    fn is_no_space(&self, error: &Self::Error) -> bool {
        matches!(error, FlashLogError::NoSpace { .. })
    }

    /// The log fills more than half of its half: time to compact, while
    /// compaction is sure to find room (the device asks its machine for it).
    fn wants_compaction(&self) -> bool {
        self.used() > self.half / 2
    }

    fn reserve_in_use(&self) -> bool {
        self.end > self.half - self.reserve
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod update_tests;
