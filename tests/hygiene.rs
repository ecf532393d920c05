//! The expansion names everything by absolute path: a user who shadows prelude names, or
//! renames the runtime crate, cannot break it. Denies warnings: the expansion must not make
//! a user's `-D warnings` build fail.
#![deny(warnings)]
#![allow(dead_code, non_camel_case_types, clippy::all)]

struct Result;
struct Ok;
struct Err;
struct Option;
struct Some;
struct None;
struct Vec;
struct String;
struct Arc;
struct Box;
struct Duration;
struct Future;
struct KeyBuilder;
struct Policy;
struct Site;
fn drop() {}
mod core {}
mod std {}

/// The runtime under another name, as with `cmr = { package = "cachemacro-runtime" }`.
mod cmr {
    pub use ::cachemacro_runtime::*;
}

#[::cachemacro_runtime::cached(ttl = 5, key = "shadow:<n>", tags = ["t:<n>"], soft_ttl = 1)]
async fn shadowed(n: u64) -> ::core::result::Result<u64, ()> {
    ::core::result::Result::Ok(n)
}

#[::cachemacro_runtime::cached(ttl = 5, key = "opt:<n>", cache_none = true, crate = "cmr")]
async fn renamed(n: u64) -> ::core::option::Option<u64> {
    ::core::option::Option::Some(n)
}

#[::cachemacro_runtime::cached(ttl = 5, returns = result, key = "alias:<n>")]
async fn aliased(n: u64) -> Fetched {
    if n == 0 {
        ::core::result::Result::Err(())
    } else {
        ::core::result::Result::Ok(n)
    }
}

type Fetched = ::core::result::Result<u64, ()>;

/// A one-line body with one expression and no `.await`: once expanded to `{ n }` inside the
/// async block, which rustc's `unused_braces` flags (only on one line, hence `skip`).
#[::cachemacro_runtime::cached(ttl = 5, key = "expr:<n>")]
#[rustfmt::skip]
async fn single_expression(n: u64) -> u64 { n }

#[test]
fn shadowed_names_and_a_renamed_crate_still_expand() {
    let rt = ::tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        assert_eq!(shadowed(1).await, ::core::result::Result::Ok(1));
        assert_eq!(renamed(2).await, ::core::option::Option::Some(2));
        assert!(aliased(0).await.is_err());
        assert!(aliased(0).await.is_err());
        assert_eq!(
            aliased_stats().load_errors,
            2,
            "returns = result: Err not cached"
        );
        shadowed_invalidate(1).await.unwrap();
        renamed_refresh(2).await;
        assert_eq!(renamed_stats().loads, 2);
        assert_eq!(single_expression(3).await, 3);
        assert_eq!(single_expression_refresh(3).await, 3);
    });
}
