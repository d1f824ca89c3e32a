//! One flash chip shared by the journal and the update partition: each
//! owns a [`Shared`] handle to it and keeps to its own range. A device loop
//! runs on one thread and does one flash operation at a time, so a
//! `RefCell` is all the sharing needs (a second borrow would be a bug, and
//! panics).

use alloc::rc::Rc;
use core::cell::RefCell;

use embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash};

/// A handle to a flash other handles share (clones share it).
#[derive(Debug)]
pub struct Shared<F>(Rc<RefCell<F>>);

impl<F> Clone for Shared<F> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<F> Shared<F> {
    pub fn new(flash: F) -> Self {
        Shared(Rc::new(RefCell::new(flash)))
    }

    /// Runs `f` on the flash itself (tests: power cuts, counters).
    pub fn with<R>(&self, f: impl FnOnce(&mut F) -> R) -> R {
        f(&mut self.0.borrow_mut())
    }
}

impl<F: ErrorType> ErrorType for Shared<F> {
    type Error = F::Error;
}

impl<F: ReadNorFlash> ReadNorFlash for Shared<F> {
    const READ_SIZE: usize = F::READ_SIZE;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.0.borrow_mut().read(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.0.borrow().capacity()
    }
}

impl<F: NorFlash> NorFlash for Shared<F> {
    const WRITE_SIZE: usize = F::WRITE_SIZE;
    const ERASE_SIZE: usize = F::ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.0.borrow_mut().erase(from, to)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.0.borrow_mut().write(offset, bytes)
    }
}
