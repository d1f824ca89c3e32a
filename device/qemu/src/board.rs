//! QEMU `virt` board I/O: the NS16550 UART for output, the SiFive test
//! device to end the emulation with a status, and the instruction counter.

use core::fmt::{self, Write};

const UART: *mut u8 = 0x1000_0000 as *mut u8;
const UART_LSR: usize = 5;
const LSR_THR_EMPTY: u8 = 1 << 5;
const TEST_DEVICE: *mut u32 = 0x0010_0000 as *mut u32;
const PASS: u32 = 0x5555;
const FAIL: u32 = 0x3333;

/// Writes to the UART (QEMU's `-serial`).
pub struct Uart;

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            // SAFETY: the virt machine maps an NS16550 at this address; the
            // loop waits until it takes a byte.
            unsafe {
                while UART.add(UART_LSR).read_volatile() & LSR_THR_EMPTY == 0 {}
                UART.write_volatile(b);
            }
        }
        Ok(())
    }
}

#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::board::Uart, $($arg)*);
    }};
}

/// Ends the emulation: QEMU exits with status 0, or `code` (1..).
pub fn exit(code: u16) -> ! {
    let value = if code == 0 {
        PASS
    } else {
        FAIL | (u32::from(code) << 16)
    };
    // SAFETY: the virt machine maps the SiFive test device here; writing a
    // finisher value stops QEMU.
    unsafe { TEST_DEVICE.write_volatile(value) };
    loop {
        core::hint::spin_loop();
    }
}

/// Instructions retired so far (QEMU counts exactly under `-icount`).
pub fn instructions() -> u64 {
    riscv::register::minstret::read64()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    crate::println!("not ok - panic: {info}");
    exit(101)
}

#[export_name = "ExceptionHandler"]
fn exception(frame: &riscv_rt::TrapFrame) -> ! {
    let cause = riscv::register::mcause::read().bits();
    let at = riscv::register::mepc::read();
    crate::println!(
        "not ok - trap: mcause {cause:#x} at {at:#x} (ra {:#x})",
        frame.ra
    );
    exit(102)
}
