//! Fuzzes the app side's status decoder (CLI `--wait`, `relay watch`):
//! arbitrary bytes never panic, and what decodes re-encodes losslessly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_core::status::Status;

fuzz_target!(|data: &[u8]| {
    if let Ok(status) = Status::from_msgpack(data) {
        assert_eq!(Status::from_msgpack(&status.to_msgpack()), Ok(status));
    }
});
