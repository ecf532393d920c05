//! Where the cache's own Redis keys live, beside the values.
//!
//! A value lives at `prefix + rendered template`. Rendered templates never contain
//! whitespace (the macro refuses it in a template's text, and every placeholder value has it
//! escaped), and neither does a prefix (`configure` refuses it), so every key the cache
//! keeps for itself contains a space: no value key can ever be one of them.
//!
//! | key | for |
//! |---|---|
//! | `{<value key>} gen`, or `{<slot part>} <value key> gen` | the value's generation (invalidation wins over loads in flight) |
//! | the same with `lock` | the value's distributed lock |
//! | `<prefix>cm:tag <tag>` | a tag's version |
//!
//! On a Redis Cluster the generation and the lock must sit in the value's slot (the Lua
//! scripts touch them together). Redis hashes the text between a key's first `{` and the
//! first `}` after it, when that is not empty, else the whole key; the sibling keys wrap
//! exactly that text in a hash tag. When it cannot be wrapped (it contains a `}`), a short
//! tag known to hash to the same slot is used instead.

use std::sync::OnceLock;

/// The text of `key` that decides its cluster slot.
pub(crate) fn hash_part(key: &str) -> &str {
    if let Some(open) = key.find('{') {
        if let Some(len) = key[open + 1..].find('}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// A key of the cache's own, in the same cluster slot as `value_key`.
pub(crate) fn sibling(value_key: &str, suffix: &str) -> String {
    let part = hash_part(value_key);
    if part.len() == value_key.len() {
        if !value_key.contains('}') {
            return format!("{{{value_key}}} {suffix}");
        }
        let tag = slot_tag(slot(value_key));
        return format!("{{{tag}}} {value_key} {suffix}");
    }
    // `part` is a hash tag's content, so it has no `}`.
    format!("{{{part}}} {value_key} {suffix}")
}

/// The version key of a tag.
pub(crate) fn tag(prefix: &str, tag: &str) -> String {
    format!("{prefix}cm:tag {tag}")
}

/// The Redis Cluster slot of `key` (CRC16/XMODEM of its hash part, mod 16384).
pub(crate) fn slot(key: &str) -> u16 {
    crc16(hash_part(key).as_bytes()) % 16384
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// A short string that hashes to `slot`, found once for every slot (about 160k CRCs, a few
/// milliseconds, only if a key ever needs it).
fn slot_tag(slot: u16) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        let mut tags = vec![String::new(); 16384];
        let mut left = tags.len();
        let mut n: u64 = 0;
        while left > 0 {
            let s = base36(n);
            let t = &mut tags[usize::from(crc16(s.as_bytes()) % 16384)];
            if t.is_empty() {
                *t = s;
                left -= 1;
            }
            n += 1;
        }
        tags
    });
    &tags[usize::from(slot)]
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_matches_redis() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        assert_eq!(slot("foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
        assert_eq!(slot("foo{{bar}}zap"), slot("{bar"));
    }

    #[test]
    fn siblings_share_the_value_keys_slot_whatever_its_braces() {
        for key in [
            "user:42",
            "p:{user:42}:profile",
            "a{}b",
            "a}b",
            "}{",
            "{}",
            "a{b",
            "{{x}}",
            "{x}y{z}",
            "cm:tag org",
        ] {
            for suffix in ["gen", "lock"] {
                let s = sibling(key, suffix);
                assert_eq!(slot(&s), slot(key), "{s} vs {key}");
                assert!(s.contains(' '), "{s}: own keys contain a space");
            }
        }
        assert_eq!(sibling("user:42", "gen"), "{user:42} gen");
        assert_eq!(sibling("p:{u:1}:x", "lock"), "{u:1} p:{u:1}:x lock");
    }

    #[test]
    fn sibling_keys_of_different_values_differ() {
        let keys = ["a", "{a}", "x{a}", "{a} gen", "a}", "{}a"];
        let mut seen = std::collections::HashSet::new();
        for k in keys {
            assert!(seen.insert(sibling(k, "gen")), "{k}");
        }
    }
}
