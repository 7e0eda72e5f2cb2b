//! Benchmark 1: InstanceConsulStateAgent (consume, diff against the last-record cache, produce) vs a bare
//! rdkafka consume -> produce loop with the same client settings on the same cluster.

use std::time::{Duration, Instant};

use futures::stream::{FuturesOrdered, StreamExt};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset, TopicPartitionList};

use mot::actors::counters::Registry;
use mot::actors::instance_consul_state::InstanceConsulStateAgent;
use mot::actors::pipeline::{self, Agent, AgentContext};
use mot::actors::supervisor::{AgentEntry, Backoff, RegionSupervisor, Shutdown};
use mot::config::ClusterConfig;
use mot::models::consul::{
    ConsulAppState, ConsulCheck, ConsulNode, ConsulService, ConsulServiceEntry,
};
use mot::models::envelope::{Envelope, Kind};
use mot::topics::catalog;
use mot::topics::clients::{self, HomeCluster, HomeProducer};
use mot::topics::names::{RegionName, TopicName, ZoneName};
use mot::topics::topology::Topology;

use crate::profile::Profile;
use crate::report::{Figure, Section};
use crate::Env;

/// One service's Consul state in zone `a`: one instance.
pub fn consul_state(i: usize) -> ConsulAppState {
    let id = format!("svc-{i}-1");
    ConsulAppState {
        service: format!("svc-{i}"),
        zone: ZoneName::parse("a").unwrap(),
        entries: vec![ConsulServiceEntry {
            node: ConsulNode {
                node: format!("node-{}", i % 50),
                address: format!("10.1.{}.{}", i % 200, i % 250),
                datacenter: None,
            },
            service: ConsulService {
                id: id.clone(),
                service: format!("svc-{i}"),
                tags: vec!["http".into(), "v1".into()],
                address: String::new(),
                port: 20000 + (i % 10000) as u16,
                meta: [(
                    "mot-deployment-id".to_owned(),
                    "0b6a3f4e-5d57-4c3e-9a55-6f1c3f2a9b10".to_owned(),
                )]
                .into_iter()
                .collect(),
            },
            checks: vec![ConsulCheck {
                check_id: format!("service:{id}"),
                name: "http".into(),
                status: "passing".into(),
                output: "HTTP GET /health: 200 OK".into(),
                service_id: id,
            }],
        }],
    }
}

const TIMEOUT: Duration = Duration::from_secs(10);

/// `ask`'s answer, asked again for up to a minute: a topic created a moment ago may not have its
/// leaders yet.
fn again<T>(mut ask: impl FnMut() -> Result<T, rdkafka::error::KafkaError>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match ask() {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("kafka: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// How many partitions `topic` has, once its metadata shows them.
fn partitions(consumer: &BaseConsumer, topic: &str) -> i32 {
    again(|| {
        let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
        match metadata.topics()[0].partitions().len() {
            0 => Err(rdkafka::error::KafkaError::MetadataFetch(
                rdkafka::types::RDKafkaErrorCode::LeaderNotAvailable,
            )),
            n => Ok(n as i32),
        }
    })
}

/// Commits `group`'s offsets at the end of `topic`: its next consumer starts with what is
/// produced from now on (earlier runs' records stay unread).
pub fn commit_at_end(cluster: &ClusterConfig, group: &str, topic: &str) {
    let consumer: BaseConsumer = clients::consumer_config(cluster, group)
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions(&consumer, topic) {
        let high = again(|| {
            consumer
                .fetch_watermarks(topic, p, TIMEOUT)
                .map(|(_, high)| high)
        });
        list.add_partition_offset(topic, p, Offset::Offset(high))
            .unwrap();
    }
    consumer.commit(&list, CommitMode::Sync).expect("commit");
}

/// Produces `records` (key, value) to `topic` and waits for every acknowledgement.
pub async fn produce_all(producer: &HomeProducer, topic: &str, records: &[(String, Vec<u8>)]) {
    for chunk in records.chunks(10_000) {
        let deliveries: Vec<_> = chunk
            .iter()
            .map(|(k, v)| loop {
                match producer
                    .inner
                    .send_result(FutureRecord::to(topic).key(k).payload(v))
                {
                    Ok(delivery) => break delivery,
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            })
            .collect();
        for delivery in deliveries {
            delivery.await.expect("delivery").expect("acknowledged");
        }
    }
}

/// `n` records for the agent's input, each service twice in a row: half change something (the
/// first sight of an instance), half change nothing.
fn inputs(region: &RegionName, n: usize, salt: usize) -> Vec<(String, Vec<u8>)> {
    (0..n / 2)
        .flat_map(|i| {
            let state = consul_state(salt * 1_000_000 + i);
            let env = Envelope::new(
                Kind::Updated,
                state.key(),
                region.clone(),
                mot::models::envelope::now_us(),
                state,
            );
            let value = serde_json::to_vec(&env).unwrap();
            [(env.key.clone(), value.clone()), (env.key, value)]
        })
        .collect()
}

async fn agent_run(env: &Env, run: usize, n: usize, profiles: &mut String) -> (f64, usize) {
    let region = env.region(&format!("p{run}"));
    let config = env.config(std::slice::from_ref(&region));
    let topology = Topology::checked(&config).expect("bench topology");
    let name = RegionName::parse(&region).unwrap();
    let home = topology.region_home(&name).unwrap();
    clients::ensure_topics(&topology, &home.admin())
        .await
        .expect("topics");
    let input = TopicName::local(&catalog::CONSUL_APP_STATE.base());
    let registry = Registry::default();
    let ctx = AgentContext {
        region: config.region(&name).unwrap().clone(),
        topology: topology.clone(),
        home: home.clone(),
        counters: registry.get(InstanceConsulStateAgent::NAME, &name),
        route: None,
        store: Default::default(),
        producers: Default::default(),
        sources: Default::default(),
        workers: Default::default(),
    };
    let group = pipeline::consumer_group(InstanceConsulStateAgent::NAME, &ctx);
    let cluster = config.cluster(home.name()).unwrap().clone();
    commit_at_end(&cluster, &group, input.as_str());
    let records = inputs(&name, n, run);
    let bytes = records.iter().map(|(_, v)| v.len()).sum::<usize>() / records.len();
    produce_all(&home.producer().unwrap(), input.as_str(), &records).await;

    let counters = ctx.counters.clone();
    let supervisor = RegionSupervisor::regional(
        topology,
        name,
        &[AgentEntry::of::<InstanceConsulStateAgent>()],
        registry,
        Backoff::default(),
    );
    let (supervisor, arbiter) = crate::on_own_thread(supervisor);
    let load = std::sync::atomic::Ordering::Relaxed;
    crate::until(Duration::from_secs(120), || {
        counters.records_in.load(load) > 0
    })
    .await
    .expect("the agent consumes");
    let started = Instant::now();
    let profile = (run == 0)
        .then(|| Profile::start("InstanceConsulStateAgent, 1. agent pipeline", env.quick));
    crate::until(Duration::from_secs(600), || {
        counters.published.load(load) as usize == n / 2
            && counters.unchanged.load(load) as usize == n / 2
    })
    .await
    .unwrap_or_else(|| panic!("the agent did not finish: {:?}", counters.snapshot()));
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(profile) = profile {
        profile.finish(profiles);
    }
    let _ = supervisor.send(Shutdown).await;
    arbiter.stop();
    ((n - 1) as f64 / elapsed, bytes)
}

async fn bare_run(env: &Env, run: usize, n: usize) -> f64 {
    let region = env.region(&format!("q{run}"));
    let config = env.config(std::slice::from_ref(&region));
    let topology = Topology::checked(&config).expect("bench topology");
    let name = RegionName::parse(&region).unwrap();
    let home: HomeCluster = topology.region_home(&name).unwrap();
    clients::ensure_topics(&topology, &home.admin())
        .await
        .expect("topics");
    let input = TopicName::local(&catalog::CONSUL_APP_STATE.base());
    // The bare loop writes where the agent writes, on the same cluster: the instance topic.
    let output = TopicName::local(&catalog::INSTANCE_STATE_CHANGE.base());
    let group = format!("bench-bare-{region}");
    let cluster = config.cluster(home.name()).unwrap().clone();
    commit_at_end(&cluster, &group, input.as_str());
    produce_all(
        &home.producer().unwrap(),
        input.as_str(),
        &inputs(&name, n, 100 + run),
    )
    .await;

    let consumer = home.consumer(&group).expect("consumer");
    consumer.subscribe(&[input.as_str()]).unwrap();
    let producer = home.producer().unwrap();
    let mut inflight = FuturesOrdered::new();
    let (mut received, mut settled) = (0usize, 0usize);
    let mut started = None;
    while settled < n {
        tokio::select! {
            Some((delivered, partition, offset)) = inflight.next(), if !inflight.is_empty() => {
                let delivered: Result<_, _> = delivered;
                delivered.expect("acknowledged");
                consumer.store_offset(input.as_str(), partition, offset).unwrap();
                settled += 1;
            }
            message = consumer.recv(), if received < n && inflight.len() < pipeline::MAX_IN_FLIGHT => {
                let message = message.expect("consume");
                started.get_or_insert_with(Instant::now);
                received += 1;
                let (partition, offset) = (message.partition(), message.offset());
                let mut record = FutureRecord::to(output.as_str());
                if let Some(key) = message.key() {
                    record = record.key(key);
                }
                if let Some(payload) = message.payload() {
                    record = record.payload(payload);
                }
                let delivery = producer.inner.send_result(record).map_err(|(e, _)| e).expect("enqueue");
                inflight.push_back(async move {
                    (delivery.await.map_err(|_| "cancelled").and_then(|r| r.map_err(|_| "refused")), partition, offset)
                });
            }
        }
    }
    let elapsed = started.unwrap().elapsed().as_secs_f64();
    let _ = consumer.commit_consumer_state(CommitMode::Sync);
    (n - 1) as f64 / elapsed
}

pub async fn run(env: &Env, profiles: &mut String) -> Section {
    let n = env.size(40_000, 400);
    let mut section = Section::new(
        "pipeline",
        "Agent pipeline vs bare rdkafka",
        &format!(
            "{n} records on `mot-consul-app-state` of the bench's regional cluster, each service \
             twice in a row (half change an instance, half change nothing). InstanceConsulStateAgent \
             decodes, converts, diffs against the last-record cache and publishes the changes to \
             `mot-instance-state-change`; the baseline is a bare rdkafka loop with the same consumer \
             and producer settings (mot's) that forwards every record to the same topic, storing \
             each offset once its record is acknowledged, at most {} in flight as in mot. Timed from \
             the first record consumed to the last acknowledged.",
            pipeline::MAX_IN_FLIGHT
        ),
    );
    let (mut agent, mut bare, mut size) = (Vec::new(), Vec::new(), 0);
    for run in 0..env.runs() {
        bare.push(bare_run(env, run, n).await);
        let (rate, bytes) = agent_run(env, run, n, profiles).await;
        agent.push(rate);
        size = bytes;
    }
    let a = section.figure(Figure::new("InstanceConsulStateAgent", "records/s", agent));
    let b = section.figure(Figure::new(
        "bare rdkafka consume -> produce",
        "records/s",
        bare,
    ));
    section.ratio("agent / bare rdkafka", a, b);
    section.note(format!(
        "record size: {size} bytes (an envelope holding one service's Consul state)"
    ));
    section.note(
        "the agent publishes half as many records as the bare loop (the unchanged half is diffed \
         away); the bare loop does no decoding, no validation and no diffing",
    );
    section
}
