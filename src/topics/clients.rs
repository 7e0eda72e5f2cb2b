//! Kafka clients that keep the seed's etiquette by construction.
//!
//! - Rule 1: a [`HomeProducer`] is built only from a [`HomeCluster`], and a `HomeCluster` only by
//!   the [`Topology`] for the datacenter a role runs in (the central one, a region's own, or a
//!   localizer's destination). There is no constructor that takes an arbitrary cluster:
//!
//!   ```compile_fail,E0624
//!   # let config = mot::config::Config::load("dev/mot.toml".as_ref()).unwrap();
//!   // A producer for whatever cluster one likes: no such constructor exists.
//!   let producer = mot::topics::clients::HomeProducer::new(&config.clusters[1]);
//!   ```
//!
//!   ```compile_fail,E0451
//!   # let config = mot::config::Config::load("dev/mot.toml".as_ref()).unwrap();
//!   // Nor can a home be made up: its field is private to this module.
//!   let home = mot::topics::clients::HomeCluster { cluster: config.clusters[1].clone() };
//!   ```
//!
//!   The way that compiles asks the topology for the home of the role:
//!
//!   ```no_run
//!   # let config = mot::config::Config::load("dev/mot.toml".as_ref()).unwrap();
//!   let topology = mot::topics::topology::Topology::new(&config);
//!   let producer = topology.central_home().producer().unwrap();
//!   ```
//!
//! - Rule 2: a consumer of a foreign cluster is a [`ForeignSubscription`], built only by the
//!   topology from a route (a localizer's source) or from a region's central -> regional path.
//! - Rule 3: a foreign subscription holds a [`SuffixedTopic`], which can only be made from a base
//!   name and a region, so it always carries the region's suffix.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use serde::Serialize;

use super::catalog::{self, Flow, TopicSpec};
use super::names::{ClusterName, RegionName, TopicBase, TopicName};
use super::topology::{PlannedRoute, Topology};
use crate::config::{ClusterConfig, KafkaConfig, RegionConfig, Role};

/// The cluster of the datacenter a role runs in: the only cluster it may produce to.
#[derive(Debug, Clone)]
pub struct HomeCluster {
    cluster: ClusterConfig,
}

/// A producer to the home cluster: idempotent, `acks=all`.
#[derive(Clone)]
pub struct HomeProducer {
    /// The home cluster's name, for logs and metrics.
    pub cluster: ClusterName,
    /// The rdkafka producer.
    pub inner: FutureProducer,
}

impl HomeProducer {
    fn new(cluster: &ClusterConfig, message_timeout: Duration) -> Result<Self, KafkaError> {
        let inner = base_config(cluster)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            // A delivery that cannot complete fails the agent, whose supervisor restarts it;
            // nothing waits for minutes on a cluster that is gone.
            .set(
                "message.timeout.ms",
                message_timeout.as_millis().to_string(),
            )
            .create()?;
        Ok(Self {
            cluster: cluster.name.clone(),
            inner,
        })
    }
}

impl HomeProducer {
    /// Waits (up to 10 s) until every record handed to the producer is acknowledged: a blocking
    /// call ([`HomeProducer::flush`] makes it on a blocking thread).
    pub fn flush_blocking(&self) {
        use rdkafka::producer::Producer;
        if let Err(e) = self.inner.flush(Duration::from_secs(10)) {
            tracing::warn!(cluster = %self.cluster, error = %e, "producer flush incomplete");
        }
    }
}

/// The producers of a process, one per home cluster, shared by all its agents there. A producer
/// is thread-safe, and each one costs librdkafka threads and broker connections, plus a polling
/// thread (rust-rdkafka 0.39) that spins through the last millisecond of every 100 ms poll; one
/// per agent made an idle persistence layer of 10 regions burn half a core (`dev/bench`, cost).
/// A producer in a fatal state is replaced on the next request. Cloning shares them.
#[derive(Clone, Default)]
pub struct SharedProducers(Arc<dashmap::DashMap<String, HomeProducer>>);

impl SharedProducers {
    /// The shared producer of `home` (created on first use).
    pub fn get(&self, home: &HomeCluster) -> Result<HomeProducer, KafkaError> {
        use rdkafka::producer::Producer;
        let key = home.identity();
        if let Some(producer) = self.0.get(&key) {
            if producer.inner.client().fatal_error().is_none() {
                return Ok(producer.clone());
            }
        }
        let producer = home.producer()?;
        self.0.insert(key, producer.clone());
        Ok(producer)
    }
}

impl std::fmt::Debug for SharedProducers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedProducers({} open)", self.0.len())
    }
}

impl HomeCluster {
    /// The cluster's name.
    pub fn name(&self) -> &ClusterName {
        &self.cluster.name
    }

    /// The cluster's name and its client settings: two configurations of one name (a reload)
    /// are two clusters as far as a cached client is concerned.
    fn identity(&self) -> String {
        format!(
            "{}@{}{:?}",
            self.cluster.name,
            self.cluster.bootstrap_servers(),
            self.cluster.client
        )
    }

    /// A producer to this cluster.
    pub fn producer(&self) -> Result<HomeProducer, KafkaError> {
        HomeProducer::new(&self.cluster, Duration::from_secs(30))
    }

    /// A producer whose records fail when not acknowledged within `message_timeout` (the API
    /// answers 503 rather than keep a client waiting).
    pub fn producer_with_timeout(
        &self,
        message_timeout: Duration,
    ) -> Result<HomeProducer, KafkaError> {
        HomeProducer::new(&self.cluster, message_timeout)
    }

    /// A consumer of this cluster in consumer group `group`; see [`consumer_config`].
    pub fn consumer(&self, group: &str) -> Result<MotConsumer, KafkaError> {
        consumer_config(&self.cluster, group).create_with_context(MotConsumerContext::new(group))
    }

    /// Topic administration on this cluster.
    pub fn admin(&self) -> ClusterAdmin {
        ClusterAdmin {
            cluster: self.cluster.clone(),
        }
    }
}

/// Topic administration (create, describe) on one cluster. It cannot produce records, so an
/// operator tool may hold one for every cluster (`mot topics ensure`).
#[derive(Debug, Clone)]
pub struct ClusterAdmin {
    cluster: ClusterConfig,
}

impl ClusterAdmin {
    /// The cluster's name.
    pub fn name(&self) -> &ClusterName {
        &self.cluster.name
    }

    fn client(&self) -> Result<AdminClient<DefaultClientContext>, KafkaError> {
        base_config(&self.cluster).create()
    }
}

/// A topic name that carries a region's suffix: `<base>-<env>-<region>` (central -> regional) or
/// `<base>.<env>-<region>` (regional, arrived in the central cluster).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SuffixedTopic {
    name: TopicName,
    region: RegionName,
}

impl SuffixedTopic {
    /// `<base>-<env>-<region>`.
    pub fn for_region(base: &TopicBase, region: &RegionName) -> Self {
        Self {
            name: TopicName::to_region(base, region),
            region: region.clone(),
        }
    }

    /// `<base>.<env>-<region>`.
    pub fn from_region(base: &TopicBase, region: &RegionName) -> Self {
        Self {
            name: TopicName::from_region(base, region),
            region: region.clone(),
        }
    }

    /// The full name.
    pub fn name(&self) -> &TopicName {
        &self.name
    }

    /// The region the suffix names.
    pub fn region(&self) -> &RegionName {
        &self.region
    }
}

/// What a foreign subscription reads, and why its name identifies where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForeignTopic {
    /// A central -> regional topic, named for the region that reads it.
    ForRegion(SuffixedTopic),
    /// A topic a localizer mirrors home, where it lands under a suffixed name.
    Mirrored {
        /// Its name on the foreign cluster.
        source: TopicName,
        /// Its name at home.
        lands_as: SuffixedTopic,
    },
}

/// A consumer subscription to a cluster outside the consumer's datacenter, justified by the
/// topology.
#[derive(Debug, Clone)]
pub struct ForeignSubscription {
    cluster: ClusterConfig,
    topic: ForeignTopic,
    /// Why this foreign read is allowed.
    pub justification: String,
}

impl ForeignSubscription {
    /// The foreign cluster.
    pub fn cluster(&self) -> &ClusterName {
        &self.cluster.name
    }

    /// What it reads and how it is named.
    pub fn topic(&self) -> &ForeignTopic {
        &self.topic
    }

    /// The topic's name on the foreign cluster.
    pub fn topic_to_read(&self) -> &TopicName {
        match &self.topic {
            ForeignTopic::ForRegion(t) => t.name(),
            ForeignTopic::Mirrored { source, .. } => source,
        }
    }

    /// A consumer of the foreign cluster in consumer group `group`; see [`consumer_config`].
    pub fn consumer(&self, group: &str) -> Result<MotConsumer, KafkaError> {
        consumer_config(&self.cluster, group).create_with_context(MotConsumerContext::new(group))
    }
}

/// Where a regional layer reads one of its central topics: at home, or from a foreign cluster.
#[derive(Debug, Clone)]
pub enum Subscription {
    /// The topic was brought into the region's own cluster.
    Home { home: HomeCluster, topic: TopicName },
    /// The topic is read from the pseudo-central or central cluster.
    Foreign(ForeignSubscription),
}

impl Topology {
    fn home(&self, name: &ClusterName) -> HomeCluster {
        HomeCluster {
            cluster: self
                .config()
                .cluster(name)
                .unwrap_or_else(|| unreachable!("validated: cluster {name} exists"))
                .clone(),
        }
    }

    /// Topic administration on cluster `name`.
    pub fn cluster_admin(&self, name: &ClusterName) -> Option<ClusterAdmin> {
        self.config()
            .cluster(name)
            .map(|c| ClusterAdmin { cluster: c.clone() })
    }

    /// The clusters of the datacenters this process's roles run in: central for the service and
    /// persistence layers (and the localizers that bring regional topics there), each hosted region's
    /// own cluster and its pseudo-central cluster (where that region's inbound localizers run).
    pub fn home_clusters(&self) -> Vec<ClusterName> {
        let config = self.config();
        let mut homes = Vec::new();
        if config.runs(Role::Service) || config.runs(Role::Persistence) {
            homes.push(self.central_region().cluster.clone());
        }
        if config.runs(Role::Regional) {
            for region in &config.regions {
                if config.node.regions.is_empty() || config.node.regions.contains(&region.name) {
                    homes.push(region.cluster.clone());
                    homes.extend(region.pseudo_central.clone());
                }
            }
        }
        homes.sort();
        homes.dedup();
        homes
    }

    /// Home of the service and persistence layers: the central cluster.
    pub fn central_home(&self) -> HomeCluster {
        self.home(&self.central_region().cluster)
    }

    /// Home of `region`'s regional layer: its own cluster.
    pub fn region_home(&self, region: &RegionName) -> Option<HomeCluster> {
        self.config().region(region).map(|r| self.home(&r.cluster))
    }

    /// Home of the localizer carrying `route`: the destination, where it produces.
    pub fn localizer_home(&self, route: &PlannedRoute) -> HomeCluster {
        self.home(&route.to)
    }

    /// What the localizer carrying `route` consumes: the route's source topic on the foreign
    /// cluster, landing under its suffixed name.
    pub fn localizer_source(&self, route: &PlannedRoute) -> ForeignSubscription {
        let suffixed = match catalog::find(&route.base).map(|s| s.flow) {
            Some(Flow::ToRegion) => SuffixedTopic::for_region(&route.base, &route.region),
            _ => SuffixedTopic::from_region(&route.base, &route.region),
        };
        let topic = if suffixed.name() == &route.topic {
            ForeignTopic::ForRegion(suffixed)
        } else {
            ForeignTopic::Mirrored {
                source: route.topic.clone(),
                lands_as: suffixed,
            }
        };
        ForeignSubscription {
            cluster: self.home(&route.from).cluster,
            topic,
            justification: format!("routes[{}]: {} -> {}", route.route, route.from, route.to),
        }
    }

    /// Where `region`'s regional layer reads its central topic `spec` (launch or traffic events).
    pub fn central_topic_subscription(
        &self,
        region: &RegionConfig,
        spec: &TopicSpec,
    ) -> Subscription {
        let routes = self.routes();
        let (cluster, topic, foreign) = self.central_topic_source(region, spec, &routes);
        match foreign {
            None => Subscription::Home {
                home: self.home(&cluster),
                topic,
            },
            Some(why) => Subscription::Foreign(ForeignSubscription {
                cluster: self.home(&cluster).cluster,
                topic: ForeignTopic::ForRegion(SuffixedTopic::for_region(
                    &spec.base(),
                    &region.name,
                )),
                justification: format!("{} path: {why}", spec.base),
            }),
        }
    }
}

/// The librdkafka settings shared by every client of `cluster`: its bootstrap servers, its
/// `security` (TLS, SASL), and the extra client properties the topology gives it.
pub fn base_config(cluster: &ClusterConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", cluster.bootstrap_servers());
    config.set("client.id", format!("mot-{}", cluster.name));
    if let Some(security) = &cluster.security {
        config.set("security.protocol", security.protocol.as_str());
        for (key, file) in [
            ("ssl.ca.location", &security.ca_file),
            ("ssl.certificate.location", &security.cert_file),
            ("ssl.key.location", &security.key_file),
        ] {
            if let Some(file) = file {
                config.set(key, file.display().to_string());
            }
        }
        if let Some(sasl) = &security.sasl {
            config
                .set("sasl.mechanism", security.sasl_mechanism.as_str())
                .set("sasl.username", &sasl.username)
                .set("sasl.password", sasl.password());
        }
    }
    for (key, value) in &cluster.client {
        config.set(key, value);
    }
    config
}

/// Every consumer mot builds.
pub type MotConsumer = StreamConsumer<MotConsumerContext>;

/// The consumers' context: librdkafka's rebalance as rdkafka's default does it, except that the
/// protocol is known (every mot consumer is `cooperative-sticky`, see [`consumer_config`]) rather
/// than asked of librdkafka. Asking (`rd_kafka_rebalance_protocol`) from the final rebalance of a
/// closing consumer can block forever (librdkafka#4041, rust-rdkafka#509): a stopping agent would
/// hang the thread its whole region's supervisor shares, and `mot run` would never exit.
///
/// It also keeps each partition's consumer lag from librdkafka's statistics (every 5 s) in
/// [`consumer_lags`], for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct MotConsumerContext {
    group: Arc<str>,
}

impl MotConsumerContext {
    fn new(group: &str) -> Self {
        Self {
            group: Arc::from(group),
        }
    }
}

/// A consumer group's lag on one partition: records not yet processed, and when it was seen.
#[derive(Debug, Clone, Copy)]
pub struct Lag {
    pub records: i64,
    pub seen: std::time::Instant,
}

/// Lag by (consumer group, topic, partition).
pub type Lags = dashmap::DashMap<(Arc<str>, String, i32), Lag>;

/// Consumer lag by (group, topic, partition), from the statistics of every consumer this process
/// runs. Entries not refreshed for a minute belong to consumers gone (a revoked partition, a
/// stopped agent) and are not shown.
pub fn consumer_lags() -> &'static Lags {
    static LAGS: std::sync::OnceLock<Lags> = std::sync::OnceLock::new();
    LAGS.get_or_init(dashmap::DashMap::new)
}

impl rdkafka::ClientContext for MotConsumerContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let now = std::time::Instant::now();
        for (name, topic) in statistics.topics {
            for (partition, p) in topic.partitions {
                // -1 is librdkafka's internal "unassigned" partition; negative lags are unknown.
                let lag = if p.consumer_lag_stored >= 0 {
                    p.consumer_lag_stored
                } else {
                    p.consumer_lag
                };
                if partition < 0 || lag < 0 {
                    continue;
                }
                consumer_lags().insert(
                    (self.group.clone(), name.clone(), partition),
                    Lag {
                        records: lag,
                        seen: now,
                    },
                );
            }
        }
    }
}

impl rdkafka::consumer::ConsumerContext for MotConsumerContext {
    fn rebalance(
        &self,
        consumer: &rdkafka::consumer::BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        partitions: &mut rdkafka::TopicPartitionList,
    ) {
        use rdkafka::consumer::Consumer;
        use rdkafka::types::RDKafkaRespErr;
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                consumer.incremental_assign(partitions)
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                consumer.incremental_unassign(partitions)
            }
            other => {
                tracing::warn!(error = ?other, "rebalance error; giving the partitions up");
                consumer.incremental_unassign(partitions)
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "rebalance step failed");
        }
    }
}

/// Consumer settings for at-least-once delivery: offsets are stored by the pipeline only after
/// the sink acknowledged (`enable.auto.offset.store=false`), and the stored offsets are committed
/// in the background. A member that dies without leaving (a crash, SIGKILL) is given up after
/// librdkafka's default session timeout (45 s): that long its partitions wait for a new owner. (A
/// 10 s timeout was tried: a broker outage longer than it makes every consumer's session time out,
/// and dropping such a consumer can hang the thread that drops it, librdkafka#4041.)
pub fn consumer_config(cluster: &ClusterConfig, group: &str) -> ClientConfig {
    let mut config = base_config(cluster);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        // A topic subscribed before it exists (a region's topic, created when its first record
        // is produced) is assigned once the consumer's metadata shows it: refreshed every 10 s,
        // not librdkafka's 5 min. (Seen: a shared consumer whose lane subscribed first got no
        // record of it for minutes.)
        .set("topic.metadata.refresh.interval.ms", "10000")
        .set("statistics.interval.ms", "5000");
    config
}

/// `mot topics tail`: prints the value of every record of `topic` on `cluster`, one per line,
/// from the oldest kept (or from now), until interrupted. Reads as a group of its own that
/// commits nothing.
pub async fn tail(
    cluster: &ClusterConfig,
    topic: &str,
    from_beginning: bool,
) -> Result<(), KafkaError> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::Message;
    let group = format!("mot-tail-{}", uuid::Uuid::new_v4());
    let mut config = base_config(cluster);
    config
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set(
            "auto.offset.reset",
            if from_beginning { "earliest" } else { "latest" },
        );
    let consumer: StreamConsumer = config.create()?;
    consumer.subscribe(&[topic])?;
    loop {
        let message = consumer.recv().await?;
        let value = message.payload().map(String::from_utf8_lossy);
        println!("{}", value.as_deref().unwrap_or("(tombstone)"));
    }
}

/// What `mot topics ensure` did on one cluster.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct EnsureReport {
    pub created: Vec<String>,
    pub existing: Vec<String>,
}

/// Every topic the plan needs on `cluster`, with its cleanup policy: what agents read and write
/// there, what routes carry from and to it, and the dead-letter topic every cluster has.
pub fn topics_needed(
    topology: &Topology,
    cluster: &ClusterName,
) -> Vec<(TopicName, &'static TopicSpec)> {
    let plan = topology.plan();
    let mut names = std::collections::BTreeSet::new();
    names.insert(TopicName::local(&catalog::DEAD_LETTERS.base()));
    for agent in &plan.agents {
        for endpoint in agent.reads.iter().chain(&agent.writes) {
            if let super::topology::Endpoint::Kafka {
                cluster: c, topic, ..
            } = endpoint
            {
                if c == cluster {
                    names.insert(topic.clone());
                }
            }
        }
    }
    for route in &plan.routes {
        if &route.from == cluster {
            names.insert(route.topic.clone());
        }
        if &route.to == cluster {
            names.insert(route.as_topic.clone());
        }
    }
    names
        .into_iter()
        .filter_map(|name| catalog::of_topic(&name).map(|spec| (name, spec)))
        .collect()
}

/// Creates on `cluster` every topic the plan needs there that does not exist yet. Safe to repeat.
pub async fn ensure_topics(
    topology: &Topology,
    cluster: &ClusterAdmin,
) -> Result<EnsureReport, KafkaError> {
    let needed = topics_needed(topology, cluster.name());
    create_topics(cluster, &topology.config().kafka, &needed).await
}

/// Creates those of `topics` that do not exist on `cluster` yet, each with its cleanup policy
/// (and a compacted topic with [`KafkaConfig::compacted_topic_config`]); existing topics are
/// reported, not changed.
pub async fn create_topics(
    cluster: &ClusterAdmin,
    kafka: &KafkaConfig,
    topics: &[(TopicName, &TopicSpec)],
) -> Result<EnsureReport, KafkaError> {
    let admin = cluster.client()?;
    let compacted = kafka.compacted_topic_config();
    let new_topics: Vec<NewTopic> = topics
        .iter()
        .map(|(name, spec)| {
            let topic = NewTopic::new(
                name.as_str(),
                kafka.partitions,
                TopicReplication::Fixed(kafka.replication_factor),
            )
            .set("cleanup.policy", spec.cleanup.as_kafka());
            match spec.cleanup {
                catalog::Cleanup::Compact => compacted
                    .iter()
                    .fold(topic, |topic, (key, value)| topic.set(key, value)),
                _ => topic,
            }
        })
        .collect();
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(30)))
        .request_timeout(Some(Duration::from_secs(30)));
    let mut report = EnsureReport::default();
    for result in admin.create_topics(&new_topics, &options).await? {
        match result {
            Ok(name) => report.created.push(name),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => report.existing.push(name),
            Err((name, code)) => {
                return Err(KafkaError::AdminOp(code)).inspect_err(|_| {
                    tracing::error!(topic = %name, cluster = %cluster.name(), ?code, "cannot create topic")
                })
            }
        }
    }
    Ok(report)
}
