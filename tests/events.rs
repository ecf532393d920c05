//! Invalidation events from outside, against a real Redis: a `Router` listening on a
//! channel applies `user.<id>.updated` to the right function and key; unmatched and
//! malformed events are ignored; a failing handler is counted, not fatal.
#![cfg(feature = "redis")]

mod common;

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use cachemacro_runtime::events::Router;
use cachemacro_runtime::{cached, configure, invalidate_tag, Config, Error};
use common::redis::Server;
use common::until_real;

static USER_LOADS: AtomicU32 = AtomicU32::new(0);
static ORG_LOADS: AtomicU32 = AtomicU32::new(0);

#[cached(ttl = 600, key = "user:<id>", backend = tiered)]
async fn user(id: u64) -> String {
    USER_LOADS.fetch_add(1, SeqCst);
    format!("user {id}")
}

#[cached(ttl = 600, key = "org:<org>:<id>", backend = tiered, tags = ["org:<org>"])]
async fn member(org: u64, id: u64) -> String {
    ORG_LOADS.fetch_add(1, SeqCst);
    format!("{org}/{id}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_on_a_channel_invalidate_the_right_keys() {
    let server = Server::start();
    configure(
        Config::default()
            .redis_url(server.url())
            .prefix("ev:")
            .heartbeat(Duration::from_millis(100)),
    )
    .unwrap();
    let listener = Router::new()
        .on("user.{id}.updated", |e| async move {
            user_invalidate(e.parse("id")?).await
        })
        .on("org.{org}.*", |e| async move {
            invalidate_tag(&format!("org:{}", e.parse::<u64>("org")?)).await
        })
        .on("broken.{x}", |_| async {
            Err(Error::Config("this handler fails".into()))
        })
        .listen("events");
    until_real("the listener subscribed", || listener.subscribed()).await;

    user(1).await;
    user(2).await;
    member(7, 1).await;
    member(8, 1).await;
    assert_eq!((USER_LOADS.load(SeqCst), ORG_LOADS.load(SeqCst)), (2, 2));

    server.cli(&["publish", "events", "user.1.updated"]);
    server.cli(&["publish", "events", "org.7.renamed"]);
    server.cli(&["publish", "events", "user.notanumber.updated"]); // handler error: parse
    server.cli(&["publish", "events", "invoice.3.paid"]); // no route
    server.cli(&["publish", "events", "broken.1"]);
    // Received is counted when a message arrives, applied and failed when its handler is
    // done (a task of its own): wait for the handlers, not only for the messages.
    until_real("all five events handled", || {
        let (received, applied, failed) = listener.counts();
        received == 5 && applied + failed == 4
    })
    .await;
    let (received, applied, failed) = listener.counts();
    assert_eq!((received, applied, failed), (5, 2, 2));

    user(1).await;
    user(2).await;
    member(7, 1).await;
    member(8, 1).await;
    assert_eq!(
        USER_LOADS.load(SeqCst),
        3,
        "user 1 reloaded, user 2 still cached"
    );
    assert_eq!(
        ORG_LOADS.load(SeqCst),
        3,
        "org 7's members reloaded, org 8's not"
    );
    drop(listener);
}
