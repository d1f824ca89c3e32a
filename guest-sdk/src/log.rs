//! `info!`-style logging through the host's structured log.
//!
//! Role in the data path: a handler's diagnostics leave the sandbox only via
//! the `log` import, attributed to the plugin by the host. The macros take
//! the [`Ctx`](crate::Ctx) first and format like `format!`; a message without
//! arguments is passed through without touching the formatting machinery
//! (`fmt::Arguments::as_str`), which keeps small plugins small.
//!
//! ```ignore
//! use relay_guest::log;
//! log::info!(ctx, "deploying {} with {} replicas", req.version, req.replicas);
//! log::warn!(ctx, "config unchanged");
//! ```

#[doc(hidden)]
#[macro_export]
macro_rules! __relay_log {
    ($level:expr, $ctx:expr, $($arg:tt)+) => {
        match ::core::format_args!($($arg)+) {
            args => match args.as_str() {
                ::core::option::Option::Some(message) => $ctx.log($level, message),
                ::core::option::Option::None => $ctx.log($level, &::std::fmt::format(args)),
            },
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __relay_log_trace {
    ($ctx:expr, $($arg:tt)+) => { $crate::__relay_log!($crate::Level::Trace, $ctx, $($arg)+) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __relay_log_debug {
    ($ctx:expr, $($arg:tt)+) => { $crate::__relay_log!($crate::Level::Debug, $ctx, $($arg)+) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __relay_log_info {
    ($ctx:expr, $($arg:tt)+) => { $crate::__relay_log!($crate::Level::Info, $ctx, $($arg)+) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __relay_log_warn {
    ($ctx:expr, $($arg:tt)+) => { $crate::__relay_log!($crate::Level::Warn, $ctx, $($arg)+) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __relay_log_error {
    ($ctx:expr, $($arg:tt)+) => { $crate::__relay_log!($crate::Level::Error, $ctx, $($arg)+) };
}

/// `debug!(ctx, "fmt", args..)`: a `debug`-level line.
pub use crate::__relay_log_debug as debug;
/// `error!(ctx, "fmt", args..)`: an `error`-level line.
pub use crate::__relay_log_error as error;
/// `info!(ctx, "fmt", args..)`: an `info`-level line.
pub use crate::__relay_log_info as info;
/// `trace!(ctx, "fmt", args..)`: a `trace`-level line.
pub use crate::__relay_log_trace as trace;
/// `warn!(ctx, "fmt", args..)`: a `warn`-level line.
pub use crate::__relay_log_warn as warn;

#[cfg(test)]
mod tests {
    use crate::{Ctx, Level, Role};

    #[test]
    fn macros_log_plain_and_formatted_lines_at_their_level() {
        let ctx = Ctx::for_test("t", Role::Admin);
        let replicas = 3;
        crate::log::info!(ctx, "plain {{braces}} stay");
        crate::log::warn!(ctx, "replicas = {}", replicas);
        crate::log::error!(ctx, "inline {replicas}");
        let logs = ctx.host().logs.borrow();
        let lines: Vec<(Level, &str)> = logs.iter().map(|(l, m)| (*l, m.as_str())).collect();
        assert_eq!(
            lines,
            [
                (Level::Info, "plain {braces} stay"),
                (Level::Warn, "replicas = 3"),
                (Level::Error, "inline 3"),
            ]
        );
    }
}
