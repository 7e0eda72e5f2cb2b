//! The seed's "Requesting a deployment", end to end over real Kafka clusters and the platform
//! simulator over HTTP: POST -> request log -> fan-out -> central launch topic -> (pseudo-central
//! for a non-production region) -> DeploymentOperationAgent -> each zone's Marathon -> complete
//! event on the region's own cluster.

mod common;

use std::time::Duration;

use rdkafka::Message;
use serde_json::json;

use common::flow::start;
use mot::actors::pipeline;
use mot::models::deployment::{DeploymentCompleted, LaunchRequested, ZoneOutcome};
use mot::models::envelope::Kind;
use mot::topics::names::{RegionName, TopicName};

fn accepted_zones(event: &DeploymentCompleted) -> Vec<String> {
    event
        .zones
        .iter()
        .filter_map(|z| match z {
            ZoneOutcome::Accepted { zone, .. } => Some(zone.to_string()),
            _ => None,
        })
        .collect()
}

/// Whether `m` is a launch event of deployment `id` (launches are keyed by app).
fn launches(m: &rdkafka::message::BorrowedMessage<'_>, id: &str) -> bool {
    mot::models::envelope::decode::<LaunchRequested>(m.key(), m.payload())
        .is_ok_and(|e| e.payload.deployment_id.to_string() == id)
}

/// Produces deployment `id`'s launch event for `region` again, as it is on the central cluster.
async fn produce_launch_again(flow: &common::flow::Flow, region: &str, id: &str) {
    let launch_topic = TopicName::parse(&format!("mot-deployment-launch-events-{region}")).unwrap();
    let central = flow.topology.central_home();
    let mut original = None;
    pipeline::read_to_end(
        &central,
        &launch_topic,
        &common::unique("flow-reader"),
        |m| {
            if launches(m, id) {
                original = Some((m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec)));
            }
        },
    )
    .await
    .unwrap();
    let (key, value) = original.expect("the launch event");
    let replay = pipeline::Outgoing {
        topic: launch_topic,
        key,
        value,
        headers: vec![],
        timestamp_ms: None,
    };
    let producer = central.producer().unwrap();
    producer.send(&replay).await.unwrap();
}

#[actix_web::test]
async fn one_post_deploys_to_two_regions_times_three_zones_with_two_complete_events() {
    let flow = start().await;
    let (t, p) = (flow.test_region.clone(), flow.prod_region.clone());
    let id = flow.post(json!([{"region": t}, {"region": p}])).await;

    for region in [&t, &p] {
        let events = flow.complete_events(region, &id, 1).await;
        assert_eq!(events.len(), 1, "one complete event in {region}");
        assert_eq!(accepted_zones(&events[0]), ["a", "b", "c"]);
        for zone in ["a", "b", "c"] {
            let app = &flow.app(region, zone).await["app"];
            assert_eq!(app["instances"], 2, "{region}/{zone}");
            assert_eq!(app["labels"]["mot-deployment-id"], id.as_str());
            assert_eq!(
                app["container"]["docker"]["image"],
                "registry.example.com/checkout-web:1.4.2"
            );
            assert_eq!(app["tasks"].as_array().unwrap().len(), 2);
        }
    }

    // The non-production region's launch event went through the pseudo-central cluster.
    let hop = flow
        .topology
        .routes()
        .into_iter()
        .find(|r| {
            r.region.as_str() == t
                && r.to.as_str() == "stage-us-east-1"
                && r.base.as_str() == "mot-deployment-launch-events"
        })
        .expect("a route to stage for the test region's launches");
    let mut relayed = 0;
    pipeline::read_to_end(
        &flow.topology.localizer_home(&hop),
        &hop.as_topic,
        &common::unique("flow-reader"),
        |m| {
            if launches(m, &id) {
                relayed += 1;
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(
        relayed, 1,
        "the launch event is on stage-us-east-1's {}",
        hop.as_topic
    );
}

#[actix_web::test]
async fn a_zone_whose_scheduler_is_down_is_reported_failed_while_the_others_deploy() {
    let flow = start().await;
    let t = flow.test_region.clone();
    let down = flow
        .http
        .post(format!("{}/b/_sim/scheduler/down", flow.sim(&t)))
        .send()
        .await
        .unwrap();
    assert_eq!(down.status().as_u16(), 204);
    let id = flow
        .post(json!([{"region": t, "zones": ["a", "b", "c"]}]))
        .await;
    let events = flow.complete_events(&t, &id, 1).await;
    assert_eq!(accepted_zones(&events[0]), ["a", "c"]);
    let failed: Vec<_> = events[0]
        .zones
        .iter()
        .filter_map(|z| match z {
            ZoneOutcome::Failed { zone, reason, .. } => Some((zone.to_string(), reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, "b");
    assert!(
        failed[0].1.contains("503"),
        "the scheduler's reason: {}",
        failed[0].1
    );
    assert_eq!(flow.app(&t, "a").await["app"]["instances"], 2);
}

#[actix_web::test]
async fn the_same_launch_event_delivered_twice_launches_once() {
    let flow = start().await;
    let p = flow.prod_region.clone();
    let id = flow.post(json!([{"region": p, "zones": ["a"]}])).await;
    flow.complete_events(&p, &id, 1).await;

    // Deliver the launch event again, as a replay after a crash would.
    produce_launch_again(&flow, &p, &id).await;

    let events = flow.complete_events(&p, &id, 2).await;
    assert_eq!(
        accepted_zones(&events[1]),
        ["a"],
        "the replay is answered too"
    );
    let stats = flow.stats(&p, "a").await;
    assert_eq!(
        (stats["apps"].as_u64(), stats["changes"].as_u64()),
        (Some(1), Some(1)),
        "one app, put once: {stats}"
    );
}

#[actix_web::test]
async fn deployed_instances_reach_the_instance_topic_healthy() {
    let flow = start().await;
    let p = flow.prod_region.clone();
    let id = flow.post(json!([{"region": p}])).await;
    flow.complete_events(&p, &id, 1).await;

    // ConsulStateAgent watches each zone's Consul; InstanceConsulStateAgent turns what it
    // publishes into InstanceInfo changes.
    let healthy = flow.healthy_instances(&p, &id, 6).await;
    let zones: std::collections::BTreeSet<_> = healthy.iter().map(|i| i.zone.to_string()).collect();
    assert_eq!(zones.len(), 3, "two instances in each of three zones");
    assert!(healthy
        .iter()
        .all(|i| i.port >= 31000 && i.service == "checkout-web"));

    // Zone a's Consul stops answering: its instances are not taken for gone.
    let consul_polls = || {
        flow.registry
            .get("ConsulStateAgent", &RegionName::parse(&p).unwrap())
            .snapshot()
            .records_in
    };
    flow.consul(&p, "a").down();
    let before = consul_polls();
    common::eventually(60, "three polls with zone a's Consul down", || {
        consul_polls() >= before + 3
    })
    .await;
    let latest = flow.instance_changes(&p).await;
    let deleted_in_a = latest
        .values()
        .filter(|e| e.kind == Kind::Deleted && e.payload.zone.as_str() == "a")
        .count();
    assert_eq!(deleted_in_a, 0, "an unanswering Consul deletes nothing");
    flow.consul(&p, "a").up();

    // A task killed in zone b is replaced: its instance is deleted, the new one arrives.
    let victim = healthy
        .iter()
        .find(|i| i.zone.as_str() == "b")
        .unwrap()
        .instance_id
        .clone();
    flow.http
        .post(format!("{}/b/_sim/tasks/{victim}/kill", flow.sim(&p)))
        .send()
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let latest = flow.instance_changes(&p).await;
        if latest
            .values()
            .any(|e| e.payload.instance_id == victim && e.kind == Kind::Deleted)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the killed task's instance was not deleted"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    flow.healthy_instances(&p, &id, 6).await;
}

#[actix_web::test]
async fn an_older_launch_replayed_after_a_newer_one_is_healthy_is_superseded_and_changes_nothing() {
    let flow = start().await;
    let p = flow.prod_region.clone();
    let older = flow
        .post_version("1.0.1", json!([{"region": p, "zones": ["a"]}]))
        .await;
    let newer = flow
        .post_version("1.0.2", json!([{"region": p, "zones": ["a"]}]))
        .await;
    flow.deployment_until(&newer, "healthy", |v| v["status"] == "healthy")
        .await;
    flow.deployment_until(&older, "superseded", |v| v["status"] == "superseded")
        .await;
    let before = flow.app(&p, "a").await;

    // The older deployment's launch record, produced again by hand.
    produce_launch_again(&flow, &p, &older).await;

    // Its first outcome (accepted), its supersession by the newer launch, and now the replay's.
    let events = flow.complete_events(&p, &older, 3).await;
    assert_eq!(events.len(), 3, "{events:#?}");
    let newer_id: uuid::Uuid = newer.parse().unwrap();
    match &events[2].zones[..] {
        [ZoneOutcome::Superseded {
            zone,
            by,
            by_generation,
            time_us,
        }] => {
            assert_eq!((zone.as_str(), *by), ("a", newer_id));
            assert_eq!(*by_generation, events[0].generation + 1);
            // The same supersession the newer launch reported, at the same time.
            assert_eq!(events[1].zones[0].time_us(), *time_us);
        }
        other => panic!("the replay is superseded, not {other:?}"),
    }
    let after = flow.app(&p, "a").await;
    assert_eq!(
        after["app"]["labels"], before["app"]["labels"],
        "the scheduler's app is untouched"
    );
    assert_eq!(after["app"]["version"], before["app"]["version"]);
    let stats = flow.stats(&p, "a").await;
    assert_eq!(stats["puts_by_deployment"][&older], 1, "{stats}");
    assert_eq!(stats["puts_by_deployment"][&newer], 1, "{stats}");
    let (_, view) = flow.get(&format!("/deployments/{older}")).await;
    assert_eq!(view["status"], "superseded", "{view:#}");
    assert_eq!(view["regions"][0]["zones"][0]["status"], "superseded");
    let (_, events) = flow.get(&format!("/deployments/{older}/events")).await;
    let superseded = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "superseded" && e["subject"] == "scheduler")
        .count();
    assert_eq!(superseded, 1, "the replay added no row: {events:#}");
}

/// `t` as RFC 3339, URL-safe.
fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
        .replace('+', "%2B")
}

#[actix_web::test]
async fn an_apps_history_names_what_ran_in_each_zone_at_a_moment_and_lists_its_deployments() {
    let flow = start().await;
    let p = flow.prod_region.clone();
    let targets = json!([{"region": p, "zones": ["a", "b"]}]);
    let before = time::OffsetDateTime::now_utc() - time::Duration::seconds(5);
    let first = flow.post_version("1.0.0", targets.clone()).await;
    flow.deployment_until(&first, "healthy", |v| v["status"] == "healthy")
        .await;
    let between = time::OffsetDateTime::now_utc();
    let second = flow.post_version("1.0.1", targets).await;
    flow.deployment_until(&second, "healthy", |v| v["status"] == "healthy")
        .await;
    flow.deployment_until(&first, "superseded", |v| v["status"] == "superseded")
        .await;
    let now = time::OffsetDateTime::now_utc();

    let flow = &flow;
    let history = |at: time::OffsetDateTime| {
        let path = format!("/apps/checkout-web/history?at={}", rfc3339(at));
        async move { flow.get(&path).await }
    };
    for (at, id, version) in [(between, &first, "1.0.0"), (now, &second, "1.0.1")] {
        let (status, body) = history(at).await;
        assert_eq!(status, 200, "{body:#}");
        let zones = body["zones"].as_array().unwrap();
        assert_eq!(zones.len(), 2, "{body:#}");
        for (zone, name) in zones.iter().zip(["a", "b"]) {
            assert_eq!(
                (
                    &zone["region"],
                    &zone["zone"],
                    &zone["deployment_id"],
                    &zone["version"]
                ),
                (&json!(p), &json!(name), &json!(id), &json!(version)),
                "{body:#}"
            );
        }
    }
    let (status, body) = history(before).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["zones"],
        json!([]),
        "nothing ran before the first: {body:#}"
    );

    let (status, body) = flow.get("/apps/checkout-web/history?at=yesterday").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["fields"][0]["field"], "at", "{body:#}");
    let (status, body) = flow.get("/apps/checkout-web/history").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["fields"][0]["field"], "at", "{body:#}");
    let (status, _) = flow
        .get(&format!("/apps/never-deployed/history?at={}", rfc3339(now)))
        .await;
    assert_eq!(status, 404);

    let (status, body) = flow.get("/apps/checkout-web/deployments").await;
    assert_eq!(status, 200, "{body:#}");
    let ids: Vec<&str> = body["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str(), first.as_str()], "newest first");
    let (status, body) = flow.get("/apps/checkout-web/deployments?app=other").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["fields"][0]["field"], "app", "{body:#}");
}
