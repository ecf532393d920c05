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
            pub async fn find(&self, id: u64, #[key_ignore] trace: &str) -> Option<Row> {
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
    assert!(out.contains("my_cache :: __private"));
    assert!(!out.contains("cachemacro_runtime"), "{out}");
}
