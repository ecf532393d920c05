//! `invalidate_tag` reaches every configured backend, whether or not a function used it
//! yet, tries all of them even when one fails, and names the ones that failed.
#![cfg(feature = "redis")]

mod common;

use std::sync::OnceLock;

use cachemacro_runtime::{cached, configure, BackendConfig, Config, Error};
use common::redis::Server;

struct World {
    default: Server,
    unused: Server,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let w = World {
            default: Server::start(),
            unused: Server::start(),
        };
        // A port nothing listens on (a server started and stopped).
        let mut dead = Server::start();
        let dead_url = dead.url();
        dead.kill();
        configure(
            Config::default()
                .redis_url(w.default.url())
                .prefix("te:")
                .connect_timeout(std::time::Duration::from_millis(300))
                .backend("unused", BackendConfig::redis(w.unused.url()))
                .backend("dead", BackendConfig::tiered(dead_url)),
        )
        .unwrap();
        w
    })
}

#[cached(ttl = 60, key = "doc:<org>:<id>", backend = redis, tags = ["org:<org>"])]
async fn doc(org: u64, id: u64) -> u64 {
    org * 100 + id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_tag_reaches_every_configured_backend_and_names_the_failed_ones() {
    let w = world();
    assert_eq!(doc(1, 2).await, 102);
    let err = cachemacro_runtime::invalidate_tag("org:1")
        .await
        .expect_err("one backend is down");
    match &err {
        Error::Unreached { failed, .. } => {
            let names: Vec<&str> = failed.iter().map(|(b, _)| b.as_str()).collect();
            assert_eq!(names, ["dead"], "{err}");
        }
        other => panic!("not Unreached: {other}"),
    }
    assert!(err.to_string().contains("backend `dead`"), "{err}");
    // The backends that answered were invalidated, the unused one included.
    for (server, what) in [(&w.default, "default"), (&w.unused, "unused")] {
        let version: u64 = server
            .cli(&["get", "te:cm:tag org:1"])
            .parse()
            .unwrap_or_else(|_| panic!("no tag version in the {what} backend"));
        assert!(version > 0);
    }
    assert_eq!(doc(1, 2).await, 102);
    assert_eq!(doc_stats().loads, 2, "the tagged value was invalidated");
}
