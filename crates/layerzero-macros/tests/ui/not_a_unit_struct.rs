// A static router is a unit struct: it has no state and no type parameters.
use layerzero::static_dispatch;
use layerzero::types::{KernelResult, NormArgs};

fn rms_norm_warp(_args: &mut NormArgs<'_>) -> KernelResult {
    Ok(())
}

#[static_dispatch("rms_norm" => rms_norm_warp)]
struct WithState {
    calls: u64,
}

#[static_dispatch("rms_norm" => rms_norm_warp)]
struct Generic<T>(T);

#[static_dispatch("rms_norm" => rms_norm_warp)]
/// Documented, but an enum.
enum NotAStruct {
    Router,
}

fn main() {}
