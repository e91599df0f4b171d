// Operation names are checked against LayerZero's operations at compile time.
use layerzero::static_dispatch;
use layerzero::types::{AttentionArgs, KernelResult};

fn flash_attention_v2(_args: &mut AttentionArgs<'_>) -> KernelResult {
    Ok(())
}

#[static_dispatch(
    // A typo: the nearest known name is suggested.
    "attention.casual" => flash_attention_v2,
    // Nothing close: the known names are listed.
    "moe.router" => flash_attention_v2,
)]
struct Router;

fn main() {}
