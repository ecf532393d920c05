use cachemacro_runtime::cached;

struct Query {
    id: u64,
}

#[cached(ttl = 60, refresh_every = "10s", key = "q:<q.id>")]
async fn lookup(q: Query) -> u64 {
    q.id
}

fn main() {}
