//! The pipeline every agent runs, written once: a Kafka source, the agent's own step, a Kafka sink
//! on the home cluster, dead letters, and offsets stored only after the sink acknowledged.
//!
//! ```text
//!   source (home cluster, or a foreign one the topology justifies)
//!     -> Agent::process (the part that differs: pure where possible)
//!     -> sink: HomeProducer (idempotent, acks=all)        bad record -> mot-dead-letters
//!     -> offset stored once every record it caused is acknowledged, in order per partition
//! ```
//!
//! Delivery is at least once: a crash between the sink's acknowledgement and the offset commit
//! replays records, which consumers absorb (diffing agents re-derive the same state; projections
//! are written idempotently). At most [`MAX_IN_FLIGHT`] records await acknowledgement: a slow
//! sink slows the source instead of growing a queue.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesOrdered;
use futures::StreamExt;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::watch;
use tracing::Instrument;

use super::counters::Counters;
use crate::config::RegionConfig;
use crate::models::envelope::{self, Kind};
use crate::telemetry;
use crate::topics::catalog;
use crate::topics::clients::{ForeignSubscription, HomeCluster, MotConsumer};
use crate::topics::names::{RegionName, TopicName};
pub use crate::topics::produce::{acknowledged, Outgoing};
use crate::topics::produce::{all_acknowledged, Enqueued};
use crate::topics::topology::Topology;

/// Records awaiting the sink's acknowledgement, at most.
pub const MAX_IN_FLIGHT: usize = 1024;

/// Dead-letter headers: why, and where the record came from.
pub const HEADER_DLQ_REASON: &str = "mot-dlq-reason";
pub const HEADER_DLQ_AGENT: &str = "mot-dlq-agent";
pub const HEADER_DLQ_REGION: &str = "mot-dlq-region";
pub const HEADER_DLQ_TOPIC: &str = "mot-dlq-source-topic";
pub const HEADER_DLQ_PARTITION: &str = "mot-dlq-source-partition";
pub const HEADER_DLQ_OFFSET: &str = "mot-dlq-source-offset";

/// An infrastructure failure: the agent stops and its supervisor restarts it with backoff.
/// (Bad data is not an error: it is dead-lettered and the pipeline moves on.)
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("rebuilding the cache from {topic}: {problem}")]
    Rebuild { topic: String, problem: String },
    #[error("agent panicked: {0}")]
    Panicked(String),
    #[error("{0}")]
    Other(String),
}

/// A consumed record, owned so the agent may hold it across awaits.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Record timestamp, milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
}

impl Incoming {
    pub(crate) fn from_message(msg: &BorrowedMessage<'_>) -> Self {
        let headers = msg
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            topic: msg.topic().to_owned(),
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().map(<[u8]>::to_vec),
            value: msg.payload().map(<[u8]>::to_vec),
            headers,
            timestamp_ms: msg.timestamp().to_millis(),
        }
    }

    /// The cause of records a poller publishes on its own: no source record, no trace context.
    pub fn unprompted() -> Self {
        Self {
            topic: String::new(),
            partition: 0,
            offset: 0,
            key: None,
            value: None,
            headers: Vec::new(),
            timestamp_ms: None,
        }
    }

    /// The record's envelope, or the outcome for a record that does not decode: dead-lettered
    /// with the reason. A tombstone (a key with no value, which follows a deletion on a
    /// compacted topic) is passed over.
    pub fn decode<T: serde::de::DeserializeOwned + envelope::Validate>(
        &self,
    ) -> Result<envelope::Envelope<T>, Outcome> {
        if self.value.is_none() && self.key.is_some() {
            return Err(Outcome::Skip);
        }
        envelope::decode(self.key.as_deref(), self.value.as_deref())
            .map_err(|e| Outcome::Reject(e.to_string()))
    }

    /// The value of header `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The trace context headers, to carry to whatever this record causes.
    pub fn trace_headers(&self) -> Vec<(String, Vec<u8>)> {
        self.headers
            .iter()
            .filter(|(k, _)| k == envelope::HEADER_TRACEPARENT || k == envelope::HEADER_TRACESTATE)
            .cloned()
            .collect()
    }
}

impl Outgoing {
    /// An envelope of `kind` whose payload is the already serialized `payload_json`, with the
    /// event-type header and the trace headers of `cause`.
    pub fn envelope(
        topic: TopicName,
        payload_type: &str,
        envelope: envelope::Envelope<()>,
        payload_json: &[u8],
        cause: &Incoming,
    ) -> Result<Self, serde_json::Error> {
        let raw: &serde_json::value::RawValue = serde_json::from_slice(payload_json)?;
        let full = envelope.with_payload(raw);
        let mut headers = vec![(
            envelope::HEADER_EVENT_TYPE.to_owned(),
            format!("{payload_type}.{}", full.kind.as_str()).into_bytes(),
        )];
        headers.extend(cause.trace_headers());
        Ok(Self {
            topic,
            key: Some(full.key.clone().into_bytes()),
            value: Some(serde_json::to_vec(&full)?),
            headers,
            timestamp_ms: None,
        })
    }
}

/// What the agent made of one record.
pub enum Outcome {
    /// Publish these (none: the record changed nothing).
    Publish(Vec<Outgoing>),
    /// The agent wrote the record's result to a sink of its own (Cassandra, a scheduler) and the
    /// sink acknowledged `n` writes: the hook for sinks other than Kafka. The offset is stored
    /// like any other, after this outcome is returned.
    Stored(u64),
    /// Not for this agent (e.g. another region's record on a shared topic).
    Skip,
    /// Bad data: dead-letter it with this reason and move on.
    Reject(String),
    /// The agent's own sink failed (Cassandra unreachable): the record is not done. The agent
    /// stops without storing its offset and its supervisor restarts it, so it is replayed.
    Fail(String),
    /// The record's write to the agent's own sink is under way: this future is its outcome (any
    /// of the above). The pipeline keeps up to `node.sink_window` such writes in flight while it
    /// reads on, stores offsets in order all the same, and starts a record only once no earlier
    /// record with the same key is still being written. See [`Outcome::pending`].
    Pending(Pin<Box<dyn Future<Output = Outcome>>>),
}

impl Outcome {
    /// A write to the agent's own sink that may proceed while the next records are read.
    pub fn pending(write: impl Future<Output = Outcome> + 'static) -> Self {
        Outcome::Pending(Box::pin(write))
    }
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Publish(records) => f.debug_tuple("Publish").field(records).finish(),
            Outcome::Stored(n) => f.debug_tuple("Stored").field(n).finish(),
            Outcome::Skip => f.write_str("Skip"),
            Outcome::Reject(reason) => f.debug_tuple("Reject").field(reason).finish(),
            Outcome::Fail(problem) => f.debug_tuple("Fail").field(problem).finish(),
            Outcome::Pending(_) => f.write_str("Pending"),
        }
    }
}

/// Where an agent's pipeline reads.
#[derive(Debug, Clone)]
pub enum Source {
    /// Topics of the home cluster.
    Home(Vec<TopicName>),
    /// Topics of the home cluster that carry only this region's records (a region's suffixed
    /// topic in the central cluster): read through the consumer the agent's instances of every
    /// region share ([`super::shared_source`]).
    Region(Vec<TopicName>),
    /// One topic of a foreign cluster, justified by the topology; read through the consumer the
    /// agent's instances reading that cluster share.
    Foreign(ForeignSubscription),
}

impl Source {
    /// The topics it reads.
    pub fn topics(&self) -> Vec<TopicName> {
        match self {
            Source::Home(topics) | Source::Region(topics) => topics.clone(),
            Source::Foreign(sub) => vec![sub.topic_to_read().clone()],
        }
    }
}

impl Source {
    /// Where `ctx`'s region reads its central topic `spec` (launch or traffic events), as the
    /// topology plans it: its own cluster, its pseudo-central cluster, or the central one.
    pub fn central(ctx: &AgentContext, spec: &catalog::TopicSpec) -> Self {
        match ctx.topology.central_topic_subscription(&ctx.region, spec) {
            crate::topics::clients::Subscription::Home { topic, .. } => Source::Home(vec![topic]),
            crate::topics::clients::Subscription::Foreign(foreign) => Source::Foreign(foreign),
        }
    }
}

/// What an agent is given when it is built.
#[derive(Debug, Clone)]
pub struct AgentContext {
    /// The region it works for.
    pub region: RegionConfig,
    /// The whole topology.
    pub topology: Topology,
    /// The cluster of the datacenter it runs in: the only one it produces to.
    pub home: HomeCluster,
    /// Its counters.
    pub counters: Arc<Counters>,
    /// For a localizer: the route hop it carries.
    pub route: Option<crate::topics::topology::PlannedRoute>,
    /// The Cassandra session shared by the process's agents (opened on first use).
    pub store: crate::store::SharedSession,
    /// The producers shared by the process's agents, one per home cluster.
    pub producers: crate::topics::clients::SharedProducers,
    /// The consumers shared by the process's agents, one per agent kind and cluster read.
    pub sources: super::shared_source::SharedSources,
    /// The threads agents (and shared consumers) run on.
    pub workers: super::workers::Workers,
}

impl AgentContext {
    /// An HTTP client for the agent's platform calls (trusting `[tls] ca_file` for `https://`
    /// zone URLs), with `configure` applied.
    pub fn http_client(
        &self,
        configure: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
    ) -> Result<reqwest::Client, PipelineError> {
        let builder = crate::platform::http::builder(&self.topology.config().tls)
            .map_err(PipelineError::Other)?;
        configure(builder)
            .build()
            .map_err(|e| PipelineError::Other(format!("http client: {e}")))
    }
}

impl AgentContext {
    /// The process's Cassandra session (opened on first use).
    pub async fn session(&self) -> Result<Arc<scylla::client::session::Session>, PipelineError> {
        self.store
            .get(&self.topology.config().cassandra)
            .await
            .map_err(|e| PipelineError::Other(e.to_string()))
    }
}

/// An agent: one simple action, triggered by a record from a source, that may publish results.
///
/// Writing a new agent is this trait in a file of its own, plus one line in
/// [`super::REGIONAL_AGENTS`].
pub trait Agent: Sized + 'static {
    /// Its name in logs, metrics and consumer groups.
    const NAME: &'static str;

    /// Where it reads.
    fn source(ctx: &AgentContext) -> Result<Source, PipelineError>;

    /// Builds the agent for one region: load what it needs (e.g. rebuild its cache).
    fn build(ctx: &AgentContext) -> impl Future<Output = Result<Self, PipelineError>>;

    /// Handles one record.
    fn process(&mut self, incoming: &Incoming) -> impl Future<Output = Outcome>;

    /// How often [`Agent::tick`] runs; `None` (the default): never.
    fn tick_interval(&self) -> Option<Duration> {
        None
    }

    /// Work on a timer rather than on a record (a retry whose time has come, a reconciliation):
    /// the records to publish. They are delivered in order with the records' results; no offset
    /// depends on them.
    fn tick(&mut self) -> impl Future<Output = Vec<Outgoing>> {
        async { Vec::new() }
    }
}

/// How one consumed record ended: where it came from, and once its results were acknowledged,
/// which counter they add to.
struct Settlement {
    topic: String,
    partition: i32,
    offset: i64,
    /// The key of a windowed write, which holds back later records with the same key.
    window_key: Option<Option<Vec<u8>>>,
    delivered: Result<Delivered, PipelineError>,
}

/// What a consumed record's acknowledged results count as.
#[derive(Debug, Clone, Copy)]
enum Delivered {
    Published(u64),
    DeadLettered,
    Unchanged,
    Skipped,
    /// A tick's records, acknowledged: no record consumed, no offset to store.
    Ticked(u64),
}

/// Runs `A` for the region of `ctx` until `stop` turns true (then drains in-flight records,
/// stores their offsets, commits and flushes) or an infrastructure error occurs.
pub async fn run_agent<A: Agent>(
    ctx: AgentContext,
    mut stop: watch::Receiver<bool>,
) -> Result<(), PipelineError> {
    let mut agent = A::build(&ctx).await?;
    let (mut input, group, topics) = Input::open::<A>(&ctx).await?;
    let names: Vec<&str> = topics.iter().map(TopicName::as_str).collect();
    let producer = ctx.producers.get(&ctx.home)?;
    let dead_letters = TopicName::local(&catalog::DEAD_LETTERS.base());
    let window = ctx.topology.config().node.sink_window.max(1);
    let counters = ctx.counters.clone();
    tracing::info!(agent = A::NAME, region = %ctx.region.name, %group, shared = input.is_shared(), topics = ?names, window, "agent started");

    let mut inflight: FuturesOrdered<Pin<Box<dyn Future<Output = Settlement>>>> =
        FuturesOrdered::new();
    // Keys of the windowed writes in flight (a keyless record is a key of its own kind).
    let mut writing: HashMap<Option<Vec<u8>>, usize> = HashMap::new();
    let mut failure: Option<PipelineError> = None;
    let tick_every = agent.tick_interval();
    let mut ticks = tokio::time::interval(tick_every.unwrap_or(Duration::from_secs(3600)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while failure.is_none() && !*stop.borrow() {
        let windowed: usize = writing.values().sum();
        tokio::select! {
            biased;
            changed = stop.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            Some(done) = inflight.next(), if !inflight.is_empty() => {
                settle(&input, &counters, &mut writing, done, &mut failure);
            }
            _ = ticks.tick(), if tick_every.is_some() && inflight.len() < MAX_IN_FLIGHT => {
                let records = agent.tick().await;
                if !records.is_empty() {
                    let n = records.len() as u64;
                    let enqueued = producer.enqueue_all(&records).await;
                    inflight.push_back(Box::pin(acknowledge(Incoming::unprompted(), None, enqueued, Delivered::Ticked(n))));
                }
            }
            received = input.recv(), if inflight.len() < MAX_IN_FLIGHT && windowed < window => {
                let incoming = match received {
                    Ok(incoming) => incoming,
                    // Consumption errors (a topic not yet known to a fresh broker, a coordinator
                    // loading, a broker briefly away) are reports; librdkafka recovers by itself.
                    Err(KafkaError::MessageConsumption(code)) => {
                        tracing::warn!(agent = A::NAME, region = %ctx.region.name, ?code, "consumer reported an error; continuing");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                Counters::add(&counters.records_in, 1);
                // A record waits for the windowed writes of its key to finish: same key, same order.
                while writing.contains_key(&incoming.key) && failure.is_none() {
                    match inflight.next().await {
                        Some(done) => settle(&input, &counters, &mut writing, done, &mut failure),
                        None => break,
                    }
                }
                if failure.is_some() {
                    break;
                }
                let span = process_span(A::NAME, &ctx, &group, &incoming);
                let outcome = agent.process(&incoming).instrument(span.clone()).await;
                if let Outcome::Pending(write) = outcome {
                    *writing.entry(incoming.key.clone()).or_default() += 1;
                    let key = incoming.key.clone();
                    let producer = producer.clone();
                    let finish = {
                        let (dead_letters, region) = (dead_letters.clone(), ctx.region.name.clone());
                        let span = span.clone();
                        async move {
                            let outcome = write.instrument(span.clone()).await;
                            match resolve(A::NAME, &region, &dead_letters, &span, &incoming, outcome) {
                                Ok((outgoing, delivered)) => {
                                    let enqueued = producer.enqueue_all(&outgoing).await;
                                    acknowledge(incoming, Some(key), enqueued, delivered).await
                                }
                                Err(problem) => Settlement {
                                    delivered: Err(sink_failed(&incoming, &problem)),
                                    topic: incoming.topic,
                                    partition: incoming.partition,
                                    offset: incoming.offset,
                                    window_key: Some(key),
                                },
                            }
                        }
                    };
                    inflight.push_back(Box::pin(finish));
                    continue;
                }
                match resolve(A::NAME, &ctx.region.name, &dead_letters, &span, &incoming, outcome) {
                    Ok((outgoing, delivered)) => {
                        let enqueued = producer.enqueue_all(&outgoing).await;
                        inflight.push_back(Box::pin(acknowledge(incoming, None, enqueued, delivered)));
                    }
                    Err(problem) => failure = Some(sink_failed(&incoming, &problem)),
                }
            }
        }
    }
    // Drain: what was handed over is settled (offsets stored in order, up to a failure).
    while let Some(done) = inflight.next().await {
        settle(&input, &counters, &mut writing, done, &mut failure);
    }
    input.close(A::NAME).await;
    producer.flush().await;
    match failure {
        Some(error) => Err(error),
        None => {
            tracing::info!(agent = A::NAME, region = %ctx.region.name, "agent stopped");
            Ok(())
        }
    }
}

/// The span of one record's processing, a child of the trace the record carries (OpenTelemetry
/// messaging conventions: a Kafka `process` span). Records that carry no trace (a poller's
/// observations) get none: a trace is a deployment's story, not every observation's.
fn process_span(
    agent: &str,
    ctx: &AgentContext,
    group: &str,
    incoming: &Incoming,
) -> tracing::Span {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let parent = telemetry::extract(&incoming.headers);
    if !parent.span().span_context().is_valid() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "process",
        otel.name = %format!("process {}", incoming.topic),
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.destination.name = %incoming.topic,
        messaging.destination.partition.id = incoming.partition,
        messaging.kafka.offset = incoming.offset,
        messaging.consumer.group.name = %group,
        mot.agent = agent,
        mot.region = %ctx.region.name,
    );
    let _ = span.set_parent(parent);
    span
}

/// `mot-<agent>-<region>`: one consumer group per agent and region; a localizer's group also
/// names the hop it carries, so each route hop is consumed independently.
pub fn consumer_group(agent: &str, ctx: &AgentContext) -> String {
    match &ctx.route {
        None => format!("mot-{}-{}", kebab(agent), ctx.region.name),
        Some(route) => format!(
            "mot-{}-{}-{}-to-{}",
            kebab(agent),
            ctx.region.name,
            route.topic,
            route.to
        ),
    }
}

/// `mot-<agent>-<central region>-<cluster read>[-to-<home cluster>]`: the group of the consumer
/// an agent's instances share. The central region names the installation (two installations on
/// the same clusters never share a group); every process of one installation running the agent
/// there shares it.
pub fn shared_group(
    agent: &str,
    ctx: &AgentContext,
    source: &crate::topics::names::ClusterName,
) -> String {
    let central = &ctx.topology.config().topology.central;
    let mut group = format!("mot-{}-{central}-{source}", kebab(agent));
    if source != ctx.home.name() {
        group.push_str(&format!("-to-{}", ctx.home.name()));
    }
    group
}

fn kebab(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn sink_failed(incoming: &Incoming, problem: &str) -> PipelineError {
    PipelineError::Other(format!(
        "sink failed on {}[{}]@{}: {problem}",
        incoming.topic, incoming.partition, incoming.offset
    ))
}

/// What to produce for a record's outcome, and what it counts as once acknowledged; or the
/// problem of a sink that failed.
fn resolve(
    agent: &'static str,
    region: &RegionName,
    dead_letters: &TopicName,
    span: &tracing::Span,
    incoming: &Incoming,
    outcome: Outcome,
) -> Result<(Vec<Outgoing>, Delivered), String> {
    Ok(match outcome {
        Outcome::Publish(records) if records.is_empty() => (Vec::new(), Delivered::Unchanged),
        Outcome::Publish(mut records) => {
            if !span.is_disabled() {
                // What this record caused continues its trace from this hop.
                for record in &mut records {
                    telemetry::inject(span, &mut record.headers);
                }
            }
            let n = records.len() as u64;
            (records, Delivered::Published(n))
        }
        Outcome::Stored(n) => (Vec::new(), Delivered::Published(n)),
        Outcome::Skip => (Vec::new(), Delivered::Skipped),
        Outcome::Reject(reason) => {
            tracing::warn!(agent, %region, topic = %incoming.topic, partition = incoming.partition,
                offset = incoming.offset, %reason, "dead-lettered");
            (
                vec![dead_letter(dead_letters, incoming, &reason, agent, region)],
                Delivered::DeadLettered,
            )
        }
        Outcome::Fail(problem) => return Err(problem),
        Outcome::Pending(_) => {
            return Err("a pending write resolved to another pending write".into())
        }
    })
}

/// Resolves once every record a consumed record caused is acknowledged.
async fn acknowledge(
    cause: Incoming,
    window_key: Option<Option<Vec<u8>>>,
    enqueued: Vec<Enqueued>,
    delivered: Delivered,
) -> Settlement {
    Settlement {
        delivered: all_acknowledged(enqueued)
            .await
            .map(|()| delivered)
            .map_err(PipelineError::from),
        topic: cause.topic,
        partition: cause.partition,
        offset: cause.offset,
        window_key,
    }
}

/// Counts the acknowledged results of a record and stores its offset. Once a record failed
/// (its sink, or its delivery), no later offset is stored: settlements come in order, so the
/// records after it replay.
fn settle(
    input: &Input,
    counters: &Counters,
    writing: &mut HashMap<Option<Vec<u8>>, usize>,
    settlement: Settlement,
    failure: &mut Option<PipelineError>,
) {
    let Settlement {
        topic,
        partition,
        offset,
        window_key,
        delivered,
    } = settlement;
    if let Some(key) = window_key {
        if let std::collections::hash_map::Entry::Occupied(mut writes) = writing.entry(key) {
            *writes.get_mut() -= 1;
            if *writes.get() == 0 {
                writes.remove();
            }
        }
    }
    if failure.is_some() {
        return;
    }
    let delivered = match delivered {
        Ok(delivered) => delivered,
        Err(error) => {
            *failure = Some(error);
            return;
        }
    };
    match delivered {
        Delivered::Published(n) | Delivered::Ticked(n) => Counters::add(&counters.published, n),
        Delivered::DeadLettered => Counters::add(&counters.dead_lettered, 1),
        Delivered::Unchanged => Counters::add(&counters.unchanged, 1),
        Delivered::Skipped => Counters::add(&counters.skipped, 1),
    }
    if matches!(delivered, Delivered::Ticked(_)) {
        return;
    }
    input.settled(&topic, partition, offset);
}

/// Where a running agent's records come from.
enum Input {
    /// A consumer of its own.
    Own(Arc<MotConsumer>),
    /// Its lane of the consumer it shares with the agent's instances for other regions.
    Shared(super::shared_source::Lane),
}

impl Input {
    /// Joins the shared consumer of the agent's source, or (a source of the region's own, or
    /// topics another region's lane reads already) subscribes a consumer of its own. Also the
    /// consumer group and the topics.
    async fn open<A: Agent>(
        ctx: &AgentContext,
    ) -> Result<(Self, String, Vec<TopicName>), PipelineError> {
        let agent = A::NAME;
        let source = A::source(ctx)?;
        let topics = source.topics();
        let sharing = ctx.topology.config().node.shared_consumers;
        let shared: Option<(String, super::shared_source::MakeConsumer)> = match &source {
            _ if !sharing => None,
            Source::Home(_) => None,
            Source::Region(_) => {
                let home = ctx.home.clone();
                Some((
                    shared_group(agent, ctx, home.name()),
                    Box::new(move |group: &str| home.consumer(group)),
                ))
            }
            Source::Foreign(sub) => {
                let sub = sub.clone();
                Some((
                    shared_group(agent, ctx, sub.cluster()),
                    Box::new(move |group: &str| sub.consumer(group)),
                ))
            }
        };
        if let Some((group, make)) = shared {
            let region = ctx.region.name.as_str();
            let joined = ctx
                .sources
                .join(&group, region, topics.clone(), make, &ctx.workers)
                .await?;
            if let Some(lane) = joined {
                return Ok((Input::Shared(lane), group, topics));
            }
            tracing::info!(agent, %region, %group, "another region's lane reads these topics; reading with a consumer of its own");
        }
        let group = consumer_group(agent, ctx);
        let consumer = match &source {
            Source::Home(_) | Source::Region(_) => ctx.home.consumer(&group)?,
            Source::Foreign(sub) => sub.consumer(&group)?,
        };
        let names: Vec<&str> = topics.iter().map(TopicName::as_str).collect();
        consumer.subscribe(&names)?;
        Ok((Input::Own(Arc::new(consumer)), group, topics))
    }

    fn is_shared(&self) -> bool {
        matches!(self, Input::Shared(_))
    }

    /// The next record. A shared consumer that is gone is an infrastructure error: the agent is
    /// restarted and joins a new one.
    async fn recv(&mut self) -> Result<Incoming, KafkaError> {
        match self {
            Input::Own(consumer) => consumer.recv().await.map(|m| Incoming::from_message(&m)),
            Input::Shared(lane) => lane.recv().await.ok_or(KafkaError::Canceled),
        }
    }

    /// The record at `offset` is done: its offset is stored.
    fn settled(&self, topic: &str, partition: i32, offset: i64) {
        match self {
            Input::Own(consumer) => {
                if let Err(e) = consumer.store_offset(topic, partition, offset) {
                    // The partition was revoked meanwhile: its new owner replays from the last
                    // commit.
                    tracing::debug!(%topic, partition, offset, error = %e, "offset not stored");
                }
            }
            Input::Shared(lane) => lane.settled(topic, partition, offset),
        }
    }

    /// Commits what was stored (a consumer of its own), or leaves the shared consumer once it
    /// has.
    async fn close(self, agent: &'static str) {
        match self {
            Input::Own(consumer) => commit(agent, &consumer).await,
            Input::Shared(lane) => lane.close().await,
        }
    }
}

/// Commits `consumer`'s stored offsets (a synchronous call, made on a blocking thread); `who`
/// (the agent, or the shared consumer's group) names it in the log if that fails.
pub(crate) async fn commit(who: &str, consumer: &Arc<MotConsumer>) {
    let consumer = consumer.clone();
    let committed =
        tokio::task::spawn_blocking(move || consumer.commit_consumer_state(CommitMode::Sync)).await;
    match committed {
        Ok(Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))) => {}
        Ok(Err(e)) => {
            tracing::warn!(who, error = %e, "commit failed; records since the last commit will be replayed")
        }
        Err(e) => tracing::warn!(who, error = %e, "commit did not finish"),
    }
}

fn dead_letter(
    topic: &TopicName,
    incoming: &Incoming,
    reason: &str,
    agent: &str,
    region: &RegionName,
) -> Outgoing {
    let mut headers = incoming.headers.clone();
    headers.extend([
        (HEADER_DLQ_REASON.to_owned(), reason.as_bytes().to_vec()),
        (HEADER_DLQ_AGENT.to_owned(), agent.as_bytes().to_vec()),
        (
            HEADER_DLQ_REGION.to_owned(),
            region.as_str().as_bytes().to_vec(),
        ),
        (
            HEADER_DLQ_TOPIC.to_owned(),
            incoming.topic.as_bytes().to_vec(),
        ),
        (
            HEADER_DLQ_PARTITION.to_owned(),
            incoming.partition.to_string().into_bytes(),
        ),
        (
            HEADER_DLQ_OFFSET.to_owned(),
            incoming.offset.to_string().into_bytes(),
        ),
    ]);
    Outgoing {
        topic: topic.clone(),
        key: incoming.key.clone(),
        value: incoming.value.clone(),
        headers,
        timestamp_ms: incoming.timestamp_ms,
    }
}

/// Reads `topic` on `home` from the beginning up to its end as of now (the high watermarks seen
/// at the start), calling `f` for each record: how an agent rebuilds its last-record cache from
/// its own output topic. There is no deadline a large topic could miss: it reads as long as
/// records come, logging its progress every [`REBUILD_PROGRESS_EVERY`]; librdkafka's
/// synchronous calls (metadata, watermarks) run on a blocking thread, never on the thread that
/// serves other agents.
pub async fn read_to_end(
    home: &HomeCluster,
    topic: &TopicName,
    group: &str,
    mut f: impl FnMut(&BorrowedMessage<'_>),
) -> Result<u64, PipelineError> {
    let rebuild_err = |problem: String| PipelineError::Rebuild {
        topic: topic.to_string(),
        problem,
    };
    let (consumer, mut pending) = {
        let (home, topic, group) = (home.clone(), topic.clone(), group.to_owned());
        tokio::task::spawn_blocking(move || end_offsets(&home, &topic, &group))
            .await
            .map_err(|e| rebuild_err(format!("reading the end offsets: {e}")))??
    };
    if pending.is_empty() {
        return Ok(0);
    }
    let mut assignment = TopicPartitionList::new();
    for (partition, _) in &pending {
        assignment.add_partition_offset(topic.as_str(), *partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let total: i64 = pending.iter().map(|(_, high)| high).sum();
    let started = tokio::time::Instant::now();
    let mut progress =
        tokio::time::interval_at(started + REBUILD_PROGRESS_EVERY, REBUILD_PROGRESS_EVERY);
    let mut read = 0;
    while !pending.is_empty() {
        let msg = tokio::select! {
            msg = consumer.recv() => msg?,
            _ = progress.tick() => {
                tracing::info!(%topic, read, of_at_most = total, partitions_left = pending.len(),
                    elapsed_s = started.elapsed().as_secs(), "rebuilding");
                continue;
            }
        };
        f(&msg);
        read += 1;
        let (partition, offset) = (msg.partition(), msg.offset());
        pending.retain(|&(p, high)| !(p == partition && offset + 1 >= high));
    }
    Ok(read)
}

/// How often a long rebuild says how far it got.
pub const REBUILD_PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// A consumer for reading `topic` from `home`, and each non-empty partition with its high
/// watermark: blocking calls.
fn end_offsets(
    home: &HomeCluster,
    topic: &TopicName,
    group: &str,
) -> Result<(MotConsumer, VecDeque<(i32, i64)>), PipelineError> {
    let consumer = home.consumer(group)?;
    let metadata = consumer.fetch_metadata(Some(topic.as_str()), Duration::from_secs(30))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .first()
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    let mut pending = VecDeque::new();
    for partition in partitions {
        let (low, high) = watermarks(&consumer, topic, partition)?;
        if high > low {
            pending.push_back((partition, high));
        }
    }
    Ok((consumer, pending))
}

/// A partition's low and high watermarks (a blocking call). A topic created moments ago may have
/// no leader yet (`NotLeaderForPartition`, `LeaderNotAvailable`): that settles within seconds, so
/// it is retried here rather than failing the agent.
fn watermarks(
    consumer: &MotConsumer,
    topic: &TopicName,
    partition: i32,
) -> Result<(i64, i64), KafkaError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match consumer.fetch_watermarks(topic.as_str(), partition, Duration::from_secs(10)) {
            Ok(marks) => return Ok(marks),
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::debug!(%topic, partition, error = %e, "watermarks not available yet; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e),
        }
    }
}

/// An envelope header for an outgoing record of `kind`.
pub fn header_envelope(
    kind: Kind,
    key: String,
    ctx: &AgentContext,
    time_us: i64,
) -> envelope::Envelope<()> {
    envelope::Envelope::new(kind, key, ctx.region.name.clone(), time_us, ())
}
