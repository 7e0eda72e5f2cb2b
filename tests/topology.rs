//! `mot topology` and `mot topics` as an operator uses them, against the running Kafka clusters,
//! and real MirrorMaker 2 carrying a route with the generated properties.

mod common;

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;

use mot::config::Config;
use mot::topics::clients::base_config;
use mot::topics::names::ClusterName;

fn mot(args: &[&str], config: &std::path::Path) -> Output {
    Command::new(common::mot_bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn plan_json_shows_the_seed_flows() {
    let out = mot(
        &["topology", "plan", "--format", "json"],
        &common::repo_path("dev/mot.toml"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let routes = plan["routes"].as_array().unwrap();
    let launch = routes
        .iter()
        .find(|r| r["topic"] == "mot-deployment-launch-events-test-us-east-1")
        .expect("the launch topic of test-us-east-1 is routed");
    assert_eq!(launch["from"], "production-us-east-1");
    assert_eq!(launch["to"], "stage-us-east-1");
    assert_eq!(launch["as"], "mot-deployment-launch-events-test-us-east-1");
    assert_eq!(launch["carrier"], "mot");
    let state = routes
        .iter()
        .find(|r| r["from"] == "test-us-east-1" && r["topic"] == "mot-deployment-state-change")
        .unwrap();
    assert_eq!(state["to"], "production-us-east-1");
    assert_eq!(state["as"], "mot-deployment-state-change.test-us-east-1");

    let agents = plan["agents"].as_array().unwrap();
    let op = |region: &str| {
        agents
            .iter()
            .find(|a| a["agent"] == "DeploymentOperationAgent" && a["region"] == region)
            .unwrap()
    };
    assert_eq!(
        op("test-us-east-1")["reads"][0]["cluster"],
        "stage-us-east-1"
    );
    assert_eq!(
        op("test-us-east-1")["reads"][0]["topic"],
        "mot-deployment-launch-events-test-us-east-1"
    );
    assert_eq!(
        op("production-us-west-2")["reads"][0]["cluster"],
        "production-us-east-1"
    );
}

#[test]
fn plan_table_is_readable() {
    let out = mot(&["topology", "plan"], &common::repo_path("dev/mot.toml"));
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains("ROUTES"));
    assert!(text
        .lines()
        .any(|l| l.contains("mot-deployment-state-change ")
            && l.contains("mot-deployment-state-change.test-us-east-1")
            && l.contains("mot localizer")));
}

#[test]
fn check_refuses_each_rule_with_its_name() {
    let cases = [
        (
            "to = \"stage-us-east-1\"\n",
            "to = \"stage-us-east-1\"\nruns_in = \"production-us-east-1\"\n",
            "rule 1 (never produce to a topic outside your datacenter)",
        ),
        (
            "topics = [\"mot-deployment-complete-events\",",
            "topics = [\"mot-mesos-task-state\", \"mot-deployment-complete-events\",",
            "rule 2 (consume from the local cluster whenever possible)",
        ),
        (
            "from = \"test-us-east-1\"\nto = \"production-us-east-1\"\n",
            "from = \"test-us-east-1\"\nto = \"production-us-east-1\"\nrename = \"identity\"\n",
            "rule 3 (topics consumed from a foreign datacenter carry an identifying suffix)",
        ),
    ];
    for (from, to, rule) in cases {
        let file = common::dev_toml_with(&[(from, to)]);
        let out = mot(&["topology", "check"], file.path());
        assert!(!out.status.success(), "accepted a topology breaking {rule}");
        let err = stderr(&out);
        assert!(err.contains(rule), "{err}");
        assert!(err.contains("fix: "), "{err}");
    }
    let ok = mot(&["topology", "check"], &common::repo_path("dev/mot.toml"));
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("the three rules hold"));
}

/// A topology with one extra production region of a unique name, homed on `home`.
fn topology_with_region(region: &str, home: &str, carrier: &str) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(
        file.path(),
        common::topology_toml(&[(region, home)], carrier),
    )
    .unwrap();
    file
}

fn unique_region() -> String {
    common::unique_region()
}

fn admin(config: &Config, cluster: &str) -> AdminClient<DefaultClientContext> {
    base_config(
        config
            .cluster(&ClusterName::parse(cluster).unwrap())
            .unwrap(),
    )
    .create()
    .unwrap()
}

async fn cleanup_policy(admin: &AdminClient<DefaultClientContext>, topic: &str) -> String {
    let results = admin
        .describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new())
        .await
        .unwrap();
    let resource = results.into_iter().next().unwrap().unwrap();
    resource
        .get("cleanup.policy")
        .unwrap()
        .value
        .clone()
        .unwrap()
}

async fn delete_topics_of(admin: &AdminClient<DefaultClientContext>, region: &str) {
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(30))
        .unwrap();
    let names: Vec<String> = metadata
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .filter(|name| name.contains(region))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    if !refs.is_empty() {
        admin
            .delete_topics(&refs, &AdminOptions::new())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn topics_ensure_creates_what_the_plan_needs_once() {
    let region = unique_region();
    let file = topology_with_region(&region, "production-us-west-2", "mot");
    let first = mot(&["topics", "ensure"], file.path());
    assert!(first.status.success(), "{}", stderr(&first));
    let text = stdout(&first);
    let central_line = text
        .lines()
        .find(|l| l.starts_with("production-us-east-1:"))
        .unwrap();
    for topic in [
        format!("mot-deployment-launch-events-{region}"),
        format!("mot-deployment-state-change.{region}"),
        format!("mot-instance-state-change.{region}"),
    ] {
        assert!(
            central_line.contains(&topic),
            "{topic} not created: {central_line}"
        );
    }
    let again = mot(&["topics", "ensure"], file.path());
    assert!(again.status.success());
    for line in stdout(&again).lines() {
        assert!(
            line.contains(": created 0,"),
            "second run created something: {line}"
        );
    }

    let config = Config::load(file.path()).unwrap();
    let central = admin(&config, "production-us-east-1");
    assert_eq!(
        cleanup_policy(&central, &format!("mot-deployment-state-change.{region}")).await,
        "compact"
    );
    assert_eq!(
        cleanup_policy(&central, &format!("mot-deployment-launch-events-{region}")).await,
        "delete"
    );
    let west = admin(&config, "production-us-west-2");
    assert_eq!(
        cleanup_policy(&west, "mot-deployment-state-change").await,
        "compact"
    );
    assert_eq!(cleanup_policy(&west, "mot-dead-letters").await, "delete");
    delete_topics_of(&central, &region).await;
}

/// Kills MirrorMaker when the test ends, passed or not.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn mirrormaker2_with_generated_properties_delivers_under_the_suffixed_name() {
    let region = unique_region();
    let file = topology_with_region(&region, "test-us-east-1", "mirrormaker2");
    let ensure = mot(&["topics", "ensure"], file.path());
    assert!(ensure.status.success(), "{}", stderr(&ensure));
    let out = mot(&["topology", "mm2"], file.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let properties = stdout(&out);
    assert!(properties.contains("IdentityReplicationPolicy"));
    assert!(properties.contains(&format!("replacement = $1.{region}")));
    // test-us-east-1 is reached over SASL_SSL: the properties carry its protocol, CA and user,
    // and leave the password for the operator to put in, as they are told.
    let source = common::dev_config()
        .cluster(&"test-us-east-1".parse().unwrap())
        .unwrap()
        .clone();
    let sasl = source.security.as_ref().unwrap().sasl.as_ref().unwrap();
    assert!(properties.contains("test-us-east-1.security.protocol = SASL_SSL"));
    assert!(!properties.contains(sasl.password()), "{properties}");
    let properties = properties.replace("<password>", sasl.password());
    let dir = tempfile::tempdir().unwrap();
    let props = dir.path().join("mm2.properties");
    std::fs::write(&props, &properties).unwrap();

    let infra =
        std::env::var("MOT_INFRA_DIR").map_or_else(|_| common::repo_path(".mot"), Into::into);
    let java = std::env::var("MOT_JAVA_HOME")
        .unwrap_or_else(|_| "/usr/lib/jvm/java-17-openjdk-amd64".into());
    let log = std::fs::File::create(dir.path().join("mm2.log")).unwrap();
    let _mm2 = KillOnDrop(
        Command::new(format!("{java}/bin/java"))
            .args(["-Xmx256m", "-XX:+UseSerialGC", "-cp"])
            .arg(infra.join("lib/kafka/*"))
            .arg("org.apache.kafka.connect.mirror.MirrorMaker")
            .arg(&props)
            .args(["--clusters", "production-us-east-1"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("java runs MirrorMaker 2 (dev/infra up assembles its jars)"),
    );

    let config = Config::load(file.path()).unwrap();
    let source = base_config(
        config
            .cluster(&ClusterName::parse("test-us-east-1").unwrap())
            .unwrap(),
    );
    let producer: FutureProducer = source.clone().set("acks", "all").create().unwrap();
    let key = common::unique("mm2-key");
    producer
        .send(
            FutureRecord::to("mot-deployment-state-change")
                .key(&key)
                .payload("{\"state\":\"healthy\"}"),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();

    let target = format!("mot-deployment-state-change.{region}");
    let central = base_config(
        config
            .cluster(&ClusterName::parse("production-us-east-1").unwrap())
            .unwrap(),
    );
    let consumer: StreamConsumer = central
        .clone()
        .set("group.id", common::unique("mm2-test"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut partitions = TopicPartitionList::new();
    for p in 0..2 {
        partitions
            .add_partition_offset(&target, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&partitions).unwrap();
    let arrived = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let message = consumer.recv().await.unwrap();
            if message.key() == Some(key.as_bytes()) {
                return message.payload().map(|p| p.to_vec());
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        let log = std::fs::read_to_string(dir.path().join("mm2.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        panic!(
            "the record did not arrive as {target}; MirrorMaker's log ends:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    });
    assert_eq!(arrived.as_deref(), Some(&b"{\"state\":\"healthy\"}"[..]));

    let central_admin = admin(&config, "production-us-east-1");
    delete_topics_of(&central_admin, &region).await;
}

#[tokio::test]
async fn run_ensures_its_own_topics_at_start() {
    let region = unique_region();
    let file = topology_with_region(&region, "production-us-west-2", "mot");
    let port = common::free_port();
    let mut text = std::fs::read_to_string(file.path()).unwrap();
    text.push_str(&format!("\n[web]\nlisten = \"127.0.0.1:{port}\"\n"));
    let text = text.replace(
        "keyspace = \"mot\"",
        &format!("keyspace = \"{}\"", common::unique("mot_run")),
    );
    std::fs::write(file.path(), text).unwrap();
    let migrated = mot(&["migrate"], file.path());
    assert!(migrated.status.success(), "{}", stderr(&migrated));

    let _daemon = KillOnDrop(
        Command::new(common::mot_bin())
            .args(["run", "--config"])
            .arg(file.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..1200 {
        if client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "mot run answers /healthz");

    let config = Config::load(file.path()).unwrap();
    let central = admin(&config, "production-us-east-1");
    let metadata = central
        .inner()
        .fetch_metadata(None, Duration::from_secs(30))
        .unwrap();
    let names: Vec<&str> = metadata.topics().iter().map(|t| t.name()).collect();
    for topic in [
        format!("mot-deployment-launch-events-{region}"),
        format!("mot-traffic-events-{region}"),
        format!("mot-deployment-complete-events.{region}"),
    ] {
        assert!(
            names.contains(&topic.as_str()),
            "{topic} was not created at start"
        );
    }
    delete_topics_of(&central, &region).await;
}
