//! `/readyz` of a `mot run` process without the service role: it checks what that process
//! depends on (its home Kafka clusters, Cassandra, its agents) and names what is not ready.
//!
//! One test, alone in its binary: it closes Cassandra's CQL port for a while
//! (`dev/infra cassandra clients off`), which no other test may see. Test binaries run one
//! after the other.

mod common;

use std::process::{Command, Stdio};

use common::{readyz_check as check, readyz_until, ExtraKafka};

fn cassandra_clients(on: bool) {
    let status = Command::new(common::repo_path("dev/infra"))
        .args(["cassandra", "clients", if on { "on" } else { "off" }])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "dev/infra cassandra clients {on}");
}

/// Reopens Cassandra's CQL port even when the test fails half-way.
struct CassandraBack;

impl Drop for CassandraBack {
    fn drop(&mut self) {
        cassandra_clients(true);
    }
}

#[tokio::test]
async fn readyz_of_a_regional_and_persistence_process_names_what_is_down_and_recovers() {
    let kafka = ExtraKafka::new();
    kafka.start();
    let region = common::unique_region();
    let port = common::free_port();
    let keyspace = common::unique("mot_ready");
    let text = format!(
        "[node]\nroles = [\"regional\", \"persistence\"]\n\n[web]\nlisten = \"127.0.0.1:{port}\"\n\n{}\n\
         [[clusters]]\nname = \"{}\"\nbootstrap = [\"{}\"]\n",
        common::topology_toml(&[(&region, &kafka.name)], "mot")
            .replace("keyspace = \"mot\"", &format!("keyspace = \"{keyspace}\"")),
        kafka.name,
        kafka.bootstrap,
    );
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), &text).unwrap();
    let config = mot::config::Config::load(file.path()).unwrap();
    common::migrated(&config).await;

    let mut child = common::spawn_mot(file.path());
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}");
    common::wait_healthz(&http, &url, &mut child).await;

    // Ready: exactly the clusters this process works in (central for persistence, the region's
    // own), Cassandra, and the agents of both supervisors. No API role, and still /readyz.
    let ready = readyz_until(&http, &url, 120, "ready", |s, _| s == 200).await;
    let mut names: Vec<&str> = ready["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    names.sort();
    let kafka_check = format!("kafka {}", kafka.name);
    let agents_check = format!("agents {region}");
    let central_check = format!("agents {}", config.topology.central);
    let mut expected = vec![
        central_check.as_str(),
        agents_check.as_str(),
        "cassandra",
        kafka_check.as_str(),
        "kafka production-us-east-1",
    ];
    expected.sort();
    assert_eq!(names, expected, "{ready}");
    let posted = http
        .post(format!("{url}/deployments"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        posted.status(),
        404,
        "no API in a process without the service role"
    );

    // The region's cluster stops: not ready, naming it with the reason.
    kafka.stop();
    let down = readyz_until(&http, &url, 60, "the region's cluster named", |s, b| {
        s == 503 && check(b, &kafka_check).is_some_and(|c| c["ready"] == false)
    })
    .await;
    let reason = check(&down, &kafka_check).unwrap()["reason"].clone();
    assert!(reason.as_str().is_some_and(|r| !r.is_empty()), "{down}");
    assert_eq!(down["ready"], false);
    assert_eq!(
        check(&down, "kafka production-us-east-1").unwrap()["ready"],
        true,
        "the central cluster still answers: {down}"
    );
    assert_eq!(check(&down, "cassandra").unwrap()["ready"], true, "{down}");

    // It returns: ready again once the agents have restarted (backoff capped at 30 s).
    kafka.start();
    readyz_until(
        &http,
        &url,
        180,
        "ready after the cluster returns",
        |s, _| s == 200,
    )
    .await;

    // Cassandra stops answering: not ready, naming it; ready again when it answers.
    let back = CassandraBack;
    cassandra_clients(false);
    let down = readyz_until(&http, &url, 60, "cassandra named", |s, b| {
        s == 503 && check(b, "cassandra").is_some_and(|c| c["ready"] == false)
    })
    .await;
    assert!(
        check(&down, "cassandra").unwrap()["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{down}"
    );
    assert_eq!(check(&down, &kafka_check).unwrap()["ready"], true, "{down}");
    drop(back);
    readyz_until(&http, &url, 180, "ready after cassandra returns", |s, _| {
        s == 200
    })
    .await;

    common::sigterm_and_wait(child).await;
}
