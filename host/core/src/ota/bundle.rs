//! The bundle: one file that carries a plugin module, its manifest and the
//! manifest's ed25519 signature.
//!
//! ```text
//! offset     size  field
//! 0          8     magic "RLYBNDL1" (the 1 is the layout's version)
//! 8          8     key id: the first 8 bytes of sha256(public key)
//! 16         4     manifest length M, big-endian, 1..=MAX_MANIFEST_BYTES
//! 20         M     manifest (msgpack, see `manifest`)
//! 20+M       64    ed25519 signature over SIGNING_CONTEXT || manifest
//! 84+M       N     the module (N = manifest.size, sha256 = manifest.sha256)
//! ```
//!
//! Why this shape: the header is fixed and tiny, so a device reads it and
//! the manifest before anything else and can refuse a bundle from an unknown
//! key, or with a bad signature, without touching the module; the module's
//! hash is in the signed manifest, so one signature covers every byte. The
//! key id rides outside the signature only to pick the key; the manifest
//! repeats it under the signature. The signing context keeps a bundle
//! signature from being valid for anything else signed with the same key.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use super::manifest::Manifest;
use super::Refusal;

pub const BUNDLE_MAGIC: &[u8; 8] = b"RLYBNDL1";
/// Magic, key id and manifest length.
pub const HEADER_LEN: usize = 20;
pub const SIGNATURE_LEN: usize = 64;
/// A manifest is a few hundred bytes; the bound keeps a hostile header from
/// making a device buffer much.
pub const MAX_MANIFEST_BYTES: usize = 16 * 1024;
/// Prefixed to the manifest before signing (domain separation).
pub const SIGNING_CONTEXT: &[u8] = b"relay-bundle-v1\0";

/// The first 8 bytes of sha256 of a public key.
pub type KeyId = [u8; 8];

/// The id of `key`.
pub fn key_id(key: &VerifyingKey) -> KeyId {
    let digest = Sha256::digest(key.as_bytes());
    let mut id = [0; 8];
    id.copy_from_slice(&digest[..8]);
    id
}

/// `id` in lower-case hex.
pub fn key_id_hex(id: &KeyId) -> String {
    hex(id)
}

/// Lower-case hex of `bytes` (key ids, hashes, transfer ids).
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The bytes of a hex string (either case), `None` if it is not hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// The message an ed25519 signature of a manifest covers.
pub fn signing_message(manifest: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNING_CONTEXT.len() + manifest.len());
    m.extend_from_slice(SIGNING_CONTEXT);
    m.extend_from_slice(manifest);
    m
}

/// Builds a signed bundle. `manifest.sha256`, `size` and `key_id` are set
/// here from `module` and `key`; the rest is the caller's (the CLI fills it
/// from the module's own `describe()`).
pub fn sign_bundle(mut manifest: Manifest, module: &[u8], key: &SigningKey) -> Vec<u8> {
    let id = key_id(&key.verifying_key());
    manifest.sha256 = Sha256::digest(module).into();
    manifest.size = module.len() as u64;
    manifest.key_id = hex(&id);
    let encoded = manifest.encode();
    let signature = key.sign(&signing_message(&encoded));
    let mut out = Vec::with_capacity(HEADER_LEN + encoded.len() + SIGNATURE_LEN + module.len());
    out.extend_from_slice(BUNDLE_MAGIC);
    out.extend_from_slice(&id);
    out.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    out.extend_from_slice(&encoded);
    out.extend_from_slice(&signature.to_bytes());
    out.extend_from_slice(module);
    out
}

/// The fixed header, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub key_id: KeyId,
    pub manifest_len: usize,
}

impl Header {
    /// Reads the first [`HEADER_LEN`] bytes of a bundle.
    pub fn parse(bytes: &[u8]) -> Result<Header, Refusal> {
        if bytes.starts_with(b"\0asm") {
            return Err(Refusal::Unsigned);
        }
        if bytes.len() < HEADER_LEN {
            return Err(Refusal::Truncated {
                expected: HEADER_LEN as u64,
                got: bytes.len() as u64,
            });
        }
        if &bytes[..8] != BUNDLE_MAGIC {
            return Err(Refusal::Malformed("not a Relay bundle (bad magic)".into()));
        }
        let mut key_id = [0; 8];
        key_id.copy_from_slice(&bytes[8..16]);
        let manifest_len =
            u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]) as usize;
        if manifest_len == 0 || manifest_len > MAX_MANIFEST_BYTES {
            return Err(Refusal::Malformed(format!(
                "manifest length {manifest_len} is outside 1..={MAX_MANIFEST_BYTES}"
            )));
        }
        Ok(Header {
            key_id,
            manifest_len,
        })
    }

    /// Where the signature starts.
    pub fn signature_offset(&self) -> usize {
        HEADER_LEN + self.manifest_len
    }

    /// Where the module starts.
    pub fn module_offset(&self) -> usize {
        self.signature_offset() + SIGNATURE_LEN
    }
}
