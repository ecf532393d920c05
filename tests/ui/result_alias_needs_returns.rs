use cachemacro_runtime::cached;

type Fetched = Result<u64, String>;

#[cached(ttl = 60, key = "user:<id>")]
async fn get_user(id: u64) -> Fetched {
    Ok(id)
}

fn main() {}
