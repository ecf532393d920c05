use cachemacro_runtime::cached;

#[derive(Clone)]
struct Doc {
    org: u64,
    ids: Vec<u64>,
}

#[cached(ttl = 60, key = "a:<id>", tags = ["org:<id>:<result.org>"])]
async fn mixed(id: u64) -> Doc {
    Doc { org: id, ids: vec![] }
}

#[cached(ttl = 60, key = "b:<id>", tags = ["x:<result.org>:<result[]>"])]
async fn each_and_whole(id: u64) -> Doc {
    Doc { org: id, ids: vec![] }
}

#[cached(ttl = 60, key = "c:<result[]>")]
async fn in_the_key(id: u64) -> Doc {
    Doc { org: id, ids: vec![] }
}

#[cached(ttl = 60, key = "d:<id>", tags = ["org:<result.orgg>"])]
async fn no_such_field(id: u64) -> Doc {
    Doc { org: id, ids: vec![id] }
}

fn main() {}
