use cachemacro_runtime::cached;

#[cached(ttl = 60, key = "{user:<id>:profile")]
async fn get_user(id: u64) -> u64 {
    id
}

fn main() {}
