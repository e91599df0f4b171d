// Every entry kind at once: routes with module and generic paths, a default, the crate path.
use layerzero::static_dispatch;
use layerzero::types::{AttentionArgs, KernelResult, NormArgs, OpArgs, OperationType};

mod kernels {
    use super::*;

    pub fn flash_attention_v2(_args: &mut AttentionArgs<'_>) -> KernelResult {
        Ok(())
    }

    pub fn norm<const ROWS_PER_BLOCK: usize>(_args: &mut NormArgs<'_>) -> KernelResult {
        Ok(())
    }
}

fn forward_to_dynamic(_op: OperationType, _args: &mut OpArgs<'_>) -> KernelResult {
    Ok(())
}

#[static_dispatch(
    "attention.causal" => kernels::flash_attention_v2,
    "attention.prefill" => kernels::flash_attention_v2,
    "rms_norm" => kernels::norm::<1>,
    "layer_norm" => kernels::norm::<4>,
    default => forward_to_dynamic,
    exhaustive,
    crate = ::layerzero,
)]
/// A router with every kind of entry.
pub struct ProdRouter;

fn main() {
    assert_eq!(ProdRouter::KERNELS.len(), 4);
    assert_eq!(ProdRouter::kernel_for(OperationType::Rope), Some("forward_to_dynamic"));
    let _fast_path: fn(&ProdRouter, &mut NormArgs<'_>) -> KernelResult = ProdRouter::layer_norm;
}
