use cachemacro_runtime::cached;

#[cached(ttl = "5 min", soft_tll = 10, key = "user:<uid>", stampede = fast)]
fn get_user(id: u64, locale: &str) -> u64 {
    id
}

fn main() {}
