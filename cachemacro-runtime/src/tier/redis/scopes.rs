//! A semantic function's scopes (feature `semantic`): each scope is a hash at its value
//! key (field: the entry's id, value: its bytes), beside the key's generation and a sorted
//! set ordering the entries by expiry. Invalidating the scope is the value key's generation
//! bump with its delete (the hash goes with it); the sorted set of a deleted hash is dropped
//! by the next write.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::commands::ms;
use super::RedisTier;
use crate::tier::{TierError, Written};

/// `KEYS`: the hash, the generation, the expiry order. `ARGV`: the generation the load
/// began at, the entry's id, its bytes, its TTL (ms), the scope's bound. Entries that
/// expired go first, then, past the bound, those that expire soonest; the hash and the
/// order live as long as their longest-lived entry.
static PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local g = redis.call('GET', KEYS[2])
        if (g or '0') ~= ARGV[1] then return 0 end
        if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('DEL', KEYS[3]) end
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local ttl = tonumber(ARGV[4])
        local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
        for _, id in ipairs(gone) do redis.call('HDEL', KEYS[1], id) end
        redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
        redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
        redis.call('ZADD', KEYS[3], now + ttl, ARGV[2])
        local over = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[5])
        if over > 0 then
            local popped = redis.call('ZPOPMIN', KEYS[3], over)
            for i = 1, #popped, 2 do redis.call('HDEL', KEYS[1], popped[i]) end
        end
        for _, k in ipairs({KEYS[1], KEYS[3]}) do
            if redis.call('PTTL', k) < ttl then redis.call('PEXPIRE', k, ttl) end
        end
        return 1",
    )
});

impl RedisTier {
    pub(super) async fn scope_all(&self, key: &str) -> Result<Vec<(String, Vec<u8>)>, TierError> {
        let hk = self.value_key(key);
        self.op(move |mut c| async move { redis::cmd("HGETALL").arg(hk).query_async(&mut c).await })
            .await
    }

    pub(super) async fn scope_one(
        &self,
        key: &str,
        id: &str,
    ) -> Result<Option<Vec<u8>>, TierError> {
        let hk = self.value_key(key);
        let id = id.to_owned();
        self.op(move |mut c| async move {
            redis::cmd("HGET").arg(hk).arg(id).query_async(&mut c).await
        })
        .await
    }

    pub(super) async fn scope_write(
        &self,
        key: &str,
        id: &str,
        bytes: Vec<u8>,
        ttl: Duration,
        max: usize,
        generation: u64,
    ) -> Result<Written, TierError> {
        if self.too_large(key, bytes.len()) {
            return Ok(Written::TooLarge);
        }
        let hk = self.value_key(key);
        let gk = Self::sibling_key(&hk, "gen");
        let zk = Self::sibling_key(&hk, "order");
        let id = id.to_owned();
        self.op(move |mut c| async move {
            let written: i64 = PUT
                .key(hk)
                .key(gk)
                .key(zk)
                .arg(generation.to_string())
                .arg(id)
                .arg(bytes)
                .arg(ms(ttl))
                .arg(max.max(1))
                .invoke_async(&mut c)
                .await?;
            Ok(super::commands::written_by(written))
        })
        .await
    }

    pub(super) async fn scope_delete(&self, key: &str, id: &str) -> Result<(), TierError> {
        let hk = self.value_key(key);
        let zk = Self::sibling_key(&hk, "order");
        let id = id.to_owned();
        self.op(move |mut c| async move {
            redis::pipe()
                .cmd("HDEL")
                .arg(&hk)
                .arg(&id)
                .ignore()
                .cmd("ZREM")
                .arg(&zk)
                .arg(&id)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }
}
