//! The command journal on the board's flash: [`relay_flash::FlashLog`] over
//! `esp-storage`, in the data partition labelled `relay` of the partition
//! table (`partitions.csv`). The partition's bounds come from the table the
//! bootloader used, so the journal can never write over the application.

use esp_bootloader_esp_idf::partitions::{self, PARTITION_TABLE_MAX_LEN};
use esp_storage::{FlashStorage, FlashStorageError};
use relay_flash::{FlashLog, FlashLogError};

/// Bytes kept free for the records that end commands (statuses) when the
/// journal is otherwise full: one sector.
const RESERVE: u32 = FlashStorage::SECTOR_SIZE;

pub type Journal = FlashLog<FlashStorage<'static>>;

/// Why the journal did not open.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("the partition table does not read: {0:?}")]
    Table(partitions::Error),
    #[error("no partition is labelled `relay` (flash with partitions.csv)")]
    NoPartition,
    /// The flash refused, or the partition's layout does not fit the log.
    #[error("the journal partition does not open: {0:?}")]
    Open(FlashLogError<FlashStorageError>),
}

/// Opens (and on first boot formats) the journal partition.
pub fn open(flash: esp_hal::peripherals::FLASH<'static>) -> Result<Journal, JournalError> {
    let mut storage = FlashStorage::new(flash);
    let mut table = [0u8; PARTITION_TABLE_MAX_LEN];
    let (base, len) = {
        let parts = partitions::read_partition_table(&mut storage, &mut table)
            .map_err(JournalError::Table)?;
        let entry = parts
            .iter()
            .find(|p| p.label_as_str() == "relay")
            .ok_or(JournalError::NoPartition)?;
        (entry.offset(), entry.len())
    };
    FlashLog::open(storage, base, len, RESERVE).map_err(JournalError::Open)
}
