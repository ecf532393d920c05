use cachemacro_runtime::cached;

#[cached(ttl = "1m", soft_ttl = "90s", key = "user:<id>")]
async fn get_user(id: u64) -> u64 {
    id
}

fn main() {}
