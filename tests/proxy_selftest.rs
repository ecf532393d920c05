//! The fault-injecting proxy of tests/common/proxy.rs against a real `redis-server`:
//! forwarding, command parsing and counting, holds, freezes, cuts, and clean shutdown.

mod common;

use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::redis::Server;

const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// A minimal RESP2 client on a plain socket. Replies are rendered as strings: simple strings
/// and bulk strings as their text, errors as `-ERR …`, integers as `:n`, nil as `(nil)`,
/// arrays as `[a, b]`.
struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

/// One reply at the start of `buf`, and its length; `None` if incomplete.
fn parse_reply(buf: &[u8]) -> Option<(String, usize)> {
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = String::from_utf8_lossy(&buf[1..end]).into_owned();
    let after = end + 2;
    match buf[0] {
        b'+' => Some((line, after)),
        b'-' => Some((format!("-{line}"), after)),
        b':' => Some((format!(":{line}"), after)),
        b'$' => {
            let n: i64 = line.parse().unwrap();
            if n < 0 {
                return Some(("(nil)".into(), after));
            }
            let n = n as usize;
            if buf.len() < after + n + 2 {
                return None;
            }
            let s = String::from_utf8_lossy(&buf[after..after + n]).into_owned();
            Some((s, after + n + 2))
        }
        b'*' => {
            let n: i64 = line.parse().unwrap();
            if n < 0 {
                return Some(("(nil)".into(), after));
            }
            let mut pos = after;
            let mut items = Vec::new();
            for _ in 0..n {
                let (item, used) = parse_reply(&buf[pos..])?;
                items.push(item);
                pos += used;
            }
            Some((format!("[{}]", items.join(", ")), pos))
        }
        other => panic!("unexpected reply type {:?}", other as char),
    }
}

impl Client {
    fn connect(port: u16) -> Self {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        Self { s, buf: Vec::new() }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    fn send(&mut self, args: &[&str]) {
        self.send_raw(&encode(args));
    }

    /// The next reply; a read timeout or EOF is an error (EOF as `UnexpectedEof`). Bytes
    /// already received stay buffered, so a timed-out read can be retried.
    fn try_reply(&mut self) -> io::Result<String> {
        loop {
            if let Some((r, used)) = parse_reply(&self.buf) {
                self.buf.drain(..used);
                return Ok(r);
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.s.read(&mut chunk)? {
                0 => return Err(ErrorKind::UnexpectedEof.into()),
                n => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn reply(&mut self) -> String {
        self.try_reply().expect("a reply")
    }

    fn reply_within(&mut self, timeout: Duration) -> io::Result<String> {
        self.s.set_read_timeout(Some(timeout)).unwrap();
        let r = self.try_reply();
        self.s.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        r
    }

    fn call(&mut self, args: &[&str]) -> String {
        self.send(args);
        self.reply()
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Asserts that no reply arrives within `ms`, and that the socket stays open meanwhile.
fn assert_silent(c: &mut Client, ms: u64, what: &str) {
    match c.reply_within(Duration::from_millis(ms)) {
        Err(e) if is_timeout(&e) => {}
        other => panic!("{what}: expected silence on an open socket, got {other:?}"),
    }
}

/// Asserts that the server side of `c` is gone: EOF or a reset, not a timeout.
fn assert_closed(c: &mut Client, what: &str) {
    match c.reply_within(REPLY_TIMEOUT) {
        Err(e) if !is_timeout(&e) => {}
        other => panic!("{what}: expected EOF or a reset, got {other:?}"),
    }
}

/// How many threads of this process belong to the proxy on `port` (Linux: by thread name).
fn proxy_threads(port: u16) -> usize {
    let prefix = format!("px{port}-");
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(&prefix))
        .count()
}

/// Waits (5 s at most) until the proxy on `port` has `n` threads: a new thread names itself
/// once running, and a joined thread leaves /proc an instant after `join` returns.
fn assert_proxy_threads(port: u16, n: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy_threads(port) != n {
        assert!(
            Instant::now() < deadline,
            "{what}: {} proxy threads, expected {n}",
            proxy_threads(port)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn forwards_commands_and_replies() {
    let server = Server::start();
    let proxy = Proxy::start(server.port);
    assert_eq!(proxy.url(), format!("redis://127.0.0.1:{}", proxy.port()));
    assert_ne!(proxy.port(), server.port);
    let mut c = Client::connect(proxy.port());
    assert_eq!(c.call(&["PING"]), "PONG");
    assert_eq!(c.call(&["SET", "fwd:k", "hello"]), "OK");
    assert_eq!(c.call(&["GET", "fwd:k"]), "hello");
    assert_eq!(c.call(&["GET", "fwd:missing"]), "(nil)");
    assert_eq!(
        server.cli(&["get", "fwd:k"]),
        "hello",
        "it reached the server"
    );
    assert_eq!(proxy.commands_seen(None), 4);
    assert_eq!(proxy.commands_seen(Some("get")), 2);
    assert_eq!(proxy.commands_seen(Some("Set")), 1);
    assert_eq!(proxy.commands_seen(Some("DEL")), 0);
}

#[test]
fn a_pipelined_burst_in_one_write_counts_every_command() {
    let server = Server::start();
    let proxy = Proxy::start(server.port);
    let mut c = Client::connect(proxy.port());
    let mut burst = Vec::new();
    for i in 0..50 {
        burst.extend(encode(&["SET", &format!("pipe:{i}"), &i.to_string()]));
        burst.extend(encode(&["GET", &format!("pipe:{i}")]));
    }
    c.send_raw(&burst);
    for i in 0..50 {
        assert_eq!(c.reply(), "OK");
        assert_eq!(c.reply(), i.to_string());
    }
    assert_eq!(proxy.commands_seen(None), 100);
    assert_eq!(proxy.commands_seen(Some("SET")), 50);
    assert_eq!(proxy.commands_seen(Some("GET")), 50);
}

#[test]
fn split_inline_and_large_commands_are_parsed() {
    let server = Server::start();
    let proxy = Proxy::start(server.port);
    let mut c = Client::connect(proxy.port());
    // One byte per write (no Nagle): the proxy sees the command in many pieces.
    for b in encode(&["SET", "split:k", "pieces"]) {
        c.send_raw(&[b]);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(c.reply(), "OK");
    // Inline commands, two in one write.
    c.send_raw(b"PING\r\nECHO hi\r\n");
    assert_eq!(c.reply(), "PONG");
    assert_eq!(c.reply(), "hi");
    // A value much larger than one read.
    let big = "x".repeat(1 << 20);
    assert_eq!(c.call(&["SET", "split:big", &big]), "OK");
    assert_eq!(c.call(&["STRLEN", "split:big"]), format!(":{}", big.len()));
    assert_eq!(c.call(&["GET", "split:k"]), "pieces");
    assert_eq!(proxy.commands_seen(None), 6);
    assert_eq!(proxy.commands_seen(Some("ping")), 1);
    assert_eq!(proxy.commands_seen(Some("echo")), 1);
    assert_eq!(proxy.commands_seen(Some("set")), 2);
}

#[test]
fn a_held_command_waits_and_orders_its_connection_only() {
    let server = Server::start();
    let proxy = Proxy::start(server.port);
    let mut a = Client::connect(proxy.port());
    let mut b = Client::connect(proxy.port());
    assert_eq!(a.call(&["PING"]), "PONG");

    let hold = proxy.hold_next(&["SET"]);
    assert!(!hold.is_held());
    a.send(&["set", "hold:k", "v"]); // matched case-insensitively
    hold.wait_held();
    assert!(hold.is_held());
    assert_eq!(proxy.commands_seen(Some("SET")), 0, "not forwarded yet");

    // Another connection flows, and the held SET has not reached the server.
    assert_eq!(b.call(&["GET", "hold:k"]), "(nil)");
    // A command behind the held one on the same connection waits for it.
    a.send(&["GET", "hold:k"]);
    assert_silent(&mut a, 300, "a GET queued behind a held SET");

    hold.release();
    assert_eq!(a.reply(), "OK");
    assert_eq!(a.reply(), "v");
    assert_eq!(proxy.commands_seen(Some("SET")), 1);
    // A hold catches one command only.
    assert_eq!(a.call(&["SET", "hold:k", "w"]), "OK");
}

#[test]
fn a_hold_matches_its_words_as_a_prefix_and_drop_releases_it() {
    let server = Server::start();
    let proxy = Proxy::start(server.port);
    let mut a = Client::connect(proxy.port());
    let mut b = Client::connect(proxy.port());

    let hold = proxy.hold_next(&["SET", "lock:k"]);
    assert_eq!(a.call(&["SET", "other", "1"]), "OK", "another key");
    assert_eq!(
        a.call(&["SET", "lock:kk", "1"]),
        "OK",
        "a whole word, not a prefix"
    );
    assert_eq!(a.call(&["GET", "lock:k"]), "(nil)", "another command");
    assert!(!hold.is_held());

    // A pipeline: the SET is held, the GET behind it waits.
    let mut pipe = encode(&["SET", "lock:k", "token", "NX", "PX", "5000"]);
    pipe.extend(encode(&["GET", "lock:k"]));
    b.send_raw(&pipe);
    hold.wait_held();
    assert_eq!(a.call(&["GET", "lock:k"]), "(nil)");
    assert_silent(&mut b, 200, "a pipeline held at its SET");
    drop(hold);
    assert_eq!(b.reply(), "OK");
    assert_eq!(b.reply(), "token");
}

#[test]
fn pushes_reach_a_subscriber_while_its_command_is_held() {
    let server = Server::start();
    let proxy = Proxy::start(server.port);
    let mut sub = Client::connect(proxy.port());
    assert_eq!(sub.call(&["SUBSCRIBE", "ch"]), "[subscribe, ch, :1]");

    let hold = proxy.hold_next(&["PING"]);
    sub.send(&["PING"]);
    hold.wait_held();
    assert_eq!(server.cli(&["publish", "ch", "hello"]), "1");
    assert_eq!(sub.reply(), "[message, ch, hello]");
    hold.release();
    assert_eq!(sub.reply(), "[pong, ]");
}

#[test]
fn freeze_silences_connections_without_closing_them_or_losing_bytes() {
    let server = Server::start();
    let proxy = Proxy::start(server.port);
    let mut a = Client::connect(proxy.port());
    assert_eq!(a.call(&["PING"]), "PONG");
    let mut sub = Client::connect(proxy.port());
    assert_eq!(sub.call(&["SUBSCRIBE", "ch"]), "[subscribe, ch, :1]");

    proxy.freeze();
    a.send(&["PING"]);
    assert_silent(&mut a, 500, "a PING while frozen");
    // New connections are frozen too.
    let mut fresh = Client::connect(proxy.port());
    fresh.send(&["PING"]);
    assert_silent(&mut fresh, 300, "a PING on a new connection while frozen");
    // Server→client bytes wait too.
    assert_eq!(server.cli(&["publish", "ch", "held"]), "1");
    assert_silent(&mut sub, 500, "a push while frozen");
    assert_eq!(proxy.commands_seen(Some("PING")), 1, "nothing went through");

    proxy.unfreeze();
    // Nothing was lost: what waited flows in order, and the connections are in step.
    assert_eq!(a.reply(), "PONG", "the PING sent while frozen is answered");
    assert_eq!(fresh.reply(), "PONG");
    assert_eq!(sub.reply(), "[message, ch, held]", "the push arrives late");
    assert_eq!(a.call(&["PING"]), "PONG");
    assert_eq!(Client::connect(proxy.port()).call(&["PING"]), "PONG");
    assert_eq!(proxy.commands_seen(Some("PING")), 5);
}

#[test]
fn cut_closes_current_connections_and_accepts_new_ones() {
    let server = Server::start();
    let proxy = Proxy::start(server.port);
    let mut a = Client::connect(proxy.port());
    assert_eq!(a.call(&["PING"]), "PONG");
    let mut b = Client::connect(proxy.port());
    let hold = proxy.hold_next(&["SET"]);
    b.send(&["SET", "cut:k", "v"]);
    hold.wait_held();

    proxy.cut();
    assert!(!hold.is_held(), "its connection is gone");
    assert_closed(&mut a, "an idle connection after cut");
    assert_closed(&mut b, "a connection with a held command after cut");
    drop(hold);
    assert_eq!(
        server.cli(&["exists", "cut:k"]),
        "0",
        "the held SET was lost"
    );

    let mut c = Client::connect(proxy.port());
    assert_eq!(c.call(&["PING"]), "PONG");
}

#[test]
fn dropping_the_proxy_stops_its_threads_and_frees_its_port() {
    let server = Server::start();
    let proxy = Proxy::start(server.port);
    let port = proxy.port();
    let mut a = Client::connect(port);
    assert_eq!(a.call(&["PING"]), "PONG");
    let mut b = Client::connect(port);
    let hold = proxy.hold_next(&["SET"]);
    b.send(&["SET", "drop:k", "v"]);
    hold.wait_held();
    proxy.freeze();
    assert_proxy_threads(port, 5, "an acceptor and two threads per connection");

    drop(proxy);
    assert_proxy_threads(port, 0, "after the drop");
    TcpListener::bind(("127.0.0.1", port)).expect("the proxy's port is free");
    assert_closed(&mut a, "a connection of a dropped proxy");
    assert_closed(&mut b, "a held connection of a dropped proxy");
    assert!(!hold.is_held());
    drop(hold);
}
