//! `#[static_dispatch]`: a compile-time kernel map turned into a match-based router.
//!
//! This is seed 001's STATIC mode: the map from operations to kernels is fixed when the
//! program is compiled, so a dispatch is a `match` on the operation and the arguments' kind
//! followed by a direct call of the kernel function, which the compiler can inline. There is
//! no registry, no lookup, no allocation, no string and no virtual call on the call path. It
//! is not a selector: a static router never looks at the call's context; for that, use the
//! selection engine.
//!
//! Use it through the facade, `layerzero::static_dispatch`:
//!
//! ```
//! use layerzero::static_dispatch;
//! use layerzero::types::{AttentionArgs, KernelResult, NormArgs, OperationType};
//!
//! fn flash_attention_v2(_args: &mut AttentionArgs<'_>) -> KernelResult { Ok(()) }
//! fn decode_split_kv(_args: &mut AttentionArgs<'_>) -> KernelResult { Ok(()) }
//! fn rms_norm_warp(_args: &mut NormArgs<'_>) -> KernelResult { Ok(()) }
//!
//! #[static_dispatch(
//!     "attention.causal" => flash_attention_v2,
//!     "attention.decode" => decode_split_kv,
//!     "rms_norm" => rms_norm_warp,
//! )]
//! pub struct ProdRouter;
//!
//! assert_eq!(ProdRouter::kernel_for(OperationType::NormRms), Some("rms_norm_warp"));
//! assert_eq!(ProdRouter::KERNELS.len(), 3);
//! ```
//!
//! The behaviour tests (`tests/router.rs`) call such routers with real argument structs, and
//! the facade's docs hold the same example.
//!
//! # The attribute
//!
//! It goes on a unit struct without generics and takes, comma-separated, in any order:
//!
//! | entry | meaning |
//! |---|---|
//! | `"attention.causal" => path` | the operation (its dotted name, checked at compile time) runs the kernel at `path`, a `fn(&mut AttentionArgs<'_>) -> KernelResult` (the argument struct is the one `ArgsKind::of` names for the operation) |
//! | `default => path` | operations the map does not name run `path`, a `fn(OperationType, &mut OpArgs<'_>) -> KernelResult` (for example one that forwards to a dynamic dispatcher) |
//! | `exhaustive` | every operation must be mapped, or a `default` given: the router can then never answer `KernelError::NoKernel` |
//! | `crate = path` | the facade the generated code names its types through; `::layerzero` unless given |
//!
//! # What it generates
//!
//! On the struct, with the struct's visibility:
//!
//! - `fn dispatch(&self, operation: OperationType, args: &mut OpArgs<'_>) -> KernelResult`:
//!   the router. Arguments of a kind other than the operation takes are
//!   `Err(KernelError::WrongArguments { expected, actual })`; an operation the map does not
//!   name runs the default, or is `Err(KernelError::NoKernel { operation })`. Never a panic.
//! - one typed fast path per mapped operation, named after it with `_` for `.`
//!   (`fn attention_causal(&self, args: &mut AttentionArgs<'_>) -> KernelResult`): a direct
//!   call with no match at all. It exists only for mapped operations, so calling it is a
//!   compile-time proof that the operation is routed.
//! - `const KERNELS: &[(OperationType, &str)]` (operation → kernel path, in the attribute's
//!   order), `const DEFAULT_KERNEL: Option<&str>` and `const fn kernel_for(OperationType) ->
//!   Option<&'static str>`, for introspection.
//!
//! `dispatch` and the fast paths are `#[inline]`: a router is typically defined in one crate
//! and called from another, where a non-generic function cannot be inlined without it.
//!
//! # Compile errors
//!
//! Each is reported on the offending token, all of them in one pass: an unknown operation
//! (with the nearest known name, or the list of names), an operation mapped twice, a kernel
//! path that does not resolve or has the wrong signature (rustc's error, on the path, naming
//! the expected `fn` type), `exhaustive` with operations left unmapped and no `default` (the
//! missing ones listed), a `default` that can never run because every operation is mapped,
//! a repeated `default`/`crate`/`exhaustive`, an operation name written without quotes, and an
//! item that is not a unit struct. The UI tests in `tests/ui/` show
//! each message in full.
//!
//! # The dispatcher hook
//!
//! The dispatch crate's `Dispatcher` trait does not exist yet. With this crate's `dispatcher`
//! feature (off by default), the expansion also emits
//! `<crate>::dispatch::impl_static_dispatcher!(ProdRouter);`, so that crate can implement its
//! trait for every router with a `macro_rules!` macro of that name, written against the
//! inherent items above (`dispatch`, `kernel_for`, `KERNELS`, `DEFAULT_KERNEL`), without this
//! crate guessing the trait's shape.

#![forbid(unsafe_code)]

mod ast;
mod expand;
mod valid;

use proc_macro::TokenStream;

/// Turns a unit struct into a static router: see the [crate docs](crate) for the attribute's
/// entries, what it generates and the errors it reports.
///
/// ```
/// use layerzero::static_dispatch;
/// use layerzero::types::{KernelResult, NormArgs, OpArgs, OperationType};
///
/// fn rms_norm_warp(_args: &mut NormArgs<'_>) -> KernelResult { Ok(()) }
/// fn forward(_op: OperationType, _args: &mut OpArgs<'_>) -> KernelResult { Ok(()) }
///
/// #[static_dispatch("rms_norm" => rms_norm_warp, default => forward)]
/// struct EdgeRouter;
///
/// assert_eq!(EdgeRouter::kernel_for(OperationType::Rope), Some("forward"));
/// ```
#[proc_macro_attribute]
pub fn static_dispatch(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::static_dispatch(attr.into(), item.into(), expand::Options::from_features()).into()
}
