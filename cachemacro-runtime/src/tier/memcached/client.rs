//! Connections to the servers: pools of idle TCP connections per server, created on demand
//! (no more kept idle than [`IDLE_MAX`] per pool), and one request's round trip on one of
//! them. A connection is out of its pool while a request uses it and goes back only when
//! every response was read: a request cancelled or timed out midway drops its connection
//! (never reused with an answer half read), and a failed one retires every idle connection
//! to that server too, in every pool (after a restart they are all dead).
//!
//! Which pool: a connection's socket belongs to the tokio runtime whose context created it
//! (its reactor wakes whoever waits on it), so each runtime has a pool of its own.
//!
//! * A caller on a tokio runtime with an I/O driver uses that runtime's pool: the socket's
//!   readiness wakes the caller's worker directly, with no hop through another thread
//!   (with the crate's I/O thread in between, every response cost two cross-thread
//!   wake-ups instead of one). Tokio only says a runtime has no I/O driver by panicking,
//!   so each runtime is *probed* once: a task spawned on it opens the pool's first
//!   connection. Until the probe succeeds, and forever if it fails, that runtime's calls
//!   use the I/O runtime's pool.
//! * Any other caller (no tokio runtime, a runtime without I/O, one still being probed)
//!   runs its round trip in the context of the crate's I/O runtime ([`crate::io::run`]).
//!
//! A connection is only ever used by the runtime that created it, so a runtime that ends
//! takes nothing of another's with it (its pool is forgotten; a static engine used from
//! several runtimes in turn gets a pool on each). The operation timeout is always a timer
//! of the crate's I/O runtime, whose clock no caller pauses (`tokio::time::pause` in a test
//! would otherwise fire it as soon as the caller's runtime idles).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;
use tokio::runtime::{Handle, Id};

use super::proto::{parse_line, Line, Request, Response};
use crate::tier::TierError;

/// Idle connections kept per pool.
const IDLE_MAX: usize = 64;

/// Runtimes whose pools a server remembers at most; beyond, it starts over (old runtimes
/// are gone, and their connections with them).
const MAX_RUNTIMES: usize = 16;

/// An open connection and the server's failure count when it was last known good.
struct Conn {
    stream: BufStream<TcpStream>,
    epoch: u64,
}

/// Idle connections of one runtime.
#[derive(Default)]
struct Pool {
    idle: Mutex<Vec<Conn>>,
}

/// A runtime's pool: being probed, ready, or not usable (no I/O driver).
enum Slot {
    Probing,
    Ready(Arc<Pool>),
    Unusable,
}

/// One server: its address (`host:port`) and its pools.
pub(crate) struct Server {
    pub addr: String,
    /// Tells this server's pools apart in the thread-local cache.
    id: u64,
    /// Failures so far: an idle connection older than the last one is not reused.
    epoch: AtomicU64,
    /// The pool of callers not on a runtime of their own (the I/O runtime's).
    io_pool: Pool,
    runtimes: Arc<Mutex<HashMap<Id, Slot>>>,
}

thread_local! {
    /// Per thread: (server, runtime, pool) for the runtime the thread runs.
    static LOCAL: std::cell::RefCell<Vec<(u64, Id, Arc<Pool>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl Server {
    pub fn new(url: &str) -> Self {
        static IDS: AtomicU64 = AtomicU64::new(0);
        let addr = url.strip_prefix("memcached://").unwrap_or(url);
        let addr = addr.strip_suffix('/').unwrap_or(addr).to_owned();
        Self {
            addr,
            id: IDS.fetch_add(1, Relaxed),
            epoch: AtomicU64::new(0),
            io_pool: Pool::default(),
            runtimes: Arc::default(),
        }
    }

    fn take(&self, pool: &Pool) -> Option<Conn> {
        let epoch = self.epoch.load(Relaxed);
        let mut idle = pool.idle.lock().unwrap_or_else(|e| e.into_inner());
        // One older than the server's last failure is dropped, not reused.
        while let Some(c) = idle.pop() {
            if c.epoch == epoch {
                return Some(c);
            }
        }
        None
    }

    fn give_back(&self, pool: &Pool, conn: Conn) {
        let mut idle = pool.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE_MAX {
            idle.push(conn);
        }
    }

    /// The pool of the caller's own runtime, if it has one ready (see the module docs);
    /// starts the probe of a runtime seen for the first time.
    fn local_pool(&self, connect_timeout: Duration) -> Option<Arc<Pool>> {
        let handle = Handle::try_current().ok()?;
        if crate::io::is_io_runtime(&handle) {
            return None;
        }
        let id = handle.id();
        let cached = LOCAL.with(|l| {
            l.borrow()
                .iter()
                .find(|(s, r, _)| *s == self.id && *r == id)
                .map(|(_, _, p)| p.clone())
        });
        if cached.is_some() {
            return cached;
        }
        let pool = self.get_or_probe(&handle, connect_timeout)?;
        LOCAL.with(|l| {
            let mut l = l.borrow_mut();
            l.retain(|(s, _, _)| *s != self.id); // this thread moved to another runtime
            l.push((self.id, id, pool.clone()));
        });
        Some(pool)
    }

    fn get_or_probe(&self, handle: &Handle, connect_timeout: Duration) -> Option<Arc<Pool>> {
        let id = handle.id();
        let mut slots = self.runtimes.lock().unwrap_or_else(|e| e.into_inner());
        match slots.get(&id) {
            Some(Slot::Ready(p)) => return Some(p.clone()),
            Some(Slot::Probing | Slot::Unusable) => return None,
            None => {}
        }
        if slots.len() >= MAX_RUNTIMES {
            slots.clear();
        }
        slots.insert(id, Slot::Probing);
        drop(slots);
        // The probe connects on the caller's runtime (panicking there if it has no I/O
        // driver); its connect timeout is the I/O runtime's timer, as every other one.
        let addr = self.addr.clone();
        let epoch = self.epoch.load(Relaxed);
        let probe = handle.spawn(async move {
            let timer = crate::io::sleep(connect_timeout);
            tokio::select! {
                c = connect(&addr) => c.ok(),
                () = timer => None,
            }
        });
        let runtimes = self.runtimes.clone();
        crate::io::spawn(async move {
            let slot = match probe.await {
                Ok(Some(stream)) => {
                    let pool = Pool::default();
                    pool.idle
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Conn { stream, epoch });
                    Some(Slot::Ready(Arc::new(pool)))
                }
                Ok(None) => None, // unreachable now: probe again on a later call
                Err(e) if e.is_panic() => {
                    tracing::warn!("cachemacro: this tokio runtime lacks the I/O driver (the panic above was a probe); its Memcached calls go through cachemacro's own I/O thread");
                    Some(Slot::Unusable)
                }
                Err(_) => None, // the runtime shut down meanwhile
            };
            let mut slots = runtimes.lock().unwrap_or_else(|e| e.into_inner());
            match slot {
                Some(s) => slots.insert(id, s),
                None => slots.remove(&id),
            };
        });
        None
    }

    /// Sends `request` and reads its responses, in order, within `timeout` (connecting, if
    /// no idle connection is at hand, within `connect_timeout`).
    pub async fn exchange(
        &self,
        request: &Request,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Vec<Response>, TierError> {
        let result = match self.local_pool(connect_timeout) {
            Some(pool) => {
                crate::io::guarded(self.exchange_on(&pool, request, timeout, connect_timeout)).await
            }
            None => {
                crate::io::run(self.exchange_on(&self.io_pool, request, timeout, connect_timeout))
                    .await
            }
        };
        result.unwrap_or_else(|| Err(TierError::Failed("memcached I/O panicked".into())))
    }

    /// The round trip on a connection of `pool`, polled in the context of the runtime that
    /// owns the pool's sockets.
    async fn exchange_on(
        &self,
        pool: &Pool,
        request: &Request,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Vec<Response>, TierError> {
        let conn = match self.take(pool) {
            Some(c) => c,
            None => {
                let epoch = self.epoch.load(Relaxed);
                let timer = crate::io::sleep(connect_timeout);
                tokio::select! {
                    c = connect(&self.addr) => match c {
                        Ok(stream) => Conn { stream, epoch },
                        Err(e) => {
                            return Err(TierError::Failed(format!(
                                "cannot connect to memcached {}: {e}",
                                self.addr
                            )))
                        }
                    },
                    () = timer => return Err(TierError::Timeout),
                }
            }
        };
        let timer = crate::io::sleep(timeout);
        tokio::select! {
            biased;
            r = round_trip(conn, request) => match r {
                Ok((conn, responses)) => {
                    self.give_back(pool, conn);
                    Ok(responses)
                }
                Err(e) => {
                    self.epoch.fetch_add(1, Relaxed);
                    Err(TierError::Failed(format!("memcached {}: {e}", self.addr)))
                }
            },
            () = timer => Err(TierError::Timeout),
        }
    }
}

async fn connect(addr: &str) -> std::io::Result<BufStream<TcpStream>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(BufStream::new(stream))
}

async fn round_trip(mut conn: Conn, request: &Request) -> std::io::Result<(Conn, Vec<Response>)> {
    let s = &mut conn.stream;
    s.write_all(&request.bytes).await?;
    s.flush().await?;
    let mut responses = Vec::with_capacity(request.responses);
    let mut line = Vec::with_capacity(64);
    while responses.len() < request.responses {
        line.clear();
        let n = s.read_until(b'\n', &mut line).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let text = line.strip_suffix(b"\r\n").unwrap_or(&line);
        match parse_line(text).map_err(std::io::Error::other)? {
            Line::Complete(r) => responses.push(r),
            Line::Data(size, flags) => {
                let mut data = vec![0; size + 2];
                s.read_exact(&mut data).await?;
                if !data.ends_with(b"\r\n") {
                    return Err(std::io::Error::other("a value not ended by CRLF"));
                }
                data.truncate(size);
                responses.push(Response::Value(data, flags));
            }
        }
    }
    Ok((conn, responses))
}
