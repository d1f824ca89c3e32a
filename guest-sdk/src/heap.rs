//! The plugin's allocator on wasm32 with the feature `one-page-heap`:
//! `talc`, fed first with the free tail of the memory the module starts
//! with, then with `memory.grow`.
//!
//! Why: a module's memory starts with whole 64 KiB pages holding the shadow
//! stack and the data, and the rest of those pages is free. Rust's default
//! dlmalloc and the SDK's default `lol_alloc` never use that tail: their
//! first allocation grows the memory by another page, so every plugin costs
//! at least two pages (128 KiB) on the host, which on a microcontroller is
//! most of the heap. Starting at `__heap_base` keeps a small plugin in the
//! one page it declares. The price (`docs/benchmarks.md`, "The embedded
//! device"): 1.6 KiB more module and slower loads and calls on wasmi, hence
//! opt-in. talc is a maintained `no_std` allocator whose memory source is
//! pluggable ([`talc::source::Source`]), which is the one thing this needs;
//! the few lines of that source are ours.

use core::alloc::Layout;
use core::ptr::NonNull;

use talc::base::binning::Binning;
use talc::base::Talc;
use talc::cell::TalcSyncCell;
use talc::wasm::WasmBinning;

const PAGE: usize = 64 * 1024;
/// More than talc's bookkeeping for one new heap and one chunk.
const OVERHEAD: usize = 256;

extern "C" {
    /// The first byte after the stack and the data (placed by wasm-ld).
    static __heap_base: u8;
}

/// The memory source: the initial pages' tail once, then growth.
#[derive(Debug)]
pub struct InitialTailThenGrow {
    /// The end of the heap talc last claimed or extended.
    end: Option<NonNull<u8>>,
    tail_claimed: bool,
}

impl InitialTailThenGrow {
    pub const fn new() -> Self {
        InitialTailThenGrow {
            end: None,
            tail_claimed: false,
        }
    }
}

// SAFETY: hands talc only memory no one else uses (the tail past
// `__heap_base`, then pages `memory.grow` just added), and never allocates.
unsafe impl talc::source::Source for InitialTailThenGrow {
    fn acquire<B: Binning>(talc: &mut Talc<Self, B>, layout: Layout) -> Result<(), ()> {
        if !talc.source.tail_claimed {
            talc.source.tail_claimed = true;
            let base = core::ptr::addr_of!(__heap_base) as usize;
            let end = core::arch::wasm32::memory_size(0) * PAGE;
            if end > base {
                // SAFETY: [base, end) is in bounds and unused: past the
                // stack and the data, before anything has been allocated.
                talc.source.end = unsafe { talc.claim(base as *mut u8, end - base) };
                if talc.source.end.is_some() {
                    return Ok(());
                }
            }
        }
        let needed = layout.size() + layout.align() + OVERHEAD;
        let pages = needed.div_ceil(PAGE);
        let previous = core::arch::wasm32::memory_grow(0, pages);
        if previous == usize::MAX {
            return Err(());
        }
        let grown = (previous * PAGE) as *mut u8;
        let grown_end = grown.wrapping_add(pages * PAGE);
        if let Some(end) = talc.source.end.take() {
            if end.as_ptr() == grown {
                // SAFETY: `end` is the current heap's end and the pages
                // right after it are new.
                talc.source.end = Some(unsafe { talc.extend(end, grown_end) });
                return Ok(());
            }
        }
        // SAFETY: the pages were just added by `memory.grow`.
        talc.source.end = unsafe { talc.claim(grown, pages * PAGE) };
        talc.source.end.map(|_| ()).ok_or(())
    }
}

/// A plugin is single-threaded wasm: `TalcSyncCell` is sound there (its
/// constructor panics at compile time anywhere else).
#[global_allocator]
static ALLOCATOR: TalcSyncCell<InitialTailThenGrow, WasmBinning> =
    TalcSyncCell::new_wasm(InitialTailThenGrow::new());
