//! The attribute grammar: `name = value` pairs → typed options with spans.
//!
//! Parsing is deliberately lenient about *shape* (any `ident = expr` list parses) so that
//! every mistake can be reported at once, each on its own token; interpretation is strict.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned as _;
use syn::{Expr, ExprLit, Ident, Lit, LitStr, Token};

use crate::errors::Errors;

/// One `name = value` pair, as written, or a group `name(a = 1, b = 2)`.
pub struct RawOption {
    pub name: Ident,
    pub value: Expr,
    /// The options of a group (`semantic(on = prompt, threshold = 0.95)`).
    pub nested: Option<Punctuated<RawOption, Token![,]>>,
}

impl Parse for RawOption {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        // `crate` is a keyword; accept it (and any other keyword) as an option name.
        let name = syn::ext::IdentExt::parse_any(input)?;
        if input.peek(syn::token::Paren) {
            let content;
            syn::parenthesized!(content in input);
            let nested = Punctuated::parse_terminated(&content)?;
            return Ok(Self {
                value: Expr::Verbatim(proc_macro2::TokenStream::new()),
                name,
                nested: Some(nested),
            });
        }
        input.parse::<Token![=]>().map_err(|e| {
            syn::Error::new(
                e.span(),
                format!("expected `{name} = <value>`: every option takes a value"),
            )
        })?;
        let value = input.parse()?;
        Ok(Self {
            name,
            value,
            nested: None,
        })
    }
}

/// The whole attribute, as written.
pub struct RawArgs(pub Punctuated<RawOption, Token![,]>);

impl Parse for RawArgs {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        Ok(Self(Punctuated::parse_terminated(input)?))
    }
}

/// A value with the span of the token it came from.
#[derive(Clone, Debug)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

/// A duration in nanoseconds.
pub type Nanos = u128;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stampede {
    None,
    Coalesce,
    Lock,
    Xfetch,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Redis,
    Tiered,
    Memcached,
    Named(String),
}

impl Backend {
    pub fn is_remote(&self) -> bool {
        !matches!(self, Backend::Memory)
    }
    pub fn has_local_tier(&self) -> bool {
        !matches!(self, Backend::Redis | Backend::Memcached)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Returns {
    Value,
    Result,
    Option,
}

/// Every option, typed and spanned; absent ones are `None`.
#[derive(Default)]
pub struct Options {
    /// Names of every option written, valid or not (so a malformed `ttl` is not also
    /// reported as missing).
    pub written: Vec<String>,
    pub ttl: Option<Spanned<Nanos>>,
    pub soft_ttl: Option<Spanned<Nanos>>,
    pub key: Option<LitStr>,
    pub backend: Option<Spanned<Backend>>,
    pub stampede: Option<Spanned<Stampede>>,
    pub beta: Option<Spanned<f64>>,
    pub name: Option<LitStr>,
    pub max_capacity: Option<Spanned<u64>>,
    pub jitter: Option<Spanned<f64>>,
    pub cache_none: Option<Spanned<bool>>,
    pub none_ttl: Option<Spanned<Nanos>>,
    pub fail_safe: Option<Spanned<Nanos>>,
    pub tags: Option<Spanned<Vec<LitStr>>>,
    pub krate: Option<Spanned<syn::Path>>,
    pub returns: Option<Spanned<Returns>>,
    pub timeout: Option<Spanned<Nanos>>,
    pub hard_timeout: Option<Spanned<Nanos>>,
    pub outage_ttl: Option<Spanned<Nanos>>,
    pub max_refreshes: Option<Spanned<u64>>,
    pub refresh_every: Option<Spanned<Nanos>>,
    pub refresh_idle: Option<Spanned<Nanos>>,
    pub hot_keys: Option<Spanned<u64>>,
    pub semantic: Option<Spanned<Semantic>>,
}

/// `semantic(on = prompt, threshold = 0.95, max_entries = 1000, verify = 0.01, judge = f)`.
#[derive(Clone)]
pub struct Semantic {
    /// The parameter compared by meaning.
    pub on: Ident,
    pub threshold: f64,
    pub threshold_span: Span,
    pub max_entries: Option<u64>,
    pub verify: Option<Spanned<f64>>,
    pub judge: Option<syn::Path>,
}

pub const SEMANTIC_OPTION_NAMES: &[&str] = &["on", "threshold", "max_entries", "verify", "judge"];

pub const OPTION_NAMES: &[&str] = &[
    "ttl",
    "soft_ttl",
    "key",
    "backend",
    "stampede",
    "beta",
    "name",
    "max_capacity",
    "jitter",
    "cache_none",
    "none_ttl",
    "fail_safe",
    "tags",
    "crate",
    "returns",
    "timeout",
    "hard_timeout",
    "outage_ttl",
    "max_refreshes",
    "refresh_every",
    "refresh_idle",
    "hot_keys",
    "semantic",
];

/// Stores `value` in `slot`, or reports a duplicate on the second option's name.
fn set<T>(slot: &mut Option<T>, name: &Ident, value: Option<T>, errors: &mut Errors) {
    if slot.is_some() {
        errors.push(syn::Error::new(
            name.span(),
            format!("duplicate option `{name}`: give each option once"),
        ));
    } else if let Some(v) = value {
        *slot = Some(v);
    }
}

impl Options {
    /// Interprets every option, reporting each mistake on its own token.
    pub fn from_raw(raw: RawArgs, errors: &mut Errors) -> Self {
        let mut o = Options::default();
        for RawOption {
            name,
            value,
            nested,
        } in raw.0
        {
            let n = name.to_string();
            o.written.push(n.clone());
            match (n.as_str(), nested) {
                ("semantic", Some(nested)) => {
                    let sem = semantic(&name, nested, errors);
                    set(&mut o.semantic, &name, sem, errors);
                    continue;
                }
                ("semantic", None) => {
                    errors.push(syn::Error::new(
                        name.span(),
                        "write `semantic(on = <parameter>, threshold = 0.95)`: `on` names the parameter compared by meaning",
                    ));
                    continue;
                }
                (_, Some(_)) => {
                    errors.push(syn::Error::new(
                        name.span(),
                        format!("`{n}` takes a value: write `{n} = <value>` (only `semantic(…)` takes a list)"),
                    ));
                    continue;
                }
                (_, None) => {}
            }
            match n.as_str() {
                "ttl" => set(&mut o.ttl, &name, duration(&value, errors), errors),
                "soft_ttl" => set(&mut o.soft_ttl, &name, duration(&value, errors), errors),
                "none_ttl" => set(&mut o.none_ttl, &name, duration(&value, errors), errors),
                "fail_safe" => set(&mut o.fail_safe, &name, duration(&value, errors), errors),
                "timeout" => set(&mut o.timeout, &name, duration(&value, errors), errors),
                "hard_timeout" => set(&mut o.hard_timeout, &name, duration(&value, errors), errors),
                "outage_ttl" => set(
                    &mut o.outage_ttl,
                    &name,
                    duration_or_zero(&value, errors),
                    errors,
                ),
                "refresh_every" => set(
                    &mut o.refresh_every,
                    &name,
                    duration(&value, errors),
                    errors,
                ),
                "refresh_idle" => set(&mut o.refresh_idle, &name, duration(&value, errors), errors),
                "max_refreshes" => set(
                    &mut o.max_refreshes,
                    &name,
                    count(
                        &value,
                        "max_refreshes",
                        "concurrent background refreshes, e.g. `max_refreshes = 16`",
                        errors,
                    ),
                    errors,
                ),
                "hot_keys" => {
                    let n = count(
                        &value,
                        "hot_keys",
                        "keys to track, e.g. `hot_keys = 10`",
                        errors,
                    );
                    // A few hot keys, as the seed asks: every sampled hit scans the sketch,
                    // and each key is a labelled series in the metrics export.
                    let n = n.filter(|n| {
                        let ok = n.value <= MAX_HOT_KEYS;
                        if !ok {
                            errors.push(syn::Error::new(
                                n.span,
                                format!("`hot_keys` tracks a few hot keys, at most {MAX_HOT_KEYS}: each is scanned on sampled hits and exported as a labelled series; write e.g. `hot_keys = 10`"),
                            ));
                        }
                        ok
                    });
                    set(&mut o.hot_keys, &name, n, errors)
                }
                "key" => set(&mut o.key, &name, string(&value, "key", errors), errors),
                "name" => set(&mut o.name, &name, string(&value, "name", errors), errors),
                "backend" => set(&mut o.backend, &name, backend(&value, errors), errors),
                "stampede" => set(&mut o.stampede, &name, stampede(&value, errors), errors),
                "returns" => set(&mut o.returns, &name, returns(&value, errors), errors),
                "beta" => set(&mut o.beta, &name, float(&value, "beta", errors), errors),
                "jitter" => set(
                    &mut o.jitter,
                    &name,
                    float(&value, "jitter", errors),
                    errors,
                ),
                "max_capacity" => set(&mut o.max_capacity, &name, int(&value, errors), errors),
                "cache_none" => set(&mut o.cache_none, &name, boolean(&value, errors), errors),
                "tags" => set(&mut o.tags, &name, tags(&value, errors), errors),
                "crate" => set(&mut o.krate, &name, krate(&value, errors), errors),
                _ => {
                    let hint = crate::errors::did_you_mean(&n, OPTION_NAMES.iter().copied())
                        .map(|s| format!("; did you mean `{s}`?"))
                        .unwrap_or_default();
                    errors.push(syn::Error::new(
                        name.span(),
                        format!(
                            "unknown option `{n}`{hint} (options: {})",
                            OPTION_NAMES.join(", ")
                        ),
                    ));
                }
            }
        }
        o
    }
}

fn lit(value: &Expr) -> Option<&Lit> {
    match value {
        Expr::Lit(ExprLit { lit, .. }) => Some(lit),
        Expr::Group(g) => lit(&g.expr),
        _ => None,
    }
}

fn ident(value: &Expr) -> Option<&Ident> {
    match value {
        Expr::Path(p) if p.qself.is_none() => p.path.get_ident(),
        _ => None,
    }
}

const DURATION_HELP: &str =
    "write whole seconds (`600`) or a duration string such as \"150ms\", \"10s\", \"5m\", \"1h30m\"";

/// A duration that may be zero (`0` or `"0s"`: the feature is off).
fn duration_or_zero(value: &Expr, errors: &mut Errors) -> Option<Spanned<Nanos>> {
    let zero = match lit(value) {
        Some(Lit::Int(i)) => i.base10_parse::<u64>().ok() == Some(0),
        Some(Lit::Str(s)) => parse_duration(&s.value()) == Some(0),
        _ => false,
    };
    if zero {
        return Some(Spanned {
            value: 0,
            span: value.span(),
        });
    }
    duration(value, errors)
}

fn duration(value: &Expr, errors: &mut Errors) -> Option<Spanned<Nanos>> {
    let span = value.span();
    let parsed = match lit(value) {
        Some(Lit::Int(i)) => i
            .base10_parse::<u64>()
            .ok()
            .map(|s| s as u128 * 1_000_000_000),
        Some(Lit::Str(s)) => parse_duration(&s.value()),
        _ => None,
    };
    match parsed {
        Some(0) => {
            errors.push(syn::Error::new(
                span,
                "a duration must be greater than zero",
            ));
            None
        }
        Some(ns) if ns > u64::MAX as u128 => {
            errors.push(syn::Error::new(span, "duration too long"));
            None
        }
        Some(value) => Some(Spanned { value, span }),
        None => {
            errors.push(syn::Error::new(
                span,
                format!("malformed duration: {DURATION_HELP}"),
            ));
            None
        }
    }
}

/// `"1h30m"`, `"150ms"`, `"10s"`, `"2d"`: one or more `<integer><unit>` groups, units
/// `ms`, `s`, `m`, `h`, `d`, each at most once and largest first.
pub fn parse_duration(s: &str) -> Option<Nanos> {
    const UNITS: [(&str, u128); 5] = [
        ("d", 86_400_000_000_000),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
    ];
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut rest = s;
    let mut total: u128 = 0;
    let mut last_unit = 0usize; // index into UNITS + 1 of the previous unit
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u128 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..letters];
        rest = &rest[letters..];
        let idx = UNITS.iter().position(|(u, _)| *u == unit)?;
        if idx < last_unit {
            return None;
        }
        last_unit = idx + 1;
        total = total.checked_add(n.checked_mul(UNITS[idx].1)?)?;
    }
    Some(total)
}

fn string(value: &Expr, what: &str, errors: &mut Errors) -> Option<LitStr> {
    match lit(value) {
        Some(Lit::Str(s)) => Some(s.clone()),
        _ => {
            errors.push(syn::Error::new(
                value.span(),
                format!("`{what}` takes a string literal, e.g. `{what} = \"…\"`"),
            ));
            None
        }
    }
}

fn backend(value: &Expr, errors: &mut Errors) -> Option<Spanned<Backend>> {
    let span = value.span();
    let b = match (ident(value), lit(value)) {
        (Some(i), _) if i == "memory" => Some(Backend::Memory),
        (Some(i), _) if i == "redis" => Some(Backend::Redis),
        (Some(i), _) if i == "tiered" => Some(Backend::Tiered),
        (Some(i), _) if i == "memcached" => Some(Backend::Memcached),
        (_, Some(Lit::Str(s))) if !s.value().is_empty() => Some(Backend::Named(s.value())),
        (Some(i), _) => {
            let hint = crate::errors::did_you_mean(
                &i.to_string(),
                ["memory", "redis", "tiered", "memcached"],
            )
            .map(|s| format!("did you mean `{s}`? "))
            .unwrap_or_default();
            errors.push(syn::Error::new(
                span,
                format!("unknown backend `{i}`: {hint}expected `memory`, `redis`, `tiered`, `memcached`, or a string naming a backend registered at start-up"),
            ));
            return None;
        }
        _ => None,
    };
    if b.is_none() {
        errors.push(syn::Error::new(
            span,
            "expected `memory`, `redis`, `tiered`, `memcached`, or a string naming a registered backend",
        ));
    }
    b.map(|value| Spanned { value, span })
}

fn stampede(value: &Expr, errors: &mut Errors) -> Option<Spanned<Stampede>> {
    let span = value.span();
    let modes = ["none", "coalesce", "lock", "xfetch"];
    let s = ident(value).map(|i| i.to_string());
    let mode = match s.as_deref() {
        Some("none") => Stampede::None,
        Some("coalesce") => Stampede::Coalesce,
        Some("lock") => Stampede::Lock,
        Some("xfetch") => Stampede::Xfetch,
        other => {
            let hint = other
                .and_then(|o| crate::errors::did_you_mean(o, modes))
                .map(|s| format!("did you mean `{s}`? "))
                .unwrap_or_default();
            errors.push(syn::Error::new(
                span,
                format!("unknown stampede mode: {hint}expected `none`, `coalesce` (the default), `lock` or `xfetch`"),
            ));
            return None;
        }
    };
    Some(Spanned { value: mode, span })
}

fn returns(value: &Expr, errors: &mut Errors) -> Option<Spanned<Returns>> {
    let span = value.span();
    let r = match ident(value).map(|i| i.to_string()).as_deref() {
        Some("value") => Returns::Value,
        Some("result") => Returns::Result,
        Some("option") => Returns::Option,
        _ => {
            errors.push(syn::Error::new(
                span,
                "expected `value` (cache the whole return value), `result` (cache `Ok` only) or `option` (cache `Some` only)",
            ));
            return None;
        }
    };
    Some(Spanned { value: r, span })
}

fn float(value: &Expr, what: &str, errors: &mut Errors) -> Option<Spanned<f64>> {
    let span = value.span();
    let v = match lit(value) {
        Some(Lit::Float(f)) => f.base10_parse::<f64>().ok(),
        Some(Lit::Int(i)) => i.base10_parse::<f64>().ok(),
        _ => None,
    };
    if v.is_none() {
        errors.push(syn::Error::new(
            span,
            format!("`{what}` takes a number, e.g. `{what} = 0.1`"),
        ));
    }
    v.map(|value| Spanned { value, span })
}

fn int(value: &Expr, errors: &mut Errors) -> Option<Spanned<u64>> {
    count(
        value,
        "max_capacity",
        "entries, e.g. `max_capacity = 10_000`",
        errors,
    )
}

/// The most keys `hot_keys` may track.
const MAX_HOT_KEYS: u64 = 100;

/// A positive integer option: `what` says what it counts, with an example.
fn count(value: &Expr, name: &str, what: &str, errors: &mut Errors) -> Option<Spanned<u64>> {
    let span = value.span();
    match lit(value) {
        Some(Lit::Int(i)) => match i.base10_parse::<u64>() {
            Ok(0) => {
                errors.push(syn::Error::new(
                    span,
                    format!("`{name}` must be at least 1"),
                ));
                None
            }
            Ok(value) => Some(Spanned { value, span }),
            Err(e) => {
                errors.push(e);
                None
            }
        },
        _ => {
            errors.push(syn::Error::new(
                span,
                format!("`{name}` takes an integer number of {what}"),
            ));
            None
        }
    }
}

fn boolean(value: &Expr, errors: &mut Errors) -> Option<Spanned<bool>> {
    match lit(value) {
        Some(Lit::Bool(b)) => Some(Spanned {
            value: b.value,
            span: value.span(),
        }),
        _ => {
            errors.push(syn::Error::new(value.span(), "expected `true` or `false`"));
            None
        }
    }
}

fn tags(value: &Expr, errors: &mut Errors) -> Option<Spanned<Vec<LitStr>>> {
    let span = value.span();
    let Expr::Array(arr) = value else {
        errors.push(syn::Error::new(
            span,
            "`tags` takes a list of templates, e.g. `tags = [\"org:<org_id>\"]`",
        ));
        return None;
    };
    let mut out = Vec::new();
    for e in &arr.elems {
        match lit(e) {
            Some(Lit::Str(s)) => out.push(s.clone()),
            _ => errors.push(syn::Error::new(
                e.span(),
                "each tag is a template string, e.g. \"org:<org_id>\"",
            )),
        }
    }
    Some(Spanned { value: out, span })
}

fn krate(value: &Expr, errors: &mut Errors) -> Option<Spanned<syn::Path>> {
    let span = value.span();
    match lit(value) {
        Some(Lit::Str(s)) => match s.parse_with(syn::Path::parse_mod_style) {
            Ok(p) => Some(Spanned { value: p, span }),
            Err(_) => {
                errors.push(syn::Error::new(
                    span,
                    "`crate` takes the path of the runtime crate, e.g. `crate = \"my_cache\"`",
                ));
                None
            }
        },
        _ => {
            errors.push(syn::Error::new(
                span,
                "`crate` takes a string, e.g. `crate = \"my_cache\"`",
            ));
            None
        }
    }
}

/// `semantic(…)`'s options.
fn semantic(
    name: &Ident,
    nested: Punctuated<RawOption, Token![,]>,
    errors: &mut Errors,
) -> Option<Spanned<Semantic>> {
    let mut on = None;
    let mut threshold: Option<Spanned<f64>> = None;
    let mut max_entries = None;
    let mut verify = None;
    let mut judge = None;
    let before = errors.len();
    for opt in nested {
        let n = opt.name.to_string();
        if opt.nested.is_some() {
            errors.push(syn::Error::new(
                opt.name.span(),
                format!("`{n}` takes a value: write `{n} = <value>`"),
            ));
            continue;
        }
        match n.as_str() {
            "on" => match ident(&opt.value) {
                Some(i) => set(&mut on, &opt.name, Some(i.clone()), errors),
                None => errors.push(syn::Error::new(
                    opt.value.span(),
                    "`on` names the parameter compared by meaning, e.g. `on = prompt`",
                )),
            },
            "threshold" => {
                let t = float(&opt.value, "threshold", errors);
                let t = t.filter(|t| {
                    let ok = t.value > 0.0 && t.value <= 1.0;
                    if !ok {
                        errors.push(syn::Error::new(
                            t.span,
                            "`threshold` is a cosine similarity in (0, 1]: 0.93–0.97 is the usual range, e.g. `threshold = 0.95`",
                        ));
                    }
                    ok
                });
                set(&mut threshold, &opt.name, t, errors)
            }
            "max_entries" => set(
                &mut max_entries,
                &opt.name,
                count(
                    &opt.value,
                    "max_entries",
                    "stored prompts per scope, e.g. `max_entries = 1000`",
                    errors,
                ),
                errors,
            ),
            "verify" => {
                let v = float(&opt.value, "verify", errors);
                let v = v.filter(|v| {
                    let ok = (0.0..=1.0).contains(&v.value);
                    if !ok {
                        errors.push(syn::Error::new(
                            v.span,
                            "`verify` is the fraction of hits also sent to the source, in [0, 1], e.g. `verify = 0.01` for 1%",
                        ));
                    }
                    ok
                });
                set(&mut verify, &opt.name, v, errors)
            }
            "judge" => match &opt.value {
                Expr::Path(p) if p.qself.is_none() => {
                    set(&mut judge, &opt.name, Some(p.path.clone()), errors)
                }
                other => errors.push(syn::Error::new(
                    other.span(),
                    "`judge` names a function `fn(&V, &V) -> bool` that says whether two answers agree, e.g. `judge = same_answer`",
                )),
            },
            _ => {
                let hint = crate::errors::did_you_mean(&n, SEMANTIC_OPTION_NAMES.iter().copied())
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                errors.push(syn::Error::new(
                    opt.name.span(),
                    format!(
                        "unknown option `{n}` of `semantic(…)`{hint} (options: {})",
                        SEMANTIC_OPTION_NAMES.join(", ")
                    ),
                ));
            }
        }
    }
    if errors.len() > before {
        return None;
    }
    let Some(on) = on else {
        errors.push(syn::Error::new(
            name.span(),
            "`semantic(…)` needs `on = <parameter>`: the parameter compared by meaning (e.g. the prompt)",
        ));
        return None;
    };
    let Some(threshold) = threshold else {
        errors.push(syn::Error::new(
            name.span(),
            "`semantic(…)` needs a `threshold`: the cosine similarity a stored prompt must reach to answer, e.g. `threshold = 0.95`",
        ));
        return None;
    };
    if judge.is_some() && verify.is_none() {
        errors.push(syn::Error::new(
            name.span(),
            "`judge` compares the answers of sampled hits and the source: it needs `verify = <fraction>`, e.g. `verify = 0.01`",
        ));
        return None;
    }
    Some(Spanned {
        value: Semantic {
            on,
            threshold: threshold.value,
            threshold_span: threshold.span,
            max_entries: max_entries.map(|m| m.value),
            verify,
            judge,
        },
        span: name.span(),
    })
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("150ms"), Some(150_000_000));
        assert_eq!(parse_duration("10s"), Some(10_000_000_000));
        assert_eq!(parse_duration("5m"), Some(300_000_000_000));
        assert_eq!(parse_duration("1h30m"), Some(5_400_000_000_000));
        assert_eq!(parse_duration("1d2h"), Some(93_600_000_000_000));
        for bad in [
            "", "10", "s", "10x", "30m1h", "1.5s", "-1s", "10s10s", "1 h",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
