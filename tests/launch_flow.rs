//! The seed's "Requesting a deployment", end to end over real Kafka clusters and the platform
//! simulator over HTTP: POST -> request log -> fan-out -> central launch topic -> (pseudo-central
//! for a non-production region) -> DeploymentOperationAgent -> each zone's Marathon -> complete
//! event on the region's own cluster.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rdkafka::Message;
use serde_json::{json, Value};

use mot::actors::counters::Registry;
use mot::actors::pipeline;
use mot::config::Config;
use mot::models::deployment::{DeploymentCompleted, ZoneOutcome};
use mot::models::envelope::{self, Envelope, Kind};
use mot::models::instance::{Health, InstanceInfo};
use mot::platform::sim::{Platform, SimOptions};
use mot::topics::clients;
use mot::topics::names::{RegionName, TopicName};
use mot::topics::topology::Topology;
use mot::web::{self, AppState};

struct Flow {
    url: String,
    topology: Topology,
    sims: Vec<(String, String)>,
    test_region: String,
    prod_region: String,
    http: reqwest::Client,
    registry: Registry,
}

/// The dev topology with its two app regions renamed uniquely (so this run's topics and consumer
/// groups are its own) and their zones served by simulators on free ports; every role of the
/// process started in-process, as `mot run` starts them.
async fn start() -> Flow {
    common::init_tracing();
    let id = common::unique("").replace('_', "");
    let (test_region, prod_region) = (format!("test-t{id}"), format!("production-t{id}"));
    let mut sims = Vec::new();
    let mut text = std::fs::read_to_string(common::repo_path("dev/mot.toml")).unwrap();
    let keyspace = common::unique("mot_flow");
    text = text.replace("keyspace = \"mot\"", &format!("keyspace = \"{keyspace}\""));
    for (old_name, new_name, old_port) in [
        ("test-us-east-1", &test_region, "38080"),
        ("production-us-west-2", &prod_region, "48080"),
    ] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        text = text
            .replace(
                &format!("name = \"{old_name}\"\ncluster"),
                &format!("name = \"{new_name}\"\ncluster"),
            )
            .replace(
                &format!("127.0.0.1:{old_port}"),
                &format!("127.0.0.1:{port}"),
            );
        sims.push((new_name.clone(), listener));
    }
    let config = Config::from_toml(Path::new("flow-test.toml"), &text).unwrap();
    let topology = Topology::checked(&config).unwrap();
    let mut sim_urls = Vec::new();
    for (region, listener) in sims {
        let port = listener.local_addr().unwrap().port();
        let region_config = config.region(&RegionName::parse(&region).unwrap()).unwrap();
        let platform = Platform::new(
            region_config,
            SimOptions {
                health_delay: Duration::from_millis(100),
            },
        );
        actix_web::rt::spawn(platform.server(listener).unwrap());
        sim_urls.push((region, format!("http://127.0.0.1:{port}")));
    }
    for cluster in &config.clusters {
        clients::ensure_topics(&topology, &topology.cluster_admin(&cluster.name).unwrap())
            .await
            .unwrap();
    }
    common::migrated(&config).await;
    let registry = Registry::default();
    mot::daemon::start_agents(&topology, &registry);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    actix_web::rt::spawn(
        web::server(
            listener,
            Some(actix_web::web::Data::new(
                AppState::connect(topology.clone()).await.unwrap(),
            )),
            Registry::default(),
        )
        .unwrap(),
    );
    Flow {
        url: format!("http://127.0.0.1:{port}"),
        topology,
        sims: sim_urls,
        test_region,
        prod_region,
        http: reqwest::Client::new(),
        registry,
    }
}

impl Flow {
    fn sim(&self, region: &str) -> &str {
        &self.sims.iter().find(|(r, _)| r == region).unwrap().1
    }

    async fn post(&self, targets: Value) -> String {
        let body = json!({
            "app": "checkout-web", "version": "1.4.2", "artifact": "registry.example.com/checkout-web:1.4.2",
            "instances_per_zone": 2, "resources": {"cpus": 0.5, "mem_mb": 256}, "ports": [8080],
            "health_check": {"path": "/health", "interval_secs": 10}, "targets": targets,
        });
        let resp = self
            .http
            .post(format!("{}/deployments", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202);
        resp.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The complete events of deployment `id` on `region`'s own cluster, waiting for `n`.
    async fn complete_events(&self, region: &str, id: &str, n: usize) -> Vec<DeploymentCompleted> {
        let home = self
            .topology
            .region_home(&RegionName::parse(region).unwrap())
            .unwrap();
        let topic = TopicName::parse("mot-deployment-complete-events").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            let mut found = Vec::new();
            pipeline::read_to_end(&home, &topic, &common::unique("flow-reader"), |m| {
                if m.key() == Some(id.as_bytes()) {
                    let env: Envelope<DeploymentCompleted> =
                        envelope::decode(m.key(), m.payload()).unwrap();
                    found.push(env.payload);
                }
            })
            .await
            .unwrap();
            if found.len() >= n {
                return found;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{n} complete event(s) for {id} in {region} did not arrive"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// The latest InstanceInfo change of each instance of `region`.
    async fn instance_changes(&self, region: &str) -> BTreeMap<String, Envelope<InstanceInfo>> {
        let home = self
            .topology
            .region_home(&RegionName::parse(region).unwrap())
            .unwrap();
        let topic = TopicName::parse("mot-instance-state-change").unwrap();
        let mut latest = BTreeMap::new();
        pipeline::read_to_end(&home, &topic, &common::unique("flow-reader"), |m| {
            if let Ok(env) = envelope::decode::<InstanceInfo>(m.key(), m.payload()) {
                if env.origin.as_str() == region {
                    latest.insert(env.key.clone(), env);
                }
            }
        })
        .await
        .unwrap();
        latest
    }

    /// Waits until `n` instances of deployment `id` in `region` are live and passing.
    async fn healthy_instances(&self, region: &str, id: &str, n: usize) -> Vec<InstanceInfo> {
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            let healthy: Vec<InstanceInfo> = self
                .instance_changes(region)
                .await
                .into_values()
                .filter(|e| {
                    e.kind != Kind::Deleted
                        && e.payload.health == Health::Passing
                        && e.payload.deployment_id.as_deref() == Some(id)
                })
                .map(|e| e.payload)
                .collect();
            if healthy.len() == n {
                return healthy;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{n} healthy instances did not arrive ({} so far)",
                healthy.len()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    async fn app(&self, region: &str, zone: &str) -> Value {
        self.http
            .get(format!(
                "{}/{zone}/marathon/v2/apps/checkout-web",
                self.sim(region)
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn stats(&self, region: &str, zone: &str) -> Value {
        self.http
            .get(format!("{}/{zone}/_sim/stats", self.sim(region)))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

fn accepted_zones(event: &DeploymentCompleted) -> Vec<String> {
    event
        .zones
        .iter()
        .filter_map(|z| match z {
            ZoneOutcome::Accepted { zone, .. } => Some(zone.to_string()),
            ZoneOutcome::Failed { .. } => None,
        })
        .collect()
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
            if m.key() == Some(id.as_bytes()) {
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
            ZoneOutcome::Failed { zone, reason } => Some((zone.to_string(), reason.clone())),
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
    let launch_topic = TopicName::parse(&format!("mot-deployment-launch-events-{p}")).unwrap();
    let central = flow.topology.central_home();
    let mut original = None;
    pipeline::read_to_end(
        &central,
        &launch_topic,
        &common::unique("flow-reader"),
        |m| {
            if m.key() == Some(id.as_bytes()) {
                original = m.payload().map(<[u8]>::to_vec);
            }
        },
    )
    .await
    .unwrap();
    let producer = central.producer().unwrap();
    let replay = pipeline::Outgoing {
        topic: launch_topic,
        key: Some(id.clone().into_bytes()),
        value: original,
        headers: vec![],
        timestamp_ms: None,
    };
    pipeline::acknowledged(pipeline::enqueue(&producer, &replay))
        .await
        .unwrap();

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

    // ConsulStateAgent polls each zone's simulated Consul; InstanceConsulStateAgent turns what it
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
    flow.http
        .post(format!("{}/a/_sim/consul/down", flow.sim(&p)))
        .send()
        .await
        .unwrap();
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
    flow.http
        .post(format!("{}/a/_sim/consul/up", flow.sim(&p)))
        .send()
        .await
        .unwrap();

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
