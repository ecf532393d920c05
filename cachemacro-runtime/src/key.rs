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

/// A rendered key, as the in-process tier holds it: inline up to 24 bytes, so most keys
/// allocate nothing.
pub type Key = compact_str::CompactString;

/// Bytes of a key rendered on the stack; longer keys spill to the heap.
const INLINE: usize = 48;

/// A key as a call renders it: on the stack (a hit looks it up without allocating), turned
/// into a [`Key`] only when the call goes past L1.
#[derive(Clone)]
pub struct Rendered {
    inline: [u8; INLINE],
    len: usize,
    /// The whole key, once it outgrew `inline`.
    spill: Option<String>,
}

impl Rendered {
    fn new() -> Self {
        Self {
            inline: [0; INLINE],
            len: 0,
            spill: None,
        }
    }

    #[inline(always)]
    fn push_str(&mut self, s: &str) {
        let end = self.len + s.len();
        if end <= INLINE && self.spill.is_none() {
            self.inline[self.len..end].copy_from_slice(s.as_bytes());
            self.len = end;
        } else {
            self.push_spilled(s);
        }
    }

    /// [`Rendered::push_str`] past the inline buffer.
    #[cold]
    #[inline(never)]
    fn push_spilled(&mut self, s: &str) {
        match &mut self.spill {
            Some(spill) => spill.push_str(s),
            None => {
                let mut spill = String::with_capacity((self.len + s.len()) * 2);
                spill.push_str(self.as_str());
                spill.push_str(s);
                self.spill = Some(spill);
            }
        }
    }

    /// The key's bytes (what an L1 look-up needs).
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        match &self.spill {
            Some(s) => s.as_bytes(),
            None => &self.inline[..self.len],
        }
    }

    /// The key.
    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.spill {
            Some(s) => s,
            // Only whole `str`s were copied in: always valid (checked, never unsafe).
            None => std::str::from_utf8(&self.inline[..self.len]).unwrap_or_default(),
        }
    }
}

impl From<Rendered> for Key {
    #[inline]
    fn from(r: Rendered) -> Key {
        match r.spill {
            Some(s) => Key::from(s),
            None => Key::from(r.as_str()),
        }
    }
}

impl fmt::Debug for Rendered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Write for Rendered {
    #[inline]
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push_str(s);
        Ok(())
    }
}

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
    buf: Rendered,
    escape: u128,
}

/// The escape set of a template whose text holds the ASCII punctuation `extra`: the fixed
/// set plus those. `const`, so generated code computes it once, at compile time.
pub const fn escape_set(extra: &[u8]) -> u128 {
    let mut set = ALWAYS;
    let mut i = 0;
    while i < extra.len() {
        if extra[i] < 128 {
            set |= 1 << extra[i];
        }
        i += 1;
    }
    set
}

impl KeyBuilder {
    /// A builder with room for `capacity` bytes that escapes `escape` (see [`escape_set`]).
    #[inline]
    pub fn new(capacity: usize, escape: u128) -> Self {
        let _ = capacity;
        Self {
            buf: Rendered::new(),
            escape: escape | ALWAYS,
        }
    }

    /// A builder for a tag: values are written as they are, so `tags = ["org:<org>"]` with
    /// `org = "Acme Corp"` is the tag `org:Acme Corp`, which
    /// `invalidate_tag(&format!("org:{org}"))` reaches. Tags live in a namespace of their own
    /// (docs/FORMAT.md), so no value can make a tag reach a value's key; two argument lists
    /// that write the same tag only invalidate together, which is safe.
    #[inline]
    pub fn tag(capacity: usize) -> Self {
        let _ = capacity;
        Self {
            buf: Rendered::new(),
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

    /// Appends text a value rendered, escaped (the fast paths of [`Arg`]).
    #[inline]
    fn push_escaped(&mut self, s: &str) {
        let _ = Escaping {
            buf: &mut self.buf,
            escape: self.escape,
        }
        .write_str(s);
    }

    /// The key rendered so far, in place.
    #[inline]
    pub fn rendered(&self) -> &Rendered {
        &self.buf
    }

    /// The rendered key.
    #[inline]
    pub fn finish(self) -> Rendered {
        self.buf
    }

    /// The rendered key, as a `String` (a tag).
    #[inline]
    pub fn finish_string(self) -> String {
        match self.buf.spill {
            Some(s) => s,
            None => self.buf.as_str().to_owned(),
        }
    }
}

/// A placeholder's value, rendered by the fastest way its type allows: integers and strings
/// directly, anything else through `Display`. The expansion writes
/// `(&Arg(v)).kind().render(&mut k, v)`: method resolution picks [`DirectKind`] when the
/// type is [`RenderDirect`] (found without autoref), else [`DisplayKind`] (found with it),
/// whose `render` asks for `Display`, so a value that has neither is reported as "doesn't
/// implement `Display`" at the template. Both write exactly what `Display` would, escaped
/// the same way.
pub struct Arg<'a, T: ?Sized>(pub &'a T);

/// Types rendered without `core::fmt`.
pub trait RenderDirect {
    /// Appends the value to the key.
    fn render_direct(&self, k: &mut KeyBuilder);
}

/// Picks `Direct` for a [`RenderDirect`] value.
pub trait DirectKind {
    /// The renderer.
    #[inline]
    fn kind(&self) -> Direct {
        Direct
    }
}

impl<T: RenderDirect + ?Sized> DirectKind for Arg<'_, T> {}

/// Picks `ViaDisplay` for any other value.
pub trait DisplayKind {
    /// The renderer.
    #[inline]
    fn kind(&self) -> ViaDisplay {
        ViaDisplay
    }
}

impl<T: ?Sized> DisplayKind for &Arg<'_, T> {}

/// Renders a [`RenderDirect`] value.
pub struct Direct;

impl Direct {
    /// Appends `v` to the key.
    #[inline]
    pub fn render<T: RenderDirect + ?Sized>(self, k: &mut KeyBuilder, v: &T) {
        v.render_direct(k);
    }
}

/// Renders a value through `Display`.
pub struct ViaDisplay;

impl ViaDisplay {
    /// Appends `v` to the key.
    #[inline]
    pub fn render<T: fmt::Display + ?Sized>(self, k: &mut KeyBuilder, v: &T) {
        k.arg(v);
    }
}

impl<T: RenderDirect + ?Sized> RenderDirect for &T {
    #[inline]
    fn render_direct(&self, k: &mut KeyBuilder) {
        (**self).render_direct(k)
    }
}

macro_rules! render_unsigned {
    ($($t:ty),*) => {$(
        impl RenderDirect for $t {
            #[inline]
            fn render_direct(&self, k: &mut KeyBuilder) {
                // Digits are never escaped: ASCII alphanumerics are not punctuation.
                k.buf.push_str(itoa::Buffer::new().format(*self));
            }
        }
    )*};
}

macro_rules! render_signed {
    ($($t:ty),*) => {$(
        impl RenderDirect for $t {
            #[inline]
            fn render_direct(&self, k: &mut KeyBuilder) {
                if *self < 0 {
                    k.push_escaped("-"); // `-` is escaped where the template uses it
                }
                k.buf.push_str(itoa::Buffer::new().format(self.unsigned_abs()));
            }
        }
    )*};
}

render_unsigned!(u8, u16, u32, u64, u128, usize);
render_signed!(i8, i16, i32, i64, i128, isize);

impl RenderDirect for str {
    #[inline]
    fn render_direct(&self, k: &mut KeyBuilder) {
        k.push_escaped(self);
    }
}

impl RenderDirect for String {
    #[inline]
    fn render_direct(&self, k: &mut KeyBuilder) {
        k.push_escaped(self);
    }
}

struct Escaping<'a> {
    buf: &'a mut Rendered,
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
            let mut utf8 = [0u8; 4];
            if escape {
                for b in c.encode_utf8(&mut utf8).bytes() {
                    write!(self.buf, "%{b:02X}")?;
                }
            } else {
                self.buf.push_str(c.encode_utf8(&mut utf8));
            }
        }
        Ok(())
    }
}

// ---- packed keys ---------------------------------------------------------------------------

/// What an L1 look-up is given: the rendered key's bytes, or (a function whose key holds
/// only integer arguments) those integers packed losslessly into 128 bits, the function's
/// template being the same for all its keys. A packed look-up renders nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe<'a> {
    /// The rendered key.
    Bytes(&'a [u8]),
    /// The key's integers, packed (see [`KeyInt`]; in order, each at its own width).
    Packed([u64; 2]),
}

/// Turns a rendered key of a packed function back into its packed form: `None` for a
/// string that function could not have rendered. Generated by the macro, with the render
/// compared afterwards, so it is exact: `pack(render(args)) == Some(packed(args))`, and no
/// other string packs.
pub type Packer = fn(&str) -> Option<[u64; 2]>;

/// Packs 128 bits into two words.
#[inline(always)]
pub const fn pack(bits: u128) -> [u64; 2] {
    [bits as u64, (bits >> 64) as u64]
}

/// An integer type a key may be packed from: its bits, zero-extended (a signed value as its
/// two's complement of its own width), and how it reads back from a rendered key.
pub trait KeyInt: Sized {
    /// Its width in bits (what the packing reserves for it).
    const BITS: u32;
    /// Its bits, zero-extended to 128.
    fn bits(self) -> u128;
    /// Reads one value rendered by [`RenderDirect`] at the front of `p`.
    fn take(p: &mut KeyParse<'_>) -> Option<Self>;
}

macro_rules! key_int {
    ($($t:ty => $u:ty, $signed:expr);* $(;)?) => {$(
        impl KeyInt for $t {
            const BITS: u32 = <$u>::BITS;

            #[inline(always)]
            fn bits(self) -> u128 {
                self as $u as u128
            }

            fn take(p: &mut KeyParse<'_>) -> Option<Self> {
                let negative = $signed && p.sign();
                let digits = p.digits()?;
                if negative {
                    // Zero is never written with a sign.
                    <$t>::try_from(0i128.checked_sub_unsigned(digits).filter(|v| *v < 0)?).ok()
                } else {
                    <$t>::try_from(digits).ok()
                }
            }
        }
    )*};
}

key_int! {
    u8 => u8, false; u16 => u16, false; u32 => u32, false; u64 => u64, false;
    u128 => u128, false; usize => u64, false;
    i8 => u8, true; i16 => u16, true; i32 => u32, true; i64 => u64, true;
    i128 => u128, true; isize => u64, true;
}

/// Reads a rendered key back, part by part (what a function's packer is made of). It accepts
/// exactly what [`KeyBuilder`] writes for integers with the same escape set (digits without
/// leading zeros, a minus sign as that set writes it, never before zero), so a key that
/// reads back renders to itself: the macro packs only templates where each placeholder is
/// followed by the end or by text that does not start with a digit.
#[derive(Debug)]
pub struct KeyParse<'a> {
    rest: &'a str,
    escape: u128,
}

impl<'a> KeyParse<'a> {
    /// Reads `key`, rendered with the escape set `escape` (see [`escape_set`]).
    #[inline]
    pub fn new(key: &'a str, escape: u128) -> Self {
        Self {
            rest: key,
            escape: escape | ALWAYS,
        }
    }

    /// Literal template text.
    #[inline]
    pub fn lit(&mut self, text: &str) -> Option<()> {
        self.rest = self.rest.strip_prefix(text)?;
        Some(())
    }

    /// An integer placeholder's value.
    #[inline]
    pub fn int<T: KeyInt>(&mut self) -> Option<T> {
        T::take(self)
    }

    /// Whether the whole key was read.
    #[inline]
    pub fn end(&self) -> Option<()> {
        self.rest.is_empty().then_some(())
    }

    /// A minus sign, written as the escape set writes it.
    fn sign(&mut self) -> bool {
        let minus = if self.escape >> b'-' & 1 == 1 {
            "%2D"
        } else {
            "-"
        };
        match self.rest.strip_prefix(minus) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    /// A run of ASCII digits as `itoa` writes a number (no leading zeros), as a number.
    fn digits(&mut self) -> Option<u128> {
        let n = self.rest.bytes().take_while(u8::is_ascii_digit).count();
        let (digits, rest) = self.rest.split_at(n);
        if n == 0 || (n > 1 && digits.starts_with('0')) {
            return None;
        }
        self.rest = rest;
        digits.parse().ok()
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
        let mut k = KeyBuilder::new(16, escape_set(template_punct));
        for p in parts {
            match p {
                Ok(lit) => k.lit(lit),
                Err(value) => k.arg(value),
            }
        }
        k.finish_string()
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
    fn the_fast_paths_render_what_display_renders() {
        fn both<T: fmt::Display + RenderDirect>(v: T, punct: &'static [u8]) -> (String, String) {
            let mut fast = KeyBuilder::new(8, escape_set(punct));
            Arg(&v).kind().render(&mut fast, &v);
            let mut slow = KeyBuilder::new(8, escape_set(punct));
            slow.arg(&v);
            (fast.finish_string(), slow.finish_string())
        }
        for (punct, v) in [
            (&b":"[..], 0i64),
            (b":", -42),
            (b"-", -42),
            (b"-", i64::MIN),
            (b"", 7),
        ] {
            let (a, b) = both(v, punct);
            assert_eq!(a, b, "{v} with {punct:?}");
        }
        let (a, b) = both(u128::MAX, b"");
        assert_eq!(a, b);
        let (a, b) = both(String::from("a:b c%"), b":");
        assert_eq!(a, b);
        assert_eq!(a, "a%3Ab%20c%25");
    }

    #[test]
    fn tags_keep_their_values_as_written() {
        let mut t = KeyBuilder::tag(8);
        t.lit("org:");
        t.arg("Acme Corp: {EU} 100%\u{a0}");
        assert_eq!(t.finish_string(), "org:Acme Corp: {EU} 100%\u{a0}");
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

    /// Renders `v` between literals as the expansion does, with escape set `esc`.
    fn rendered<T: RenderDirect>(v: T, esc: &[u8]) -> String {
        let mut k = KeyBuilder::new(0, escape_set(esc));
        k.lit("k-");
        v.render_direct(&mut k);
        k.lit(":");
        k.finish_string()
    }

    fn read<T: KeyInt>(s: &str, esc: &[u8]) -> Option<T> {
        let mut p = KeyParse::new(s, escape_set(esc));
        p.lit("k-")?;
        let v = p.int()?;
        p.lit(":")?;
        p.end()?;
        Some(v)
    }

    #[test]
    fn integers_read_back_exactly_as_they_render() {
        fn each<T: KeyInt + RenderDirect + Copy + PartialEq + std::fmt::Debug>(vs: &[T]) {
            for &v in vs {
                for esc in [&b"%:"[..], b"%:-"] {
                    let s = rendered(v, esc);
                    assert_eq!(read::<T>(&s, esc), Some(v), "{s} with {esc:?}");
                }
            }
        }
        each(&[0u8, 1, 9, 10, 99, 100, u8::MAX]);
        each(&[i8::MIN, -1, 0, 1, i8::MAX]);
        each(&[0u16, u16::MAX]);
        each(&[i16::MIN, -10, i16::MAX]);
        each(&[0u32, 7, u32::MAX]);
        each(&[i32::MIN, -7, i32::MAX]);
        each(&[0u64, 1234567890, u64::MAX]);
        each(&[i64::MIN, -1, 0, i64::MAX]);
        each(&[0u128, u128::MAX]);
        each(&[i128::MIN, -1, 0, i128::MAX]);
        each(&[0usize, usize::MAX]);
        each(&[isize::MIN, isize::MAX]);
        for i in 0..10_000u64 {
            let v = fastrand::u64(..) >> (i % 64);
            each(&[v]);
            each(&[v as i64, (v as i64).wrapping_neg()]);
        }
    }

    #[test]
    fn nothing_reads_back_that_no_integer_renders() {
        let no = |s: &str, esc: &[u8]| {
            assert_eq!(read::<i64>(s, esc), None, "{s}");
            assert_eq!(read::<u64>(s, esc), None, "{s}");
        };
        for s in [
            "k-:", "k-007:", "k-00:", "k--0:", "k-+5:", "k-5x:", "k-5", "k-5::", "k- 5:",
        ] {
            no(s, b"%:");
        }
        no("k-%2D0:", b"%:-");
        assert_eq!(
            read::<i64>("k-%2D5:", b"%:"),
            None,
            "`-` is written raw here"
        );
        assert_eq!(read::<i64>("k--5:", b"%:-"), None, "`-` is escaped here");
        assert_eq!(read::<i64>("k--5:", b"%:"), Some(-5));
        assert_eq!(
            read::<u64>("k--5:", b"%:"),
            None,
            "no sign for an unsigned type"
        );
        assert_eq!(read::<u8>("k-256:", b"%:"), None, "out of range");
        assert_eq!(read::<i8>("k--129:", b"%:"), None, "out of range");
        assert_eq!(
            read::<u128>("k-340282366920938463463374607431768211456:", b"%:"),
            None,
            "u128::MAX + 1"
        );
    }
}
