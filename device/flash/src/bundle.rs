//! Bundle regions on NOR flash: where an update's chunks are staged as they
//! arrive, and where a verified bundle then stays, as an installed version,
//! until the update state no longer names it. `relay_core::ota`'s
//! [`Staging`] and [`BundleRead`] over a [`NorFlash`] region.
//!
//! # Layout
//!
//! ```text
//! region = header | unit | unit | ... | erased (0xff)
//! header = magic "RLYB" | transfer id (32) | crc32 of both | pad   (written at `start`, after the erase)
//! unit   = offset: u32 | len: u32 | crc32 of the data | crc32 of these three | pad | data | pad
//! ```
//!
//! Why a log of chunks rather than the bundle's bytes in place: NOR flash
//! takes one write per write unit between erases, and chunks come at any
//! length, so a chunk ending inside a unit could not be followed by the
//! next one without writing that unit twice; and each chunk must be durable
//! when its `_install` command finishes. The bundle is the units' data in
//! order, found through an index kept in RAM (12 bytes per chunk).
//!
//! A unit's header is written before its data. A power cut during the data
//! leaves a header whose data CRC fails: the unit is skipped and the chunk,
//! which never finished, runs again into the next unit. A cut during the
//! header leaves a header whose own CRC fails: the next unit goes right
//! after it. A cut during `start` leaves no valid region header, so the
//! region reads as empty and the next transfer erases it again.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use embedded_storage::nor_flash::NorFlash;
use relay_core::journal::frame::checksum;
use relay_core::ota::chunk::Staging;
use relay_core::ota::verify::BundleRead;

const MAGIC: [u8; 4] = *b"RLYB";
/// Magic, transfer id, crc.
const HEADER: usize = 4 + 32 + 4;
/// Offset, length, data crc, header crc.
const UNIT_HEADER: usize = 16;

/// One chunk's data: where it sits in the bundle and on flash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Piece {
    at: u32,
    flash: u32,
    len: u32,
}

/// A region of whole erase sectors holding at most one bundle, staged or
/// complete. It keeps no flash handle: every call is given the flash, so
/// several regions and the update state share one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleRegion {
    base: u32,
    len: u32,
    transfer: Option<[u8; 32]>,
    pieces: Vec<Piece>,
    /// Bytes of the bundle stored (the pieces are contiguous from 0).
    have: u64,
    /// Where the next unit goes, relative to `base`.
    write_at: u32,
}

const fn align(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

fn io<E: core::fmt::Debug>(e: E) -> String {
    format!("flash: {e:?}")
}

impl BundleRegion {
    /// The region at `base`, `len` bytes (both whole erase sectors), as the
    /// flash holds it: its transfer and every intact chunk.
    pub fn open<F: NorFlash>(flash: &mut F, base: u32, len: u32) -> Result<Self, String> {
        if !(base as usize).is_multiple_of(F::ERASE_SIZE)
            || !(len as usize).is_multiple_of(F::ERASE_SIZE)
            || len == 0
        {
            return Err("a bundle region must be whole erase sectors".into());
        }
        let mut region = BundleRegion {
            base,
            len,
            transfer: None,
            pieces: Vec::new(),
            have: 0,
            write_at: 0,
        };
        let mut header = [0u8; HEADER];
        read(flash, base, &mut header)?;
        let crc = u32::from_le_bytes([header[36], header[37], header[38], header[39]]);
        if header[..4] != MAGIC || checksum(&header[..36]) != crc {
            return Ok(region);
        }
        let mut transfer = [0u8; 32];
        transfer.copy_from_slice(&header[4..36]);
        region.transfer = Some(transfer);
        region.write_at = Self::align::<F>(HEADER) as u32;
        region.scan(flash)?;
        Ok(region)
    }

    fn align<F: NorFlash>(n: usize) -> usize {
        align(n, F::WRITE_SIZE.max(F::READ_SIZE))
    }

    /// Walks the units after the header (see the module doc).
    fn scan<F: NorFlash>(&mut self, flash: &mut F) -> Result<(), String> {
        let head_len = Self::align::<F>(UNIT_HEADER) as u32;
        while self.write_at + head_len <= self.len {
            let mut head = [0u8; UNIT_HEADER];
            read(flash, self.base + self.write_at, &mut head)?;
            if head.iter().all(|&b| b == 0xff) {
                return Ok(());
            }
            let word =
                |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
            if checksum(&head[..12]) != word(12) {
                // A header cut short: the next unit was written after it.
                self.write_at += head_len;
                continue;
            }
            let (at, len, data_crc) = (word(0), word(4), word(8));
            let data_at = self.write_at + head_len;
            let size = head_len as usize + Self::align::<F>(len as usize);
            if self.write_at as usize + size > self.len as usize {
                return Ok(());
            }
            self.write_at += size as u32;
            let mut data = vec![0u8; len as usize];
            read(flash, self.base + data_at, &mut data)?;
            if checksum(&data) == data_crc && u64::from(at) == self.have {
                self.pieces.push(Piece {
                    at,
                    flash: data_at,
                    len,
                });
                self.have += u64::from(len);
            }
        }
        Ok(())
    }

    /// The transfer this region holds, if any.
    pub fn transfer(&self) -> Option<&[u8; 32]> {
        self.transfer.as_ref()
    }

    /// Bytes of the bundle stored.
    pub fn stored(&self) -> u64 {
        self.have
    }

    /// Erases the region (nothing is staged in it afterwards).
    pub fn clear<F: NorFlash>(&mut self, flash: &mut F) -> Result<(), String> {
        self.transfer = None;
        self.pieces.clear();
        self.have = 0;
        self.write_at = 0;
        flash.erase(self.base, self.base + self.len).map_err(io)
    }

    /// This region with `flash`, as the core's staging and bundle reader.
    pub fn with<'a, F: NorFlash>(&'a mut self, flash: &'a mut F) -> OnFlash<'a, F> {
        OnFlash {
            region: self,
            flash,
        }
    }
}

/// A [`BundleRegion`] and the flash it lives on.
pub struct OnFlash<'a, F: NorFlash> {
    region: &'a mut BundleRegion,
    flash: &'a mut F,
}

impl<F: NorFlash> Staging for OnFlash<'_, F> {
    fn current(&mut self) -> Result<Option<([u8; 32], u64)>, String> {
        Ok(self.region.transfer.map(|t| (t, self.region.have)))
    }

    fn start(&mut self, transfer: &[u8; 32]) -> Result<(), String> {
        let r = &mut *self.region;
        r.clear(self.flash)?;
        let mut header = vec![0xffu8; BundleRegion::align::<F>(HEADER)];
        header[..4].copy_from_slice(&MAGIC);
        header[4..36].copy_from_slice(transfer);
        let crc = checksum(&header[..36]);
        header[36..40].copy_from_slice(&crc.to_le_bytes());
        self.flash.write(r.base, &header).map_err(io)?;
        r.transfer = Some(*transfer);
        r.write_at = header.len() as u32;
        Ok(())
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), String> {
        let r = &mut *self.region;
        if r.transfer.is_none() {
            return Err("no transfer staged".into());
        }
        let end = offset + data.len() as u64;
        if end <= r.have {
            // Already durable (a redelivered or re-run chunk).
            return Ok(());
        }
        if offset > r.have {
            return Err(format!("chunk at {offset} leaves a gap after {}", r.have));
        }
        let data = &data[(r.have - offset) as usize..];
        let head_len = BundleRegion::align::<F>(UNIT_HEADER);
        let size = head_len + BundleRegion::align::<F>(data.len());
        if r.write_at as usize + size > r.len as usize {
            return Err(format!("the {}-byte bundle region is full", r.len));
        }
        let at = u32::try_from(r.have).map_err(|_| String::from("bundle too large"))?;
        let len = data.len() as u32;
        let mut head = vec![0xffu8; head_len];
        head[0..4].copy_from_slice(&at.to_le_bytes());
        head[4..8].copy_from_slice(&len.to_le_bytes());
        head[8..12].copy_from_slice(&checksum(data).to_le_bytes());
        let crc = checksum(&head[..12]);
        head[12..16].copy_from_slice(&crc.to_le_bytes());
        let unit = r.base + r.write_at;
        self.flash.write(unit, &head).map_err(io)?;
        let whole = data.len() / F::WRITE_SIZE * F::WRITE_SIZE;
        let data_at = unit + head_len as u32;
        if whole > 0 {
            self.flash.write(data_at, &data[..whole]).map_err(io)?;
        }
        if whole < data.len() {
            let mut tail = vec![0xffu8; F::WRITE_SIZE];
            tail[..data.len() - whole].copy_from_slice(&data[whole..]);
            self.flash
                .write(data_at + whole as u32, &tail)
                .map_err(io)?;
        }
        r.write_at += size as u32;
        r.pieces.push(Piece {
            at,
            flash: data_at - r.base,
            len,
        });
        r.have += u64::from(len);
        Ok(())
    }
}

impl<F: NorFlash> BundleRead for OnFlash<'_, F> {
    fn len(&self) -> u64 {
        self.region.have
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        let end = offset + buf.len() as u64;
        if end > self.region.have {
            return Err("read past the end of the staged bundle".into());
        }
        let mut done = 0usize;
        for piece in &self.region.pieces {
            let (start, stop) = (
                u64::from(piece.at),
                u64::from(piece.at) + u64::from(piece.len),
            );
            let from = (offset + done as u64).max(start);
            if done == buf.len() || from >= stop {
                continue;
            }
            let n = (stop.min(end) - from) as usize;
            let at = self.region.base + piece.flash + (from - start) as u32;
            read(self.flash, at, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }
}

/// Reads `buf` at `at`, whatever their alignment (the flash reads aligned
/// blocks; this copies out of them).
pub(crate) fn read<F: NorFlash>(flash: &mut F, at: u32, buf: &mut [u8]) -> Result<(), String> {
    const BLOCK: usize = 256;
    let unit = F::READ_SIZE;
    let mut block = [0u8; BLOCK];
    let mut done = 0usize;
    while done < buf.len() {
        let want = at as usize + done;
        let start = want / unit * unit;
        let skip = want - start;
        let n = (BLOCK - skip).min(buf.len() - done);
        let span = align(skip + n, unit);
        flash.read(start as u32, &mut block[..span]).map_err(io)?;
        buf[done..done + n].copy_from_slice(&block[skip..skip + n]);
        done += n;
    }
    Ok(())
}
