// Operation names are strings, as in configs: `"rms_norm"`, not `rms_norm`.
use layerzero::static_dispatch;
use layerzero::types::{KernelResult, NormArgs};

fn rms_norm_warp(_args: &mut NormArgs<'_>) -> KernelResult {
    Ok(())
}

#[static_dispatch(rms_norm => rms_norm_warp)]
struct Router;

fn main() {}
