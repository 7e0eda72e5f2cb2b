//! The platform simulator over HTTP: Marathon and Mesos of one zone agree with each other and
//! with the real Consul the simulator registers its tasks in, and the failure switches do what
//! they say.

mod common;

use std::time::Duration;

use serde_json::{json, Value};

use mot::config::Config;
use mot::platform::marathon::{App, MarathonClient};
use mot::platform::sim::{Platform, SimOptions};
use mot::topics::names::RegionName;

/// The simulator of test-us-east-1 on a free port, its zones' instances in the shared Consul
/// under a tag of this test's own; answers its URL and zone a's tag.
async fn start(health_delay: Duration) -> (String, String) {
    let scope = format!("mot-zone={}", common::unique_region());
    let file = common::dev_toml_with(&[("mot-zone=test-us-east-1", &scope)]);
    let config = Config::load(file.path()).unwrap();
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
    (url, format!("{scope}/a"))
}

/// Waits until zone `tag`'s instances of `web` in Consul satisfy `ok`; answers them.
async fn consul_until(tag: &str, what: &str, ok: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let entries = common::consul::health(common::consul::URL, "web", tag).await;
        if ok(&entries) {
            return entries;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Consul never showed {what}: {entries:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An entry's own check (the simulator's TTL check), not its node's.
fn task_check(entry: &Value) -> &Value {
    entry["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["ServiceID"] == entry["Service"]["ID"])
        .unwrap_or_else(|| panic!("no service check: {entry:#}"))
}

fn app(instances: u32) -> App {
    serde_json::from_value(json!({
        "id": "/web", "instances": instances, "cpus": 0.25, "mem": 128,
        "labels": {"mot-deployment-id": "d-1"}
    }))
    .unwrap()
}

#[actix_web::test]
async fn marathon_mesos_and_consul_agree_and_health_follows_the_delay() {
    let (base, tag) = start(Duration::from_millis(1500)).await;
    let marathon = MarathonClient::new(&format!("{base}/a/marathon"), reqwest::Client::new());
    assert!(marathon.app("/web").await.unwrap().is_none());
    let accepted = marathon.put_app(&app(3)).await.unwrap();
    assert!(!accepted.version.is_empty());

    let got = marathon.app("/web").await.unwrap().unwrap();
    assert_eq!(
        (got.instances, got.tasks.len(), got.tasks_healthy),
        (3, 3, Some(0))
    );
    let mesos: Value = reqwest::get(format!("{base}/a/mesos/master/state"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mesos_tasks = mesos["frameworks"][0]["tasks"].as_array().unwrap();
    let consul = consul_until(&tag, "three registered instances", |e| e.len() == 3).await;
    for task in &got.tasks {
        assert!(mesos_tasks.iter().any(|t| t["id"] == task.id.as_str()
            && t["resources"]["ports"] == format!("[{}-{}]", task.ports[0], task.ports[0])));
        let entry = consul
            .iter()
            .find(|e| e["Service"]["ID"] == task.id.as_str())
            .expect("in Consul");
        assert_eq!(entry["Service"]["Port"], task.ports[0]);
        assert_eq!(entry["Service"]["Address"], task.host.as_str());
        assert_eq!(entry["Service"]["Meta"]["mot-deployment-id"], "d-1");
        assert!(entry["Service"]["Tags"]
            .as_array()
            .unwrap()
            .contains(&json!(tag)));
        let check = task_check(entry);
        assert_eq!(check["Type"], "ttl");
        assert_eq!(check["Status"], "critical", "not healthy before the delay");
    }
    // Zone b's tag shows none of them.
    let b = tag.replace("/a", "/b");
    assert!(common::consul::health(common::consul::URL, "web", &b)
        .await
        .is_empty());

    consul_until(&tag, "every instance passing after the delay", |e| {
        e.len() == 3 && e.iter().all(|e| task_check(e)["Status"] == "passing")
    })
    .await;
    assert_eq!(
        marathon.app("/web").await.unwrap().unwrap().tasks_healthy,
        Some(3)
    );

    // Zones are separate: zone b has no app.
    let b = MarathonClient::new(&format!("{base}/b/marathon"), reqwest::Client::new());
    assert!(b.app("/web").await.unwrap().is_none());
}

#[actix_web::test]
async fn failure_switches_take_a_scheduler_down_fail_health_and_kill_tasks() {
    let (base, tag) = start(Duration::ZERO).await;
    let http = reqwest::Client::new();
    let marathon = MarathonClient::new(&format!("{base}/a/marathon"), http.clone());
    marathon.put_app(&app(2)).await.unwrap();
    consul_until(&tag, "two passing instances", |e| {
        e.len() == 2 && e.iter().all(|e| task_check(e)["Status"] == "passing")
    })
    .await;

    http.post(format!("{base}/a/_sim/apps/web/health/failing"))
        .send()
        .await
        .unwrap();
    consul_until(&tag, "both instances critical", |e| {
        e.len() == 2 && e.iter().all(|e| task_check(e)["Status"] == "critical")
    })
    .await;
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
    let ids: std::collections::BTreeSet<String> =
        after.tasks.iter().map(|t| t.id.clone()).collect();
    consul_until(
        &tag,
        "the victim deregistered, its replacement registered",
        |e| {
            e.iter()
                .map(|e| e["Service"]["ID"].as_str().unwrap().to_owned())
                .collect::<std::collections::BTreeSet<_>>()
                == ids
        },
    )
    .await;

    // A deleted app's instances leave Consul.
    let deleted = http
        .delete(format!("{base}/a/marathon/v2/apps/web"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 200);
    consul_until(&tag, "no instance left", |e| e.is_empty()).await;

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
