// A static router calls one kernel per operation; fallbacks belong to the dispatcher.
use layerzero::static_dispatch;
use layerzero::types::{KernelResult, NormArgs};

fn rms_norm_warp(_args: &mut NormArgs<'_>) -> KernelResult {
    Ok(())
}

fn rms_norm_block(_args: &mut NormArgs<'_>) -> KernelResult {
    Ok(())
}

#[static_dispatch(
    "rms_norm" => rms_norm_warp,
    "rms_norm" => rms_norm_block,
)]
struct Router;

fn main() {}
