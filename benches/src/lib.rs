//! Benchmarks of LayerZero live in `benches/` beside this file; this library holds what
//! several of them share: [`stats`], the statistics their summaries print.

pub mod stats;
