//! End-to-end tests of LayerZero live in `tests/` beside this file; this library is empty.
