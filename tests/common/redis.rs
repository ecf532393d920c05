//! Real Redis for tests: `redis-server` processes on free ports (killable and restartable
//! for outage tests) and a three-master Redis Cluster. Needs `redis-server` and `redis-cli`
//! on PATH (`scripts/test` installs them).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A free port whose cluster-bus port (+10000) is free too.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let p = 20_000 + fastrand::u16(..25_000);
        if port_free(p) && port_free(p + 10_000) {
            return p;
        }
    }
    panic!("no free port pair found");
}

fn ping(port: u16) -> bool {
    let Ok(mut s) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// A `redis-server` of the test's own.
pub struct Server {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
    extra: Vec<String>,
}

impl Server {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Self {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("cachemacro-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = Self {
            port,
            child: None,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        // A free port can be taken by another process (another test binary, a parallel
        // suite) between our probe and the server's bind: then try another.
        for _ in 0..4 {
            if s.try_spawn() {
                return s;
            }
            s.stop_child();
            s.port = free_port();
        }
        s.spawn();
        s
    }

    fn stop_child(&mut self) {
        if let Some(mut c) = self.child.take() {
            drop(c.stdin.take()); // the wrapper kills the server, if it runs at all
            let _ = c.wait();
        }
    }

    /// Starts the server on `port`; whether it answers within a few seconds.
    fn try_spawn(&mut self) -> bool {
        self.launch();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !ping(self.port) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    fn spawn(&mut self) {
        self.launch();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ping(self.port) {
            assert!(
                Instant::now() < deadline,
                "redis-server :{} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn launch(&mut self) {
        // Through a shell that kills the server when our end of its stdin closes, so a
        // server held in a `static` (never dropped) still dies with the test process.
        let child = Command::new("sh")
            .args([
                "-c",
                r#"redis-server "$@" & r=$!; read _; kill -9 $r; wait $r"#,
                "sh",
            ])
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", self.dir.to_str().unwrap()])
            .args(&self.extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh and redis-server on PATH (scripts/test installs redis-server)");
        self.child = Some(child);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL): an outage.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            drop(c.stdin.take()); // the wrapper kills the server with SIGKILL
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

    /// `redis-cli -p <port> args…`, trimmed stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }
}

pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli on PATH");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Raw bytes of a key (`redis-cli --no-raw` escapes binary; this reads RESP directly).
pub fn get_raw(port: u16, key: &str) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let cmd = format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len());
    s.write_all(cmd.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    loop {
        s.read_exact(&mut b).unwrap();
        head.push(b[0]);
        if head.ends_with(b"\r\n") {
            break;
        }
    }
    let line = String::from_utf8_lossy(&head[1..head.len() - 2]).to_string();
    let n: i64 = line.parse().unwrap();
    if n < 0 {
        return None;
    }
    let mut body = vec![0u8; n as usize + 2];
    s.read_exact(&mut body).unwrap();
    body.truncate(n as usize);
    Some(body)
}

/// `SET key <bytes> PX ms`, binary-safe.
pub fn set_raw(port: u16, key: &str, value: &[u8], px_ms: u64) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let px = px_ms.to_string();
    let mut cmd = format!(
        "*5\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n",
        key.len(),
        value.len()
    )
    .into_bytes();
    cmd.extend_from_slice(value);
    cmd.extend_from_slice(format!("\r\n$2\r\nPX\r\n${}\r\n{px}\r\n", px.len()).as_bytes());
    s.write_all(&cmd).unwrap();
    let mut ok = [0u8; 5];
    s.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"+OK\r\n");
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of three masters, no replicas.
pub struct Cluster {
    pub nodes: Vec<Server>,
}

impl Cluster {
    pub fn start() -> Self {
        let nodes: Vec<Server> = (0..3)
            .map(|_| {
                Server::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "2000",
                    "--cluster-config-file",
                    "nodes.conf",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli on PATH");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        for n in &nodes {
            while !n.cli(&["cluster", "info"]).contains("cluster_state:ok") {
                assert!(Instant::now() < deadline, "cluster did not become ok");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Self { nodes }
    }

    /// The comma-separated seed list that selects cluster mode.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(Server::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `redis-cli -c` against the first node (follows redirects).
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-c", "-p", &self.nodes[0].port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli on PATH");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}
