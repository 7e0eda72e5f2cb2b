//! Rollouts end to end over the real Kafka clusters and Cassandra, the zones served by the
//! simulator: waves gated on the deployment's own health, pause / resume / cancel, automatic
//! rollback, and `POST /apps/{app}/rollback`.

mod common;

use rdkafka::Message;
use serde_json::{json, Value};

use common::flow::{region, start, Flow};
use mot::actors::pipeline;
use mot::models::deployment::LaunchRequested;
use mot::topics::names::TopicName;

const ZONES: [&str; 3] = ["a", "b", "c"];

/// Sets checkout-web's health in every zone of `region`: `new-tasks-failing` or `passing`.
async fn health(flow: &Flow, region: &str, state: &str) {
    for zone in ZONES {
        flow.sim_control(region, zone, &format!("apps/checkout-web/health/{state}"))
            .await;
    }
}

/// How many times each zone of `region`'s scheduler received deployment `id`.
async fn puts(flow: &Flow, region: &str, id: &str) -> Vec<u64> {
    let mut out = Vec::new();
    for zone in ZONES {
        let stats = flow.stats(region, zone).await;
        out.push(stats["puts_by_deployment"][id].as_u64().unwrap_or(0));
    }
    out
}

/// POSTs `path` with `body`, answering status and JSON.
async fn post(flow: &Flow, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = flow.http.post(format!("{}{path}", flow.url));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn both(flow: &Flow) -> Value {
    json!([{"region": flow.test_region}, {"region": flow.prod_region}])
}

fn two_waves(flow: &Flow, min_healthy: u32, deadline: u32, on_failure: &str) -> Value {
    json!({"strategy": {
        "waves": [[flow.test_region], [flow.prod_region]],
        "min_healthy_secs": min_healthy, "deadline_secs": deadline, "on_failure": on_failure,
    }})
}

/// The deployment's timeline.
async fn events(flow: &Flow, id: &str) -> Vec<Value> {
    let (status, body) = flow.get(&format!("/deployments/{id}/events")).await;
    assert_eq!(status, 200);
    body["events"].as_array().unwrap().clone()
}

/// The Kafka timestamps (ms) of deployment `id`'s launch events for `region` on the central
/// cluster.
async fn launch_times(flow: &Flow, region: &str, id: &str) -> Vec<i64> {
    let topic = TopicName::parse(&format!("mot-deployment-launch-events-{region}")).unwrap();
    let mut times = Vec::new();
    pipeline::read_to_end(
        &flow.topology.central_home(),
        &topic,
        &common::unique("rollout-reader"),
        |m| {
            let ours = mot::models::envelope::decode::<LaunchRequested>(m.key(), m.payload())
                .is_ok_and(|e| e.payload.deployment_id.to_string() == id);
            if ours {
                times.push(m.timestamp().to_millis().unwrap());
            }
        },
    )
    .await
    .unwrap();
    times
}

/// Version 1 healthy everywhere, then version 2 in two waves (2 s healthy to pass a gate) whose
/// own tasks never pass in the first wave's region, while version 1's still do: their ids.
async fn broken_second_version(flow: &Flow, deadline: u32, on_failure: &str) -> (String, String) {
    let v1 = flow.post_version("1.0.0", both(flow)).await;
    flow.deployment_until(&v1, "healthy", |v| v["status"] == "healthy")
        .await;
    health(flow, &flow.test_region, "new-tasks-failing").await;
    let v2 = flow
        .post_with(
            "2.0.0",
            both(flow),
            two_waves(flow, 2, deadline, on_failure),
        )
        .await;
    (v1, v2)
}

#[actix_web::test]
async fn the_next_wave_waits_for_this_deployments_own_health_and_a_paused_rollout_resumes() {
    let flow = start().await;
    let (test, prod) = (flow.test_region.clone(), flow.prod_region.clone());
    let (_, v2) = broken_second_version(&flow, 8, "pause").await;
    let view = flow
        .deployment_until(&v2, "paused", |v| v["status"] == "paused")
        .await;
    assert_eq!(view["waves"][0]["state"], "failed", "{view:#}");
    assert!(
        view["waves"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("deadline_secs"),
        "{view:#}"
    );
    assert_eq!(view["waves"][1]["state"], "waiting");
    assert_eq!(region(&view, &test)["state"], "failed");
    assert_eq!(region(&view, &prod)["state"], "waiting");
    assert_eq!(puts(&flow, &test, &v2).await, vec![1, 1, 1]);
    assert_eq!(
        puts(&flow, &prod, &v2).await,
        vec![0, 0, 0],
        "the old version's health opened the gate"
    );
    assert!(launch_times(&flow, &prod, &v2).await.is_empty());
    // v2 is cancelled; v3 (same failure) is resumed once its health is fixed.
    let (status, body) = post(&flow, &format!("/deployments/{v2}/cancel"), None).await;
    assert_eq!(status, 202, "{body}");

    let v3 = flow
        .post_with("3.0.0", both(&flow), two_waves(&flow, 2, 8, "pause"))
        .await;
    let view = flow
        .deployment_until(&v3, "paused", |v| v["status"] == "paused")
        .await;
    assert_eq!(view["waves"][0]["state"], "failed");
    let cancelled = flow
        .deployment_until(&v2, "cancelled", |v| v["status"] == "cancelled")
        .await;
    assert_eq!(region(&cancelled, &prod)["state"], "cancelled");

    // Health fixed: resume retries the wave, whose gate now opens, then the second wave runs.
    health(&flow, &test, "passing").await;
    let (status, body) = post(&flow, &format!("/deployments/{v3}/resume"), None).await;
    assert_eq!(status, 202, "{body}");
    let view = flow
        .deployment_until(&v3, "rolled out", |v| {
            v["waves"][1]["state"] == "healthy" && v["status"] == "healthy"
        })
        .await;
    assert_eq!(region(&view, &test)["state"], "healthy");
    assert_eq!(region(&view, &prod)["state"], "healthy");
    assert_eq!(puts(&flow, &prod, &v3).await, vec![1, 1, 1]);
    assert_eq!(
        puts(&flow, &test, &v3).await,
        vec![1, 1, 1],
        "resume re-sent the wave; the scheduler got it once"
    );
    let (status, body) = post(&flow, &format!("/deployments/{v3}/resume"), None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        post(&flow, &format!("/deployments/{v2}/cancel"), None)
            .await
            .0,
        409
    );

    // Wave 2 was launched only after every zone of wave 1 had been healthy for 2 s.
    let healthy_us = events(&flow, &v3)
        .await
        .iter()
        .filter(|e| {
            e["subject"] == "zone" && e["kind"] == "healthy" && e["region"] == test.as_str()
        })
        .map(|e| e["time_us"].as_i64().unwrap())
        .max()
        .expect("wave 1 healthy on the timeline");
    let launched = launch_times(&flow, &prod, &v3).await;
    assert_eq!(launched.len(), 1, "one launch event for the second wave");
    let gate_ms = view["waves"][0]["ended_ms"].as_i64().unwrap();
    let since_ms = view["waves"][0]["healthy_since_ms"].as_i64().unwrap();
    assert_eq!(
        gate_ms,
        since_ms + 2000,
        "the gate opens min_healthy_secs after"
    );
    eprintln!(
        "wave 2 launched {} ms after wave 1's gate opened (wave 1 healthy since {} ms before)",
        launched[0] - gate_ms,
        launched[0] - since_ms
    );
    assert!(
        launched[0] * 1000 >= healthy_us + 2_000_000,
        "wave 2 launched at {} ms, wave 1 healthy at {} ms",
        launched[0],
        healthy_us / 1000
    );
    let steps: Vec<String> = events(&flow, &v3)
        .await
        .iter()
        .filter(|e| e["subject"] == "rollout")
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        steps,
        [
            "wave-started",
            "wave-failed",
            "paused",
            "resumed",
            "wave-started",
            "wave-healthy",
            "wave-started",
            "wave-healthy",
            "healthy"
        ],
        "the timeline tells the rollout's story in order"
    );
}

#[actix_web::test]
async fn a_failing_wave_rolls_every_region_reached_back_and_later_waves_never_run() {
    let flow = start().await;
    let (test, prod) = (flow.test_region.clone(), flow.prod_region.clone());
    // The app's first deployment has nothing to go back to: it fails, and says so.
    health(&flow, &test, "new-tasks-failing").await;
    let first = flow
        .post_with("0.9.0", both(&flow), two_waves(&flow, 2, 4, "rollback"))
        .await;
    let view = flow
        .deployment_until(&first, "failed", |v| v["status"] == "failed")
        .await;
    assert!(
        view["rollout_reason"]
            .as_str()
            .unwrap()
            .contains("nothing to roll back to"),
        "{view:#}"
    );
    assert_eq!(region(&view, &test)["state"], "failed");
    assert_eq!(region(&view, &prod)["state"], "cancelled");
    health(&flow, &test, "passing").await;

    let (v1, v2) = broken_second_version(&flow, 6, "rollback").await;
    let view = flow
        .deployment_until(&v2, "rolled back", |v| v["status"] == "rolled-back")
        .await;
    assert_eq!(region(&view, &test)["state"], "rolled-back", "{view:#}");
    assert_eq!(
        region(&view, &prod)["state"],
        "cancelled",
        "never launched, and says so"
    );
    assert_eq!(view["waves"][1]["state"], "cancelled");
    let rollbacks = view["rollbacks"].as_array().unwrap();
    assert_eq!(rollbacks.len(), 1, "{view:#}");
    assert_eq!(rollbacks[0]["to"], v1.as_str());
    assert_eq!(rollbacks[0]["regions"], json!([test]));
    let back = rollbacks[0]["deployment_id"].as_str().unwrap().to_owned();

    health(&flow, &test, "passing").await;
    let restored = flow
        .deployment_until(&back, "healthy", |v| v["status"] == "healthy")
        .await;
    assert_eq!(restored["rollback_of"], v2.as_str());
    assert_eq!(
        restored["trace_id"], view["trace_id"],
        "the rollback continues the failed deployment's trace"
    );
    assert_eq!(restored["version"], "1.0.0");
    for zone in ZONES {
        let app = flow.app(&test, zone).await;
        assert_eq!(
            app["app"]["labels"]["mot-deployment-id"],
            back.as_str(),
            "{app}"
        );
        assert_eq!(app["app"]["labels"]["mot-app-version"], "1.0.0");
    }
    assert_eq!(
        puts(&flow, &prod, &v2).await,
        vec![0, 0, 0],
        "wave 2 never launched"
    );
    assert_eq!(puts(&flow, &test, &back).await, vec![1, 1, 1]);
    assert_eq!(
        puts(&flow, &prod, &back).await,
        vec![0, 0, 0],
        "only regions reached go back"
    );
}

#[actix_web::test]
async fn one_call_rolls_an_app_back_everywhere() {
    let flow = start().await;
    let (test, prod) = (flow.test_region.clone(), flow.prod_region.clone());
    let v1 = flow.post_version("1.0.0", both(&flow)).await;
    flow.deployment_until(&v1, "healthy", |v| v["status"] == "healthy")
        .await;
    let v2 = flow.post_version("2.0.0", both(&flow)).await;
    flow.deployment_until(&v2, "healthy", |v| v["status"] == "healthy")
        .await;
    // Rolled back at once: the RolloutAgent may read v2's reports only after the rollback
    // replaced it; what it announces does not depend on when it reads them.

    let (status, body) = post(
        &flow,
        "/apps/checkout-web/rollback",
        Some(json!({"regions": ["nowhere-1"]})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["fields"][0]["field"], "regions[0]", "{body}");
    let stranger = uuid::Uuid::new_v4();
    let (status, body) = post(
        &flow,
        "/apps/checkout-web/rollback",
        Some(json!({"to": stranger.to_string()})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["fields"][0]["field"], "to", "{body}");

    let (status, body) = post(&flow, "/apps/checkout-web/rollback", None).await;
    assert_eq!(status, 202, "{body}");
    let made = body["deployments"].as_array().unwrap();
    assert_eq!(made.len(), 1, "{body}");
    assert_eq!(made[0]["to"], v1.as_str());
    assert_eq!(made[0]["rollback_of"], v2.as_str());
    let back = made[0]["id"].as_str().unwrap().to_owned();
    let view = flow
        .deployment_until(&back, "healthy", |v| v["status"] == "healthy")
        .await;
    assert_eq!(view["version"], "1.0.0");
    for region in [&test, &prod] {
        for zone in ZONES {
            let app = flow.app(region, zone).await;
            assert_eq!(
                app["app"]["labels"]["mot-deployment-id"],
                back.as_str(),
                "{app}"
            );
            assert_eq!(app["app"]["labels"]["mot-app-version"], "1.0.0");
        }
        assert_eq!(puts(&flow, region, &back).await, vec![1, 1, 1]);
    }
    flow.deployment_until(&v2, "superseded", |v| v["status"] == "superseded")
        .await;

    // The app leaves both regions, and every step was told on mot-cdevents, once.
    let resp = flow
        .http
        .delete(format!("{}/apps/checkout-web", flow.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    flow.deployment_until(&back, "removed", |v| v["status"] == "removed")
        .await;
    let want: Vec<(String, String, String)> = [
        (&v1, "deployed"),
        (&v2, "upgraded"),
        (&back, "rolledback"),
        (&back, "removed"),
    ]
    .iter()
    .flat_map(|(id, kind)| {
        [&test, &prod].map(|region| {
            (
                id.to_string(),
                format!("dev.cdevents.service.{kind}.0.2.0"),
                region.to_string(),
            )
        })
    })
    .collect();
    let events = cdevents_until(&flow, want.len()).await;
    let validators = cdevent_schemas();
    let mut got: Vec<(String, String, String)> = Vec::new();
    for event in &events {
        assert_eq!(event["specversion"], "1.0", "{event:#}");
        assert_eq!(event["type"], event["data"]["context"]["type"]);
        assert_eq!(event["id"], event["data"]["context"]["id"]);
        let kind = event["type"].as_str().unwrap();
        let validator = &validators[kind];
        let errors: Vec<String> = validator
            .iter_errors(&event["data"])
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{kind} invalid: {errors:?}\n{event:#}");
        got.push((
            event["data"]["customData"]["deployment_id"]
                .as_str()
                .unwrap()
                .to_owned(),
            kind.to_owned(),
            event["data"]["subject"]["content"]["environment"]["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        ));
    }
    got.sort();
    let mut want = want;
    want.sort();
    assert_eq!(got, want, "each step once, none other");
    let rolled_back = events
        .iter()
        .find(|e| e["type"] == "dev.cdevents.service.rolledback.0.2.0")
        .unwrap();
    assert_eq!(
        rolled_back["data"]["customData"]["rollback_of"],
        v2.as_str()
    );
    assert_eq!(
        rolled_back["data"]["subject"]["content"]["artifactId"],
        "pkg:docker/checkout-web@1.0.0?repository_url=registry.example.com"
    );
}

/// This run's CloudEvents on mot-cdevents (their source names this run's central region), once
/// there are at least `n` (the caller compares them exactly: one too many fails).
async fn cdevents_until(flow: &Flow, n: usize) -> Vec<Value> {
    let source = format!("/mot/{}", flow.topology.config().topology.central);
    let read = || async {
        let mut found = Vec::new();
        pipeline::read_to_end(
            &flow.topology.central_home(),
            &TopicName::parse("mot-cdevents").unwrap(),
            &common::unique("cdevents-reader"),
            |m| {
                let event: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
                if event["source"] == source.as_str() {
                    found.push(event);
                }
            },
        )
        .await
        .unwrap();
        found
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let found = read().await;
        if found.len() >= n {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {n} CDEvents: {found:#?}",
            found.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}

/// A validator per CDEvent type, from the vendored CDEvents 0.4.1 schemas.
fn cdevent_schemas() -> std::collections::BTreeMap<String, jsonschema::Validator> {
    let dir = common::repo_path("tests/schemas/cdevents-0.4.1");
    let read = |path: std::path::PathBuf| -> Value {
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    };
    let links: Vec<(String, Value)> = std::fs::read_dir(dir.join("links"))
        .unwrap()
        .map(|entry| {
            let schema = read(entry.unwrap().path());
            (schema["$id"].as_str().unwrap().to_owned(), schema)
        })
        .collect();
    let registry = jsonschema::Registry::new()
        .extend(links)
        .unwrap()
        .prepare()
        .unwrap();
    ["deployed", "upgraded", "rolledback", "removed"]
        .iter()
        .map(|kind| {
            let schema = read(dir.join(format!("service{kind}.json")));
            let validator = jsonschema::options()
                .with_registry(&registry)
                .should_validate_formats(true)
                .build(&schema)
                .unwrap();
            (format!("dev.cdevents.service.{kind}.0.2.0"), validator)
        })
        .collect()
}
