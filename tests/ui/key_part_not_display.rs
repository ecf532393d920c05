use cachemacro_runtime::cached;

#[derive(Clone)]
struct Filter {
    tags: Vec<String>,
}

#[cached(ttl = 60, key = "search:<filter>")]
async fn search(filter: Filter) -> u64 {
    filter.tags.len() as u64
}

fn main() {}
