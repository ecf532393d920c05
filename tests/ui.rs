//! Compile-fail cases: one mistake per file, with the message a user sees beside it
//! (`tests/ui/*.stderr`). Regenerate with `TRYBUILD=overwrite cargo test --test ui`.

#[test]
fn mistakes_are_spanned_compile_errors() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
