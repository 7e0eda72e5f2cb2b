//! The seed's "Persisting deployment state to the datastore", end to end over the real Kafka
//! clusters, Cassandra and the platform simulators: pollers -> state agents -> regional topics ->
//! localizers into central (`<topic>.<region>`) -> archival agents -> Cassandra -> GET.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use common::flow::{region, start, start_with, Flow};
use mot::platform::sim::SimOptions;
use mot::topics::names::RegionName;

fn all_healthy(view: &Value) -> bool {
    view["status"] == "healthy"
}

#[actix_web::test]
async fn a_deployment_to_two_regions_shows_every_instance_and_each_region_healthy() {
    let flow = start().await;
    let (t, p) = (flow.test_region.clone(), flow.prod_region.clone());
    let id = flow.post(json!([{"region": t}, {"region": p}])).await;

    let view = flow.deployment_until(&id, "healthy", all_healthy).await;
    for name in [&t, &p] {
        let r = region(&view, name);
        assert_eq!(r["status"], "healthy", "{r:#}");
        assert_eq!(r["freshness"]["stale"], false, "{r:#}");
        assert!(r["last_event_ms"].as_i64().is_some());
        let zones = r["zones"].as_array().unwrap();
        assert_eq!(zones.len(), 3);
        for z in zones {
            assert_eq!(
                (&z["desired"], &z["running"], &z["healthy"], &z["status"]),
                (&json!(2), &json!(2), &json!(2), &json!("healthy")),
                "{z:#}"
            );
        }
    }

    // Instances: consul -> InstanceConsulStateAgent -> localizer -> InstanceArchivalAgent.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let instances = loop {
        let (status, body) = flow.get(&format!("/deployments/{id}/instances")).await;
        assert_eq!(status, 200);
        let live: Vec<Value> = body["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["state"] == "running" && i["health"] == "passing")
            .cloned()
            .collect();
        if live.len() == 12 {
            break live;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "12 healthy instances expected: {body:#}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    for i in &instances {
        assert!(i["host"].as_str().is_some_and(|h| !h.is_empty()), "{i}");
        assert!(i["port"].as_i64().is_some_and(|p| p >= 31000), "{i}");
        assert_eq!(i["traffic"], true, "{i}");
        let tags: Vec<&str> = i["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert!(tags.contains(&"version=1.4.2"), "{i}");
    }
    let places: BTreeSet<(String, String)> = instances
        .iter()
        .map(|i| {
            (
                i["region"].as_str().unwrap().into(),
                i["zone"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(places.len(), 6, "two regions x three zones");

    // The timeline: the schedulers accepted, the zones became healthy; oldest first. Each kind
    // is archived from its own topic by its own agent, so the timeline may trail the zones'
    // status by moments: wait until it holds every entry, then count exactly.
    let expected = [
        ("scheduler-accepted", 6),
        ("healthy", 6),
        ("instance-started", 12),
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let events = loop {
        let (_, events) = flow.get(&format!("/deployments/{id}/events")).await;
        let events = events["events"].as_array().unwrap().clone();
        let complete = expected
            .iter()
            .all(|(kind, n)| events.iter().filter(|e| e["kind"] == *kind).count() >= *n);
        if complete {
            break events;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timeline incomplete: {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let times: Vec<i64> = events
        .iter()
        .map(|e| e["time_us"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first");
    let count = |kind: &str| events.iter().filter(|e| e["kind"] == kind).count();
    assert_eq!(count("scheduler-accepted"), 6, "{events:#?}");
    assert_eq!(
        count("healthy"),
        6,
        "each zone became healthy once: {events:#?}"
    );
    assert_eq!(count("instance-started"), 12, "{events:#?}");

    // Listed, newest first, by app and without; filters apply.
    let (status, list) = flow
        .get("/deployments?app=checkout-web&status=healthy&limit=100")
        .await;
    assert_eq!(status, 200);
    assert!(list["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["id"] == id.as_str()));
    let (_, by_region) = flow.get(&format!("/deployments?region={t}")).await;
    let ids: Vec<&str> = by_region["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()], "only this run's deployment targets {t}");
    // The platform calls behind it, on /metrics.
    let metrics = flow.metrics().await;
    let count = |prefix: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in:\n{metrics}"))
    };
    assert!(
        count("mot_platform_requests_total{platform=\"marathon\",operation=\"PUT /v2/apps/{id}\",outcome=\"ok\"}") >= 6
    );
    assert!(count("mot_platform_requests_total{platform=\"consul\",operation=\"watch /v1/health/state/any\",outcome=\"ok\"}") >= 6);
    assert!(count("mot_platform_request_duration_seconds_count{platform=\"marathon\",operation=\"GET /v2/apps\",outcome=\"ok\"}") >= 6);

    let (status, bad) = flow.get("/deployments?limit=0&status=sleepy").await;
    assert_eq!(status, 400, "{bad}");
    let fields: Vec<&str> = bad["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["status", "limit"]);
}

#[actix_web::test]
async fn listing_pages_through_every_deployment_once() {
    let flow = start().await;
    let p = flow.prod_region.clone();
    let mut posted = BTreeSet::new();
    for _ in 0..5 {
        posted.insert(flow.post(json!([{"region": p, "zones": ["a"]}])).await);
    }
    let mut seen = Vec::new();
    let mut page: Option<String> = None;
    loop {
        let path = match &page {
            Some(token) => format!("/deployments?region={p}&limit=2&page={token}"),
            None => format!("/deployments?region={p}&limit=2"),
        };
        let (status, body) = flow.get(&path).await;
        assert_eq!(status, 200, "{body}");
        let items = body["deployments"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|d| {
            (
                d["created_at_ms"].as_i64().unwrap(),
                d["id"].as_str().unwrap().to_owned(),
            )
        }));
        match body["next_page"].as_str() {
            Some(token) => page = Some(token.to_owned()),
            None => break,
        }
    }
    let ids: BTreeSet<String> = seen.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(ids, posted, "each deployment exactly once");
    assert_eq!(seen.len(), 5);
    assert!(
        seen.windows(2).all(|w| w[0].0 >= w[1].0),
        "newest first: {seen:?}"
    );
    let (status, body) = flow.get("/deployments?page=nonsense").await;
    assert_eq!(
        (status, &body["error"]["fields"][0]["field"]),
        (400, &json!("page"))
    );
}

#[actix_web::test]
async fn a_killed_task_shows_the_region_degraded_then_healthy_again_and_the_timeline_both() {
    let flow = start_with(SimOptions {
        health_delay: Duration::from_secs(4),
    })
    .await;
    let p = flow.prod_region.clone();
    let id = flow.post(json!([{"region": p, "zones": ["a"]}])).await;
    flow.deployment_until(&id, "healthy", all_healthy).await;

    let app = flow.app(&p, "a").await;
    let task = app["app"]["tasks"][0]["id"].as_str().unwrap().to_owned();
    let killed = flow
        .http
        .post(format!("{}/a/_sim/tasks/{task}/kill", flow.sim(&p)))
        .send()
        .await
        .unwrap();
    assert_eq!(killed.status().as_u16(), 204);

    let degraded = flow
        .deployment_until(&id, "degraded", |v| v["status"] == "degraded")
        .await;
    assert_eq!(region(&degraded, &p)["status"], "degraded");
    assert_eq!(region(&degraded, &p)["zones"][0]["healthy"], 1);
    flow.deployment_until(&id, "healthy again", all_healthy)
        .await;

    let (_, events) = flow.get(&format!("/deployments/{id}/events")).await;
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["subject"] == "zone")
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    let healthy_first = kinds.iter().position(|k| *k == "healthy").unwrap();
    let degraded_at = kinds.iter().position(|k| *k == "degraded").unwrap();
    assert!(healthy_first < degraded_at, "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"healthy"), "{kinds:?}");
    // The Consul path reports the killed instance gone (on its own schedule).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let gone = loop {
        let (_, instances) = flow.get(&format!("/deployments/{id}/instances")).await;
        let gone: Vec<Value> = instances["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["state"] == "gone")
            .cloned()
            .collect();
        if !gone.is_empty() {
            break gone;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the killed instance is never shown gone: {instances:#}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(gone.len(), 1, "{gone:#?}");
    assert_eq!(gone[0]["instance_id"], task.as_str());
}

/// What the projections say about a deployment, without what changes with time alone
/// (heartbeat freshness).
async fn projections(flow: &Flow, id: &str) -> Value {
    let (_, mut view) = flow.get(&format!("/deployments/{id}")).await;
    for r in view["regions"].as_array_mut().unwrap() {
        r.as_object_mut().unwrap().remove("freshness");
    }
    let (_, instances) = flow.get(&format!("/deployments/{id}/instances")).await;
    let (_, events) = flow.get(&format!("/deployments/{id}/events")).await;
    json!({"view": view, "instances": instances, "events": events})
}

#[actix_web::test]
async fn a_restart_mid_flow_loses_nothing_and_a_replay_from_the_beginning_changes_nothing() {
    let mut flow = start().await;
    let (t, p) = (flow.test_region.clone(), flow.prod_region.clone());
    let id = flow.post(json!([{"region": t}, {"region": p}])).await;
    // Stop every agent right after the API accepted the request, then start them again.
    flow.stop_agents().await;
    flow.start_agents();
    flow.deployment_until(&id, "healthy", all_healthy).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let before = loop {
        let snapshot = projections(&flow, &id).await;
        let running = snapshot["instances"]["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["health"] == "passing")
            .count();
        let accepted = snapshot["events"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "scheduler-accepted")
            .count();
        // The timeline is archived from its own topic: it may trail the instances by moments.
        if running == 12 && accepted >= 6 {
            break snapshot;
        }
        assert!(std::time::Instant::now() < deadline, "{snapshot:#}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let events = before["events"]["events"].as_array().unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e["kind"] == "scheduler-accepted")
            .count(),
        6,
        "one launch per zone, none twice: {events:#?}"
    );

    // Reset the archival consumer groups to the beginning: stop, delete the groups, start.
    flow.stop_agents().await;
    // The archival agents' groups: one per agent and region, or with `node.shared_consumers`
    // one per agent kind (a group that does not exist is passed over).
    let central = &flow.topology.config().topology.central;
    let groups: Vec<String> = [
        "deployment-state-archival-agent",
        "instance-archival-agent",
        "complete-event-archival-agent",
    ]
    .iter()
    .flat_map(|a| {
        [t.clone(), p.clone(), central.to_string()]
            .map(|r| format!("mot-{a}-{r}"))
            .into_iter()
            .chain([format!("mot-{a}-{central}-production-us-east-1")])
    })
    .collect();
    common::delete_consumer_groups(flow.topology.central_cluster(), &groups).await;
    flow.start_agents();
    for r in [&t, &p] {
        let region = RegionName::parse(r).unwrap();
        let counters = flow.registry.get("InstanceArchivalAgent", &region);
        common::eventually(120, "the archival agents replayed the instances", || {
            counters.snapshot().published >= 6
        })
        .await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let after = projections(&flow, &id).await;
        if after == before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the projections changed after a replay:\nbefore {before:#}\nafter {after:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[actix_web::test]
async fn app_config_is_stored_versioned_and_refused_when_malformed() {
    let flow = start().await;
    let app = format!("cfg-{}", common::unique("").replace('_', ""));
    let (status, _) = flow.get(&format!("/apps/{app}/config")).await;
    assert_eq!(status, 404);
    let put = |body: String, if_match: Option<&str>| {
        let mut req = flow
            .http
            .put(format!("{}/apps/{app}/config", flow.url))
            .header("content-type", "application/json")
            .body(body);
        if let Some(rev) = if_match {
            req = req.header("If-Match", rev);
        }
        req.send()
    };
    let first = put(json!({"replicas": 3}).to_string(), None).await.unwrap();
    assert_eq!(first.status().as_u16(), 200);
    let second = put(
        json!({"replicas": 5, "feature": {"x": true}}).to_string(),
        Some("1"),
    )
    .await
    .unwrap();
    assert_eq!(second.status().as_u16(), 200);
    let (status, got) = flow.get(&format!("/apps/{app}/config")).await;
    assert_eq!(status, 200);
    assert_eq!(got["revision"], 2);
    assert_eq!(
        got["config"],
        json!({"replicas": 5, "feature": {"x": true}})
    );

    let stale = put(json!({"replicas": 1}).to_string(), Some("1"))
        .await
        .unwrap();
    assert_eq!(stale.status().as_u16(), 412);
    let not_object = put("[1,2]".into(), None).await.unwrap();
    assert_eq!(not_object.status().as_u16(), 400);
    let body: Value = not_object.json().await.unwrap();
    assert_eq!(body["error"]["fields"][0]["field"], "body");
    let bad_json = put("{nope".into(), None).await.unwrap();
    assert_eq!(bad_json.status().as_u16(), 400);
    let (_, unchanged) = flow.get(&format!("/apps/{app}/config")).await;
    assert_eq!(unchanged["revision"], 2, "refused writes change nothing");
}

#[actix_web::test]
async fn traffic_turned_off_and_on_again_reaches_consul_and_shows_in_get() {
    let flow = start().await;
    let p = flow.prod_region.clone();
    let id = flow.post(json!([{"region": p, "zones": ["b"]}])).await;
    flow.deployment_until(&id, "healthy", all_healthy).await;
    flow.instances_until(&id, "serving", |i| i["traffic"] == true)
        .await;

    let traffic = |body: Value| {
        flow.http
            .post(format!("{}/deployments/{id}/traffic", flow.url))
            .json(&body)
            .send()
    };
    let off = traffic(json!({"enabled": false, "regions": [p]}))
        .await
        .unwrap();
    assert_eq!(off.status().as_u16(), 202);
    let off = flow
        .instances_until(&id, "out of traffic", |i| i["traffic"] == false)
        .await;
    assert!(
        off.iter().all(|i| i["health"] == "passing"),
        "maintenance is not ill health: {off:#?}"
    );
    // Consul itself says so.
    let entries = common::consul::health(
        common::consul::URL,
        "checkout-web",
        &format!("mot-zone={p}/b"),
    )
    .await;
    assert!(!entries.is_empty());
    assert!(entries.iter().all(
        |e| e["Checks"].as_array().unwrap().iter().any(|c| c["CheckID"]
            .as_str()
            .unwrap()
            .starts_with("_service_maintenance:"))
    ));

    let on = traffic(json!({"enabled": true})).await.unwrap();
    assert_eq!(on.status().as_u16(), 202);
    flow.instances_until(&id, "back in traffic", |i| i["traffic"] == true)
        .await;
    let (_, events) = flow.get(&format!("/deployments/{id}/events")).await;
    let requested = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "traffic-requested")
        .count();
    assert_eq!(requested, 2, "{events:#}");

    // Bad requests name the field and change nothing.
    let bad = traffic(json!({"enabled": true, "regions": ["production-nowhere-1"]}))
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 422);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["error"]["fields"][0]["field"], "regions[0]");
    let missing = traffic(json!({"regions": [p]})).await.unwrap();
    assert_eq!(missing.status().as_u16(), 400);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["fields"][0]["field"], "enabled");
    let unknown = flow
        .http
        .post(format!(
            "{}/deployments/{}/traffic",
            flow.url,
            uuid::Uuid::new_v4()
        ))
        .json(&json!({"enabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
}

#[actix_web::test]
async fn a_quiet_zone_is_watched_not_reread() {
    let flow = start().await;
    let p = flow.prod_region.clone();
    let id = flow.post(json!([{"region": p, "zones": ["c"]}])).await;
    flow.deployment_until(&id, "healthy", all_healthy).await;
    flow.instances_until(&id, "healthy", |i| i["health"] == "passing")
        .await;
    // Settled: the zone's state as mot last read it is what it publishes now.
    let consul = flow
        .registry
        .get("ConsulStateAgent", &RegionName::parse(&p).unwrap());
    let settled = consul.snapshot();
    // Two more watches answered (each held up to 5 s, or cut short by another test's change in
    // the Consul every test shares): the zone was watched all along, and never read again.
    common::eventually(60, "two more watches", || {
        consul.snapshot().records_in >= settled.records_in + 2
    })
    .await;
    let after = consul.snapshot();
    assert_eq!(
        after.zone_reads, settled.zone_reads,
        "with nothing changed in its zones, no service was read again (a held watch, not a poll per second)"
    );
    assert_eq!(after.published, settled.published, "nothing to publish");
}

#[actix_web::test]
async fn mesos_tasks_reach_the_regions_mesos_topic_with_their_hosts() {
    use mot::models::envelope::{self, Envelope, Kind};
    use mot::models::state::MesosTaskState;
    use rdkafka::Message;
    let flow = start().await;
    let p = flow.prod_region.clone();
    let id = flow.post(json!([{"region": p, "zones": ["a"]}])).await;
    flow.deployment_until(&id, "healthy", all_healthy).await;
    let home = flow
        .topology
        .region_home(&RegionName::parse(&p).unwrap())
        .unwrap();
    let topic = mot::topics::names::TopicName::parse("mot-mesos-task-state").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut tasks = std::collections::BTreeMap::new();
        mot::actors::pipeline::read_to_end(&home, &topic, &common::unique("mesos-reader"), |m| {
            if let Ok(env) = envelope::decode::<MesosTaskState>(m.key(), m.payload()) {
                if env.origin.as_str() == p {
                    tasks.insert(env.key.clone(), env);
                }
            }
        })
        .await
        .unwrap();
        let live: Vec<&Envelope<MesosTaskState>> = tasks
            .values()
            .filter(|e| {
                e.kind != Kind::Deleted && e.payload.labels.get("mot-deployment-id") == Some(&id)
            })
            .collect();
        if live.len() == 2 {
            for t in live {
                assert_eq!(t.payload.state, "TASK_RUNNING");
                assert_eq!(t.payload.zone.as_str(), "a");
                assert!(t
                    .payload
                    .hostname
                    .as_deref()
                    .is_some_and(|h| h.contains("agent")));
                assert!(t.payload.ports.is_some());
            }
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{} tasks", live.len());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[actix_web::test]
async fn traffic_asked_while_consul_is_down_is_applied_once_it_is_back() {
    let flow = start().await;
    let p = flow.prod_region.clone();
    let region = RegionName::parse(&p).unwrap();
    let id = flow.post(json!([{"region": p, "zones": ["b"]}])).await;
    flow.deployment_until(&id, "healthy", all_healthy).await;
    flow.instances_until(&id, "serving", |i| i["traffic"] == true)
        .await;

    flow.consul(&p, "b").down();
    let off = flow
        .http
        .post(format!("{}/deployments/{id}/traffic", flow.url))
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(off.status().as_u16(), 202);
    // The agent keeps the event: it fails and is restarted (with backoff) rather than dropping it.
    let traffic = flow.registry.get("TrafficAgent", &region);
    common::eventually(60, "the traffic agent retried the event", || {
        traffic.snapshot().restarts >= 2
    })
    .await;
    assert_eq!(traffic.snapshot().dead_lettered, 0, "nothing dead-lettered");
    flow.consul(&p, "b").up();

    flow.instances_until(&id, "out of traffic", |i| i["traffic"] == false)
        .await;
    let applied = flow.events_of_kind(&id, "traffic-applied").await;
    assert_eq!(applied.len(), 1, "{applied:#?}");
    assert_eq!(applied[0]["zone"], "b");
    assert_eq!(
        applied[0]["detail"],
        json!({"enabled": false, "instances": 2})
    );
    assert_eq!(traffic.snapshot().dead_lettered, 0);
}

#[actix_web::test]
async fn a_record_cassandra_refuses_is_dead_lettered_and_the_records_behind_it_are_archived() {
    use mot::models::envelope::{Envelope, Kind};
    use mot::models::instance::{Health, InstanceInfo};
    use rdkafka::Message;
    let flow = start().await;
    let p = flow.prod_region.clone();
    let region = RegionName::parse(&p).unwrap();
    let id = flow.post(json!([{"region": p, "zones": ["a"]}])).await;
    flow.deployment_until(&id, "healthy", all_healthy).await;

    // An instance whose id Cassandra cannot take as a key (over 64 KiB), then a sound one, on the
    // archival agent's own topic in the central cluster.
    let instance = |instance_id: String| InstanceInfo {
        region: region.clone(),
        zone: mot::topics::names::ZoneName::parse("a").unwrap(),
        service: "checkout-web".into(),
        instance_id,
        deployment_id: Some(id.clone()),
        node: "n".into(),
        host: "h".into(),
        port: 31999,
        tags: vec![],
        health: Health::Passing,
        checks: vec![],
        traffic: true,
    };
    let topic =
        mot::topics::names::TopicName::parse(&format!("mot-instance-state-change.{p}")).unwrap();
    let central = flow.topology.central_home();
    let producer = central.producer().unwrap();
    let poison = instance("x".repeat(70_000));
    let sound = instance("by-hand-1".into());
    for info in [&poison, &sound] {
        let envelope = Envelope::new(Kind::Created, info.key(), region.clone(), 1_000, info);
        let record = mot::actors::pipeline::Outgoing {
            topic: topic.clone(),
            key: Some(info.key().into_bytes()),
            value: Some(serde_json::to_vec(&envelope).unwrap()),
            headers: vec![],
            timestamp_ms: None,
        };
        producer.send(&record).await.unwrap();
    }

    instances_until_any(&flow, &id, |i| i["instance_id"] == "by-hand-1").await;
    // The sound record is written while the dead letter is still on its way to the broker (the
    // pipeline does not wait for one record's acknowledgement to process the next): the count
    // moves once the broker has it.
    let archival = flow.registry.get("InstanceArchivalAgent", &region);
    common::eventually(60, "the poison record counted dead-lettered", || {
        archival.snapshot().dead_lettered >= 1
    })
    .await;
    let dead_letters = mot::topics::names::TopicName::parse("mot-dead-letters").unwrap();
    let mut found = Vec::new();
    mot::actors::pipeline::read_to_end(&central, &dead_letters, &common::unique("dlq"), |m| {
        if m.key() == Some(poison.key().as_bytes()) {
            let header = |name: &str| {
                m.headers().and_then(|h| {
                    use rdkafka::message::Headers;
                    h.iter()
                        .find(|h| h.key == name)
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                })
            };
            found.push((header("mot-dlq-reason"), header("mot-dlq-source-topic")));
        }
    })
    .await
    .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(archival.snapshot().dead_lettered, 1);
    let (reason, source) = &found[0];
    assert_eq!(source.as_deref(), Some(topic.as_str()));
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.starts_with("cassandra refused")),
        "{reason:?}"
    );
}

/// Waits until some instance of deployment `id` satisfies `ok`.
async fn instances_until_any(flow: &Flow, id: &str, ok: impl Fn(&Value) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = flow.get(&format!("/deployments/{id}/instances")).await;
        if body["instances"]
            .as_array()
            .is_some_and(|i| i.iter().any(&ok))
        {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{body:#}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The state of `id`'s only zone in `region`.
fn only_zone<'a>(view: &'a Value, name: &str) -> &'a Value {
    &region(view, name)["zones"][0]
}

/// POSTs to one of the simulator's `_sim` controls of zone `a`, expecting 204.

#[actix_web::test]
async fn a_replacement_is_not_healthy_on_the_old_tasks_and_a_task_lost_on_its_agent_names_mesos() {
    let flow = start().await;
    let p = flow.prod_region.clone();
    let targets = json!([{"region": p, "zones": ["a"]}]);
    let first = flow.post_version("1.0.0", targets.clone()).await;
    flow.deployment_until(&first, "healthy", all_healthy).await;

    // The next version is broken: its tasks never pass their checks, so Marathon keeps the old
    // version's two tasks running (and passing) beside the new version's two.
    flow.sim_control(&p, "a", "apps/checkout-web/health/new-tasks-failing")
        .await;
    let second = flow.post_version("1.0.1", targets).await;
    let view = flow
        .deployment_until(&second, "reported with its reason", |v| {
            only_zone(v, &p)["reason"]
                .as_str()
                .is_some_and(|r| r.contains("older version"))
        })
        .await;
    let zone = only_zone(&view, &p);
    assert_eq!(
        (
            &zone["status"],
            &zone["desired"],
            &zone["running"],
            &zone["healthy"]
        ),
        (&json!("deploying"), &json!(2), &json!(2), &json!(0)),
        "{zone:#}"
    );
    let reason = zone["reason"].as_str().unwrap();
    assert!(
        reason
            .starts_with("marathon: 2 task(s) of an older version still running; marathon: task "),
        "{reason}"
    );
    assert!(reason.contains("fails its health checks"), "{reason}");
    let app = flow.app(&p, "a").await;
    let tasks = app["app"]["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 4, "both versions run: {app:#}");
    assert_eq!(
        app["app"]["tasksHealthy"], 2,
        "Marathon counts the old tasks: {app:#}"
    );
    assert_eq!(view["status"], "deploying", "{view:#}");

    // The version mended: its tasks pass, the old ones go, the zone is healthy with no reason.
    flow.sim_control(&p, "a", "apps/checkout-web/health/passing")
        .await;
    let view = flow.deployment_until(&second, "healthy", all_healthy).await;
    assert_eq!(only_zone(&view, &p)["reason"], Value::Null, "{view:#}");

    // A task's agent disconnects: Mesos reports the task lost; Marathon and Consul still see it
    // running and passing. The zone is degraded, and its reason names Mesos and what it said.
    let app = flow.app(&p, "a").await;
    let tasks = app["app"]["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2, "{app:#}");
    let (task, host) = (
        tasks[0]["id"].as_str().unwrap().to_owned(),
        tasks[0]["host"].as_str().unwrap().to_owned(),
    );
    flow.sim_control(&p, "a", &format!("tasks/{task}/lose"))
        .await;
    let view = flow
        .deployment_until(&second, "degraded", |v| v["status"] == "degraded")
        .await;
    let zone = only_zone(&view, &p);
    assert_eq!(
        zone["reason"].as_str(),
        Some(
            format!(
                "mesos: task {task} is TASK_LOST on {host} \
                 (REASON_AGENT_DISCONNECTED: Agent {host} disconnected)"
            )
            .as_str()
        ),
        "{zone:#}"
    );
    assert_eq!((&zone["running"], &zone["healthy"]), (&json!(1), &json!(1)));
    let app = flow.app(&p, "a").await;
    assert_eq!(
        app["app"]["tasksHealthy"], 2,
        "Marathon has not noticed: {app:#}"
    );
    let (_, events) = flow.get(&format!("/deployments/{second}/events")).await;
    let last = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|e| e["subject"] == "zone")
        .unwrap()
        .clone();
    assert_eq!(last["kind"], "degraded", "{events:#}");
    assert!(
        last["detail"]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("mesos: task ")),
        "the timeline says why: {last:#}"
    );
}

#[actix_web::test]
async fn traffic_consul_refuses_for_good_is_a_timeline_event_with_its_answer_and_the_next_is_applied(
) {
    let flow = start().await;
    let p = flow.prod_region.clone();
    let id = flow.post(json!([{"region": p, "zones": ["c"]}])).await;
    flow.deployment_until(&id, "healthy", all_healthy).await;
    flow.instances_until(&id, "serving", |i| i["traffic"] == true)
        .await;
    let traffic = |enabled: bool| {
        let url = format!("{}/deployments/{id}/traffic", flow.url);
        let http = flow.http.clone();
        async move {
            let resp = http
                .post(url)
                .json(&json!({"enabled": enabled}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 202);
        }
    };

    // mot's token may read, no longer write.
    flow.consul_token
        .set_rules(common::consul::READ_RULES)
        .await;
    traffic(false).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let refused = loop {
        let (_, events) = flow.get(&format!("/deployments/{id}/events")).await;
        let refused: Vec<Value> = events["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "traffic-refused")
            .cloned()
            .collect();
        if !refused.is_empty() {
            break refused;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no traffic-refused event: {events:#}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!(refused[0]["zone"], "c");
    let reason = refused[0]["detail"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("403") && reason.contains("Permission denied"),
        "{reason}"
    );

    // The refused event is done: the next one, with writes allowed again, is applied.
    flow.consul_token.set_rules(common::consul::MOT_RULES).await;
    traffic(false).await;
    let off = flow
        .instances_until(&id, "out of traffic", |i| i["traffic"] == false)
        .await;
    assert_eq!(off.len(), 2, "{off:#?}");
    let (_, events) = flow.get(&format!("/deployments/{id}/events")).await;
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["subject"] == "traffic")
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "traffic-refused").count(),
        1,
        "{kinds:?}"
    );
}
