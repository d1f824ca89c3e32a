//! Why an update was refused, with the status code each reason carries.
//! The codes are part of the protocol (`docs/ota.md`): a fleet tool tells a
//! tampered bundle from a downgrade by the code, not by the message.

use alloc::string::String;

use crate::status::Code;

/// One reason to refuse a bundle or an update command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not a signed bundle: a bare wasm module (sign it with `relay plugin sign`)")]
    Unsigned,
    #[error("malformed bundle: {0}")]
    Malformed(String),
    #[error("truncated bundle: {got} bytes, the header announces {expected}")]
    Truncated { expected: u64, got: u64 },
    #[error("bundle of {size} bytes exceeds the limit of {max}")]
    TooLarge { size: u64, max: u64 },
    #[error("signed with key {0}, which this device does not trust")]
    UnknownKey(String),
    #[error("signed with key {0}, which is revoked")]
    RevokedKey(String),
    #[error("the manifest's signature does not verify")]
    BadSignature,
    #[error("the module's sha256 does not match the signed manifest")]
    HashMismatch,
    #[error("built for WIT world {0:?}, which this host does not run")]
    UnsupportedWorld(String),
    #[error("needs host version {needs} or newer (this host is {host})")]
    HostTooOld { needs: String, host: String },
    #[error("version {version} of {name:?} is not newer than {highest}, the highest installed (sign with --allow-downgrade to allow it)")]
    Downgrade {
        name: String,
        version: String,
        highest: String,
    },
    #[error("the module does not match its manifest: {0}")]
    ManifestMismatch(String),
    #[error("command {command:?} is already handled by {owner}")]
    Conflict { command: String, owner: String },
    #[error("the module does not load: {0}")]
    InvalidModule(String),
    #[error("the self-test failed: {0}")]
    SelfTestFailed(String),
    #[error("chunk at offset {got} does not follow the {have} bytes received")]
    ChunkGap { have: u64, got: u64 },
    #[error("invalid update command: {0}")]
    BadRequest(String),
    #[error("no plugin {0:?} to act on")]
    NoSuchPlugin(String),
    #[error("plugin {0:?} has no previous version to roll back to")]
    NoPrevious(String),
    #[error("update storage failed: {0}")]
    Storage(String),
}

impl Refusal {
    /// The status code (`docs/ota.md`).
    pub fn code_str(&self) -> &'static str {
        match self {
            Refusal::Unsigned => "bundle_unsigned",
            Refusal::Malformed(_) => "bundle_malformed",
            Refusal::Truncated { .. } => "bundle_truncated",
            Refusal::TooLarge { .. } => "bundle_too_large",
            Refusal::UnknownKey(_) => "bundle_unknown_key",
            Refusal::RevokedKey(_) => "bundle_revoked_key",
            Refusal::BadSignature => "bundle_bad_signature",
            Refusal::HashMismatch => "bundle_hash_mismatch",
            Refusal::UnsupportedWorld(_) => "bundle_unsupported_world",
            Refusal::HostTooOld { .. } => "bundle_host_too_old",
            Refusal::Downgrade { .. } => "bundle_downgrade",
            Refusal::ManifestMismatch(_) => "bundle_manifest_mismatch",
            Refusal::Conflict { .. } => "bundle_conflict",
            Refusal::InvalidModule(_) => "bundle_invalid_module",
            Refusal::SelfTestFailed(_) => "self_test_failed",
            Refusal::ChunkGap { .. } => "bundle_chunk_gap",
            Refusal::BadRequest(_) => "invalid_argument",
            Refusal::NoSuchPlugin(_) => "unknown_plugin",
            Refusal::NoPrevious(_) => "no_previous_version",
            Refusal::Storage(_) => "storage_error",
        }
    }

    pub fn code(&self) -> Code {
        Code::parse(self.code_str())
    }

    /// Only a storage failure is worth another attempt: every other reason
    /// is a property of the bundle or of the device's state.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Refusal::Storage(_))
    }

    /// Every code, for the docs test.
    pub const CODES: [&'static str; 20] = [
        "bundle_unsigned",
        "bundle_malformed",
        "bundle_truncated",
        "bundle_too_large",
        "bundle_unknown_key",
        "bundle_revoked_key",
        "bundle_bad_signature",
        "bundle_hash_mismatch",
        "bundle_unsupported_world",
        "bundle_host_too_old",
        "bundle_downgrade",
        "bundle_manifest_mismatch",
        "bundle_conflict",
        "bundle_invalid_module",
        "self_test_failed",
        "bundle_chunk_gap",
        "invalid_argument",
        "unknown_plugin",
        "no_previous_version",
        "storage_error",
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every refusal code is in the table of `docs/ota.md`, and every
    /// variant's code is in [`Refusal::CODES`].
    #[test]
    fn every_code_is_listed_and_documented() {
        let doc = include_str!("../../../../docs/ota.md");
        for code in Refusal::CODES {
            assert!(
                doc.contains(&alloc::format!("| `{code}` |")),
                "docs/ota.md lacks {code}"
            );
        }
        let s = String::new;
        let all = [
            Refusal::Unsigned,
            Refusal::Malformed(s()),
            Refusal::Truncated {
                expected: 0,
                got: 0,
            },
            Refusal::TooLarge { size: 0, max: 0 },
            Refusal::UnknownKey(s()),
            Refusal::RevokedKey(s()),
            Refusal::BadSignature,
            Refusal::HashMismatch,
            Refusal::UnsupportedWorld(s()),
            Refusal::HostTooOld {
                needs: s(),
                host: s(),
            },
            Refusal::Downgrade {
                name: s(),
                version: s(),
                highest: s(),
            },
            Refusal::ManifestMismatch(s()),
            Refusal::Conflict {
                command: s(),
                owner: s(),
            },
            Refusal::InvalidModule(s()),
            Refusal::SelfTestFailed(s()),
            Refusal::ChunkGap { have: 0, got: 0 },
            Refusal::BadRequest(s()),
            Refusal::NoSuchPlugin(s()),
            Refusal::NoPrevious(s()),
            Refusal::Storage(s()),
        ];
        let codes: alloc::vec::Vec<&str> = all.iter().map(Refusal::code_str).collect();
        assert_eq!(codes, Refusal::CODES);
        assert!(all.iter().filter(|r| r.is_retryable()).count() == 1);
    }
}
