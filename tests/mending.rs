//! The seed's "mending deployments", over the real Kafka clusters, Cassandra and the platform
//! simulators: a zone whose scheduler no longer runs what was asked (the app deleted or scaled by
//! hand, or never launched because the scheduler was down) is put back, and the timeline, GET and
//! /metrics say so; with `"drift": "report"` it is only reported.

mod common;

use serde_json::{json, Value};

use common::flow::{start, Flow};
use mot::topics::names::RegionName;

/// The deployment's timeline entries about drift, as (kind, what).
async fn drift_events(flow: &Flow, id: &str) -> Vec<(String, String)> {
    let (_, events) = flow.get(&format!("/deployments/{id}/events")).await;
    events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["subject"] == "drift")
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["detail"]["what"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// Waits until the drift entries of the timeline satisfy `ok`.
async fn drift_until(
    flow: &Flow,
    id: &str,
    what: &str,
    ok: impl Fn(&[(String, String)]) -> bool,
) -> Vec<(String, String)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let events = drift_events(flow, id).await;
        if ok(&events) {
            return events;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the timeline never showed {what}: {events:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}

async fn app_until(flow: &Flow, region: &str, zone: &str, what: &str, ok: impl Fn(&Value) -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let app = flow.app(region, zone).await;
        if ok(&app) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{region}/{zone}: never {what}: {app:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}

/// PUTs the zone's app again with `instances`, as someone would by hand on Marathon.
async fn scale_by_hand(flow: &Flow, region: &str, zone: &str, instances: u32) {
    let mut app = flow.app(region, zone).await["app"].clone();
    app["instances"] = json!(instances);
    for field in ["tasks", "tasksRunning", "tasksHealthy", "version"] {
        app.as_object_mut().unwrap().remove(field);
    }
    let put = flow
        .http
        .put(format!(
            "{}/{zone}/marathon/v2/apps/checkout-web",
            flow.sim(region)
        ))
        .json(&app)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
}

fn mending_counters(flow: &Flow, region: &str) -> mot::actors::counters::CountersSnapshot {
    flow.registry
        .get(
            "DeploymentMendingAgent",
            &RegionName::parse(region).unwrap(),
        )
        .snapshot()
}

#[actix_web::test]
async fn an_app_deleted_then_scaled_by_hand_is_put_back_and_the_timeline_says_so() {
    let flow = start().await;
    let p = flow.prod_region.clone();
    let id = flow.post(json!([{"region": p, "zones": ["a"]}])).await;
    flow.deployment_until(&id, "healthy", |v| v["status"] == "healthy")
        .await;

    let deleted = flow
        .http
        .delete(format!("{}/a/marathon/v2/apps/checkout-web", flow.sim(&p)))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 200);
    app_until(&flow, &p, "a", "restored", |a| {
        a["app"]["labels"]["mot-deployment-id"] == id.as_str() && a["app"]["instances"] == 2
    })
    .await;
    let events = drift_until(&flow, &id, "the deletion mended", |e| {
        e.iter().any(|(k, _)| k == "mended")
    })
    .await;
    assert_eq!(
        events,
        [
            (
                "drift-detected".to_owned(),
                "the app is missing from the scheduler".to_owned()
            ),
            (
                "mended".to_owned(),
                "the app is missing from the scheduler".to_owned()
            ),
        ]
    );

    scale_by_hand(&flow, &p, "a", 5).await;
    app_until(&flow, &p, "a", "scaled back", |a| {
        a["app"]["instances"] == 2
    })
    .await;
    let events = drift_until(&flow, &id, "the scaling mended", |e| e.len() == 4).await;
    assert_eq!(
        events[2],
        (
            "drift-detected".to_owned(),
            "instances 5 instead of 2".to_owned()
        )
    );
    assert_eq!(events[3].0, "mended");
    let view = flow
        .deployment_until(&id, "healthy again", |v| {
            v["status"] == "healthy" && v["regions"][0]["zones"][0]["drift"].is_null()
        })
        .await;
    assert_eq!(view["regions"][0]["zones"][0]["healthy"], 2);
    let counters = mending_counters(&flow, &p);
    assert_eq!(
        (counters.drifts_detected, counters.mended),
        (2, 2),
        "{counters:?}"
    );
    let metrics = flow.metrics().await;
    assert!(
        metrics.contains(&format!("mot_drift_mended_total{{region=\"{p}\"}} 2")),
        "{metrics}"
    );
}

#[actix_web::test]
async fn a_zone_whose_scheduler_was_down_at_launch_is_mended_once_it_is_back() {
    let flow = start().await;
    let t = flow.test_region.clone();
    let sim = flow.sim(&t).to_owned();
    let scheduler = |state: &'static str| {
        flow.http
            .post(format!("{sim}/b/_sim/scheduler/{state}"))
            .send()
    };
    assert_eq!(scheduler("down").await.unwrap().status().as_u16(), 204);
    let id = flow.post(json!([{"region": t, "zones": ["a", "b"]}])).await;
    let failed = flow
        .deployment_until(&id, "failed in zone b", |v| v["status"] == "failed")
        .await;
    let zones = failed["regions"][0]["zones"].as_array().unwrap();
    assert_eq!(zones[1]["zone"], "b");
    assert_eq!(zones[1]["status"], "failed", "{failed:#}");
    // The mend is tried and refused while the scheduler is down, with backoff.
    common::eventually(60, "a mend refused", || {
        mending_counters(&flow, &t).mend_failures >= 1
    })
    .await;
    assert_eq!(scheduler("up").await.unwrap().status().as_u16(), 204);

    // No new request: the zone is mended and becomes healthy.
    let view = flow
        .deployment_until(&id, "healthy", |v| v["status"] == "healthy")
        .await;
    assert_eq!(view["regions"][0]["zones"][1]["healthy"], 2, "{view:#}");
    let stats = flow.stats(&t, "b").await;
    assert_eq!(
        stats["puts_by_deployment"][&id], 1,
        "put once, by the mend: {stats}"
    );
    let events = drift_until(&flow, &id, "zone b mended", |e| {
        e.iter().any(|(k, _)| k == "mended")
    })
    .await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].0, "drift-detected");
    let (_, list) = flow
        .get(&format!("/deployments?app=checkout-web&region={t}"))
        .await;
    assert_eq!(
        list["deployments"].as_array().unwrap().len(),
        1,
        "no new deployment"
    );
}

#[actix_web::test]
async fn with_drift_report_a_zone_scaled_by_hand_is_reported_not_mended() {
    let flow = start().await;
    let p = flow.prod_region.clone();
    let id = flow
        .post_with(
            "1.4.2",
            json!([{"region": p, "zones": ["c"]}]),
            json!({"drift": "report"}),
        )
        .await;
    flow.deployment_until(&id, "healthy", |v| v["status"] == "healthy")
        .await;
    scale_by_hand(&flow, &p, "c", 3).await;
    let view = flow
        .deployment_until(&id, "showing the drift", |v| {
            !v["regions"][0]["zones"][0]["drift"].is_null()
        })
        .await;
    let drift = &view["regions"][0]["zones"][0]["drift"];
    assert_eq!(drift["what"], "instances 3 instead of 2", "{view:#}");
    assert!(drift["detected_at_ms"].as_i64().is_some(), "{drift}");
    let events = drift_until(&flow, &id, "the drift", |e| !e.is_empty()).await;
    assert_eq!(
        events,
        [(
            "drift-detected".to_owned(),
            "instances 3 instead of 2".to_owned()
        )]
    );
    // Reported, not mended (a mend would have come with the detection); and not on the next
    // observation of the zone either: a task killed there.
    let checks = mending_counters(&flow, &p).records_in;
    let task = flow.app(&p, "c").await["app"]["tasks"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let killed = flow
        .http
        .post(format!("{}/c/_sim/tasks/{task}/kill", flow.sim(&p)))
        .send()
        .await
        .unwrap();
    assert_eq!(killed.status().as_u16(), 204);
    common::eventually(60, "the mending agent saw the zone change", || {
        mending_counters(&flow, &p).records_in > checks
    })
    .await;
    assert_eq!(flow.app(&p, "c").await["app"]["instances"], 3);
    let counters = mending_counters(&flow, &p);
    assert_eq!(
        (counters.drifts_detected, counters.mended),
        (1, 0),
        "{counters:?}"
    );

    let bad = flow
        .http
        .post(format!("{}/deployments", flow.url))
        .json(&json!({
            "app": "checkout-web", "version": "1", "artifact": "a", "instances_per_zone": 1,
            "resources": {"cpus": 0.1, "mem_mb": 64}, "targets": [{"region": p}], "drift": "ignore",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 422);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["error"]["fields"][0]["field"], "drift", "{body}");
}

#[actix_web::test]
async fn an_app_removed_is_gone_from_every_zone_and_stays_gone_until_deployed_again() {
    let flow = start().await;
    let (t, p) = (flow.test_region.clone(), flow.prod_region.clone());
    let id = flow.post(json!([{"region": t}, {"region": p}])).await;
    flow.deployment_until(&id, "healthy", |v| v["status"] == "healthy")
        .await;
    let by_hand = flow.app(&p, "b").await["app"].clone();

    let delete = |path: String| flow.http.delete(format!("{}{path}", flow.url)).send();
    let bad = delete("/apps/checkout-web?regions=production-nowhere-1".into())
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 422);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["error"]["fields"][0]["field"], "regions[0]", "{body}");
    let unknown = delete("/apps/never-deployed-here".into()).await.unwrap();
    assert_eq!(unknown.status().as_u16(), 404);

    let removed = delete(format!("/apps/checkout-web?regions={t},{p}"))
        .await
        .unwrap();
    assert_eq!(removed.status().as_u16(), 202);
    let body: Value = removed.json().await.unwrap();
    assert_eq!(body["generation"], 2, "{body}");
    assert_eq!(body["regions"], json!([t, p]));

    let view = flow
        .deployment_until(&id, "removed", |v| v["status"] == "removed")
        .await;
    for region in view["regions"].as_array().unwrap() {
        for zone in region["zones"].as_array().unwrap() {
            assert_eq!(zone["status"], "removed", "{view:#}");
        }
    }
    for region in [&t, &p] {
        for zone in ["a", "b", "c"] {
            assert!(
                flow.app(region, zone).await["app"].is_null(),
                "{region}/{zone} still runs the app"
            );
        }
    }
    let (_, events) = flow.get(&format!("/deployments/{id}/events")).await;
    let removals = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "removed" && e["subject"] == "scheduler")
        .count();
    assert_eq!(removals, 6, "{events:#}");

    // Put back by hand in one zone: removed again.
    let mut app = by_hand.clone();
    for field in ["tasks", "tasksRunning", "tasksHealthy", "version"] {
        app.as_object_mut().unwrap().remove(field);
    }
    let put = flow
        .http
        .put(format!("{}/b/marathon/v2/apps/checkout-web", flow.sim(&p)))
        .json(&app)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    app_until(&flow, &p, "b", "removed again", |a| a["app"].is_null()).await;
    let events = drift_until(&flow, &id, "the removal mended", |e| {
        e.iter().any(|(k, _)| k == "mended")
    })
    .await;
    assert_eq!(
        events[0],
        (
            "drift-detected".to_owned(),
            "the app runs though it was removed".to_owned()
        )
    );
    assert_eq!(flow.stats(&p, "a").await["deletes"], 1, "removed once");

    // A later deployment puts the app back.
    let again = flow
        .post_version("1.4.3", json!([{"region": p, "zones": ["a"]}]))
        .await;
    flow.deployment_until(&again, "healthy", |v| v["status"] == "healthy")
        .await;
    assert_eq!(
        flow.app(&p, "a").await["app"]["labels"]["mot-deployment-id"],
        again.as_str()
    );
}

#[actix_web::test]
async fn a_removal_a_zone_could_not_take_is_finished_once_its_scheduler_is_back() {
    let flow = start().await;
    let t = flow.test_region.clone();
    let id = flow.post(json!([{"region": t, "zones": ["a", "b"]}])).await;
    flow.deployment_until(&id, "healthy", |v| v["status"] == "healthy")
        .await;
    let scheduler = |state: &'static str| {
        flow.http
            .post(format!("{}/b/_sim/scheduler/{state}", flow.sim(&t)))
            .send()
    };
    assert_eq!(scheduler("down").await.unwrap().status().as_u16(), 204);
    let removed = flow
        .http
        .delete(format!("{}/apps/checkout-web?regions={t}", flow.url))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status().as_u16(), 202);
    app_until(&flow, &t, "a", "removed", |a| a["app"].is_null()).await;
    // The removal is tried and refused in zone b while its scheduler is down.
    common::eventually(60, "a removal refused in zone b", || {
        mending_counters(&flow, &t).mend_failures >= 1
    })
    .await;
    assert_eq!(flow.stats(&t, "b").await["deletes"], 0);
    assert_eq!(scheduler("up").await.unwrap().status().as_u16(), 204);

    // No new request: zone b's app is deleted too, once, and the deployment ends removed.
    app_until(&flow, &t, "b", "removed", |a| a["app"].is_null()).await;
    let view = flow
        .deployment_until(&id, "removed", |v| v["status"] == "removed")
        .await;
    for zone in view["regions"][0]["zones"].as_array().unwrap() {
        assert_eq!(zone["status"], "removed", "{view:#}");
    }
    for zone in ["a", "b"] {
        assert_eq!(flow.stats(&t, zone).await["deletes"], 1, "zone {zone}");
    }
    let (_, events) = flow.get(&format!("/deployments/{id}/events")).await;
    let removals: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "removed" && e["subject"] == "scheduler")
        .map(|e| e["zone"].as_str().unwrap())
        .collect();
    assert_eq!(removals.len(), 2, "one removal per zone: {events:#}");
    assert!(
        removals.contains(&"a") && removals.contains(&"b"),
        "{removals:?}"
    );
}
