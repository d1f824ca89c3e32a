//! Proc macros of `relay-guest`: `#[command]` and `plugin!`.
//!
//! Role in the data path: they run at build time and turn plain handler
//! functions into the command table that the plugin's `describe` reports and
//! its `handle` dispatches on. Every misuse we can see in the syntax (bad
//! command or plugin name, unknown role, duplicate command, wrong handler
//! signature) becomes a compile error pointing at the offending tokens; what
//! only the type checker can see (payload not `Deserialize`, reply not
//! `Serialize`) is worded by `#[diagnostic::on_unimplemented]` in
//! `relay-guest`.
//!
//! # Layout
//! - `command`: the `#[command(...)]` attribute.
//! - `plugin`: the `plugin!(...)` macro.
//! - `rules`: the naming and role rules, shared and unit-tested.

mod command;
mod plugin;
mod rules;

use proc_macro::TokenStream;

/// Declare a command handler.
///
/// ```ignore
/// #[command(name = "deploy", roles(admin, primary), budget_ms = 2000)]
/// fn deploy(ctx: &mut Ctx, req: Config) -> Result<Stored, Error> { .. }
/// ```
///
/// - `name`: the command name, `[A-Za-z0-9_-]{1,64}`; defaults to the
///   function's name.
/// - `roles(..)`: any of `admin`, `primary`, `secondary`, or `all`; defaults
///   to `admin` only (least privilege).
/// - `budget_ms`: optional per-attempt time budget, a positive `u32`.
///
/// The function takes `ctx: &mut Ctx` and optionally one payload argument (a
/// `serde::Deserialize` type or `Raw`), and returns `Result<R, Error>` where
/// `R` is `serde::Serialize`, `Raw`, or `()` for no reply.
#[proc_macro_attribute]
pub fn command(args: TokenStream, item: TokenStream) -> TokenStream {
    command::expand(args.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Declare the plugin and export it.
///
/// ```ignore
/// relay_guest::plugin!(name = "deploy", version = env!("CARGO_PKG_VERSION"), commands = [deploy, get_config]);
/// ```
///
/// `version` defaults to `env!("CARGO_PKG_VERSION")`. Defines
/// `pub const PLUGIN: relay_guest::Plugin` (handy for native tests) and, on
/// wasm32, exports the world's `describe` and `handle`.
#[proc_macro]
pub fn plugin(input: TokenStream) -> TokenStream {
    plugin::expand(input.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
