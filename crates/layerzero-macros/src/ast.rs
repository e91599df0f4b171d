//! Stage one: the attribute's tokens parsed into a small syntax tree, as written.
//!
//! Nothing here knows which operations exist; [`crate::valid`] checks that.

use proc_macro2::Ident;
use syn::parse::{Parse, ParseStream};
use syn::{ExprPath, LitStr, Path, Token};

mod kw {
    syn::custom_keyword!(exhaustive);
}

/// The attribute's arguments, in the order written.
pub(crate) struct RouterArgs {
    pub(crate) entries: Vec<Entry>,
}

/// One comma-separated argument.
pub(crate) enum Entry {
    /// `"attention.causal" => flash_attention_v2`
    Route { operation: LitStr, kernel: ExprPath },
    /// `default => forward_to_dynamic`
    Default { keyword: Token![default], kernel: ExprPath },
    /// `crate = ::layerzero`
    Crate { keyword: Token![crate], path: Path },
    /// `exhaustive`
    Exhaustive { keyword: Ident },
}

impl Parse for RouterArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut entries = Vec::new();
        while !input.is_empty() {
            entries.push(input.parse()?);
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(RouterArgs { entries })
    }
}

impl Parse for Entry {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.peek(LitStr) {
            let operation = input.parse()?;
            input.parse::<Token![=>]>()?;
            let kernel = input.parse()?;
            Ok(Entry::Route { operation, kernel })
        } else if input.peek(Token![default]) {
            let keyword = input.parse()?;
            input.parse::<Token![=>]>()?;
            let kernel = input.parse()?;
            Ok(Entry::Default { keyword, kernel })
        } else if input.peek(Token![crate]) {
            let keyword = input.parse()?;
            input.parse::<Token![=]>()?;
            let path = Path::parse_mod_style(input)?;
            Ok(Entry::Crate { keyword, path })
        } else if input.peek(kw::exhaustive) {
            let keyword: kw::exhaustive = input.parse()?;
            Ok(Entry::Exhaustive { keyword: Ident::new("exhaustive", keyword.span) })
        } else if input.peek(syn::Ident) && input.peek2(Token![=>]) {
            // `rms_norm => kernel`: the most likely slip, so say exactly what to write.
            let name: Ident = input.parse()?;
            Err(syn::Error::new(name.span(), format!("operation names are strings: write `\"{name}\" => ...`")))
        } else {
            Err(input.error("expected `\"operation\" => kernel`, `default => kernel`, `crate = path` or `exhaustive`"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn parse(tokens: proc_macro2::TokenStream) -> syn::Result<RouterArgs> {
        syn::parse2(tokens)
    }

    #[test]
    fn every_kind_of_entry_parses() {
        let args = parse(quote! {
            "attention.causal" => kernels::flash_attention_v2,
            "rms_norm" => rms_norm_warp::<f32>,
            default => forward,
            crate = ::layerzero,
            exhaustive,
        })
        .unwrap();
        let kinds: Vec<&str> = args
            .entries
            .iter()
            .map(|entry| match entry {
                Entry::Route { .. } => "route",
                Entry::Default { .. } => "default",
                Entry::Crate { .. } => "crate",
                Entry::Exhaustive { .. } => "exhaustive",
            })
            .collect();
        assert_eq!(kinds, ["route", "route", "default", "crate", "exhaustive"]);
    }

    #[test]
    fn an_empty_attribute_has_no_entries() {
        assert!(parse(quote! {}).unwrap().entries.is_empty());
    }

    #[test]
    fn a_bare_operation_name_is_told_to_be_a_string() {
        let err = parse(quote! { rms_norm => rms_norm_warp }).err().unwrap();
        assert_eq!(err.to_string(), "operation names are strings: write `\"rms_norm\" => ...`");
    }

    #[test]
    fn an_unknown_argument_lists_what_is_accepted() {
        let err = parse(quote! { defualt = x }).err().unwrap();
        assert_eq!(
            err.to_string(),
            "expected `\"operation\" => kernel`, `default => kernel`, `crate = path` or `exhaustive`"
        );
    }

    #[test]
    fn a_missing_comma_is_a_parse_error() {
        assert!(parse(quote! { "rope" => a "swiglu" => b }).is_err());
    }
}
