//! A NOR flash in RAM with the medium's rules enforced, and power cuts on
//! demand: the flash the QEMU device and the power-loss tests run on.
//!
//! Rules (those of real NOR parts, stricter where parts differ): erased
//! bytes read `0xff`; reads, writes and erases must be aligned to their
//! sizes; a write unit holding data may be written once between two erases
//! (several parts forbid rewriting a word, and the log never needs to;
//! writing `0xff`, which changes nothing on NOR, does not count). A power cut
//! ([`RamFlash::cut_after`]) stops the medium in the middle of an
//! operation, as a real one stops: a write leaves its first units written
//! and the next one half written, an erase leaves its sector half erased;
//! every later operation fails until [`RamFlash::power_on`].

use alloc::vec;
use alloc::vec::Vec;

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// See the module doc. `W`: the write unit, `E`: the erase sector (bytes).
#[derive(Debug, Clone)]
pub struct RamFlash<const W: usize, const E: usize> {
    bytes: Vec<u8>,
    /// Write units written since their last erase.
    written: Vec<bool>,
    /// Writes and erases left before the power cut (`None`: no cut).
    cut_in: Option<u64>,
    off: bool,
    /// Writes and erases carried out (whole or cut).
    ops: u64,
}

/// Why a [`RamFlash`] operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RamFlashError {
    NotAligned,
    OutOfBounds,
    /// A write unit written twice without an erase.
    Rewritten,
    /// The power is off (cut during this operation or before).
    PowerCut,
}

impl NorFlashError for RamFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            RamFlashError::NotAligned => NorFlashErrorKind::NotAligned,
            RamFlashError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            RamFlashError::Rewritten | RamFlashError::PowerCut => NorFlashErrorKind::Other,
        }
    }
}

impl<const W: usize, const E: usize> RamFlash<W, E> {
    /// An erased flash of `len` bytes (a multiple of `E`).
    pub fn new(len: usize) -> Self {
        assert!(
            len.is_multiple_of(E) && E.is_multiple_of(W),
            "bad flash geometry"
        );
        RamFlash {
            bytes: vec![0xff; len],
            written: vec![false; len / W],
            cut_in: None,
            off: false,
            ops: 0,
        }
    }

    /// A flash holding `bytes` (a hand-made or damaged image).
    pub fn from_image(bytes: Vec<u8>) -> Self {
        let mut flash = Self::new(bytes.len());
        for (unit, data) in bytes.chunks(W).enumerate() {
            flash.written[unit] = data.iter().any(|b| *b != 0xff);
        }
        flash.bytes = bytes;
        flash
    }

    /// Cuts the power during the `n`-th write or erase from now (1: the
    /// next one).
    pub fn cut_after(&mut self, n: u64) {
        self.cut_in = Some(n);
    }

    /// Restores power (after a cut), as at the next boot.
    pub fn power_on(&mut self) {
        self.off = false;
        self.cut_in = None;
    }

    /// Writes and erases carried out so far.
    pub fn ops(&self) -> u64 {
        self.ops
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether this operation is the one the power is cut in.
    fn cut_now(&mut self) -> Result<bool, RamFlashError> {
        if self.off {
            return Err(RamFlashError::PowerCut);
        }
        self.ops += 1;
        Ok(match &mut self.cut_in {
            Some(1) => {
                self.off = true;
                true
            }
            Some(n) => {
                *n -= 1;
                false
            }
            None => false,
        })
    }

    fn check(&self, offset: u32, len: usize, align: usize) -> Result<usize, RamFlashError> {
        let start = offset as usize;
        if !start.is_multiple_of(align) || !len.is_multiple_of(align) {
            return Err(RamFlashError::NotAligned);
        }
        if start + len > self.bytes.len() {
            return Err(RamFlashError::OutOfBounds);
        }
        Ok(start)
    }
}

impl<const W: usize, const E: usize> ErrorType for RamFlash<W, E> {
    type Error = RamFlashError;
}

impl<const W: usize, const E: usize> ReadNorFlash for RamFlash<W, E> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        if self.off {
            return Err(RamFlashError::PowerCut);
        }
        let start = self.check(offset, bytes.len(), 1)?;
        bytes.copy_from_slice(&self.bytes[start..start + bytes.len()]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.bytes.len()
    }
}

impl<const W: usize, const E: usize> NorFlash for RamFlash<W, E> {
    const WRITE_SIZE: usize = W;
    const ERASE_SIZE: usize = E;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        let len = to.checked_sub(from).ok_or(RamFlashError::OutOfBounds)? as usize;
        let start = self.check(from, len, E)?;
        let cut = self.cut_now()?;
        // A cut leaves the first half of the range erased, the rest as it was.
        let end = if cut { start + len / 2 } else { start + len };
        self.bytes[start..end].fill(0xff);
        self.written[start / W..end / W].fill(false);
        if cut {
            return Err(RamFlashError::PowerCut);
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        let start = self.check(offset, bytes.len(), W)?;
        let rewrites = bytes
            .chunks(W)
            .zip(&self.written[start / W..])
            .any(|(data, written)| *written && data.iter().any(|b| *b != 0xff));
        if rewrites {
            return Err(RamFlashError::Rewritten);
        }
        let cut = self.cut_now()?;
        let units = bytes.len() / W;
        // A cut leaves the first half of the units written, and the one
        // after them half written (its first bytes).
        let whole = if cut { units / 2 } else { units };
        for i in 0..whole {
            let at = start + i * W;
            let data = &bytes[i * W..(i + 1) * W];
            for (b, new) in self.bytes[at..at + W].iter_mut().zip(data) {
                *b &= *new;
            }
            self.written[at / W] |= data.iter().any(|b| *b != 0xff);
        }
        if cut {
            if whole < units {
                let at = start + whole * W;
                let half = W.div_ceil(2);
                for (b, new) in self.bytes[at..at + half]
                    .iter_mut()
                    .zip(&bytes[whole * W..])
                {
                    *b &= *new;
                }
                self.written[at / W] = true;
            }
            return Err(RamFlashError::PowerCut);
        }
        Ok(())
    }
}
