//! The topics mot knows: each base name with the direction it travels and how it is cleaned up.
//!
//! The direction decides the name on each cluster: central -> regional topics are named for their
//! region everywhere (`<base>-<env>-<region>`), regional -> central topics are bare in their region
//! and suffixed once they leave it (`<base>.<env>-<region>`), local topics never leave.

use serde::Serialize;

use super::names::TopicBase;

/// Which way a topic travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flow {
    /// Produced in the central cluster for one region, consumed by that region's layer.
    ToRegion,
    /// Produced in a region, archived in the central cluster.
    ToCentral,
    /// Produced and consumed in one datacenter.
    Local,
}

/// Kafka's `cleanup.policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cleanup {
    /// Events: kept for the retention period.
    Delete,
    /// Latest state per key: what last-record caches rebuild from on restart.
    Compact,
}

impl Cleanup {
    /// The `cleanup.policy` value.
    pub fn as_kafka(self) -> &'static str {
        match self {
            Cleanup::Delete => "delete",
            Cleanup::Compact => "compact",
        }
    }
}

/// One known topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TopicSpec {
    /// The base name.
    pub base: &'static str,
    /// Which way it travels.
    pub flow: Flow,
    /// How Kafka cleans it up.
    pub cleanup: Cleanup,
}

impl TopicSpec {
    /// The base name as a checked [`TopicBase`].
    pub fn base(&self) -> TopicBase {
        TopicBase::parse(self.base).unwrap_or_else(|e| unreachable!("catalog name: {e}"))
    }
}

const fn spec(base: &'static str, flow: Flow, cleanup: Cleanup) -> TopicSpec {
    TopicSpec {
        base,
        flow,
        cleanup,
    }
}

/// Accepted deployment requests, one record each, produced by the API in the central cluster;
/// the fan-out agent turns each into its regions' launch events.
pub const DEPLOYMENT_REQUESTS: TopicSpec =
    spec("mot-deployment-requests", Flow::Local, Cleanup::Delete);
/// Deployment requests for one region, produced by the fan-out agent.
pub const DEPLOYMENT_LAUNCH_EVENTS: TopicSpec = spec(
    "mot-deployment-launch-events",
    Flow::ToRegion,
    Cleanup::Delete,
);
/// Traffic requests (enable / disable) for one region, produced by the API.
pub const TRAFFIC_EVENTS: TopicSpec = spec("mot-traffic-events", Flow::ToRegion, Cleanup::Delete);
/// What the DeploymentOperationAgent did with a launch request.
pub const DEPLOYMENT_COMPLETE_EVENTS: TopicSpec = spec(
    "mot-deployment-complete-events",
    Flow::ToCentral,
    Cleanup::Delete,
);
/// Instance records, published on change by the instance state agents.
pub const INSTANCE_STATE_CHANGE: TopicSpec = spec(
    "mot-instance-state-change",
    Flow::ToCentral,
    Cleanup::Compact,
);
/// Deployment state per region and zone, published on change by the DeploymentStateAgent.
pub const DEPLOYMENT_STATE_CHANGE: TopicSpec = spec(
    "mot-deployment-state-change",
    Flow::ToCentral,
    Cleanup::Compact,
);
/// Raw Consul service state, from the Consul poller.
pub const CONSUL_APP_STATE: TopicSpec = spec("mot-consul-app-state", Flow::Local, Cleanup::Compact);
/// Raw Marathon app state, from the Marathon poller.
pub const MARATHON_APP_STATE: TopicSpec =
    spec("mot-marathon-app-state", Flow::Local, Cleanup::Compact);
/// Raw Mesos task state, from the Mesos poller.
pub const MESOS_TASK_STATE: TopicSpec = spec("mot-mesos-task-state", Flow::Local, Cleanup::Compact);
/// What the region keeps each zone's apps at: the newest deployment applied per app and zone,
/// and the history before it, written by the DeploymentOperationAgent and rebuilt by it at start.
pub const DESIRED_STATE: TopicSpec = spec("mot-desired-state", Flow::Local, Cleanup::Compact);
/// Each rollout's state (waves, gates, zones seen), published by the RolloutAgent in the central
/// cluster whenever it changes, and rebuilt by it from there at start.
pub const ROLLOUTS: TopicSpec = spec("mot-rollouts", Flow::Local, Cleanup::Compact);
/// What happens to each app in each region, as CDEvents in CloudEvents JSON (not envelopes: for
/// tools outside mot), published by the RolloutAgent in the central cluster; key: the app.
pub const CDEVENTS: TopicSpec = spec("mot-cdevents", Flow::Local, Cleanup::Delete);
/// Records an agent could not process, with the reason; one per cluster.
pub const DEAD_LETTERS: TopicSpec = spec("mot-dead-letters", Flow::Local, Cleanup::Delete);

/// Every topic mot knows.
pub const ALL: &[TopicSpec] = &[
    DEPLOYMENT_REQUESTS,
    DEPLOYMENT_LAUNCH_EVENTS,
    TRAFFIC_EVENTS,
    DEPLOYMENT_COMPLETE_EVENTS,
    INSTANCE_STATE_CHANGE,
    DEPLOYMENT_STATE_CHANGE,
    CONSUL_APP_STATE,
    MARATHON_APP_STATE,
    MESOS_TASK_STATE,
    DESIRED_STATE,
    ROLLOUTS,
    CDEVENTS,
    DEAD_LETTERS,
];

/// The known topic with base name `base`.
pub fn find(base: &TopicBase) -> Option<&'static TopicSpec> {
    ALL.iter().find(|spec| spec.base == base.as_str())
}

/// The known topic a full name belongs to: `<base>`, `<base>-<env>-<region>` or
/// `<base>.<env>-<region>`.
pub fn of_topic(name: &super::names::TopicName) -> Option<&'static TopicSpec> {
    let name = name.as_str();
    ALL.iter().find(|spec| {
        name.strip_prefix(spec.base)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('-'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalog_name_is_a_valid_base() {
        for spec in ALL {
            assert_eq!(spec.base().as_str(), spec.base);
        }
    }
}
