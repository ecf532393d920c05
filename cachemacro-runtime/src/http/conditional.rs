//! Conditional requests (RFC 9110 §13): `If-None-Match` and `If-Modified-Since`.

use std::time::SystemTime;

use http::header;
use http::Request;

/// One entity tag: its opaque text (quotes included) and whether it is weak (`W/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityTag {
    /// Weak (`W/"…"`).
    pub weak: bool,
    /// The quoted text, `"…"`.
    pub opaque: String,
}

impl EntityTag {
    /// The weak comparison (RFC 9110 §8.8.3.2): the opaque texts are equal, weak or not.
    pub fn weak_eq(&self, other: &EntityTag) -> bool {
        self.opaque == other.opaque
    }

    /// The strong comparison: both strong and equal.
    pub fn strong_eq(&self, other: &EntityTag) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }
}

/// An `If-None-Match` / `If-Match` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntityTags {
    /// `*`: any current representation.
    Any,
    /// A list of tags.
    List(Vec<EntityTag>),
}

/// Parses an `If-None-Match`-style field value (`*`, or a comma-separated list of
/// entity tags); `None` if it is malformed.
pub fn parse_entity_tags(value: &[u8]) -> Option<EntityTags> {
    let trimmed = trim(value);
    if trimmed == b"*" {
        return Some(EntityTags::Any);
    }
    let mut tags = Vec::new();
    let mut rest = trimmed;
    loop {
        rest = trim(rest);
        if rest.is_empty() {
            break;
        }
        if rest[0] == b',' {
            rest = &rest[1..]; // empty list elements are allowed (RFC 9110 §5.6.1)
            continue;
        }
        let weak = rest.starts_with(b"W/");
        if weak {
            rest = &rest[2..];
        }
        if rest.first() != Some(&b'"') {
            return None;
        }
        let end = rest[1..].iter().position(|&b| b == b'"')? + 1;
        let inner = &rest[1..end];
        if !inner
            .iter()
            .all(|&b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
        {
            return None;
        }
        tags.push(EntityTag {
            weak,
            opaque: String::from_utf8_lossy(&rest[..=end]).into_owned(),
        });
        rest = trim(&rest[end + 1..]);
        match rest.first() {
            None => break,
            Some(b',') => rest = &rest[1..],
            Some(_) => return None,
        }
    }
    if tags.is_empty() {
        return None;
    }
    Some(EntityTags::List(tags))
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The preconditions of a request, as the layer evaluates them after the handler ran.
#[derive(Debug, Default)]
pub(super) struct Conditions {
    /// `GET` or `HEAD`.
    applies: bool,
    /// `If-None-Match`, every field line joined; `Some(None)`: present but malformed.
    none_match: Option<Option<EntityTags>>,
    /// `If-Modified-Since`, when a valid date.
    modified_since: Option<SystemTime>,
    /// The request carries credentials or a per-user header (set by the layer).
    pub(super) personal: bool,
    /// A hash of the request's values of the route's `Vary` headers (set by the layer).
    pub(super) variant: Option<u64>,
}

impl Conditions {
    pub(super) fn of<B>(req: &Request<B>) -> Self {
        let applies = super::conditional_method(req.method());
        if !applies {
            return Self::default();
        }
        let lines: Vec<&[u8]> = req
            .headers()
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        let none_match = (!lines.is_empty()).then(|| {
            let mut all = Vec::new();
            for line in lines {
                match parse_entity_tags(line)? {
                    EntityTags::Any => return Some(EntityTags::Any),
                    EntityTags::List(l) => all.extend(l),
                }
            }
            Some(EntityTags::List(all))
        });
        // One date, or the field is ignored (RFC 9110 §13.1.3: a field value with more than
        // one member, as two lines make, is not a valid HTTP-date).
        let mut dates = req.headers().get_all(header::IF_MODIFIED_SINCE).iter();
        let modified_since = match (dates.next(), dates.next()) {
            (Some(v), None) => v
                .to_str()
                .ok()
                .and_then(|v| httpdate::parse_http_date(v.trim()).ok()),
            _ => None,
        };
        Self {
            applies,
            none_match,
            modified_since,
            personal: false,
            variant: None,
        }
    }

    /// Whether the response (`etag`, `last_modified` as sent) may be answered `304`.
    pub(super) fn not_modified(
        &self,
        etag: Option<&str>,
        last_modified: Option<SystemTime>,
    ) -> bool {
        if !self.applies {
            return false;
        }
        match &self.none_match {
            // If-None-Match decides; If-Modified-Since is then ignored (RFC 9110 §13.1.3).
            Some(Some(EntityTags::Any)) => true,
            Some(Some(EntityTags::List(tags))) => {
                let Some(ours) = etag.and_then(|e| parse_entity_tags(e.as_bytes())) else {
                    return false;
                };
                let EntityTags::List(ours) = ours else {
                    return false;
                };
                ours.iter().any(|o| tags.iter().any(|t| t.weak_eq(o)))
            }
            // Malformed: not a match (a plain 200), and If-Modified-Since is still ignored.
            Some(None) => false,
            None => match (self.modified_since, last_modified) {
                // Last-Modified is sent in whole seconds: compare those.
                (Some(since), Some(modified)) => {
                    super::unix_secs(modified) <= super::unix_secs(since)
                }
                _ => false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_weak_tags_and_star() {
        assert_eq!(parse_entity_tags(b" * "), Some(EntityTags::Any));
        let Some(EntityTags::List(l)) = parse_entity_tags(br#""a", W/"b" ,, "c""#) else {
            panic!("should parse");
        };
        assert_eq!(l.len(), 3);
        assert!(l[1].weak && l[1].opaque == "\"b\"");
        assert!(l[1].weak_eq(&l[1]) && !l[1].strong_eq(&l[1]) && l[0].strong_eq(&l[0]));
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in [
            &b""[..],
            b"abc",
            b"\"unterminated",
            b"\"a\" \"b\"",
            b"W/abc",
            b"\"a\"x",
            b"\"a b\"",
            b"*, \"a\"",
        ] {
            assert_eq!(
                parse_entity_tags(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
