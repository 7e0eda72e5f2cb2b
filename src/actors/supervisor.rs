//! Supervision per region: a [`RegionSupervisor`] actor owns its region's agents, each an
//! [`AgentActor`]. An agent that fails (an infrastructure error, or a panic caught at the agent's
//! boundary) is restarted after a capped exponential backoff, and its restarts are counted. A
//! region's failures stay in that region: other regions' agents never notice.
//!
//! actix's own `Supervisor` restarts an actor only when it stops itself, and a panic inside a
//! handler takes the whole arbiter down; so agents never run their work in a handler. Each agent
//! runs its pipeline as a future spawned in its actor's context, wrapped in `catch_unwind`, and
//! reports how it ended to its supervisor, which decides when to start a fresh one. Agents run on
//! the threads of the process's worker pool ([`super::workers`]), spread in turn; a supervisor
//! only decides, on the thread it was started on.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use tokio::sync::{oneshot, watch};

use super::counters::{Counters, Registry};
use super::pipeline::{run_agent, Agent, AgentContext, PipelineError};
use super::poller::{run_poller, Poller};
use crate::topics::clients::HomeCluster;
use crate::topics::names::RegionName;
use crate::topics::topology::PlannedRoute;
use crate::topics::topology::Topology;

type StartFn =
    fn(AgentContext, watch::Receiver<bool>) -> LocalBoxFuture<'static, Result<(), PipelineError>>;

/// A registered agent: its name and how to start its pipeline.
#[derive(Clone, Copy)]
pub struct AgentEntry {
    /// The agent's name.
    pub name: &'static str,
    start: StartFn,
}

impl AgentEntry {
    /// The entry for agent `A`.
    pub const fn of<A: Agent>() -> Self {
        Self {
            name: A::NAME,
            start: start_agent::<A>,
        }
    }
}

impl AgentEntry {
    /// The entry for poller `P`.
    pub const fn poller<P: Poller>() -> Self {
        Self {
            name: P::NAME,
            start: start_poller::<P>,
        }
    }
}

fn start_poller<P: Poller>(
    ctx: AgentContext,
    stop: watch::Receiver<bool>,
) -> LocalBoxFuture<'static, Result<(), PipelineError>> {
    Box::pin(run_poller::<P>(ctx, stop))
}

impl std::fmt::Debug for AgentEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

fn start_agent<A: Agent>(
    ctx: AgentContext,
    stop: watch::Receiver<bool>,
) -> LocalBoxFuture<'static, Result<(), PipelineError>> {
    Box::pin(run_agent::<A>(ctx, stop))
}

/// Capped exponential backoff between restarts.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Delay before the first restart.
    pub initial: Duration,
    /// The most it grows to.
    pub max: Duration,
    /// An agent that ran this long before failing starts its backoff over.
    pub healthy_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
            healthy_after: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The delay before restarting after `consecutive_failures` (1 = the first) failures.
    pub fn delay(&self, consecutive_failures: u32) -> Duration {
        let doublings = consecutive_failures.saturating_sub(1).min(20);
        self.initial.saturating_mul(1 << doublings).min(self.max)
    }
}

/// One agent instance a supervisor runs: which agent, under what name, in which datacenter.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// The agent.
    pub entry: AgentEntry,
    /// The instance's name in logs and counters: the agent's name, or for a localizer the hop it
    /// carries.
    pub name: String,
    /// The cluster of the datacenter it runs in.
    pub home: HomeCluster,
    /// The route a localizer carries.
    pub route: Option<PlannedRoute>,
}

impl AgentSpec {
    /// `entry` running in `region`'s own datacenter.
    pub fn regional(entry: AgentEntry, topology: &Topology, region: &RegionName) -> Option<Self> {
        Some(Self {
            entry,
            name: entry.name.to_owned(),
            home: topology.region_home(region)?,
            route: None,
        })
    }
}

/// Owns one region's agents.
pub struct RegionSupervisor {
    region: RegionName,
    topology: Topology,
    agents: Vec<AgentSpec>,
    registry: Registry,
    backoff: Backoff,
    stop: watch::Sender<bool>,
    state: HashMap<String, AgentState>,
    stopping: bool,
    drained: Vec<oneshot::Sender<()>>,
}

#[derive(Debug, Default)]
struct AgentState {
    running: bool,
    started_at: Option<Instant>,
    consecutive_failures: u32,
}

impl RegionSupervisor {
    /// A supervisor for `entries`, each running in `region`'s own datacenter.
    pub fn regional(
        topology: Topology,
        region: RegionName,
        entries: &[AgentEntry],
        registry: Registry,
        backoff: Backoff,
    ) -> Self {
        let specs = entries
            .iter()
            .filter_map(|e| AgentSpec::regional(*e, &topology, &region))
            .collect();
        Self::new(topology, region, specs, registry, backoff)
    }

    /// A supervisor for `region`'s `agents`, counting into `registry`.
    pub fn new(
        topology: Topology,
        region: RegionName,
        agents: Vec<AgentSpec>,
        registry: Registry,
        backoff: Backoff,
    ) -> Self {
        let (stop, _) = watch::channel(false);
        Self {
            region,
            topology,
            agents,
            registry,
            backoff,
            stop,
            state: HashMap::new(),
            stopping: false,
            drained: Vec::new(),
        }
    }

    fn launch(&mut self, spec: AgentSpec, ctx: &mut Context<Self>) {
        let Some(region) = self.topology.config().region(&self.region) else {
            tracing::error!(region = %self.region, "region is not in the topology; agent not started");
            return;
        };
        let agent_ctx = AgentContext {
            region: region.clone(),
            topology: self.topology.clone(),
            home: spec.home.clone(),
            counters: self.registry.get(&spec.name, &self.region),
            route: spec.route.clone(),
            store: self.registry.store.clone(),
            producers: self.registry.producers.clone(),
            sources: self.registry.sources.clone(),
            workers: self.registry.workers.clone(),
        };
        let state = self.state.entry(spec.name.clone()).or_default();
        state.running = true;
        state.started_at = Some(Instant::now());
        let agent = AgentActor {
            name: spec.name,
            region: self.region.clone(),
            work: Some((spec.entry.start, agent_ctx, self.stop.subscribe())),
            supervisor: ctx.address(),
        };
        AgentActor::start_in_arbiter(&self.registry.workers.next(), move |_| agent);
    }

    fn all_stopped(&self) -> bool {
        self.state.values().all(|s| !s.running)
    }
}

impl Actor for RegionSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(64);
        for spec in self.agents.clone() {
            self.launch(spec, ctx);
        }
        let names: Vec<&str> = self.agents.iter().map(|a| a.name.as_str()).collect();
        tracing::info!(region = %self.region, agents = ?names, "region supervisor started");
    }
}

/// Which of its agents are running now. That it answers at all is the liveness the systemd
/// watchdog checks (its mailbox is served); `/readyz` reports the agents waiting to restart.
#[derive(Message)]
#[rtype(result = "AgentsUp")]
pub struct Ping;

/// A region supervisor's answer to [`Ping`].
#[derive(Debug, Clone, MessageResponse)]
pub struct AgentsUp {
    /// Agents running.
    pub running: usize,
    /// Agents waiting out their restart backoff, by name.
    pub down: Vec<String>,
}

impl Handler<Ping> for RegionSupervisor {
    type Result = AgentsUp;

    fn handle(&mut self, _: Ping, _: &mut Self::Context) -> AgentsUp {
        let mut down: Vec<String> = self
            .state
            .iter()
            .filter(|(_, s)| !s.running)
            .map(|(name, _)| name.clone())
            .collect();
        down.sort();
        AgentsUp {
            running: self.state.len() - down.len(),
            down,
        }
    }
}

/// An agent's pipeline ended.
#[derive(Message)]
#[rtype(result = "()")]
struct AgentExited {
    name: String,
    result: Result<(), PipelineError>,
}

impl Handler<AgentExited> for RegionSupervisor {
    type Result = ();

    fn handle(&mut self, msg: AgentExited, ctx: &mut Self::Context) {
        let state = self.state.entry(msg.name.clone()).or_default();
        state.running = false;
        if self.stopping {
            if let Err(error) = &msg.result {
                tracing::warn!(region = %self.region, agent = %msg.name, %error, "agent failed while stopping");
            }
            if self.all_stopped() {
                for waiter in self.drained.drain(..) {
                    let _ = waiter.send(());
                }
            }
            return;
        }
        let ran_for = state.started_at.map(|t| t.elapsed()).unwrap_or_default();
        state.consecutive_failures = if ran_for >= self.backoff.healthy_after {
            1
        } else {
            state.consecutive_failures + 1
        };
        let delay = self.backoff.delay(state.consecutive_failures);
        let counters = self.registry.get(&msg.name, &self.region);
        Counters::add(&counters.restarts, 1);
        counters.last_backoff_ms.store(
            delay.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        let reason = match &msg.result {
            Ok(()) => "its source ended".to_owned(),
            Err(e) => e.to_string(),
        };
        tracing::error!(region = %self.region, agent = %msg.name, %reason, restart_in_ms = delay.as_millis() as u64,
            failures = state.consecutive_failures, "agent stopped; restarting");
        let Some(spec) = self.agents.iter().find(|a| a.name == msg.name).cloned() else {
            return;
        };
        ctx.run_later(delay, move |act, ctx| {
            if !act.stopping {
                act.launch(spec, ctx);
            }
        });
    }
}

/// Stops the region's agents gracefully: they stop consuming, drain in-flight records, store
/// and commit offsets and flush their producers. Resolves when all have stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for RegionSupervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Shutdown, _: &mut Self::Context) -> Self::Result {
        self.stopping = true;
        let _ = self.stop.send(true);
        if self.all_stopped() {
            return Box::pin(async {});
        }
        let (tx, rx) = oneshot::channel();
        self.drained.push(tx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

/// One agent of one region, on a thread of the worker pool: runs its pipeline and reports how it
/// ended.
pub struct AgentActor {
    name: String,
    region: RegionName,
    /// How to start its pipeline (on its own thread: the pipeline's future stays there).
    work: Option<(StartFn, AgentContext, watch::Receiver<bool>)>,
    supervisor: Addr<RegionSupervisor>,
}

impl Actor for AgentActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let Some((start, agent_ctx, stop)) = self.work.take() else {
            ctx.stop();
            return;
        };
        let work = start(agent_ctx, stop);
        let (name, region, supervisor) = (
            self.name.clone(),
            self.region.clone(),
            self.supervisor.clone(),
        );
        let run = async move {
            let result = match AssertUnwindSafe(work).catch_unwind().await {
                Ok(result) => result,
                Err(panic) => {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    tracing::error!(%region, agent = %name, %message, "agent panicked");
                    Err(PipelineError::Panicked(message))
                }
            };
            let _ = supervisor.send(AgentExited { name, result }).await;
        };
        ctx.spawn(run.into_actor(self).map(|_, _, ctx| ctx.stop()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            healthy_after: Duration::from_secs(60),
        };
        let delays: Vec<u128> = (1..=6).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay(1000), Duration::from_secs(1));
    }
}
