//! `#[static_dispatch]`: a compile-time kernel map turned into a match-based router.
//!
//! Not built yet: this crate is an empty placeholder in the workspace layout.
