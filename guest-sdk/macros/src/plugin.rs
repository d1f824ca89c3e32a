//! `plugin!(...)`: the plugin's identity plus its command table, exported.
//!
//! Expands to a `pub const PLUGIN: relay_guest::Plugin` listing the
//! `__relay_command_<fn>` constants that `#[command]` emitted, a compile-time
//! `check_plugin` of that table (duplicate command names across functions,
//! version syntax), and the `Guest` impl that wit-bindgen's export macro
//! turns into the `describe`/`handle` exports on wasm32.

use crate::rules::check_name;
use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{bracketed, Expr, ExprLit, Ident, Lit, Path, Token};

struct PluginInput {
    name: Expr,
    version: Option<Expr>,
    commands: Vec<Path>,
}

impl Parse for PluginInput {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut name = None;
        let mut version = None;
        let mut commands: Option<Vec<Path>> = None;
        while !input.is_empty() {
            let key: Ident = input.parse()?;
            input.parse::<Token![=]>()?;
            match key.to_string().as_str() {
                "name" if name.is_none() => name = Some(input.parse()?),
                "version" if version.is_none() => version = Some(input.parse()?),
                "commands" if commands.is_none() => {
                    let list;
                    bracketed!(list in input);
                    let paths = Punctuated::<Path, Token![,]>::parse_terminated(&list)?;
                    commands = Some(paths.into_iter().collect());
                }
                "name" | "version" | "commands" => {
                    return Err(syn::Error::new(
                        key.span(),
                        format!("`{key}` is given twice"),
                    ));
                }
                _ => {
                    return Err(syn::Error::new(
                        key.span(),
                        "unknown plugin! argument; expected `name = \"..\"`, `version = \"..\"` or `commands = [..]`",
                    ));
                }
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        let Some(name) = name else {
            return Err(input.error("plugin! needs `name = \"...\"`"));
        };
        let Some(commands) = commands else {
            return Err(input.error("plugin! needs `commands = [handler, ...]`"));
        };
        Ok(PluginInput {
            name,
            version,
            commands,
        })
    }
}

pub fn expand(input: TokenStream) -> syn::Result<TokenStream> {
    let PluginInput {
        name,
        version,
        commands,
    } = syn::parse2(input)?;

    if let Expr::Lit(ExprLit {
        lit: Lit::Str(lit), ..
    }) = &name
    {
        check_name(&lit.value()).map_err(|reason| {
            syn::Error::new(lit.span(), format!("invalid plugin name: {reason}"))
        })?;
    }
    if commands.is_empty() {
        return Err(syn::Error::new(
            proc_macro2::Span::call_site(),
            "plugin! must list at least one command",
        ));
    }
    let shown: Vec<String> = commands
        .iter()
        .map(|path| quote!(#path).to_string().replace(' ', ""))
        .collect();
    for (i, command) in commands.iter().enumerate() {
        if shown[..i].contains(&shown[i]) {
            let shown = &shown[i];
            return Err(syn::Error::new_spanned(
                command,
                format!("duplicate command `{shown}` in plugin!: each handler is listed once"),
            ));
        }
    }
    let definitions = commands.iter().map(|command| {
        let mut path = command.clone();
        if let Some(last) = path.segments.last_mut() {
            last.ident = format_ident!("__relay_command_{}", last.ident, span = last.ident.span());
        }
        path
    });
    let version = version.unwrap_or_else(|| syn::parse_quote!(::core::env!("CARGO_PKG_VERSION")));

    Ok(quote! {
        /// This plugin's identity and command table (what `describe` reports).
        pub const PLUGIN: ::relay_guest::Plugin = ::relay_guest::Plugin {
            name: #name,
            version: #version,
            commands: &[#(#definitions),*],
        };

        const _: () = {
            ::relay_guest::__private::check_plugin(&PLUGIN);

            struct __RelayPlugin;

            impl ::relay_guest::bindings::Guest for __RelayPlugin {
                fn describe() -> ::relay_guest::PluginInfo {
                    ::relay_guest::__private::describe(&PLUGIN)
                }

                fn handle(
                    command: ::relay_guest::bindings::Command,
                ) -> ::core::result::Result<
                    ::core::option::Option<::std::vec::Vec<u8>>,
                    ::relay_guest::bindings::HandlerError,
                > {
                    ::relay_guest::__private::handle(&PLUGIN, command)
                }
            }

            #[cfg(target_arch = "wasm32")]
            ::relay_guest::bindings::__export_plugin_world!(__RelayPlugin with_types_in ::relay_guest::bindings);
        };
    })
}
