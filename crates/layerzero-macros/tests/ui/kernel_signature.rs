// A kernel must exist and take the argument struct of its operation's family.
use layerzero::static_dispatch;
use layerzero::types::{AttentionArgs, KernelResult, NormArgs};

fn flash_attention_v2(_args: &mut AttentionArgs<'_>) -> KernelResult {
    Ok(())
}

fn rms_norm_warp(_args: &mut NormArgs<'_>) -> KernelResult {
    Ok(())
}

#[static_dispatch(
    // An attention kernel given to a norm operation.
    "rms_norm" => flash_attention_v2,
    // A path that names nothing.
    "layer_norm" => layer_norm_warp,
    // A typed kernel cannot be the default, which takes any operation's arguments.
    default => rms_norm_warp,
)]
struct Router;

fn main() {}
