//! Stage three: a checked [`Router`] turned into Rust.
//!
//! The generated code names every type through the facade path (`::layerzero::types::..`
//! unless `crate = ..` says otherwise), so it compiles in any crate that depends on the facade.
//! Local names (`args`, `operation`, `kernel`) carry mixed-site hygiene: a kernel path in the
//! attribute resolves in the user's scope and can never be captured by them.

use layerzero_types::{ArgsKind, OperationType};
use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use crate::ast::RouterArgs;
use crate::valid::{self, Route, Router, kernel_path_string};

/// What the expansion adds beyond the router itself.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Options {
    /// Emit `<crate>::dispatch::impl_static_dispatcher!(Router);` (the `dispatcher` feature).
    pub(crate) dispatcher_hook: bool,
}

impl Options {
    /// The options this build of the crate was compiled with.
    pub(crate) fn from_features() -> Options {
        Options { dispatcher_hook: cfg!(feature = "dispatcher") }
    }
}

/// `#[static_dispatch(attr)] item`, expanded: the router, or the item unchanged followed by
/// every error found (so that code using the struct does not add errors of its own).
pub(crate) fn static_dispatch(attr: TokenStream, item: TokenStream, options: Options) -> TokenStream {
    let checked = syn::parse2::<RouterArgs>(attr)
        .and_then(|args| Ok((args, syn::parse2::<syn::Item>(item.clone())?)))
        .and_then(|(args, parsed)| valid::validate(args, parsed));
    match checked {
        Ok(router) => expand(&router, options),
        Err(errors) => {
            let errors = errors.to_compile_error();
            quote! { #item #errors }
        }
    }
}

fn expand(router: &Router, options: Options) -> TokenStream {
    let item = &router.item;
    let ident = &item.ident;
    let vis = &item.vis;
    let krate = &router.krate;
    let types = quote!(#krate::types);
    let args = Ident::new("args", Span::mixed_site());
    let operation = Ident::new("operation", Span::mixed_site());
    let kernel = Ident::new("kernel", Span::mixed_site());
    let covers_every_operation = router.routes.len() == OperationType::ALL.len();

    let variant = |op: OperationType| {
        // The derived `Debug` of `OperationType` is the variant's name; the behaviour tests
        // compile a router over every operation, so a change there cannot go unnoticed.
        let name = format_ident!("{}", format!("{op:?}"));
        quote!(#types::OperationType::#name)
    };

    // Introspection: the map as data.
    let table_rows = router.routes.iter().map(|route| {
        let op = variant(route.operation);
        let path = kernel_path_string(&route.kernel);
        quote!((#op, #path))
    });
    let default_name = match &router.default {
        Some(path) => {
            let path = kernel_path_string(path);
            quote!(::core::option::Option::Some(#path))
        }
        None => quote!(::core::option::Option::None),
    };
    let kernel_for_arms = router.routes.iter().map(|route| {
        let op = variant(route.operation);
        let path = kernel_path_string(&route.kernel);
        quote!(#op => ::core::option::Option::Some(#path),)
    });
    let kernel_for_rest = (!covers_every_operation).then(|| quote!(_ => Self::DEFAULT_KERNEL,));

    // The router: one arm per route, the wrong-arguments arm, then what unmapped operations get.
    let dispatch_arms = router.routes.iter().map(|route| {
        let op = variant(route.operation);
        let family = family(route.operation);
        let method = method_name(route.operation);
        quote!((#op, #types::OpArgs::#family(#args)) => self.#method(#args),)
    });
    let mapped: Vec<TokenStream> = router.routes.iter().map(|route| variant(route.operation)).collect();
    let wrong_arguments = (!mapped.is_empty()).then(|| {
        quote! {
            (#(#mapped)|*, #args) => ::core::result::Result::Err(#types::KernelError::WrongArguments {
                expected: #types::ArgsKind::of(#operation),
                actual: #args.kind(),
            }),
        }
    });
    let unmapped = match (&router.default, covers_every_operation) {
        (_, true) => None,
        (Some(default), false) => {
            let coerce = quote_spanned! {default.span()=>
                let #kernel: fn(#types::OperationType, &mut #types::OpArgs<'_>) -> #types::KernelResult = #default;
            };
            Some(quote! {
                (#operation, #args) => {
                    #coerce
                    #kernel(#operation, #args)
                }
            })
        }
        (None, false) => Some(quote! {
            (#operation, _) => ::core::result::Result::Err(#types::KernelError::NoKernel {
                operation: #types::Operation::Known(#operation),
            }),
        }),
    };
    let unmapped_doc = match &router.default {
        Some(path) => format!(" Any other operation runs the default, `{}`.", kernel_path_string(path)),
        None if covers_every_operation => " Every operation is mapped.".to_owned(),
        None => " Any other operation is `Err(KernelError::NoKernel { operation })`.".to_owned(),
    };
    let dispatch_doc = [
        " Runs the kernel mapped to `operation` on `args`: a `match` on the operation and the",
        " arguments' kind, then a direct call; no allocation, string or virtual call.",
        "",
        " Arguments of another kind than the operation takes are",
        " `Err(KernelError::WrongArguments { expected, actual })`.",
        &unmapped_doc,
    ];
    let methods = router.routes.iter().map(|route| per_operation_method(route, vis, &types, &args, &kernel));

    let hook = options.dispatcher_hook.then(|| quote!(#krate::dispatch::impl_static_dispatcher!(#ident);));

    quote! {
        #item

        impl #ident {
            /// The operations this router maps and the path of the kernel each runs, in the
            /// order the attribute lists them.
            #vis const KERNELS: &'static [(#types::OperationType, &'static str)] = &[#(#table_rows),*];

            /// The path of the kernel that runs the operations [`Self::KERNELS`] does not list, if any.
            #vis const DEFAULT_KERNEL: ::core::option::Option<&'static str> = #default_name;

            /// The path of the kernel that runs `operation`: its mapped one, else the default.
            #vis const fn kernel_for(#operation: #types::OperationType) -> ::core::option::Option<&'static str> {
                match #operation {
                    #(#kernel_for_arms)*
                    #kernel_for_rest
                }
            }

            #(#[doc = #dispatch_doc])*
            #[inline]
            #vis fn dispatch(&self, #operation: #types::OperationType, #args: &mut #types::OpArgs<'_>) -> #types::KernelResult {
                match (#operation, #args) {
                    #(#dispatch_arms)*
                    #wrong_arguments
                    #unmapped
                }
            }

            #(#methods)*
        }

        #hook
    }
}

/// `fn attention_causal(&self, args: &mut AttentionArgs<'_>)`: the typed fast path for one
/// operation. The kernel is bound to a function-pointer type spanned on its path, so a kernel
/// of the wrong family is one error, pointing at the path, that names the expected signature.
fn per_operation_method(
    route: &Route,
    vis: &syn::Visibility,
    types: &TokenStream,
    args: &Ident,
    kernel: &Ident,
) -> TokenStream {
    let method = method_name(route.operation);
    let args_type = args_type(route.operation);
    let path = &route.kernel;
    let doc = format!(
        " Runs `{}`, the kernel mapped to `{}`: one direct call, no match.",
        kernel_path_string(path),
        route.operation.as_str()
    );
    let coerce = quote_spanned! {path.span()=>
        let #kernel: fn(&mut #types::#args_type<'_>) -> #types::KernelResult = #path;
    };
    quote! {
        #[doc = #doc]
        #[inline]
        #vis fn #method(&self, #args: &mut #types::#args_type<'_>) -> #types::KernelResult {
            #coerce
            #kernel(#args)
        }
    }
}

/// The fast-path method's name: the operation's dotted name with `_` for `.`.
fn method_name(op: OperationType) -> Ident {
    format_ident!("{}", op.as_str().replace('.', "_"))
}

/// The `OpArgs` variant an operation takes.
fn family(op: OperationType) -> Ident {
    format_ident!("{}", format!("{:?}", ArgsKind::of(op)))
}

/// The argument struct an operation takes.
fn args_type(op: OperationType) -> Ident {
    format_ident!("{}Args", format!("{:?}", ArgsKind::of(op)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The expansion as a person reads it.
    fn pretty(attr: TokenStream, item: TokenStream, options: Options) -> String {
        let expanded = static_dispatch(attr, item, options);
        let file: syn::File = syn::parse2(expanded).unwrap();
        prettyplease::unparse(&file)
    }

    #[test]
    fn a_production_router() {
        let expanded = pretty(
            quote! {
                "attention.causal" => kernels::flash_attention_v2,
                "attention.decode" => kernels::decode_split_kv,
                "rms_norm" => rms_norm_warp,
            },
            quote! {
                /// The kernels this deployment runs.
                pub struct ProdRouter;
            },
            Options::default(),
        );
        insta::assert_snapshot!(expanded);
    }

    #[test]
    fn a_default_and_another_crate_path() {
        let expanded = pretty(
            quote! {
                "rope" => rope_neox,
                default => forward_to_dynamic,
                crate = crate::lz,
            },
            quote! { pub(crate) struct EdgeRouter; },
            Options::default(),
        );
        insta::assert_snapshot!(expanded);
    }

    #[test]
    fn an_exhaustive_router_has_no_fallback_arm() {
        let expanded = pretty(
            quote! {
                "attention.causal" => attn, "attention.full" => attn, "attention.cross" => attn,
                "attention.sliding_window" => attn, "attention.decode" => attn, "attention.prefill" => attn,
                "rms_norm" => norm, "layer_norm" => norm, "rope" => rope, "swiglu" => swiglu,
                "matmul" => matmul,
                exhaustive,
            },
            quote! { struct Everything; },
            Options::default(),
        );
        insta::assert_snapshot!(expanded);
    }

    #[test]
    fn the_dispatcher_hook_is_one_macro_call() {
        let expanded = pretty(quote! { "rope" => rope_neox }, quote! { struct R; }, Options { dispatcher_hook: true });
        assert!(expanded.ends_with("::layerzero::dispatch::impl_static_dispatcher!(R);\n"), "{expanded}");
        let without = pretty(quote! { "rope" => rope_neox }, quote! { struct R; }, Options::default());
        assert!(!without.contains("impl_static_dispatcher"));
    }

    #[test]
    fn errors_keep_the_item_so_nothing_else_breaks() {
        let expanded = static_dispatch(quote! { "rms_nrom" => k }, quote! { struct R; }, Options::default());
        let text = expanded.to_string();
        assert!(text.starts_with("struct R ;"), "{text}");
        assert!(text.contains("compile_error"), "{text}");
        assert!(text.contains("did you mean `rms_norm`?"), "{text}");
    }

    #[test]
    fn method_names_follow_the_dotted_names() {
        assert_eq!(method_name(OperationType::AttentionSlidingWindow).to_string(), "attention_sliding_window");
        assert_eq!(method_name(OperationType::NormRms).to_string(), "rms_norm");
        assert_eq!(args_type(OperationType::AttentionDecode).to_string(), "AttentionArgs");
        assert_eq!(family(OperationType::Swiglu).to_string(), "Swiglu");
    }
}
