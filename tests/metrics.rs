//! Every counter and latency quantile of `Stats` reaches the `metrics` facade, labelled by
//! function name only.
#![cfg(feature = "metrics")]

use cachemacro_runtime::cached;
use metrics_exporter_prometheus::PrometheusBuilder;

#[cached(ttl = 60, key = "m:<id>", name = "catalogue")]
async fn catalogue(id: u64) -> u64 {
    id
}

#[tokio::test]
async fn stats_are_exported_through_the_metrics_facade() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).unwrap();
    for id in [1, 1, 1, 2] {
        catalogue(id).await;
    }
    cachemacro_runtime::metrics::export();
    let text = handle.render();
    for line in [
        r#"cachemacro_hits_total{function="catalogue"} 2"#,
        r#"cachemacro_misses_total{function="catalogue"} 2"#,
        r#"cachemacro_loads_total{function="catalogue"} 2"#,
        r#"cachemacro_hit_ratio{function="catalogue"} 0.5"#,
        r#"cachemacro_evictions_total{function="catalogue"} 0"#,
        r#"cachemacro_stampede_signal_total{function="catalogue"} 0"#,
        r#"cachemacro_stampede_escapes_total{function="catalogue"} 0"#,
        r#"cachemacro_stampede_absorbed_total{function="catalogue"} 0"#,
        r#"cachemacro_oversized_total{function="catalogue"} 0"#,
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    assert!(
        text.contains(r#"cachemacro_load_latency_seconds{function="catalogue",quantile="0.99"}"#)
    );
    assert!(!text.contains("m:1"), "keys never become labels");
}
