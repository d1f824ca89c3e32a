//! The core's diagnostics: `tracing` events when the `tracing` feature is on
//! (every build but one), nothing when it is off. It can be off because
//! `tracing-core` needs atomic compare-and-swap, which `riscv32imc` (the
//! ESP32-C3) does not have; the core's decisions never depend on it.

/// `tracing::$level!(...)` with the `tracing` feature, else nothing.
macro_rules! event {
    ($level:ident, $($arg:tt)*) => {{
        #[cfg(feature = "tracing")]
        tracing::$level!($($arg)*);
    }};
}

pub(crate) use event;
