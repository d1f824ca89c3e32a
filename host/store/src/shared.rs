//! [`SharedStorage`]: a [`Storage`] the journal thread writes through while a
//! test keeps a handle on it, to simulate a crash (`MemStorage::crash`),
//! count fsyncs or inspect the log while the runtime runs. Production code
//! hands the [`crate::Journal`] a plain [`crate::FileStorage`] instead.

use std::sync::{Arc, Mutex, MutexGuard};

use relay_core::journal::{ReplayReport, Storage};

/// A storage behind `Arc<Mutex<_>>`; clones share it.
#[derive(Debug, Default)]
pub struct SharedStorage<S>(Arc<Mutex<S>>);

impl<S> SharedStorage<S> {
    pub fn new(storage: S) -> Self {
        SharedStorage(Arc::new(Mutex::new(storage)))
    }

    /// Locks the storage (a panic of another holder does not matter here:
    /// the storage's own state is what a test wants to look at).
    pub fn lock(&self) -> MutexGuard<'_, S> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<S> Clone for SharedStorage<S> {
    fn clone(&self) -> Self {
        SharedStorage(self.0.clone())
    }
}

impl<S: Storage> Storage for SharedStorage<S> {
    type Error = S::Error;

    fn append(&mut self, record: &[u8]) -> Result<(), S::Error> {
        self.lock().append(record)
    }

    fn sync(&mut self) -> Result<(), S::Error> {
        self.lock().sync()
    }

    fn replay(&mut self, visit: &mut dyn FnMut(&[u8])) -> Result<ReplayReport, S::Error> {
        self.lock().replay(visit)
    }

    fn rewrite(&mut self, records: &mut dyn Iterator<Item = &[u8]>) -> Result<(), S::Error> {
        self.lock().rewrite(records)
    }

    fn is_no_space(&self, error: &S::Error) -> bool {
        self.lock().is_no_space(error)
    }

    fn reserve_in_use(&self) -> bool {
        self.lock().reserve_in_use()
    }

    fn restore_reserve(&mut self) -> Result<(), S::Error> {
        self.lock().restore_reserve()
    }
}
