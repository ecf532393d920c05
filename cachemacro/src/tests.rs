//! Expansion snapshots: the generated code stays short enough to read.

use expect_test::{expect_file, ExpectFile};
use quote::quote;

fn check(attr: proc_macro2::TokenStream, item: proc_macro2::TokenStream, expect: ExpectFile) {
    let out = crate::entry(attr, item);
    let file: syn::File = syn::parse2(out).expect("expansion parses as items");
    expect.assert_eq(&prettyplease::unparse(&file));
}

#[test]
fn free_function() {
    check(
        quote!(
            ttl = 600,
            soft_ttl = 60,
            key = "user:<id>",
            backend = redis,
            stampede = xfetch
        ),
        quote! {
            async fn get_user(id: u64) -> Result<User, DbError> {
                db.fetch_user(id).await
            }
        },
        expect_file!["../tests/expand/free_function.rs"],
    );
}

#[test]
fn method_with_default_key() {
    check(
        quote!(ttl = "5m"),
        quote! {
            pub async fn find(#[key_ignore] &self, id: u64, #[key_ignore] trace: &str) -> Option<Row> {
                self.db.find(id).await
            }
        },
        expect_file!["../tests/expand/method_with_default_key.rs"],
    );
}

#[test]
fn a_renamed_crate_is_the_only_path_to_the_runtime() {
    let out = crate::entry(
        quote!(ttl = 5, crate = "my_cache"),
        quote!(
            async fn f(n: u64) -> u64 {
                n
            }
        ),
    )
    .to_string();
    assert!(out.contains("my_cache :: __private_v0_1_0"));
    assert!(!out.contains("cachemacro_runtime"), "{out}");
}

#[test]
fn key_ignore_is_stripped_from_the_receiver_on_success_and_on_error() {
    let method = quote! {
        async fn find(#[key_ignore] &self, #[key_ignore] trace: &str, id: u64) -> u64 {
            id
        }
    };
    let ok = crate::entry(quote!(ttl = 5, key = "f:<id>"), method.clone()).to_string();
    assert!(!ok.contains("compile_error"), "{ok}");
    assert!(!ok.contains("key_ignore"), "{ok}");
    // `ttl` missing: the function is emitted as written, minus `#[key_ignore]`.
    let err = crate::entry(quote!(key = "f:<id>"), method).to_string();
    assert!(err.contains("compile_error"), "{err}");
    assert!(!err.contains("key_ignore"), "{err}");
}

#[test]
fn the_body_is_spliced_into_the_async_block() {
    let out = crate::entry(
        quote!(ttl = 5, key = "g:<id>"),
        quote!(
            async fn g(id: u64) -> u64 {
                id
            }
        ),
    );
    let file: syn::File = syn::parse2(out).unwrap();
    let text = prettyplease::unparse(&file);
    // `{ id }` nested as the async block's tail is rustc's `unused_braces`.
    assert!(!text.contains("{ id }"), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.trim() == "id").count(),
        3,
        "main, refresh and many: {text}"
    );
}

#[test]
fn receiver_errors_name_the_receiver_as_written() {
    let errors = |attr, item| crate::entry(attr, item).to_string();
    let out = errors(
        quote!(ttl = 5, key = "k:<id>"),
        quote!(
            async fn f<'a>(&'a mut self, id: u64) -> u64 {
                id
            }
        ),
    );
    assert!(
        out.contains("the receiver `&'a mut self` is not part of the cache key"),
        "{out}"
    );
    assert!(out.contains("write `#[key_ignore] &'a mut self`"), "{out}");
    let out = errors(
        quote!(ttl = 5),
        quote!(
            async fn f(self: ::std::sync::Arc<Self>, #[key_ignore] t: u8, id: u64) -> u64 {
                id
            }
        ),
    );
    assert!(
        out.contains(
            "the receiver `self: ::std::sync::Arc<Self>` is not part of the default cache key"
        ),
        "{out}"
    );
    assert!(out.contains(r#"key = \"f:<self.tenant>:<id>\""#), "{out}");
    // A typo for `self` is one error, not also "the receiver is not part of the key".
    let out = errors(
        quote!(ttl = 5, key = "k:<slf.tenant>:<id>"),
        quote!(
            async fn f(&self, id: u64) -> u64 {
                id
            }
        ),
    );
    assert!(out.contains("did you mean `<self.tenant>`?"), "{out}");
    assert_eq!(out.matches("compile_error").count(), 1, "{out}");
}

/// Whether the expansion keys L1 by the packed integers (it then reads keys back).
fn packs(attr: proc_macro2::TokenStream, item: proc_macro2::TokenStream) -> bool {
    let out = crate::entry(attr, item).to_string();
    out.contains("KeyParse")
}

#[test]
fn only_keys_of_integer_parameters_that_read_back_exactly_are_packed() {
    let f = |sig: proc_macro2::TokenStream| quote!(async fn f #sig -> u64 { 0 });
    assert!(packs(quote!(ttl = 5, key = "u:<id>"), f(quote!((id: u64)))));
    assert!(
        packs(quote!(ttl = 5), f(quote!((a: u64, b: i64)))),
        "default key"
    );
    assert!(
        !packs(
            quote!(ttl = 5, key = "x<a>y<b>"),
            f(quote!((a: i8, b: u128)))
        ),
        "136 bits"
    );
    assert!(
        packs(quote!(ttl = 5, key = "c"), f(quote!(()))),
        "no placeholder"
    );
    assert!(packs(quote!(ttl = 5, key = "<a>"), f(quote!((mut a: u32)))));
    assert!(
        !packs(quote!(ttl = 5, key = "<a><b>"), f(quote!((a: u8, b: u8)))),
        "adjacent"
    );
    assert!(
        !packs(quote!(ttl = 5, key = "v<a>1"), f(quote!((a: u8)))),
        "a digit follows"
    );
    assert!(!packs(
        quote!(ttl = 5, key = "u:<a>"),
        f(quote!((a: String)))
    ));
    assert!(!packs(quote!(ttl = 5, key = "u:<a>"), f(quote!((a: &u64)))));
    assert!(!packs(
        quote!(ttl = 5, key = "u:<a>"),
        f(quote!((a: std::primitive::u64)))
    ));
    assert!(!packs(
        quote!(ttl = 5, key = "u:<a.0>"),
        f(quote!((a: (u64,))))
    ));
    assert!(
        !packs(quote!(ttl = 5), f(quote!((a: u64, b: u64, c: u64)))),
        "192 bits"
    );
    assert!(
        !packs(
            quote!(ttl = 5, key = "u:<a>", refresh_every = 60),
            f(quote!((a: u64)))
        ),
        "refresh_every schedules rendered keys"
    );
}
