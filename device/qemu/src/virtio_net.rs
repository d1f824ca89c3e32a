//! The network card of the emulated device: QEMU's virtio-net (MMIO) through
//! `virtio-drivers`, as an `embassy-net` driver.
//!
//! The virt machine identity-maps RAM and has no IOMMU, so DMA memory is
//! plain heap and a buffer's address is its physical address. The device is
//! polled (the executor polls without interrupts), so a driver call that
//! finds nothing asks to be polled again.

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use alloc::vec::Vec;
use core::cell::RefCell;
use core::ptr::NonNull;
use core::task::Context;

use embassy_net_driver::{Capabilities, HardwareAddress, LinkState};
use virtio_drivers::device::net::{TxBuffer, VirtIONet};
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, Transport};
use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

/// The virt machine's eight virtio-mmio slots.
const MMIO_BASE: usize = 0x1000_1000;
const MMIO_SLOT: usize = 0x1000;
const MMIO_SLOTS: usize = 8;
const QUEUE: usize = 16;
/// An Ethernet frame and virtio's header.
const BUFFER: usize = 2048;
const MTU: usize = 1514;

type Net = VirtIONet<IdentityHal, MmioTransport<'static>, QUEUE>;

/// The card, for `embassy_net::new`.
pub struct VirtioNet {
    net: RefCell<Net>,
}

/// Finds the virtio-net card and starts it; `None` if QEMU has none
/// (`-device virtio-net-device,...` missing).
pub fn find() -> Option<VirtioNet> {
    (0..MMIO_SLOTS).find_map(|slot| {
        let header = NonNull::new((MMIO_BASE + slot * MMIO_SLOT) as *mut VirtIOHeader)?;
        // SAFETY: the virt machine maps a virtio-mmio region of MMIO_SLOT
        // bytes at each slot, for the whole run; each is opened once.
        let transport = unsafe { MmioTransport::new(header, MMIO_SLOT) }.ok()?;
        if transport.device_type() != DeviceType::Network {
            return None;
        }
        let net = Net::new(transport, BUFFER).ok()?;
        Some(VirtioNet {
            net: RefCell::new(net),
        })
    })
}

impl embassy_net_driver::Driver for VirtioNet {
    type RxToken<'a> = Received;
    type TxToken<'a> = Transmit<'a>;

    fn receive(&mut self, cx: &mut Context) -> Option<(Received, Transmit<'_>)> {
        let mut net = self.net.borrow_mut();
        let Ok(buffer) = net.receive() else {
            cx.waker().wake_by_ref();
            return None;
        };
        let frame = buffer.packet().to_vec();
        // The buffer goes back to the card at once; a failure here would
        // only shrink the receive queue.
        let _ = net.recycle_rx_buffer(buffer);
        drop(net);
        Some((Received(frame), Transmit { net: &self.net }))
    }

    fn transmit(&mut self, cx: &mut Context) -> Option<Transmit<'_>> {
        if self.net.borrow().can_send() {
            Some(Transmit { net: &self.net })
        } else {
            cx.waker().wake_by_ref();
            None
        }
    }

    fn link_state(&mut self, _cx: &mut Context) -> LinkState {
        LinkState::Up
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_transmission_unit = MTU;
        caps.max_burst_size = Some(1);
        caps
    }

    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ethernet(self.net.borrow().mac_address())
    }
}

/// One received frame (copied out of the card's buffer).
pub struct Received(Vec<u8>);

impl embassy_net_driver::RxToken for Received {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(mut self, f: F) -> R {
        f(&mut self.0)
    }
}

/// Room for one frame to send.
pub struct Transmit<'a> {
    net: &'a RefCell<Net>,
}

impl embassy_net_driver::TxToken for Transmit<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = alloc::vec![0u8; len];
        let result = f(&mut frame);
        // `send` waits until the card took the frame; a refused frame is a
        // lost packet, which TCP recovers.
        let _ = self.net.borrow_mut().send(TxBuffer::from(&frame));
        result
    }
}

/// DMA on an identity-mapped machine without an IOMMU.
pub struct IdentityHal;

// SAFETY: allocations are page-aligned, zeroed and owned until
// `dma_dealloc`; physical and virtual addresses are the same on the virt
// machine, and the device reads shared buffers in place.
unsafe impl Hal for IdentityHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let layout = Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).expect("a page layout");
        // SAFETY: the layout is not zero-sized (virtio asks for >= 1 page).
        let ptr = NonNull::new(unsafe { alloc_zeroed(layout) }).expect("DMA memory");
        (ptr.as_ptr() as usize as PhysAddr, ptr)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        let layout = Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).expect("a page layout");
        // SAFETY: allocated by `dma_alloc` with this layout (the caller's
        // contract).
        unsafe { dealloc(vaddr.as_ptr(), layout) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as usize as *mut u8).expect("a non-null MMIO address")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr() as *mut u8 as usize as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}
