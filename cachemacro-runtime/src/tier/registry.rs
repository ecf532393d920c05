//! The process's shared tiers by backend name (`default`, or a name registered with
//! `Config::backend`), created on first use from the configuration.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use super::unavailable::Unavailable;
use super::Tier;
use crate::config::{self, BackendConfig, Config, Store};

type Tiers = Mutex<HashMap<String, Arc<dyn Tier>>>;

fn tiers() -> &'static Tiers {
    static TIERS: OnceLock<Tiers> = OnceLock::new();
    TIERS.get_or_init(Default::default)
}

/// The tier of the default backend (`CACHEMACRO_REDIS_URL` / `Config::redis_url`).
pub(crate) fn default_tier() -> Arc<dyn Tier> {
    let cfg = config::get();
    let spec = BackendConfig::redis(cfg.redis_urls.join(","));
    get_or_create("", &spec, &cfg)
}

/// The default Memcached backend (`backend = memcached`, `Config::memcached_url`).
pub(crate) fn memcached_tier() -> Arc<dyn Tier> {
    let cfg = config::get();
    let spec = BackendConfig::memcached(cfg.memcached_urls.join(","));
    get_or_create(config::MEMCACHED, &spec, &cfg)
}

/// The tier registered as `name` (an unusable one, which fails every operation with the
/// reason, when nobody registered the name).
pub(crate) fn named(name: &str) -> Arc<dyn Tier> {
    let cfg = config::get();
    match cfg.backends.get(name) {
        Some(spec) => get_or_create(name, spec, &cfg),
        None => get_or_make(name, || {
            let why = format!(
                "backend \"{name}\" is not registered: add it with Config::backend(\"{name}\", …) before the first call"
            );
            Unavailable::new(name, why, cfg.clone())
        }),
    }
}

fn get_or_create(name: &str, spec: &BackendConfig, cfg: &Arc<Config>) -> Arc<dyn Tier> {
    let shown = if name.is_empty() { "default" } else { name };
    get_or_make(name, || create(shown, spec, cfg))
}

fn get_or_make(name: &str, make: impl FnOnce() -> Arc<dyn Tier>) -> Arc<dyn Tier> {
    let mut map = tiers().lock().unwrap_or_else(|e| e.into_inner());
    map.entry(name.to_owned()).or_insert_with(make).clone()
}

fn create(name: &str, spec: &BackendConfig, cfg: &Arc<Config>) -> Arc<dyn Tier> {
    match spec.store {
        #[cfg(feature = "redis")]
        Store::Redis => super::redis::RedisTier::new(name, spec, cfg.clone()),
        #[cfg(feature = "memcached")]
        Store::Memcached => super::memcached::MemcachedTier::new(name, spec, cfg.clone()),
        #[allow(unreachable_patterns)]
        store => {
            let feature = match store {
                Store::Redis => "redis",
                Store::Memcached => "memcached",
            };
            let why =
                format!("backend `{name}` needs the `{feature}` feature of cachemacro-runtime");
            Unavailable::new(name, why, cfg.clone())
        }
    }
}

/// The shared tier `backend` names, and whether functions on it keep an in-process tier
/// in front of it (`tiered`); `None` for the in-process backend.
pub(crate) fn tier_of(backend: crate::policy::Backend) -> Option<(Arc<dyn Tier>, bool)> {
    use crate::policy::Backend;
    Some(match backend {
        Backend::Memory => return None,
        Backend::Redis => (default_tier(), false),
        Backend::Tiered => (default_tier(), true),
        Backend::Memcached => (memcached_tier(), false),
        Backend::Named(name) => {
            let tier = named(name);
            let local = tier.local_tier();
            (tier, local)
        }
    })
}

/// Every tier in use, plus the default one when Redis was configured explicitly.
pub(crate) fn in_use() -> Vec<Arc<dyn Tier>> {
    let mut all: Vec<_> = tiers()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .cloned()
        .collect();
    if config::redis_configured() && !all.iter().any(|t| t.name() == "default") {
        all.push(default_tier());
    }
    all.sort_by(|a, b| a.name().cmp(b.name()));
    all
}

/// What an operation that must reach every backend reaches: every tier in use, the default
/// one when Redis was configured, and every named backend of the configuration, used yet or
/// not.
pub(crate) fn configured() -> Vec<Arc<dyn Tier>> {
    let cfg = config::get();
    // A name used by a function but never registered is no backend: nothing to reach.
    let mut all: Vec<_> = in_use()
        .into_iter()
        .filter(|t| {
            t.name() == "default"
                || t.name() == config::MEMCACHED
                || cfg.backends.contains_key(t.name())
        })
        .collect();
    let mut names: Vec<&String> = cfg.backends.keys().collect();
    names.sort();
    for name in names {
        if !all.iter().any(|t| t.name() == name.as_str()) {
            all.push(named(name));
        }
    }
    all
}
