use cachemacro_runtime::cached;

#[derive(Clone)]
struct User {
    id: u64,
}

#[cached(ttl = 60, key = "user:<id>", backend = redis)]
async fn get_user(id: u64) -> User {
    User { id }
}

fn main() {}
