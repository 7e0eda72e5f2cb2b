//! The agents: each an actix actor, supervised per region, forming pipelines over Kafka topics.
//!
//! - [`pipeline`]: the machinery every agent runs (source, sink, dead letters, ordered offsets);
//! - [`poller`]: the other source: a timer and an HTTP client, for platform APIs;
//! - [`cache`]: the last-record cache agents diff against;
//! - [`supervisor`]: a supervisor actor per region, restarting failed agents with backoff;
//! - [`counters`]: per agent and region counters;
//! - [`workers`]: the pool of threads agents run on;
//! - [`shared_source`]: one consumer per agent kind and cluster, shared by the regions' agents;
//! - one file per agent.
//!
//! Adding an agent: write its file (a type implementing [`pipeline::Agent`], or
//! [`poller::Poller`] for a platform poller) and add one line to [`REGIONAL_AGENTS`].

pub mod archival;
pub mod cache;
pub mod complete_event_archival;
pub mod consul_state;
pub mod counters;
pub mod deployment_fan_out;
pub mod deployment_mending;
pub mod deployment_operation;
pub mod deployment_state;
pub mod deployment_state_archival;
pub mod instance_archival;
pub mod instance_consul_state;
pub mod localizer;
pub mod marathon_state;
pub mod mesos_state;
pub mod pipeline;
pub mod poller;
pub mod region_heartbeat;
pub mod rollout;
pub mod rollout_archival;
pub mod shared_source;
pub mod supervisor;
pub mod traffic;
pub mod workers;

use supervisor::AgentEntry;

/// The agents every region's supervisor runs in the region's own datacenter.
pub const REGIONAL_AGENTS: &[AgentEntry] = &[
    AgentEntry::of::<instance_consul_state::InstanceConsulStateAgent>(),
    AgentEntry::of::<deployment_operation::DeploymentOperationAgent>(),
    AgentEntry::poller::<consul_state::ConsulStateAgent>(),
    AgentEntry::poller::<marathon_state::MarathonStateAgent>(),
    AgentEntry::poller::<mesos_state::MesosStateAgent>(),
    AgentEntry::of::<deployment_state::DeploymentStateAgent>(),
    AgentEntry::of::<deployment_mending::DeploymentMendingAgent>(),
    AgentEntry::poller::<region_heartbeat::RegionHeartbeatAgent>(),
    AgentEntry::of::<traffic::TrafficAgent>(),
];

/// The service layer's agents, run for the central region.
pub const SERVICE_AGENTS: &[AgentEntry] = &[
    AgentEntry::of::<deployment_fan_out::DeploymentFanOutAgent>(),
    AgentEntry::of::<rollout::RolloutAgent>(),
];

/// The persistence layer's agents: the MultiRegionAgentFactory starts these for every region of
/// the topology, in the central datacenter, each reading that region's topic there.
pub const PERSISTENCE_AGENTS: &[AgentEntry] = &[
    AgentEntry::of::<deployment_state_archival::DeploymentStateArchivalAgent>(),
    AgentEntry::of::<instance_archival::InstanceArchivalAgent>(),
    AgentEntry::of::<complete_event_archival::CompleteEventArchivalAgent>(),
];

/// The persistence layer's agents for what only the central datacenter holds (rollouts), run
/// once, for the central region.
pub const CENTRAL_ARCHIVAL_AGENTS: &[AgentEntry] =
    &[AgentEntry::of::<rollout_archival::RolloutArchivalAgent>()];

/// mot's mirror: one instance per route hop carried by mot, in the route's destination.
pub const LOCALIZER: AgentEntry = AgentEntry::of::<localizer::Localizer>();
