//! The selection engine: constraint filter, policy, scoring, cache, explain.
//!
//! Not built yet: this crate is an empty placeholder in the workspace layout.
