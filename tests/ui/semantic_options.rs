use cachemacro_runtime::cached;

// `on` names no parameter.
#[cached(ttl = 60, semantic(on = promt, threshold = 0.95), key = "faq:<tenant>")]
async fn a(tenant: String, prompt: String) -> String {
    format!("{tenant}{prompt}")
}

// The compared parameter in the key.
#[cached(ttl = 60, semantic(on = prompt, threshold = 0.95), key = "faq:<tenant>:<prompt>")]
async fn b(tenant: String, prompt: String) -> String {
    format!("{tenant}{prompt}")
}

// A threshold out of range, and a missing `on`.
#[cached(ttl = 60, semantic(threshold = 1.5), key = "faq")]
async fn c(prompt: String) -> String {
    prompt
}

// An option the semantic tier does not do.
#[cached(ttl = 60, soft_ttl = 10, semantic(on = prompt, threshold = 0.95), key = "faq")]
async fn d(prompt: String) -> String {
    prompt
}

// An unknown option inside `semantic(…)`, and `judge` without `verify`.
#[cached(ttl = 60, semantic(on = prompt, threshold = 0.9, treshold = 0.9), key = "faq")]
async fn e(prompt: String) -> String {
    prompt
}

// Another parameter left out of the scope.
#[cached(ttl = 60, semantic(on = prompt, threshold = 0.95), key = "faq")]
async fn f(tenant: String, prompt: String) -> String {
    format!("{tenant}{prompt}")
}

// Memcached cannot hold a scope's entries.
#[cached(ttl = 60, semantic(on = prompt, threshold = 0.95), key = "faq", backend = memcached)]
async fn g(prompt: String) -> String {
    prompt
}

fn main() {}
