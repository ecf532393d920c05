//! What processes tell each other over the backplane, and its one encoding.
//!
//! A message is text, `KIND|ORIGIN|BODY`: the kind a single character, the origin the
//! sending process's random id (a process ignores its own invalidations), the body a key or
//! a tag (which may contain `|`). No value ever crosses the channel, and loads never
//! publish (but a semantic function's store names the entry it added, see [`Message::Entry`]). docs/FORMAT.md lists the kinds.

use std::sync::OnceLock;

/// One backplane message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Message<'a> {
    /// Drop this key from L1 (`*_invalidate`, `*_put`, `*_refresh`).
    Key(&'a str),
    /// Every L1 entry carrying this tag is invalid (`invalidate_tag`).
    Tag(&'a str),
    /// A lock on this key was released: whoever waits for it reads the value.
    Unlocked(&'a str),
    /// An entry of a semantic scope was stored or removed: `<id> <scope key>` (a scope
    /// key never contains whitespace). A process holding the scope reads the entry again.
    Entry(&'a str),
}

#[cfg_attr(not(feature = "remote"), allow(dead_code))] // encoded by tier implementations
impl<'a> Message<'a> {
    fn kind(&self) -> char {
        match self {
            Message::Key(_) => 'k',
            Message::Tag(_) => 't',
            Message::Unlocked(_) => 'w',
            Message::Entry(_) => 'e',
        }
    }

    fn body(&self) -> &'a str {
        match *self {
            Message::Key(b) | Message::Tag(b) | Message::Unlocked(b) | Message::Entry(b) => b,
        }
    }

    /// The message as published, from this process.
    pub fn encode(&self) -> String {
        format!("{}|{}|{}", self.kind(), origin(), self.body())
    }

    /// A published message and the process it came from; `None` if it is not one.
    pub fn decode(text: &'a str) -> Option<(&'a str, Message<'a>)> {
        let mut parts = text.splitn(3, '|');
        let (kind, from, body) = (parts.next()?, parts.next()?, parts.next()?);
        let message = match kind {
            "k" => Message::Key(body),
            "t" => Message::Tag(body),
            "w" => Message::Unlocked(body),
            "e" => Message::Entry(body),
            _ => return None,
        };
        Some((from, message))
    }
}

/// A random id of this process, so it ignores its own invalidation messages.
pub(crate) fn origin() -> &'static str {
    static ORIGIN: OnceLock<String> = OnceLock::new();
    ORIGIN.get_or_init(|| format!("{:016x}", fastrand::u64(..) ^ u64::from(std::process::id())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_nonsense_is_refused() {
        for m in [
            Message::Key("user:42"),
            Message::Tag("org|7"),
            Message::Unlocked("{a} b"),
            Message::Entry("00ff00ff00ff00ff faq:acme"),
        ] {
            let text = m.encode();
            assert_eq!(Message::decode(&text), Some((origin(), m)));
        }
        assert_eq!(Message::decode("x|o|k"), None);
        assert_eq!(Message::decode("k|only"), None);
        assert_eq!(Message::decode(""), None);
    }
}
