//! Declares the `loom` cfg, under which the crate's atomics and locks come from loom (see
//! `src/sync.rs` and the README's model-checking command).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(loom)");
}
