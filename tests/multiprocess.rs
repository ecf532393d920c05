//! Several real processes (`cm-child`) sharing one real Redis: values shared through L2,
//! invalidations and tags reaching every process's L1 over pub/sub, and a process that
//! loses its subscription no longer trusting its L1.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::redis::{get_raw, set_raw, Server};

/// One `cm-child` process.
struct Proc {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
}

impl Proc {
    pub fn start(server: &Server, prefix: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cm-child"))
            .env("CACHEMACRO_REDIS_URL", server.url())
            .env("CACHEMACRO_PREFIX", prefix)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cm-child is built with the tests");
        let stdin = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut p = Self { child, stdin, out };
        assert_eq!(p.read(), "ready");
        p
    }

    fn read(&mut self) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).expect("child answers");
        line.trim().to_owned()
    }

    /// Sends a command without waiting for its answer.
    pub fn send(&mut self, cmd: &str) {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Sends a command and returns its answer.
    pub fn cmd(&mut self, cmd: &str) -> String {
        self.send(cmd);
        self.read()
    }

    /// The answer to a command sent with [`Proc::send`].
    pub fn answer(&mut self) -> String {
        self.read()
    }

    /// The version field of a `get` answer (`id:version:pid`).
    pub fn version(&mut self, f: &str, id: u64) -> u64 {
        let a = self.cmd(&format!("get {f} {id}"));
        a.split(':')
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("bad answer {a}"))
    }

    pub fn stat(&mut self, f: &str, name: &str) -> u64 {
        let a = self.cmd(&format!("stats {f}"));
        a.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {a}"))
    }

    /// Waits until this process's backplane is subscribed.
    pub fn wait_subscribed(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.cmd("health").contains("subscribed=Some(true)") {
            assert!(Instant::now() < deadline, "backplane never subscribed");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it returns true, for at most 10 s.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_value_loaded_by_one_process_is_a_hit_in_another() {
    let server = Server::start();
    let mut a = Proc::start(&server, "mp1:");
    let mut b = Proc::start(&server, "mp1:");
    let from_a = a.cmd("get remote 1");
    assert_eq!(b.cmd("get remote 1"), from_a, "B got A's value");
    assert_eq!(b.stat("remote", "loads"), 0);
    assert_eq!(b.stat("remote", "hits"), 1);
}

#[test]
fn an_invalidation_or_refresh_in_one_process_reaches_every_other_l1() {
    let server = Server::start();
    let mut a = Proc::start(&server, "mp2:");
    let mut b = Proc::start(&server, "mp2:");
    a.cmd("get tiered 0");
    b.cmd("get tiered 0");
    a.wait_subscribed();
    b.wait_subscribed();

    assert_eq!(a.version("tiered", 1), 1);
    assert_eq!(
        b.version("tiered", 1),
        1,
        "B reads A's value from L2 and keeps it in L1"
    );
    a.cmd("version 2");
    b.cmd("version 2");
    assert_eq!(b.version("tiered", 1), 1, "B serves its L1 copy");

    assert_eq!(a.cmd("inv tiered 1"), "ok");
    eventually("B dropped its L1 copy", || b.version("tiered", 1) == 2);

    a.cmd("version 3");
    a.cmd("refresh tiered 1");
    let loads = b.stat("tiered", "loads");
    eventually("B sees A's refresh", || b.version("tiered", 1) == 3);
    assert_eq!(
        b.stat("tiered", "loads"),
        loads,
        "from L2, not from B's source"
    );
}

#[test]
fn a_tag_invalidated_in_one_process_is_invalidated_in_all() {
    let server = Server::start();
    let mut a = Proc::start(&server, "mp3:");
    let mut b = Proc::start(&server, "mp3:");
    a.cmd("get tagged 0");
    b.cmd("get tagged 0");
    a.wait_subscribed();
    b.wait_subscribed();
    assert_eq!(a.version("tagged", 5), 1);
    assert_eq!(b.version("tagged", 5), 1);
    a.cmd("version 2");
    b.cmd("version 2");
    assert_eq!(a.version("tagged", 5), 1, "cached in A's L1");
    assert_eq!(b.cmd("tag org:5"), "ok");
    eventually("A dropped the tagged value", || a.version("tagged", 5) == 2);
    assert_eq!(b.version("tagged", 5), 2, "B too");
}

#[test]
fn a_process_that_loses_its_subscription_stops_trusting_its_l1() {
    let server = Server::start();
    let mut a = Proc::start(&server, "mp4:");
    let mut b = Proc::start(&server, "mp4:");
    a.cmd("get tiered 0");
    a.wait_subscribed();
    assert_eq!(a.version("tiered", 7), 1, "A caches version 1 in L1");

    // Version 2 lands in Redis for key 7 with no invalidation message: copied raw from a
    // value B stored under another key (what a process misses while unsubscribed).
    b.cmd("version 2");
    b.cmd("get tiered 8");
    let v2 = get_raw(server.port, "mp4:t:8").unwrap();
    set_raw(server.port, "mp4:t:7", &v2, 60_000);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        a.version("tiered", 7),
        1,
        "control: without a lost subscription, L1 answers"
    );

    server.cli(&["client", "kill", "type", "pubsub"]);
    eventually("A stopped answering from L1", || {
        a.version("tiered", 7) == 2
    });
    a.wait_subscribed();
    assert_eq!(
        a.version("tiered", 7),
        2,
        "subscribed again, with L1 flushed: no stale copy"
    );
    assert!(a.stat("tiered", "hits") > 0);
}
