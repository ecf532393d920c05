use cachemacro_runtime::cached;

#[derive(Clone)]
struct Answer(String);

// `verify` without a `judge` compares answers with `==`.
#[cached(ttl = 60, semantic(on = prompt, threshold = 0.95, verify = 0.01), key = "faq")]
async fn answer(prompt: String) -> Answer {
    Answer(prompt)
}

fn main() {}
