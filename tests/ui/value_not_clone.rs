use cachemacro_runtime::cached;

struct User {
    id: u64,
}

#[cached(ttl = 60, key = "user:<id>")]
async fn get_user(id: u64) -> User {
    User { id }
}

fn main() {}
