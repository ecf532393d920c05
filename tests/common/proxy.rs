//! A fault-injecting TCP proxy between the library and a real `redis-server`: half-open
//! connections ([`Proxy::freeze`]), server restarts ([`Proxy::cut`]) and a command held at a
//! precise point ([`Proxy::hold_next`]), so races can be staged deterministically.
//!
//! Std threads and blocking sockets only (no tokio), so it works under any runtime and
//! across runtimes. Each connection has two threads: client→server traffic is parsed into
//! commands (RESP arrays, or inline commands such as `PING\r\n`), which is what lets a
//! command be counted and held; server→client bytes are forwarded raw and independently,
//! so pushes to a subscriber keep flowing while one of its commands is held. Every thread
//! is joined when the [`Proxy`] is dropped.
//!
//! While frozen, nothing is forwarded and nothing is lost: what was read waits in the proxy,
//! what was not read waits in the kernel's socket buffers, as on a partitioned network
//! that heals before TCP gives up (a live TCP connection never loses bytes: it retransmits
//! them). The peers see silence; when unfrozen, everything flows in order.
//! Client bytes that cannot be parsed as commands are forwarded raw for the rest of that
//! connection (the server then answers with its protocol error), no longer counted or held.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long [`Hold::wait_held`] waits before failing the test.
const HOLD_TIMEOUT: Duration = Duration::from_secs(20);
/// Connecting to the upstream server (refused at once when it is down).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A command header (`*<n>`, `$<len>`) longer than this is not RESP.
const MAX_HEADER: usize = 64 * 1024;

/// A proxy on 127.0.0.1:<free port> forwarding to 127.0.0.1:<upstream port>.
pub struct Proxy {
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

/// A command held by [`Proxy::hold_next`]; released by [`Hold::release`] or on drop.
pub struct Hold {
    shared: Arc<Shared>,
    id: u64,
    words: Vec<String>,
}

struct Shared {
    port: u16,
    upstream: u16,
    shutdown: AtomicBool,
    frozen: AtomicBool,
    total: AtomicU64,
    by_cmd: Mutex<HashMap<String, u64>>,
    /// Open connections; lock order: `conns` before `holds`.
    conns: Mutex<Vec<Arc<Conn>>>,
    holds: Mutex<Holds>,
    /// Signalled on every change of `holds` and whenever a connection closes.
    holds_changed: Condvar,
}

#[derive(Default)]
struct Holds {
    next_id: u64,
    /// In creation order: a command claims the first waiting entry it matches.
    entries: Vec<HoldEntry>,
}

struct HoldEntry {
    id: u64,
    words: Vec<Vec<u8>>,
    /// The connection whose command is held, once one matched.
    held_on: Option<Arc<Conn>>,
}

struct Conn {
    client: TcpStream,
    server: TcpStream,
    closed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl Proxy {
    /// Listens on 127.0.0.1:<free port> and forwards every accepted connection to
    /// 127.0.0.1:`upstream_port`.
    pub fn start(upstream_port: u16) -> Proxy {
        let listener = TcpListener::bind(local(0)).expect("proxy: bind 127.0.0.1:0");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            port,
            upstream: upstream_port,
            shutdown: AtomicBool::new(false),
            frozen: AtomicBool::new(false),
            total: AtomicU64::new(0),
            by_cmd: Mutex::new(HashMap::new()),
            conns: Mutex::new(Vec::new()),
            holds: Mutex::new(Holds::default()),
            holds_changed: Condvar::new(),
        });
        let s = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name(format!("px{port}-a"))
            .spawn(move || accept_loop(s, listener))
            .expect("proxy: spawn the accept thread");
        Proxy {
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn port(&self) -> u16 {
        self.shared.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.shared.port)
    }

    /// Half-open: stops forwarding bytes in both directions on every connection, current and
    /// new, without closing anything; nothing is lost (see the module docs).
    pub fn freeze(&self) {
        self.shared.frozen.store(true, SeqCst);
    }

    /// Forwards again, starting with what waited.
    pub fn unfreeze(&self) {
        let _holds = lock(&self.shared.holds);
        self.shared.frozen.store(false, SeqCst);
        self.shared.holds_changed.notify_all();
    }

    /// Closes every current connection (FIN both ways), as a server restart would; new
    /// connections are accepted again. A command held on a closed connection is lost.
    pub fn cut(&self) {
        self.shared.close_all();
    }

    /// Holds the next client→server command whose arguments start with `words`
    /// (case-insensitive), on whichever connection sends it first. It is not forwarded until
    /// the returned [`Hold`] is released or dropped; later commands on that connection wait
    /// behind it, other connections keep flowing. Several holds may be pending: a command
    /// claims the oldest one it matches.
    pub fn hold_next(&self, words: &[&str]) -> Hold {
        let mut holds = lock(&self.shared.holds);
        holds.next_id += 1;
        let id = holds.next_id;
        holds.entries.push(HoldEntry {
            id,
            words: words.iter().map(|w| w.as_bytes().to_vec()).collect(),
            held_on: None,
        });
        Hold {
            shared: self.shared.clone(),
            id,
            words: words.iter().map(|w| w.to_string()).collect(),
        }
    }

    /// How many client→server commands have been forwarded, or only those whose first word is
    /// `cmd` (case-insensitive). Counted just before they are written to the server, so a
    /// command whose reply the client has read is always counted.
    pub fn commands_seen(&self, cmd: Option<&str>) -> u64 {
        match cmd {
            None => self.shared.total.load(SeqCst),
            Some(c) => lock(&self.shared.by_cmd)
                .get(&c.to_ascii_uppercase())
                .copied()
                .unwrap_or(0),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, SeqCst);
        self.shared.close_all();
        // Wake the accept thread; it sees `shutdown`, closes the listener and joins the
        // connection threads (woken by the closed sockets, or from a hold by the condvar).
        let _ = TcpStream::connect_timeout(&local(self.shared.port), Duration::from_secs(2));
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
    }
}

impl Hold {
    /// Blocks until a matching command has arrived and is being held (or was, if its
    /// connection has been cut since). Panics after 20 s.
    pub fn wait_held(&self) {
        let deadline = Instant::now() + HOLD_TIMEOUT;
        let mut holds = lock(&self.shared.holds);
        loop {
            match holds.entries.iter().find(|e| e.id == self.id) {
                Some(e) if e.held_on.is_none() => {}
                _ => return,
            }
            let now = Instant::now();
            if now >= deadline {
                drop(holds);
                panic!(
                    "proxy :{}: no command matching {:?} arrived within {HOLD_TIMEOUT:?} \
                     ({} commands forwarded)",
                    self.shared.port,
                    self.words,
                    self.shared.total.load(SeqCst)
                );
            }
            holds = self
                .shared
                .holds_changed
                .wait_timeout(holds, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Whether a matching command is being held now (false once its connection is closed).
    pub fn is_held(&self) -> bool {
        lock(&self.shared.holds)
            .entries
            .iter()
            .find(|e| e.id == self.id)
            .and_then(|e| e.held_on.as_ref())
            .is_some_and(|c| !c.closed.load(SeqCst))
    }

    /// Forwards the held command, and lets everything queued behind it flow.
    pub fn release(self) {}
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut holds = lock(&self.shared.holds);
        holds.entries.retain(|e| e.id != self.id);
        self.shared.holds_changed.notify_all();
    }
}

impl Shared {
    fn close_all(&self) {
        let conns = std::mem::take(&mut *lock(&self.conns));
        for c in conns {
            c.close(self);
        }
    }

    /// Claims the oldest waiting hold that `args` match.
    fn claim_hold(&self, conn: &Arc<Conn>, args: &[&[u8]]) -> Option<u64> {
        let mut holds = lock(&self.holds);
        let e = holds.entries.iter_mut().find(|e| {
            e.held_on.is_none()
                && e.words.len() <= args.len()
                && e.words
                    .iter()
                    .zip(args)
                    .all(|(w, a)| w.eq_ignore_ascii_case(a))
        })?;
        e.held_on = Some(conn.clone());
        let id = e.id;
        self.holds_changed.notify_all();
        Some(id)
    }

    /// Waits until hold `id` is released; false if the connection closed first.
    fn wait_released(&self, conn: &Conn, id: u64) -> bool {
        let mut holds = lock(&self.holds);
        loop {
            if conn.closed.load(SeqCst) || self.shutdown.load(SeqCst) {
                return false;
            }
            if !holds.entries.iter().any(|e| e.id == id) {
                return true;
            }
            holds = self
                .holds_changed
                .wait(holds)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Waits while the proxy is frozen; false if the connection closed meanwhile.
    fn wait_thawed(&self, conn: &Conn) -> bool {
        let mut holds = lock(&self.holds);
        while self.frozen.load(SeqCst) {
            if conn.closed.load(SeqCst) || self.shutdown.load(SeqCst) {
                return false;
            }
            holds = self
                .holds_changed
                .wait_timeout(holds, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        !conn.closed.load(SeqCst)
    }

    /// Counts and writes a batch of whole commands to the server, once not frozen.
    fn flush(&self, conn: &Conn, batch: &mut Batch) -> io::Result<()> {
        if !batch.bytes.is_empty() && !self.wait_thawed(conn) {
            return Err(io::ErrorKind::ConnectionAborted.into());
        }
        if !batch.bytes.is_empty() {
            if !batch.names.is_empty() {
                let mut by_cmd = lock(&self.by_cmd);
                for n in batch.names.drain(..) {
                    *by_cmd.entry(n).or_insert(0) += 1;
                    self.total.fetch_add(1, SeqCst);
                }
            }
            (&conn.server).write_all(&batch.bytes)?;
        }
        batch.bytes.clear();
        batch.names.clear();
        Ok(())
    }
}

impl Conn {
    /// Shuts both sockets down (waking both threads) and wakes a thread parked in a hold.
    fn close(&self, shared: &Shared) {
        self.closed.store(true, SeqCst);
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
        let _holds = lock(&shared.holds);
        shared.holds_changed.notify_all();
    }
}

fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let port = shared.port;
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    let mut next_conn = 0u64;
    for incoming in listener.incoming() {
        if shared.shutdown.load(SeqCst) {
            break;
        }
        let client = match incoming {
            Ok(c) => c,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        // Upstream down: the client sees its connection closed, as it would without us.
        let Ok(server) = TcpStream::connect_timeout(&local(shared.upstream), CONNECT_TIMEOUT)
        else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let conn = Arc::new(Conn {
            client,
            server,
            closed: AtomicBool::new(false),
        });
        {
            let mut conns = lock(&shared.conns);
            if shared.shutdown.load(SeqCst) {
                conn.close(&shared);
                break;
            }
            conns.retain(|c| !c.closed.load(SeqCst));
            conns.push(conn.clone());
        }
        // Reap the threads of finished connections.
        let (done, live): (Vec<_>, Vec<_>) = workers.into_iter().partition(|h| h.is_finished());
        for h in done {
            let _ = h.join();
        }
        workers = live;
        next_conn += 1;
        for (dir, c2s) in [('c', true), ('s', false)] {
            let (sh, cn) = (shared.clone(), conn.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("px{port}-{dir}{next_conn}"))
                .spawn(move || {
                    if c2s {
                        client_to_server(&sh, &cn);
                    } else {
                        server_to_client(&sh, &cn);
                    }
                    cn.close(&sh);
                });
            match spawned {
                Ok(h) => workers.push(h),
                Err(_) => conn.close(&shared),
            }
        }
    }
    drop(listener);
    for h in workers {
        let _ = h.join();
    }
}

fn server_to_client(shared: &Shared, conn: &Conn) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match (&conn.server).read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        if !shared.wait_thawed(conn) {
            return;
        }
        if (&conn.client).write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    /// The upper-cased first word of each command in `bytes`.
    names: Vec<String>,
}

fn client_to_server(shared: &Shared, conn: &Arc<Conn>) {
    let mut buf = vec![0u8; 64 * 1024];
    // Bytes read but not yet forwarded: the start of an incomplete command.
    let mut pending: Vec<u8> = Vec::new();
    let mut raw = false;
    loop {
        let n = match (&conn.client).read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        if raw {
            if !shared.wait_thawed(conn) || (&conn.server).write_all(&buf[..n]).is_err() {
                return;
            }
            continue;
        }
        pending.extend_from_slice(&buf[..n]);
        if forward_commands(shared, conn, &mut pending, &mut raw).is_err() {
            return;
        }
    }
}

/// Forwards the whole commands at the start of `pending`, stopping at a held one until it is
/// released; leaves an incomplete command in `pending`.
fn forward_commands(
    shared: &Shared,
    conn: &Arc<Conn>,
    pending: &mut Vec<u8>,
    raw: &mut bool,
) -> io::Result<()> {
    let mut batch = Batch::default();
    let mut pos = 0;
    while pos < pending.len() {
        match parse_command(&pending[pos..]) {
            Parsed::Incomplete => break,
            Parsed::Invalid => {
                *raw = true;
                batch.bytes.extend_from_slice(&pending[pos..]);
                pos = pending.len();
            }
            Parsed::Command { len, args } => {
                if !args.is_empty() {
                    if let Some(id) = shared.claim_hold(conn, &args) {
                        shared.flush(conn, &mut batch)?;
                        if !shared.wait_released(conn, id) {
                            return Err(io::ErrorKind::ConnectionAborted.into());
                        }
                    }
                    let name = String::from_utf8_lossy(args[0]).to_ascii_uppercase();
                    batch.names.push(name);
                }
                batch.bytes.extend_from_slice(&pending[pos..pos + len]);
                pos += len;
            }
        }
    }
    pending.drain(..pos);
    shared.flush(conn, &mut batch)
}

enum Parsed<'a> {
    Incomplete,
    Invalid,
    /// A whole command of `len` bytes; no arguments for an empty line or `*0`.
    Command {
        len: usize,
        args: Vec<&'a [u8]>,
    },
}

/// The line at the start of `buf` without its `\r\n`, and the length with it.
fn crlf_line(buf: &[u8]) -> Option<(&[u8], usize)> {
    let i = buf.windows(2).position(|w| w == b"\r\n")?;
    Some((&buf[..i], i + 2))
}

/// Parses the `<n>` of a `*<n>` or `$<n>` header line starting at `buf`.
fn header(buf: &[u8], kind: u8) -> Result<Option<(i64, usize)>, ()> {
    let Some((line, used)) = crlf_line(buf) else {
        return if buf.len() > MAX_HEADER {
            Err(())
        } else {
            Ok(None)
        };
    };
    if line.first() != Some(&kind) {
        return Err(());
    }
    let n = std::str::from_utf8(&line[1..])
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or(())?;
    Ok(Some((n, used)))
}

/// One client command at the start of `buf`: a RESP array of bulk strings, or an inline
/// command (a line not starting with `*`).
fn parse_command(buf: &[u8]) -> Parsed<'_> {
    if buf.first() != Some(&b'*') {
        let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
            return if buf.len() > MAX_HEADER {
                Parsed::Invalid
            } else {
                Parsed::Incomplete
            };
        };
        let args = buf[..nl]
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
            .collect();
        return Parsed::Command { len: nl + 1, args };
    }
    let (n, mut pos) = match header(buf, b'*') {
        Err(()) => return Parsed::Invalid,
        Ok(None) => return Parsed::Incomplete,
        Ok(Some(h)) => h,
    };
    let n = usize::try_from(n).unwrap_or(0);
    let mut args = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let (len, used) = match header(&buf[pos..], b'$') {
            Err(()) => return Parsed::Invalid,
            Ok(None) => return Parsed::Incomplete,
            Ok(Some(h)) => h,
        };
        let Ok(len) = usize::try_from(len) else {
            return Parsed::Invalid;
        };
        let start = pos + used;
        if buf.len() < start + len + 2 {
            return Parsed::Incomplete;
        }
        args.push(&buf[start..start + len]);
        pos = start + len + 2;
    }
    Parsed::Command { len: pos, args }
}
