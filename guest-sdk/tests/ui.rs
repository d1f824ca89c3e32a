//! Compile-time contract of `#[command]` and `plugin!` (trybuild).
//!
//! Misuse must fail the build with a message that says what to fix; the
//! `.stderr` files next to each case are the exact messages. Regenerate them
//! after an intended wording change with `TRYBUILD=overwrite cargo test -p relay-guest --test ui`.

#[test]
fn macros_accept_good_plugins_and_reject_misuse_with_clear_errors() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
