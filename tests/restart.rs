//! `mot run` stopped by SIGTERM while deployments are in flight, then started again: every
//! request the API accepted reaches the projections, and none is carried out twice.

mod common;

use common::{sigterm_and_wait, spawn_mot, wait_healthz};

use std::time::Duration;

use serde_json::{json, Value};

use mot::config::Config;
use mot::platform::sim::{Platform, SimOptions};
use mot::topics::names::RegionName;

#[actix_web::test]
async fn sigterm_mid_flow_then_restart_loses_no_accepted_request_and_repeats_none() {
    let id = common::unique("").replace('_', "");
    let region = format!("production-t{id}");
    let port = common::free_port();
    let sim = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sim_port = sim.local_addr().unwrap().port();
    let keyspace = common::unique("mot_restart");
    let file = common::dev_toml_with(&[
        (
            "listen = \"127.0.0.1:8080\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        ),
        ("keyspace = \"mot\"", &format!("keyspace = \"{keyspace}\"")),
        (
            "name = \"production-us-west-2\"\ncluster",
            &format!("name = \"{region}\"\ncluster"),
        ),
        ("127.0.0.1:48080", &format!("127.0.0.1:{sim_port}")),
        (
            "mot-zone=production-us-west-2/",
            &format!("mot-zone={region}/"),
        ),
    ]);
    let config = Config::load(file.path()).unwrap();
    common::migrated(&config).await;
    let platform = Platform::new(
        config.region(&RegionName::parse(&region).unwrap()).unwrap(),
        SimOptions {
            health_delay: Duration::from_millis(100),
        },
    );
    actix_web::rt::spawn(platform.server(sim).unwrap());

    let http = common::api_client()
        .pool_idle_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let mut first = spawn_mot(file.path());
    wait_healthz(&http, &url, &mut first).await;

    // A burst of deployments (one app each, so none supersedes another), then SIGTERM at once.
    let mut accepted = Vec::new();
    for n in 0..12 {
        let resp = http
            .post(format!("{url}/deployments"))
            .json(&json!({
                "app": format!("burst-{n}"), "version": "1.0.0", "artifact": "registry.example.com/burst:1",
                "instances_per_zone": 1, "resources": {"cpus": 0.1, "mem_mb": 64},
                "targets": [{"region": region, "zones": ["a", "b"]}],
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202);
        let body: Value = resp.json().await.unwrap();
        accepted.push(body["id"].as_str().unwrap().to_owned());
    }
    sigterm_and_wait(first).await;

    let mut second = spawn_mot(file.path());
    wait_healthz(&http, &url, &mut second).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    for id in &accepted {
        loop {
            let view: Value = http
                .get(format!("{url}/deployments/{id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let events: Value = http
                .get(format!("{url}/deployments/{id}/events"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let accepted_zones: Vec<&str> = events["events"]
                .as_array()
                .map(|e| {
                    e.iter()
                        .filter(|e| e["kind"] == "scheduler-accepted")
                        .map(|e| e["zone"].as_str().unwrap())
                        .collect()
                })
                .unwrap_or_default();
            if view["status"] == "healthy" && accepted_zones.len() >= 2 {
                let mut zones = accepted_zones.clone();
                zones.sort();
                assert_eq!(zones, ["a", "b"], "each zone launched once: {events:#}");
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "deployment {id} never completed after the restart: {view:#}\n{events:#}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    sigterm_and_wait(second).await;
}
