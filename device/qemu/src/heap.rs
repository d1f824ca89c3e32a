//! The heap: `embedded-alloc`'s linked-list allocator over a static
//! region, counting live bytes and their peak (the figure the issue asks
//! for).

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicUsize, Ordering};

use embedded_alloc::LlffHeap;

/// More than any run here needs: the figure is the peak, not this.
pub const HEAP_BYTES: usize = 4 * 1024 * 1024;

pub struct Counting {
    heap: LlffHeap,
    live: AtomicUsize,
    peak: AtomicUsize,
}

#[global_allocator]
pub static HEAP: Counting = Counting {
    heap: LlffHeap::empty(),
    live: AtomicUsize::new(0),
    peak: AtomicUsize::new(0),
};

impl Counting {
    /// Hands the region to the allocator; once, before any allocation.
    pub fn init(&self) {
        static mut REGION: [u8; HEAP_BYTES] = [0; HEAP_BYTES];
        // SAFETY: called once at boot, before any allocation; the region is
        // a static the allocator alone uses from now on.
        unsafe {
            self.heap
                .init(core::ptr::addr_of_mut!(REGION) as usize, HEAP_BYTES)
        }
    }

    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Starts a new peak measurement from the current level.
    pub fn reset_peak(&self) {
        self.peak.store(self.live(), Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { self.heap.alloc(layout) };
        if !p.is_null() {
            let live = self.live.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            self.peak.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { self.heap.dealloc(ptr, layout) };
        self.live.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}
