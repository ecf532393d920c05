use cachemacro_runtime::cached;

#[derive(Debug, Clone)]
struct DbError;

#[cached(ttl = 60, hard_timeout = "1s", key = "a:<id>")]
async fn needs_from(id: u64) -> Result<u64, DbError> {
    Ok(id)
}

fn main() {}
