//! The tier of a backend that cannot be used: a name nobody registered, or a backend whose
//! feature is off. Every operation fails with the reason, so every call goes to the source
//! (and counts a backend error), explicit operations report it, and `health()` shows it.

use std::sync::Arc;
use std::time::Duration;

use super::{Following, Keyspace, Read, Tier, TierError, TierFuture, Written};
use crate::coherence::{Backplane, Message, Signal};
use crate::config::Config;

pub(crate) struct Unavailable {
    name: String,
    why: String,
    cfg: Arc<Config>,
    backplane: Backplane,
    keyspace: Keyspace,
}

impl Unavailable {
    pub fn new(name: &str, why: String, cfg: Arc<Config>) -> Arc<Self> {
        tracing::error!(backend = name, "cachemacro: {why}; calls go to the source");
        Arc::new(Self {
            name: name.to_owned(),
            why,
            cfg,
            backplane: Backplane::default(),
            keyspace: Keyspace::default(),
        })
    }

    fn fail<'a, T: Send + 'a>(&'a self) -> TierFuture<'a, T> {
        Box::pin(async move { Err(TierError::Failed(self.why.clone())) })
    }
}

impl Tier for Unavailable {
    fn name(&self) -> &str {
        &self.name
    }

    fn config(&self) -> &Config {
        &self.cfg
    }

    fn local_tier(&self) -> bool {
        false
    }

    fn backplane(&self) -> &Backplane {
        &self.backplane
    }

    fn keyspace(&self) -> &Keyspace {
        &self.keyspace
    }

    fn reachable(&self) -> bool {
        false
    }

    fn channel(&self) -> String {
        String::new()
    }

    fn follow(
        self: Arc<Self>,
        _: String,
        _: Box<dyn FnMut(Signal<'_>) + Send>,
    ) -> Option<Following> {
        None
    }

    fn get<'a>(&'a self, _: &'a str, _: &'a [String]) -> TierFuture<'a, Read> {
        self.fail()
    }

    fn read<'a>(&'a self, _: &'a str, _: &'a [String]) -> TierFuture<'a, Read> {
        self.fail()
    }

    fn versions<'a>(&'a self, _: &'a str, _: &'a [String]) -> TierFuture<'a, Read> {
        self.fail()
    }

    fn tag_versions<'a>(&'a self, _: &'a [String]) -> TierFuture<'a, Vec<u64>> {
        self.fail()
    }

    fn write_if<'a>(
        &'a self,
        _: &'a str,
        _: Vec<u8>,
        _: Duration,
        _: u64,
    ) -> TierFuture<'a, Written> {
        self.fail()
    }

    fn bump<'a>(&'a self, _: &'a str, _: bool) -> TierFuture<'a, u64> {
        self.fail()
    }

    fn bump_tag<'a>(&'a self, _: &'a str) -> TierFuture<'a, u64> {
        self.fail()
    }

    fn try_lock<'a>(&'a self, _: &'a str, _: u64) -> TierFuture<'a, bool> {
        self.fail()
    }

    fn unlock(&self, _: String, _: u64) {}

    fn publish<'a>(&'a self, _: Message<'a>) -> TierFuture<'a, ()> {
        self.fail()
    }
}
