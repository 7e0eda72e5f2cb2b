//! A trace backend that does not answer costs the spans and nothing else: deployments flow, and
//! flushing the exporter returns within its timeout instead of hanging the process.

mod common;

use std::time::{Duration, Instant};

use serde_json::json;

use mot::config::{LogFormat, TelemetryConfig};

#[test]
fn deployments_flow_while_the_trace_backend_is_down() {
    // A port nobody listens on.
    let closed = common::free_port();
    let telemetry = mot::telemetry::init(
        &TelemetryConfig {
            otlp_endpoint: Some(format!("http://127.0.0.1:{closed}")),
            service_name: None,
            sample_ratio: None,
            log_format: LogFormat::Json,
        },
        &Default::default(),
    )
    .unwrap();
    actix::System::new().block_on(async {
        let flow = common::flow::start().await;
        let p = flow.prod_region.clone();
        for _ in 0..3 {
            let id = flow.post(json!([{"region": p, "zones": ["a"]}])).await;
            flow.deployment_until(&id, "healthy", |v| v["status"] == "healthy")
                .await;
        }
    });
    let started = Instant::now();
    telemetry.flush();
    telemetry.shutdown();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "flushing to a dead backend is bounded: {:?}",
        started.elapsed()
    );
}
