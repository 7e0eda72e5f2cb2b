//! The truth survives a crash: successive versions of one app deployed to two regions while
//! `mot run` is killed with SIGKILL (nothing drained, committed or flushed) and started again.
//! Afterwards every zone runs the newest version, every deployment is in a final state, and
//! nothing was launched or put on a timeline twice.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use common::flow::{renamed_dev_topology, DevTopology};
use common::{sigkill, sigterm_and_wait, spawn_mot, wait_healthz};
use mot::config::Config;
use mot::platform::sim::{Platform, SimOptions};
use mot::topics::names::RegionName;

/// Versions deployed per app.
const VERSIONS: usize = 10;
/// One app per round; in each, `mot run` is killed right after this many POSTs were accepted.
const KILL_AFTER: [usize; 3] = [2, 6, 10];

async fn get(http: &reqwest::Client, url: &str) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// Waits until `GET /deployments/{id}` has `status`.
async fn status_until(http: &reqwest::Client, url: &str, id: &str, status: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let view = get(http, &format!("{url}/deployments/{id}")).await;
        if view["status"] == status {
            return view;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "deployment {id} never {status}: {view:#}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until the timeline of deployment `id` has an event of `kind`.
async fn events_until(http: &reqwest::Client, url: &str, id: &str, kind: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let events = get(http, &format!("{url}/deployments/{id}/events")).await;
        if events["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["kind"] == kind))
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "deployment {id} never had a {kind} event: {events:#}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A `mot run` of its own (every role, the dev topology renamed, consumers that never commit on
/// their own) over simulated zones, to kill.
struct Crashable {
    file: tempfile::NamedTempFile,
    config: Config,
    url: String,
    http: reqwest::Client,
    sim_urls: BTreeMap<String, String>,
    test_region: String,
    prod_region: String,
    mot: Option<common::MotProcess>,
    _keyspace: common::DropKeyspace,
}

impl Crashable {
    async fn start() -> Self {
        let DevTopology {
            mut text,
            test_region,
            prod_region,
            sims,
            ..
        } = renamed_dev_topology();
        let port = common::free_port();
        text = text.replace(
            "listen = \"127.0.0.1:8080\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        );
        // Consumers commit their offsets in the background every 5 s: a kill could fall just
        // after a commit and replay nothing. Here they never commit on their own, so each
        // SIGKILL replays every record since the test began.
        text = text.replace(
            "bootstrap = [\"127.0.0.1:",
            "client = { \"auto.commit.interval.ms\" = \"3600000\" }\nbootstrap = [\"127.0.0.1:",
        );
        let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::fs::write(file.path(), &text).unwrap();
        let config = Config::load(file.path()).unwrap();
        common::migrated(&config).await;
        let keyspace = common::DropKeyspace(config.cassandra.clone());
        let mut sim_urls = BTreeMap::new();
        for (region, listener) in sims {
            sim_urls.insert(
                region.clone(),
                format!("http://{}", listener.local_addr().unwrap()),
            );
            let platform = Platform::new(
                config.region(&RegionName::parse(&region).unwrap()).unwrap(),
                SimOptions {
                    health_delay: Duration::from_millis(100),
                },
            );
            actix_web::rt::spawn(platform.server(listener).unwrap());
        }
        let http = common::api_client()
            .pool_idle_timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let mut mot = spawn_mot(file.path());
        wait_healthz(&http, &url, &mut mot).await;
        Self {
            file,
            config,
            url,
            http,
            sim_urls,
            test_region,
            prod_region,
            mot: Some(mot),
            _keyspace: keyspace,
        }
    }

    /// SIGKILL, then start it again.
    async fn kill_and_restart(&mut self) {
        sigkill(self.mot.take().expect("running")).await;
        let mut mot = spawn_mot(self.file.path());
        wait_healthz(&self.http, &self.url, &mut mot).await;
        self.mot = Some(mot);
    }
}

#[actix_web::test]
async fn sigkill_amid_ten_versions_leaves_the_newest_running_and_every_deployment_final() {
    let mut c = Crashable::start().await;
    let (http, url) = (c.http.clone(), c.url.clone());
    let (test_region, prod_region) = (c.test_region.clone(), c.prod_region.clone());
    let mut rounds = Vec::new();
    for (round, kill_after) in KILL_AFTER.iter().enumerate() {
        let app = format!("crash-{round}");
        let mut ids = Vec::new();
        for v in 1..=VERSIONS {
            // As a client should: a 503 (not acknowledged) is retried, with one Idempotency-Key
            // so that a retry of a request Kafka did log stays one deployment.
            let key = common::unique("crash-post");
            let body = json!({
                "app": app, "version": format!("1.0.{v}"),
                "artifact": format!("registry.example.com/{app}:1.0.{v}"),
                "instances_per_zone": 1, "resources": {"cpus": 0.1, "mem_mb": 64},
                "targets": [{"region": test_region}, {"region": prod_region}],
            });
            let resp = common::send_retrying("POST /deployments", || {
                http.post(format!("{url}/deployments"))
                    .header("Idempotency-Key", &key)
                    .json(&body)
            })
            .await;
            assert_eq!(resp.status().as_u16(), 202);
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["generation"], v as u64, "generations count up per app");
            ids.push(body["id"].as_str().unwrap().to_owned());
            if v == *kill_after {
                // Kill only once the round has had a complete event published (its timeline shows
                // the scheduler's answer): the restart must replay something.
                events_until(&http, &url, &ids[0], "scheduler-accepted").await;
                c.kill_and_restart().await;
            }
        }
        rounds.push((app, ids));
    }

    let zones = ["a", "b", "c"];
    for (app, ids) in &rounds {
        let newest = ids.last().unwrap();
        status_until(&http, &url, newest, "healthy").await;
        for id in &ids[..VERSIONS - 1] {
            status_until(&http, &url, id, "superseded").await;
        }
        for region in [&test_region, &prod_region] {
            for zone in zones {
                let sim = &c.sim_urls[region];
                let running = get(&http, &format!("{sim}/{zone}/marathon/v2/apps/{app}")).await;
                assert_eq!(
                    running["app"]["labels"]["mot-deployment-id"],
                    newest.as_str(),
                    "{region}/{zone} runs the newest version of {app}: {running:#}"
                );
                let stats = get(&http, &format!("{sim}/{zone}/_sim/stats")).await;
                for id in ids {
                    assert_eq!(
                        stats["puts_by_deployment"][id], 1,
                        "{region}/{zone}: deployment {id} of {app} put exactly once: {stats:#}"
                    );
                }
            }
        }
        for (n, id) in ids.iter().enumerate() {
            // The timeline is archived from the complete events, a path of its own beside the
            // zone states the status comes from: wait until every zone's answer is on it.
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            let events = loop {
                let events = get(&http, &format!("{url}/deployments/{id}/events")).await;
                let zones_with = |kind: &str| {
                    events["events"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|e| e["kind"] == kind && e["subject"] == "scheduler")
                        .map(|e| (e["region"].to_string(), e["zone"].to_string()))
                        .collect::<std::collections::BTreeSet<_>>()
                        .len()
                };
                let superseded = if n + 1 < VERSIONS { 6 } else { 0 };
                let complete =
                    zones_with("scheduler-accepted") == 6 && zones_with("superseded") == superseded;
                if complete || std::time::Instant::now() >= deadline {
                    break events;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            };
            let events = events["events"].as_array().unwrap();
            let per_zone = |kind: &str| {
                let mut zones: BTreeMap<(String, String), usize> = BTreeMap::new();
                for e in events
                    .iter()
                    .filter(|e| e["kind"] == kind && e["subject"] == "scheduler")
                {
                    *zones
                        .entry((
                            e["region"].as_str().unwrap().into(),
                            e["zone"].as_str().unwrap().into(),
                        ))
                        .or_default() += 1;
                }
                zones
            };
            let accepted = per_zone("scheduler-accepted");
            assert_eq!(
                accepted.len(),
                6,
                "{app} v{}: every zone accepted: {events:#?}",
                n + 1
            );
            assert!(
                accepted.values().all(|c| *c == 1),
                "{app} v{}: one scheduler-accepted per zone: {events:#?}",
                n + 1
            );
            assert!(per_zone("scheduler-failed").is_empty(), "{events:#?}");
            let superseded = per_zone("superseded");
            if n + 1 < VERSIONS {
                assert_eq!(superseded.len(), 6, "{events:#?}");
                assert!(superseded.values().all(|c| *c == 1), "{events:#?}");
            } else {
                assert!(
                    superseded.is_empty(),
                    "the newest is superseded nowhere: {events:#?}"
                );
            }
        }
    }
    // The kills did cut the pipeline mid-flow: some complete events were produced twice (the same
    // event, replayed), yet none of the above shows it.
    let topology = mot::topics::topology::Topology::checked(&c.config).unwrap();
    let mut published = 0;
    let mut distinct = std::collections::BTreeSet::new();
    for region in [&test_region, &prod_region] {
        let region = RegionName::parse(region).unwrap();
        let home = topology.region_home(&region).unwrap();
        let topic = mot::topics::names::TopicName::parse("mot-deployment-complete-events").unwrap();
        mot::actors::pipeline::read_to_end(&home, &topic, &common::unique("crash-reader"), |m| {
            use rdkafka::Message;
            if let Ok(e) = mot::models::envelope::decode::<
                mot::models::deployment::DeploymentCompleted,
            >(m.key(), m.payload())
            {
                if e.origin == region {
                    published += 1;
                    distinct.insert(e.id);
                }
            }
        })
        .await
        .unwrap();
    }
    eprintln!(
        "complete events on the regions' topics: {published}, distinct: {}",
        distinct.len()
    );
    assert!(
        published > distinct.len(),
        "no complete event was replayed ({published} records): the kills tested nothing"
    );
    sigterm_and_wait(c.mot.take().unwrap()).await;
}

#[actix_web::test]
async fn sigkill_mid_rollout_resumes_it_and_launches_each_wave_once() {
    let mut c = Crashable::start().await;
    let (http, url) = (c.http.clone(), c.url.clone());
    let (test, prod) = (c.test_region.clone(), c.prod_region.clone());
    let key = common::unique("crash-post");
    let body = json!({
        "app": "rollout-crash", "version": "1.0.0",
        "artifact": "registry.example.com/rollout-crash:1.0.0",
        "instances_per_zone": 1, "resources": {"cpus": 0.1, "mem_mb": 64},
        "targets": [{"region": test}, {"region": prod}],
        "strategy": {"waves": [[test], [prod]], "min_healthy_secs": 5, "deadline_secs": 300},
    });
    // A 503 is retried under one Idempotency-Key, as a client should.
    let resp = common::send_retrying("POST /deployments", || {
        http.post(format!("{url}/deployments"))
            .header("Idempotency-Key", &key)
            .json(&body)
    })
    .await;
    assert_eq!(resp.status().as_u16(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Killed while the first wave's gate is counting its healthy time.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let view = get(&http, &format!("{url}/deployments/{id}")).await;
        if !view["waves"][0]["healthy_since_ms"].is_null() {
            assert_eq!(view["waves"][1]["state"], "waiting", "{view:#}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "wave 1 never healthy: {view:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.kill_and_restart().await;

    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let view = loop {
        let view = get(&http, &format!("{url}/deployments/{id}")).await;
        if view["waves"][1]["state"] == "healthy" && view["status"] == "healthy" {
            break view;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rollout never completed: {view:#}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(view["waves"][0]["state"], "healthy");
    for region in [&test, &prod] {
        for zone in ["a", "b", "c"] {
            let stats = get(&http, &format!("{}/{zone}/_sim/stats", c.sim_urls[region])).await;
            assert_eq!(
                stats["puts_by_deployment"][&id], 1,
                "{region}/{zone} got the deployment once: {stats:#}"
            );
        }
    }
    let events = get(&http, &format!("{url}/deployments/{id}/events")).await;
    let steps: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["subject"] == "rollout")
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "wave-started",
            "wave-healthy",
            "wave-started",
            "wave-healthy",
            "healthy"
        ],
        "each step once, though every record since the start was replayed"
    );
    // Each wave's launch is on the central cluster once.
    let topology = mot::topics::topology::Topology::checked(&c.config).unwrap();
    for region in [&test, &prod] {
        let topic =
            mot::topics::names::TopicName::parse(&format!("mot-deployment-launch-events-{region}"))
                .unwrap();
        let mut launches = 0;
        mot::actors::pipeline::read_to_end(
            &topology.central_home(),
            &topic,
            &common::unique("crash-reader"),
            |m| {
                use rdkafka::Message;
                let ours =
                    mot::models::envelope::decode::<mot::models::deployment::LaunchRequested>(
                        m.key(),
                        m.payload(),
                    )
                    .is_ok_and(|e| e.payload.deployment_id.to_string() == id);
                launches += usize::from(ours);
            },
        )
        .await
        .unwrap();
        assert_eq!(launches, 1, "{region}'s wave launched once");
    }
    sigterm_and_wait(c.mot.take().unwrap()).await;
}
