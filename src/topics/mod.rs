//! Topic and cluster names, and the Kafka clients built from the topology.
//!
//! Everything that names a topic or points a client at a cluster goes through this module, so the
//! seed's Kafka etiquette can be enforced in one place.

pub mod names;

use rdkafka::ClientConfig;

use crate::config::ClusterConfig;

/// The librdkafka settings shared by every client of `cluster`: its bootstrap servers and the
/// extra client properties (security) the topology gives it.
pub fn client_config(cluster: &ClusterConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", cluster.bootstrap_servers());
    config.set("client.id", format!("mot-{}", cluster.name));
    for (key, value) in &cluster.client {
        config.set(key, value);
    }
    config
}
