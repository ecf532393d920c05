use cachemacro_runtime::cached;

#[cached(ttl = "10 minutes", key = "user:<id>")]
async fn get_user(id: u64) -> u64 {
    id
}

fn main() {}
