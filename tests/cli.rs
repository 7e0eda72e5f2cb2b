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
    let (file, port) = migrated_dev_config();
    let mut child = Command::new(common::mot_bin())
        .args(["run", "--config"])
        .arg(file.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/healthz");
    let client = common::api_client().build().unwrap();
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

/// The dev topology on a free API port and a fresh keyspace, migrated.
fn migrated_dev_config() -> (tempfile::NamedTempFile, u16) {
    let port = common::free_port();
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
    (file, port)
}

/// Under systemd (`Type=notify`, `WatchdogSec=`), `mot run` says READY=1 once it serves, pings
/// the watchdog while its supervisors answer, and says STOPPING=1 on SIGTERM.
#[tokio::test]
async fn run_speaks_the_systemd_notify_protocol() {
    let (file, _) = migrated_dev_config();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut child = Command::new(common::mot_bin())
        .args(["run", "--config"])
        .arg(file.path())
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "1000000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let receive_until = move |socket: std::os::unix::net::UnixDatagram, wanted: &'static str| {
        tokio::task::spawn_blocking(move || {
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            loop {
                let n = socket
                    .recv(&mut buf)
                    .expect("a notification before the timeout");
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = message.lines().any(|l| l == wanted);
                seen.push(message);
                if done {
                    return (socket, seen);
                }
            }
        })
    };
    let (socket, seen) = receive_until(socket, "READY=1").await.unwrap();
    assert!(
        seen.iter().all(|m| !m.contains("WATCHDOG=1")),
        "no watchdog ping before READY: {seen:?}"
    );
    let (socket, _) = receive_until(socket, "WATCHDOG=1").await.unwrap();
    let (socket, _) = receive_until(socket, "WATCHDOG=1").await.unwrap();
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    receive_until(socket, "STOPPING=1").await.unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// `mot run` reloads its topology on SIGHUP: a new region's agents start, a removed region's
/// stop, an invalid file is refused and the running topology kept. Seen through `/metrics`.
#[tokio::test]
async fn sighup_reloads_the_topology_and_refuses_an_invalid_file() {
    let port = common::free_port();
    let keyspace = common::unique("mot_hup");
    let (a, b) = (common::unique_region(), common::unique_region());
    let config_for = |regions: &[(&str, &str)]| {
        common::topology_toml(regions, "mot")
            .replace("keyspace = \"mot\"", &format!("keyspace = \"{keyspace}\""))
            + &format!("\n[web]\nlisten = \"127.0.0.1:{port}\"\n")
    };
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), config_for(&[(&a, "production-us-west-2")])).unwrap();
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
    let pid = child.id().to_string();
    let client = reqwest::Client::new();
    let metrics = || {
        let client = client.clone();
        async move {
            match client
                .get(format!("http://127.0.0.1:{port}/metrics"))
                .send()
                .await
            {
                Ok(resp) => resp.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            }
        }
    };
    let has_region = |text: &str, region: &str| text.contains(&format!("region=\"{region}\""));
    let wait_for = |what: &'static str, check: Box<dyn Fn(&str) -> bool>| async move {
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            let text = metrics().await;
            if check(&text) {
                return text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for: {what}\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let hup = || {
        assert!(Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success())
    };

    let (a1, a2) = (a.clone(), a.clone());
    wait_for("region a's agents", Box::new(move |t| has_region(t, &a1))).await;

    std::fs::write(
        file.path(),
        config_for(&[(&a, "production-us-west-2"), (&b, "test-us-east-1")]),
    )
    .unwrap();
    hup();
    let (b1, b2) = (b.clone(), b.clone());
    wait_for(
        "region b's agents after the reload",
        Box::new(move |t| has_region(t, &b1)),
    )
    .await;

    std::fs::write(file.path(), config_for(&[(&b, "test-us-east-1")])).unwrap();
    hup();
    wait_for(
        "region a's agents gone",
        Box::new(move |t| !t.is_empty() && !has_region(t, &a2) && has_region(t, &b2)),
    )
    .await;

    std::fs::write(file.path(), "this is [not a topology").unwrap();
    hup();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "an invalid file does not stop mot"
    );
    let text = metrics().await;
    assert!(
        has_region(&text, &b),
        "the running topology is kept:\n{text}"
    );

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
