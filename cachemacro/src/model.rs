//! The validation step: options + function → one checked model of what to generate.
//! Cross-option rules live here (tokio-macros' `Configuration::build`).

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::spanned::Spanned as _;
use syn::{FnArg, ItemFn, LitStr, Pat, ReturnType, Type};

use crate::args::{Backend, Nanos, Options, Returns, Spanned, Stampede};
use crate::errors::{did_you_mean, Errors};
use crate::key::{Part, Template};

/// One parameter of the cached function.
pub struct Param {
    /// The binding name, when the pattern is a plain identifier.
    pub name: Option<syn::Ident>,
    /// Whether `#[key_ignore]` was given.
    pub ignored: bool,
}

/// Everything expansion needs, checked.
pub struct Model {
    /// The user's function, `#[key_ignore]` removed.
    pub func: ItemFn,
    pub krate: syn::Path,
    pub ttl: Nanos,
    pub soft_ttl: Option<Nanos>,
    pub none_ttl: Option<Nanos>,
    pub fail_safe: Option<Nanos>,
    pub timeout: Option<Nanos>,
    pub hard_timeout: Option<Nanos>,
    /// Where `hard_timeout` was written: the error-type conversion is checked there.
    pub hard_timeout_span: Option<Span>,
    pub outage_ttl: Option<Nanos>,
    pub max_refreshes: Option<u64>,
    pub refresh_every: Option<Nanos>,
    /// Where `refresh_every` was written: the arguments' `Clone` is checked there.
    pub refresh_every_span: Option<Span>,
    pub refresh_idle: Option<Nanos>,
    pub hot_keys: Option<u64>,
    pub stampede: Stampede,
    pub beta: Option<f64>,
    pub jitter: Option<f64>,
    pub max_capacity: Option<u64>,
    pub cache_none: bool,
    pub backend: Backend,
    pub backend_span: Span,
    pub name: Option<LitStr>,
    /// `None`: the default key (function path plus every key argument).
    pub key: Option<Template>,
    pub tags: Vec<Template>,
    /// Tags rendered from the returned value (`<result.field>`, `<result[].field>`).
    pub result_tags: Vec<Template>,
    pub params: Vec<Param>,
    pub returns: Returns,
    /// Whether `returns` was guessed from the type's spelling (not given).
    pub returns_guessed: bool,
    pub ret: Type,
    /// Whether the source future can be spawned (no borrowed arguments).
    pub detached: bool,
    /// Options that are valid but have no effect here: reported as warnings.
    pub warnings: Vec<(Span, &'static str)>,
    /// `semantic(…)`: the parameter compared by meaning is left out of the key (the scope).
    pub semantic: Option<crate::args::Semantic>,
}

/// The receiver (`&self`, `self: Arc<Self>` …) of a method.
pub struct Receiver {
    /// Whether `#[key_ignore]` was given.
    pub ignored: bool,
    /// The receiver as written, minus `#[key_ignore]`: errors are spanned on it.
    pub tokens: TokenStream,
    /// The receiver as written, for messages: `&self`, `&'a mut self`, `self: Arc<Self>`.
    pub text: String,
}

/// Strips `#[key_ignore]` from the function's receiver and parameters; returns what they
/// were.
pub fn strip_key_ignore(func: &mut ItemFn, errors: &mut Errors) -> (Option<Receiver>, Vec<Param>) {
    let mut receiver = None;
    let mut params = Vec::new();
    for arg in func.sig.inputs.iter_mut() {
        let pt = match arg {
            FnArg::Receiver(r) => {
                let before = r.attrs.len();
                r.attrs.retain(|a| !a.path().is_ident("key_ignore"));
                receiver = Some(Receiver {
                    ignored: r.attrs.len() != before,
                    tokens: r.to_token_stream(),
                    text: receiver_text(r),
                });
                continue;
            }
            FnArg::Typed(pt) => pt,
        };
        let before = pt.attrs.len();
        pt.attrs.retain(|a| !a.path().is_ident("key_ignore"));
        let ignored = pt.attrs.len() != before;
        let name = match &*pt.pat {
            Pat::Ident(p) if p.subpat.is_none() => Some(p.ident.clone()),
            _ => None,
        };
        if name.is_none() && !ignored {
            errors.push(syn::Error::new(
                pt.pat.span(),
                "a parameter bound by a pattern cannot be part of the cache key: bind it to a name, or mark it `#[key_ignore]` if it does not change the answer",
            ));
        }
        params.push(Param { name, ignored });
    }
    (receiver, params)
}

/// `&self`, `&'a mut self`, `mut self`, `self: Arc<Self>`, as a user would write it.
fn receiver_text(r: &syn::Receiver) -> String {
    let mutability = if r.mutability.is_some() { "mut " } else { "" };
    match (&r.colon_token, &r.reference) {
        (Some(_), _) => format!("{mutability}self: {}", tidy(r.ty.to_token_stream())),
        (None, Some((_, lifetime))) => {
            let lifetime = lifetime
                .as_ref()
                .map(|l| format!("{l} "))
                .unwrap_or_default();
            format!("&{lifetime}{mutability}self")
        }
        (None, None) => format!("{mutability}self"),
    }
}

/// Tokens as a user would space them: `Pin<&mut Self>`, not `Pin < & mut Self >`.
fn tidy(tokens: TokenStream) -> String {
    let mut out = String::new();
    let mut word_before = false; // the previous token was an identifier or literal
    for t in tokens {
        match t {
            TokenTree::Ident(_) | TokenTree::Literal(_) => {
                if word_before {
                    out.push(' ');
                }
                out.push_str(&t.to_string());
                word_before = true;
            }
            TokenTree::Punct(p) => {
                match p.as_char() {
                    ',' => out.push_str(", "),
                    '+' | '=' => {
                        out.push(' ');
                        out.push(p.as_char());
                        out.push(' ');
                    }
                    c => out.push(c),
                }
                word_before = false;
            }
            TokenTree::Group(g) => {
                let (open, close) = match g.delimiter() {
                    proc_macro2::Delimiter::Parenthesis => ("(", ")"),
                    proc_macro2::Delimiter::Bracket => ("[", "]"),
                    proc_macro2::Delimiter::Brace => ("{ ", " }"),
                    proc_macro2::Delimiter::None => ("", ""),
                };
                out.push_str(open);
                out.push_str(&tidy(g.stream()));
                out.push_str(close);
                word_before = false;
            }
        }
    }
    out
}

fn has_borrow(tokens: TokenStream) -> bool {
    tokens.into_iter().any(|t| match t {
        TokenTree::Punct(p) => p.as_char() == '&' || p.as_char() == '\'',
        TokenTree::Ident(i) => i == "impl" || i == "dyn",
        TokenTree::Group(g) => has_borrow(g.stream()),
        TokenTree::Literal(_) => false,
    })
}

fn guess_returns(ret: &Type) -> Option<Returns> {
    let Type::Path(p) = ret else {
        return Some(Returns::Value);
    };
    if p.qself.is_some() {
        return Some(Returns::Value);
    }
    let last = p.path.segments.last()?;
    let generic = matches!(last.arguments, syn::PathArguments::AngleBracketed(_));
    let name = last.ident.to_string();
    Some(if generic && name.ends_with("Result") {
        Returns::Result
    } else if generic && name == "Option" {
        Returns::Option
    } else {
        Returns::Value
    })
}

impl Model {
    pub fn build(
        opts: Options,
        mut func: ItemFn,
        attr_span: Span,
        errors: &mut Errors,
    ) -> Option<Self> {
        let sig = &func.sig;
        if sig.asyncness.is_none() {
            errors.push(syn::Error::new(
                sig.fn_token.span,
                "`#[cached]` needs an `async fn`: write `async fn` (the cache may call Redis, and a miss waits on other callers' loads)",
            ));
        }
        if let Some(g) = sig
            .generics
            .params
            .iter()
            .find(|g| !matches!(g, syn::GenericParam::Lifetime(_)))
        {
            errors.push(syn::Error::new(
                g.span(),
                "a `#[cached]` function cannot be generic over types or consts: one static cache serves every call; cache a non-generic wrapper instead",
            ));
        }
        if let Some(v) = &sig.variadic {
            errors.push(syn::Error::new(
                v.span(),
                "`#[cached]` cannot cache a variadic function",
            ));
        }
        let ret = match &sig.output {
            ReturnType::Type(_, t) => (**t).clone(),
            ReturnType::Default => {
                errors.push(syn::Error::new(
                    sig.ident.span(),
                    "a `#[cached]` function must return the value to cache",
                ));
                syn::parse_quote!(())
            }
        };
        let has_receiver = sig.receiver().is_some();
        let detached = !has_receiver
            && sig.inputs.iter().all(|a| match a {
                FnArg::Typed(pt) => !has_borrow(pt.ty.to_token_stream()),
                FnArg::Receiver(_) => false,
            });

        let (receiver, mut params) = strip_key_ignore(&mut func, errors);
        // `semantic(on = p)`: `p` is compared by meaning, never part of the key (the scope).
        let semantic = opts.semantic.as_ref().map(|s| s.value.clone());
        // A `semantic(…)` that did not check out (already reported): which parameter it
        // compares is unknown, so the key rule says nothing about the parameters until it
        // is fixed.
        let mut semantic_broken =
            opts.written.iter().any(|w| w == "semantic") && semantic.is_none();
        if let Some(sem) = &opts.semantic {
            let on = &sem.value.on;
            match params
                .iter_mut()
                .find(|p| p.name.as_ref().is_some_and(|n| n == on))
            {
                Some(p) => p.ignored = true,
                None => {
                    semantic_broken = true;
                    let names: Vec<String> = params
                        .iter()
                        .filter_map(|p| p.name.as_ref().map(|n| n.to_string()))
                        .collect();
                    let hint = did_you_mean(&on.to_string(), names.iter().map(String::as_str))
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default();
                    errors.push(syn::Error::new(
                        on.span(),
                        format!(
                            "`on = {on}` names no parameter of `{}`{hint}",
                            func.sig.ident
                        ),
                    ));
                }
            }
            // What the semantic tier does not do (yet): said, not ignored.
            let unsupported: [(&str, Option<Span>); 8] = [
                ("soft_ttl", opts.soft_ttl.as_ref().map(|o| o.span)),
                ("stampede", opts.stampede.as_ref().map(|o| o.span)),
                ("fail_safe", opts.fail_safe.as_ref().map(|o| o.span)),
                ("timeout", opts.timeout.as_ref().map(|o| o.span)),
                ("hard_timeout", opts.hard_timeout.as_ref().map(|o| o.span)),
                ("refresh_every", opts.refresh_every.as_ref().map(|o| o.span)),
                ("hot_keys", opts.hot_keys.as_ref().map(|o| o.span)),
                ("outage_ttl", opts.outage_ttl.as_ref().map(|o| o.span)),
            ];
            for (name, span) in unsupported {
                if let Some(span) = span {
                    errors.push(syn::Error::new(
                        span,
                        format!("`{name}` is not supported with `semantic(…)`: a semantic function keeps its answers for `ttl`, bounded by `max_capacity` scopes of `max_entries` prompts (shared through Redis with `backend = redis` or `tiered`); remove `{name}`"),
                    ));
                }
            }
            if let Some(b) = &opts.backend {
                if matches!(b.value, Backend::Memcached) {
                    errors.push(syn::Error::new(
                        b.span,
                        "`backend = memcached` cannot hold a semantic function's scopes (a map of entries per scope); write `backend = redis` or `backend = tiered` to share them, or leave `backend` out to keep them in-process",
                    ));
                }
            }
        }
        let names: Vec<String> = params
            .iter()
            .filter_map(|p| p.name.as_ref().map(|n| n.to_string()))
            .collect();

        let Some(ttl) = opts.ttl.as_ref().map(|t| t.value) else {
            if opts.written.iter().any(|w| w == "ttl") {
                return None; // given but malformed: already reported
            }
            errors.push(syn::Error::new(
                attr_span,
                "missing `ttl`: every cached value needs a hard expiry as a safety net; add e.g. `ttl = \"10m\"` (or `ttl = 600` seconds)",
            ));
            return None;
        };
        if let Some(soft) = &opts.soft_ttl {
            if soft.value >= ttl {
                errors.push(syn::Error::new(
                    soft.span,
                    "`soft_ttl` must be shorter than `ttl`: values turn stale at `soft_ttl` and vanish at `ttl`",
                ));
            }
        }

        let returns_guessed = opts.returns.is_none();
        let returns = match &opts.returns {
            Some(r) => r.value,
            None => guess_returns(&ret).unwrap_or(Returns::Value),
        };
        let cache_none = opts.cache_none.as_ref().is_some_and(|c| c.value);
        if let Some(c) = &opts.cache_none {
            if returns == Returns::Value {
                errors.push(syn::Error::new(
                    c.span,
                    "`cache_none` applies to functions returning `Option<T>` (or `Result<Option<T>, E>`)",
                ));
            }
        }
        if let Some(n) = &opts.none_ttl {
            if !cache_none {
                errors.push(syn::Error::new(
                    n.span,
                    "`none_ttl` has no effect unless `cache_none = true`",
                ));
            }
        }
        let stampede = opts
            .stampede
            .as_ref()
            .map_or(Stampede::Coalesce, |s| s.value);
        let mut warnings = Vec::new();
        if let Some(b) = &opts.beta {
            if stampede != Stampede::Xfetch {
                warnings.push((
                    b.span,
                    "`beta` tunes XFetch early refresh and has no effect without `stampede = xfetch`",
                ));
            }
            if !(b.value > 0.0 && b.value.is_finite()) {
                errors.push(syn::Error::new(
                    b.span,
                    "`beta` must be a positive number (1.0 is the usual choice)",
                ));
            }
        }
        if let Some(j) = &opts.jitter {
            if !(0.0..1.0).contains(&j.value) {
                errors.push(syn::Error::new(
                    j.span,
                    "`jitter` is a fraction of `ttl` in [0, 1), e.g. `jitter = 0.1` for ±10%",
                ));
            }
        }
        let (backend, backend_span) = opts
            .backend
            .map_or((Backend::Memory, attr_span), |Spanned { value, span }| {
                (value, span)
            });
        if let Some(m) = &opts.max_capacity {
            // A semantic function always keeps its index in-process (it bounds the scopes).
            if !backend.has_local_tier() && semantic.is_none() {
                errors.push(syn::Error::new(
                    m.span,
                    if backend == Backend::Memcached {
                        "`max_capacity` bounds the in-process tier, which `backend = memcached` does not have; bound Memcached with its memory limit (`-m`)"
                    } else {
                        "`max_capacity` bounds the in-process tier, which `backend = redis` does not have; use `backend = tiered`, or bound Redis with `maxmemory`"
                    },
                ));
            }
        }

        if let (Some(t), Some(h)) = (&opts.timeout, &opts.hard_timeout) {
            if t.value >= h.value {
                errors.push(syn::Error::new(
                    t.span,
                    "`timeout` must be shorter than `hard_timeout`: past `timeout` a stale value is served while the load goes on; past `hard_timeout` the caller gives up",
                ));
            }
        }
        if let Some(h) = &opts.hard_timeout {
            if returns != Returns::Result && opts.fail_safe.is_none() {
                errors.push(syn::Error::new(
                    h.span,
                    "`hard_timeout` needs a way to give up: return `Result<T, E>` with `E: From<cachemacro_runtime::SourceTimeout>`, or add `fail_safe` so a stale value can stand in",
                ));
            }
        }
        if let Some(o) = &opts.outage_ttl {
            if !matches!(backend, Backend::Tiered | Backend::Named(_)) {
                warnings.push((
                    o.span,
                    "`outage_ttl` bounds how long a `tiered` process serves its L1 while Redis is unreachable; it has no effect on this backend",
                ));
            }
        }
        if let Some(r) = &opts.refresh_every {
            if r.value >= ttl {
                errors.push(syn::Error::new(
                    r.span,
                    "`refresh_every` must be shorter than `ttl`, or the value expires before it is refreshed",
                ));
            }
            if !detached {
                errors.push(syn::Error::new(
                    r.span,
                    "`refresh_every` refreshes keys in the background, which needs owned arguments (`String`, not `&str`) and no receiver; or use `soft_ttl`, which refreshes on the next call",
                ));
            } else if func.sig.inputs.iter().any(|a| match a {
                FnArg::Typed(pt) => !matches!(&*pt.pat, Pat::Ident(_)),
                FnArg::Receiver(_) => false,
            }) {
                errors.push(syn::Error::new(
                    r.span,
                    "`refresh_every` reloads keys later with their arguments, which must be plain names (`id: u64`), not patterns",
                ));
            }
        }
        if let Some(i) = &opts.refresh_idle {
            if opts.refresh_every.is_none() {
                errors.push(syn::Error::new(
                    i.span,
                    "`refresh_idle` has no effect without `refresh_every`",
                ));
            }
        }

        // Checks that every placeholder names a parameter; returns the parameters it
        // suggested for typos (so they are not also reported as missing from the key).
        let check = |t: &Template, what: &str, errors: &mut Errors| -> Vec<String> {
            let mut suggested = Vec::new();
            let candidates = || {
                names
                    .iter()
                    .map(String::as_str)
                    .chain(has_receiver.then_some("self"))
            };
            for path in t.places() {
                let root = path[0].as_str();
                if root == "self" {
                    if !has_receiver {
                        errors.push(syn::Error::new(
                            t.span,
                            format!(
                                "`<self…>` in the {what}, but the function has no `self` parameter"
                            ),
                        ));
                    }
                    continue;
                }
                if !names.iter().any(|n| n == root) {
                    let hint = match did_you_mean(root, candidates()) {
                        Some(s) => {
                            suggested.push(s.to_owned());
                            let fields: String =
                                path[1..].iter().map(|f| format!(".{f}")).collect();
                            format!("did you mean `<{s}{fields}>`? ")
                        }
                        None => String::new(),
                    };
                    errors.push(syn::Error::new(
                        t.span,
                        format!(
                            "`<{root}>` in the {what} names no parameter of `{}`: {hint}(parameters: {})",
                            func.sig.ident,
                            if names.is_empty() { "none".to_owned() } else { names.join(", ") }
                        ),
                    ));
                }
            }
            suggested
        };
        let mut suggested = Vec::new();
        let key = opts
            .key
            .as_ref()
            .and_then(|k| match Template::parse(k, "key") {
                Ok(t) => {
                    suggested = check(&t, "key", errors);
                    Some(t)
                }
                Err(e) => {
                    errors.push(e);
                    None
                }
            });
        if let Some(k) = &key {
            let used: Vec<&str> = k.roots().collect();
            for (arg, p) in func
                .sig
                .inputs
                .iter()
                .filter_map(|a| match a {
                    FnArg::Typed(pt) => Some(pt),
                    FnArg::Receiver(_) => None,
                })
                .zip(&params)
            {
                let Some(name) = &p.name else { continue };
                let in_key = used.iter().any(|u| name == u);
                if in_key && semantic.as_ref().is_some_and(|s| &s.on == name) {
                    errors.push(syn::Error::new(
                        k.span,
                        format!("`<{name}>` is compared by meaning (`semantic(on = {name})`), so it cannot be part of the key: the key names the scope (e.g. the tenant) a hit never crosses; remove `<{name}>`"),
                    ));
                    continue;
                }
                if !in_key && !p.ignored && !semantic_broken && !suggested.iter().any(|s| name == s)
                {
                    errors.push(syn::Error::new(
                        arg.pat.span(),
                        format!(
                            "parameter `{name}` is not part of the cache key: add `<{name}>` to `key`, or mark it `#[key_ignore]` if it does not change the answer"
                        ),
                    ));
                } else if in_key && p.ignored {
                    errors.push(syn::Error::new(
                        arg.pat.span(),
                        format!("parameter `{name}` is marked `#[key_ignore]` but the key uses `<{name}>`: remove one of them"),
                    ));
                }
            }
        }
        if let Some(r) = &receiver {
            let self_place = key.as_ref().and_then(|k| {
                k.places()
                    .find(|path| path[0] == "self")
                    .map(|path| path.join("."))
            });
            let text = &r.text;
            match (&key, self_place, r.ignored) {
                // The template did not parse: already reported.
                (None, _, _) if opts.key.is_some() => {}
                (Some(_), Some(place), true) => errors.push(syn::Error::new_spanned(
                    &r.tokens,
                    format!("the receiver `{text}` is marked `#[key_ignore]` but the key uses `<{place}>`: remove one of them"),
                )),
                (Some(_), None, false) if !suggested.iter().any(|s| s == "self") => {
                    errors.push(syn::Error::new_spanned(
                        &r.tokens,
                        format!("the receiver `{text}` is not part of the cache key, so every instance would share entries: name what distinguishes instances in `key` (e.g. `<self.tenant>`), or write `#[key_ignore] {text}` if every instance gives the same answer"),
                    ))
                }
                (None, _, false) => {
                    let example: String = params
                        .iter()
                        .filter(|p| !p.ignored)
                        .filter_map(|p| p.name.as_ref().map(|n| format!(":<{n}>")))
                        .collect();
                    errors.push(syn::Error::new_spanned(
                        &r.tokens,
                        format!("the receiver `{text}` is not part of the default cache key (the function's path and its arguments), so every instance would share entries: write a `key` naming what distinguishes instances (e.g. `key = \"{}:<self.tenant>{example}\"`), or write `#[key_ignore] {text}` if every instance gives the same answer", func.sig.ident),
                    ));
                }
                _ => {}
            }
        }
        let mut tags = Vec::new();
        let mut result_tags = Vec::new();
        // `<result…>` names the returned value, unless a parameter is called `result`.
        let result_param = params
            .iter()
            .any(|p| p.name.as_ref().is_some_and(|n| n == "result"));
        if let Some(t) = &opts.tags {
            for lit in &t.value {
                match Template::parse(lit, "tag") {
                    Ok(t) => {
                        let of_result =
                            |root: &str| root == "result[]" || (root == "result" && !result_param);
                        let n = t.roots().count();
                        let from_result = t.roots().filter(|r| of_result(r)).count();
                        let each = t.roots().filter(|r| *r == "result[]").count();
                        if from_result == 0 {
                            check(&t, "tag", errors);
                            tags.push(t);
                        } else if from_result < n {
                            errors.push(syn::Error::new(
                                t.span,
                                "a tag names either the arguments or the returned value (`<result.field>`), not both: split it into two tags, e.g. `tags = [\"org:<org>\", \"owner:<result.owner_id>\"]`",
                            ));
                        } else if each > 0 && each < n {
                            errors.push(syn::Error::new(
                                t.span,
                                "a tag names either each element of the returned value (`<result[].id>`, one tag per element) or the value itself (`<result.id>`), not both: split it into two tags",
                            ));
                        } else {
                            result_tags.push(t);
                        }
                    }
                    Err(e) => errors.push(e),
                }
            }
        }

        if let (Some(_), Some(t)) = (&semantic, result_tags.first()) {
            errors.push(syn::Error::new(
                t.span,
                "tags rendered from the returned value are not supported with `semantic(…)`: tag the scope with the arguments (e.g. `tags = [\"tenant:<tenant>\"]`)",
            ));
        }
        if !errors.is_empty() {
            return None;
        }
        let krate = opts
            .krate
            .map(|k| k.value)
            .unwrap_or_else(|| syn::parse_quote!(::cachemacro_runtime));
        Some(Self {
            func,
            krate,
            ttl,
            soft_ttl: opts.soft_ttl.map(|s| s.value),
            none_ttl: opts.none_ttl.map(|s| s.value),
            fail_safe: opts.fail_safe.map(|s| s.value),
            timeout: opts.timeout.map(|s| s.value),
            hard_timeout: opts.hard_timeout.as_ref().map(|s| s.value),
            hard_timeout_span: opts.hard_timeout.as_ref().map(|s| s.span),
            outage_ttl: opts.outage_ttl.map(|s| s.value),
            max_refreshes: opts.max_refreshes.map(|s| s.value),
            refresh_every: opts.refresh_every.as_ref().map(|s| s.value),
            refresh_every_span: opts.refresh_every.as_ref().map(|s| s.span),
            refresh_idle: opts.refresh_idle.map(|s| s.value),
            hot_keys: opts.hot_keys.map(|s| s.value),
            stampede,
            beta: opts.beta.map(|b| b.value),
            jitter: opts.jitter.map(|j| j.value),
            max_capacity: opts.max_capacity.map(|m| m.value),
            cache_none,
            backend,
            backend_span,
            name: opts.name,
            key,
            tags,
            result_tags,
            params,
            returns,
            returns_guessed,
            ret,
            detached,
            warnings,
            semantic,
        })
    }

    /// The default key's text after the function's path (`:<a>:<b>`), for the runtime's
    /// collision check.
    pub fn key_parts_text(&self) -> String {
        crate::key::parts_text(&self.key_parts())
    }

    /// The key template's parts, or the default: every key parameter, `:`-separated.
    pub fn key_parts(&self) -> Vec<Part> {
        if let Some(k) = &self.key {
            return k.parts.clone();
        }
        let mut parts = Vec::new();
        for p in &self.params {
            if let (Some(name), false) = (&p.name, p.ignored) {
                parts.push(Part::Lit(":".into()));
                parts.push(Part::Place(vec![name.to_string()]));
            }
        }
        parts
    }
}
