use cachemacro_runtime::cached;

#[cached(ttl = 60, key = "user:<id>", cache_none = true)]
async fn get_user(id: u64) -> Result<u64, String> {
    Ok(id)
}

fn main() {}
