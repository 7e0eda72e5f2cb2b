//! `mot run`: the long-running process. Starts the roles the config names; SIGHUP reloads the
//! topology (a new region's agents start, a removed region's stop, an invalid file is refused and
//! the running topology kept); SIGINT or SIGTERM stop everything gracefully.

use std::net::TcpListener;
use std::path::Path;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

use actix::{Actor, Addr};

use crate::actors::counters::Registry;
use std::collections::BTreeMap;

use crate::actors::supervisor::{AgentSpec, Backoff, Ping, RegionSupervisor, Shutdown};
use crate::actors::{
    CENTRAL_ARCHIVAL_AGENTS, LOCALIZER, PERSISTENCE_AGENTS, REGIONAL_AGENTS, SERVICE_AGENTS,
};
use crate::config::{Carrier, Config, Role};
use crate::notify::Notifier;
use crate::topics::clients::{self, ClusterAdmin};
use crate::topics::names::RegionName;
use crate::topics::topology::Topology;
use crate::web;

/// The supervisors running, by region, with what each was started from.
struct RunningRegions {
    registry: Registry,
    running: BTreeMap<RegionName, (String, Addr<RegionSupervisor>)>,
}

impl RunningRegions {
    /// Makes the running supervisors those `topology` asks for: stops the regions it no longer
    /// has (or whose agents or region changed), starts the new ones; leaves the others alone.
    async fn converge(&mut self, topology: &Topology) {
        let wanted = plan_agents(topology);
        let fingerprints: BTreeMap<RegionName, String> = wanted
            .iter()
            .map(|(region, specs)| (region.clone(), fingerprint(topology, region, specs)))
            .collect();
        let stale: Vec<RegionName> = self
            .running
            .iter()
            .filter(|(region, (print, _))| fingerprints.get(*region) != Some(print))
            .map(|(region, _)| region.clone())
            .collect();
        for region in stale {
            if let Some((_, supervisor)) = self.running.remove(&region) {
                let _ = supervisor.send(Shutdown).await;
                if !wanted.contains_key(&region) {
                    self.registry.remove_region(&region);
                }
                tracing::info!(%region, "region's agents stopped");
            }
        }
        for (region, specs) in wanted {
            if self.running.contains_key(&region) {
                continue;
            }
            let print = fingerprints[&region].clone();
            let supervisor = RegionSupervisor::new(
                topology.clone(),
                region.clone(),
                specs,
                self.registry.clone(),
                Backoff::default(),
            )
            .start();
            self.running.insert(region, (print, supervisor));
        }
    }

    /// Whether every supervisor answers within `within`.
    async fn all_answer(&self, within: std::time::Duration) -> bool {
        let pings: Vec<_> = self
            .running
            .values()
            .map(|(_, s)| tokio::time::timeout(within, s.send(Ping)))
            .collect();
        for ping in pings {
            if !matches!(ping.await, Ok(Ok(_))) {
                return false;
            }
        }
        true
    }

    /// The running supervisors, by region.
    fn addresses(&self) -> Vec<(RegionName, Addr<RegionSupervisor>)> {
        self.running
            .iter()
            .map(|(region, (_, supervisor))| (region.clone(), supervisor.clone()))
            .collect()
    }

    async fn stop_all(&mut self) {
        let drains: Vec<_> = self
            .running
            .values()
            .map(|(_, s)| s.send(Shutdown))
            .collect();
        for drained in drains {
            let _ = drained.await;
        }
        self.running.clear();
    }
}

/// What a region's supervisor was started from: its agents and its region's configuration.
fn fingerprint(topology: &Topology, region: &RegionName, specs: &[AgentSpec]) -> String {
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    let config = serde_json::to_string(&topology.config().region(region)).unwrap_or_default();
    format!("{names:?}{config}")
}

/// Runs until SIGINT or SIGTERM; SIGHUP reloads the topology from `path`. Must be called inside
/// an actix system.
pub async fn run(config: Config, path: &Path) -> anyhow::Result<()> {
    let topology = Topology::checked(&config)?;
    ensure_home_topics(&topology).await;

    let registry = Registry::with_workers(config.node.worker_threads.unwrap_or(0));
    let mut regions = RunningRegions {
        registry: registry.clone(),
        running: BTreeMap::new(),
    };
    regions.converge(&topology).await;

    let readiness = std::sync::Arc::new(web::readyz::Readiness::new(
        &topology,
        registry.store.clone(),
    ));
    readiness.set_supervisors(regions.addresses());
    let mut api_state = None;
    if config.runs(Role::Service) {
        let session = registry
            .store
            .get(&config.cassandra)
            .await
            .context("cannot start the api")?;
        let state = actix_web::web::Data::new(
            web::AppState::with_session(topology.clone(), session)
                .await
                .context("cannot start the api")?,
        );
        api_state = Some(state);
    }
    let listener = TcpListener::bind(&config.web.listen)
        .with_context(|| format!("cannot listen on web.listen = {}", config.web.listen))?;
    let addr = listener.local_addr()?;
    let tls = config
        .web
        .tls
        .as_ref()
        .map(web::tls_server_config)
        .transpose()?;
    let server = web::server(
        listener,
        tls,
        api_state.clone(),
        registry.clone(),
        readiness.clone(),
    )
    .context("cannot start the http server")?;
    let web_server = (server.handle(), actix_web::rt::spawn(server));
    tracing::info!(%addr, api = api_state.is_some(), "http listening");
    tracing::info!(roles = ?config.node.roles, "mot running");
    let notifier = Notifier::from_env();
    notifier.send(&format!(
        "READY=1\nSTATUS=serving; {} region supervisors",
        regions.running.len()
    ));
    let mut watchdog = notifier.watchdog_every().map(tokio::time::interval);

    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    let signal_name = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = tick(&mut watchdog) => {
                let every = notifier.watchdog_every().unwrap_or_default();
                if regions.all_answer(every / 2).await {
                    notifier.send("WATCHDOG=1");
                } else {
                    tracing::warn!("a region supervisor did not answer; withholding the watchdog ping");
                }
            }
            _ = hup.recv() => {
                notifier.send("RELOADING=1");
                match reload(path, &config) {
                    Ok(topology) => {
                        ensure_home_topics(&topology).await;
                        regions.converge(&topology).await;
                        readiness.set_topology(&topology);
                        readiness.set_supervisors(regions.addresses());
                        if let Some(state) = &api_state {
                            state.set_topology(topology);
                        }
                        tracing::info!(file = %path.display(), "topology reloaded");
                    }
                    Err(error) => {
                        tracing::error!(file = %path.display(), error = %format!("{error:#}"), "reload refused; keeping the running topology");
                    }
                }
                notifier.send("READY=1");
            }
        }
    };
    tracing::info!(signal = signal_name, "stopping");
    notifier.send("STOPPING=1");
    let deadline = std::time::Duration::from_secs(config.node.shutdown_timeout_secs);
    let stop = async {
        let (handle, task) = web_server;
        handle.stop(true).await;
        let _ = task.await;
        regions.stop_all().await;
    };
    if tokio::time::timeout(deadline, stop).await.is_err() {
        tracing::warn!(
            timeout_secs = deadline.as_secs(),
            "graceful stop took too long; exiting"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// The next watchdog tick, or never when systemd asked for no watchdog.
async fn tick(watchdog: &mut Option<tokio::time::Interval>) {
    match watchdog {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The topology of `path` when it is valid and keeps what a reload cannot change (the roles and
/// the API's address, which need a restart).
fn reload(path: &Path, running: &Config) -> anyhow::Result<Topology> {
    let config = Config::load(path)?;
    if config.node.roles != running.node.roles || config.web.listen != running.web.listen {
        anyhow::bail!("node.roles and web.listen change only with a restart");
    }
    if config.cassandra.keyspace != running.cassandra.keyspace {
        anyhow::bail!("cassandra.keyspace changes only with a restart");
    }
    if config.runs(Role::Service) {
        // A tokens file that does not read refuses the whole reload.
        crate::auth::tokens::Tokens::from_config(&config.auth)?;
        let jwt = |c: &Config| serde_json::to_string(&c.auth.jwt).unwrap_or_default();
        if jwt(&config) != jwt(running) {
            anyhow::bail!(
                "[auth.jwt] changes only with a restart (a reload re-reads its jwks_file)"
            );
        }
    }
    Ok(Topology::checked(&config)?)
}

/// Starts one supervisor per region for the agents this process's roles run for that region:
/// the regional agents of the regions it hosts, and the localizers of the routes whose
/// destination is one of its datacenters (routes into the central cluster with the persistence
/// layer, the others with the regional layer of the region whose topic they carry).
pub fn start_agents(topology: &Topology, registry: &Registry) -> Vec<Addr<RegionSupervisor>> {
    plan_agents(topology)
        .into_iter()
        .map(|(region, agents)| {
            RegionSupervisor::new(
                topology.clone(),
                region,
                agents,
                registry.clone(),
                Backoff::default(),
            )
            .start()
        })
        .collect()
}

/// The agents this process's roles run, by region.
fn plan_agents(topology: &Topology) -> BTreeMap<RegionName, Vec<AgentSpec>> {
    let config = topology.config();
    let hosted = |region: &RegionName| {
        config.runs(Role::Regional)
            && (config.node.regions.is_empty() || config.node.regions.contains(region))
    };
    let mut specs: BTreeMap<RegionName, Vec<AgentSpec>> = BTreeMap::new();
    for region in &config.regions {
        if hosted(&region.name) {
            let regional = REGIONAL_AGENTS
                .iter()
                .filter_map(|entry| AgentSpec::regional(*entry, topology, &region.name));
            specs
                .entry(region.name.clone())
                .or_default()
                .extend(regional);
        }
    }
    if config.runs(Role::Persistence) {
        // The MultiRegionAgentFactory: every region's archival agents, in the central datacenter.
        for region in &config.regions {
            let archival = PERSISTENCE_AGENTS.iter().map(|entry| AgentSpec {
                entry: *entry,
                name: entry.name.to_owned(),
                home: topology.central_home(),
                route: None,
            });
            specs
                .entry(region.name.clone())
                .or_default()
                .extend(archival);
        }
        let central = CENTRAL_ARCHIVAL_AGENTS.iter().map(|entry| AgentSpec {
            entry: *entry,
            name: entry.name.to_owned(),
            home: topology.central_home(),
            route: None,
        });
        specs
            .entry(config.topology.central.clone())
            .or_default()
            .extend(central);
    }
    if config.runs(Role::Service) {
        let central = &config.topology.central;
        let service = SERVICE_AGENTS
            .iter()
            .filter_map(|entry| AgentSpec::regional(*entry, topology, central));
        specs.entry(central.clone()).or_default().extend(service);
    }
    let central = &topology.central_region().cluster;
    for route in topology
        .routes()
        .into_iter()
        .filter(|r| r.carrier == Carrier::Mot)
    {
        let runs_here = if &route.to == central {
            config.runs(Role::Persistence)
        } else {
            hosted(&route.region)
        };
        if runs_here {
            specs
                .entry(route.region.clone())
                .or_default()
                .push(AgentSpec {
                    entry: LOCALIZER,
                    name: format!("Localizer[{} -> {}]", route.topic, route.to),
                    home: topology.localizer_home(&route),
                    route: Some(route),
                });
        }
    }
    specs
}

/// mot ensures its own topics at start, on its home clusters only. A cluster that cannot be
/// reached is logged and left to the agents, which retry; it does not stop the process.
async fn ensure_home_topics(topology: &Topology) {
    // Every cluster at once: one that does not answer (down, or refusing mot's login) delays the
    // start by the admin request's timeout once, not once per cluster.
    let ensured = topology
        .home_clusters()
        .into_iter()
        .map(|cluster| async move {
            let Some(admin): Option<ClusterAdmin> = topology.cluster_admin(&cluster) else {
                return;
            };
            match clients::ensure_topics(topology, &admin).await {
                Ok(report) if !report.created.is_empty() => {
                    tracing::info!(%cluster, created = ?report.created, "created topics")
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%cluster, %error, "cannot ensure topics; agents will retry")
                }
            }
        });
    futures::future::join_all(ensured).await;
}
