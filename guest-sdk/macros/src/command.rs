//! `#[command(...)]`: a handler function becomes a `CommandDef` constant.
//!
//! The function is kept as written (so it can be called and unit-tested
//! directly); beside it the macro emits `__relay_command_<fn>`, a
//! `relay_guest::CommandDef` whose `run` decodes the payload, calls the
//! function and encodes the reply. `plugin!` refers to that constant.

use crate::rules::{check_name, role_variant, ROLES};
use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{
    FnArg, GenericArgument, Ident, ItemFn, LitInt, LitStr, PathArguments, ReturnType, Token, Type,
};

/// The parsed `#[command(...)]` arguments.
struct Args {
    name: Option<LitStr>,
    roles: Option<Vec<(String, Span)>>,
    budget_ms: Option<u32>,
}

/// What the handler's signature says, as far as the macro needs it.
struct Signature<'a> {
    payload: Option<&'a Type>,
    reply: &'a Type,
}

pub fn expand(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let args = parse_args(args)?;
    let function: ItemFn = syn::parse2(item).map_err(|err| {
        syn::Error::new(err.span(), "#[command] goes on a free function: `fn name(ctx: &mut Ctx, payload: T) -> Result<R, Error>`")
    })?;
    let signature = check_signature(&function)?;

    let fn_ident = &function.sig.ident;
    let name = match &args.name {
        Some(lit) => {
            check_name(&lit.value()).map_err(|reason| {
                syn::Error::new(lit.span(), format!("invalid command name: {reason}"))
            })?;
            lit.clone()
        }
        None => {
            let derived = fn_ident.to_string();
            let derived = derived.strip_prefix("r#").unwrap_or(&derived).to_owned();
            check_name(&derived).map_err(|reason| {
                syn::Error::new(fn_ident.span(), format!("invalid command name (from the function name): {reason}; set one with `name = \"...\"`"))
            })?;
            LitStr::new(&derived, fn_ident.span())
        }
    };
    let roles = args
        .roles
        .unwrap_or_else(|| vec![("admin".into(), Span::call_site())]);
    let role_paths = roles.iter().map(|(role, span)| {
        let variant = format_ident!("{}", role_variant(role).unwrap_or("Admin"), span = *span);
        quote!(::relay_guest::Role::#variant)
    });
    let budget = match args.budget_ms {
        Some(ms) => quote!(::core::option::Option::Some(#ms)),
        None => quote!(::core::option::Option::None),
    };

    let reply_is_unit = matches!(signature.reply, Type::Tuple(tuple) if tuple.elems.is_empty());
    let reply = signature.reply;
    let run = match (signature.payload, reply_is_unit) {
        (Some(payload), false) => quote_spanned! {payload.span()=>
            ::relay_guest::__private::run_payload::<#payload, #reply>(__relay_ctx, __relay_payload, #fn_ident)
        },
        (Some(payload), true) => quote_spanned! {payload.span()=>
            ::relay_guest::__private::run_payload_unit::<#payload>(__relay_ctx, __relay_payload, #fn_ident)
        },
        (None, false) => quote_spanned! {reply.span()=>
            ::relay_guest::__private::run_plain::<#reply>(__relay_ctx, __relay_payload, #fn_ident)
        },
        (None, true) => quote! {
            ::relay_guest::__private::run_plain_unit(__relay_ctx, __relay_payload, #fn_ident)
        },
    };

    let vis = &function.vis;
    let def_ident = format_ident!("__relay_command_{}", fn_ident);
    Ok(quote! {
        #function

        #[doc(hidden)]
        #[allow(non_upper_case_globals)]
        #vis const #def_ident: ::relay_guest::CommandDef = ::relay_guest::CommandDef {
            name: #name,
            roles: &[#(#role_paths),*],
            budget_ms: #budget,
            run: |__relay_ctx, __relay_payload| #run,
        };
    })
}

fn parse_args(args: TokenStream) -> syn::Result<Args> {
    let mut parsed = Args {
        name: None,
        roles: None,
        budget_ms: None,
    };
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("name") {
            if parsed.name.is_some() {
                return Err(meta.error("`name` is given twice"));
            }
            parsed.name = Some(meta.value()?.parse()?);
            Ok(())
        } else if meta.path.is_ident("roles") {
            if parsed.roles.is_some() {
                return Err(meta.error("`roles` is given twice"));
            }
            let list;
            syn::parenthesized!(list in meta.input);
            let idents = Punctuated::<Ident, Token![,]>::parse_terminated(&list)?;
            if idents.is_empty() {
                return Err(meta.error(
                    "`roles(..)` must name at least one role; nobody could call this command",
                ));
            }
            let mut roles: Vec<(String, Span)> = Vec::new();
            for ident in &idents {
                let name = ident.to_string();
                if name == "all" {
                    for role in ROLES {
                        if !roles.iter().any(|(have, _)| have == role) {
                            roles.push((role.into(), ident.span()));
                        }
                    }
                } else if role_variant(&name).is_none() {
                    return Err(syn::Error::new(
                        ident.span(),
                        format!("unknown role `{name}`; expected `admin`, `primary`, `secondary` or `all`"),
                    ));
                } else if roles.iter().any(|(have, _)| *have == name) {
                    return Err(syn::Error::new(
                        ident.span(),
                        format!("role `{name}` is listed twice"),
                    ));
                } else {
                    roles.push((name, ident.span()));
                }
            }
            parsed.roles = Some(roles);
            Ok(())
        } else if meta.path.is_ident("budget_ms") {
            if parsed.budget_ms.is_some() {
                return Err(meta.error("`budget_ms` is given twice"));
            }
            let lit: LitInt = meta.value()?.parse()?;
            let ms: u32 = lit.base10_parse().map_err(|_| {
                syn::Error::new(
                    lit.span(),
                    "`budget_ms` must be a whole number of milliseconds that fits in u32",
                )
            })?;
            if ms == 0 {
                return Err(syn::Error::new(
                    lit.span(),
                    "`budget_ms` must be at least 1",
                ));
            }
            parsed.budget_ms = Some(ms);
            Ok(())
        } else {
            Err(meta.error("unknown #[command] argument; expected `name = \"..\"`, `roles(..)` or `budget_ms = N`"))
        }
    });
    syn::parse::Parser::parse2(parser, args)?;
    Ok(parsed)
}

const SHAPE: &str = "expected `fn(ctx: &mut Ctx, payload: T) -> Result<R, Error>` (the payload argument is optional)";

fn check_signature(function: &ItemFn) -> syn::Result<Signature<'_>> {
    let sig = &function.sig;
    if let Some(token) = &sig.asyncness {
        return Err(syn::Error::new(
            token.span(),
            "a command handler cannot be `async`; the host calls it synchronously",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "a command handler cannot be generic: its payload and reply types must be concrete",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(syn::Error::new(variadic.span(), SHAPE));
    }

    let mut inputs = sig.inputs.iter();
    let Some(first) = inputs.next() else {
        return Err(syn::Error::new(
            sig.paren_token.span.join(),
            format!("a command handler takes the context first; {SHAPE}"),
        ));
    };
    let ctx_type = match first {
        FnArg::Receiver(receiver) => {
            return Err(syn::Error::new(
                receiver.span(),
                "a command handler is a free function, not a method",
            ));
        }
        FnArg::Typed(typed) => &*typed.ty,
    };
    if !matches!(ctx_type, Type::Reference(reference) if reference.mutability.is_some()) {
        return Err(syn::Error::new(
            ctx_type.span(),
            format!("the first parameter must be `&mut Ctx`; {SHAPE}"),
        ));
    }
    let payload = match inputs.next() {
        None => None,
        Some(FnArg::Typed(typed)) => Some(&*typed.ty),
        Some(FnArg::Receiver(receiver)) => return Err(syn::Error::new(receiver.span(), SHAPE)),
    };
    if let Some(extra) = inputs.next() {
        return Err(syn::Error::new(extra.span(), format!("a command handler takes at most two parameters (the context and one payload); {SHAPE}")));
    }

    let ReturnType::Type(_, output) = &sig.output else {
        return Err(syn::Error::new(
            sig.ident.span(),
            format!(
                "a command handler must return `Result<R, Error>` (R = `()` for no reply); {SHAPE}"
            ),
        ));
    };
    let reply = ok_type(output).ok_or_else(|| {
        syn::Error::new(
            output.span(),
            format!(
                "a command handler must return `Result<R, Error>` (R = `()` for no reply); {SHAPE}"
            ),
        )
    })?;
    Ok(Signature { payload, reply })
}

/// `R` in `Result<R, E>` or `Result<R>` (any path ending in `Result`).
fn ok_type(output: &Type) -> Option<&Type> {
    let Type::Path(path) = output else {
        return None;
    };
    let last = path.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first()? {
        GenericArgument::Type(ok) if args.args.len() <= 2 => Some(ok),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_str(args: &str, item: &str) -> Result<String, String> {
        let args: TokenStream = args.parse().expect("args tokens");
        let item: TokenStream = item.parse().expect("item tokens");
        expand(args, item)
            .map(|tokens| tokens.to_string())
            .map_err(|err| err.to_string())
    }

    #[test]
    fn emits_a_command_def_beside_the_untouched_function() {
        let out = expand_str(
            r#"name = "get-config", roles(admin, primary), budget_ms = 250"#,
            "pub fn get_config(ctx: &mut Ctx) -> Result<Config, Error> { todo!() }",
        )
        .expect("expands");
        assert!(out.contains("pub fn get_config"), "{out}");
        assert!(
            out.contains("pub const __relay_command_get_config"),
            "{out}"
        );
        assert!(out.contains("\"get-config\""), "{out}");
        assert!(
            out.contains("Role :: Admin , :: relay_guest :: Role :: Primary"),
            "{out}"
        );
        assert!(out.contains("Some (250u32)"), "{out}");
        assert!(out.contains("run_plain :: < Config >"), "{out}");
    }

    #[test]
    fn defaults_name_to_the_function_and_roles_to_admin() {
        let out = expand_str(
            "",
            "fn reset(ctx: &mut Ctx) -> Result<(), Error> { Ok(()) }",
        )
        .expect("expands");
        assert!(out.contains("name : \"reset\""), "{out}");
        assert!(
            out.contains("roles : & [:: relay_guest :: Role :: Admin]"),
            "{out}"
        );
        assert!(out.contains("run_plain_unit"), "{out}");
    }

    #[test]
    fn all_expands_to_the_three_roles() {
        let out = expand_str(
            "roles(all)",
            "fn echo(ctx: &mut Ctx, p: Raw) -> Result<Raw, Error> { Ok(p) }",
        )
        .expect("expands");
        assert!(
            out.contains("Admin") && out.contains("Primary") && out.contains("Secondary"),
            "{out}"
        );
        assert!(out.contains("run_payload :: < Raw , Raw >"), "{out}");
    }

    #[test]
    fn rejects_misuse_with_a_reason() {
        let item = "fn f(ctx: &mut Ctx) -> Result<(), Error> { Ok(()) }";
        let cases = [
            (r#"name = "a b""#, item, "invalid command name"),
            (r#"name = """#, item, "must not be empty"),
            ("roles(root)", item, "unknown role"),
            ("roles()", item, "at least one role"),
            ("roles(admin, admin)", item, "listed twice"),
            ("budget_ms = 0", item, "at least 1"),
            ("budget_ms = 5000000000", item, "fits in u32"),
            ("colour = 1", item, "unknown #[command] argument"),
            (
                "",
                "fn f() -> Result<(), Error> { Ok(()) }",
                "takes the context first",
            ),
            (
                "",
                "fn f(ctx: &Ctx) -> Result<(), Error> { Ok(()) }",
                "must be `&mut Ctx`",
            ),
            (
                "",
                "fn f(ctx: &mut Ctx, a: u8, b: u8) -> Result<(), Error> { Ok(()) }",
                "at most two parameters",
            ),
            (
                "",
                "fn f(ctx: &mut Ctx) { }",
                "must return `Result<R, Error>`",
            ),
            (
                "",
                "fn f(ctx: &mut Ctx) -> Option<u8> { None }",
                "must return `Result<R, Error>`",
            ),
            (
                "",
                "async fn f(ctx: &mut Ctx) -> Result<(), Error> { Ok(()) }",
                "cannot be `async`",
            ),
            (
                "",
                "fn f<T>(ctx: &mut Ctx, t: T) -> Result<(), Error> { Ok(()) }",
                "cannot be generic",
            ),
            ("", "struct NotAFunction;", "goes on a free function"),
        ];
        for (args, item, expected) in cases {
            let err = expand_str(args, item).expect_err(args);
            assert!(err.contains(expected), "`{args}` / `{item}`: {err}");
        }
    }
}
