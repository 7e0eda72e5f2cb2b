//! The `mot` command as a person uses it: help, config errors, and the daemon's lifetime.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn help_lists_the_subcommands() {
    let out = Command::new(common::mot_bin())
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in ["run", "migrate", "topology"] {
        assert!(text.contains(sub), "{sub} missing from:\n{text}");
    }
}

#[test]
fn a_bad_topology_file_is_refused_naming_the_file_and_field() {
    let file = common::dev_toml_with(&[(
        "pseudo_central = \"stage-us-east-1\"",
        "pseudo_central = \"stage-eu-west-9\"",
    )]);
    let out = Command::new(common::mot_bin())
        .args(["topology", "check", "--config"])
        .arg(file.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&file.path().display().to_string()),
        "{stderr}"
    );
    assert!(
        stderr.contains("regions[1].pseudo_central: unknown cluster `stage-eu-west-9`"),
        "{stderr}"
    );
}

#[test]
fn the_dev_topology_passes_the_check() {
    let out = Command::new(common::mot_bin())
        .args(["topology", "check", "--config"])
        .arg(common::repo_path("dev/mot.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn run_serves_healthz_and_exits_zero_on_sigterm() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let keyspace = common::unique("mot_cli");
    let file = common::dev_toml_with(&[
        (
            "listen = \"127.0.0.1:8080\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        ),
        ("keyspace = \"mot\"", &format!("keyspace = \"{keyspace}\"")),
    ]);
    let migrated = Command::new(common::mot_bin())
        .args(["migrate", "--config"])
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    let mut child = Command::new(common::mot_bin())
        .args(["run", "--config"])
        .arg(file.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/healthz");
    let client = reqwest::Client::new();
    let mut answer = None;
    // Start-up ensures topics on four clusters, which a freshly started broker takes a while for.
    for _ in 0..1200 {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("mot run exited early with {status}");
        }
        if let Ok(resp) = client.get(&url).send().await {
            answer = Some((
                resp.status(),
                resp.json::<serde_json::Value>().await.unwrap(),
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = answer.expect("mot run answers /healthz");
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
