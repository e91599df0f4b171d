//! Compile-time errors of `#[static_dispatch]`, one file per kind, each `.stderr` the message a
//! user sees; and one router that must compile.
//!
//! Regenerate after an intended change with `TRYBUILD=overwrite cargo test -p layerzero-macros
//! --test ui`, then read every changed `.stderr` before committing it.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/router_compiles.rs");
    cases.compile_fail("tests/ui/unknown_operation.rs");
    cases.compile_fail("tests/ui/duplicate_operation.rs");
    cases.compile_fail("tests/ui/kernel_signature.rs");
    cases.compile_fail("tests/ui/missing_default.rs");
    cases.compile_fail("tests/ui/not_a_unit_struct.rs");
    cases.compile_fail("tests/ui/unquoted_operation.rs");
}
