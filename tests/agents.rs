//! The agent machinery against real Kafka, through the seed's example agent,
//! InstanceConsulStateAgent: records in, changes out, restarts, poison records, supervision.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use actix::{Actor, Addr};
use rdkafka::message::Headers;
use rdkafka::producer::FutureRecord;
use rdkafka::Message;

use mot::actors::counters::{CountersSnapshot, Registry};
use mot::actors::instance_consul_state::InstanceConsulStateAgent;
use mot::actors::pipeline::{
    self, Agent, AgentContext, Incoming, Outcome, Outgoing, PipelineError, Source,
};
use mot::actors::poller::{PollError, Poller};
use mot::actors::supervisor::{AgentEntry, Backoff, RegionSupervisor, Shutdown};
use mot::config::Config;
use mot::models::consul::{
    ConsulAppState, ConsulCheck, ConsulNode, ConsulService, ConsulServiceEntry,
};
use mot::models::envelope::{self, Envelope, Kind};
use mot::models::instance::InstanceInfo;
use mot::topics::catalog;
use mot::topics::clients::{self, HomeProducer};
use mot::topics::names::{ClusterName, RegionName, TopicName, ZoneName};
use mot::topics::topology::Topology;

// Test regions share the dev clusters' bare regional topics, so agents see (and skip) other
// regions' records; each test homes its regions on a cluster of its own to keep that small, and
// asserts on its own region's output.

struct Harness {
    topology: Topology,
    producer: HomeProducer,
    registry: Registry,
}

impl Harness {
    /// Regions homed on `home`, whose topics exist there (as `mot run` ensures at start).
    async fn new(home: &str, regions: &[&str]) -> Self {
        common::init_tracing();
        let pairs: Vec<(&str, &str)> = regions.iter().map(|r| (*r, home)).collect();
        // Shared consumers on: the shared-consumer test needs them, the others run with them.
        let config = Config::from_toml(
            Path::new("agents-test.toml"),
            &format!(
                "[node]\nshared_consumers = true\n\n{}",
                common::topology_toml(&pairs, "mot")
            ),
        )
        .unwrap();
        let topology = Topology::new(&config);
        let admin = topology
            .cluster_admin(&ClusterName::parse(home).unwrap())
            .unwrap();
        clients::ensure_topics(&topology, &admin).await.unwrap();
        let home = topology
            .region_home(&RegionName::parse(regions[0]).unwrap())
            .unwrap();
        Self {
            producer: home.producer().unwrap(),
            topology,
            registry: Registry::default(),
        }
    }

    fn start(
        &self,
        region: &str,
        agents: Vec<AgentEntry>,
        backoff: Backoff,
    ) -> Addr<RegionSupervisor> {
        RegionSupervisor::regional(
            self.topology.clone(),
            RegionName::parse(region).unwrap(),
            &agents,
            self.registry.clone(),
            backoff,
        )
        .start()
    }

    fn counters(&self, agent: &'static str, region: &str) -> CountersSnapshot {
        self.registry
            .get(agent, &RegionName::parse(region).unwrap())
            .snapshot()
    }

    async fn send_raw(&self, key: &str, value: &[u8]) {
        self.producer
            .inner
            .send(
                FutureRecord::to("mot-consul-app-state")
                    .key(key)
                    .payload(value),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }

    async fn send_state(&self, region: &str, kind: Kind, state: ConsulAppState) {
        let env = Envelope::new(
            kind,
            state.key(),
            RegionName::parse(region).unwrap(),
            envelope::now_us(),
            state,
        );
        self.send_raw(&env.key, &serde_json::to_vec(&env).unwrap())
            .await;
    }

    /// Every InstanceInfo change of `region` on the output topic, in order per key.
    async fn changes(&self, region: &str) -> BTreeMap<String, Vec<(Kind, u16)>> {
        let home = self
            .topology
            .region_home(&RegionName::parse(region).unwrap())
            .unwrap();
        let topic = TopicName::local(&catalog::INSTANCE_STATE_CHANGE.base());
        let mut out: BTreeMap<String, Vec<(Kind, u16)>> = BTreeMap::new();
        pipeline::read_to_end(&home, &topic, &common::unique("reader"), |msg| {
            if let Ok(env) = envelope::decode::<InstanceInfo>(msg.key(), msg.payload()) {
                if env.origin.as_str() == region {
                    out.entry(env.key.clone())
                        .or_default()
                        .push((env.kind, env.payload.port));
                }
            }
        })
        .await
        .unwrap();
        out
    }
}

fn entry(service: &str, id: &str, port: u16, status: &str) -> ConsulServiceEntry {
    ConsulServiceEntry {
        node: ConsulNode {
            node: "node-1".into(),
            address: "10.1.0.1".into(),
            datacenter: None,
        },
        service: ConsulService {
            id: id.into(),
            service: service.into(),
            tags: vec!["http".into()],
            address: String::new(),
            port,
            meta: Default::default(),
        },
        checks: vec![ConsulCheck {
            check_id: format!("service:{id}"),
            name: "http".into(),
            status: status.into(),
            output: String::new(),
            service_id: id.into(),
        }],
    }
}

fn state(service: &str, zone: &str, entries: Vec<ConsulServiceEntry>) -> ConsulAppState {
    ConsulAppState {
        service: service.into(),
        zone: ZoneName::parse(zone).unwrap(),
        entries,
    }
}

fn key(region: &str, zone: &str, service: &str, id: &str) -> String {
    format!("{region}/{zone}/{service}/{id}")
}

const AGENT: &str = InstanceConsulStateAgent::NAME;

fn fast_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(400),
        healthy_after: Duration::from_secs(60),
    }
}

#[actix_web::test]
async fn consul_states_in_become_exactly_the_expected_changes_in_order_per_key() {
    let region = common::unique_region();
    let r = region.as_str();
    let h = Harness::new("test-us-east-1", &[r]).await;
    let supervisor = h.start(
        r,
        vec![AgentEntry::of::<InstanceConsulStateAgent>()],
        Backoff::default(),
    );
    let svc = format!("svc-{}", common::unique("").replace('_', ""));
    let s = svc.as_str();

    h.send_state(
        r,
        Kind::Snapshot,
        state(
            s,
            "a",
            vec![entry(s, "i1", 1, "passing"), entry(s, "i2", 2, "passing")],
        ),
    )
    .await;
    h.send_state(
        r,
        Kind::Snapshot,
        state(s, "b", vec![entry(s, "j1", 7, "passing")]),
    )
    .await;
    h.send_state(
        r,
        Kind::Snapshot,
        state(
            s,
            "a",
            vec![entry(s, "i1", 1, "passing"), entry(s, "i2", 2, "passing")],
        ),
    )
    .await;
    h.send_state(
        r,
        Kind::Snapshot,
        state(
            s,
            "a",
            vec![entry(s, "i1", 1, "passing"), entry(s, "i2", 22, "passing")],
        ),
    )
    .await;
    h.send_state(
        r,
        Kind::Snapshot,
        state(s, "a", vec![entry(s, "i1", 1, "passing")]),
    )
    .await;
    h.send_state(r, Kind::Snapshot, state(s, "a", vec![])).await;

    // Six changes, and the tombstone after each of the two deletions.
    common::eventually(60, "six changes and two tombstones published", || {
        h.counters(AGENT, r).published >= 8
    })
    .await;
    common::eventually(60, "the unchanged state counted", || {
        h.counters(AGENT, r).unchanged >= 1
    })
    .await;
    let c = h.counters(AGENT, r);
    assert_eq!((c.published, c.unchanged), (8, 1), "{c:?}");

    let changes = h.changes(r).await;
    let expected: BTreeMap<String, Vec<(Kind, u16)>> = [
        (
            key(r, "a", s, "i1"),
            vec![(Kind::Created, 1), (Kind::Deleted, 1)],
        ),
        (
            key(r, "a", s, "i2"),
            vec![(Kind::Created, 2), (Kind::Updated, 22), (Kind::Deleted, 22)],
        ),
        (key(r, "b", s, "j1"), vec![(Kind::Created, 7)]),
    ]
    .into();
    assert_eq!(changes, expected);
    supervisor.send(Shutdown).await.unwrap();
}

#[actix_web::test]
async fn a_restart_publishes_what_changed_while_down_and_reannounces_nothing() {
    let region = common::unique_region();
    let r = region.as_str();
    let h = Harness::new("production-us-west-2", &[r]).await;
    let s = "checkout";
    let agents = || vec![AgentEntry::of::<InstanceConsulStateAgent>()];

    let first = h.start(r, agents(), Backoff::default());
    h.send_state(
        r,
        Kind::Snapshot,
        state(
            s,
            "a",
            vec![
                entry(s, "i1", 1, "passing"),
                entry(s, "i2", 2, "passing"),
                entry(s, "i3", 3, "passing"),
            ],
        ),
    )
    .await;
    common::eventually(60, "first state processed", || {
        h.counters(AGENT, r).published >= 3
    })
    .await;
    first.send(Shutdown).await.unwrap();

    // While the agent is down: i2 changes, i3 disappears, another service appears.
    h.send_state(
        r,
        Kind::Snapshot,
        state(
            s,
            "a",
            vec![entry(s, "i1", 1, "passing"), entry(s, "i2", 20, "passing")],
        ),
    )
    .await;
    h.send_state(
        r,
        Kind::Snapshot,
        state("search", "b", vec![entry("search", "k1", 9, "passing")]),
    )
    .await;

    let restarted = Registry::default();
    let second = RegionSupervisor::regional(
        h.topology.clone(),
        RegionName::parse(r).unwrap(),
        &agents(),
        restarted.clone(),
        Backoff::default(),
    )
    .start();
    let counters = || {
        restarted
            .get(AGENT, &RegionName::parse(r).unwrap())
            .snapshot()
    };
    // Three changes, and the tombstone after i3's deletion.
    common::eventually(60, "records written while down processed", || {
        counters().published >= 4
    })
    .await;
    let c = counters();
    assert_eq!(
        c.records_in - c.skipped - c.dead_lettered,
        2,
        "resumes after the committed offset: {c:?}"
    );
    assert_eq!((c.published, c.unchanged), (4, 0), "{c:?}");

    let changes = h.changes(r).await;
    assert_eq!(
        changes[&key(r, "a", s, "i1")],
        [(Kind::Created, 1)],
        "unchanged i1 is not re-announced"
    );
    assert_eq!(
        changes[&key(r, "a", s, "i2")],
        [(Kind::Created, 2), (Kind::Updated, 20)]
    );
    assert_eq!(
        changes[&key(r, "a", s, "i3")],
        [(Kind::Created, 3), (Kind::Deleted, 3)],
        "the deletion while down is published"
    );
    assert_eq!(changes[&key(r, "b", "search", "k1")], [(Kind::Created, 9)]);
    second.send(Shutdown).await.unwrap();
}

#[actix_web::test]
async fn poison_records_are_dead_lettered_with_the_reason_and_the_pipeline_moves_on() {
    let region = common::unique_region();
    let r = region.as_str();
    let h = Harness::new("stage-us-east-1", &[r]).await;
    let supervisor = h.start(
        r,
        vec![AgentEntry::of::<InstanceConsulStateAgent>()],
        Backoff::default(),
    );

    let malformed_key = common::unique("malformed");
    let future_key = common::unique("v9");
    h.send_raw(&malformed_key, b"{\"v\": 1, \"kind\": ").await;
    let future = format!(
        "{{\"v\":9,\"id\":\"00000000-0000-0000-0000-000000000000\",\"kind\":\"snapshot\",\"key\":\"{future_key}\",\"origin\":\"{r}\",\"time_us\":1,\"payload\":{{}}}}"
    );
    h.send_raw(&future_key, future.as_bytes()).await;
    h.send_state(
        r,
        Kind::Snapshot,
        state("after", "a", vec![entry("after", "x1", 5, "passing")]),
    )
    .await;

    common::eventually(60, "the valid record after the poison is processed", || {
        h.counters(AGENT, r).published >= 1
    })
    .await;
    let changes = h.changes(r).await;
    assert_eq!(changes[&key(r, "a", "after", "x1")], [(Kind::Created, 5)]);

    // Every agent reading the shared topic dead-letters these; look for ours.
    let home = h
        .topology
        .region_home(&RegionName::parse(r).unwrap())
        .unwrap();
    let dead_letters = TopicName::local(&catalog::DEAD_LETTERS.base());
    let mut reasons: BTreeMap<String, String> = BTreeMap::new();
    common::eventually(30, "dead letters acknowledged", || {
        h.counters(AGENT, r).dead_lettered >= 2
    })
    .await;
    pipeline::read_to_end(&home, &dead_letters, &common::unique("dlq-reader"), |msg| {
        let key = msg
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        let Some(headers) = msg.headers() else { return };
        let header = |name: &str| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        if header(pipeline::HEADER_DLQ_REGION).as_deref() == Some(r) {
            assert_eq!(
                header(pipeline::HEADER_DLQ_TOPIC).as_deref(),
                Some("mot-consul-app-state")
            );
            assert!(header(pipeline::HEADER_DLQ_OFFSET).is_some_and(|o| o.parse::<i64>().is_ok()));
            assert!(header(pipeline::HEADER_DLQ_PARTITION).is_some());
            reasons.insert(key, header(pipeline::HEADER_DLQ_REASON).unwrap_or_default());
        }
    })
    .await
    .unwrap();
    assert!(
        reasons[&malformed_key].starts_with("malformed json"),
        "{reasons:?}"
    );
    assert!(
        reasons[&future_key].starts_with("unsupported envelope version Some(9)"),
        "{reasons:?}"
    );
    assert_eq!(
        h.counters(AGENT, r).restarts,
        0,
        "bad data is not a failure"
    );
    supervisor.send(Shutdown).await.unwrap();
}

/// An agent that panics on every record of its region whose key says `boom`: a failing agent,
/// for the supervision test. It is written as any agent is, which shows what an agent author
/// writes.
struct BoomAgent {
    region: RegionName,
}

impl Agent for BoomAgent {
    const NAME: &'static str = "BoomAgent";

    fn source(_: &AgentContext) -> Result<Source, PipelineError> {
        Ok(Source::Home(vec![TopicName::local(
            &catalog::CONSUL_APP_STATE.base(),
        )]))
    }

    async fn build(ctx: &AgentContext) -> Result<Self, PipelineError> {
        Ok(Self {
            region: ctx.region.name.clone(),
        })
    }

    async fn process(&mut self, incoming: &Incoming) -> Outcome {
        let key = String::from_utf8_lossy(incoming.key.as_deref().unwrap_or_default()).into_owned();
        if key == format!("boom-{}", self.region) {
            panic!("boom in {}", self.region);
        }
        Outcome::Skip
    }
}

#[actix_web::test]
async fn a_failing_agent_is_restarted_with_backoff_while_another_region_keeps_processing() {
    let failing = common::unique_region();
    let healthy = common::unique_region();
    let (f, g) = (failing.as_str(), healthy.as_str());
    let h = Harness::new("production-us-east-1", &[f, g]).await;
    let a = h.start(f, vec![AgentEntry::of::<BoomAgent>()], fast_backoff());
    let b = h.start(
        g,
        vec![AgentEntry::of::<InstanceConsulStateAgent>()],
        fast_backoff(),
    );

    h.send_raw(&format!("boom-{f}"), b"{}").await;
    for i in 0..10u16 {
        h.send_state(
            g,
            Kind::Snapshot,
            state(
                "steady",
                "a",
                vec![entry("steady", "s1", 100 + i, "passing")],
            ),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    common::eventually(60, "the healthy region processed all ten", || {
        h.counters(AGENT, g).records_in >= 10
    })
    .await;
    common::eventually(60, "the failing agent restarted repeatedly", || {
        h.counters("BoomAgent", f).restarts >= 4
    })
    .await;

    let failing_counters = h.counters("BoomAgent", f);
    assert!(
        failing_counters.last_backoff_ms >= 400,
        "backoff grew to its cap: {failing_counters:?}"
    );
    common::eventually(60, "the healthy region's ten updates acknowledged", || {
        h.counters(AGENT, g).published >= 10
    })
    .await;
    let healthy_counters = h.counters(AGENT, g);
    assert_eq!(healthy_counters.restarts, 0);
    assert_eq!(healthy_counters.published, 10, "{healthy_counters:?}");
    let changes = h.changes(g).await;
    let ports: Vec<u16> = changes[&key(g, "a", "steady", "s1")]
        .iter()
        .map(|(_, p)| *p)
        .collect();
    assert_eq!(
        ports,
        (100..110).collect::<Vec<_>>(),
        "every update, in order, while the other region failed"
    );

    a.send(Shutdown).await.unwrap();
    b.send(Shutdown).await.unwrap();
}

/// The Consul the poller test's poller reads (a relay to the real one) and the service it reads
/// (set by that test).
static CONSUL_URL: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();

/// A poller as a platform agent author writes one: GET a Consul health endpoint, turn it into a
/// ConsulAppState, publish it when it changed.
struct TestConsulPoller {
    region: RegionName,
    last: mot::actors::cache::LastRecordCache,
}

impl Poller for TestConsulPoller {
    const NAME: &'static str = "TestConsulPoller";

    async fn build(ctx: &AgentContext) -> Result<Self, PipelineError> {
        Ok(Self {
            region: ctx.region.name.clone(),
            last: Default::default(),
        })
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(50)
    }

    async fn poll(&mut self, http: &reqwest::Client) -> Result<Vec<Outgoing>, PollError> {
        let (base, service) = CONSUL_URL.get().unwrap();
        let url = format!("{base}/v1/health/service/{service}");
        let response = http
            .get(url)
            .header("X-Consul-Token", common::consul::MANAGEMENT_TOKEN)
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(PollError::Status {
                status: response.status().as_u16(),
                body: String::new(),
            });
        }
        let entries: Vec<ConsulServiceEntry> = response.json().await?;
        let state = state(service, "a", entries);
        let json = serde_json::to_vec(&state).unwrap();
        let changes = self.last.diff_group(service, vec![(state.key(), json)]);
        Ok(changes
            .into_iter()
            .map(|c| {
                let head = Envelope::new(
                    Kind::Snapshot,
                    c.key,
                    self.region.clone(),
                    envelope::now_us(),
                    (),
                );
                let cause = Incoming::unprompted();
                Outgoing::envelope(
                    TopicName::local(&catalog::CONSUL_APP_STATE.base()),
                    "ConsulAppState",
                    head,
                    &c.json,
                    &cause,
                )
                .unwrap()
            })
            .collect())
    }
}

#[actix_web::test]
async fn a_poller_publishes_platform_state_on_change_and_rides_out_platform_errors() {
    use common::consul::{call, Relay, URL};
    use reqwest::Method;
    // The real Consul, through a relay the test cuts to make the platform unanswering.
    let service = format!("web-{}", common::unique("").replace('_', ""));
    let relay = Relay::to("127.0.0.1:8500").await;
    CONSUL_URL
        .set((relay.url.clone(), service.clone()))
        .unwrap();
    let register = |n: u16| {
        let service = service.clone();
        async move {
            let id = format!("{service}-w{n}");
            call(
                Method::PUT,
                URL,
                "/v1/agent/service/register",
                Some(serde_json::json!({
                    "ID": id, "Name": service, "Port": n,
                    "Check": {"CheckID": format!("service:{id}"), "TTL": "10m", "Status": "passing"},
                })),
            )
            .await;
        }
    };
    register(1).await;
    register(2).await;
    let (w1, w2) = (format!("{service}-w1"), format!("{service}-w2"));

    let region = common::unique_region();
    let r = region.as_str();
    let h = Harness::new("production-us-west-2", &[r]).await;
    let supervisor = h.start(
        r,
        vec![
            AgentEntry::poller::<TestConsulPoller>(),
            AgentEntry::of::<InstanceConsulStateAgent>(),
        ],
        fast_backoff(),
    );
    common::eventually(60, "both instances announced", || {
        h.counters(AGENT, r).published >= 2
    })
    .await;
    common::eventually(60, "polls find nothing new", || {
        h.counters("TestConsulPoller", r).unchanged >= 3
    })
    .await;
    assert_eq!(
        h.counters("TestConsulPoller", r).published,
        1,
        "one change, one record"
    );

    relay.down();
    common::eventually(60, "platform errors counted", || {
        h.counters("TestConsulPoller", r).poll_errors >= 2
    })
    .await;
    relay.up();
    call(
        Method::PUT,
        URL,
        &format!("/v1/agent/service/deregister/{w2}"),
        None,
    )
    .await;
    common::eventually(60, "the disappearance published", || {
        h.counters(AGENT, r).published >= 3
    })
    .await;

    let changes = h.changes(r).await;
    assert_eq!(changes[&key(r, "a", &service, &w1)], [(Kind::Created, 1)]);
    assert_eq!(
        changes[&key(r, "a", &service, &w2)],
        [(Kind::Created, 2), (Kind::Deleted, 2)]
    );
    assert_eq!(
        h.counters("TestConsulPoller", r).restarts,
        0,
        "a sick platform does not restart its poller"
    );
    supervisor.send(Shutdown).await.unwrap();
    call(
        Method::PUT,
        URL,
        &format!("/v1/agent/service/deregister/{w1}"),
        None,
    )
    .await;
}

/// Keyspace of the Cassandra-sink test (set by that test).
static SINK_KEYSPACE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// An agent whose sink is Cassandra: it writes each ConsulAppState of its region as a row, with
/// the event time as the write timestamp, and reports the acknowledged write.
struct CassandraSinkAgent {
    region: RegionName,
    session: std::sync::Arc<scylla::client::session::Session>,
    insert: scylla::statement::prepared::PreparedStatement,
}

impl Agent for CassandraSinkAgent {
    const NAME: &'static str = "CassandraSinkAgent";

    fn source(_: &AgentContext) -> Result<Source, PipelineError> {
        Ok(Source::Home(vec![TopicName::local(
            &catalog::CONSUL_APP_STATE.base(),
        )]))
    }

    async fn build(ctx: &AgentContext) -> Result<Self, PipelineError> {
        let other = |e: &dyn std::fmt::Display| PipelineError::Other(e.to_string());
        let session = mot::store::connect(&ctx.topology.config().cassandra)
            .await
            .map_err(|e| other(&e))?;
        let ks = SINK_KEYSPACE.get().unwrap();
        let insert = session
            .prepare(format!(
                "INSERT INTO {ks}.states (key, instance_count) VALUES (?, ?) USING TIMESTAMP ?"
            ))
            .await
            .map_err(|e| other(&e))?;
        Ok(Self {
            region: ctx.region.name.clone(),
            session,
            insert,
        })
    }

    async fn process(&mut self, incoming: &Incoming) -> Outcome {
        let input = match incoming.decode::<ConsulAppState>() {
            Ok(input) => input,
            Err(rejected) => return rejected,
        };
        if input.origin != self.region {
            return Outcome::Skip;
        }
        let entries = input.payload.entries.len() as i32;
        match self
            .session
            .execute_unpaged(&self.insert, (&input.key, entries, input.time_us))
            .await
        {
            Ok(_) => Outcome::Stored(1),
            Err(e) => panic!("cassandra write failed: {e}"),
        }
    }
}

#[actix_web::test]
async fn a_cassandra_sink_stores_each_record_and_counts_the_acknowledged_writes() {
    let keyspace = common::unique("mot_sink");
    SINK_KEYSPACE.set(keyspace.clone()).unwrap();
    let config = common::dev_config();
    let session = mot::store::connect(&config.cassandra).await.unwrap();
    session
        .query_unpaged(format!("CREATE KEYSPACE {keyspace} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}"), ())
        .await
        .unwrap();
    session
        .query_unpaged(
            format!("CREATE TABLE {keyspace}.states (key text PRIMARY KEY, instance_count int)"),
            (),
        )
        .await
        .unwrap();

    let region = common::unique_region();
    let r = region.as_str();
    let h = Harness::new("test-us-east-1", &[r]).await;
    let supervisor = h.start(
        r,
        vec![AgentEntry::of::<CassandraSinkAgent>()],
        fast_backoff(),
    );
    h.send_state(
        r,
        Kind::Snapshot,
        state("web", "a", vec![entry("web", "w1", 1, "passing")]),
    )
    .await;
    h.send_state(r, Kind::Snapshot, state("web", "b", vec![]))
        .await;
    h.send_state(
        r,
        Kind::Snapshot,
        state(
            "web",
            "a",
            vec![
                entry("web", "w1", 1, "passing"),
                entry("web", "w2", 2, "passing"),
            ],
        ),
    )
    .await;
    common::eventually(60, "three writes acknowledged", || {
        h.counters("CassandraSinkAgent", r).published >= 3
    })
    .await;

    let rows = session
        .query_unpaged(
            format!("SELECT key, instance_count FROM {keyspace}.states"),
            (),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    let mut got: Vec<(String, i32)> = rows
        .rows::<(String, i32)>()
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    got.sort();
    assert_eq!(got, [("a/web".to_owned(), 2), ("b/web".to_owned(), 0)]);
    supervisor.send(Shutdown).await.unwrap();
    session
        .query_unpaged(format!("DROP KEYSPACE {keyspace}"), ())
        .await
        .unwrap();
}

static WINDOW_KEYSPACE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
/// Writes begun by WindowedSinkAgent, in the order they finished waiting.
static WINDOW_TICKET: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
static WINDOW_IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static WINDOW_MAX_IN_FLIGHT: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);
/// Whether the write of the `fail/web` record has failed once already.
static WINDOW_FAILED_ONCE: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// An agent whose Cassandra writes are windowed ([`Outcome::pending`]): each write first waits a
/// time that varies with the record (so writes finish out of order unless the pipeline keeps a
/// key's records in order), then records its ticket. The first write of key `fail/web` fails.
struct WindowedSinkAgent {
    region: RegionName,
    session: std::sync::Arc<scylla::client::session::Session>,
    insert: scylla::statement::prepared::PreparedStatement,
}

impl Agent for WindowedSinkAgent {
    const NAME: &'static str = "WindowedSinkAgent";

    fn source(_: &AgentContext) -> Result<Source, PipelineError> {
        Ok(Source::Home(vec![TopicName::local(
            &catalog::CONSUL_APP_STATE.base(),
        )]))
    }

    async fn build(ctx: &AgentContext) -> Result<Self, PipelineError> {
        let other = |e: &dyn std::fmt::Display| PipelineError::Other(e.to_string());
        let session = ctx.session().await?;
        let ks = WINDOW_KEYSPACE.get().unwrap();
        let insert = session
            .prepare(format!(
                "INSERT INTO {ks}.writes (key, ticket, time_us) VALUES (?, ?, ?)"
            ))
            .await
            .map_err(|e| other(&e))?;
        Ok(Self {
            region: ctx.region.name.clone(),
            session,
            insert,
        })
    }

    async fn process(&mut self, incoming: &Incoming) -> Outcome {
        use std::sync::atomic::Ordering::SeqCst;
        let input = match incoming.decode::<ConsulAppState>() {
            Ok(input) => input,
            Err(rejected) => return rejected,
        };
        if input.origin != self.region {
            return Outcome::Skip;
        }
        let (session, insert) = (self.session.clone(), self.insert.clone());
        Outcome::pending(async move {
            let now = WINDOW_IN_FLIGHT.fetch_add(1, SeqCst) + 1;
            WINDOW_MAX_IN_FLIGHT.fetch_max(now, SeqCst);
            let seq = input.payload.entries.len() as u64;
            tokio::time::sleep(Duration::from_millis((seq * 7) % 40)).await;
            WINDOW_IN_FLIGHT.fetch_sub(1, SeqCst);
            if input.key == "fail/web" && !WINDOW_FAILED_ONCE.swap(true, SeqCst) {
                return Outcome::Fail("the first write of fail/web fails".into());
            }
            let ticket = WINDOW_TICKET.fetch_add(1, SeqCst);
            match session
                .execute_unpaged(&insert, (&input.key, ticket, seq as i64))
                .await
            {
                Ok(_) => Outcome::Stored(1),
                Err(e) => Outcome::Fail(e.to_string()),
            }
        })
    }
}

#[actix_web::test]
async fn a_windowed_sink_writes_concurrently_keeps_each_keys_order_and_stores_offsets_in_order() {
    let keyspace = common::unique("mot_window");
    WINDOW_KEYSPACE.set(keyspace.clone()).unwrap();
    let config = common::dev_config();
    let session = mot::store::connect(&config.cassandra).await.unwrap();
    session
        .query_unpaged(format!("CREATE KEYSPACE {keyspace} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}"), ())
        .await
        .unwrap();
    session
        .query_unpaged(
            format!("CREATE TABLE {keyspace}.writes (key text, ticket bigint, time_us bigint, PRIMARY KEY (key, ticket))"),
            (),
        )
        .await
        .unwrap();

    let region = common::unique_region();
    let r = region.as_str();
    let h = Harness::new("stage-us-east-1", &[r]).await;
    // 60 records over 5 keys, each record's sequence number its count of entries. Key `fail`
    // first comes with record 24: its write fails once.
    let zones = ["a", "b", "c", "d", "fail"];
    let mut sent: Vec<(String, u64)> = Vec::new();
    for seq in 1..=60u64 {
        let zone = match seq {
            ..20 => zones[(seq % 4) as usize],
            _ => zones[(seq % 5) as usize],
        };
        let entries = (0..seq)
            .map(|i| entry("web", &format!("w{i}"), 1, "passing"))
            .collect();
        h.send_state(r, Kind::Snapshot, state("web", zone, entries))
            .await;
        sent.push((format!("{zone}/web"), seq));
    }
    let supervisor = h.start(
        r,
        vec![AgentEntry::of::<WindowedSinkAgent>()],
        fast_backoff(),
    );
    let read = || {
        let (session, keyspace) = (session.clone(), keyspace.clone());
        async move {
            let rows = session
                .query_unpaged(
                    format!("SELECT key, ticket, time_us FROM {keyspace}.writes"),
                    (),
                )
                .await
                .unwrap()
                .into_rows_result()
                .unwrap();
            rows.rows::<(String, i64, i64)>()
                .unwrap()
                .map(|r| r.unwrap())
                .collect::<Vec<_>>()
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let rows = loop {
        let rows = read().await;
        let written: std::collections::BTreeSet<i64> = rows.iter().map(|r| r.2).collect();
        if written.len() == sent.len() {
            break rows;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out: {} of {} records written",
            written.len(),
            sent.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    supervisor.send(Shutdown).await.unwrap();

    // Writes overlapped, within the window.
    let max = WINDOW_MAX_IN_FLIGHT.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        max > 1 && max <= config.node.sink_window,
        "writes in flight at most {max}"
    );
    // Each key's writes happened in the order its records were sent (a replay starts over,
    // in order again).
    let mut by_key: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    for (key, ticket, seq) in &rows {
        by_key.entry(key.clone()).or_default().push((*ticket, *seq));
    }
    for (key, writes) in &mut by_key {
        writes.sort();
        let seqs: Vec<i64> = writes.iter().map(|w| w.1).collect();
        let runs: Vec<&[i64]> = seqs.chunk_by(|a, b| a < b).collect();
        assert!(
            runs.iter().all(|run| run.windows(2).all(|w| w[0] < w[1])) && runs.len() <= 2,
            "{key}: written in the order {seqs:?}"
        );
    }
    // Offsets were stored in order: the record whose write failed was replayed and written
    // once, and every record before it was written exactly once (its offset committed).
    let count = |seq: u64| rows.iter().filter(|r| r.2 == seq as i64).count();
    let failed = sent
        .iter()
        .find(|(key, _)| key == "fail/web")
        .map(|(_, seq)| *seq)
        .unwrap();
    assert_eq!(count(failed), 1);
    for (_, seq) in sent.iter().filter(|(_, seq)| *seq < failed) {
        assert_eq!(count(*seq), 1, "record {seq} before the failure");
    }
    assert_eq!(h.counters("WindowedSinkAgent", r).restarts, 1);
    session
        .query_unpaged(format!("DROP KEYSPACE {keyspace}"), ())
        .await
        .unwrap();
}

static TOMBSTONE_TOPIC: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// InstanceConsulStateAgent's diffing (the last-record cache, rebuilt from its output on start,
/// deletions published as [`mot::actors::cache::Change::published_as`] says), publishing to a
/// topic of the test's own that compacts within seconds.
struct TombstoningAgent {
    region: RegionName,
    output: TopicName,
    cache: mot::actors::cache::LastRecordCache,
}

impl Agent for TombstoningAgent {
    const NAME: &'static str = "TombstoningAgent";

    fn source(_: &AgentContext) -> Result<Source, PipelineError> {
        Ok(Source::Home(vec![TopicName::local(
            &catalog::CONSUL_APP_STATE.base(),
        )]))
    }

    async fn build(ctx: &AgentContext) -> Result<Self, PipelineError> {
        let output = TopicName::parse(TOMBSTONE_TOPIC.get().unwrap()).unwrap();
        let cache = mot::actors::cache::LastRecordCache::rebuild(
            Self::NAME,
            ctx,
            &output,
            InstanceInfo::group,
        )
        .await?;
        Ok(Self {
            region: ctx.region.name.clone(),
            output,
            cache,
        })
    }

    async fn process(&mut self, incoming: &Incoming) -> Outcome {
        let input = match incoming.decode::<ConsulAppState>() {
            Ok(input) => input,
            Err(rejected) => return rejected,
        };
        if input.origin != self.region {
            return Outcome::Skip;
        }
        let current = mot::actors::instance_consul_state::instances(&self.region, &input.payload)
            .into_iter()
            .map(|i| (i.key(), serde_json::to_vec(&i).unwrap()))
            .collect();
        let group = format!("{}/{}", self.region, input.payload.zone);
        let mut records = Vec::new();
        for change in self.cache.diff_group(&group, current) {
            let head = Envelope::new(
                change.kind,
                change.key.clone(),
                self.region.clone(),
                input.time_us,
                (),
            );
            let record = Outgoing::envelope(
                self.output.clone(),
                "InstanceInfo",
                head,
                &change.json,
                incoming,
            )
            .unwrap();
            records.extend(change.published_as(record));
        }
        Outcome::Publish(records)
    }
}

#[actix_web::test]
async fn a_deleted_key_leaves_the_compacted_topic_and_a_rebuilt_cache_does_not_revive_it() {
    let region = common::unique_region();
    let r = region.as_str();
    let h = Harness::new("production-us-east-1", &[r]).await;
    let topic = TopicName::parse(&common::unique("mot-tombstones")).unwrap();
    TOMBSTONE_TOPIC.set(topic.to_string()).unwrap();
    // A topic that compacts as soon as the broker's cleaner comes round (every 15 s): segments
    // roll after 100 ms, no lag, tombstones dropped once compaction reached them.
    let quick = mot::config::KafkaConfig {
        partitions: 1,
        replication_factor: 1,
        compacted_topics: [
            ("segment.ms", "100"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("min.compaction.lag.ms", "0"),
            ("delete.retention.ms", "0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    };
    let cluster = ClusterName::parse("production-us-east-1").unwrap();
    let admin = h.topology.cluster_admin(&cluster).unwrap();
    clients::create_topics(
        &admin,
        &quick,
        &[(topic.clone(), &catalog::CONSUL_APP_STATE)],
    )
    .await
    .unwrap();
    let home = h
        .topology
        .region_home(&RegionName::parse(r).unwrap())
        .unwrap();
    // Every record of the topic now: (key, kind or "tombstone").
    let read = |home: mot::topics::clients::HomeCluster, topic: TopicName| async move {
        let mut seen = Vec::new();
        pipeline::read_to_end(&home, &topic, &common::unique("tombstone-reader"), |m| {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            let kind = match m.payload() {
                None => "tombstone".to_owned(),
                Some(v) => serde_json::from_slice::<serde_json::Value>(v)
                    .ok()
                    .and_then(|v| v["kind"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| "other".into()),
            };
            seen.push((key, kind));
        })
        .await
        .unwrap();
        seen
    };
    let w1 = format!("{r}/a/web/w1");
    let w2 = format!("{r}/a/web/w2");
    let w3 = format!("{r}/a/web/w3");
    let of = |seen: &[(String, String)], key: &str| -> Vec<String> {
        seen.iter()
            .filter(|(k, _)| k == key)
            .map(|(_, kind)| kind.clone())
            .collect()
    };

    let agent = h.start(
        r,
        vec![AgentEntry::of::<TombstoningAgent>()],
        fast_backoff(),
    );
    let two = vec![
        entry("web", "w1", 1, "passing"),
        entry("web", "w2", 2, "passing"),
    ];
    h.send_state(r, Kind::Snapshot, state("web", "a", two))
        .await;
    h.send_state(
        r,
        Kind::Snapshot,
        state("web", "a", vec![entry("web", "w2", 2, "passing")]),
    )
    .await;
    common::eventually(60, "w1's deletion published", || {
        h.counters("TombstoningAgent", r).published == 4
    })
    .await;
    let seen = read(home.clone(), topic.clone()).await;
    assert_eq!(of(&seen, &w1), ["created", "deleted", "tombstone"]);
    assert_eq!(of(&seen, &w2), ["created"]);

    // Compaction drops the deleted key, deletion and tombstone both (records of another key keep
    // the log dirty and its segments rolling).
    let filler = home.producer().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        filler
            .send(&Outgoing {
                topic: topic.clone(),
                key: Some(b"filler".to_vec()),
                value: Some(b"{}".to_vec()),
                headers: Vec::new(),
                timestamp_ms: None,
            })
            .await
            .unwrap();
        let seen = read(home.clone(), topic.clone()).await;
        if of(&seen, &w1).is_empty() {
            assert_eq!(of(&seen, &w2), ["created"], "the live key is kept");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "w1 still on the topic after 180 s: {:?}",
            of(&seen, &w1)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    agent.send(Shutdown).await.unwrap();

    // A restart rebuilds the cache from the compacted topic: w1 is not known, so it is neither
    // deleted again nor created; w2 is not re-announced; only w3 is new.
    let published_before = h.counters("TombstoningAgent", r).published;
    let agent = h.start(
        r,
        vec![AgentEntry::of::<TombstoningAgent>()],
        fast_backoff(),
    );
    let next = vec![
        entry("web", "w2", 2, "passing"),
        entry("web", "w3", 3, "passing"),
    ];
    h.send_state(r, Kind::Snapshot, state("web", "a", next))
        .await;
    common::eventually(60, "w3 published", || {
        h.counters("TombstoningAgent", r).published == published_before + 1
    })
    .await;
    agent.send(Shutdown).await.unwrap();
    let seen = read(home, topic).await;
    assert!(of(&seen, &w1).is_empty());
    assert_eq!(of(&seen, &w2), ["created"]);
    assert_eq!(of(&seen, &w3), ["created"]);
}

static SHARED_KEYSPACE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
/// The test's topic prefix: each region reads `<prefix>.<region>`.
static SHARED_TOPICS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
/// The region whose writes fail while it is set.
static SHARED_FAILING: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// An archival-like agent reading its region's own topic through the consumer its instances
/// share ([`Source::Region`]), writing each record's sequence number as a row and counting the
/// write; the failing region's writes fail.
struct SharedSinkAgent {
    region: RegionName,
    session: std::sync::Arc<scylla::client::session::Session>,
    insert: scylla::statement::prepared::PreparedStatement,
}

fn shared_topic(region: &RegionName) -> TopicName {
    TopicName::parse(&format!("{}.{region}", SHARED_TOPICS.get().unwrap())).unwrap()
}

impl Agent for SharedSinkAgent {
    const NAME: &'static str = "SharedSinkAgent";

    fn source(ctx: &AgentContext) -> Result<Source, PipelineError> {
        Ok(Source::Region(vec![shared_topic(&ctx.region.name)]))
    }

    async fn build(ctx: &AgentContext) -> Result<Self, PipelineError> {
        let session = ctx.session().await?;
        let ks = SHARED_KEYSPACE.get().unwrap();
        let insert = session
            .prepare(format!(
                "UPDATE {ks}.writes SET n = n + 1 WHERE region = ? AND seq = ?"
            ))
            .await
            .map_err(|e| PipelineError::Other(e.to_string()))?;
        Ok(Self {
            region: ctx.region.name.clone(),
            session,
            insert,
        })
    }

    async fn process(&mut self, incoming: &Incoming) -> Outcome {
        if SHARED_FAILING.lock().unwrap().as_deref() == Some(self.region.as_str()) {
            return Outcome::Fail("this region's sink is down".into());
        }
        let seq: i32 = String::from_utf8_lossy(incoming.value.as_deref().unwrap_or_default())
            .parse()
            .unwrap();
        match self
            .session
            .execute_unpaged(&self.insert, (self.region.as_str(), seq))
            .await
        {
            Ok(_) => Outcome::Stored(1),
            Err(e) => Outcome::Fail(e.to_string()),
        }
    }
}

#[actix_web::test]
async fn regions_on_one_shared_consumer_a_failing_one_stops_alone_and_catches_up_exactly() {
    let keyspace = common::unique("mot_shared");
    SHARED_KEYSPACE.set(keyspace.clone()).unwrap();
    SHARED_TOPICS
        .set(common::unique("mot-shared-test"))
        .unwrap();
    let config = common::dev_config();
    let session = mot::store::connect(&config.cassandra).await.unwrap();
    session
        .query_unpaged(format!("CREATE KEYSPACE {keyspace} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}"), ())
        .await
        .unwrap();
    session
        .query_unpaged(
            format!("CREATE TABLE {keyspace}.writes (region text, seq int, n counter, PRIMARY KEY (region, seq))"),
            (),
        )
        .await
        .unwrap();
    let (healthy, failing) = (common::unique_region(), common::unique_region());
    // A third region's topic does not exist yet when its agent joins (see the end).
    let late = common::unique_region();
    let h = Harness::new("production-us-west-2", &[&healthy, &failing, &late]).await;
    let cluster = ClusterName::parse("production-us-west-2").unwrap();
    let admin = h.topology.cluster_admin(&cluster).unwrap();
    let name = |r: &str| RegionName::parse(r).unwrap();
    let topics: Vec<(TopicName, &catalog::TopicSpec)> = [&healthy, &failing]
        .iter()
        .map(|r| (shared_topic(&name(r)), &catalog::INSTANCE_STATE_CHANGE))
        .collect();
    clients::create_topics(&admin, &h.topology.config().kafka, &topics)
        .await
        .unwrap();
    let send = |region: String, range: std::ops::RangeInclusive<i32>| {
        let producer = h.producer.clone();
        async move {
            for seq in range {
                producer
                    .send(&Outgoing {
                        topic: shared_topic(&RegionName::parse(&region).unwrap()),
                        key: Some(format!("k{}", seq % 7).into_bytes()),
                        value: Some(seq.to_string().into_bytes()),
                        headers: Vec::new(),
                        timestamp_ms: None,
                    })
                    .await
                    .unwrap();
            }
        }
    };
    let writes = |region: String| {
        let (session, keyspace) = (session.clone(), keyspace.clone());
        async move {
            let rows = session
                .query_unpaged(
                    format!("SELECT seq, n FROM {keyspace}.writes WHERE region = ?"),
                    (region,),
                )
                .await
                .unwrap()
                .into_rows_result()
                .unwrap();
            rows.rows::<(i32, scylla::value::Counter)>()
                .unwrap()
                .map(|r| r.unwrap())
                .map(|(seq, n)| (seq, n.0))
                .collect::<BTreeMap<i32, i64>>()
        }
    };

    // Both regions' agents run in one process: one consumer for the two of them.
    *SHARED_FAILING.lock().unwrap() = Some(failing.clone());
    let supervisors: Vec<_> = [&healthy, &failing, &late]
        .iter()
        .map(|r| h.start(r, vec![AgentEntry::of::<SharedSinkAgent>()], fast_backoff()))
        .collect();
    let group = format!(
        "mot-shared-sink-agent-{}-production-us-west-2",
        h.topology.config().topology.central
    );
    send(healthy.clone(), 1..=100).await;
    send(failing.clone(), 1..=100).await;

    // The failing region's sink fails and its agent restarts again and again; the healthy
    // region's records are all written meanwhile, each once.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while writes(healthy.clone()).await.len() < 100 {
        assert!(std::time::Instant::now() < deadline, "healthy region stuck");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    common::eventually(30, "the failing region restarted", || {
        h.counters("SharedSinkAgent", &failing).restarts >= 2
    })
    .await;
    assert_eq!(h.registry.sources.groups(), std::slice::from_ref(&group));
    assert!(writes(failing.clone()).await.is_empty());
    send(healthy.clone(), 101..=150).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while writes(healthy.clone()).await.len() < 150 {
        assert!(std::time::Instant::now() < deadline, "healthy region stuck");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Its sink is back: it joins the shared consumer again and catches up from its last
    // committed offset, nothing lost.
    *SHARED_FAILING.lock().unwrap() = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while writes(failing.clone()).await.len() < 100 {
        assert!(
            std::time::Instant::now() < deadline,
            "failing region never caught up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut regions = h.registry.sources.regions(&group);
    regions.sort();
    let mut all = vec![healthy.clone(), failing.clone(), late.clone()];
    all.sort();
    assert_eq!(regions, all, "every region reads through the one consumer");

    // A region whose topic is created only after its agent joined (a region's topics appear
    // with its first record), with the others: its records arrive once the consumer's metadata
    // shows the topic.
    common::eventually(30, "the late region joined", || {
        h.registry.sources.regions(&group).contains(&late)
    })
    .await;
    clients::create_topics(
        &admin,
        &h.topology.config().kafka,
        &[(shared_topic(&name(&late)), &catalog::INSTANCE_STATE_CHANGE)],
    )
    .await
    .unwrap();
    send(late.clone(), 1..=20).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while writes(late.clone()).await.len() < 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "the late region's records never arrived"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for supervisor in supervisors {
        supervisor.send(Shutdown).await.unwrap();
    }
    let expected = |n: i32| (1..=n).map(|s| (s, 1)).collect::<BTreeMap<i32, i64>>();
    assert_eq!(
        writes(healthy.clone()).await,
        expected(150),
        "each written once"
    );
    assert_eq!(
        writes(failing.clone()).await,
        expected(100),
        "each written once"
    );
    assert_eq!(
        writes(late.clone()).await,
        expected(20),
        "each written once"
    );
    session
        .query_unpaged(format!("DROP KEYSPACE {keyspace}"), ())
        .await
        .unwrap();
}
