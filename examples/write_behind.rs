//! Write-behind's loss window, measured: what a process that dies loses.
//!
//! ```text
//! cargo run --release --example write_behind
//! ```
//!
//! The example runs a copy of itself as a child process that accepts 10,000 writes a second
//! into a `WriteBehind` buffer (flush interval 100 ms, batches of up to 1,000), whose sink
//! appends each write to a file, and reports how many writes it has accepted every
//! millisecond. The parent kills it (SIGKILL) at a random moment, then compares the writes
//! accepted with the writes that reached the file. Twenty trials.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use cachemacro_runtime::WriteBehind;

const RATE_PER_MS: u64 = 10;
const FLUSH_MS: u64 = 100;

async fn child(path: String) {
    let file = Arc::new(std::sync::Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap(),
    ));
    let wb = WriteBehind::builder(move |batch: Vec<(u64, u64)>| {
        let file = file.clone();
        async move {
            let mut lines = String::new();
            for (k, _) in batch {
                lines.push_str(&format!("{k}\n"));
            }
            file.lock().unwrap().write_all(lines.as_bytes())
        }
    })
    .flush_interval(Duration::from_millis(FLUSH_MS))
    .max_batch(1000)
    .build();
    let accepted = Arc::new(AtomicU64::new(0));
    let reporter = accepted.clone();
    tokio::spawn(async move {
        let mut out = std::io::stdout();
        loop {
            let _ = writeln!(out, "{}", reporter.load(Relaxed));
            let _ = out.flush();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut next = 0u64;
    loop {
        tick.tick().await;
        for _ in 0..RATE_PER_MS {
            wb.write(next, next).await.unwrap();
            next += 1;
            accepted.store(next, Relaxed);
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        return child(args[2].clone()).await;
    }
    println!(
        "write-behind, flush interval {FLUSH_MS} ms, {} writes/s, killed at random:",
        RATE_PER_MS * 1000
    );
    let mut lost_all = Vec::new();
    for trial in 0..20 {
        let path =
            std::env::temp_dir().join(format!("cachemacro-wb-{}-{trial}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut proc = Command::new(std::env::current_exe().unwrap())
            .args(["child", path.to_str().unwrap()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(proc.stdout.take().unwrap());
        let lifetime = Duration::from_millis(300 + fastrand::u64(..700));
        let start = std::time::Instant::now();
        let mut accepted = 0u64;
        let mut line = String::new();
        while start.elapsed() < lifetime {
            line.clear();
            if out.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            accepted = line.trim().parse().unwrap_or(accepted);
        }
        proc.kill().unwrap();
        let _ = proc.wait();
        let persisted = std::fs::read_to_string(&path).map_or(0, |s| s.lines().count() as u64);
        let lost = accepted.saturating_sub(persisted);
        println!(
            "  trial {trial:>2}: killed after {:>4} ms, accepted ≥ {accepted:>5}, persisted {persisted:>5}, lost {lost:>5} ({:.0} ms of writes)",
            lifetime.as_millis(),
            lost as f64 / RATE_PER_MS as f64
        );
        lost_all.push(lost);
        let _ = std::fs::remove_file(&path);
    }
    lost_all.sort_unstable();
    let mean = lost_all.iter().sum::<u64>() as f64 / lost_all.len() as f64;
    println!(
        "lost writes: mean {mean:.0} ({:.0} ms), max {} ({:.0} ms); bound: flush interval × rate + one batch = {}",
        mean / RATE_PER_MS as f64,
        lost_all.last().unwrap(),
        *lost_all.last().unwrap() as f64 / RATE_PER_MS as f64,
        FLUSH_MS * RATE_PER_MS + 1000
    );
}
