//! The semantic cache shared through a real Redis by several real processes (`cm-child`,
//! deterministic embedder): an answer stored by one process is a hit by meaning in another,
//! and stays in its scope; stores reach the other processes' indexes over the backplane;
//! `<fn>_invalidate`, `invalidate_tag` and `<fn>_clear` in one process reach every index and
//! the shared tier; an invalidation during another process's load wins; a drifted answer
//! goes everywhere; a process that lost its subscription does not answer from its index.
#![cfg(all(feature = "redis", feature = "semantic"))]

mod common;

use std::time::Duration;

use common::child::{eventually, Proc};
use common::redis::Server;

/// The process that loaded an answer (`pPID` in `SCOPE|PROMPT|pPID|vVERSION`).
fn by(answer: &str) -> &str {
    answer.split('|').nth(2).unwrap_or("")
}

fn stat(p: &mut Proc, f: &str, name: &str) -> u64 {
    let line = p.cmd(&format!("sstats {f}"));
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {line}"))
}

/// `a` asks `q` (a miss there, stored), and `b`, which holds the scope, hears of it.
fn store_and_wait(a: &mut Proc, b: &mut Proc, f: &str, q: &str) -> String {
    let before = stat(b, f, "entries");
    let answer = a.cmd(q);
    eventually("the other process's index has the new answer", || {
        stat(b, f, "entries") > before
    });
    answer
}

/// A process whose Redis operations and heartbeats may take their time (on a loaded test
/// machine, a slow read or a late heartbeat must not turn into a miss, or an untrusted
/// index, that these tests would read as a defect).
fn start(server: &Server, prefix: &str) -> Proc {
    Proc::start_with(
        &server.url(),
        prefix,
        &[("CM_OP_TIMEOUT_MS", "5000"), ("CM_HEARTBEAT_MS", "5000")],
    )
}

/// Two processes on one server, each subscribed, with the function's engine started.
fn two(server: &Server, prefix: &str, f: &str) -> (Proc, Proc) {
    let mut a = start(server, prefix);
    let mut b = start(server, prefix);
    for p in [&mut a, &mut b] {
        p.cmd(&format!("ask {f} warmup hello"));
        p.wait_subscribed();
    }
    (a, b)
}

#[test]
fn an_answer_stored_by_one_process_is_a_hit_by_meaning_in_another_within_its_scope() {
    let server = Server::start();
    let (mut a, mut b) = two(&server, "sr1:", "faq");
    let first = a.cmd("ask faq acme how do I reset my password");
    assert!(
        first.starts_with("acme|how do I reset my password|"),
        "{first}"
    );
    let pa = by(&first).to_owned();
    // B has never seen the scope: it reads it from Redis, and answers by meaning.
    let again = b.cmd("ask faq acme How do I reset my password?");
    assert_eq!(again, first, "B served A's answer");
    assert_eq!(stat(&mut b, "faq", "loads"), 1, "only its warm-up");
    // Another tenant: never A's answer.
    let other = b.cmd("ask faq globex how do I reset my password");
    assert!(other.starts_with("globex|"), "{other}");
    assert_ne!(by(&other), pa);

    // B holds acme's scope now; an answer A stores later reaches B's index over the backplane.
    let later = store_and_wait(
        &mut a,
        &mut b,
        "faq",
        "ask faq acme where is my parcel right now",
    );
    assert_eq!(b.cmd("ask faq acme Where is my parcel right now?"), later);
    assert_eq!(stat(&mut b, "faq", "loads"), 2, "its warm-up and globex");

    // Control: the in-process function does not share.
    let mut c = start(&server, "sr1:");
    let local_a = a.cmd("ask lfaq acme how do I reset my password");
    let local_c = c.cmd("ask lfaq acme how do I reset my password");
    assert_ne!(
        by(&local_a),
        by(&local_c),
        "in-process answers stay in-process"
    );
}

#[test]
fn an_invalidation_a_tag_or_a_clear_in_one_process_reaches_every_index() {
    let server = Server::start();
    let (mut a, mut b) = two(&server, "sr2:", "faq");
    let q = "ask faq acme how do I cancel my order";
    let first = a.cmd(q);
    let got = b.cmd(q);
    assert_eq!(
        got,
        first,
        "B holds A's answer: A {} / B {} / {}",
        a.cmd("sstats faq"),
        b.cmd("sstats faq"),
        b.cmd("health")
    );
    a.cmd("version 2");
    b.cmd("version 2");

    // `faq_invalidate(acme)` in A: B's index drops the scope, and Redis too.
    assert_eq!(a.cmd("sinv faq acme"), "ok");
    eventually("B no longer answers acme's old answer", || {
        b.cmd(q).ends_with("|v2")
    });
    let reloaded = b.cmd(q);
    let got = a.cmd(q);
    assert_eq!(
        got,
        reloaded,
        "A takes B's new answer (from Redis): A {} / B {}",
        a.cmd("sstats faq"),
        b.cmd("sstats faq")
    );

    // `invalidate_tag("tenant:acme")` in B: A's index and Redis.
    a.cmd("version 3");
    b.cmd("version 3");
    assert_eq!(b.cmd("tag tenant:acme"), "ok");
    eventually("A dropped the tagged answers", || a.cmd(q).ends_with("|v3"));

    // `faq_clear()` in A: every scope, every process.
    let g = b.cmd("ask faq globex how do I cancel my order");
    assert!(g.ends_with("|v3"), "{g}");
    a.cmd("version 4");
    b.cmd("version 4");
    assert_eq!(a.cmd("sclear faq"), "ok");
    eventually("B dropped globex's answers", || {
        b.cmd("ask faq globex how do I cancel my order")
            .ends_with("|v4")
    });
    // A fresh process reads the scopes from Redis: nothing from before the clear.
    let mut c = start(&server, "sr2:");
    c.cmd("ask faq warmup hello");
    c.wait_subscribed();
    c.cmd("version 5");
    let fresh = c.cmd(q);
    assert!(fresh.ends_with("|v4") || fresh.ends_with("|v5"), "{fresh}");
}

#[test]
fn an_invalidation_during_another_processs_load_wins() {
    let server = Server::start();
    let (mut a, mut b) = two(&server, "sr3:", "faq");
    let q = "ask faq acme what are your opening hours";
    a.cmd("delay 1500");
    a.send(q); // A loads, slowly, with the scope as it is now
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(b.cmd("sinv faq acme"), "ok");
    let loaded = a.answer_within(10);
    assert!(loaded.ends_with("|v1"), "{loaded}");
    a.cmd("delay 0");
    a.cmd("version 2");
    b.cmd("version 2");
    // The answer A loaded was not stored, in Redis or in A.
    assert!(b.cmd(q).ends_with("|v2"), "B: not from Redis");
    let mut c = start(&server, "sr3:");
    c.cmd("version 3");
    c.cmd("ask faq warmup hello");
    c.wait_subscribed();
    assert!(!c.cmd(q).ends_with("|v1"), "C: not from Redis");
    // The tier itself refuses a write whose generation moved, even before any process
    // heard of it (the window before the message arrives): here the generation is moved
    // behind every process's back, with no message at all.
    a.cmd("delay 1500");
    let q3 = "ask faq acme is there parking nearby";
    a.send(q3);
    std::thread::sleep(Duration::from_millis(500));
    server.cli(&["set", "{sr3:sem:acme} gen", "99999999999999999"]);
    assert!(a.answer_within(10).ends_with("|v2"));
    a.cmd("delay 0");
    a.cmd("version 7");
    c.cmd("version 7");
    assert!(
        c.cmd(q3).ends_with("|v7"),
        "C: the refused write is not in Redis"
    );
    assert!(a.cmd(q3).ends_with("|v7"), "A did not keep it either");
    // Control: without the invalidation, a slow load is stored and shared.
    a.cmd("delay 800");
    let q2 = "ask faq acme do you deliver on sundays";
    let stored = store_and_wait(&mut a, &mut b, "faq", q2);
    assert_eq!(b.cmd(q2), stored);
}

#[test]
fn a_drifted_answer_is_dropped_everywhere() {
    let server = Server::start();
    let (mut a, mut b) = two(&server, "sr4:", "tfaq");
    // verify = 1.0: every hit also calls the source. A stores v1.
    let first = a.cmd("ask tfaq acme cancel my order number five today");
    assert!(first.ends_with("|v1"));
    b.cmd("version 2");
    // B's close prompt hits A's answer, is verified, disagrees (v2): the drifted answer
    // goes from Redis and from A's index too.
    let checked = b.cmd("ask tfaq acme cancel my order number five tomorrow");
    assert!(
        checked.ends_with("|v2"),
        "the source's answer is served: {checked}"
    );
    assert_eq!(stat(&mut b, "tfaq", "disagreements"), 1);
    a.cmd("version 2");
    eventually("A no longer serves the drifted v1", || {
        !a.cmd("ask tfaq acme cancel my order number five today")
            .ends_with("|v1")
    });
}

#[test]
fn a_process_that_lost_its_subscription_does_not_answer_from_its_index() {
    let server = Server::start();
    let (mut a, mut b) = two(&server, "sr5:", "faq");
    let q = "ask faq acme how do I change my email";
    let first = a.cmd(q);
    assert_eq!(b.cmd(q), first);
    let hits = stat(&mut b, "faq", "hits");
    assert!(hits >= 1);
    // Nobody hears anything while the subscriptions are gone: B does not trust its index
    // (it calls the source) until it is subscribed again and has read the scope anew.
    server.cli(&["client", "kill", "type", "pubsub"]);
    b.cmd("version 9");
    eventually("B stopped answering from its index", || {
        b.cmd(q).ends_with("|v9")
    });
    let latest = b.cmd(q);
    b.wait_subscribed();
    a.wait_subscribed();
    let loads = stat(&mut b, "faq", "loads");
    assert_eq!(
        b.cmd(q),
        latest,
        "subscribed again: the scope, read anew, answers"
    );
    assert_eq!(stat(&mut b, "faq", "loads"), loads, "a hit");
    assert_eq!(
        a.cmd(q),
        latest,
        "A read the scope anew too: B's newer answer, not its own old one"
    );
}

/// Two functions of one name and key template in one process share their scopes: an
/// invalidation through one reaches the other's index here (its own backplane message is
/// not for this process), and so does an answer stored through one.
#[test]
fn an_invalidation_through_one_function_reaches_a_same_name_function_here() {
    let server = Server::start();
    let mut a = start(&server, "sr6:");
    a.cmd("ask sfaq_a warmup hello");
    a.cmd("ask sfaq_b warmup hello");
    a.wait_subscribed();
    let q = "how do I reset my password";
    let first = a.cmd(&format!("ask sfaq_a acme {q}"));
    assert_eq!(a.cmd(&format!("ask sfaq_b acme {q}")), first, "shared");
    a.cmd("version 2");
    assert_eq!(a.cmd("sinv sfaq_a acme"), "ok");
    assert!(
        a.cmd(&format!("ask sfaq_b acme {q}")).ends_with("|v2"),
        "the same-name function dropped the scope at once"
    );
    // An answer stored through one reaches the other's index (it holds the scope).
    let before = stat(&mut a, "sfaq_b", "entries");
    let later = a.cmd("ask sfaq_a acme where is my parcel right now");
    eventually("sfaq_b heard of it", || {
        stat(&mut a, "sfaq_b", "entries") > before
    });
    assert_eq!(
        a.cmd("ask sfaq_b acme Where is my parcel right now?"),
        later
    );
}
