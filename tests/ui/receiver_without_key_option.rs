use cachemacro_runtime::cached;

struct Repo {
    tenant: u64,
}

impl Repo {
    #[cached(ttl = 60)]
    async fn find(&self, id: u64) -> u64 {
        self.tenant + id
    }
}

fn main() {}
