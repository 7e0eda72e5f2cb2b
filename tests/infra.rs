//! The local hybrid cloud: real, separate Kafka clusters per datacenter.

mod common;

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};

use mot::config::Config;
use mot::topics::clients::base_config as client_config;
use mot::topics::names::ClusterName;

fn cluster(config: &Config, name: &str) -> rdkafka::ClientConfig {
    client_config(config.cluster(&ClusterName::parse(name).unwrap()).unwrap())
}

async fn create_topic(
    client: &rdkafka::ClientConfig,
    topic: &str,
) -> AdminClient<rdkafka::client::DefaultClientContext> {
    let admin: AdminClient<_> = client.create().unwrap();
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    for result in results {
        result.unwrap();
    }
    admin
}

#[tokio::test]
async fn record_produced_to_one_cluster_is_consumed_there_and_not_elsewhere() {
    let config = common::dev_config();
    let topic = common::unique("mot-infra-test").replace('_', "-");
    let central = cluster(&config, "production-us-east-1");
    let test_region = cluster(&config, "test-us-east-1");
    let central_admin = create_topic(&central, &topic).await;
    // The same topic name on a second cluster: a separate log, not a view of the first.
    let region_admin = create_topic(&test_region, &topic).await;

    let producer: FutureProducer = central.clone().set("acks", "all").create().unwrap();
    producer
        .send(
            FutureRecord::to(&topic)
                .key("deployment-1")
                .payload("hello central"),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();

    let consumer: StreamConsumer = central
        .clone()
        .set("group.id", common::unique("infra-test"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut partitions = TopicPartitionList::new();
    partitions
        .add_partition_offset(&topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&partitions).unwrap();
    let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
        .await
        .expect("the record arrives")
        .unwrap();
    assert_eq!(message.key(), Some(&b"deployment-1"[..]));
    assert_eq!(message.payload(), Some(&b"hello central"[..]));

    let elsewhere: StreamConsumer = test_region
        .clone()
        .set("group.id", common::unique("infra-test"))
        .create()
        .unwrap();
    let (low, high) = elsewhere
        .fetch_watermarks(&topic, 0, Duration::from_secs(30))
        .unwrap();
    assert_eq!(
        (low, high),
        (0, 0),
        "test-us-east-1 must not see central's record"
    );
    let (_, central_high) = consumer
        .fetch_watermarks(&topic, 0, Duration::from_secs(30))
        .unwrap();
    assert_eq!(central_high, 1);

    for admin in [central_admin, region_admin] {
        admin
            .delete_topics(&[&topic], &AdminOptions::new())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn every_cluster_of_the_dev_topology_answers_as_its_own_cluster() {
    let config = common::dev_config();
    let mut ids = std::collections::BTreeSet::new();
    for c in &config.clusters {
        let consumer: rdkafka::consumer::BaseConsumer = client_config(c).create().unwrap();
        let metadata = consumer
            .fetch_metadata(None, Duration::from_secs(30))
            .unwrap();
        assert_eq!(
            metadata.brokers().len(),
            1,
            "{} is a single-node cluster",
            c.name
        );
        let port = metadata.brokers()[0].port();
        assert_eq!(format!("127.0.0.1:{port}"), c.bootstrap[0]);
        ids.insert(format!("{}:{}", metadata.orig_broker_name(), port));
    }
    assert_eq!(ids.len(), 4);
}
