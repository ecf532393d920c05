//! Rendering keys from templates. The macro splits a template into literal parts and
//! placeholders; at run time each placeholder's `Display` output is written with every
//! character that could be confused with the template's own punctuation percent-escaped,
//! so two different argument lists never render the same key.

use std::fmt::{self, Write};

/// Builds one key. `escape` lists the ASCII characters escaped in placeholder values (the
/// macro passes `%` plus every punctuation character of the template's literal text).
#[derive(Debug)]
pub struct KeyBuilder {
    buf: String,
    escape: &'static [u8],
}

impl KeyBuilder {
    /// A builder with room for `capacity` bytes.
    #[inline]
    pub fn new(capacity: usize, escape: &'static [u8]) -> Self {
        Self {
            buf: String::with_capacity(capacity),
            escape,
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
    escape: &'static [u8],
}

impl Write for Escaping<'_> {
    #[inline]
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if !s.bytes().any(|b| self.escape.contains(&b)) {
            self.buf.push_str(s);
            return Ok(());
        }
        for c in s.chars() {
            if c.is_ascii() && self.escape.contains(&(c as u8)) {
                write!(self.buf, "%{:02X}", c as u8)?;
            } else {
                self.buf.push(c);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(x: &str, y: &str) -> String {
        let mut k = KeyBuilder::new(16, b"%:");
        k.lit("a:");
        k.arg(x);
        k.lit(":");
        k.arg(y);
        k.finish()
    }

    #[test]
    fn placeholders_cannot_forge_separators() {
        assert_eq!(render("1", "2"), "a:1:2");
        assert_ne!(render("1:2", "3"), render("1", "2:3"));
        assert_ne!(render("1%3A2", "3"), render("1:2", "3"));
        assert_eq!(render("1:2", "3"), "a:1%3A2:3");
    }
}
