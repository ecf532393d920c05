//! Code generation. Everything generated is a call into the runtime's private module
//! (`::cachemacro_runtime::__private_v0_1_0`, named for the version both crates share);
//! the user's body is kept as tokens inside `async move { … }`.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{FnArg, Ident, LitByteStr, LitStr, Type};

use crate::args::{Backend, Returns, Stampede};
use crate::key::Part;
use crate::model::Model;

/// `tokens` with every span set to `span`.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut t| {
            if let proc_macro2::TokenTree::Group(g) = &t {
                let mut ng = proc_macro2::Group::new(g.delimiter(), respan(g.stream(), span));
                ng.set_span(span);
                t = ng.into();
            }
            t.set_span(span);
            t
        })
        .collect()
}

fn nanos(p: &TokenStream, n: u128) -> TokenStream {
    let n = n as u64;
    if n % 1_000_000_000 == 0 {
        let s = n / 1_000_000_000;
        quote!(#p::Duration::from_secs(#s))
    } else if n % 1_000_000 == 0 {
        let ms = n / 1_000_000;
        quote!(#p::Duration::from_millis(#ms))
    } else {
        quote!(#p::Duration::from_nanos(#n))
    }
}

/// `&id`, `&user.id`, `&self.field`, spanned on the template. In a tag rendered from the
/// returned value, `result` (and `result[]`, each element) is a reference to it.
fn place(path: &[String], span: Span) -> TokenStream {
    let root = if path[0] == "self" {
        quote_spanned!(span=> self)
    } else if path[0] == "result[]" || path[0] == RESULT_ROOT {
        quote_spanned!(span=> (*result))
    } else {
        Ident::new(&path[0], span).into_token_stream()
    };
    let fields = path[1..].iter().map(|seg| {
        if let Ok(i) = seg.parse::<u32>() {
            let idx = syn::Index { index: i, span };
            quote_spanned!(span=> .#idx)
        } else {
            let f = Ident::new(seg, span);
            quote_spanned!(span=> .#f)
        }
    });
    quote_spanned!(span=> &#root #(#fields)*)
}

/// Renders `parts`, `prefix` (a `&'static str` expression) first. `escape` is the key's
/// escape set; `None` renders a tag (values as written, finished as a `String`).
fn render(
    p: &TokenStream,
    parts: &[Part],
    escape: Option<&[u8]>,
    span: Span,
    prefix: Option<TokenStream>,
) -> Rendering {
    let cap: usize = parts
        .iter()
        .map(|p| match p {
            Part::Lit(s) => s.len(),
            Part::Place(_) => 8,
        })
        .sum::<usize>()
        + if prefix.is_some() { 48 } else { 0 };
    let prefix = prefix.map(|e| quote!(__k.lit(#e);));
    let pushes = parts.iter().map(|part| match part {
        Part::Lit(s) => {
            let s = LitStr::new(s, span);
            quote!(__k.lit(#s);)
        }
        Part::Place(path) => {
            let v = place(path, span);
            quote_spanned!(span=> {
                let __v = #v;
                (&#p::Arg(__v)).kind().render(&mut __k, __v);
            })
        }
    });
    let (builder, finish) = match escape {
        Some(escape) => {
            let esc = LitByteStr::new(escape, span);
            let set = quote!({ const SET: u128 = #p::escape_set(#esc); SET });
            (quote!(#p::KeyBuilder::new(#cap, #set)), quote!(finish))
        }
        None => (quote!(#p::KeyBuilder::tag(#cap)), quote!(finish_string)),
    };
    let stmts = quote! {
        #[allow(unused_imports)]
        use #p::{DirectKind as _, DisplayKind as _};
        let mut __k = #builder;
        #prefix
        #(#pushes)*
    };
    Rendering { stmts, finish }
}

/// Statements that render a key or tag into `__k` (a `KeyBuilder`), and the builder method
/// that finishes it.
struct Rendering {
    stmts: TokenStream,
    finish: TokenStream,
}

impl Rendering {
    /// A block evaluating to the finished key (or tag).
    fn expr(&self) -> TokenStream {
        let Rendering { stmts, finish } = self;
        quote!({ #stmts __k.#finish() })
    }
}

/// The bits of a primitive integer type written as its bare name, or `None`.
fn int_width(ty: &Type) -> Option<u32> {
    let Type::Path(tp) = ty else { return None };
    if tp.qself.is_some() || tp.path.leading_colon.is_some() || tp.path.segments.len() != 1 {
        return None;
    }
    let seg = &tp.path.segments[0];
    if !seg.arguments.is_none() {
        return None;
    }
    Some(match seg.ident.to_string().as_str() {
        "u8" | "i8" => 8,
        "u16" | "i16" => 16,
        "u32" | "i32" => 32,
        "u64" | "i64" | "usize" | "isize" => 64,
        "u128" | "i128" => 128,
        _ => return None,
    })
}

/// A key made of integer parameters only can be looked up in L1 without being rendered:
/// the integers packed into 128 bits ([`Packing`]). That needs every placeholder to be a
/// plain parameter of a primitive integer type, 128 bits in all (a parameter named twice
/// counts once), and each followed by the key's end or by text that does not start with a
/// digit (so the rendered key reads back exactly). `None` for any other key, which L1 keys
/// by its rendered bytes. The widths by name only decide whether to pack; the packing itself
/// uses the types' own widths (`KeyInt::BITS`), so an alias named like a primitive cannot
/// make two argument lists share a key.
fn packable(m: &Model, parts: &[Part]) -> Option<Vec<(Ident, Type)>> {
    let mut types = std::collections::HashMap::new();
    for arg in &m.func.sig.inputs {
        if let FnArg::Typed(pt) = arg {
            if let syn::Pat::Ident(pi) = &*pt.pat {
                if pi.by_ref.is_none() && pi.subpat.is_none() {
                    types.insert(pi.ident.to_string(), (pi.ident.clone(), (*pt.ty).clone()));
                }
            }
        }
    }
    let mut ints: Vec<(Ident, Type)> = Vec::new();
    let mut bits = 0;
    for (i, part) in parts.iter().enumerate() {
        let Part::Place(path) = part else { continue };
        if path.len() != 1 {
            return None;
        }
        let (name, ty) = types.get(&path[0])?;
        let width = int_width(ty)?;
        match parts.get(i + 1) {
            Some(Part::Place(_)) => return None,
            Some(Part::Lit(s)) if s.starts_with(|c: char| c.is_ascii_digit()) => return None,
            _ => {}
        }
        if ints.iter().all(|(n, _)| n != name) {
            bits += width;
            ints.push((name.clone(), ty.clone()));
        }
    }
    (bits <= 128).then_some(ints)
}

/// The L1 key of a packed function: the expression that packs the call's integers, and a
/// function (`__cachemacro_pack`) that turns a rendered key back into it, or says it is
/// none of this function's keys.
struct Packing {
    pack: TokenStream,
    unpack: TokenStream,
}

impl Packing {
    fn new(
        p: &TokenStream,
        parts: &[Part],
        ints: &[(Ident, Type)],
        prefix: Option<TokenStream>,
        escape: &[u8],
    ) -> Self {
        let width = |ty: &Type| quote!(<#ty as #p::KeyInt>::BITS);
        let mut at = quote!(0u32);
        let mut shifted = Vec::new();
        for (name, ty) in ints {
            shifted.push(quote!((#p::KeyInt::bits(#name) << (#at))));
            let w = width(ty);
            at = quote!(#at + #w);
        }
        let pack = quote!({
            const _: () = ::core::assert!(
                #at <= 128,
                "the key's integers are wider than 128 bits: a type alias named like a primitive integer type?"
            );
            #p::pack(0u128 #(| #shifted)*)
        });
        let mut read = Vec::<&Ident>::new();
        let reads: Vec<TokenStream> = parts
            .iter()
            .map(|part| match part {
                Part::Lit(s) => quote!(__cachemacro_p.lit(#s)?;),
                Part::Place(path) => {
                    let (name, ty) = ints
                        .iter()
                        .find(|(n, _)| *n == path[0])
                        .expect("every placeholder is a packed parameter");
                    if read.contains(&name) {
                        // Named again: the same value, or this is none of the keys.
                        quote!(if __cachemacro_p.int::<#ty>()? != #name { return #p::None; })
                    } else {
                        read.push(name);
                        quote!(let #name: #ty = __cachemacro_p.int()?;)
                    }
                }
            })
            .collect();
        let prefix = prefix.map(|e| quote!(__cachemacro_p.lit(#e)?;));
        let esc = LitByteStr::new(escape, Span::call_site());
        let unpack = quote! {
            #[allow(clippy::identity_op)]
            fn __cachemacro_pack(__cachemacro_s: &str) -> #p::Option<[u64; 2]> {
                let mut __cachemacro_p = #p::KeyParse::new(
                    __cachemacro_s,
                    { const SET: u128 = #p::escape_set(#esc); SET },
                );
                #prefix
                #(#reads)*
                __cachemacro_p.end()?;
                #p::Some(#pack)
            }
        };
        Self { pack, unpack }
    }
}

/// The root `render_result_tags` gives `result` placeholders (a name no parameter can have,
/// so a parameter called `result` keeps its meaning in the other templates).
const RESULT_ROOT: &str = "result ";

/// What a default key escapes in its values besides the runtime's fixed set.
const DEFAULT_KEY_ESCAPE: &[u8] = b"%:";

pub fn expand(m: &Model) -> TokenStream {
    let rt = &m.krate;
    let private = format_ident!("__private_v{}", env!("CARGO_PKG_VERSION").replace('.', "_"));
    let p = quote!(#rt::#private);
    let func = &m.func;
    let sig = &func.sig;
    let ident = &sig.ident;
    let vis = &func.vis;
    let ret = &m.ret;
    let ret_span = ret.span();
    let kind = match m.returns {
        Returns::Value => quote!(#p::ValueKind),
        Returns::Result => quote!(#p::ResultKind),
        Returns::Option => quote!(#p::OptionKind),
    };
    let fn_name = ident.to_string();
    let id_span = ident.span();

    // ---- the policy, as a const expression --------------------------------------------
    let ttl = nanos(&p, m.ttl);
    let site = quote_spanned!(id_span=> #p::Site::new(
        ::core::module_path!(), #fn_name, ::core::file!(), ::core::line!(), ::core::column!()
    ));
    let mut with = Vec::new();
    if let Some(n) = &m.name {
        with.push(quote!(.with_name(#n)));
    }
    if let Some(s) = m.soft_ttl {
        let d = nanos(&p, s);
        with.push(quote!(.with_soft_ttl(#d)));
    }
    if m.stampede != Stampede::Coalesce {
        let mode = match m.stampede {
            Stampede::None => quote!(None),
            Stampede::Coalesce => quote!(Coalesce),
            Stampede::Lock => quote!(Lock),
            Stampede::Xfetch => quote!(Xfetch),
        };
        with.push(quote!(.with_stampede(#p::Stampede::#mode)));
    }
    if let Some(b) = m.beta {
        with.push(quote!(.with_beta(#b)));
    }
    if let Some(c) = m.max_capacity {
        with.push(quote!(.with_max_capacity(#c)));
    }
    if let Some(j) = m.jitter {
        with.push(quote!(.with_jitter(#j)));
    }
    if m.cache_none {
        let ttl = match m.none_ttl {
            Some(n) => {
                let d = nanos(&p, n);
                quote!(#p::Some(#d))
            }
            None => quote!(#p::None),
        };
        with.push(quote!(.with_cache_none(#ttl)));
    }
    if let Some(f) = m.fail_safe {
        let d = nanos(&p, f);
        with.push(quote!(.with_fail_safe(#d)));
    }
    if let Some(t) = m.timeout {
        let d = nanos(&p, t);
        with.push(quote!(.with_timeout(#d)));
    }
    if let Some(t) = m.hard_timeout {
        let d = nanos(&p, t);
        with.push(quote!(.with_hard_timeout(#d)));
    }
    if let Some(t) = m.outage_ttl {
        let d = nanos(&p, t);
        with.push(quote!(.with_outage_ttl(#d)));
    }
    if let Some(n) = m.max_refreshes {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        with.push(quote!(.with_max_refreshes(#n)));
    }
    if let Some(every) = m.refresh_every {
        let d = nanos(&p, every);
        let idle = match m.refresh_idle {
            Some(i) => {
                let i = nanos(&p, i);
                quote!(#p::Some(#i))
            }
            None => quote!(#p::None),
        };
        with.push(quote!(.with_refresh_ahead(#d, #idle)));
    }
    if let Some(n) = m.hot_keys {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        with.push(quote!(.with_hot_keys(#n)));
    }
    match &m.backend {
        Backend::Memory => {}
        Backend::Redis => with.push(quote!(.with_backend(#p::Backend::Redis))),
        Backend::Tiered => with.push(quote!(.with_backend(#p::Backend::Tiered))),
        Backend::Memcached => with.push(quote!(.with_backend(#p::Backend::Memcached))),
        Backend::Named(n) => with.push(quote!(.with_backend(#p::Backend::Named(#n)))),
    }
    if m.backend.is_remote() {
        // What the runtime compares when a second function registers on the same backend:
        // two templates that can render the same key must not share entries silently. The
        // escape set says what a value can never hold raw.
        let (template, escape) = match &m.key {
            Some(t) => {
                let text = t.text();
                (quote!(#text), t.escape_set())
            }
            None => {
                let rest = m.key_parts_text();
                let text = quote!(::core::concat!(::core::module_path!(), "::", #fn_name, #rest));
                (text, DEFAULT_KEY_ESCAPE.to_vec())
            }
        };
        let escape = LitByteStr::new(&escape, Span::call_site());
        with.push(quote!(.with_key_template(#template, #escape)));
    }
    // Spanned on the return type, so an unusable value type is reported there.
    let pr = respan(p.clone(), ret_span);
    let kind_r = respan(kind.clone(), ret_span);
    let policy = quote!(#p::Policy::new(#site, #ttl) #(#with)*);
    let init = if m.backend.is_remote() {
        // The codec is built where the value type is known; its bounds (serde) are checked
        // here, spanned on the `backend` option.
        let span = m.backend_span;
        let codec = quote_spanned!(span=> #p::codec_of::<<#kind as #p::Kind<#ret>>::Value>());
        quote_spanned!(ret_span=> #pr::EngineCell::remote(#policy, #codec))
    } else {
        quote_spanned!(ret_span=> #pr::EngineCell::new(#policy))
    };
    let cell = quote_spanned! {ret_span=>
        static __CACHEMACRO: #pr::EngineCell<#ret, #kind_r> = #init;
    };

    // ---- key and tags -----------------------------------------------------------------
    let key_rendering = match &m.key {
        Some(t) => render(&p, &t.parts, Some(&t.escape_set()), t.span, None),
        None => {
            let prefix = quote!(::core::concat!(::core::module_path!(), "::", #fn_name));
            render(
                &p,
                &m.key_parts(),
                Some(DEFAULT_KEY_ESCAPE),
                id_span,
                Some(prefix),
            )
        }
    };
    let key = key_rendering.expr();
    // Packed only where a call's first stage is `get` or `get_detached` (`refresh_every`
    // schedules keys by their rendered form at every call).
    let packing = if m.refresh_every.is_none() {
        let parts = m.key_parts();
        packable(m, &parts).map(|ints| {
            let prefix = m
                .key
                .is_none()
                .then(|| quote!(::core::concat!(::core::module_path!(), "::", #fn_name)));
            let escape = m
                .key
                .as_ref()
                .map_or(DEFAULT_KEY_ESCAPE.to_vec(), |t| t.escape_set());
            Packing::new(&p, &parts, &ints, prefix, &escape)
        })
    } else {
        None
    };
    let tags = if m.tags.is_empty() {
        quote!(#p::Vec::new())
    } else {
        let each = m
            .tags
            .iter()
            .map(|t| render(&p, &t.parts, None, t.span, None).expr());
        quote!(#p::Vec::from([#(#each),*]))
    };

    // ---- compile-time checks, in the main function only --------------------------------
    let mut checks = Vec::new();
    if m.cache_none {
        // `cache_none` caches `None`: the cached value (the function's `Option`, or the `Ok`
        // of its `Result`) must be an `Option`.
        checks.push(quote_spanned! {ret_span=>
            #p::cache_none_needs_option::<<#kind_r as #pr::Kind<#ret>>::Value>();
        });
    }
    if m.returns == Returns::Value && m.returns_guessed {
        checks.push(quote_spanned! {ret_span=>
            {
                #[allow(unused_imports)]
                use #p::{ProbeOption as _, ProbePlain as _, ProbeResult as _};
                #p::assert_plain((&#p::KindProbe::<#ret>::new()).check());
            }
        });
    }
    for (i, (span, msg)) in m.warnings.iter().enumerate() {
        // Stable proc macros cannot emit warnings; using a deprecated item can.
        let item = format_ident!("cachemacro_warning_{}", i, span = *span);
        checks.push(quote_spanned! {*span=>
            {
                #[deprecated(note = #msg)]
                #[allow(non_camel_case_types)]
                struct #item;
                let _ = #item;
            }
        });
    }

    // ---- the body, with tracing's "fake return edge" for inference and spans -----------
    // The block's statements are spliced in, not the block: a one-line `{ id }` nested in
    // the async block would be rustc's `unused_braces`.
    let stmts = &func.block.stmts;
    let body = quote! {
        async move {
            #[allow(
                unreachable_code,
                clippy::diverging_sub_expression,
                clippy::empty_loop,
                clippy::let_unit_value,
                clippy::needless_return
            )]
            if false {
                let __cachemacro_fake_return: #ret = loop {};
                return __cachemacro_fake_return;
            }
            #(#stmts)*
        }
    };

    let get = if m.refresh_every.is_some() {
        quote!(get_ahead)
    } else if m.detached {
        quote!(get_detached)
    } else {
        quote!(get)
    };
    // With `refresh_every` the source is built again for each scheduled reload: from
    // clones of the arguments (which must be `Clone`, checked where the option is written).
    let make = match m.refresh_every_span {
        Some(span) => {
            let names: Vec<_> = m.params.iter().filter_map(|p| p.name.clone()).collect();
            let checks = names
                .iter()
                .map(|n| quote_spanned!(span=> #p::clone_arg(&#n)));
            quote! {{
                #(let _ = #checks;)*
                move || {
                    #(let #names = ::core::clone::Clone::clone(&#names);)*
                    (#tags, #body)
                }
            }}
        }
        None => quote!(move || (#tags, #body)),
    };
    let attrs = &func.attrs;
    let cfgs: Vec<_> = attrs.iter().filter(|a| a.path().is_ident("cfg")).collect();
    // Every use of the engine is spanned on the return type: if the type cannot be cached,
    // that is where the (deduplicated) error points.
    // What the engine needs to know of the types, found where they are known (autoref
    // probes): whether errors can be handed to the callers of a failed load, and whether
    // the cached value is an `Option` (its `None` is cached only with `cache_none`).
    // Evaluated once, when the engine is created.
    // With `hard_timeout` and a `Result`, the error type must take a `SourceTimeout`: checked
    // where the option was written.
    let timed_out = match (m.hard_timeout_span, m.returns) {
        (Some(span), Returns::Result) => quote_spanned! {span=>
            .with_timed_out(<<#kind_r as #pr::Kind<#ret>>::Error as #p::TimeoutError>::timed_out)
        },
        _ => quote!(),
    };
    let result_tags = if m.result_tags.is_empty() {
        quote!()
    } else {
        let each = m.result_tags.iter().map(|t| {
            let per_element = t.roots().any(|r| r == "result[]");
            // Rendered with `result` bound to the value (or to each element).
            let parts: Vec<Part> = t
                .parts
                .iter()
                .map(|part| match part {
                    Part::Place(path) if path[0] == "result" => {
                        let mut path = path.clone();
                        path[0] = RESULT_ROOT.to_owned();
                        Part::Place(path)
                    }
                    other => other.clone(),
                })
                .collect();
            let rendering = render(&p, &parts, None, t.span, None);
            let stmts = &rendering.stmts;
            if per_element {
                quote_spanned! {t.span=>
                    for result in ::core::iter::IntoIterator::into_iter(__r) {
                        #stmts
                        __tags.push(__k.finish_string());
                    }
                }
            } else {
                quote_spanned! {t.span=>
                    {
                        let result = __r;
                        #stmts
                        __tags.push(__k.finish_string());
                    }
                }
            }
        });
        quote_spanned! {ret_span=>
            .with_result_tags(|__r: &<#kind_r as #pr::Kind<#ret>>::Value| -> #p::Vec<#p::String> {
                let mut __tags = #p::Vec::new();
                #(#each)*
                __tags
            })
        }
    };
    let with_packer = match &packing {
        Some(Packing { unpack, .. }) => quote!(.with_packer({ #unpack __cachemacro_pack })),
        None => quote!(),
    };
    let hooks = quote_spanned! {ret_span=>
        || {
            #[allow(unused_imports)]
            use #pr::{ProbeNone as _, ProbeSized as _, ProbeSome as _, ProbeUnsized as _, ShareErrors as _};
            #pr::Hooks::new(
                (&#pr::ErrProbe::<<#kind_r as #pr::Kind<#ret>>::Error>::new()).sharing(),
                (&#pr::NoneProbe::<<#kind_r as #pr::Kind<#ret>>::Value>::new()).negative(),
            )
            .with_sizer((&#pr::SizeProbe::<<#kind_r as #pr::Kind<#ret>>::Value>::new()).sizer())
            #result_tags
            #timed_out
            #with_packer
        }
    };
    if let Some(sem) = &m.semantic {
        return semantic_items(
            m,
            sem,
            &SemanticParts {
                p: &p,
                rt,
                policy: &policy,
                kind: &kind_r,
                key: &key,
                tags: &tags,
                body: &body,
                checks: &checks,
                hooks: &hooks,
            },
        );
    }
    let engine = quote_spanned!(ret_span=> __CACHEMACRO.get(#hooks));
    let key_stmts = &key_rendering.stmts;
    let first = match &packing {
        // An L1 hit renders nothing; the key is rendered only past L1.
        Some(Packing { pack, .. }) => {
            let past = format_ident!("{}_past", get.to_string());
            quote!({
                let __cachemacro_e = #engine;
                match __cachemacro_e.first(#p::Probe::Packed(#pack)) {
                    #p::Ok(__cachemacro_v) => #p::Call::Ready(#p::ready(__cachemacro_v)),
                    #p::Err(__cachemacro_past) => {
                        #key_stmts
                        __cachemacro_e.#past(__cachemacro_past, #p::Key::from(__k.finish()), #make)
                    }
                }
            })
        }
        None => quote!({
            #key_stmts
            #engine.#get(__k.rendered(), #make)
        }),
    };
    let main = quote! {
        #(#attrs)*
        #vis #sig {
            #cell
            #(#checks)*
            // The key is rendered on the stack and read there (it does not live in the
            // call's future); tags and the source are built only if the call gets past L1.
            let __cachemacro_call = #first;
            __cachemacro_call.await
        }
    };

    // ---- siblings: same parameters (and receiver) as the cached function ----------------
    let inputs = &sig.inputs;
    let generics = &sig.generics;
    let where_clause = &sig.generics.where_clause;
    let invalidate = format_ident!("{}_invalidate", ident);
    let refresh = format_ident!("{}_refresh", ident);
    let stats = format_ident!("{}_stats", ident);
    let put = format_ident!("{}_put", ident);
    let clear = format_ident!("{}_clear", ident);
    let value_ident = if m
        .params
        .iter()
        .any(|p| p.name.as_ref().is_some_and(|n| n == "value"))
    {
        format_ident!("cached_value")
    } else {
        format_ident!("value")
    };
    let items = inputs.iter();
    let value_ty = quote_spanned!(ret_span=> <#kind_r as #pr::Kind<#ret>>::Value);
    let doc_put = format!(
        "Stores `{value_ident}` as [`{fn_name}`]'s value for these arguments in every tier (a write-through put): other processes drop their L1 copy, loads in flight do not overwrite it. If a tier cannot take it, the key is invalidated instead and the error returned."
    );
    let doc_inv = format!(
        "Removes the cached value of [`{fn_name}`] for these arguments from every tier; a load in flight for it will not write it back."
    );
    let doc_ref = format!(
        "Calls the source of [`{fn_name}`] now and stores its result (a write-through put)."
    );
    let doc_stats = format!("Counters and latency of [`{fn_name}`]'s cache.");
    let doc_clear = format!(
        "Drops every cached value of [`{fn_name}`], for all arguments, from every tier and (tiered) every process's in-process tier, without scanning keys; loads in flight do not write back. If the shared tier cannot be reached, the error is returned and the clear is replayed when it answers."
    );
    let allow = quote!(#[allow(unused_variables, unused_mut, clippy::needless_pass_by_value)]);
    let many = many(
        m,
        &ManyParts {
            p: &p,
            cell: &cell,
            engine: &engine,
            key: &key,
            tags: &tags,
            make: &make,
            get: &get,
            cfgs: &cfgs,
            allow: &allow,
        },
    );
    quote! {
        #main

        #(#cfgs)*
        #[doc = #doc_inv]
        #allow
        #vis async fn #invalidate #generics (#inputs) -> #p::Result<(), #rt::Error> #where_clause {
            #cell
            let __cachemacro_key = #key;
            #engine.invalidate(#p::Key::from(__cachemacro_key)).await
        }

        #(#cfgs)*
        #[doc = #doc_ref]
        #allow
        #vis async fn #refresh #generics (#inputs) -> #ret #where_clause {
            #cell
            let __cachemacro_key = #key;
            let __cachemacro_tags = #tags;
            #engine
                .refresh(#p::Key::from(__cachemacro_key), __cachemacro_tags, #body)
                .await
        }

        #(#cfgs)*
        #[doc = #doc_put]
        #allow
        #vis async fn #put #generics (#(#items,)* #value_ident: #value_ty) -> #p::Result<(), #rt::Error> #where_clause {
            #cell
            let __cachemacro_key = #key;
            let __cachemacro_tags = #tags;
            #engine.put(#p::Key::from(__cachemacro_key), __cachemacro_tags, #value_ident).await
        }

        #(#cfgs)*
        #[doc = #doc_stats]
        #vis fn #stats() -> #rt::Stats {
            #cell
            #engine.stats()
        }

        #(#cfgs)*
        #[doc = #doc_clear]
        #vis async fn #clear() -> #p::Result<(), #rt::Error> {
            #cell
            #engine.clear().await
        }

        #many
    }
}

/// What `<fn>_many` shares with the other generated items.
struct ManyParts<'a> {
    p: &'a TokenStream,
    cell: &'a TokenStream,
    engine: &'a TokenStream,
    key: &'a TokenStream,
    tags: &'a TokenStream,
    make: &'a TokenStream,
    get: &'a TokenStream,
    cfgs: &'a [&'a syn::Attribute],
    allow: &'a TokenStream,
}

/// Whether `tokens` contain `impl` (an `impl Trait` type cannot be part of a tuple).
fn has_impl(tokens: TokenStream) -> bool {
    tokens.into_iter().any(|t| match t {
        proc_macro2::TokenTree::Ident(i) => i == "impl",
        proc_macro2::TokenTree::Group(g) => has_impl(g.stream()),
        _ => false,
    })
}

/// `<fn>_many(args)`: one call per item of `args` (the key parameters, a tuple of them when
/// there are several), the shared tier read once for all of them. Generated when each
/// call can be made from an item: the receiver, if any, is `&self`, and every parameter left
/// out of the key is a reference (it is shared by the calls); no parameter is `impl Trait`.
fn many(m: &Model, parts: &ManyParts<'_>) -> TokenStream {
    let ManyParts {
        p,
        cell,
        engine,
        key,
        tags,
        make,
        get,
        cfgs,
        allow,
    } = *parts;
    let sig = &m.func.sig;
    let mut receiver = None;
    let mut shared = Vec::new();
    let (mut pats, mut tys) = (Vec::new(), Vec::new());
    let mut typed = m.params.iter();
    for arg in &sig.inputs {
        match arg {
            FnArg::Receiver(r) => {
                if r.reference.is_none() || r.mutability.is_some() || r.colon_token.is_some() {
                    return TokenStream::new();
                }
                receiver = Some(arg);
            }
            FnArg::Typed(pt) => {
                let Some(param) = typed.next() else {
                    return TokenStream::new();
                };
                let ty = &pt.ty;
                if has_impl(quote!(#ty)) {
                    return TokenStream::new();
                }
                if param.ignored {
                    if !matches!(**ty, Type::Reference(_)) {
                        return TokenStream::new();
                    }
                    shared.push(arg);
                } else {
                    pats.push(&pt.pat);
                    tys.push(ty);
                }
            }
        }
    }
    if pats.is_empty() {
        return TokenStream::new();
    }
    let taken = |n: &str| {
        m.params
            .iter()
            .any(|q| q.name.as_ref().is_some_and(|i| i == n))
    };
    let args = if taken("args") {
        format_ident!("cachemacro_args")
    } else {
        format_ident!("args")
    };
    let (item_pat, item_ty) = if pats.len() == 1 {
        let (pat, ty) = (pats[0], tys[0]);
        (quote!(#pat), quote!(#ty))
    } else {
        (quote!((#(#pats),*)), quote!((#(#tys),*)))
    };
    let ident = &sig.ident;
    let many = format_ident!("{}_many", ident);
    // A key answered by the bulk read still counts as read for its `refresh_every` schedule.
    let note = if m.refresh_every.is_some() {
        quote!(|__e, __k, __m| __e.note_ahead(__k, __m))
    } else {
        quote!(|_, _, _| {})
    };
    let (vis, ret) = (&m.func.vis, &m.ret);
    let generics = &sig.generics;
    let where_clause = &sig.generics.where_clause;
    let receiver = receiver.map(|r| quote!(#r,));
    let fn_name = ident.to_string();
    let doc = format!(
        "Calls [`{fn_name}`] once per item of `{args}` (its key arguments{}), and returns the results in the same order. The keys the in-process tier cannot answer are read from the shared tier in one round trip (one `MGET`, split by slot on a cluster); the rest are loaded concurrently, each coalesced with other callers as usual.",
        if pats.len() > 1 { ", as a tuple" } else { "" }
    );
    quote! {
        #(#cfgs)*
        #[doc = #doc]
        #allow
        #vis async fn #many #generics (
            #receiver
            #(#shared,)*
            #args: impl ::core::iter::IntoIterator<Item = #item_ty>
        ) -> #p::Vec<#ret> #where_clause {
            #cell
            let __cachemacro_items: #p::Vec<_> = ::core::iter::IntoIterator::into_iter(#args)
                .map(|__cachemacro_item| {
                    let #item_pat: #item_ty = __cachemacro_item;
                    (#key, #tags, #make)
                })
                .collect();
            #engine
                .get_many(__cachemacro_items, |__e, __k, __m| __e.#get(__k, __m), #note)
                .await
        }
    }
}

/// What the items of a semantic function share with the rest of the expansion.
struct SemanticParts<'a> {
    p: &'a TokenStream,
    rt: &'a syn::Path,
    policy: &'a TokenStream,
    kind: &'a TokenStream,
    key: &'a TokenStream,
    tags: &'a TokenStream,
    body: &'a TokenStream,
    checks: &'a [TokenStream],
    hooks: &'a TokenStream,
}

/// `#[cached(semantic(on = prompt, threshold = 0.95), key = "faq:<tenant>")]`: the function,
/// `<fn>_invalidate(scope arguments)`, `<fn>_clear()` and `<fn>_stats()`.
fn semantic_items(
    m: &Model,
    sem: &crate::args::Semantic,
    parts: &SemanticParts<'_>,
) -> TokenStream {
    let SemanticParts {
        p,
        rt,
        policy,
        kind,
        key,
        tags,
        body,
        checks,
        hooks,
    } = *parts;
    let engine = quote_spanned!(m.ret.span()=> __CACHEMACRO.get(#hooks));
    let func = &m.func;
    let sig = &func.sig;
    let ident = &sig.ident;
    let vis = &func.vis;
    let ret = &m.ret;
    let ret_span = ret.span();
    let attrs = &func.attrs;
    let cfgs: Vec<_> = attrs.iter().filter(|a| a.path().is_ident("cfg")).collect();
    let threshold = sem.threshold as f32;
    let mut semantic = quote_spanned!(sem.threshold_span=> #p::SemanticPolicy::new(#threshold));
    if let Some(n) = sem.max_entries {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        semantic = quote!(#semantic.with_max_entries(#n));
    }
    let value = quote_spanned!(ret_span=> <#kind as #p::Kind<#ret>>::Value);
    let judge = match (&sem.verify, &sem.judge) {
        (Some(v), Some(j)) => {
            let f = v.value;
            semantic = quote!(#semantic.with_verify(#f));
            quote_spanned!(j.span()=> #p::Some(#j as #p::Judge<#value>))
        }
        (Some(v), None) => {
            // Without a judge, answers agree when they are equal: the value type must be
            // `PartialEq` (checked here, spanned on `verify`).
            let f = v.value;
            semantic = quote!(#semantic.with_verify(#f));
            quote_spanned!(v.span=> #p::Some(#p::equal_answers::<#value> as #p::Judge<#value>))
        }
        _ => quote!(#p::None),
    };
    let init = if m.backend.is_remote() {
        // The answers are stored in the shared tier: the value type's serde bounds are
        // checked here, spanned on the `backend` option.
        let span = m.backend_span;
        let codec = quote_spanned!(span=> #p::codec_of::<#value>());
        quote_spanned!(ret_span=> #p::SemanticCell::remote(#policy, #semantic, #judge, #codec))
    } else {
        quote_spanned!(ret_span=> #p::SemanticCell::new(#policy, #semantic, #judge))
    };
    let cell = quote_spanned! {ret_span=>
        static __CACHEMACRO: #p::SemanticCell<#ret, #kind> = #init;
    };
    let on = &sem.on;
    let prompt = quote_spanned!(on.span()=> #p::prompt_of(&#on));
    // A source that owns its arguments goes on if its caller is cancelled (others may wait).
    let get = if m.detached {
        quote!(get_detached)
    } else {
        quote!(get)
    };
    let span = sem.threshold_span;
    let feature = quote_spanned!(span=> #p::needs_semantic::<#p::SemanticFeature>(););
    let main = quote! {
        #(#attrs)*
        #vis #sig {
            #feature
            #cell
            #(#checks)*
            let __cachemacro_scope = #key;
            let __cachemacro_prompt: #p::String = #prompt;
            #engine
                .#get(
                    __cachemacro_scope.as_str(),
                    __cachemacro_prompt.as_str(),
                    move || (#tags, #body),
                )
                .await
        }
    };
    // The siblings take the scope's arguments: every parameter but the one compared.
    let scope_inputs = sig.inputs.iter().filter(|a| match a {
        FnArg::Typed(pt) => !matches!(&*pt.pat, syn::Pat::Ident(pi) if &pi.ident == on),
        FnArg::Receiver(_) => true,
    });
    let generics = &sig.generics;
    let where_clause = &sig.generics.where_clause;
    let invalidate = format_ident!("{}_invalidate", ident);
    let stats = format_ident!("{}_stats", ident);
    let clear = format_ident!("{}_clear", ident);
    let fn_name = ident.to_string();
    let doc_inv = format!(
        "Drops every stored prompt and answer of [`{fn_name}`] in this scope (these arguments); a call of the scope in flight does not store its answer."
    );
    let doc_stats = format!("Counters of [`{fn_name}`]'s semantic cache (`Stats::semantic`).");
    let doc_clear =
        format!("Drops every stored prompt and answer of [`{fn_name}`], in every scope.");
    let allow = quote!(#[allow(unused_variables, unused_mut, clippy::needless_pass_by_value)]);
    quote! {
        #main

        #(#cfgs)*
        #[doc = #doc_inv]
        #allow
        #vis async fn #invalidate #generics (#(#scope_inputs),*) -> #p::Result<(), #rt::Error> #where_clause {
            #cell
            let __cachemacro_scope = #key;
            #engine.invalidate(__cachemacro_scope.as_str()).await
        }

        #(#cfgs)*
        #[doc = #doc_stats]
        #vis fn #stats() -> #rt::Stats {
            #cell
            #engine.stats()
        }

        #(#cfgs)*
        #[doc = #doc_clear]
        #vis async fn #clear() -> #p::Result<(), #rt::Error> {
            #cell
            #engine.clear().await
        }
    }
}
