use cachemacro_runtime::cached;

#[cached(ttl = 60, key = "<org><id>")]
async fn get_user(org: u64, id: u64) -> u64 {
    org + id
}

fn main() {}
