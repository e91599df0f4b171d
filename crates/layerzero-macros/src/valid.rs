//! Stage two: the parsed attribute checked against LayerZero's operations and turned into a
//! [`Router`], the model the expansion reads.
//!
//! Every problem is reported, not only the first, each on the token that caused it: the
//! operation string, the repeated keyword, the item.

use std::collections::HashMap;

use layerzero_types::{OperationType, nearest_name};
use proc_macro2::Span;
use quote::ToTokens;
use syn::{ExprPath, Fields, Item, ItemStruct, Path};

use crate::ast::{Entry, RouterArgs};

/// A checked router: a unit struct and the kernel each operation runs.
pub(crate) struct Router {
    /// The struct the attribute is on, emitted unchanged.
    pub(crate) item: ItemStruct,
    /// One route per mapped operation, in the order the attribute lists them.
    pub(crate) routes: Vec<Route>,
    /// What runs for the operations no route names.
    pub(crate) default: Option<ExprPath>,
    /// The facade generated code names its types through (`#krate::types::OperationType`).
    pub(crate) krate: Path,
}

/// One operation and its kernel.
pub(crate) struct Route {
    pub(crate) operation: OperationType,
    pub(crate) kernel: ExprPath,
}

/// Collects errors so that a user fixes all of them in one pass.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, span: Span, message: impl std::fmt::Display) {
        let error = syn::Error::new(span, message);
        match &mut self.0 {
            Some(errors) => errors.combine(error),
            None => self.0 = Some(error),
        }
    }
}

/// Checks the attribute's entries and the item it is on.
pub(crate) fn validate(args: RouterArgs, item: Item) -> Result<Router, syn::Error> {
    let mut errors = Errors::default();

    let item = check_item(item, &mut errors);

    let mut routes: Vec<Route> = Vec::new();
    let mut seen: HashMap<OperationType, usize> = HashMap::new();
    let mut default: Option<(Span, ExprPath)> = None;
    let mut krate: Option<Path> = None;
    let mut exhaustive: Option<Span> = None;

    for entry in args.entries {
        match entry {
            Entry::Route { operation: literal, kernel } => {
                let name = literal.value();
                let Some(operation) = OperationType::ALL.into_iter().find(|op| op.as_str() == name) else {
                    errors.push(literal.span(), unknown_operation(&name));
                    continue;
                };
                if let Some(&first) = seen.get(&operation) {
                    let earlier = kernel_path_string(&routes[first].kernel);
                    errors.push(
                        literal.span(),
                        format_args!(
                            "operation `{name}` is already mapped to `{earlier}`; a static router calls one kernel per operation"
                        ),
                    );
                    continue;
                }
                seen.insert(operation, routes.len());
                routes.push(Route { operation, kernel });
            }
            Entry::Default { keyword, kernel } => {
                if default.is_some() {
                    errors.push(keyword.span, "`default` is given twice");
                } else {
                    default = Some((keyword.span, kernel));
                }
            }
            Entry::Crate { keyword, path } => {
                if krate.is_some() {
                    errors.push(keyword.span, "`crate` is given twice");
                } else {
                    krate = Some(path);
                }
            }
            Entry::Exhaustive { keyword } => {
                if exhaustive.is_some() {
                    errors.push(keyword.span(), "`exhaustive` is given twice");
                } else {
                    exhaustive = Some(keyword.span());
                }
            }
        }
    }

    if let Some(span) = exhaustive
        && default.is_none()
    {
        let missing: Vec<String> = OperationType::ALL
            .into_iter()
            .filter(|op| !seen.contains_key(op))
            .map(|op| format!("`{}`", op.as_str()))
            .collect();
        if !missing.is_empty() {
            errors.push(
                span,
                format_args!(
                    "this `exhaustive` router maps no kernel for {}: map each, or add `default => kernel` for the rest",
                    missing.join(", ")
                ),
            );
        }
    }

    if let Some((span, _)) = &default
        && routes.len() == OperationType::ALL.len()
    {
        errors.push(*span, "this `default` never runs: every operation is mapped to a kernel; remove it");
    }

    if routes.is_empty() && default.is_none() && errors.0.is_none() {
        errors.push(
            Span::call_site(),
            "a static router needs at least one `\"operation\" => kernel` entry, or a `default => kernel`",
        );
    }

    match (errors.0, item) {
        (None, Some(item)) => Ok(Router {
            item,
            routes,
            default: default.map(|(_, kernel)| kernel),
            krate: krate.unwrap_or_else(|| syn::parse_quote!(::layerzero)),
        }),
        (Some(errors), _) => Err(errors),
        // `check_item` pushes an error whenever it returns `None`.
        (None, None) => Err(syn::Error::new(Span::call_site(), "#[static_dispatch] goes on a unit struct")),
    }
}

/// The struct, if it is a unit struct without generics; otherwise an error on what is wrong.
fn check_item(item: Item, errors: &mut Errors) -> Option<ItemStruct> {
    let Item::Struct(item) = item else {
        errors.push(
            first_token_span(&item),
            "#[static_dispatch] goes on a unit struct, such as `pub struct ProdRouter;`",
        );
        return None;
    };
    let mut ok = true;
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        errors.push(
            first_token_span(&item.generics),
            "a static router cannot be generic: its kernels are fixed when it is compiled",
        );
        ok = false;
    }
    if !matches!(item.fields, Fields::Unit) {
        errors.push(
            first_token_span(&item.fields),
            format_args!("a static router holds no state: declare it as a unit struct, `struct {};`", item.ident),
        );
        ok = false;
    }
    ok.then_some(item)
}

/// Where an error about `tokens` points: their first token after any attributes (`/// docs`).
fn first_token_span(tokens: &impl ToTokens) -> Span {
    let mut tokens = tokens.to_token_stream().into_iter();
    while let Some(token) = tokens.next() {
        match token {
            proc_macro2::TokenTree::Punct(punct) if punct.as_char() == '#' => {
                tokens.next(); // the attribute's `[...]`
            }
            token => return token.span(),
        }
    }
    Span::call_site()
}

fn unknown_operation(name: &str) -> String {
    let known = OperationType::ALL.map(OperationType::as_str);
    match nearest_name(name, known) {
        Some(near) => format!("unknown operation `{name}` (did you mean `{near}`?)"),
        None => format!("unknown operation `{name}`; the operations are {}", known.join(", ")),
    }
}

/// The kernel's path as a person writes it: `kernels::flash_attention_v2`, `norm::<f32>`.
pub(crate) fn kernel_path_string(path: &ExprPath) -> String {
    let spaced = path.to_token_stream().to_string();
    let mut text = spaced
        .replace(" :: ", "::")
        .replace(" <", "<")
        .replace("< ", "<")
        .replace(" >", ">")
        .replace(" ,", ",")
        .replace(" (", "(")
        .replace("( ", "(")
        .replace(" )", ")");
    if let Some(rest) = text.strip_prefix(":: ") {
        text = format!("::{rest}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn check(attr: proc_macro2::TokenStream, item: proc_macro2::TokenStream) -> Result<Router, Vec<String>> {
        let args: RouterArgs = syn::parse2(attr).unwrap();
        let item: Item = syn::parse2(item).unwrap();
        validate(args, item).map_err(|errors| errors.into_iter().map(|e| e.to_string()).collect())
    }

    fn errors(attr: proc_macro2::TokenStream, item: proc_macro2::TokenStream) -> Vec<String> {
        match check(attr, item) {
            Ok(_) => panic!("expected errors"),
            Err(errors) => errors,
        }
    }

    #[test]
    fn routes_keep_the_attributes_order() {
        let router =
            check(quote! { "rms_norm" => a, "attention.causal" => b, crate = crate::lz }, quote! { pub struct R; })
                .unwrap();
        let ops: Vec<OperationType> = router.routes.iter().map(|r| r.operation).collect();
        assert_eq!(ops, [OperationType::NormRms, OperationType::AttentionCausal]);
        assert_eq!(router.krate.to_token_stream().to_string(), "crate :: lz");
        assert!(router.default.is_none());
    }

    #[test]
    fn the_facade_is_the_default_crate_path() {
        let router = check(quote! { "rope" => k }, quote! { struct R; }).unwrap();
        assert_eq!(router.krate.to_token_stream().to_string(), ":: layerzero");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let found = errors(
            quote! {
                "attention.casual" => a,
                "moe.router" => b,
                "rope" => c,
                "rope" => d,
                default => e,
                default => f,
                crate = x,
                crate = y,
            },
            quote! { struct R<T>(T); },
        );
        assert_eq!(
            found,
            [
                "a static router cannot be generic: its kernels are fixed when it is compiled",
                "a static router holds no state: declare it as a unit struct, `struct R;`",
                "unknown operation `attention.casual` (did you mean `attention.causal`?)",
                "unknown operation `moe.router`; the operations are attention.causal, attention.full, \
                 attention.cross, attention.sliding_window, attention.decode, attention.prefill, rms_norm, \
                 layer_norm, rope, swiglu, matmul",
                "operation `rope` is already mapped to `c`; a static router calls one kernel per operation",
                "`default` is given twice",
                "`crate` is given twice",
            ]
        );
    }

    #[test]
    fn exhaustive_lists_what_is_missing_unless_a_default_covers_it() {
        let all_but_two = quote! {
            "attention.causal" => k, "attention.full" => k, "attention.cross" => k,
            "attention.sliding_window" => k, "attention.decode" => k, "attention.prefill" => k,
            "rms_norm" => k, "rope" => k, "swiglu" => k, exhaustive,
        };
        assert_eq!(
            errors(all_but_two.clone(), quote! { struct R; }),
            ["this `exhaustive` router maps no kernel for `layer_norm`, `matmul`: map each, or add \
                 `default => kernel` for the rest"]
        );
        assert!(check(quote! { #all_but_two default => d }, quote! { struct R; }).is_ok());
        // With every operation mapped, a default could never run (nor be type-checked).
        assert_eq!(
            errors(quote! { #all_but_two "layer_norm" => k, "matmul" => k, default => d }, quote! { struct R; }),
            ["this `default` never runs: every operation is mapped to a kernel; remove it"]
        );
        assert_eq!(
            errors(quote! { "rope" => k, exhaustive, exhaustive }, quote! { struct R; })[0],
            "`exhaustive` is given twice"
        );
    }

    #[test]
    fn a_router_needs_something_to_route() {
        assert_eq!(
            errors(quote! {}, quote! { struct R; }),
            ["a static router needs at least one `\"operation\" => kernel` entry, or a `default => kernel`"]
        );
        assert!(check(quote! { default => forward }, quote! { struct R; }).is_ok());
    }

    #[test]
    fn only_unit_structs_become_routers() {
        assert_eq!(
            errors(quote! { "rope" => k }, quote! { enum R { A } }),
            ["#[static_dispatch] goes on a unit struct, such as `pub struct ProdRouter;`"]
        );
        assert_eq!(
            errors(quote! { "rope" => k }, quote! { struct R { table: u8 } }),
            ["a static router holds no state: declare it as a unit struct, `struct R;`"]
        );
    }

    #[test]
    fn kernel_paths_print_as_written() {
        let cases = [
            (quote! { flash_attention_v2 }, "flash_attention_v2"),
            (quote! { crate::kernels::rms_norm_warp }, "crate::kernels::rms_norm_warp"),
            (quote! { ::kernels::norm::<f32> }, "::kernels::norm::<f32>"),
            (quote! { norm::<Vec<u8>, 4> }, "norm::<Vec<u8>, 4>"),
            (quote! { <Warp as Norm>::run }, "<Warp as Norm>::run"),
        ];
        for (tokens, expected) in cases {
            let path: ExprPath = syn::parse2(tokens).unwrap();
            assert_eq!(kernel_path_string(&path), expected);
        }
    }
}
