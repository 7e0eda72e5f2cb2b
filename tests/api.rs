//! The deployment API as a client uses it: the app is spawned in-process on port 0 against the
//! running Kafka clusters and a Cassandra keyspace of its own.

mod common;

use std::time::Duration;

use actix::Actor;
use serde_json::{json, Value};

use mot::actors::supervisor::{Backoff, RegionSupervisor, Shutdown};
use mot::actors::SERVICE_AGENTS;
use mot::models::deployment::{DeploymentRequested, LaunchRequested};
use mot::models::envelope::{self, Envelope};
use mot::topics::names::TopicName;

use common::api::{spawn_app, spawn_app_custom, spawn_app_with};

fn request(marker: &str) -> Value {
    json!({
        "app": "checkout-web", "version": format!("1.4.2-{marker}"),
        "artifact": "registry.example.com/checkout-web:1.4.2",
        "instances_per_zone": 2, "resources": {"cpus": 0.5, "mem_mb": 256}, "ports": [8080],
        "health_check": {"path": "/health", "interval_secs": 10}, "env": {"LOG_LEVEL": "info"},
        "targets": [{"region": "test-us-east-1", "zones": ["a", "b", "c"]}, {"region": "production-us-west-2"}]
    })
}

#[actix_web::test]
async fn a_valid_request_is_accepted_logged_once_and_readable_right_away() {
    let app = spawn_app().await;
    let marker = common::unique("ok");
    let (status, location, body) = app.post(&request(&marker), None).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        location.as_deref(),
        Some(format!("/deployments/{id}").as_str())
    );
    assert_eq!(body["status"], "requested");
    assert_eq!(
        body["targets"][1],
        json!({"region": "production-us-west-2", "zones": ["a", "b", "c"]})
    );

    let logged = app
        .records(TopicName::parse("mot-deployment-requests").unwrap(), &id)
        .await;
    assert_eq!(logged.len(), 1);
    let env: Envelope<DeploymentRequested> =
        envelope::decode(Some(&logged[0].0), Some(&logged[0].1)).unwrap();
    assert_eq!(logged[0].0, b"checkout-web", "requests are keyed by app");
    assert_eq!(env.payload.id.to_string(), id);
    assert_eq!(env.payload.targets.len(), 2);
    assert_eq!(env.origin, app.topology.config().topology.central);

    let got: Value = app
        .client
        .get(format!("{}/deployments/{id}", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["status"], "requested");
    assert_eq!(got["app"], "checkout-web");
    assert_eq!(
        got["targets"],
        json!(["test-us-east-1", "production-us-west-2"])
    );
}

#[actix_web::test]
async fn the_fan_out_turns_a_request_into_one_launch_event_per_region() {
    // A central region of the test's own name: its fan-out's consumer group is the test's alone,
    // and it skips every other test's requests on the shared request topic.
    let app = spawn_app_custom(None, Some(&common::unique_region())).await;
    let central = app.topology.config().topology.central.clone();
    let supervisor = RegionSupervisor::regional(
        app.topology.clone(),
        central,
        SERVICE_AGENTS,
        app.registry.clone(),
        Backoff::default(),
    )
    .start();
    let (status, _, body) = app.post(&request(&common::unique("fan")), None).await;
    assert_eq!(status, 202);
    let id = body["id"].as_str().unwrap().to_owned();
    for (region, zones) in [
        ("test-us-east-1", vec!["a", "b", "c"]),
        ("production-us-west-2", vec!["a", "b", "c"]),
    ] {
        let topic = TopicName::parse(&format!("mot-deployment-launch-events-{region}")).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let launches = loop {
            let found = app.records(topic.clone(), &id).await;
            if !found.is_empty() {
                break found;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no launch event for {region}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(launches.len(), 1, "one launch event for {region}");
        let env: Envelope<LaunchRequested> =
            envelope::decode(Some(&launches[0].0), Some(&launches[0].1)).unwrap();
        assert_eq!(launches[0].0, b"checkout-web", "launches are keyed by app");
        assert_eq!(env.payload.deployment_id.to_string(), id);
        assert_eq!(env.payload.region.as_str(), region);
        let got: Vec<&str> = env.payload.zones.iter().map(|z| z.as_str()).collect();
        assert_eq!(got, zones);
        assert_eq!(env.payload.spec.instances_per_zone, 2);
    }

    let metrics = app.metrics().await;
    assert_prometheus_text(&metrics);
    let counter = format!(
        "mot_agent_published_total{{agent=\"DeploymentFanOutAgent\",region=\"{}\"}}",
        app.topology.config().topology.central
    );
    let published = metrics
        .lines()
        .find(|l| l.starts_with(&counter))
        .unwrap_or_else(|| panic!("no fan-out counter in:\n{metrics}"));
    let n: u64 = published.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(n, 2, "one launch event per region, each once: {published}");
    assert!(
        metrics.contains(
            "mot_http_requests_total{route=\"/deployments\",method=\"POST\",status=\"202\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("mot_http_request_duration_seconds_count{route=\"/deployments\",method=\"POST\",status=\"202\"} 1"));

    // The fan-out's consumer group reports its lag per partition (librdkafka statistics, 5 s).
    let lag_prefix = format!(
        "mot_consumer_lag{{group=\"mot-deployment-fan-out-agent-{}\",topic=\"mot-deployment-requests\",partition=",
        app.topology.config().topology.central
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let metrics = app.metrics().await;
        let lags: Vec<i64> = metrics
            .lines()
            .filter(|l| l.starts_with(&lag_prefix))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        if !lags.is_empty() {
            assert!(lags.iter().all(|l| *l >= 0), "{lags:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no consumer lag for the fan-out in:\n{metrics}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    supervisor.send(Shutdown).await.unwrap();
}

#[actix_web::test]
async fn bad_requests_get_a_4xx_naming_the_field_and_produce_nothing() {
    let app = spawn_app().await;
    let marker = common::unique("bad");
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut body = request(&marker);
        edit(&mut body);
        body
    };
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "unknown field",
            with(&|b| b["bogus"] = json!(1)),
            400,
            "bogus",
        ),
        (
            "unknown region",
            with(&|b| b["targets"][0]["region"] = json!("test-eu-west-9")),
            422,
            "targets[0].region",
        ),
        (
            "unknown zone",
            with(&|b| b["targets"][0]["zones"] = json!(["a", "q"])),
            422,
            "targets[0].zones[1]",
        ),
        (
            "empty targets",
            with(&|b| b["targets"] = json!([])),
            422,
            "targets",
        ),
        (
            "zero instances",
            with(&|b| b["instances_per_zone"] = json!(0)),
            422,
            "instances_per_zone",
        ),
        (
            "negative instances",
            with(&|b| b["instances_per_zone"] = json!(-2)),
            400,
            "instances_per_zone",
        ),
        (
            "uppercase app",
            with(&|b| b["app"] = json!("Checkout")),
            422,
            "app",
        ),
        (
            "slash in app",
            with(&|b| b["app"] = json!("checkout/web")),
            422,
            "app",
        ),
        (
            "spaces in app",
            with(&|b| b["app"] = json!("checkout web")),
            422,
            "app",
        ),
        (
            "300-character app",
            with(&|b| b["app"] = json!("a".repeat(300))),
            422,
            "app",
        ),
        (
            "missing field",
            with(&|b| {
                b.as_object_mut().unwrap().remove("artifact");
            }),
            400,
            "artifact",
        ),
        (
            "missing nested field",
            with(&|b| {
                b["resources"].as_object_mut().unwrap().remove("cpus");
            }),
            400,
            "resources.cpus",
        ),
        (
            "wrong type",
            with(&|b| b["resources"]["mem_mb"] = json!("lots")),
            400,
            "resources.mem_mb",
        ),
        (
            "a wave naming a region not targeted",
            with(
                &|b| b["strategy"] = json!({"waves": [["test-us-east-1"], ["production-us-west-2", "stage-us-east-1"]]}),
            ),
            422,
            "strategy.waves[1][1]",
        ),
        (
            "a target region in no wave",
            with(&|b| b["strategy"] = json!({"waves": [["test-us-east-1"]]})),
            422,
            "strategy.waves",
        ),
        (
            "a region in two waves",
            with(&|b| {
                b["strategy"] = json!({"waves": [["test-us-east-1"], ["test-us-east-1", "production-us-west-2"]]})
            }),
            422,
            "strategy.waves[1][0]",
        ),
        (
            "negative min_healthy_secs",
            with(&|b| b["strategy"] = json!({"max_parallel": 1, "min_healthy_secs": -5})),
            422,
            "strategy.min_healthy_secs",
        ),
        (
            "a deadline no longer than the healthy time",
            with(&|b| {
                b["strategy"] =
                    json!({"max_parallel": 1, "min_healthy_secs": 60, "deadline_secs": 30})
            }),
            422,
            "strategy.deadline_secs",
        ),
        (
            "both waves and max_parallel",
            with(&|b| {
                b["strategy"] = json!({"waves": [["test-us-east-1", "production-us-west-2"]], "max_parallel": 1})
            }),
            422,
            "strategy.max_parallel",
        ),
        (
            "neither waves nor max_parallel",
            with(&|b| b["strategy"] = json!({"on_failure": "rollback"})),
            422,
            "strategy.waves",
        ),
        (
            "an unknown on_failure",
            with(&|b| b["strategy"] = json!({"max_parallel": 2, "on_failure": "shrug"})),
            422,
            "strategy.on_failure",
        ),
        (
            "an unknown strategy field",
            with(&|b| b["strategy"] = json!({"max_parallel": 2, "canary": true})),
            400,
            "strategy.canary",
        ),
    ];
    for (what, body, status, field) in cases {
        let (got, _, answer) = app.post(&body, None).await;
        assert_eq!(got, status, "{what}: {answer}");
        let fields: Vec<&str> = answer["error"]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["field"].as_str().unwrap())
            .collect();
        assert!(
            fields.contains(&field),
            "{what}: {field} not named in {answer}"
        );
        assert!(
            answer["error"]["code"].is_string() && answer["error"]["message"].is_string(),
            "{what}: {answer}"
        );
    }

    let (status, answer) = app
        .post_raw("application/json", b"{\"app\": ".to_vec())
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("malformed_json"))
    );
    let (status, answer) = app
        .post_raw("text/plain", serde_json::to_vec(&request(&marker)).unwrap())
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    let mut huge = request(&marker);
    huge["env"] = json!({"BIG": "x".repeat(70_000)});
    let (status, answer) = app
        .post_raw("application/json", serde_json::to_vec(&huge).unwrap())
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );

    assert_eq!(
        app.requests_marked(&marker).await,
        0,
        "a refused request produces nothing"
    );
}

#[actix_web::test]
async fn a_strategy_is_logged_with_its_waves_explicit() {
    let app = spawn_app().await;
    let marker = common::unique("strategy");
    let mut body = request(&marker);
    body["strategy"] = json!({"max_parallel": 1, "min_healthy_secs": 5, "on_failure": "rollback"});
    let (status, _, answer) = app.post(&body, None).await;
    assert_eq!(status, 202, "{answer}");
    let logged = app.requests_marked_payloads(&marker).await;
    assert_eq!(logged.len(), 1);
    assert_eq!(
        logged[0]["strategy"],
        json!({"waves": [["test-us-east-1"], ["production-us-west-2"]], "max_parallel": 1,
               "min_healthy_secs": 5, "deadline_secs": 600, "on_failure": "rollback"})
    );
}

#[actix_web::test]
async fn a_retried_post_with_the_same_idempotency_key_is_one_deployment_logged_once() {
    let app = spawn_app().await;
    let marker = common::unique("idem");
    let key = common::unique("key");
    let (first, _, a) = app.post(&request(&marker), Some(&key)).await;
    let (second, _, b) = app.post(&request(&marker), Some(&key)).await;
    assert_eq!((first, second), (202, 202));
    assert_eq!(a["id"], b["id"]);
    assert_eq!(app.requests_marked(&marker).await, 1, "launched once");

    let (status, _, answer) = app.post(&request("something-else"), Some(&key)).await;
    assert_eq!(status, 422);
    assert_eq!(answer["error"]["code"], "idempotency_key_reused");
}

#[actix_web::test]
async fn kafka_unavailable_is_a_503_with_retry_after() {
    let app = spawn_app_with(Some("127.0.0.1:1")).await;
    let resp = app
        .client
        .post(format!("{}/deployments", app.url))
        .json(&request(&common::unique("down")))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(resp.headers().get("retry-after").unwrap(), "5");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(
        !body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("librdkafka"),
        "no internal error text"
    );
}

#[actix_web::test]
async fn unknown_deployments_and_bad_ids_are_json_errors() {
    let app = spawn_app().await;
    let missing = app
        .client
        .get(format!("{}/deployments/{}", app.url, uuid::Uuid::new_v4()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["error"]["code"],
        "not_found"
    );
    let bad = app
        .client
        .get(format!("{}/deployments/not-a-uuid", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    assert_eq!(
        bad.json::<Value>().await.unwrap()["error"]["fields"][0]["field"],
        "id"
    );
}

#[actix_web::test]
async fn the_openapi_document_describes_the_served_routes() {
    let app = spawn_app().await;
    let doc: Value = app
        .client
        .get(format!("{}/openapi.json", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    // Every route the server registers (from the same tables) is described.
    for (method, path) in mot::web::ROUTES_ALWAYS
        .iter()
        .chain(mot::web::SERVICE_ROUTES)
    {
        let operation = &doc["paths"][path][method.to_ascii_lowercase()];
        assert!(operation.is_object(), "{method} {path} is not described");
        assert!(
            operation["responses"].is_object(),
            "{method} {path}: no responses"
        );
        // The public routes say they need no credentials; every other one answers 401 without.
        if mot::web::ROUTES_ALWAYS.contains(&(*method, *path)) {
            assert_eq!(operation["security"], json!([]), "{method} {path}");
        } else {
            assert!(
                operation["responses"]["401"].is_object(),
                "{method} {path}: no 401"
            );
        }
    }
    assert_eq!(doc["security"], json!([{"bearer": []}]));
    let required = &doc["components"]["schemas"]["DeploymentRequest"]["required"];
    assert!(required.as_array().unwrap().contains(&json!("targets")));
}

#[actix_web::test]
async fn readyz_says_ready_when_kafka_and_cassandra_answer_and_names_what_is_not() {
    let app = spawn_app().await;
    // Readiness is a moment's answer: on a loaded machine one metadata request can time out, so
    // this waits (up to 60 s) for the answer to be ready.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let body = loop {
        let ready = app
            .client
            .get(format!("{}/readyz", app.url))
            .send()
            .await
            .unwrap();
        let status = ready.status().as_u16();
        let body: Value = ready.json().await.unwrap();
        if status == 200 {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "never ready: {body}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(body["ready"], true);
    let names: Vec<&str> = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    // dev/mot.toml runs every role: every home cluster is checked, and Cassandra.
    for name in [
        "kafka production-us-east-1",
        "kafka production-us-west-2",
        "kafka test-us-east-1",
        "cassandra",
    ] {
        assert!(names.contains(&name), "{name} not checked: {names:?}");
    }

    let down = spawn_app_with(Some("127.0.0.1:1")).await;
    let not_ready = down
        .client
        .get(format!("{}/readyz", down.url))
        .send()
        .await
        .unwrap();
    assert_eq!(not_ready.status().as_u16(), 503);
    let body: Value = not_ready.json().await.unwrap();
    assert_eq!(body["ready"], false);
    let check = |name: &str| {
        body["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no check {name}: {body}"))
            .clone()
    };
    let central = check("kafka production-us-east-1");
    assert_eq!(central["ready"], false);
    assert!(central["reason"].is_string(), "{central}");
    assert_eq!(check("cassandra")["ready"], true, "cassandra is fine");
    assert_eq!(check("kafka production-us-west-2")["ready"], true);
}

/// Checks the Prometheus text exposition format strictly: every sample is `name{labels} value`
/// with a float value and well-quoted labels, and belongs to a family declared by `# TYPE`
/// before it (a `_count`, `_sum` or quantile sample to its summary or histogram).
fn assert_prometheus_text(text: &str) {
    let mut families: std::collections::HashMap<String, String> = Default::default();
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(name_ok(name), "bad family name: {line}");
            assert!(
                ["counter", "gauge", "summary", "histogram", "untyped"].contains(&kind),
                "bad type: {line}"
            );
            assert!(
                families.insert(name.into(), kind.into()).is_none(),
                "declared twice: {line}"
            );
            continue;
        }
        if line.starts_with('#') {
            assert!(line.starts_with("# HELP "), "unknown comment: {line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample is `series value`");
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("value is not a float: {line}"));
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').expect("labels end with }");
                let mut rest = labels;
                while !rest.is_empty() {
                    let (label, after) = rest.split_once("=\"").expect("label=\"value\"");
                    assert!(name_ok(label), "bad label name in: {line}");
                    let mut end = None;
                    let mut escaped = false;
                    for (i, c) in after.char_indices() {
                        match (escaped, c) {
                            (true, _) => escaped = false,
                            (false, '\\') => escaped = true,
                            (false, '"') => {
                                end = Some(i);
                                break;
                            }
                            _ => {}
                        }
                    }
                    let end = end.unwrap_or_else(|| panic!("unterminated label value: {line}"));
                    rest = after[end + 1..].trim_start_matches(',');
                }
                name
            }
            None => series,
        };
        assert!(name_ok(name), "bad metric name: {line}");
        let family = [
            name,
            name.trim_end_matches("_count"),
            name.trim_end_matches("_sum"),
            name.trim_end_matches("_bucket"),
        ]
        .into_iter()
        .find(|f| families.contains_key(*f));
        assert!(
            family.is_some(),
            "sample without a # TYPE before it: {line}"
        );
    }
    assert!(!families.is_empty(), "no metric families");
}

#[actix_web::test]
async fn cassandra_failing_a_read_or_a_write_is_a_503_with_retry_after() {
    let app = spawn_app().await;
    let config = app.topology.config().cassandra.clone();
    let session = mot::store::connect(&config).await.unwrap();
    // Tables gone from under the API: every statement on them fails in Cassandra.
    for table in ["deployments", "app_generations"] {
        session
            .query_unpaged(format!("DROP TABLE {}.{table}", config.keyspace), ())
            .await
            .unwrap();
    }
    let get = app
        .client
        .get(format!("{}/deployments/{}", app.url, uuid::Uuid::new_v4()))
        .send()
        .await
        .unwrap();
    let post = app
        .client
        .post(format!("{}/deployments", app.url))
        .json(&request(&common::unique("nodb")))
        .send()
        .await
        .unwrap();
    for resp in [get, post] {
        assert_eq!(resp.status().as_u16(), 503);
        assert_eq!(resp.headers().get("retry-after").unwrap(), "1");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unavailable", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            !message.contains("unconfigured"),
            "no driver text: {message}"
        );
    }
}
