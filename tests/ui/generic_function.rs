use cachemacro_runtime::cached;

#[cached(ttl = 60, key = "v:<v>")]
async fn get<T: std::fmt::Display>(v: T) -> String {
    v.to_string()
}

fn main() {}
