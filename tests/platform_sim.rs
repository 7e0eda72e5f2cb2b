//! The platform simulator over HTTP: Marathon, Mesos and Consul of one zone agree with each other,
//! and the failure switches do what they say.

mod common;

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use mot::config::Config;
use mot::platform::marathon::{App, MarathonClient};
use mot::platform::sim::{Platform, SimOptions};
use mot::topics::names::RegionName;

async fn start(health_delay: Duration) -> String {
    let config = Config::load(Path::new(&common::repo_path("dev/mot.toml"))).unwrap();
    let region = config
        .region(&RegionName::parse("test-us-east-1").unwrap())
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    actix_web::rt::spawn(
        Platform::new(region, SimOptions { health_delay })
            .server(listener)
            .unwrap(),
    );
    url
}

fn app(instances: u32) -> App {
    serde_json::from_value(json!({
        "id": "/web", "instances": instances, "cpus": 0.25, "mem": 128,
        "labels": {"mot-deployment-id": "d-1"}
    }))
    .unwrap()
}

async fn get(url: &str) -> (Value, Option<String>) {
    let resp = reqwest::get(url).await.unwrap();
    let index = resp
        .headers()
        .get("X-Consul-Index")
        .map(|v| v.to_str().unwrap().to_owned());
    (resp.json().await.unwrap(), index)
}

#[actix_web::test]
async fn marathon_mesos_and_consul_agree_and_health_follows_the_delay() {
    let base = start(Duration::from_millis(300)).await;
    let marathon = MarathonClient::new(&format!("{base}/a/marathon"), reqwest::Client::new());
    assert!(marathon.app("/web").await.unwrap().is_none());
    let accepted = marathon.put_app(&app(3)).await.unwrap();
    assert!(!accepted.version.is_empty());

    let got = marathon.app("/web").await.unwrap().unwrap();
    assert_eq!(
        (got.instances, got.tasks.len(), got.tasks_healthy),
        (3, 3, Some(0))
    );
    let (mesos, _) = get(&format!("{base}/a/mesos/master/state")).await;
    let mesos_tasks = mesos["frameworks"][0]["tasks"].as_array().unwrap();
    let (consul, index) = get(&format!("{base}/a/consul/v1/health/service/web")).await;
    let consul = consul.as_array().unwrap();
    assert!(index.is_some(), "Consul answers carry X-Consul-Index");
    for task in &got.tasks {
        assert!(mesos_tasks.iter().any(|t| t["id"] == task.id.as_str()
            && t["resources"]["ports"] == format!("[{}-{}]", task.ports[0], task.ports[0])));
        let entry = consul
            .iter()
            .find(|e| e["Service"]["ID"] == task.id.as_str())
            .expect("in Consul");
        assert_eq!(entry["Service"]["Port"], task.ports[0]);
        assert_eq!(entry["Node"]["Node"], task.host.as_str());
        assert_eq!(entry["Service"]["Meta"]["mot-deployment-id"], "d-1");
        assert_eq!(
            entry["Checks"][0]["Status"], "critical",
            "not healthy before the delay"
        );
    }
    let (services, _) = get(&format!("{base}/a/consul/v1/catalog/services")).await;
    assert!(services["web"].is_array());

    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        marathon.app("/web").await.unwrap().unwrap().tasks_healthy,
        Some(3)
    );
    let (consul, _) = get(&format!("{base}/a/consul/v1/health/service/web")).await;
    assert!(consul
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["Checks"][0]["Status"] == "passing"));

    // Zones are separate: zone b has no app.
    let b = MarathonClient::new(&format!("{base}/b/marathon"), reqwest::Client::new());
    assert!(b.app("/web").await.unwrap().is_none());
}

#[actix_web::test]
async fn failure_switches_take_a_scheduler_down_fail_health_and_kill_tasks() {
    let base = start(Duration::ZERO).await;
    let http = reqwest::Client::new();
    let marathon = MarathonClient::new(&format!("{base}/a/marathon"), http.clone());
    marathon.put_app(&app(2)).await.unwrap();

    http.post(format!("{base}/a/_sim/apps/web/health/failing"))
        .send()
        .await
        .unwrap();
    let (consul, _) = get(&format!("{base}/a/consul/v1/health/service/web")).await;
    assert!(consul
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["Checks"][0]["Status"] == "critical"));
    http.post(format!("{base}/a/_sim/apps/web/health/passing"))
        .send()
        .await
        .unwrap();

    let before = marathon.app("/web").await.unwrap().unwrap();
    let victim = before.tasks[0].id.clone();
    let killed = http
        .post(format!("{base}/a/_sim/tasks/{victim}/kill"))
        .send()
        .await
        .unwrap();
    assert_eq!(killed.status().as_u16(), 204);
    let after = marathon.app("/web").await.unwrap().unwrap();
    assert_eq!(after.tasks.len(), 2, "a killed task is replaced");
    assert!(after.tasks.iter().all(|t| t.id != victim));

    http.post(format!("{base}/a/_sim/scheduler/down"))
        .send()
        .await
        .unwrap();
    let err = marathon.put_app(&app(3)).await.unwrap_err();
    assert!(err.transient && err.message.contains("503"), "{err:?}");
    http.post(format!("{base}/a/_sim/scheduler/up"))
        .send()
        .await
        .unwrap();
    marathon.put_app(&app(3)).await.unwrap();
    assert_eq!(marathon.app("/web").await.unwrap().unwrap().instances, 3);
}
