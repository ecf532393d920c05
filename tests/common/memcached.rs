//! Real Memcached for tests: `memcached` processes on free ports, killable and restartable
//! for outage tests, and a raw client for looking at (and spoiling) what they hold. Needs
//! `memcached` (1.6 or newer) on PATH (`scripts/test` installs it).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let p = 20_000 + fastrand::u16(..25_000);
        if port_free(p) {
            return p;
        }
    }
    panic!("no free port found");
}

fn answers(port: u16) -> bool {
    let Ok(mut s) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"mn\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).is_ok() && &buf == b"MN\r\n"
}

/// A `memcached` of the test's own.
pub struct Server {
    pub port: u16,
    child: Option<Child>,
    extra: Vec<String>,
}

impl Server {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// With extra arguments, e.g. `["-I", "2m"]`.
    pub fn start_with(extra: &[&str]) -> Self {
        let mut s = Self {
            port: free_port(),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        // Through a shell that kills the server when our end of its stdin closes, so a
        // server held in a `static` (never dropped) still dies with the test process.
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            r#"memcached "$@" & m=$!; read _; kill -9 $m; wait $m"#,
            "sh",
        ])
        .args(["-p", &self.port.to_string(), "-U", "0", "-l", "127.0.0.1"])
        .args(["-m", "64"]);
        // memcached refuses to run as root without a user to switch to.
        if std::env::var("USER").as_deref() == Ok("root") || is_root() {
            cmd.args(["-u", "root"]);
        }
        let child = cmd
            .args(&self.extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh and memcached on PATH (scripts/test installs memcached)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !answers(self.port) {
            assert!(
                Instant::now() < deadline,
                "memcached :{} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn url(&self) -> String {
        format!("memcached://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL): an outage.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            drop(c.stdin.take());
            let _ = c.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !port_free(self.port) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Sends one raw command (with its data, if any) and returns the first response line
    /// and, for a `VA`, the value.
    pub fn raw(&self, line: &str, data: Option<&[u8]>) -> (String, Option<Vec<u8>>) {
        raw(self.port, line, data)
    }

    /// The value and client flags of a plain (printable) key, if any.
    pub fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        let (line, value) = self.raw(&format!("mg {key} v f"), None);
        let flags = line
            .split(' ')
            .find_map(|t| t.strip_prefix('f'))
            .and_then(|f| f.parse().ok())
            .unwrap_or(0);
        value.map(|v| (v, flags))
    }

    /// Remaining TTL of a plain key in seconds (-1: none), if it exists.
    pub fn ttl(&self, key: &str) -> Option<i64> {
        let (line, _) = self.raw(&format!("mg {key} t"), None);
        line.split(' ')
            .find_map(|t| t.strip_prefix('t'))
            .and_then(|t| t.parse().ok())
    }

    /// Sets a plain key to raw bytes (client flags 0).
    pub fn set(&self, key: &str, value: &[u8], ttl_secs: u64) {
        let (line, _) = self.raw(
            &format!("ms {key} {} T{ttl_secs}", value.len()),
            Some(value),
        );
        assert_eq!(line, "HD", "set {key}");
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

pub fn raw(port: u16, line: &str, data: Option<&[u8]>) -> (String, Option<Vec<u8>>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut req = format!("{line}\r\n").into_bytes();
    if let Some(d) = data {
        req.extend_from_slice(d);
        req.extend_from_slice(b"\r\n");
    }
    s.write_all(&req).unwrap();
    let mut r = BufReader::new(s);
    let mut head = String::new();
    r.read_line(&mut head).unwrap();
    let head = head.trim_end().to_owned();
    if let Some(rest) = head.strip_prefix("VA ") {
        let n: usize = rest.split(' ').next().unwrap().parse().unwrap();
        let mut body = vec![0u8; n + 2];
        r.read_exact(&mut body).unwrap();
        body.truncate(n);
        return (head, Some(body));
    }
    (head, None)
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Standard base64, for keys the cache sends with the `b` flag (its own keys, which contain
/// a space).
pub fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                char::from(T[((n >> (18 - 6 * i)) & 63) as usize])
            } else {
                '='
            });
        }
    }
    out
}

impl Server {
    /// The value of one of the cache's own keys (sent base64-encoded).
    pub fn get_own(&self, key: &str) -> Option<Vec<u8>> {
        self.raw(&format!("mg {} b v", base64(key.as_bytes())), None)
            .1
    }
}

impl Server {
    /// One counter of the server's `stats`, e.g. `cmd_get`.
    pub fn stat(&self, name: &str) -> u64 {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(b"stats\r\n").unwrap();
        let r = BufReader::new(s);
        for line in r.lines() {
            let line = line.unwrap();
            if line == "END" {
                break;
            }
            let mut parts = line.split(' ');
            if parts.nth(1) == Some(name) {
                return parts.next().unwrap().parse().unwrap();
            }
        }
        panic!("no stat {name}");
    }
}
