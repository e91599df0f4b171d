// `exhaustive` asks the compiler to prove that the router never answers `NoKernel`.
use layerzero::static_dispatch;
use layerzero::types::{AttentionArgs, KernelResult, NormArgs};

fn flash_attention_v2(_args: &mut AttentionArgs<'_>) -> KernelResult {
    Ok(())
}

fn rms_norm_warp(_args: &mut NormArgs<'_>) -> KernelResult {
    Ok(())
}

#[static_dispatch(
    "attention.causal" => flash_attention_v2,
    "rms_norm" => rms_norm_warp,
    exhaustive,
)]
struct Router;

fn main() {}
