//! Rendering keys from templates. The macro splits a template into literal parts and
//! placeholders; at run time each placeholder's `Display` output is written with every
//! character that could be confused with punctuation percent-escaped, so two different
//! argument lists never render the same key, and no value can render another template's
//! key or one of the cache's own keys.
//!
//! Escaped in every value, whatever the template: `%`, `:`, `{`, `}`, whitespace and
//! control characters (non-ASCII ones as their UTF-8 bytes, `%E2%80%A8`), plus every ASCII
//! punctuation character of the template's own text.

use std::fmt::{self, Write};

/// Bit `b` set: ASCII byte `b` is escaped in every value.
const ALWAYS: u128 = {
    let mut set: u128 = 0;
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        if c.is_ascii_control() || c.is_ascii_whitespace() || c == b' ' {
            set |= 1 << b;
        }
        b += 1;
    }
    set | (1 << b'%') | (1 << b':') | (1 << b'{') | (1 << b'}')
};

/// Builds one key. `escape` lists the ASCII characters escaped in placeholder values
/// besides the fixed set (the macro passes the template's punctuation).
#[derive(Debug)]
pub struct KeyBuilder {
    buf: String,
    escape: u128,
}

impl KeyBuilder {
    /// A builder with room for `capacity` bytes.
    #[inline]
    pub fn new(capacity: usize, escape: &'static [u8]) -> Self {
        let mut set = ALWAYS;
        for &b in escape {
            if b < 128 {
                set |= 1 << b;
            }
        }
        Self {
            buf: String::with_capacity(capacity),
            escape: set,
        }
    }

    /// A builder for a tag: values are written as they are, so `tags = ["org:<org>"]` with
    /// `org = "Acme Corp"` is the tag `org:Acme Corp`, which
    /// `invalidate_tag(&format!("org:{org}"))` reaches. Tags live in a namespace of their own
    /// (docs/FORMAT.md), so no value can make a tag reach a value's key; two argument lists
    /// that write the same tag only invalidate together, which is safe.
    #[inline]
    pub fn tag(capacity: usize) -> Self {
        Self {
            buf: String::with_capacity(capacity),
            escape: 0,
        }
    }

    /// Appends literal template text, unescaped.
    #[inline]
    pub fn lit(&mut self, s: &str) {
        self.buf.push_str(s);
    }

    /// Appends a placeholder's value, escaped.
    #[inline]
    pub fn arg<T: fmt::Display + ?Sized>(&mut self, value: &T) {
        let mut w = Escaping {
            buf: &mut self.buf,
            escape: self.escape,
        };
        // Writing to a String only fails if the value's Display impl fails; the key is then
        // whatever was written, which is still deterministic for that value.
        let _ = write!(w, "{value}");
    }

    /// The rendered key.
    #[inline]
    pub fn finish(self) -> String {
        self.buf
    }
}

struct Escaping<'a> {
    buf: &'a mut String,
    escape: u128,
}

impl Escaping<'_> {
    #[inline]
    fn plain(&self, b: u8) -> bool {
        self.escape == 0 || (b < 128 && self.escape >> b & 1 == 0)
    }
}

impl Write for Escaping<'_> {
    #[inline]
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if s.bytes().all(|b| self.plain(b)) {
            self.buf.push_str(s);
            return Ok(());
        }
        for c in s.chars() {
            let escape = if c.is_ascii() {
                !self.plain(c as u8)
            } else {
                self.escape != 0 && (c.is_whitespace() || c.is_control())
            };
            if escape {
                let mut utf8 = [0u8; 4];
                for b in c.encode_utf8(&mut utf8).bytes() {
                    write!(self.buf, "%{b:02X}")?;
                }
            } else {
                self.buf.push(c);
            }
        }
        Ok(())
    }
}

/// One piece of a template, as [`templates_overlap`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    Char(char),
    /// A placeholder: any value text, which never holds a character of `escaped` raw.
    Value,
}

fn pieces(template: &str, escape: &[u8]) -> (Vec<Piece>, u128) {
    let mut out = Vec::new();
    let mut escaped = ALWAYS;
    for &b in escape {
        if b < 128 {
            escaped |= 1 << b;
        }
    }
    escaped &= !(1 << b'%'); // escapes themselves are `%XX`
    let mut inside = false;
    for c in template.chars() {
        match c {
            '<' => inside = true,
            '>' if inside => {
                inside = false;
                out.push(Piece::Value);
            }
            _ if inside => {}
            _ => out.push(Piece::Char(c)),
        }
    }
    (out, escaped)
}

/// Whether some arguments of a function keyed by template `a` and some of one keyed by `b`
/// can render the same key. Templates are written as the macro hands them over (literal
/// text and `<param>` placeholders), each with what its values escape besides the fixed set.
pub(crate) fn templates_overlap(a: (&str, &[u8]), b: (&str, &[u8])) -> bool {
    let (a, esc_a) = pieces(a.0, a.1);
    let (b, esc_b) = pieces(b.0, b.1);
    // A placeholder of a template can stand for character `c` of the other's text.
    let fits = |c: char, escaped: u128| {
        if c.is_ascii() {
            escaped >> (c as u8) & 1 == 0
        } else {
            !(c.is_whitespace() || c.is_control())
        }
    };
    // reach[i][j]: a[i..] and b[j..] can render one common string.
    let mut reach = vec![vec![false; b.len() + 1]; a.len() + 1];
    reach[a.len()][b.len()] = true;
    for i in (0..=a.len()).rev() {
        for j in (0..=b.len()).rev() {
            if i == a.len() && j == b.len() {
                continue;
            }
            let mut r = false;
            if i < a.len() && a[i] == Piece::Value {
                r |= reach[i + 1][j]; // a's value renders empty
                if j < b.len() {
                    r |= match b[j] {
                        Piece::Char(c) => fits(c, esc_a) && reach[i][j + 1],
                        Piece::Value => reach[i][j + 1],
                    };
                }
            }
            if j < b.len() && b[j] == Piece::Value {
                r |= reach[i][j + 1];
                if let Some(&Piece::Char(c)) = a.get(i) {
                    r |= fits(c, esc_b) && reach[i + 1][j];
                }
            }
            if let (Some(Piece::Char(x)), Some(Piece::Char(y))) = (a.get(i), b.get(j)) {
                r |= x == y && reach[i + 1][j + 1];
            }
            reach[i][j] = r;
        }
    }
    reach[0][0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template_punct: &'static [u8], parts: &[Result<&str, &str>]) -> String {
        let mut k = KeyBuilder::new(16, template_punct);
        for p in parts {
            match p {
                Ok(lit) => k.lit(lit),
                Err(value) => k.arg(value),
            }
        }
        k.finish()
    }

    #[test]
    fn placeholders_cannot_forge_separators() {
        let r = |x: &str, y: &str| render(b":", &[Ok("a:"), Err(x), Ok(":"), Err(y)]);
        assert_eq!(r("1", "2"), "a:1:2");
        assert_ne!(r("1:2", "3"), r("1", "2:3"));
        assert_ne!(r("1%3A2", "3"), r("1:2", "3"));
        assert_eq!(r("1:2", "3"), "a:1%3A2:3");
    }

    #[test]
    fn no_value_renders_another_templates_key_or_an_internal_one() {
        // `key = "<token>"` with "user:42" is not the key of `key = "user:<id>"`.
        let token = render(b"", &[Err("user:42")]);
        let user = render(b":", &[Ok("user:"), Err("42")]);
        assert_ne!(token, user);
        assert_eq!(token, "user%3A42");
        // Braces (cluster hash tags), whitespace and control characters never pass.
        assert_eq!(
            render(b"", &[Err("{user:42} gen")]),
            "%7Buser%3A42%7D%20gen"
        );
        assert_eq!(render(b"", &[Err("a\tb\nc\u{7f}")]), "a%09b%0Ac%7F");
        assert_eq!(
            render(b"", &[Err("x\u{a0}y\u{2028}z\u{85}")]),
            "x%C2%A0y%E2%80%A8z%C2%85"
        );
        // Other text, including non-ASCII letters, is kept as it is.
        assert_eq!(render(b"", &[Err("Zoë-7_ü")]), "Zoë-7_ü");
        assert_eq!(render(b"-", &[Err("a-b")]), "a%2Db");
    }

    #[test]
    fn tags_keep_their_values_as_written() {
        let mut t = KeyBuilder::tag(8);
        t.lit("org:");
        t.arg("Acme Corp: {EU} 100%\u{a0}");
        assert_eq!(t.finish(), "org:Acme Corp: {EU} 100%\u{a0}");
    }

    #[test]
    fn overlapping_templates_are_found() {
        // The same shape under other names: the same keys.
        assert!(templates_overlap(
            ("user:<id>", b"%:"),
            ("user:<uid>", b"%:")
        ));
        // `<token>` could be "user:42"… but values never hold a raw `:`.
        assert!(!templates_overlap(("<token>", b"%"), ("user:<id>", b"%:")));
        assert!(!templates_overlap(
            ("user:<id>", b"%:"),
            ("user:<id>:posts", b"%:")
        ));
        assert!(!templates_overlap(
            ("user:<id>", b"%:"),
            ("org:<id>", b"%:")
        ));
        // Text runs on into a value: "users5" is both.
        assert!(templates_overlap(("user<id>", b"%"), ("users<x>", b"%")));
        assert!(templates_overlap(("<a>", b"%"), ("<b>", b"%")));
        assert!(templates_overlap(("a-<x>", b"%-"), ("a-<y>", b"%-")));
        assert!(
            !templates_overlap(("a-<x>", b"%-"), ("a-<y>-b", b"%-")),
            "values of both escape `-`"
        );
        assert!(!templates_overlap(
            ("m::f:<id>", b"%:"),
            ("m::g:<id>", b"%:")
        ));
        assert!(templates_overlap(("x<a>", b"%"), ("<b>y", b"%")));
        assert!(!templates_overlap(("{u:<id>}", b"%:{}"), ("u:<id>", b"%:")));
    }
}
