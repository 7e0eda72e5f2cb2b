//! Benchmark 3: InstanceArchivalAgent (a region's suffixed topic on the central cluster -> Cassandra) vs a
//! plain scylla prepared-insert loop writing the same rows with the same concurrency (32 in
//! flight, the agent's sink window), and one at a time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use scylla::client::session::Session;
use uuid::Uuid;

use mot::actors::counters::Registry;
use mot::actors::instance_archival::InstanceArchivalAgent;
use mot::actors::instance_consul_state::instances;
use mot::actors::pipeline::Agent;
use mot::actors::supervisor::{AgentEntry, AgentSpec, Backoff, RegionSupervisor, Shutdown};
use mot::models::envelope::{Envelope, Kind};
use mot::models::instance::InstanceInfo;
use mot::topics::catalog;
use mot::topics::clients;
use mot::topics::names::RegionName;
use mot::topics::topology::Topology;

use crate::profile::Profile;
use crate::report::{Figure, Section};
use crate::Env;

/// The row the agent writes for an updated instance (`deployment_instances`), as CQL.
const INSERT: &str = "INSERT INTO {ks}.deployment_instances (deployment_id, region, zone, \
     instance_id, service, node, host, port, health, checks, tags, traffic, state, event_time) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?";

/// `n` instance updates of one deployment in `region`.
pub fn updates(region: &RegionName, deployment: Uuid, n: usize) -> Vec<Envelope<InstanceInfo>> {
    (0..n)
        .map(|i| {
            let mut info = instances(region, &crate::pipeline::consul_state(i)).remove(0);
            info.deployment_id = Some(deployment.to_string());
            Envelope::new(
                Kind::Updated,
                info.key(),
                region.clone(),
                mot::models::envelope::now_us() + i as i64,
                info,
            )
        })
        .collect()
}

async fn agent_run(env: &Env, run: usize, n: usize, profiles: &mut String) -> f64 {
    let region = env.region(&format!("a{run}"));
    let config = env.config(std::slice::from_ref(&region));
    let topology = Topology::checked(&config).expect("bench topology");
    let name = RegionName::parse(&region).unwrap();
    let central = topology.central_home();
    clients::ensure_topics(&topology, &central.admin())
        .await
        .expect("topics");
    let topic = topology.archived_topic(
        config.region(&name).unwrap(),
        &catalog::INSTANCE_STATE_CHANGE,
    );
    let records: Vec<(String, Vec<u8>)> = updates(&name, Uuid::new_v4(), n)
        .into_iter()
        .map(|e| (e.key.clone(), serde_json::to_vec(&e).unwrap()))
        .collect();
    crate::pipeline::produce_all(&central.producer().unwrap(), topic.as_str(), &records).await;

    let registry = Registry::default();
    let counters = registry.get(InstanceArchivalAgent::NAME, &name);
    let entry = AgentEntry::of::<InstanceArchivalAgent>();
    let supervisor = RegionSupervisor::new(
        topology.clone(),
        name,
        vec![AgentSpec {
            entry,
            name: InstanceArchivalAgent::NAME.to_owned(),
            home: central,
            route: None,
        }],
        registry,
        Backoff::default(),
    );
    let (supervisor, arbiter) = crate::on_own_thread(supervisor);
    let load = std::sync::atomic::Ordering::Relaxed;
    crate::until(Duration::from_secs(120), || {
        counters.records_in.load(load) > 0
    })
    .await
    .expect("the archival agent consumes");
    let started = Instant::now();
    let profile =
        (run == 0).then(|| Profile::start("InstanceArchivalAgent, 3. archival", env.quick));
    crate::until(Duration::from_secs(900), || {
        counters.published.load(load) as usize == n
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "the archival agent did not finish: {:?}",
            counters.snapshot()
        )
    });
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(profile) = profile {
        profile.finish(profiles);
    }
    let _ = supervisor.send(Shutdown).await;
    arbiter.stop();
    (n - 1) as f64 / elapsed
}

async fn driver_run(env: &Env, session: &Arc<Session>, n: usize, concurrency: usize) -> f64 {
    let statement = session
        .prepare(INSERT.replace("{ks}", &env.keyspace))
        .await
        .expect("prepare");
    let region = RegionName::parse(&env.region("d")).unwrap();
    let deployment = Uuid::new_v4();
    let rows = updates(&region, deployment, n);
    let started = Instant::now();
    let statement = &statement;
    stream::iter(rows.iter())
        .map(|e| async move {
            let i = &e.payload;
            let health = serde_json::to_value(i.health)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned();
            let checks = serde_json::to_string(&i.checks).unwrap();
            session
                .execute_unpaged(
                    statement,
                    (
                        deployment,
                        i.region.as_str(),
                        i.zone.as_str(),
                        i.instance_id.as_str(),
                        i.service.as_str(),
                        i.node.as_str(),
                        i.host.as_str(),
                        i32::from(i.port),
                        health.as_str(),
                        checks.as_str(),
                        &i.tags,
                        i.traffic,
                        "running",
                        mot::actors::archival::timestamp(e.time_us),
                        e.time_us,
                    ),
                )
                .await
                .expect("insert");
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<()>>()
        .await;
    n as f64 / started.elapsed().as_secs_f64()
}

pub async fn run(env: &Env, session: &Arc<Session>, profiles: &mut String) -> Section {
    let n = env.size(20_000, 300);
    let mut section = Section::new(
        "archival",
        "Archival vs the raw driver",
        &format!(
            "{n} instance updates of one deployment on a region's suffixed topic \
             (`mot-instance-state-change.<region>`) of the bench's central cluster. \
             InstanceArchivalAgent decodes each and writes its `deployment_instances` row \
             (`USING TIMESTAMP` the event time), storing the offset once Cassandra acknowledged; \
             timed from the first record consumed to the last acknowledged, with up to \
             `node.sink_window` (32) writes in flight through the shared consumer. The baseline \
             writes the same rows with a prepared insert on the same session settings, 32 at a \
             time (the agent's concurrency), and one at a time (the agent's before its sink was \
             windowed)."
        ),
    );
    let (mut agent, mut raw, mut wide) = (vec![], vec![], vec![]);
    for run in 0..env.runs() {
        raw.push(driver_run(env, session, n, 1).await);
        wide.push(driver_run(env, session, n, 32).await);
        agent.push(agent_run(env, run, n, profiles).await);
    }
    let a = section.figure(Figure::new("InstanceArchivalAgent", "rows/s", agent));
    let r = section.figure(Figure::new(
        "scylla prepared insert, 1 at a time",
        "rows/s",
        raw,
    ));
    let w = section.figure(Figure::new(
        "scylla prepared insert, 32 at a time",
        "rows/s",
        wide,
    ));
    section.ratio(
        "agent / driver at the same concurrency (32 in flight)",
        a,
        w,
    );
    section.ratio("agent / driver one at a time", a, r);
    section
}
