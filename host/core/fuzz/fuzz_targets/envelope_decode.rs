//! Fuzzes step 1 of the data path, the envelope decoder: arbitrary bytes
//! from the network must never panic, hang, overflow the stack or allocate
//! by a declared length, and every answer must be self-consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_core::envelope::{decode, validate_id, EnvelopeLimits};
use relay_core::status::{State, Status};

fuzz_target!(|data: &[u8]| {
    // Default limits, and tight ones so the size and depth paths are hit too.
    for limits in [EnvelopeLimits::default(), EnvelopeLimits { max_bytes: 64, max_depth: 3 }] {
        match decode(data, &limits) {
            Ok(envelope) => {
                // Whatever is accepted re-encodes to the same envelope.
                let again = decode(&envelope.to_msgpack(), &EnvelopeLimits::default());
                assert_eq!(again.as_ref(), Ok(&envelope));
            }
            Err(rejection) => {
                // A carried id is always a valid one; the status encodes and decodes.
                if let Some(id) = &rejection.id {
                    assert!(validate_id(id).is_ok());
                }
                let status = rejection.to_status(1);
                assert_eq!(status.status, State::Rejected);
                assert_eq!(Status::from_msgpack(&status.to_msgpack()), Ok(status));
            }
        }
    }
});
