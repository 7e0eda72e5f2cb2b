//! The localizer, mot's own mirror, carrying the seed's routes between real clusters: central ->
//! pseudo-central for a non-production region's launch topic, and region -> central with the
//! suffix. Key, value, headers and timestamp arrive unchanged.

mod common;

use std::path::Path;
use std::time::Duration;

use actix::Actor;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};

use mot::actors::counters::Registry;
use mot::actors::supervisor::{AgentSpec, Backoff, RegionSupervisor, Shutdown};
use mot::actors::LOCALIZER;
use mot::config::Config;
use mot::topics::clients::{self, base_config};
use mot::topics::names::ClusterName;
use mot::topics::topology::Topology;

/// A non-production region of a unique name homed on test-us-east-1, receiving central topics
/// through stage-us-east-1, as test-us-east-1 does in the seed.
fn topology(region: &str) -> Topology {
    let dev = std::fs::read_to_string(common::repo_path("dev/mot.toml")).unwrap();
    let text = dev.replace(
        "name = \"test-us-east-1\"\ncluster",
        &format!("name = \"{region}\"\ncluster"),
    );
    let config = Config::from_toml(Path::new("localizer-test.toml"), &text).unwrap();
    Topology::checked(&config).unwrap()
}

fn cluster(topology: &Topology, name: &str) -> rdkafka::ClientConfig {
    base_config(
        topology
            .config()
            .cluster(&ClusterName::parse(name).unwrap())
            .unwrap(),
    )
}

async fn send(topology: &Topology, cluster_name: &str, topic: &str, key: &str, timestamp: i64) {
    let producer: FutureProducer = cluster(topology, cluster_name).create().unwrap();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "traceparent",
            value: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        })
        .insert(Header {
            key: "mot-event-type",
            value: Some("LaunchRequest.requested"),
        });
    producer
        .send(
            FutureRecord::to(topic)
                .key(key)
                .payload("{\"hello\":1}")
                .headers(headers)
                .timestamp(timestamp),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// Waits for the record with `key` on `topic` of `cluster_name`; returns its value, headers and
/// timestamp.
async fn arrival(
    topology: &Topology,
    cluster_name: &str,
    topic: &str,
    key: &str,
) -> (Vec<u8>, Vec<(String, String)>, Option<i64>) {
    let consumer: StreamConsumer = cluster(topology, cluster_name)
        .set("group.id", common::unique("localizer-test"))
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in metadata.topics()[0].partitions() {
        assignment
            .add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let m = consumer.recv().await.unwrap();
            if m.key() == Some(key.as_bytes()) {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                return (
                    m.payload().unwrap_or_default().to_vec(),
                    headers,
                    m.timestamp().to_millis(),
                );
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{key} did not arrive on {cluster_name}/{topic}"))
}

#[actix_web::test]
async fn localizers_carry_the_seed_routes_keeping_key_headers_and_timestamp() {
    common::init_tracing();
    let region = format!("test-t{}", common::unique("").replace('_', ""));
    let topology = topology(&region);
    for c in &topology.config().clusters {
        let admin = topology.cluster_admin(&c.name).unwrap();
        clients::ensure_topics(&topology, &admin).await.unwrap();
    }
    let routes: Vec<_> = topology
        .routes()
        .into_iter()
        .filter(|r| r.region.as_str() == region)
        .collect();
    assert_eq!(
        routes.len(),
        5,
        "launch and traffic to stage, three topics to central"
    );
    let specs = routes
        .iter()
        .map(|route| AgentSpec {
            entry: LOCALIZER,
            name: format!("Localizer[{} -> {}]", route.topic, route.to),
            home: topology.localizer_home(route),
            route: Some(route.clone()),
        })
        .collect();
    let supervisor = RegionSupervisor::new(
        topology.clone(),
        region.parse().unwrap(),
        specs,
        Registry::default(),
        Backoff::default(),
    )
    .start();

    let launch = format!("mot-deployment-launch-events-{region}");
    let launch_key = common::unique("deployment");
    send(
        &topology,
        "production-us-east-1",
        &launch,
        &launch_key,
        1_700_000_000_123,
    )
    .await;
    let (value, headers, timestamp) =
        arrival(&topology, "stage-us-east-1", &launch, &launch_key).await;
    assert_eq!(value, b"{\"hello\":1}");
    assert_eq!(timestamp, Some(1_700_000_000_123));
    assert!(headers.contains(&(
        "traceparent".into(),
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()
    )));
    assert!(headers.contains(&("mot-event-type".into(), "LaunchRequest.requested".into())));

    let complete_key = common::unique("complete");
    send(
        &topology,
        "test-us-east-1",
        "mot-deployment-complete-events",
        &complete_key,
        1_700_000_000_456,
    )
    .await;
    let suffixed = format!("mot-deployment-complete-events.{region}");
    let (_, headers, timestamp) =
        arrival(&topology, "production-us-east-1", &suffixed, &complete_key).await;
    assert_eq!(timestamp, Some(1_700_000_000_456));
    assert_eq!(headers.len(), 2);

    supervisor.send(Shutdown).await.unwrap();
}
