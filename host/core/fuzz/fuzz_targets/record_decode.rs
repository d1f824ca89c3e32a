//! Fuzzes the journal record decoder: a record that passed the CRC but is
//! still wrong (a bug, a downgrade) must be a typed error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_core::journal::record::Record;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = Record::decode(data) {
        assert_eq!(Record::decode(&record.encode()), Ok(record));
    }
});
