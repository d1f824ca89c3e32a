//! One small record kept durably on NOR flash and replaced atomically: the
//! device's update state (`relay_core::ota::state`), which must be either
//! the state before a step or the one after it, after a power cut at any
//! instant.
//!
//! Two erase sectors, A and B. Each holds at most one copy:
//!
//! ```text
//! copy = magic "RLYR" | generation: u32 | len: u32 | crc32 of the data | crc32 of these four | pad | data
//! ```
//!
//! A store erases the sector not holding the newest copy, writes the data,
//! then the header with the next generation (the commit point). Loading
//! takes the valid copy of the higher generation: a cut before the header
//! leaves the old copy the newest, after it the new one.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use embedded_storage::nor_flash::NorFlash;
use relay_core::journal::frame::checksum;

use crate::bundle::read;

const MAGIC: [u8; 4] = *b"RLYR";
const HEADER: usize = 20;

/// See the module doc. Like [`crate::bundle::BundleRegion`], it is given
/// the flash at each call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSlot {
    base: u32,
    sector: u32,
    /// The sector (0 or 1) holding the newest copy, and its generation.
    newest: Option<(u32, u32)>,
}

impl RecordSlot {
    /// The two sectors from `base`.
    pub fn open<F: NorFlash>(flash: &mut F, base: u32) -> Result<(Self, Option<Vec<u8>>), String> {
        let sector = F::ERASE_SIZE as u32;
        if !base.is_multiple_of(sector) {
            return Err("a record slot starts on an erase sector".into());
        }
        let mut slot = RecordSlot {
            base,
            sector,
            newest: None,
        };
        let mut best: Option<(u32, u32, Vec<u8>)> = None;
        for which in 0..2 {
            if let Some((generation, data)) = slot.copy(flash, which)? {
                if best.as_ref().is_none_or(|(_, g, _)| generation > *g) {
                    best = Some((which, generation, data));
                }
            }
        }
        Ok(match best {
            Some((which, generation, data)) => {
                slot.newest = Some((which, generation));
                (slot, Some(data))
            }
            None => (slot, None),
        })
    }

    /// The largest record a sector holds.
    pub fn capacity<F: NorFlash>(&self) -> usize {
        self.sector as usize - Self::header_len::<F>()
    }

    fn header_len<F: NorFlash>() -> usize {
        HEADER.div_ceil(F::WRITE_SIZE.max(F::READ_SIZE)) * F::WRITE_SIZE.max(F::READ_SIZE)
    }

    fn copy<F: NorFlash>(
        &self,
        flash: &mut F,
        which: u32,
    ) -> Result<Option<(u32, Vec<u8>)>, String> {
        let at = self.base + which * self.sector;
        let mut head = [0u8; HEADER];
        read(flash, at, &mut head)?;
        let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        if head[..4] != MAGIC || checksum(&head[..16]) != word(16) {
            return Ok(None);
        }
        let len = word(8) as usize;
        if len > self.capacity::<F>() {
            return Ok(None);
        }
        let mut data = vec![0u8; len];
        read(flash, at + Self::header_len::<F>() as u32, &mut data)?;
        Ok((checksum(&data) == word(12)).then_some((word(4), data)))
    }

    /// Replaces the record with `data`, durably (see the module doc).
    pub fn store<F: NorFlash>(&mut self, flash: &mut F, data: &[u8]) -> Result<(), String> {
        if data.len() > self.capacity::<F>() {
            return Err(alloc::format!(
                "a {}-byte record does not fit a {}-byte sector",
                data.len(),
                self.sector
            ));
        }
        let (which, generation) = match self.newest {
            Some((newest, generation)) => (1 - newest, generation.wrapping_add(1)),
            None => (0, 1),
        };
        let at = self.base + which * self.sector;
        let io = |e: F::Error| alloc::format!("flash: {e:?}");
        flash.erase(at, at + self.sector).map_err(io)?;
        let unit = F::WRITE_SIZE;
        let mut body = data.to_vec();
        body.resize(data.len().div_ceil(unit) * unit, 0xff);
        let head_len = Self::header_len::<F>();
        if !body.is_empty() {
            flash.write(at + head_len as u32, &body).map_err(io)?;
        }
        let mut head = vec![0xffu8; head_len];
        head[..4].copy_from_slice(&MAGIC);
        head[4..8].copy_from_slice(&generation.to_le_bytes());
        head[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes());
        head[12..16].copy_from_slice(&checksum(data).to_le_bytes());
        let crc = checksum(&head[..16]);
        head[16..20].copy_from_slice(&crc.to_le_bytes());
        flash.write(at, &head).map_err(io)?;
        self.newest = Some((which, generation));
        Ok(())
    }
}
