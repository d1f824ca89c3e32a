//! Whether a staged bundle may be trusted: key, signature, hash; in that
//! order, and before any module byte is parsed.
//!
//! The bundle is read through [`BundleRead`] (a file on Linux, a flash
//! partition on a microcontroller) in blocks of [`BLOCK`] bytes, so
//! verifying a 1 MiB bundle needs no more memory than a 100 KiB one: the
//! manifest (at most 16 KiB) and one block.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

use super::bundle::{hex, key_id, signing_message, Header, KeyId, HEADER_LEN, SIGNATURE_LEN};
use super::manifest::Manifest;
use super::Refusal;

/// Bytes read per step while hashing the module.
pub const BLOCK: usize = 4096;

/// Random access to a staged bundle.
pub trait BundleRead {
    /// Total length of the bundle.
    fn len(&self) -> u64;
    /// Fills `buf` from `offset`; a short bundle is an error.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), String>;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl BundleRead for &[u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), String> {
        let start = usize::try_from(offset).map_err(|_| String::from("offset out of range"))?;
        let end = start
            .checked_add(buf.len())
            .filter(|&e| e <= <[u8]>::len(self));
        let end = end.ok_or_else(|| String::from("read past the end of the bundle"))?;
        buf.copy_from_slice(&self[start..end]);
        Ok(())
    }
}

/// The keys a device accepts bundles from, and the ids it no longer does.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<(KeyId, VerifyingKey)>,
    revoked: Vec<KeyId>,
}

impl TrustedKeys {
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts `key` (32 bytes of an ed25519 public key).
    pub fn trust(&mut self, key: &[u8; 32]) -> Result<KeyId, String> {
        let key =
            VerifyingKey::from_bytes(key).map_err(|e| alloc::format!("invalid public key: {e}"))?;
        let id = key_id(&key);
        self.keys.push((id, key));
        Ok(id)
    }

    /// Refuses bundles signed by key `id` from now on, even if trusted.
    pub fn revoke(&mut self, id: KeyId) {
        self.revoked.push(id);
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn find(&self, id: &KeyId) -> Result<&VerifyingKey, Refusal> {
        if self.revoked.contains(id) {
            return Err(Refusal::RevokedKey(hex(id)));
        }
        self.keys
            .iter()
            .find(|(k, _)| k == id)
            .map(|(_, key)| key)
            .ok_or_else(|| Refusal::UnknownKey(hex(id)))
    }
}

/// A bundle whose signature and hash checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub manifest: Manifest,
    /// Where the module starts in the bundle, and its length.
    pub module_offset: u64,
    pub module_len: u64,
}

/// Checks a complete bundle: header, size limit, key, signature, length,
/// then the module's sha256.
pub fn verify(
    bundle: &mut impl BundleRead,
    trust: &TrustedKeys,
    max_bytes: u64,
) -> Result<Verified, Refusal> {
    let total = bundle.len();
    if total > max_bytes {
        return Err(Refusal::TooLarge {
            size: total,
            max: max_bytes,
        });
    }
    let mut head = [0u8; HEADER_LEN];
    let readable = (total as usize).min(HEADER_LEN);
    bundle
        .read_at(0, &mut head[..readable])
        .map_err(Refusal::Storage)?;
    let header = Header::parse(&head[..readable])?;
    let key = trust.find(&header.key_id)?;
    let signed_end = header.module_offset() as u64;
    if total < signed_end {
        return Err(Refusal::Truncated {
            expected: signed_end,
            got: total,
        });
    }
    let mut manifest = vec![0u8; header.manifest_len];
    bundle
        .read_at(HEADER_LEN as u64, &mut manifest)
        .map_err(Refusal::Storage)?;
    let mut signature = [0u8; SIGNATURE_LEN];
    bundle
        .read_at(header.signature_offset() as u64, &mut signature)
        .map_err(Refusal::Storage)?;
    key.verify_strict(
        &signing_message(&manifest),
        &Signature::from_bytes(&signature),
    )
    .map_err(|_| Refusal::BadSignature)?;
    // Signed: now the manifest may be parsed.
    let manifest = Manifest::decode(&manifest).map_err(Refusal::Malformed)?;
    if manifest.key_id != hex(&header.key_id) {
        return Err(Refusal::Malformed(
            "the key id in the header differs from the signed one".into(),
        ));
    }
    let expected = signed_end + manifest.size;
    if total != expected {
        return Err(if total < expected {
            Refusal::Truncated {
                expected,
                got: total,
            }
        } else {
            Refusal::Malformed(alloc::format!(
                "{} bytes follow the module announced by the manifest",
                total - expected
            ))
        });
    }
    let mut hasher = Sha256::new();
    let mut block = [0u8; BLOCK];
    let mut offset = signed_end;
    while offset < total {
        let n = ((total - offset) as usize).min(BLOCK);
        bundle
            .read_at(offset, &mut block[..n])
            .map_err(Refusal::Storage)?;
        hasher.update(&block[..n]);
        offset += n as u64;
    }
    if <[u8; 32]>::from(hasher.finalize()) != manifest.sha256 {
        return Err(Refusal::HashMismatch);
    }
    Ok(Verified {
        module_offset: signed_end,
        module_len: manifest.size,
        manifest,
    })
}

#[cfg(test)]
mod tests {
    use super::super::bundle::{sign_bundle, BUNDLE_MAGIC};
    use super::super::manifest::sample;
    use super::*;
    use ed25519_dalek::SigningKey;

    const MODULE: &[u8] = b"\0asm\x01\0\0\0 pretend module bytes";

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn trust(keys: &[&SigningKey]) -> TrustedKeys {
        let mut t = TrustedKeys::new();
        for k in keys {
            t.trust(k.verifying_key().as_bytes()).unwrap();
        }
        t
    }

    fn check(bytes: &[u8], t: &TrustedKeys) -> Result<Verified, Refusal> {
        verify(&mut &bytes[..], t, 1 << 20)
    }

    #[test]
    fn a_signed_bundle_verifies_and_every_tampering_is_named() {
        let k = key(1);
        let good = sign_bundle(sample(), MODULE, &k);
        let t = trust(&[&k]);
        let v = check(&good, &t).unwrap();
        assert_eq!(v.module_len, MODULE.len() as u64);
        assert_eq!(&good[v.module_offset as usize..], MODULE);

        // One flipped bit in the module: the hash.
        let mut bad = good.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(check(&bad, &t), Err(Refusal::HashMismatch));
        // In the manifest: the signature.
        let mut bad = good.clone();
        bad[HEADER_LEN + 3] ^= 1;
        assert_eq!(check(&bad, &t), Err(Refusal::BadSignature));
        // Truncated anywhere.
        for cut in [5, HEADER_LEN + 2, good.len() - 70, good.len() - 1] {
            let e = check(&good[..cut], &t).unwrap_err();
            assert!(matches!(e, Refusal::Truncated { .. }), "cut {cut}: {e:?}");
        }
        // A bare module.
        assert_eq!(check(MODULE, &t), Err(Refusal::Unsigned));
        // Garbage.
        assert!(matches!(check(&[9; 40], &t), Err(Refusal::Malformed(_))));
        // Too large.
        assert!(matches!(
            verify(&mut &good[..], &t, 10),
            Err(Refusal::TooLarge { .. })
        ));
        // Trailing bytes.
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(check(&long, &t), Err(Refusal::Malformed(_))));
    }

    #[test]
    fn keys_must_be_trusted_and_not_revoked() {
        let (k1, k2) = (key(1), key(2));
        let bundle = sign_bundle(sample(), MODULE, &k2);
        assert!(matches!(
            check(&bundle, &trust(&[&k1])),
            Err(Refusal::UnknownKey(_))
        ));
        let mut t = trust(&[&k1, &k2]);
        assert!(check(&bundle, &t).is_ok());
        t.revoke(key_id(&k2.verifying_key()));
        assert!(matches!(check(&bundle, &t), Err(Refusal::RevokedKey(_))));
        // Claiming a trusted key's id does not help: the signature is checked with it.
        let mut forged = bundle.clone();
        forged[8..16].copy_from_slice(&key_id(&k1.verifying_key()));
        assert_eq!(check(&forged, &trust(&[&k1])), Err(Refusal::BadSignature));
        assert_eq!(&bundle[..8], BUNDLE_MAGIC);
    }
}
