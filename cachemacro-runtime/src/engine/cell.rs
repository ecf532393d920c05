//! The `static` generated code reaches its engine through, and the registry that makes
//! every item generated for one function (`f`, `f_invalidate`, …) share one engine.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use super::Engine;
use crate::codec::ValueCodec;
use crate::coherence::LocalTier;
use crate::kind::{Hooks, Kind};
use crate::policy::{Policy, Site, Stampede};
use crate::stats;

/// The `static` through which generated code reaches its function's engine. Every item the
/// macro generates for one function holds one of these with the same policy; all resolve to
/// the one engine registered under the policy's site.
pub struct EngineCell<R: 'static, S: Kind<R>> {
    policy: Policy,
    codec: Option<ValueCodec<S::Value>>,
    engine: OnceLock<Arc<Engine<R, S>>>,
}

impl<R: 'static, S: Kind<R>> EngineCell<R, S> {
    /// A cell for an in-process function; the engine is created on first use.
    pub const fn new(policy: Policy) -> Self {
        Self {
            policy,
            codec: None,
            engine: OnceLock::new(),
        }
    }

    /// A cell for a function with a remote tier, which stores values with `codec`.
    pub const fn remote(policy: Policy, codec: ValueCodec<S::Value>) -> Self {
        Self {
            policy,
            codec: Some(codec),
            engine: OnceLock::new(),
        }
    }

    /// The function's engine; `hooks` is called once, when it is created.
    #[inline]
    pub fn get(&self, hooks: impl FnOnce() -> Hooks<S::Value, S::Error>) -> &Arc<Engine<R, S>> {
        self.engine
            .get_or_init(|| registered(self.policy, self.codec, hooks()))
    }
}

type Registry = Mutex<HashMap<Site, Arc<dyn Any + Send + Sync>>>;

fn registry() -> &'static Registry {
    static ENGINES: OnceLock<Registry> = OnceLock::new();
    ENGINES.get_or_init(Default::default)
}

fn registered<R: 'static, S: Kind<R>>(
    policy: Policy,
    codec: Option<ValueCodec<S::Value>>,
    hooks: Hooks<S::Value, S::Error>,
) -> Arc<Engine<R, S>> {
    let mut engines = registry().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(engine) = engines.get(&policy.site) {
        if let Ok(engine) = engine.clone().downcast::<Engine<R, S>>() {
            return engine;
        }
    }
    let engine = Arc::new(Engine::<R, S>::new(policy, codec, hooks));
    let weak = Arc::downgrade(&engine);
    engine.stats.set_occupancy(Box::new(move || {
        weak.upgrade()
            .map_or((0, None), |e| (e.l1_entries(), e.l1_bytes()))
    }));
    stats::register(engine.stats.clone());
    if let Some(remote) = &engine.remote {
        let tier = &remote.tier;
        if let Some(template) = policy.key_template {
            let name = tier.name().to_owned();
            tier.keyspace()
                .claim(&name, template, policy.name, policy.display_name());
        }
        if remote.local_tier {
            let weak = Arc::downgrade(&engine);
            let weak: std::sync::Weak<dyn LocalTier> = weak;
            tier.backplane().register(weak);
        }
        if remote.local_tier || policy.stampede >= Stampede::Lock {
            // Tiered L1s are dropped, and lock waiters woken, over the backplane.
            crate::tier::listen(tier);
        }
    }
    engines.insert(policy.site, engine.clone());
    engine
}
