use cachemacro_runtime::cached;

struct Repo {
    tenant: u64,
}

impl Repo {
    #[cached(ttl = 60, key = "repo:<self.tenant>:<id>")]
    async fn find(#[key_ignore] &self, id: u64) -> u64 {
        self.tenant + id
    }
}

fn main() {}
