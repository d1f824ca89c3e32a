//! [`StoreError`]: why a journal file operation failed, with the path and
//! the operation in every message (an operator reads them in a log), and
//! the one distinction the runtime acts on: out of space (wait and retry)
//! against everything else (fail-stop).

use std::io;
use std::path::{Path, PathBuf};

use relay_core::journal::FrameError;

use crate::space::no_space;

/// Format version of the journal file this build reads and writes.
pub(crate) const VERSION: u32 = 1;

/// Why a journal file operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a relay journal (bad or short header)", path.display())]
    BadHeader { path: PathBuf },
    #[error("{}: journal format version {found} is not supported (this build reads {VERSION})", path.display())]
    UnsupportedVersion { path: PathBuf, found: u32 },
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("the journal failed earlier ({0}) and refuses further use; reopen it to recover")]
    Poisoned(String),
    /// The filesystem is full (`ENOSPC`, `EDQUOT`): nothing since the last
    /// sync reached the log, and the storage stays usable.
    #[error("{op} {}: no space left for the journal ({source})", path.display())]
    NoSpace {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `fsync` failed: what was written since the last successful one may
    /// be lost, and the storage refuses every later call (fail-stop).
    #[error("fsync of {} failed ({source}): records written since the last successful fsync may be lost", path.display())]
    SyncFailed {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl StoreError {
    /// The filesystem is full: retry once space returns (see the module doc).
    pub fn is_no_space(&self) -> bool {
        matches!(self, StoreError::NoSpace { .. })
    }
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| {
        let path = path.to_path_buf();
        if no_space(&source) {
            StoreError::NoSpace { op, path, source }
        } else {
            StoreError::Io { op, path, source }
        }
    }
}
