//! Bytes ⇄ envelope for remote tiers. The layout is in docs/FORMAT.md.
//!
//! ```text
//! 0   "CM"            magic
//! 2   u8              format version (1)
//! 3   u8              codec id (1 = MessagePack, 2 = JSON)
//! 4   u64 LE          fingerprint of the value type
//! 12  u64 LE          created, unix ms
//! 20  u64 LE          soft deadline, unix ms (0 = none)
//! 28  u64 LE          hard deadline, unix ms
//! 36  u64 LE          δ, the load time, µs
//! 44  u64 LE          generation the load started at
//! 52  u16 LE          n, number of tags
//! 54  n × u64 LE      tag versions the load started at
//! ..  payload         the value, in the codec
//! ```
//!
//! Anything that does not parse, or carries another format version, codec or fingerprint,
//! is a miss: the next load overwrites it. Nothing here panics on bad bytes.

use crate::config::Codec;

/// The envelope's format version. Bump it when the layout changes.
pub const FORMAT_VERSION: u8 = 1;
/// The format of an envelope that also lists tags rendered from the value (written only by
/// functions with such tags; read by this version whatever the writer).
const FORMAT_RESULT_TAGS: u8 = 2;
const MAGIC: [u8; 2] = *b"CM";
const HEADER: usize = 54;

/// Encode/decode functions for one value type, built where the type is known (the macro's
/// expansion) so the engine needs no serde bounds of its own.
pub struct ValueCodec<V> {
    pub(crate) encode: fn(&V, Codec) -> Result<Vec<u8>, String>,
    pub(crate) decode: fn(&[u8], Codec) -> Result<V, String>,
    pub(crate) type_name: fn() -> &'static str,
}

impl<V> Clone for ValueCodec<V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<V> Copy for ValueCodec<V> {}

impl<V> std::fmt::Debug for ValueCodec<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueCodec")
            .field("type", &(self.type_name)())
            .finish()
    }
}

/// The codec of a serde type.
#[cfg(feature = "remote")]
pub const fn codec_of<V: crate::kind::RemoteValue>() -> ValueCodec<V> {
    ValueCodec {
        encode: encode_value::<V>,
        decode: decode_value::<V>,
        type_name: std::any::type_name::<V>,
    }
}

#[cfg(feature = "remote")]
fn encode_value<V: serde::Serialize>(v: &V, codec: Codec) -> Result<Vec<u8>, String> {
    match codec {
        Codec::MessagePack => rmp_serde::to_vec_named(v).map_err(|e| e.to_string()),
        Codec::Json => serde_json::to_vec(v).map_err(|e| e.to_string()),
    }
}

#[cfg(feature = "remote")]
fn decode_value<V: serde::de::DeserializeOwned>(b: &[u8], codec: Codec) -> Result<V, String> {
    match codec {
        Codec::MessagePack => rmp_serde::from_slice(b).map_err(|e| e.to_string()),
        Codec::Json => serde_json::from_slice(b).map_err(|e| e.to_string()),
    }
}

/// FNV-1a of the type's name: changes when the type is renamed or moved (or the compiler
/// names it differently), which makes old values misses instead of decode attempts.
pub(crate) fn fingerprint(type_name: &str, codec: Codec) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in type_name.bytes().chain([codec.id()]) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The metadata of a stored value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Meta {
    pub created_ms: u64,
    pub soft_ms: Option<u64>,
    pub hard_ms: u64,
    pub delta_us: u64,
    pub generation: u64,
    pub tag_versions: Vec<u64>,
    /// Tags rendered from the value itself (`tags = ["org:<result.org_id>"]`), with their
    /// versions when it was stored: a reader reads their current versions to check them.
    pub result_tags: Vec<(String, u64)>,
}

/// Why bytes were not a usable value.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reject {
    /// Not an envelope at all, or truncated: counted as a backend error.
    Garbage(String),
    /// A valid envelope of another version, codec or type: an expected miss (deploys).
    Foreign,
}

pub(crate) fn encode<V>(
    codec: ValueCodec<V>,
    which: Codec,
    fingerprint: u64,
    meta: &Meta,
    value: &V,
) -> Result<Vec<u8>, String> {
    let payload = (codec.encode)(value, which)?;
    let n = u16::try_from(meta.tag_versions.len()).map_err(|_| "too many tags".to_owned())?;
    let mut out = Vec::with_capacity(HEADER + 8 * n as usize + payload.len());
    out.extend_from_slice(&MAGIC);
    out.push(if meta.result_tags.is_empty() {
        FORMAT_VERSION
    } else {
        FORMAT_RESULT_TAGS
    });
    out.push(which.id());
    for x in [
        fingerprint,
        meta.created_ms,
        meta.soft_ms.unwrap_or(0),
        meta.hard_ms,
        meta.delta_us,
        meta.generation,
    ] {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.extend_from_slice(&n.to_le_bytes());
    for t in &meta.tag_versions {
        out.extend_from_slice(&t.to_le_bytes());
    }
    if !meta.result_tags.is_empty() {
        let m = u16::try_from(meta.result_tags.len()).map_err(|_| "too many tags".to_owned())?;
        out.extend_from_slice(&m.to_le_bytes());
        for (name, version) in &meta.result_tags {
            let len = u16::try_from(name.len()).map_err(|_| "tag too long".to_owned())?;
            out.extend_from_slice(&version.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(name.as_bytes());
        }
    }
    out.extend_from_slice(&payload);
    Ok(out)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

pub(crate) fn decode<V>(
    codec: ValueCodec<V>,
    which: Codec,
    fingerprint: u64,
    bytes: &[u8],
) -> Result<(Meta, V), Reject> {
    if bytes.len() < HEADER || bytes[..2] != MAGIC {
        return Err(Reject::Garbage("not a cachemacro envelope".into()));
    }
    let format = bytes[2];
    if (format != FORMAT_VERSION && format != FORMAT_RESULT_TAGS)
        || bytes[3] != which.id()
        || u64_at(bytes, 4) != fingerprint
    {
        return Err(Reject::Foreign);
    }
    let truncated = || Reject::Garbage("truncated envelope".into());
    let n = u16::from_le_bytes([bytes[52], bytes[53]]) as usize;
    let mut payload_at = HEADER + 8 * n;
    if bytes.len() < payload_at {
        return Err(truncated());
    }
    let mut result_tags = Vec::new();
    if format == FORMAT_RESULT_TAGS {
        let at = payload_at;
        let m = u16::from_le_bytes(
            bytes
                .get(at..at + 2)
                .ok_or_else(truncated)?
                .try_into()
                .unwrap_or_default(),
        );
        payload_at += 2;
        for _ in 0..m {
            let head = bytes
                .get(payload_at..payload_at + 10)
                .ok_or_else(truncated)?;
            let version = u64_at(head, 0);
            let len = u16::from_le_bytes([head[8], head[9]]) as usize;
            payload_at += 10;
            let name = bytes
                .get(payload_at..payload_at + len)
                .ok_or_else(truncated)?;
            let name = std::str::from_utf8(name)
                .map_err(|_| Reject::Garbage("a tag that is not UTF-8".into()))?;
            result_tags.push((name.to_owned(), version));
            payload_at += len;
        }
    }
    let soft = u64_at(bytes, 20);
    let meta = Meta {
        created_ms: u64_at(bytes, 12),
        soft_ms: (soft != 0).then_some(soft),
        hard_ms: u64_at(bytes, 28),
        delta_us: u64_at(bytes, 36),
        generation: u64_at(bytes, 44),
        tag_versions: (0..n).map(|i| u64_at(bytes, HEADER + 8 * i)).collect(),
        result_tags,
    };
    let value = (codec.decode)(&bytes[payload_at..], which).map_err(Reject::Garbage)?;
    Ok((meta, value))
}

#[cfg(all(test, feature = "remote"))]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    fn roundtrip<V>(v: &V) -> V
    where
        V: crate::kind::RemoteValue,
    {
        let c = codec_of::<V>();
        let fp = fingerprint((c.type_name)(), Codec::MessagePack);
        let meta = Meta {
            created_ms: 1,
            soft_ms: Some(2),
            hard_ms: 3,
            delta_us: 4,
            generation: 5,
            tag_versions: vec![6, 7],
            result_tags: Vec::new(),
        };
        let bytes = encode(c, Codec::MessagePack, fp, &meta, v).unwrap();
        let (m, back) = decode(c, Codec::MessagePack, fp, &bytes).unwrap();
        assert_eq!(m, meta);
        back
    }

    #[test]
    fn result_tags_round_trip_and_truncation_is_garbage() {
        let c = codec_of::<String>();
        let fp = fingerprint((c.type_name)(), Codec::MessagePack);
        let meta = Meta {
            created_ms: 1,
            hard_ms: 3,
            tag_versions: vec![6],
            result_tags: vec![("org:7".into(), 9), ("é".into(), 0)],
            ..Meta::default()
        };
        let bytes = encode(c, Codec::MessagePack, fp, &meta, &"v".to_owned()).unwrap();
        assert_eq!(bytes[2], FORMAT_RESULT_TAGS);
        let (m, v) = decode(c, Codec::MessagePack, fp, &bytes).unwrap();
        assert_eq!((m, v.as_str()), (meta, "v"));
        for cut in HEADER + 8..bytes.len() - 1 {
            assert!(
                decode(c, Codec::MessagePack, fp, &bytes[..cut]).is_err(),
                "{cut}"
            );
        }
    }

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    #[serde(untagged)]
    enum Untagged {
        Num(u64),
        Text(String),
    }

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Inner {
        a: u32,
    }

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Shapes {
        json: serde_json::Value,
        untagged: Vec<Untagged>,
        #[serde(flatten)]
        inner: Inner,
        #[serde(skip_serializing_if = "Option::is_none")]
        maybe: Option<String>,
    }

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct V1 {
        id: u64,
    }

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct V2 {
        id: u64,
        #[serde(default)]
        added: String,
    }

    #[test]
    fn the_default_codec_round_trips_the_shapes_users_write() {
        let v = Shapes {
            json: serde_json::json!({"a": [1, "two", null, {"b": 2.5}]}),
            untagged: vec![Untagged::Num(1), Untagged::Text("x".into())],
            inner: Inner { a: 9 },
            maybe: None,
        };
        assert_eq!(roundtrip(&v), v);
        let some = Shapes {
            maybe: Some("y".into()),
            ..v
        };
        assert_eq!(roundtrip(&some), some);
        assert_eq!(
            roundtrip(&serde_json::json!([1, {"k": "v"}])),
            serde_json::json!([1, {"k": "v"}])
        );
    }

    #[test]
    fn a_struct_that_gained_a_defaulted_field_reads_old_values() {
        let old = rmp_serde::to_vec_named(&V1 { id: 3 }).unwrap();
        let new: V2 = rmp_serde::from_slice(&old).unwrap();
        assert_eq!(
            new,
            V2 {
                id: 3,
                added: String::new()
            }
        );
    }

    #[test]
    fn bad_bytes_are_rejected_not_panicked_on() {
        let c = codec_of::<u64>();
        let fp = fingerprint("u64", Codec::MessagePack);
        for bytes in [
            &b""[..],
            b"garbage",
            &[b'C', b'M', 1, 1][..],
            &[0u8; 100][..],
        ] {
            assert!(matches!(
                decode(c, Codec::MessagePack, fp, bytes),
                Err(Reject::Garbage(_))
            ));
        }
        let good = encode(c, Codec::MessagePack, fp, &Meta::default(), &7u64).unwrap();
        assert_eq!(decode(c, Codec::MessagePack, fp, &good).unwrap().1, 7);
        assert_eq!(
            decode(c, Codec::MessagePack, fp + 1, &good).unwrap_err(),
            Reject::Foreign
        );
        let mut old = good.clone();
        old[2] = 0;
        assert_eq!(
            decode(c, Codec::MessagePack, fp, &old).unwrap_err(),
            Reject::Foreign
        );
        let truncated = &good[..good.len() - 1];
        assert!(decode(c, Codec::MessagePack, fp, truncated).is_err());
        let mut many_tags = good;
        many_tags[52] = 0xff;
        assert!(matches!(
            decode(c, Codec::MessagePack, fp, &many_tags),
            Err(Reject::Garbage(_))
        ));
    }
}
