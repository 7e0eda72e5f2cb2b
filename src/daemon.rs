//! `mot run`: the long-running process. Starts the roles the config names, then waits for
//! SIGINT or SIGTERM and stops them gracefully.

use std::net::TcpListener;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

use actix::{Actor, Addr};

use crate::actors::counters::Registry;
use std::collections::BTreeMap;

use crate::actors::supervisor::{AgentSpec, Backoff, RegionSupervisor, Shutdown};
use crate::actors::{LOCALIZER, REGIONAL_AGENTS, SERVICE_AGENTS};
use crate::config::{Carrier, Config, Role};
use crate::topics::clients::{self, ClusterAdmin};
use crate::topics::names::{ClusterName, RegionName};
use crate::topics::topology::Topology;
use crate::web;

/// Runs until SIGINT or SIGTERM. Must be called inside an actix system.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let topology = Topology::checked(&config)?;
    ensure_home_topics(&topology).await;

    let registry = Registry::default();
    let supervisors = start_agents(&topology, &registry);

    let mut web_server = None;
    if config.runs(Role::Service) {
        let listener = TcpListener::bind(&config.web.listen)
            .with_context(|| format!("cannot listen on web.listen = {}", config.web.listen))?;
        let addr = listener.local_addr()?;
        let state = web::AppState::connect(topology.clone())
            .await
            .context("cannot start the api")?;
        let server =
            web::server(listener, Some(state), registry.clone()).context("cannot start the api")?;
        let handle = server.handle();
        let task = actix_web::rt::spawn(server);
        tracing::info!(%addr, "api listening");
        web_server = Some((handle, task));
    }
    tracing::info!(roles = ?config.node.roles, "mot running");

    let signal_name = wait_for_stop_signal().await?;
    tracing::info!(signal = signal_name, "stopping");
    let deadline = std::time::Duration::from_secs(config.node.shutdown_timeout_secs);
    let stop = async {
        if let Some((handle, task)) = web_server {
            handle.stop(true).await;
            let _ = task.await;
        }
        let drains: Vec<_> = supervisors.iter().map(|s| s.send(Shutdown)).collect();
        for drained in drains {
            let _ = drained.await;
        }
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

/// Starts one supervisor per region for the agents this process's roles run for that region:
/// the regional agents of the regions it hosts, and the localizers of the routes whose
/// destination is one of its datacenters (routes into the central cluster with the persistence
/// layer, the others with the regional layer of the region whose topic they carry).
pub fn start_agents(topology: &Topology, registry: &Registry) -> Vec<Addr<RegionSupervisor>> {
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

/// The clusters of the datacenters this process's roles run in: central for the service and
/// persistence layers (and the localizers that bring regional topics there), each hosted region's
/// own cluster and its pseudo-central cluster (where that region's inbound localizers run).
fn home_clusters(topology: &Topology) -> Vec<ClusterName> {
    let config = topology.config();
    let mut homes = Vec::new();
    if config.runs(Role::Service) || config.runs(Role::Persistence) {
        homes.push(topology.central_region().cluster.clone());
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

/// mot ensures its own topics at start, on its home clusters only. A cluster that cannot be
/// reached is logged and left to the agents, which retry; it does not stop the process.
async fn ensure_home_topics(topology: &Topology) {
    for cluster in home_clusters(topology) {
        let Some(admin): Option<ClusterAdmin> = topology.cluster_admin(&cluster) else {
            continue;
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
    }
}

async fn wait_for_stop_signal() -> anyhow::Result<&'static str> {
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
