//! TODO (durability helper): Storage trait + CRC framing.

pub mod record;
