//! Where a microcontroller keeps update bundles: a few bundle regions on
//! flash (`relay_flash::bundle`) and the update state in a record slot
//! (`relay_flash::record`), on one [`NorFlash`] partition.
//!
//! A verified bundle stays in its region as an installed version; the
//! update state names versions by their module's sha256, and a region is
//! reused for the next transfer once no version names its module. So three
//! regions are enough: the active version, the previous one (rollback) and
//! the transfer in progress.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use embedded_storage::nor_flash::NorFlash;
use relay_core::ota::state::{Source, UpdateState};
use relay_core::ota::verify::{verify, BundleRead, TrustedKeys, Verified};
use relay_core::ota::Refusal;
use relay_flash::bundle::{BundleRegion, OnFlash};
use relay_flash::record::RecordSlot;

/// How the update partition is cut: from `base`, `regions` bundle regions
/// of `region_bytes` each, then the state's two sectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub base: u32,
    pub regions: u32,
    pub region_bytes: u32,
}

impl Layout {
    /// Bytes the partition needs.
    pub fn bytes<F: NorFlash>(&self) -> u32 {
        self.regions * self.region_bytes + 2 * F::ERASE_SIZE as u32
    }

    /// The layout of a partition of `len` bytes at `base` with `regions`
    /// regions as large as fits (whole erase sectors).
    pub fn fit<F: NorFlash>(base: u32, len: u32, regions: u32) -> Layout {
        let sector = F::ERASE_SIZE as u32;
        let usable = len.saturating_sub(2 * sector);
        Layout {
            base,
            regions,
            region_bytes: usable / regions / sector * sector,
        }
    }
}

/// A complete bundle that verified, as its region holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    sha256: [u8; 32],
    module_offset: u64,
    module_len: u64,
}

/// The update partition: see the module doc.
pub struct Regions<F: NorFlash> {
    flash: F,
    regions: Vec<BundleRegion>,
    held: Vec<Option<Held>>,
    slot: RecordSlot,
}

fn storage(e: String) -> Refusal {
    Refusal::Storage(e)
}

impl<F: NorFlash> Regions<F> {
    /// Opens the partition: the update state, and which region holds which
    /// verified module (each complete bundle is verified again: a region
    /// is trusted only for what its signature and hash say).
    pub fn open(
        mut flash: F,
        layout: Layout,
        trust: &TrustedKeys,
        max_bundle_bytes: u64,
    ) -> Result<(Self, UpdateState), Refusal> {
        let mut regions = Vec::new();
        for k in 0..layout.regions {
            let base = layout.base + k * layout.region_bytes;
            regions
                .push(BundleRegion::open(&mut flash, base, layout.region_bytes).map_err(storage)?);
        }
        let (slot, record) = RecordSlot::open(
            &mut flash,
            layout.base + layout.regions * layout.region_bytes,
        )
        .map_err(storage)?;
        let state = match record {
            Some(bytes) => UpdateState::decode(&bytes).map_err(|e| {
                Refusal::Storage(alloc::format!("the update state does not decode: {e}"))
            })?,
            None => UpdateState::default(),
        };
        let mut this = Regions {
            flash,
            held: vec![None; regions.len()],
            regions,
            slot,
        };
        for k in 0..this.regions.len() {
            if this.regions[k].stored() > 0 {
                this.held[k] = this
                    .check(k, trust, max_bundle_bytes)
                    .ok()
                    .map(|v| held(&v));
            }
        }
        Ok((this, state))
    }

    /// The region a chunk of `transfer` goes to: the one holding that
    /// transfer (a complete one answers at once: a re-run of an install),
    /// else one no version uses, an empty one first.
    pub fn staging(
        &mut self,
        transfer: &[u8; 32],
        state: &UpdateState,
    ) -> Result<OnFlash<'_, F>, Refusal> {
        let used = |held: &Option<Held>| {
            held.as_ref()
                .is_some_and(|h| state.references(&Source::Bundle(h.sha256)))
        };
        let n = self.regions.len();
        let k = (0..n)
            .find(|&k| self.regions[k].transfer() == Some(transfer))
            .or_else(|| (0..n).find(|&k| !used(&self.held[k]) && self.regions[k].stored() == 0))
            .or_else(|| (0..n).find(|&k| !used(&self.held[k])))
            .ok_or_else(|| Refusal::Storage("every bundle region holds a version in use".into()))?;
        if !used(&self.held[k]) {
            // Staged into again: it holds no version until verified.
            self.held[k] = None;
        }
        Ok(self.regions[k].with(&mut self.flash))
    }

    /// Verifies the complete bundle staged for `transfer` and records which
    /// module its region now holds.
    pub fn verify_staged(
        &mut self,
        transfer: &[u8; 32],
        trust: &TrustedKeys,
        max_bundle_bytes: u64,
    ) -> Result<Verified, Refusal> {
        let k = (0..self.regions.len())
            .find(|&k| self.regions[k].transfer() == Some(transfer))
            .ok_or_else(|| Refusal::Storage("the staged bundle is gone".into()))?;
        let verified = self.check(k, trust, max_bundle_bytes)?;
        self.held[k] = Some(held(&verified));
        Ok(verified)
    }

    fn check(&mut self, k: usize, trust: &TrustedKeys, max: u64) -> Result<Verified, Refusal> {
        verify(&mut self.regions[k].with(&mut self.flash), trust, max)
    }

    /// The module of a verified bundle, read into RAM for the engine.
    pub fn module(&mut self, sha256: &[u8; 32]) -> Result<Vec<u8>, Refusal> {
        let (k, h) = (0..self.regions.len())
            .find_map(|k| {
                self.held[k]
                    .clone()
                    .filter(|h| &h.sha256 == sha256)
                    .map(|h| (k, h))
            })
            .ok_or_else(|| Refusal::InvalidModule("no bundle region holds this module".into()))?;
        let mut module = vec![0u8; h.module_len as usize];
        self.regions[k]
            .with(&mut self.flash)
            .read_at(h.module_offset, &mut module)
            .map_err(storage)?;
        Ok(module)
    }

    /// Replaces the durable update state.
    pub fn save(&mut self, state: &UpdateState) -> Result<(), Refusal> {
        self.slot
            .store(&mut self.flash, &state.encode())
            .map_err(storage)
    }

    /// The flash back (a simulated reset: open it again).
    pub fn into_flash(self) -> F {
        self.flash
    }
}

fn held(v: &Verified) -> Held {
    Held {
        sha256: v.manifest.sha256,
        module_offset: v.module_offset,
        module_len: v.module_len,
    }
}
