//! `backend = redis`: values shared by every process through Redis.
//!
//! ```text
//! redis-server --port 6379 --save "" &      # if no Redis is running (apt-get install redis-server)
//! cargo run --example redis
//! CACHEMACRO_REDIS_URL=redis://host:6379 CACHEMACRO_PREFIX=demo: cargo run --example redis
//! ```

use std::time::{Duration, Instant};

use cachemacro_runtime::{cached, configure, stats, Config};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

#[derive(Debug)]
struct DbError;

#[cached(ttl = "10m", key = "user:<id>", backend = redis)]
async fn get_user(id: u64) -> Result<User, DbError> {
    tokio::time::sleep(Duration::from_millis(30)).await; // the database
    Ok(User {
        id,
        name: format!("user {id}"),
    })
}

/// Whether something answers at `url`'s host and port.
fn reachable(url: &str) -> bool {
    let hostport = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .rsplit('@')
        .next()
        .unwrap_or_default()
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    std::net::ToSocketAddrs::to_socket_addrs(&hostport)
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok())
}

#[tokio::main]
async fn main() {
    let url = std::env::var("CACHEMACRO_REDIS_URL")
        .unwrap_or_else(|_| cachemacro_runtime::DEFAULT_REDIS_URL.into());
    if !reachable(url.split(',').next().unwrap_or_default()) {
        eprintln!(
            "No Redis at {url}. Start one (`redis-server --port 6379 --save \"\"`; Debian/Ubuntu: \
             `apt-get install redis-server`), or point CACHEMACRO_REDIS_URL at yours."
        );
        eprintln!("(The cache would still work without it: every call would go to the source.)");
        std::process::exit(2);
    }
    let prefix = std::env::var("CACHEMACRO_PREFIX").unwrap_or_else(|_| "example:".into());
    configure(Config::from_env().prefix(prefix.clone())).unwrap();
    get_user_invalidate(42).await.ok(); // start cold

    for label in [
        "miss: loads, writes Redis",
        "hit: read from Redis",
        "hit again",
    ] {
        let t = Instant::now();
        let user = get_user(42).await.unwrap();
        println!(
            "{label:<28} {:>8.3} ms  {user:?}",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    println!(
        "\ninspect it:  redis-cli get '{prefix}user:42'   (a binary envelope, see docs/FORMAT.md)"
    );
    println!("             redis-cli pttl '{prefix}user:42'");
    println!("another process running this example now hits without loading.\n");

    get_user_invalidate(42).await.unwrap();
    println!("after get_user_invalidate(42) the key is gone from Redis; the next call loads.");
    get_user(42).await.unwrap();
    println!("\n{}", stats::table(&stats::all()));
}
