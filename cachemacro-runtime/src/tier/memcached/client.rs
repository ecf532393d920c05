//! Connections to the servers: a pool of idle TCP connections per server, created on
//! demand (no more kept idle than [`IDLE_MAX`]), and one request's round trip on one of
//! them. A connection is out of the pool while a request uses it and goes back only when
//! every response was read: a request cancelled or timed out midway drops its connection
//! (never reused with an answer half read), and a failed one drops every idle connection to
//! that server too (after a restart they are all dead).
//!
//! Every round trip runs in the context of the crate's I/O runtime ([`crate::io::run`]), so
//! the sockets belong to it and outlive the callers' runtimes; the caller's task still does
//! the encoding and parsing.

use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufStream};
use tokio::net::TcpStream;

use super::proto::{parse_line, Line, Request, Response};
use crate::tier::TierError;

/// Idle connections kept per server.
const IDLE_MAX: usize = 64;

/// One server: its address (`host:port`) and its idle connections.
pub(crate) struct Server {
    pub addr: String,
    idle: Mutex<Vec<BufStream<TcpStream>>>,
}

impl Server {
    pub fn new(url: &str) -> Self {
        let addr = url.strip_prefix("memcached://").unwrap_or(url);
        let addr = addr.strip_suffix('/').unwrap_or(addr).to_owned();
        Self {
            addr,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn take(&self) -> Option<BufStream<TcpStream>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    fn give_back(&self, conn: BufStream<TcpStream>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE_MAX {
            idle.push(conn);
        }
    }

    fn drop_idle(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Sends `request` and reads its responses, in order, within `timeout` (connecting, if
    /// no idle connection is at hand, within `connect_timeout`).
    pub async fn exchange(
        &self,
        request: &Request,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Vec<Response>, TierError> {
        crate::io::run(async {
            let conn = match self.take() {
                Some(c) => c,
                None => match tokio::time::timeout(connect_timeout, self.connect()).await {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => {
                        return Err(TierError::Failed(format!(
                            "cannot connect to memcached {}: {e}",
                            self.addr
                        )))
                    }
                    Err(_) => return Err(TierError::Timeout),
                },
            };
            match tokio::time::timeout(timeout, round_trip(conn, request)).await {
                Ok(Ok((conn, responses))) => {
                    self.give_back(conn);
                    Ok(responses)
                }
                Ok(Err(e)) => {
                    self.drop_idle();
                    Err(TierError::Failed(format!("memcached {}: {e}", self.addr)))
                }
                Err(_) => Err(TierError::Timeout),
            }
        })
        .await
        .unwrap_or_else(|| Err(TierError::Failed("memcached I/O panicked".into())))
    }

    async fn connect(&self) -> std::io::Result<BufStream<TcpStream>> {
        let stream = TcpStream::connect(&self.addr).await?;
        stream.set_nodelay(true)?;
        Ok(BufStream::new(stream))
    }
}

async fn round_trip(
    mut conn: BufStream<TcpStream>,
    request: &Request,
) -> std::io::Result<(BufStream<TcpStream>, Vec<Response>)> {
    conn.write_all(&request.bytes).await?;
    conn.flush().await?;
    let mut responses = Vec::with_capacity(request.responses);
    let mut line = Vec::with_capacity(64);
    while responses.len() < request.responses {
        line.clear();
        let n = conn.read_until(b'\n', &mut line).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let text = line.strip_suffix(b"\r\n").unwrap_or(&line);
        match parse_line(text).map_err(std::io::Error::other)? {
            Line::Complete(r) => responses.push(r),
            Line::Data(size, flags) => {
                let mut data = vec![0; size + 2];
                conn.read_exact(&mut data).await?;
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
