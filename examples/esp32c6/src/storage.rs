//! The board's flash: the command journal ([`relay_flash::FlashLog`]) in the
//! data partition labelled `relay`, and plugin updates
//! ([`relay_embedded::updates`]) in the one labelled `relay_upd`, both over
//! one `esp-storage` handle shared between them. The partitions' bounds come
//! from the table the bootloader used (`partitions.csv`), so neither can
//! write over the application.

use esp_bootloader_esp_idf::partitions::{self, PARTITION_TABLE_MAX_LEN};
use esp_storage::{FlashStorage, FlashStorageError};
use relay_embedded::updates::Layout;
use relay_flash::shared::Shared;
use relay_flash::{FlashLog, FlashLogError};

/// Bytes kept free for the records that end commands (statuses) when the
/// journal is otherwise full: one sector.
const RESERVE: u32 = FlashStorage::SECTOR_SIZE;

/// Bundle regions of the update partition: the active version, the previous
/// one (rollback) and the transfer in progress.
const UPDATE_REGIONS: u32 = 3;

pub type Flash = Shared<FlashStorage<'static>>;
pub type Journal = FlashLog<Flash>;

/// Why the flash did not open.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("the partition table does not read: {0:?}")]
    Table(partitions::Error),
    #[error("no partition is labelled `relay` (flash with partitions.csv)")]
    NoPartition,
    /// The flash refused, or the partition's layout does not fit the log.
    #[error("the journal partition does not open: {0:?}")]
    Open(FlashLogError<FlashStorageError>),
}

/// Opens (and on first boot formats) the journal partition; with it, the
/// update partition's layout, if the table has one.
pub fn open(
    flash: esp_hal::peripherals::FLASH<'static>,
) -> Result<(Journal, Option<(Flash, Layout)>), StorageError> {
    let mut storage = FlashStorage::new(flash);
    let mut table = [0u8; PARTITION_TABLE_MAX_LEN];
    let (journal, updates) = {
        let parts = partitions::read_partition_table(&mut storage, &mut table)
            .map_err(StorageError::Table)?;
        let find = |label: &str| {
            parts
                .iter()
                .find(|p| p.label_as_str() == label)
                .map(|p| (p.offset(), p.len()))
        };
        (
            find("relay").ok_or(StorageError::NoPartition)?,
            find("relay_upd"),
        )
    };
    let flash = Shared::new(storage);
    let log =
        FlashLog::open(flash.clone(), journal.0, journal.1, RESERVE).map_err(StorageError::Open)?;
    let updates =
        updates.map(|(base, len)| (flash, Layout::fit::<Flash>(base, len, UPDATE_REGIONS)));
    Ok((log, updates))
}
