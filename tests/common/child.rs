//! Driving `cm-child` processes (src/bin/cm-child.rs) for multi-process tests.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// One `cm-child` process.
pub struct Proc {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
}

impl Proc {
    /// Starts a child on `url` (one URL, or a cluster's list) with a key prefix.
    pub fn start(url: &str, prefix: &str) -> Self {
        Self::start_with(url, prefix, &[])
    }

    /// [`Proc::start`] with extra environment variables.
    pub fn start_with(url: &str, prefix: &str, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cm-child"))
            .envs(env.iter().copied())
            .env("CACHEMACRO_REDIS_URL", url)
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

    /// One counter of `stats F`.
    pub fn stat(&mut self, f: &str, name: &str) -> u64 {
        let a = self.cmd(&format!("stats {f}"));
        a.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {a}"))
    }

    /// Kills the process (SIGKILL): it dies holding whatever it holds.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Reads the answer to a command sent earlier, failing the test after `secs` seconds.
    pub fn answer_within(&mut self, secs: u64) -> String {
        let (tx, rx) = std::sync::mpsc::channel();
        let (out, child) = (&mut self.out, &mut self.child);
        let answer = std::thread::scope(|s| {
            s.spawn(move || {
                let mut line = String::new();
                let _ = out.read_line(&mut line);
                let _ = tx.send(line.trim().to_owned());
            });
            let answer = rx.recv_timeout(Duration::from_secs(secs)).ok();
            if answer.is_none() {
                let _ = child.kill(); // unblocks the reader
            }
            answer
        });
        answer.unwrap_or_else(|| panic!("no answer within {secs} s: the call hung"))
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

/// The slowest read (after the first) in a `steady` report, in microseconds.
pub fn slowest_us(report: &str) -> u64 {
    report
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("max_us="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("not a steady report: {report}"))
}
