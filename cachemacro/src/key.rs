//! Key and tag templates: `"user:<id>"`, `"org:<org_id>:<user.id>"`.
//!
//! A template is literal text and `<placeholder>`s, each a parameter name optionally
//! followed by `.field`s. Checked here against the function's parameters; rendered at run
//! time by `KeyBuilder`, which escapes the template's punctuation inside values.

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
    pub fn parse(lit: &LitStr) -> Result<Self, syn::Error> {
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
        Ok(Self { parts, span })
    }

    /// The placeholders' first segments (parameter names, or `self`).
    pub fn roots(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Place(path) => Some(path[0].as_str()),
            Part::Lit(_) => None,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Template, String> {
        Template::parse(&LitStr::new(s, Span::call_site())).map_err(|e| e.to_string())
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
}
