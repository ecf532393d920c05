//! The per-key distributed lock: `SET NX PX` with a random token; a compare-and-delete
//! script releases it and wakes the processes waiting for it.

use std::sync::LazyLock;

use redis::Script;

use super::commands::ms;
use super::RedisTier;
use crate::coherence::Message;
use crate::tier::TierError;

static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('GET', KEYS[1]) == ARGV[1] then
            redis.call('DEL', KEYS[1])
            redis.call('PUBLISH', ARGV[2], ARGV[3])
            return 1
        end
        return 0",
    )
});

impl RedisTier {
    /// Takes the key's lock (`SET NX PX`) with `token`; `false` if another holds it.
    pub(super) async fn lock(&self, key: &str, token: u64) -> Result<bool, TierError> {
        let lk = Self::sibling_key(&self.value_key(key), "lock");
        let ttl = ms(self.cfg.lock_ttl);
        self.op(move |mut c| async move {
            let set: Option<String> = redis::cmd("SET")
                .arg(lk)
                .arg(token)
                .arg("NX")
                .arg("PX")
                .arg(ttl)
                .query_async(&mut c)
                .await?;
            Ok(set.is_some())
        })
        .await
    }

    /// Releases the key's lock if `token` still holds it (a holder whose lock expired never
    /// deletes another's), and wakes the processes waiting for it.
    pub(super) async fn unlock_now(&self, key: &str, token: u64) -> Result<(), TierError> {
        let lk = Self::sibling_key(&self.value_key(key), "lock");
        let channel = self.channel_name();
        let message = Message::Unlocked(key).encode();
        self.op(move |mut c| async move {
            UNLOCK
                .key(lk)
                .arg(token)
                .arg(channel)
                .arg(message)
                .invoke_async::<i64>(&mut c)
                .await
                .map(drop)
        })
        .await
    }
}
