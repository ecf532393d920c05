//! Memcached's meta text protocol (memcached 1.6+), the few commands the tier uses: `mg`
//! (get), `ms` (set, add, compare-and-set), `md` (delete, compare-and-delete), `ma`
//! (arithmetic) and `mn` (no-op). A request is written whole, its responses read in order.
//!
//! Keys: a key of printable ASCII without spaces, at most 250 bytes, is sent as it is;
//! any other (the cache's own keys contain a space, tags may contain any character) is
//! sent base64-encoded with the `b` flag, which memcached accepts up to 250 encoded bytes
//! (186 raw bytes). A longer key is refused ([`KeyError`]).

use std::fmt::Write as _;

/// Longest key memcached takes (its `KEY_MAX_LENGTH`).
const KEY_MAX: usize = 250;

/// A key memcached cannot take.
#[derive(Debug, Clone)]
pub(crate) struct KeyError(pub usize);

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a key of {} bytes is over Memcached's key length limit (250 printable ASCII bytes, or 186 bytes of any other kind)",
            self.0
        )
    }
}

/// Appends `key` to a command line: as it is, or base64 with `b` noted in `flags`.
fn push_key(line: &mut String, key: &[u8]) -> Result<bool, KeyError> {
    if key.len() <= KEY_MAX && !key.is_empty() && key.iter().all(|b| (0x21..0x7f).contains(b)) {
        // Printable ASCII: checked above, so this is valid UTF-8.
        line.push_str(std::str::from_utf8(key).unwrap_or_default());
        return Ok(false);
    }
    let encoded_len = key.len().div_ceil(3) * 4;
    if encoded_len > KEY_MAX || key.is_empty() {
        return Err(KeyError(key.len()));
    }
    base64(line, key);
    Ok(true)
}

fn base64(out: &mut String, bytes: &[u8]) {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
}

/// One request of one or more commands, for one server.
#[derive(Default)]
pub(crate) struct Request {
    pub bytes: Vec<u8>,
    /// How many responses it asks for.
    pub responses: usize,
}

impl Request {
    /// `<cmd> <key> [b] <flags>\r\n`, then `data\r\n` if any.
    pub fn push(
        &mut self,
        cmd: &str,
        key: &[u8],
        flags: &str,
        data: Option<&[u8]>,
    ) -> Result<(), KeyError> {
        let mut line = String::with_capacity(cmd.len() + key.len() + flags.len() + 24);
        line.push_str(cmd);
        line.push(' ');
        let b64 = push_key(&mut line, key)?;
        if let Some(data) = data {
            let _ = write!(line, " {}", data.len());
        }
        if b64 {
            line.push_str(" b");
        }
        if !flags.is_empty() {
            line.push(' ');
            line.push_str(flags);
        }
        line.push_str("\r\n");
        self.bytes.extend_from_slice(line.as_bytes());
        if let Some(data) = data {
            self.bytes.extend_from_slice(data);
            self.bytes.extend_from_slice(b"\r\n");
        }
        self.responses += 1;
        Ok(())
    }
}

/// What memcached answered to one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Response {
    /// `VA`: a value, with the flags asked for.
    Value(Vec<u8>, Flags),
    /// `HD`: done (stored, deleted, found without value).
    Done(Flags),
    /// `EN`: no such item (`mg`).
    Miss,
    /// `NS`: not stored (`ms` in add mode on an existing item).
    NotStored,
    /// `EX`: the compare-and-swap value did not match.
    Exists,
    /// `NF`: not found (`ms` with a CAS, `md`, `ma`).
    NotFound,
    /// `CLIENT_ERROR`, `SERVER_ERROR` or `ERROR`, with its text.
    Error(String),
}

/// The return flags of a response that the tier reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Flags {
    /// `c`: the item's CAS value.
    pub cas: Option<u64>,
    /// `f`: the item's client flags.
    pub client_flags: u32,
}

impl Flags {
    fn parse<'a>(tokens: impl Iterator<Item = &'a str>) -> Self {
        let mut f = Flags::default();
        for t in tokens {
            if let Some(v) = t.strip_prefix('c') {
                f.cas = v.parse().ok();
            } else if let Some(v) = t.strip_prefix('f') {
                f.client_flags = v.parse().unwrap_or(0);
            }
        }
        f
    }
}

/// What a response line says, and how many bytes of data follow it (`VA`).
pub(crate) enum Line {
    Complete(Response),
    /// `VA <size> <flags>`: read `size` bytes and `\r\n`, then the response is a value.
    Data(usize, Flags),
}

/// Parses one response line (without its `\r\n`).
pub(crate) fn parse_line(line: &[u8]) -> Result<Line, String> {
    let text = std::str::from_utf8(line).map_err(|_| "a response line that is not UTF-8")?;
    let mut tokens = text.split(' ').filter(|t| !t.is_empty());
    let Some(code) = tokens.next() else {
        return Err("an empty response line".into());
    };
    Ok(Line::Complete(match code {
        "VA" => {
            let size = tokens
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("a malformed response: {text}"))?;
            return Ok(Line::Data(size, Flags::parse(tokens)));
        }
        "HD" => Response::Done(Flags::parse(tokens)),
        "EN" => Response::Miss,
        "NS" => Response::NotStored,
        "EX" => Response::Exists,
        "NF" => Response::NotFound,
        "MN" => Response::Done(Flags::default()),
        "CLIENT_ERROR" | "SERVER_ERROR" | "ERROR" => Response::Error(text.to_owned()),
        _ => return Err(format!("an unexpected response: {text}")),
    }))
}

/// `u64` from a version's bytes; anything else (garbage) is 0, as an absent version.
pub(crate) fn parse_u64(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// A TTL as memcached takes it: whole seconds, rounded up, plus one (memcached's clock
/// ticks once a second, so an item set with `T2` may expire a little over a second later;
/// the envelope's own deadlines are exact). Past 30 days memcached reads a TTL as a Unix
/// time, so longer ones are sent as one.
pub(crate) fn ttl_secs(d: std::time::Duration) -> u64 {
    const MONTH: u64 = 30 * 24 * 3600;
    let secs = d.as_millis().div_ceil(1000) + 1;
    let secs = u64::try_from(secs).unwrap_or(u64::MAX);
    if secs <= MONTH {
        return secs;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    now.saturating_add(secs)
}

/// FNV-1a (64-bit), then a finalizer that spreads its bits: the key's hash for placing it
/// among servers (stable across processes and builds, unlike `std`'s hasher).
pub(crate) fn hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

/// Jump consistent hash (Lamping & Veach, 2014): the server of a key among `n`. Adding an
/// `n + 1`-th server moves only about `1 / (n + 1)` of the keys, all onto the new one.
pub(crate) fn jump(mut key: u64, n: usize) -> usize {
    let n = i64::try_from(n.max(1)).unwrap_or(i64::MAX);
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < n {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        let shift = ((key >> 33) + 1) as f64;
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / shift)) as i64;
    }
    usize::try_from(b).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (raw, enc) in [
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            let mut s = String::new();
            base64(&mut s, raw.as_bytes());
            assert_eq!(s, enc);
        }
    }

    #[test]
    fn keys_are_sent_plain_or_base64_and_too_long_ones_refused() {
        let mut r = Request::default();
        r.push("mg", b"user:42", "v", None).unwrap();
        r.push("mg", b"{user:42} lock", "v", None).unwrap();
        r.push("ms", b"k", "T1", Some(b"abc")).unwrap();
        assert_eq!(
            String::from_utf8(r.bytes).unwrap(),
            "mg user:42 v\r\nmg e3VzZXI6NDJ9IGxvY2s= b v\r\nms k 3 T1\r\nabc\r\n"
        );
        assert_eq!(r.responses, 3);
        let mut r = Request::default();
        assert!(r.push("mg", &[b'a'; 250], "", None).is_ok());
        assert!(r.push("mg", &[b'a'; 251], "", None).is_err());
        assert!(r.push("mg", &[b' '; 186], "", None).is_ok());
        assert!(r.push("mg", &[b' '; 187], "", None).is_err());
    }

    #[test]
    fn response_lines_parse() {
        assert!(matches!(
            parse_line(b"VA 3 f1 c42"),
            Ok(Line::Data(
                3,
                Flags {
                    cas: Some(42),
                    client_flags: 1
                }
            ))
        ));
        assert!(matches!(
            parse_line(b"EN"),
            Ok(Line::Complete(Response::Miss))
        ));
        assert!(matches!(
            parse_line(b"HD c7"),
            Ok(Line::Complete(Response::Done(Flags { cas: Some(7), .. })))
        ));
        assert!(matches!(
            parse_line(b"SERVER_ERROR object too large for cache"),
            Ok(Line::Complete(Response::Error(_)))
        ));
        assert!(parse_line(b"+PONG").is_err());
    }

    #[test]
    fn jump_hash_is_stable_and_moves_few_keys() {
        let keys: Vec<u64> = (0..10_000u32)
            .map(|i| hash(format!("k{i}").as_bytes()))
            .collect();
        let moved = keys.iter().filter(|&&k| jump(k, 4) != jump(k, 5)).count();
        // About a fifth of the keys move to the fifth server, none elsewhere.
        assert!((1_500..2_500).contains(&moved), "{moved}");
        assert!(keys
            .iter()
            .all(|&k| jump(k, 4) == jump(k, 5) || jump(k, 5) == 4));
        let on_first = keys.iter().filter(|&&k| jump(k, 4) == 0).count();
        assert!((2_000..3_000).contains(&on_first), "{on_first}");
        assert_eq!(jump(hash(b"user:42"), 1), 0);
    }

    #[test]
    fn long_ttls_become_unix_times() {
        use std::time::Duration;
        assert_eq!(ttl_secs(Duration::from_millis(150)), 2);
        assert_eq!(ttl_secs(Duration::from_millis(1001)), 3);
        assert_eq!(ttl_secs(Duration::from_secs(3600)), 3601);
        assert!(ttl_secs(Duration::from_secs(40 * 24 * 3600)) > 1_700_000_000);
    }
}
