//! Key and tag templates: `"user:<id>"`, `"org:<org_id>:<user.id>"`.
//!
//! A template is literal text and `<placeholder>`s, each a parameter name optionally
//! followed by `.field`s. The literal text has no whitespace or control characters, and at
//! most one `{…}` pair (a Redis Cluster hash tag). Parsed and checked here (placeholders
//! are checked against the function's parameters in `model`); rendered at run time by
//! `KeyBuilder`, which escapes the template's punctuation inside values.

use proc_macro2::Span;
use syn::LitStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Lit(String),
    /// `a.b.c` → `["a", "b", "c"]`.
    Place(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct Template {
    pub parts: Vec<Part>,
    pub span: Span,
}

impl Template {
    /// Parses a key (`what = "key"`) or tag (`what = "tag"`) template.
    pub fn parse(lit: &LitStr, what: &str) -> Result<Self, syn::Error> {
        let span = lit.span();
        let text = lit.value();
        let err = |msg: String| syn::Error::new(span, msg);
        let mut parts = Vec::new();
        let mut rest = text.as_str();
        while !rest.is_empty() {
            match rest.find(['<', '>']) {
                None => {
                    parts.push(Part::Lit(rest.to_owned()));
                    break;
                }
                Some(i) if rest.as_bytes()[i] == b'>' => {
                    return Err(err(format!(
                        "`>` without `<` in template \"{text}\": placeholders are written `<param>`"
                    )));
                }
                Some(i) => {
                    if i > 0 {
                        parts.push(Part::Lit(rest[..i].to_owned()));
                    }
                    let after = &rest[i + 1..];
                    let end = after.find('>').ok_or_else(|| {
                        err(format!(
                            "unclosed `<` in template \"{text}\": write `<param>`"
                        ))
                    })?;
                    let inner = &after[..end];
                    let path: Vec<String> = inner.split('.').map(str::to_owned).collect();
                    let valid = path.iter().enumerate().all(|(n, seg)| {
                        // A tag may name each element of the returned value: `<result[].id>`.
                        if n == 0 && what == "tag" && seg == "result[]" {
                            return true;
                        }
                        let mut chars = seg.chars();
                        match chars.next() {
                            Some(c) if c.is_ascii_digit() => {
                                n > 0 && seg.bytes().all(|b| b.is_ascii_digit())
                            }
                            Some(c) if c == '_' || c.is_alphabetic() => {
                                chars.all(|c| c == '_' || c.is_alphanumeric())
                            }
                            _ => false,
                        }
                    });
                    if !valid && what == "key" && path[0] == "result[]" {
                        return Err(err(format!(
                            "`<{inner}>` names the returned value, which a key cannot: the key is rendered before the call; name it in a tag instead, e.g. `tags = [\"item:<result[].id>\"]`"
                        )));
                    }
                    if !valid {
                        return Err(err(format!(
                            "malformed placeholder `<{inner}>` in template \"{text}\": write `<param>` or `<param.field>`"
                        )));
                    }
                    if matches!(parts.last(), Some(Part::Place(_))) {
                        return Err(err(format!(
                            "placeholders `<…><{inner}>` touch in \"{text}\": put a separator such as `:` between them, or different arguments could render the same key"
                        )));
                    }
                    if let (Some(Part::Lit(sep)), Some(Part::Place(_))) =
                        (parts.last(), parts.iter().rev().nth(1))
                    {
                        if !sep.chars().any(|c| c.is_ascii_punctuation() && c != '%') {
                            return Err(err(format!(
                                "the text \"{sep}\" between two placeholders in \"{text}\" needs a punctuation separator such as `:`, or different arguments could render the same key"
                            )));
                        }
                    }
                    parts.push(Part::Place(path));
                    rest = &after[end + 1..];
                }
            }
        }
        check_text(&parts, &text, what).map_err(err)?;
        Ok(Self { parts, span })
    }

    /// Each placeholder's path: `<user.id>` → `["user", "id"]`.
    pub fn places(&self) -> impl Iterator<Item = &[String]> {
        self.parts.iter().filter_map(|p| match p {
            Part::Place(path) => Some(path.as_slice()),
            Part::Lit(_) => None,
        })
    }

    /// The placeholders' first segments (parameter names, or `self`).
    pub fn roots(&self) -> impl Iterator<Item = &str> {
        self.places().map(|path| path[0].as_str())
    }

    /// The template as text, placeholders written `<a.b>` (what the runtime compares to
    /// find two functions whose keys could collide).
    pub fn text(&self) -> String {
        parts_text(&self.parts)
    }

    /// `%` plus every ASCII punctuation character of the literal text, sorted.
    pub fn escape_set(&self) -> Vec<u8> {
        let mut set = vec![b'%'];
        for p in &self.parts {
            if let Part::Lit(s) = p {
                set.extend(s.bytes().filter(|b| b.is_ascii_punctuation()));
            }
        }
        set.sort_unstable();
        set.dedup();
        set
    }
}

/// The rules for a template's literal text, over all its literal parts in order: no
/// whitespace or control characters, and at most one non-empty `{…}` hash tag.
fn check_text(parts: &[Part], text: &str, what: &str) -> Result<(), String> {
    let lits = || {
        parts.iter().filter_map(|p| match p {
            Part::Lit(s) => Some(s.as_str()),
            Part::Place(_) => None,
        })
    };
    if let Some(c) = lits()
        .flat_map(str::chars)
        .find(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "a {what} cannot contain whitespace or control characters (found {c:?} in {text:?}): Redis keys with them are hard to inspect, and the cache reserves them for its own keys"
        ));
    }
    // `None`: outside a hash tag; `Some(empty)`: inside one.
    let mut open: Option<bool> = None;
    let mut tags = 0;
    let mut valid = true;
    for part in parts {
        match part {
            Part::Place(_) => {
                if let Some(empty) = &mut open {
                    *empty = false;
                }
            }
            Part::Lit(s) => {
                for c in s.chars() {
                    match (c, open) {
                        ('{', None) if tags == 0 => open = Some(true),
                        ('{', _) => valid = false,
                        ('}', Some(false)) => {
                            open = None;
                            tags += 1;
                        }
                        ('}', _) => valid = false,
                        (_, Some(_)) => open = Some(false),
                        (_, None) => {}
                    }
                }
            }
        }
    }
    if !valid || open.is_some() {
        return Err(format!(
            "`{{…}}` in a {what} is a Redis Cluster hash tag: write one `{{…}}` pair around the part that decides the slot, e.g. `{{user:<id>}}:profile`"
        ));
    }
    Ok(())
}

/// `parts` as template text.
pub fn parts_text(parts: &[Part]) -> String {
    let mut out = String::new();
    for p in parts {
        match p {
            Part::Lit(s) => out.push_str(s),
            Part::Place(path) => {
                out.push('<');
                out.push_str(&path.join("."));
                out.push('>');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Template, String> {
        Template::parse(&LitStr::new(s, Span::call_site()), "key").map_err(|e| e.to_string())
    }

    #[test]
    fn templates() {
        let t = parse("org:<org_id>:<user.id>").unwrap();
        assert_eq!(
            t.parts,
            vec![
                Part::Lit("org:".into()),
                Part::Place(vec!["org_id".into()]),
                Part::Lit(":".into()),
                Part::Place(vec!["user".into(), "id".into()]),
            ]
        );
        assert_eq!(t.escape_set(), b"%:".to_vec());
        assert!(parse("<a>-<b.0>").is_ok());
        assert!(parse("<a><b>").unwrap_err().contains("separator"));
        assert!(parse("<a>x<b>").unwrap_err().contains("separator"));
        assert!(parse("<a>%<b>").unwrap_err().contains("separator"));
        assert!(parse("user:<id").unwrap_err().contains("unclosed"));
        assert!(parse("user:<>").unwrap_err().contains("malformed"));
        assert!(parse("user:<a b>").unwrap_err().contains("malformed"));
        assert!(parse("a>b").unwrap_err().contains("without"));
    }

    #[test]
    fn no_whitespace_or_control_characters_in_the_text() {
        for bad in [
            "user: <id>",
            "user:<id> ",
            "\tuser:<id>",
            "a\nb",
            "a\u{7f}<id>",
            "a\u{a0}b",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(
                e.starts_with("a key cannot contain whitespace or control characters (found "),
                "{bad:?}: {e}"
            );
        }
        let e = parse("user: <id>").unwrap_err();
        assert!(e.contains("(found ' ' in \"user: <id>\")"), "{e}");
        let e = parse("a\tb").unwrap_err();
        assert!(e.contains("(found '\\t' in \"a\\tb\")"), "{e}");
        let e = Template::parse(&LitStr::new("org: <id>", Span::call_site()), "tag").unwrap_err();
        assert!(e.to_string().starts_with("a tag cannot contain"), "{e}");
        // Inside a placeholder it is a malformed placeholder, not literal text.
        assert!(parse("user:<a b>").unwrap_err().contains("malformed"));
        assert!(parse("user-ü:<id>").is_ok());
    }

    #[test]
    fn braces_are_one_hash_tag() {
        for good in [
            "{user:<id>}:profile",
            "{<org>}:members",
            "{user}:<id>",
            "<org>:{<a>:<b>}:x",
            "{<a>}",
            "x:{a}",
        ] {
            assert!(parse(good).is_ok(), "{good}: {:?}", parse(good).err());
        }
        for bad in [
            "a{b",
            "a}b{",
            "{}x",
            "{a}{b}",
            "{a}:{<id>}",
            "{{a}}",
            "a}",
            "{<id>",
            "<id>}",
            "{a{b}}",
            "{}<id>",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(
                e.starts_with("`{…}` in a key is a Redis Cluster hash tag: write one `{…}` pair around the part that decides the slot, e.g. `{user:<id>}:profile`"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn the_escape_set_is_the_punctuation_of_the_text() {
        let t = parse("{user:<id>}:p-<x>").unwrap();
        assert_eq!(t.escape_set(), b"%-:{}".to_vec());
        assert_eq!(parse("<id>").unwrap().escape_set(), b"%".to_vec());
    }
}
