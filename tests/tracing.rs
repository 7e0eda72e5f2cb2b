//! One trace per deployment, against the real trace backend `dev/infra` runs (Jaeger v2, OTLP on
//! 4318, query API on 16686): the POST opens it and every hop continues it through Kafka headers
//! and HTTP headers, down to the Cassandra writes of the persistence layer.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{json, Value};

use mot::config::{LogFormat, TelemetryConfig};

/// Jaeger's answer for `trace_id`, once it holds at least `min_spans` spans.
async fn trace(trace_id: &str, min_spans: usize) -> Vec<Value> {
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let resp = http
            .get(format!("http://127.0.0.1:16686/api/traces/{trace_id}"))
            .send()
            .await
            .unwrap();
        if resp.status().is_success() {
            let body: Value = resp.json().await.unwrap();
            let spans = body["data"][0]["spans"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if spans.len() >= min_spans {
                return spans;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "trace {trace_id} never reached {min_spans} spans in Jaeger"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn tag<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["tags"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == key)
        .map(|t| &t["value"])
}

#[test]
fn one_post_to_two_regions_is_one_trace_from_the_api_to_the_archive() {
    let telemetry = mot::telemetry::init(
        &TelemetryConfig {
            otlp_endpoint: Some("http://127.0.0.1:4318".into()),
            service_name: Some(format!("mot-test-{}", common::unique("").replace('_', ""))),
            sample_ratio: None,
            log_format: LogFormat::Text,
        },
        &Default::default(),
    )
    .unwrap();
    let (trace_id, test_region, prod_region) = actix::System::new().block_on(async {
        let flow = common::flow::start().await;
        let (t, p) = (flow.test_region.clone(), flow.prod_region.clone());
        let resp = flow
            .http
            .post(format!("{}/deployments", flow.url))
            .json(&json!({
                "app": "checkout-web", "version": "2.0.0", "artifact": "registry.example.com/checkout-web:2.0.0",
                "instances_per_zone": 1, "resources": {"cpus": 0.5, "mem_mb": 256},
                "targets": [{"region": t}, {"region": p}],
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202);
        let body: Value = resp.json().await.unwrap();
        let id = body["id"].as_str().unwrap().to_owned();
        let trace_id = body["trace_id"].as_str().unwrap().to_owned();
        assert_eq!(trace_id.len(), 32, "{body}");
        assert_ne!(trace_id, "0".repeat(32), "the request is traced");
        let view = flow
            .deployment_until(&id, "healthy", |v| v["status"] == "healthy")
            .await;
        assert_eq!(view["trace_id"], trace_id.as_str(), "GET names the trace");
        // Wait until the complete events were archived (the end of the traced path).
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (_, events) = flow.get(&format!("/deployments/{id}/events")).await;
            let accepted = events["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["kind"] == "scheduler-accepted")
                .count();
            if accepted == 6 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{events:#}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        (trace_id, t, p)
    });
    telemetry.flush();

    let spans = actix::System::new().block_on(trace(&trace_id, 20));
    let by_id: BTreeMap<&str, &Value> = spans
        .iter()
        .map(|s| (s["spanID"].as_str().unwrap(), s))
        .collect();
    let names: Vec<&str> = spans
        .iter()
        .map(|s| s["operationName"].as_str().unwrap())
        .collect();
    let count = |name: &str| names.iter().filter(|n| **n == name).count();
    let agents: BTreeSet<String> = spans
        .iter()
        .filter_map(|s| {
            tag(s, "mot.agent")
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        })
        .collect();

    assert_eq!(count("POST /deployments"), 1, "{names:?}");
    assert_eq!(count("send mot-deployment-requests"), 1, "{names:?}");
    // The fan-out launches it; the RolloutAgent follows it (for its CDEvents).
    assert_eq!(count("process mot-deployment-requests"), 2, "{names:?}");
    for agent in [
        "DeploymentFanOutAgent",
        "RolloutAgent",
        "Localizer",
        "DeploymentOperationAgent",
        "CompleteEventArchivalAgent",
    ] {
        assert!(agents.contains(agent), "{agent} missing from {agents:?}");
    }
    // Both regions' operation agents, and all six zones' scheduler calls.
    for region in [&test_region, &prod_region] {
        assert!(
            names.contains(&format!("process mot-deployment-launch-events-{region}").as_str()),
            "{region}: {names:?}"
        );
        assert!(
            names.contains(&format!("process mot-deployment-complete-events.{region}").as_str()),
            "{region}'s archival: {names:?}"
        );
    }
    // One answered PUT per zone; an attempt that got no answer (a loaded machine's scheduler
    // not reached in time) is retried, and is in the trace too, without a status.
    let answered_puts = spans
        .iter()
        .filter(|s| {
            s["operationName"] == "PUT /v2/apps/{id}"
                && tag(s, "http.response.status_code").is_some()
        })
        .count();
    assert_eq!(answered_puts, 6, "one answered PUT per zone: {names:?}");
    assert_eq!(
        count("INSERT deployment_events"),
        6,
        "one timeline row per zone's outcome: {names:?}"
    );

    // One tree: one root (the API's span); every other span's parent is in the trace.
    let roots: Vec<&str> = spans
        .iter()
        .filter(|s| {
            !s["references"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["refType"] == "CHILD_OF"))
        })
        .map(|s| s["operationName"].as_str().unwrap())
        .collect();
    assert_eq!(roots, ["POST /deployments"], "one root");
    for span in &spans {
        for parent in span["references"].as_array().into_iter().flatten() {
            if parent["refType"] == "CHILD_OF" {
                let parent_id = parent["spanID"].as_str().unwrap();
                assert!(
                    by_id.contains_key(parent_id),
                    "{}'s parent is in the trace",
                    span["operationName"]
                );
            }
        }
    }
    // Conventions: messaging spans say Kafka and where; database spans say Cassandra.
    for span in &spans {
        let name = span["operationName"].as_str().unwrap();
        if name.starts_with("process ") {
            assert_eq!(
                tag(span, "messaging.system"),
                Some(&json!("kafka")),
                "{name}"
            );
            assert!(tag(span, "messaging.destination.name").is_some(), "{name}");
            assert!(tag(span, "messaging.kafka.offset").is_some(), "{name}");
        }
        if name.starts_with("INSERT ") {
            assert_eq!(
                tag(span, "db.system.name"),
                Some(&json!("cassandra")),
                "{name}"
            );
        }
        // An answered PUT created the app; an unanswered attempt has no status.
        if name.starts_with("PUT ") {
            if let Some(status) = tag(span, "http.response.status_code") {
                assert_eq!(status, &json!(201), "{name}");
            }
        }
    }
    // The fan-out's and the RolloutAgent's spans are children of the API's send.
    let send = spans
        .iter()
        .find(|s| s["operationName"] == "send mot-deployment-requests")
        .unwrap();
    for agent in ["DeploymentFanOutAgent", "RolloutAgent"] {
        let process = spans
            .iter()
            .find(|s| {
                s["operationName"] == "process mot-deployment-requests"
                    && tag(s, "mot.agent") == Some(&json!(agent))
            })
            .unwrap();
        assert_eq!(
            process["references"][0]["spanID"], send["spanID"],
            "{agent}"
        );
    }
    telemetry.shutdown();
}
