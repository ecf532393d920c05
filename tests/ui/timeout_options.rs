use cachemacro_runtime::cached;

#[cached(ttl = 60, timeout = "2s", hard_timeout = "1s", key = "a:<id>")]
async fn soft_not_shorter(id: u64) -> Result<u64, String> {
    Ok(id)
}

#[cached(ttl = 60, hard_timeout = "1s", key = "b:<id>")]
async fn nothing_to_give_up_with(id: u64) -> u64 {
    id
}

#[cached(ttl = 60, refresh_every = "10s", key = "c:<name>")]
async fn refresh_ahead_borrowed(name: &str) -> String {
    name.to_owned()
}

#[cached(ttl = 60, refresh_idle = "1m", key = "d:<id>")]
async fn idle_without_every(id: u64) -> u64 {
    id
}

#[cached(ttl = 60, max_refreshes = 0, hot_keys = "ten", key = "e:<id>")]
async fn bad_counts(id: u64) -> u64 {
    id
}

#[cached(ttl = 60, refresh_every = "2m", key = "f:<id>")]
async fn refresh_after_expiry(id: u64) -> u64 {
    id
}

#[cached(ttl = 60, hot_keys = 5000, key = "g:<id>")]
async fn too_many_hot_keys(id: u64) -> u64 {
    id
}

fn main() {}
