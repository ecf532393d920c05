//! A semantic function's scopes in a shared tier (`backend = redis`, `tiered` or a named
//! Redis backend): every entry (prompt, vector, answer) is stored in its scope's map in the
//! tier, and every process keeps its own index of the scopes it uses in step: it reads a
//! scope whole the first time it looks in it, then hears of each entry another process
//! stores or removes over the backplane ([`Message::Entry`]), and of each invalidation as
//! for exact keys. Nothing here decides what is served; the engine does.
//!
//! An entry's bytes (docs/FORMAT.md, "Semantic scopes"): `cmS1`, the model's id, the
//! prompt, the vector, then the value's envelope ([`codec::encode`]) whose tags carry their
//! versions at the time the load began (the function's own tag among them, for
//! `<fn>_clear`): a reader drops an entry whose tags moved on since.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::codec::{self, Meta, Reject, ValueCodec};
use crate::coherence::Message;
use crate::config::Codec;
use crate::error::Error;
use crate::tier::outbox::{self, Missed};
use crate::tier::{Tier, TierError, Written};

use super::index::entry_id;

const MAGIC: &[u8; 4] = b"cmS1";

/// Tags with the versions an entry was stored with.
type Versions = Vec<(String, u64)>;

/// An entry as the shared tier holds it.
pub(crate) struct Stored<V> {
    pub id: u64,
    pub model: Arc<str>,
    pub prompt: Box<str>,
    pub vector: Box<[f32]>,
    pub value: V,
    /// When it expires, in Unix milliseconds.
    pub hard_ms: u64,
    /// The call's tags (the function's own left out).
    pub tags: Vec<String>,
}

/// What a leader learnt of the shared tier before its source ran: the scope's generation
/// (an invalidation anywhere since refuses the write) and its tags' versions.
#[derive(Debug, Clone)]
pub(crate) struct Ticket {
    pub generation: u64,
    pub versions: Vec<u64>,
}

/// The function's side of the shared tier.
pub(crate) struct Shared<V> {
    pub tier: Arc<dyn Tier>,
    codec: ValueCodec<V>,
    which: Codec,
    fingerprint: u64,
    /// The tag every entry of the function carries in the tier (`<fn>_clear` bumps it).
    pub fn_tag: String,
}

fn hex(id: u64) -> String {
    format!("{id:016x}")
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Reject> {
        if self.0.len() < n {
            return Err(Reject::Garbage("truncated semantic entry".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u32(&mut self) -> Result<usize, Reject> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    fn text(&mut self) -> Result<&'a str, Reject> {
        let n = self.u32()?;
        std::str::from_utf8(self.take(n)?)
            .map_err(|_| Reject::Garbage("a semantic entry's text is not UTF-8".into()))
    }
}

impl<V: Clone + Send + Sync + 'static> Shared<V> {
    pub fn new(tier: Arc<dyn Tier>, codec: ValueCodec<V>, name: &str) -> Self {
        let which = tier.config().codec;
        Self {
            fingerprint: codec::fingerprint((codec.type_name)(), which),
            tier,
            codec,
            which,
            fn_tag: crate::coherence::fn_tag(name),
        }
    }

    /// `tags` and the function's own.
    fn shared_tags(&self, tags: &[String]) -> Vec<String> {
        let mut all = tags.to_vec();
        all.push(self.fn_tag.clone());
        all
    }

    fn error(&self, e: TierError) -> Error {
        Error::Backend {
            backend: self.tier.name().to_owned(),
            message: e.to_string(),
        }
    }

    /// Whether this process may answer from its index: only while it hears every
    /// invalidation and store (its backplane subscription is up).
    pub fn trusted(&self) -> bool {
        self.tier.backplane().healthy()
    }

    /// The scope's generation and its tags' versions, before a source call.
    pub async fn ticket(&self, scope: &str, tags: &[String]) -> Result<Ticket, TierError> {
        let read = self.tier.versions(scope, &self.shared_tags(tags)).await?;
        Ok(Ticket {
            generation: read.generation,
            versions: read.tag_versions,
        })
    }

    /// An entry's bytes.
    #[allow(clippy::too_many_arguments)]
    pub fn encode(
        &self,
        model: &str,
        prompt: &str,
        vector: &[f32],
        value: &V,
        ttl: Duration,
        tags: &[String],
        ticket: &Ticket,
    ) -> Result<Vec<u8>, String> {
        let now = crate::clock::unix_ms();
        let all = self.shared_tags(tags);
        let meta = Meta {
            created_ms: now,
            hard_ms: now.saturating_add(crate::io::millis(ttl)),
            generation: ticket.generation,
            result_tags: all
                .into_iter()
                .zip(ticket.versions.iter().copied())
                .collect(),
            ..Meta::default()
        };
        let envelope = codec::encode(self.codec, self.which, self.fingerprint, &meta, value)?;
        let mut out = Vec::with_capacity(16 + model.len() + prompt.len() + 4 * vector.len());
        out.extend_from_slice(MAGIC);
        for text in [model, prompt] {
            out.extend_from_slice(&(text.len() as u32).to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        }
        out.extend_from_slice(&(vector.len() as u32).to_le_bytes());
        for x in vector {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.extend_from_slice(&envelope);
        Ok(out)
    }

    fn decode(&self, bytes: &[u8]) -> Result<(Stored<V>, Versions), Reject> {
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC {
            return Err(Reject::Foreign);
        }
        let model: Arc<str> = Arc::from(r.text()?);
        let prompt: Box<str> = r.text()?.into();
        let dim = r.u32()?;
        let raw = r.take(dim.checked_mul(4).ok_or(Reject::Foreign)?)?;
        let vector = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let (meta, value) = codec::decode(self.codec, self.which, self.fingerprint, r.0)?;
        let tags = meta
            .result_tags
            .iter()
            .map(|(t, _)| t.clone())
            .filter(|t| *t != self.fn_tag)
            .collect();
        Ok((
            Stored {
                id: entry_id(&model, &prompt),
                model,
                prompt,
                vector,
                value,
                hard_ms: meta.hard_ms,
                tags,
            },
            meta.result_tags,
        ))
    }

    /// Stores an entry and tells the other processes: `Some(true)` written, `Some(false)`
    /// refused (the scope was invalidated since the ticket), `None` over
    /// `max_value_bytes` (not written).
    pub async fn put(
        &self,
        scope: &str,
        id: u64,
        bytes: Vec<u8>,
        ttl: Duration,
        max: usize,
        generation: u64,
    ) -> Result<Option<bool>, TierError> {
        let id = hex(id);
        match self
            .tier
            .scope_put(scope, &id, bytes, ttl, max, generation)
            .await?
        {
            Written::Yes => {
                // Stored: other processes that miss the announcement read the entry with
                // the scope, the next time they read it whole.
                if let Err(e) = self.announce(scope, &id).await {
                    tracing::debug!(scope, error = %e, "cachemacro: a semantic store was not announced");
                }
                Ok(Some(true))
            }
            Written::GenerationMoved => Ok(Some(false)),
            Written::TooLarge => Ok(None),
        }
    }

    async fn announce(&self, scope: &str, id: &str) -> Result<(), TierError> {
        let body = format!("{id} {scope}");
        self.tier.publish(Message::Entry(&body)).await
    }

    /// Removes an entry (a drifted answer) and tells the other processes.
    pub async fn remove(&self, scope: &str, id: u64) -> Result<(), TierError> {
        let id = hex(id);
        self.tier.scope_remove(scope, &id).await?;
        self.announce(scope, &id).await
    }

    /// Every usable entry of a scope: decodable, of this value type and codec, not
    /// expired, and with tags whose versions have not moved on since it was stored.
    /// `garbage`: entries that were not (counted by the caller).
    pub async fn load(&self, scope: &str) -> Result<(Vec<Stored<V>>, u64), TierError> {
        let raw = self.tier.scope_entries(scope).await?;
        self.usable(raw.iter().map(|(_, b)| b.as_slice())).await
    }

    /// One entry, if it is (still) there and usable.
    pub async fn fetch(&self, scope: &str, id: &str) -> Result<Option<Stored<V>>, TierError> {
        let Some(bytes) = self.tier.scope_entry(scope, id).await? else {
            return Ok(None);
        };
        let (mut usable, _) = self.usable(std::iter::once(bytes.as_slice())).await?;
        Ok(usable.pop())
    }

    async fn usable<'b>(
        &self,
        raw: impl Iterator<Item = &'b [u8]>,
    ) -> Result<(Vec<Stored<V>>, u64), TierError> {
        let now = crate::clock::unix_ms();
        let mut garbage = 0;
        let mut decoded = Vec::new();
        for bytes in raw {
            match self.decode(bytes) {
                Ok((s, versions)) if s.hard_ms > now => decoded.push((s, versions)),
                Ok(_) | Err(Reject::Foreign) => {}
                Err(Reject::Garbage(_)) => garbage += 1,
            }
        }
        let mut names: Vec<String> = decoded
            .iter()
            .flat_map(|(_, v)| v.iter().map(|(t, _)| t.clone()))
            .collect();
        names.sort_unstable();
        names.dedup();
        let current: HashMap<String, u64> = if names.is_empty() {
            HashMap::new()
        } else {
            let versions = self.tier.tag_versions(&names).await?;
            names.into_iter().zip(versions).collect()
        };
        let entries = decoded
            .into_iter()
            .filter(|(_, tags)| tags.iter().all(|(t, v)| current.get(t) == Some(v)))
            .map(|(s, _)| s)
            .collect();
        Ok((entries, garbage))
    }

    /// Invalidates a scope everywhere: its generation moves on (writes of loads in flight
    /// anywhere are refused), its entries go, and every process drops its index of it. A
    /// failure is kept and replayed when the tier answers (the caller gets the error).
    pub async fn invalidate(&self, scope: &str) -> Result<(), Error> {
        outbox::send(&self.tier, Missed::Key(scope.to_owned()))
            .await
            .map_err(|e| self.error(e))
    }

    /// Keeps an invalidation of `scope` for the tier's outbox, replayed when it answers.
    pub fn invalidate_later(&self, scope: &str) {
        outbox::of(self.tier.name()).keep(&self.tier, Missed::Key(scope.to_owned()));
    }

    /// Invalidates every scope of the function everywhere (one version bump of its tag).
    pub async fn clear(&self) -> Result<(), Error> {
        outbox::send(&self.tier, Missed::Tag(self.fn_tag.clone()))
            .await
            .map_err(|e| self.error(e))
    }
}
