//! The dev servers are secured as production ones are: test-us-east-1's Kafka cluster takes only
//! SASL_SSL (SCRAM-SHA-512) logins, Cassandra only password logins over TLS from clients with a
//! certificate its CA signed. What each refuses,
//! and the clear errors mot gives when its own credentials are wrong. (That whole flows work over
//! them is every flow test's: their test region lives on that cluster, and every test reads and
//! writes that Cassandra.)

mod common;

use std::process::Stdio;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use mot::config::{CassandraTls, ClusterConfig, Credentials, Secret};
use mot::topics::clients::base_config;
use mot::topics::names::ClusterName;

use common::{readyz_check, readyz_until};

const SECURED_CLUSTER: &str = "test-us-east-1";

fn secured_cluster() -> ClusterConfig {
    let config = common::dev_config();
    let cluster = config
        .cluster(&ClusterName::parse(SECURED_CLUSTER).unwrap())
        .unwrap()
        .clone();
    assert!(
        cluster.security.is_some(),
        "dev/mot.toml secures {SECURED_CLUSTER}"
    );
    cluster
}

/// Whether a client of `cluster` gets the brokers' metadata (librdkafka's metadata call blocks).
async fn metadata(cluster: &ClusterConfig) -> Result<usize, String> {
    let client: BaseConsumer = base_config(cluster).create().map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(move || {
        client
            .fetch_metadata(None, Duration::from_secs(10))
            .map(|m| m.brokers().len())
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap()
}

async fn cassandra_refusal(config: &mot::config::CassandraConfig) -> String {
    match mot::store::connect(config).await {
        Ok(_) => panic!("cassandra took {config:?}"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test]
async fn the_sasl_ssl_cluster_takes_its_users_password_only() {
    let cluster = secured_cluster();
    assert_eq!(metadata(&cluster).await, Ok(1));

    let mut plaintext = cluster.clone();
    plaintext.security = None;
    assert!(metadata(&plaintext).await.is_err(), "plaintext is refused");

    let mut wrong = cluster.clone();
    let security = wrong.security.as_mut().unwrap();
    security.sasl = Some(Credentials::new("mot", Secret::new("not-the-password")));
    assert!(
        metadata(&wrong).await.is_err(),
        "a wrong password is refused"
    );

    let mut untrusted = cluster.clone();
    let pki = common::TestPki::new();
    untrusted.security.as_mut().unwrap().ca_file = Some(pki.ca.clone());
    assert!(
        metadata(&untrusted).await.is_err(),
        "a broker whose certificate the CA did not sign is not trusted"
    );
}

#[tokio::test]
async fn cassandra_takes_password_logins_over_tls_only() {
    let dev = common::dev_config().cassandra;
    let session = mot::store::connect(&dev).await.unwrap();
    session
        .query_unpaged("SELECT release_version FROM system.local", ())
        .await
        .unwrap();

    let mut plaintext = dev.clone();
    plaintext.tls = None;
    let refused = cassandra_refusal(&plaintext).await;
    assert!(
        refused.contains("cannot connect to cassandra at 127.0.0.1:9042"),
        "{refused}"
    );

    let mut anonymous = dev.clone();
    anonymous.auth = None;
    let refused = cassandra_refusal(&anonymous).await;
    assert!(refused.to_lowercase().contains("authent"), "{refused}");

    let mut wrong = dev.clone();
    wrong.auth = Some(Credentials::new(
        "cassandra",
        Secret::new("not-the-password"),
    ));
    let refused = cassandra_refusal(&wrong).await;
    assert!(refused.contains("as `cassandra`"), "{refused}");
    assert!(refused.contains("incorrect"), "{refused}");

    let mut no_certificate = dev.clone();
    let tls = no_certificate.tls.as_mut().unwrap();
    assert!(
        tls.cert_file.is_some(),
        "dev/mot.toml presents a client certificate"
    );
    (tls.cert_file, tls.key_file) = (None, None);
    // Refused at the handshake: OpenSSL's "certificate required" alert, or the connection the
    // node closed, whichever the driver reads first.
    let refused = cassandra_refusal(&no_certificate).await;
    assert!(
        refused.contains("cannot connect to cassandra at 127.0.0.1:9042"),
        "{refused}"
    );

    let pki = common::TestPki::new();
    let mut untrusted = dev.clone();
    untrusted.tls = Some(CassandraTls {
        ca_file: Some(pki.ca.clone()),
        ..dev.tls.clone().unwrap()
    });
    let refused = cassandra_refusal(&untrusted).await;
    assert!(refused.contains("certificate verify failed"), "{refused}");
}

/// `text` written to a `.toml` file of the test's own.
fn config_file(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

fn wrong_password_file() -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "not-the-password\n").unwrap();
    file
}

#[tokio::test]
async fn a_wrong_kafka_password_is_named_by_readyz_with_its_cluster() {
    let region = common::unique_region();
    let port = common::free_port();
    let wrong = wrong_password_file();
    let text = format!(
        "[node]\nroles = [\"regional\"]\n\n[web]\nlisten = \"127.0.0.1:{port}\"\n\n{}",
        common::topology_toml(&[(&region, SECURED_CLUSTER)], "mot").replace(
            "password_file = \".mot/auth/kafka-test-us-east-1.password\"",
            &format!("password_file = \"{}\"", wrong.path().display()),
        )
    );
    assert!(text.contains(&wrong.path().display().to_string()));
    let file = config_file(&text);
    let mut child = common::spawn_mot(file.path());
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}");
    common::wait_healthz(&http, &url, &mut child).await;

    let check = format!("kafka {SECURED_CLUSTER}");
    let down = readyz_until(
        &http,
        &url,
        60,
        "the cluster's refused login named",
        |s, b| {
            s == 503
                && readyz_check(b, &check).is_some_and(|c| {
                    c["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("Authentication failed"))
                })
        },
    )
    .await;
    assert_eq!(down["ready"], false);
    let central = readyz_check(&down, "kafka production-us-east-1").unwrap();
    assert_eq!(
        central["ready"], true,
        "only the refusing cluster is named: {down}"
    );
    common::sigterm_and_wait(child).await;
}

#[tokio::test]
async fn a_wrong_cassandra_password_stops_mot_run_at_start_saying_so() {
    let port = common::free_port();
    let wrong = wrong_password_file();
    let text = format!(
        "[node]\nroles = [\"service\"]\n\n[web]\nlisten = \"127.0.0.1:{port}\"\n\n{}",
        common::topology_toml(&[], "mot").replace(
            "password_file = \".mot/auth/cassandra.password\"",
            &format!("password_file = \"{}\"", wrong.path().display()),
        )
    );
    assert!(text.contains(&wrong.path().display().to_string()));
    let file = config_file(&text);
    let logs = tempfile::NamedTempFile::new().unwrap();
    let mut child = common::spawn_mot_logging_to(file.path(), Stdio::from(logs.reopen().unwrap()));
    let status = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || child.wait()),
    )
    .await
    .expect("mot run exits")
    .unwrap()
    .unwrap();
    let stderr = std::fs::read_to_string(logs.path()).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("cannot start the api"), "{stderr}");
    assert!(
        stderr.contains("cannot connect to cassandra at 127.0.0.1:9042 as `cassandra`"),
        "{stderr}"
    );
    assert!(stderr.contains("incorrect"), "{stderr}");
    assert!(!stderr.contains("not-the-password"), "{stderr}");
}

#[test]
fn a_password_file_that_is_missing_is_a_config_error_naming_the_field() {
    let text = common::topology_toml(&[], "mot").replace(
        "password_file = \".mot/auth/cassandra.password\"",
        "password_file = \"/nonexistent/cassandra.password\"",
    );
    let error = mot::config::Config::from_toml(std::path::Path::new("t.toml"), &text)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("cassandra.auth.password_file: cannot read /nonexistent/cassandra.password"),
        "{error}"
    );
}
