//! A `secret_env` value through a whole flow, on the real servers: it reaches each zone's
//! scheduler intact, and appears in clear in no GET answer, no Kafka record (every topic the
//! flow wrote, on every cluster), no Cassandra column (every table of the flow's keyspace) and
//! no log line (the JSON logs of this whole test process).

mod common;

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::Message;
use serde_json::{json, Value};

use common::flow::{self, Flow};

/// Every log line of this process, as JSON.
static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// JSON logs with every span's fields, mot at debug: what an operator's log pipeline would keep.
fn capture_logs() {
    tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(true)
        .with_env_filter("info,mot=debug,librdkafka=warn")
        .with_writer(|| Capture)
        .try_init()
        .expect("the first subscriber of this test process");
}

/// Every record value, key and header on the topics of `cluster` whose name contains one of
/// `marks` (the flow's regions) or is a central topic every flow shares, as text.
async fn records_on(cluster: &mot::config::ClusterConfig, marks: &[&str]) -> Vec<String> {
    let consumer: rdkafka::consumer::BaseConsumer = {
        let mut config = mot::topics::clients::base_config(cluster);
        config
            .set("group.id", common::unique("secrets-scan"))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest");
        config.create().unwrap()
    };
    // The topics of no region: one per cluster, every flow's records in them.
    let shared: Vec<String> = mot::topics::catalog::ALL
        .iter()
        .map(|spec| spec.base().as_str().to_owned())
        .collect();
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(30))
        .unwrap();
    let mut assignment = rdkafka::TopicPartitionList::new();
    let mut ends = std::collections::BTreeMap::new();
    for topic in metadata.topics() {
        let name = topic.name();
        if !(marks.iter().any(|m| name.contains(m)) || shared.iter().any(|s| s == name)) {
            continue;
        }
        for p in topic.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(name, p.id(), Duration::from_secs(10))
                .unwrap();
            if high > low {
                assignment
                    .add_partition_offset(name, p.id(), rdkafka::Offset::Beginning)
                    .unwrap();
                ends.insert((name.to_owned(), p.id()), high);
            }
        }
    }
    consumer.assign(&assignment).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !ends.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "did not read {ends:?} to the end"
        );
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = message.unwrap();
        let mut text = String::new();
        text.push_str(&String::from_utf8_lossy(m.key().unwrap_or_default()));
        text.push_str(&String::from_utf8_lossy(m.payload().unwrap_or_default()));
        if let Some(headers) = m.headers() {
            use rdkafka::message::Headers;
            for h in headers.iter() {
                text.push_str(h.key);
                text.push_str(&String::from_utf8_lossy(h.value.unwrap_or_default()));
            }
        }
        out.push(text);
        let key = (m.topic().to_owned(), m.partition());
        if ends.get(&key).is_some_and(|end| m.offset() + 1 >= *end) {
            ends.remove(&key);
        }
    }
    out
}

/// Every row of every table of `keyspace`, as text.
async fn rows_of(config: &mot::config::CassandraConfig) -> Vec<String> {
    let session = mot::store::connect(config).await.unwrap();
    let tables = session
        .query_unpaged(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?",
            (&config.keyspace,),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    let mut out = Vec::new();
    for row in tables.rows::<(String,)>().unwrap() {
        let (table,) = row.unwrap();
        let rows = session
            .query_unpaged(format!("SELECT * FROM {}.{table}", config.keyspace), ())
            .await
            .unwrap()
            .into_rows_result()
            .unwrap();
        for row in rows.rows::<scylla::value::Row>().unwrap() {
            out.push(format!("{table}: {:?}", row.unwrap()));
        }
    }
    out
}

async fn get_as(flow: &Flow, token: &str, path: &str) -> (u16, String) {
    let response = common::client_as(token)
        .build()
        .unwrap()
        .get(format!("{}{path}", flow.url))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[actix_web::test]
async fn a_secret_reaches_the_scheduler_and_nothing_else_in_clear() {
    capture_logs();
    let flow = flow::start().await;
    let secret = format!("hunter2-{}", common::unique("s").replace('_', "x"));
    let (test, prod) = (flow.test_region.clone(), flow.prod_region.clone());
    let id = flow
        .post_with(
            "1.0.0",
            json!([{"region": test}, {"region": prod}]),
            json!({"env": {"LOG_LEVEL": "info"}, "secret_env": {"DB_PASSWORD": secret}}),
        )
        .await;
    flow.deployment_until(&id, "healthy", |v| v["status"] == "healthy")
        .await;

    // The schedulers received it intact, beside the plain value.
    for region in [&test, &prod] {
        for zone in ["a", "b", "c"] {
            let app = flow.app(region, zone).await;
            assert_eq!(
                app["app"]["env"]["DB_PASSWORD"],
                secret.as_str(),
                "{region}/{zone}"
            );
            assert_eq!(app["app"]["env"]["LOG_LEVEL"], "info");
        }
    }

    // No GET shows it; the deployment says it is there, redacted; env values only to owners.
    let tokens = common::dev_tokens();
    let at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    for token in [&tokens.admin, &tokens.viewer] {
        for path in [
            format!("/deployments/{id}"),
            format!("/deployments/{id}/instances"),
            format!("/deployments/{id}/events"),
            "/deployments".to_owned(),
            "/apps/checkout-web/deployments".to_owned(),
            format!("/apps/checkout-web/history?at={at}"),
        ] {
            let (status, body) = get_as(&flow, token, &path).await;
            assert_eq!(status, 200, "{path}: {body}");
            assert!(!body.contains(&secret), "{path} shows the secret: {body}");
        }
    }
    let (_, admin_view) = get_as(&flow, &tokens.admin, &format!("/deployments/{id}")).await;
    let admin_view: Value = serde_json::from_str(&admin_view).unwrap();
    let spec = &admin_view["request"]["spec"];
    assert_eq!(spec["secret_env"], json!({"DB_PASSWORD": "<redacted>"}));
    assert_eq!(spec["env"], json!({"LOG_LEVEL": "info"}));
    let (_, viewer_view) = get_as(&flow, &tokens.viewer, &format!("/deployments/{id}")).await;
    let viewer_view: Value = serde_json::from_str(&viewer_view).unwrap();
    assert_eq!(
        viewer_view["request"]["spec"]["env"],
        json!({"LOG_LEVEL": "<redacted>"})
    );

    // Not in clear on any topic the flow wrote, on any cluster; sealed on the request log.
    let config = flow.topology.config();
    let marks = [test.as_str(), prod.as_str()];
    let mut sealed_seen = false;
    for cluster in &config.clusters {
        for record in records_on(cluster, &marks).await {
            assert!(
                !record.contains(&secret),
                "{}: a record holds the secret: {record}",
                cluster.name
            );
            sealed_seen |= record.contains(&id) && record.contains("mot:v1:dev-1:");
        }
    }
    assert!(sealed_seen, "the request was logged with its secret sealed");

    // Not in clear in any table; sealed in the deployment's row.
    let rows = rows_of(&config.cassandra).await;
    for row in &rows {
        assert!(!row.contains(&secret), "a row holds the secret: {row}");
    }
    assert!(rows
        .iter()
        .any(|r| r.starts_with("deployments:") && r.contains("mot:v1:dev-1:")));

    // Not in any log line (and the logs are there: the flow was logged).
    let logs = String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned();
    assert!(
        logs.contains("deployment accepted"),
        "the flow's logs were captured"
    );
    assert!(!logs.contains(&secret), "a log line holds the secret");
}
