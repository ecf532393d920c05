//! The `#[cached]` attribute of [cachemacro]. Depend on `cachemacro-runtime`, which
//! re-exports it; this crate holds no behaviour, only parse → validate → expand.
//!
//! [cachemacro]: https://docs.rs/cachemacro-runtime

mod args;
mod errors;
mod expand;
mod key;
mod model;

use proc_macro::TokenStream;

/// Turns an `async fn` into a cache-aside call.
///
/// ```ignore
/// use cachemacro_runtime::cached;
///
/// #[cached(ttl = 600, soft_ttl = 60, key = "user:<id>", backend = redis, stampede = xfetch)]
/// async fn get_user(id: u64) -> Result<User, DbError> { db.fetch_user(id).await }
/// ```
///
/// Besides the function itself (same signature), it generates `get_user_invalidate(args)`
/// (drop the key from every tier and process), `get_user_refresh(args)` (call the source now
/// and store the result), `get_user_put(args, value)` (store a value: the cache half of
/// write-through) and `get_user_stats()`. In an `impl` block they are methods with the same
/// receiver; `*_stats` is an associated function.
///
/// | option | values | meaning |
/// |---|---|---|
/// | `ttl` (required) | seconds, or `"150ms"`, `"10s"`, `"5m"`, `"1h30m"` | hard expiry |
/// | `soft_ttl` | same, shorter than `ttl` | stale-while-revalidate: after it, callers get the value at once and one refresh replaces it |
/// | `key` | `"user:<id>"`, `"org:<org>:<user.id>"`, `"<self.tenant>:<id>"` | cache key; every parameter, the receiver too, must appear unless `#[key_ignore]` (`#[key_ignore] &self`); no whitespace, at most one `{…}` hash tag |
/// | `backend` | `memory` (default), `redis`, `tiered`, `memcached` (feature `memcached`), or `"name"` | where values live |
/// | `stampede` | `none`, `coalesce` (default), `lock`, `xfetch` | concurrent-miss control |
/// | `beta` | float (default 1.0) | XFetch's β |
/// | `name` | string | name in stats (default `module_path::fn_name`) |
/// | `max_capacity` | integer | in-process entries (default 10 000) |
/// | `jitter` | fraction in [0, 1) | spreads hard expiries by ± that fraction |
/// | `cache_none` / `none_ttl` | bool / duration | negative caching of `Option::None` |
/// | `fail_safe` | duration | serve a value up to this long past expiry when the source fails |
/// | `tags` | `["org:<org_id>"]` | labels for `invalidate_tag` |
/// | `returns` | `value`, `result`, `option` | for type aliases: what the return type is |
/// | `crate` | `"path"` | path of the runtime crate if renamed |
#[proc_macro_attribute]
pub fn cached(attr: TokenStream, item: TokenStream) -> TokenStream {
    entry(attr.into(), item.into()).into()
}

/// The whole macro on `proc_macro2` tokens, so it can be tested as an ordinary function.
fn entry(
    attr: proc_macro2::TokenStream,
    item: proc_macro2::TokenStream,
) -> proc_macro2::TokenStream {
    let attr_span = proc_macro2::Span::call_site();
    let mut func: syn::ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => {
            let mut out = item;
            out.extend(
                syn::Error::new(e.span(), "`#[cached]` applies to an `async fn`")
                    .to_compile_error(),
            );
            return out;
        }
    };
    let mut errors = errors::Errors::default();
    let model = match syn::parse2::<args::RawArgs>(attr) {
        Ok(raw) => {
            let opts = args::Options::from_raw(raw, &mut errors);
            // Built even when an option was wrong, to report the function's own mistakes too.
            model::Model::build(opts, func.clone(), attr_span, &mut errors)
        }
        Err(e) => {
            errors.push(e);
            None
        }
    };
    match model {
        Some(m) if errors.is_empty() => expand::expand(&m),
        _ => {
            // Emit the user's function as written (minus our parameter attribute) and the
            // errors, so the IDE keeps working and no follow-on errors appear.
            let _ = model::strip_key_ignore(&mut func, &mut errors::Errors::default());
            let mut out = quote::ToTokens::into_token_stream(func);
            out.extend(errors.into_compile_errors());
            out
        }
    }
}

#[cfg(test)]
mod tests;
