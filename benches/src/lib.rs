//! Benchmarks of LayerZero live in `benches/` beside this file; this library is empty.
