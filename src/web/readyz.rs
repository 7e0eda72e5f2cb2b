//! `GET /readyz`: whether this process can do its work, whatever roles it runs: every Kafka
//! cluster of its datacenters answers a metadata request, Cassandra answers a query (service and
//! persistence roles), and every region's agents are running (not waiting out a restart). 503
//! names each check that failed and why.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::Addr;
use actix_web::{web, HttpResponse};
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::Serialize;

use crate::actors::supervisor::{Ping, RegionSupervisor};
use crate::config::{CassandraConfig, Role};
use crate::store::SharedSession;
use crate::topics::clients::base_config;
use crate::topics::names::{ClusterName, RegionName};
use crate::topics::topology::Topology;

/// How long one check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// One check of `/readyz`.
#[derive(Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Check {
    fn new(name: String, outcome: Result<(), String>) -> Self {
        Self {
            name,
            ready: outcome.is_ok(),
            reason: outcome.err(),
        }
    }
}

type Probe = Result<Arc<BaseConsumer<ProbeContext>>, String>;

/// The probe's client context: keeps the last error librdkafka reported for the cluster (a
/// refused login, a failed TLS handshake), which a metadata request that times out does not
/// say.
#[derive(Default)]
pub struct ProbeContext {
    last_error: std::sync::Mutex<Option<String>>,
}

impl rdkafka::ClientContext for ProbeContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "readiness probe: kafka client error");
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.to_owned());
    }
}

impl rdkafka::consumer::ConsumerContext for ProbeContext {}

/// What `/readyz` checks; the daemon keeps it in step with the running topology.
pub struct Readiness {
    kafka: RwLock<Vec<(ClusterName, Probe)>>,
    cassandra: Option<(SharedSession, CassandraConfig)>,
    supervisors: RwLock<Vec<(RegionName, Addr<RegionSupervisor>)>>,
}

impl Readiness {
    /// The checks of a process running `topology`'s roles; Cassandra through `store` (the
    /// session the process's writers and readers share).
    pub fn new(topology: &Topology, store: SharedSession) -> Self {
        let config = topology.config();
        let cassandra = (config.runs(Role::Service) || config.runs(Role::Persistence))
            .then(|| (store, config.cassandra.clone()));
        let readiness = Self {
            kafka: RwLock::new(Vec::new()),
            cassandra,
            supervisors: RwLock::new(Vec::new()),
        };
        readiness.set_topology(topology);
        readiness
    }

    /// Checks the home clusters of `topology` from now on (after a reload).
    pub fn set_topology(&self, topology: &Topology) {
        let probes = topology
            .home_clusters()
            .into_iter()
            .filter_map(|name| {
                let cluster = topology.config().cluster(&name)?;
                let probe = base_config(cluster)
                    .set("group.id", "mot-readyz")
                    .create_with_context::<_, BaseConsumer<ProbeContext>>(ProbeContext::default())
                    .map(Arc::new)
                    .map_err(|e| e.to_string());
                Some((name, probe))
            })
            .collect();
        *self.kafka.write().unwrap_or_else(|p| p.into_inner()) = probes;
    }

    /// The region supervisors whose agents must be running.
    pub fn set_supervisors(&self, supervisors: Vec<(RegionName, Addr<RegionSupervisor>)>) {
        *self.supervisors.write().unwrap_or_else(|p| p.into_inner()) = supervisors;
    }

    /// Runs every check, concurrently.
    pub async fn checks(&self) -> Vec<Check> {
        let probes = self.kafka.read().unwrap_or_else(|p| p.into_inner()).clone();
        let supervisors = self
            .supervisors
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let kafka = futures::future::join_all(probes.into_iter().map(|(name, probe)| async move {
            Check::new(format!("kafka {name}"), kafka(probe).await)
        }));
        let cassandra = async {
            match &self.cassandra {
                Some((store, config)) => Some(Check::new(
                    "cassandra".into(),
                    cassandra(store, config).await,
                )),
                None => None,
            }
        };
        let agents = futures::future::join_all(supervisors.into_iter().map(
            |(region, supervisor)| async move {
                Check::new(format!("agents {region}"), agents(supervisor).await)
            },
        ));
        let (kafka, cassandra, agents) = futures::join!(kafka, cassandra, agents);
        kafka.into_iter().chain(cassandra).chain(agents).collect()
    }
}

async fn kafka(probe: Probe) -> Result<(), String> {
    let probe = probe?;
    let brokers = web::block(move || {
        let answer = probe.fetch_metadata(None, CHECK_TIMEOUT);
        // Errors reach the context only when the client is polled (it is subscribed to
        // nothing: there is no message to take).
        while probe.poll(Duration::ZERO).is_some() {}
        let mut last_error = probe
            .context()
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match answer {
            Ok(metadata) => {
                *last_error = None;
                Ok(metadata.brokers().len())
            }
            Err(e) => Err(match last_error.as_deref() {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            }),
        }
    })
    .await
    .map_err(|e| e.to_string())??;
    if brokers == 0 {
        return Err("no broker in the metadata".into());
    }
    Ok(())
}

async fn cassandra(store: &SharedSession, config: &CassandraConfig) -> Result<(), String> {
    let query = async {
        let session = store.get(config).await.map_err(|e| e.to_string())?;
        session
            .query_unpaged("SELECT release_version FROM system.local", ())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(CHECK_TIMEOUT, query)
        .await
        .map_err(|_| format!("no answer within {CHECK_TIMEOUT:?}"))?
}

async fn agents(supervisor: Addr<RegionSupervisor>) -> Result<(), String> {
    let status = tokio::time::timeout(CHECK_TIMEOUT, supervisor.send(Ping))
        .await
        .map_err(|_| "the region's supervisor does not answer".to_owned())?
        .map_err(|_| "the region's supervisor has stopped".to_owned())?;
    if status.down.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} agents waiting to restart: {}",
            status.down.len(),
            status.down.len() + status.running,
            status.down.join(", ")
        ))
    }
}

pub async fn readyz(readiness: web::Data<Readiness>) -> HttpResponse {
    let checks = readiness.checks().await;
    let ready = checks.iter().all(|c| c.ready);
    let body = serde_json::json!({ "ready": ready, "checks": checks });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
