//! A NOR flash backed by a file on the host, through semihosting (QEMU's
//! `-semihosting-config enable=on`): the networked emulated device's
//! journal outlives the emulator, so killing QEMU is a power cut the
//! journal must survive, and starting it again is the reboot that replays
//! it. Writes keep NOR semantics (bits only go from 1 to 0; erasing sets a
//! 4 KiB sector to `0xff`), so the flash log sees what a chip would show it.

use alloc::ffi::CString;
use alloc::vec;

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};
use semihosting::fs::{File, OpenOptions};
use semihosting::io::{Read, Seek, SeekFrom, Write};

const SECTOR: usize = 4096;

/// The flash: an existing file of `len` bytes (a multiple of 4 KiB).
pub struct FileFlash {
    file: File,
    len: u32,
}

/// A failed host file operation, or an access outside the flash.
#[derive(Debug)]
pub enum FileFlashError {
    OutOfBounds,
    Host,
}

impl NorFlashError for FileFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            FileFlashError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            FileFlashError::Host => NorFlashErrorKind::Other,
        }
    }
}

impl FileFlash {
    /// Opens the host file at `path` for reading and writing.
    pub fn open(path: &str, len: u32) -> Result<FileFlash, FileFlashError> {
        let path = CString::new(path).map_err(|_| FileFlashError::Host)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path.as_c_str())
            .map_err(|_| FileFlashError::Host)?;
        Ok(FileFlash { file, len })
    }

    fn check(&self, offset: u32, len: usize) -> Result<(), FileFlashError> {
        let end = offset as usize + len;
        if end > self.len as usize {
            return Err(FileFlashError::OutOfBounds);
        }
        Ok(())
    }

    fn read_at(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FileFlashError> {
        self.file
            .seek(SeekFrom::Start(u64::from(offset)))
            .and_then(|_| self.file.read_exact(bytes))
            .map_err(|_| FileFlashError::Host)
    }

    fn write_at(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FileFlashError> {
        self.file
            .seek(SeekFrom::Start(u64::from(offset)))
            .and_then(|_| self.file.write_all(bytes))
            .map_err(|_| FileFlashError::Host)
    }
}

impl ErrorType for FileFlash {
    type Error = FileFlashError;
}

impl ReadNorFlash for FileFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FileFlashError> {
        self.check(offset, bytes.len())?;
        self.read_at(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.len as usize
    }
}

impl NorFlash for FileFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = SECTOR;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FileFlashError> {
        self.check(from, to.saturating_sub(from) as usize)?;
        let blank = vec![0xffu8; SECTOR];
        let mut at = from;
        while at < to {
            self.write_at(at, &blank)?;
            at += SECTOR as u32;
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FileFlashError> {
        self.check(offset, bytes.len())?;
        let mut cells = vec![0u8; bytes.len()];
        self.read_at(offset, &mut cells)?;
        for (cell, byte) in cells.iter_mut().zip(bytes) {
            *cell &= byte;
        }
        self.write_at(offset, &cells)
    }
}
