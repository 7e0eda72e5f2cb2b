//! `mot run` grows without a restart: SIGHUP adds a region that has its own Kafka cluster and its
//! own platform, and a deployment to it flows end to end. Its JSON logs carry the deployment's
//! trace id.

mod common;

use std::io::BufRead;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use common::ExtraKafka;
use mot::config::Config;
use mot::platform::sim::{Platform, SimOptions};
use mot::topics::names::RegionName;

fn hup(pid: u32) {
    assert!(Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

async fn post(http: &reqwest::Client, url: &str, region: &str, app: &str) -> (u16, Value) {
    let resp = http
        .post(format!("{url}/deployments"))
        .json(&json!({
            "app": app, "version": "1.0.0", "artifact": "registry.example.com/grow:1",
            "instances_per_zone": 2, "resources": {"cpus": 0.1, "mem_mb": 64},
            "targets": [{"region": region}],
        }))
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or_default(),
    )
}

#[actix_web::test]
async fn sighup_adds_a_region_with_its_own_cluster_and_its_deployments_flow_without_restart() {
    let kafka = ExtraKafka::new();
    kafka.start();
    let region = common::unique_region();
    let port = common::free_port();
    let sim = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sim_port = sim.local_addr().unwrap().port();
    let keyspace = common::unique("mot_reload");
    let node = format!(
        "[web]\nlisten = \"127.0.0.1:{port}\"\n\n\
         [telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\nlog_format = \"json\"\n\n"
    );
    let with_keyspace =
        |toml: String| toml.replace("keyspace = \"mot\"", &format!("keyspace = \"{keyspace}\""));
    let before = node.clone() + &with_keyspace(common::topology_toml(&[], "mot"));
    let after = format!(
        "{node}{}\n[[clusters]]\nname = \"{}\"\nbootstrap = [\"{}\"]\n",
        with_keyspace(common::topology_toml(&[(&region, &kafka.name)], "mot")).replace(
            "http://127.0.0.1:1/",
            &format!("http://127.0.0.1:{sim_port}/")
        ),
        kafka.name,
        kafka.bootstrap,
    );
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), &after).unwrap();
    let grown = Config::load(file.path()).unwrap();
    let platform = Platform::new(
        grown.region(&RegionName::parse(&region).unwrap()).unwrap(),
        SimOptions {
            health_delay: Duration::from_millis(100),
        },
    );
    actix_web::rt::spawn(platform.server(sim).unwrap());
    std::fs::write(file.path(), &before).unwrap();
    common::migrated(&Config::load(file.path()).unwrap()).await;

    let logs = tempfile::NamedTempFile::new().unwrap();
    let mut child = common::spawn_mot_logging_to(file.path(), logs.reopen().unwrap());
    let http = common::api_client()
        .pool_idle_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    common::wait_healthz(&http, &url, &mut child).await;

    let (status, body) = post(&http, &url, &region, "grow").await;
    assert_eq!(status, 422, "the region is not in the topology yet: {body}");

    // The region, its cluster and its route arrive with a reload.
    std::fs::write(file.path(), &after).unwrap();
    hup(child.id());
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let accepted = loop {
        let (status, body) = post(&http, &url, &region, "grow").await;
        if status == 202 {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the reloaded topology never took the region: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let id = accepted["id"].as_str().unwrap().to_owned();
    let trace_id = accepted["trace_id"].as_str().unwrap().to_owned();

    // Launched through the new region's cluster, observed by its pollers, archived centrally.
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let view = loop {
        let view: Value = http
            .get(format!("{url}/deployments/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or_default();
        if view["status"] == "healthy" {
            break view;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new region's deployment never became healthy: {view:#}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let regions = view["regions"].as_array().unwrap();
    assert_eq!(regions.len(), 1, "{view:#}");
    assert_eq!(regions[0]["region"], region.as_str(), "{view:#}");
    // Instances arrive on their own path (Consul -> instance state -> archival).
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let instances = loop {
        let body: Value = http
            .get(format!("{url}/deployments/{id}/instances"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or_default();
        let passing = body["instances"]
            .as_array()
            .map(|all| all.iter().filter(|i| i["health"] == "passing").count())
            .unwrap_or(0);
        if passing == 4 {
            break body["instances"].as_array().unwrap().clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "2 zones x 2 instances passing: {body:#}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(instances.len(), 4, "{instances:#?}");
    assert!(instances.iter().all(|i| i["health"] == "passing"));

    // A broken file is refused: the process keeps running the grown topology.
    std::fs::write(file.path(), "[[regions]\nthis is not toml").unwrap();
    hup(child.id());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "a broken file stops nothing"
    );
    let (status, body) = post(&http, &url, &region, "grow-again").await;
    assert_eq!(status, 202, "the region is still served: {body}");

    common::sigterm_and_wait(child).await;

    // JSON logs: one object per line; the deployment's lines carry its trace id.
    let lines: Vec<Value> = std::io::BufReader::new(std::fs::File::open(logs.path()).unwrap())
        .lines()
        .map(|l| l.unwrap())
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let traced = |message: &str| {
        lines
            .iter()
            .filter(|l| l["fields"]["message"] == message && l["trace_id"] == trace_id.as_str())
            .count()
    };
    assert_eq!(traced("deployment accepted"), 1, "the API's log line");
    assert_eq!(
        traced("scheduler accepted the app"),
        2,
        "one per zone, from the operation agent in the new region"
    );
    assert!(
        lines
            .iter()
            .filter(|l| l["trace_id"].is_string())
            .all(|l| l["span_id"].as_str().is_some_and(|s| s.len() == 16)),
        "a traced line has its span id"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "topology reloaded"),
        "the reload is logged"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "reload refused; keeping the running topology"),
        "the refusal is logged"
    );
}
