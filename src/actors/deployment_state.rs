//! DeploymentStateAgent (regional): groups what the zone's three sources say of a deployment into
//! its state per zone, and publishes it to `mot-deployment-state-change` when it changed:
//!
//! - Marathon (`mot-marathon-app-state`): the app's definition (desired instances, the deployment
//!   it runs) and its tasks with their health check results. Only the tasks started for the
//!   app's current configuration are this deployment's: during a replacement Marathon keeps the
//!   older ones beside them (and counts both in `tasksRunning`/`tasksHealthy`).
//! - Mesos (`mot-mesos-task-state`): each task as the agents report it, with the reason of its
//!   latest status update (lost, failed, killed).
//! - Consul (`mot-consul-app-state`): each instance's health checks as the catalog sees them.
//!
//! A zone is `healthy` only when every desired instance is one of this deployment's tasks that
//! Marathon sees passing its checks, Mesos reports running, and Consul lists passing (Consul
//! lags the scheduler: a task not listed there yet is not serving yet); otherwise the state's
//! `reason` names the source that disagrees and what it says. When a later deployment replaces the app in a zone (or the app is
//! removed), the earlier deployment's zone state is published deleted, with its last state: the
//! persistence layer shows it superseded.
//!
//! Each input is held as its newest record per key ([`Latest`], rebuilt from the input topics at
//! start, so a replayed older record never steps the join back); any input recomputes the zone
//! state of the app it concerns, and the last-record cache (rebuilt from the output topic)
//! publishes only what changed and tells "was healthy, is no longer" (degraded) from "not yet
//! healthy" (deploying).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::models::consul::{ConsulAppState, ConsulServiceEntry};
use crate::models::envelope::Envelope;
use crate::models::state::{DeploymentZoneState, MarathonAppState, MesosTaskState, ZoneStatus};
use crate::platform::marathon::{App, Task, LABEL_DEPLOYMENT_ID};
use crate::topics::catalog;
use crate::topics::names::{RegionName, TopicName};

use super::cache::{LastRecordCache, Latest};
use super::deployment_operation::{LABEL_APP_VERSION, LABEL_TRACEPARENT};
use super::pipeline::{Agent, AgentContext, Incoming, Outcome, Outgoing, PipelineError, Source};

/// The agent.
pub struct DeploymentStateAgent {
    region: RegionName,
    cache: LastRecordCache,
    output: TopicName,
    /// Each app per zone, grouped by `<region>/<zone>/<deployment id>`.
    marathon: Latest<MarathonAppState>,
    /// Each task per zone, grouped by `<region>/<zone>/<deployment id>` (its labels).
    mesos: Latest<MesosTaskState>,
    /// Each service per zone (key `<zone>/<service>`).
    consul: Latest<ConsulAppState>,
}

/// The cache group one app in one zone forms: `<region>/<zone>/<app>`.
fn group(state: &DeploymentZoneState) -> String {
    format!("{}/{}/{}", state.region, state.zone, state.app)
}

/// `<region>/<zone>/<deployment id>`, from the labels mot put on an app (and Marathon copies
/// to its tasks).
fn by_deployment(
    region: &RegionName,
    zone: &crate::topics::names::ZoneName,
    labels: &BTreeMap<String, String>,
) -> String {
    let deployment = labels.get(LABEL_DEPLOYMENT_ID);
    format!("{region}/{zone}/{}", deployment.map_or("", String::as_str))
}

fn marathon_group(state: &MarathonAppState) -> String {
    by_deployment(&state.region, &state.zone, &state.app.labels)
}

fn mesos_group(task: &MesosTaskState) -> String {
    by_deployment(&task.region, &task.zone, &task.labels)
}

fn consul_group(state: &ConsulAppState) -> String {
    state.zone.to_string()
}

/// The Consul service an app registers as: its id without the leading slash.
fn service_name(app: &App) -> &str {
    app.id.trim_start_matches('/')
}

/// Mesos states that say a task ended badly; a killed or finished task is the ordinary end of
/// a replaced one, and is named only while Marathon still counts it.
const FAILURES: [&str; 6] = [
    "TASK_FAILED",
    "TASK_LOST",
    "TASK_ERROR",
    "TASK_DROPPED",
    "TASK_GONE",
    "TASK_UNREACHABLE",
];

/// How many disagreements a reason names before it only counts the rest.
const REASONS_SHOWN: usize = 3;

/// A zone's state as grouped from its sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grouped {
    /// This deployment's tasks that run (Marathon says so, and Mesos does not say otherwise).
    pub running: u32,
    /// This deployment's tasks every source sees healthy.
    pub healthy: u32,
    /// What each disagreeing source says, in the order Marathon, Mesos, Consul.
    pub disagreements: Vec<String>,
}

impl Grouped {
    /// The zone's reason: the first disagreements, and how many more there are.
    pub fn reason(&self) -> Option<String> {
        if self.disagreements.is_empty() {
            return None;
        }
        let mut reason =
            self.disagreements[..self.disagreements.len().min(REASONS_SHOWN)].join("; ");
        if self.disagreements.len() > REASONS_SHOWN {
            reason.push_str(&format!(
                " (and {} more)",
                self.disagreements.len() - REASONS_SHOWN
            ));
        }
        Some(reason)
    }
}

/// The tasks of `app` started for its current configuration: during a replacement Marathon
/// keeps the older version's tasks beside the new one's. A task without a version (a Marathon
/// that does not say) counts.
fn own_tasks(app: &App) -> (Vec<&Task>, usize) {
    let (own, older): (Vec<&Task>, Vec<&Task>) =
        app.tasks
            .iter()
            .partition(|t| match (app.version.as_deref(), t.version.as_deref()) {
                (Some(current), Some(started_for)) => current == started_for,
                _ => true,
            });
    (own, older.len())
}

/// Whether Marathon sees `task` passing: every health check result alive, or, for an app
/// without health checks, the task running.
fn marathon_passing(app: &App, task: &Task) -> bool {
    if task.health_check_results.is_empty() {
        return app.health_checks.is_empty() && task.state == "TASK_RUNNING";
    }
    task.health_check_results.iter().all(|h| h.alive)
}

/// The Consul instance of `task`: registered under the task's id, or at its host and port.
fn consul_entry<'a>(consul: &'a ConsulAppState, task: &Task) -> Option<&'a ConsulServiceEntry> {
    consul
        .entries
        .iter()
        .find(|e| e.service.id == task.id)
        .or_else(|| {
            consul.entries.iter().find(|e| {
                let host = if e.service.address.is_empty() {
                    &e.node.address
                } else {
                    &e.service.address
                };
                *host == task.host && task.ports.contains(&e.service.port)
            })
        })
}

/// Why Consul does not see `entry` passing, if it does not (maintenance turns traffic off and
/// says nothing of health).
fn consul_failing(entry: &ConsulServiceEntry) -> Option<String> {
    let failing: Vec<String> = entry
        .checks
        .iter()
        .filter(|c| !c.check_id.starts_with("_service_maintenance:") && c.status != "passing")
        .map(|c| {
            if c.output.is_empty() {
                format!("{} {}", c.name, c.status)
            } else {
                format!("{} {}: {}", c.name, c.status, c.output.trim())
            }
        })
        .collect();
    (!failing.is_empty()).then(|| failing.join(", "))
}

/// How Mesos names a task's end: state, agent, and the reason and message of its last update.
fn mesos_says(task: &MesosTaskState) -> String {
    let mut said = format!("task {} is {}", task.task_id, task.state);
    if let Some(host) = &task.hostname {
        said.push_str(&format!(" on {host}"));
    }
    match (&task.reason, &task.message) {
        (Some(reason), Some(message)) => said.push_str(&format!(" ({reason}: {message})")),
        (Some(reason), None) => said.push_str(&format!(" ({reason})")),
        (None, Some(message)) => said.push_str(&format!(" ({message})")),
        (None, None) => {}
    }
    said
}

/// Groups one deployment's state in one zone from Marathon's app, Mesos's tasks of this
/// deployment (by task id) and Consul's service: a task is healthy only when all three agree,
/// so a task Consul has not listed yet is not.
pub fn group_sources(
    app: &App,
    mesos: &BTreeMap<&str, &MesosTaskState>,
    consul: Option<&ConsulAppState>,
) -> Grouped {
    let (own, older) = own_tasks(app);
    let mut marathon = Vec::new();
    let mut mesos_said = Vec::new();
    let mut consul_said = Vec::new();
    let (mut running, mut healthy) = (0, 0);
    if (own.len() as u32) < app.instances {
        marathon.push(format!(
            "marathon: {} of {} tasks of this version started",
            own.len(),
            app.instances
        ));
    }
    if older > 0 {
        marathon.push(format!(
            "marathon: {older} task(s) of an older version still running"
        ));
    }
    for task in &own {
        let on_agent = mesos.get(task.id.as_str()).copied();
        let marathon_running = task.state == "TASK_RUNNING";
        let passing = marathon_passing(app, task);
        if !marathon_running {
            marathon.push(format!("marathon: task {} is {}", task.id, task.state));
        } else if !passing {
            marathon.push(format!(
                "marathon: task {} fails its health checks",
                task.id
            ));
        }
        let mesos_running = match on_agent {
            None => {
                mesos_said.push(format!(
                    "mesos: task {} not reported by the master",
                    task.id
                ));
                false
            }
            Some(m) if m.state == "TASK_RUNNING" => true,
            Some(m) if m.is_active() => {
                mesos_said.push(format!("mesos: task {} is {}", task.id, m.state));
                false
            }
            Some(m) => {
                mesos_said.push(format!("mesos: {}", mesos_says(m)));
                false
            }
        };
        let consul_passing = match consul {
            // Consul lags the scheduler: a task it has not listed yet is not serving yet.
            None => {
                consul_said.push(format!(
                    "consul: task {} is not registered (no {} in the zone's Consul)",
                    task.id,
                    app.id.trim_start_matches('/')
                ));
                false
            }
            Some(service) => match consul_entry(service, task) {
                None => {
                    consul_said.push(format!(
                        "consul: task {} is not registered in {}",
                        task.id, service.service
                    ));
                    false
                }
                Some(entry) => match consul_failing(entry) {
                    Some(why) => {
                        consul_said.push(format!("consul: task {} {why}", task.id));
                        false
                    }
                    None => true,
                },
            },
        };
        if marathon_running && on_agent.is_none_or(MesosTaskState::is_active) {
            running += 1;
        }
        if marathon_running && passing && mesos_running && consul_passing {
            healthy += 1;
        }
    }
    // This deployment's tasks that ended badly and Marathon no longer lists: why it is short.
    let listed: std::collections::BTreeSet<&str> =
        app.tasks.iter().map(|t| t.id.as_str()).collect();
    for m in mesos.values() {
        if !listed.contains(m.task_id.as_str()) && FAILURES.contains(&m.state.as_str()) {
            mesos_said.push(format!("mesos: {}", mesos_says(m)));
        }
    }
    let mut disagreements = marathon;
    disagreements.append(&mut mesos_said);
    disagreements.append(&mut consul_said);
    Grouped {
        running,
        healthy,
        disagreements,
    }
}

/// The status of a zone with these counts, given the status last published for it.
pub fn status(desired: u32, running: u32, healthy: u32, last: Option<ZoneStatus>) -> ZoneStatus {
    if running >= desired && healthy >= desired {
        ZoneStatus::Healthy
    } else if matches!(last, Some(ZoneStatus::Healthy | ZoneStatus::Degraded)) {
        ZoneStatus::Degraded
    } else {
        ZoneStatus::Deploying
    }
}

impl DeploymentStateAgent {
    fn new(
        region: RegionName,
        cache: LastRecordCache,
        marathon: Latest<MarathonAppState>,
        mesos: Latest<MesosTaskState>,
        consul: Latest<ConsulAppState>,
    ) -> Self {
        Self {
            region,
            cache,
            output: TopicName::local(&catalog::DEPLOYMENT_STATE_CHANGE.base()),
            marathon,
            mesos,
            consul,
        }
    }

    /// The deployment state `input` (an app in a zone) shows, joined with Mesos's and Consul's
    /// views, if the app was deployed by mot.
    fn zone_state(&self, input: &MarathonAppState) -> Option<DeploymentZoneState> {
        let app = &input.app;
        let deployment_id = app.labels.get(LABEL_DEPLOYMENT_ID)?.parse().ok()?;
        let tasks = self.mesos.group(&marathon_group(input));
        let mut mesos: BTreeMap<&str, &MesosTaskState> =
            tasks.iter().map(|t| (t.task_id.as_str(), &**t)).collect();
        // A task Marathon lists whose Mesos labels lack the deployment: found by its id.
        let unlabelled: Vec<Arc<MesosTaskState>> = app
            .tasks
            .iter()
            .filter(|t| !mesos.contains_key(t.id.as_str()))
            .filter_map(|t| {
                self.mesos
                    .get(&format!("{}/{}/{}", input.region, input.zone, t.id))
            })
            .collect();
        mesos.extend(unlabelled.iter().map(|t| (t.task_id.as_str(), &**t)));
        let consul = self
            .consul
            .get(&format!("{}/{}", input.zone, service_name(app)))
            .filter(|c| !c.entries.is_empty());
        let grouped = group_sources(app, &mesos, consul.as_deref());
        let mut state = DeploymentZoneState {
            deployment_id,
            region: self.region.clone(),
            zone: input.zone.clone(),
            app: service_name(app).to_owned(),
            version: app
                .labels
                .get(LABEL_APP_VERSION)
                .cloned()
                .unwrap_or_default(),
            desired: app.instances,
            running: grouped.running,
            healthy: grouped.healthy,
            status: ZoneStatus::Deploying,
            reason: None,
        };
        let last = self
            .cache
            .last(&state.key())
            .and_then(|json| serde_json::from_slice::<DeploymentZoneState>(&json).ok())
            .map(|s| s.status);
        state.status = status(state.desired, state.running, state.healthy, last);
        if state.status != ZoneStatus::Healthy {
            state.reason = grouped.reason();
        }
        Some(state)
    }

    /// The Marathon key (`<region>/<zone>/<app>`) of the apps an input concerns.
    fn concerned(&self, incoming: &Incoming) -> Result<(Vec<String>, i64), Outcome> {
        let from =
            |spec: catalog::TopicSpec| incoming.topic == TopicName::local(&spec.base()).as_str();
        if from(catalog::MESOS_TASK_STATE) {
            let input = incoming.decode::<MesosTaskState>()?;
            if input.origin != self.region {
                return Err(Outcome::Skip);
            }
            let group = mesos_group(&input.payload);
            let time = input.time_us;
            self.mesos.apply(input);
            let apps = self.marathon.group(&group);
            Ok((apps.iter().map(|a| a.key()).collect(), time))
        } else if from(catalog::CONSUL_APP_STATE) {
            let input = incoming.decode::<ConsulAppState>()?;
            if input.origin != self.region {
                return Err(Outcome::Skip);
            }
            let key = format!(
                "{}/{}/{}",
                self.region, input.payload.zone, input.payload.service
            );
            let time = input.time_us;
            self.consul.apply(input);
            Ok((vec![key], time))
        } else {
            let input = incoming.decode::<MarathonAppState>()?;
            if input.origin != self.region {
                return Err(Outcome::Skip);
            }
            let key = input.payload.key();
            let time = input.time_us;
            self.marathon.apply(input);
            Ok((vec![key], time))
        }
    }

    /// The records to publish for the app held under `key` (`<region>/<zone>/<app>`), as of
    /// `time_us`.
    pub fn changes(
        &self,
        key: &str,
        time_us: i64,
        cause: &Incoming,
    ) -> Result<Vec<Outgoing>, String> {
        let input = self.marathon.get(key);
        let current = input.as_deref().and_then(|i| self.zone_state(i));
        let span = input.as_deref().and_then(linked_span);
        let mut serialized = Vec::new();
        if let Some(state) = current {
            serialized.push((
                state.key(),
                serde_json::to_vec(&state).map_err(|e| e.to_string())?,
            ));
        }
        let mut records = Vec::new();
        for change in self.cache.diff_group_at(key, serialized, time_us) {
            let head = Envelope::new(
                change.kind,
                change.key.clone(),
                self.region.clone(),
                change.time_us,
                (),
            );
            let mut record = Outgoing::envelope(
                self.output.clone(),
                "DeploymentZoneState",
                head,
                &change.json,
                cause,
            )
            .map_err(|e| e.to_string())?;
            if let Some(span) = &span {
                crate::telemetry::inject(span, &mut record.headers);
            }
            records.extend(change.published_as(record));
        }
        Ok(records)
    }
}

/// A span for a state change of an app a deployment launched, linked to that deployment's
/// trace (the app's `mot-traceparent` label): what became healthy, and why, are one click apart.
fn linked_span(state: &MarathonAppState) -> Option<tracing::Span> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let traceparent = state.app.labels.get(LABEL_TRACEPARENT)?;
    let launched =
        crate::telemetry::extract(&[("traceparent".to_owned(), traceparent.as_bytes().to_vec())]);
    let launched = launched.span().span_context().clone();
    if !launched.is_valid() {
        return None;
    }
    let span = tracing::info_span!(
        "deployment state",
        otel.name = %format!("state {} in {}/{}", state.app.id.trim_start_matches('/'), state.region, state.zone),
        otel.kind = "internal",
    );
    span.add_link(launched);
    Some(span)
}

impl Agent for DeploymentStateAgent {
    const NAME: &'static str = "DeploymentStateAgent";

    fn source(_: &AgentContext) -> Result<Source, PipelineError> {
        Ok(Source::Home(vec![
            TopicName::local(&catalog::MARATHON_APP_STATE.base()),
            TopicName::local(&catalog::MESOS_TASK_STATE.base()),
            TopicName::local(&catalog::CONSUL_APP_STATE.base()),
        ]))
    }

    async fn build(ctx: &AgentContext) -> Result<Self, PipelineError> {
        let output = TopicName::local(&catalog::DEPLOYMENT_STATE_CHANGE.base());
        let cache = LastRecordCache::rebuild(Self::NAME, ctx, &output, group).await?;
        let input = |spec: catalog::TopicSpec| TopicName::local(&spec.base());
        let marathon = Latest::rebuild(
            Self::NAME,
            ctx,
            &input(catalog::MARATHON_APP_STATE),
            marathon_group,
        )
        .await?;
        let mesos = Latest::rebuild(
            Self::NAME,
            ctx,
            &input(catalog::MESOS_TASK_STATE),
            mesos_group,
        )
        .await?;
        let consul = Latest::rebuild(
            Self::NAME,
            ctx,
            &input(catalog::CONSUL_APP_STATE),
            consul_group,
        )
        .await?;
        Ok(Self::new(
            ctx.region.name.clone(),
            cache,
            marathon,
            mesos,
            consul,
        ))
    }

    async fn process(&mut self, incoming: &Incoming) -> Outcome {
        let (keys, time_us) = match self.concerned(incoming) {
            Ok(concerned) => concerned,
            Err(outcome) => return outcome,
        };
        let mut records = Vec::new();
        for key in keys {
            match self.changes(&key, time_us, incoming) {
                Ok(mut changes) => records.append(&mut changes),
                Err(reason) => return Outcome::Reject(reason),
            }
        }
        if records.is_empty() {
            Outcome::Skip
        } else {
            Outcome::Publish(records)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::envelope::Kind;
    use crate::platform::marathon::{App, HealthCheckResult, Task};
    use crate::topics::names::ZoneName;

    fn app(deployment: &str, desired: u32, alive: &[bool]) -> MarathonAppState {
        MarathonAppState {
            region: RegionName::parse("test-us-east-1").unwrap(),
            zone: ZoneName::parse("a").unwrap(),
            app: App {
                id: "/checkout-web".into(),
                instances: desired,
                cpus: 0.5,
                mem: 256.0,
                container: None,
                port_definitions: vec![],
                env: Default::default(),
                labels: [
                    (LABEL_DEPLOYMENT_ID.to_owned(), deployment.to_owned()),
                    (LABEL_APP_VERSION.to_owned(), "1.0".to_owned()),
                ]
                .into(),
                health_checks: vec![],
                version: None,
                tasks_running: None,
                tasks_healthy: None,
                tasks: alive
                    .iter()
                    .enumerate()
                    .map(|(i, a)| Task {
                        id: format!("t{i}"),
                        app_id: "/checkout-web".into(),
                        host: "h".into(),
                        ports: vec![1],
                        state: "TASK_RUNNING".into(),
                        started_at: None,
                        version: None,
                        health_check_results: vec![HealthCheckResult {
                            alive: *a,
                            task_id: format!("t{i}"),
                        }],
                    })
                    .collect(),
            },
        }
    }

    fn agent() -> DeploymentStateAgent {
        DeploymentStateAgent::new(
            RegionName::parse("test-us-east-1").unwrap(),
            LastRecordCache::new(),
            Latest::new(marathon_group),
            Latest::new(mesos_group),
            Latest::new(consul_group),
        )
    }

    /// Mesos reports every task of `s` running, as the agents see it, and Consul lists each
    /// passing.
    fn on_agents(agent: &DeploymentStateAgent, s: &MarathonAppState, state: &str) {
        for t in &s.app.tasks {
            mesos(agent, s, &t.id, state, None);
        }
        consul_passing(agent, s);
    }

    fn consul_passing(agent: &DeploymentStateAgent, s: &MarathonAppState) {
        let entries: Vec<serde_json::Value> = s
            .app
            .tasks
            .iter()
            .map(|t| {
                serde_json::json!({
                    "Node": {"Node": "n", "Address": t.host},
                    "Service": {"ID": t.id, "Service": "checkout-web", "Port": t.ports[0]},
                    "Checks": [{"CheckID": format!("service:{}", t.id), "Name": "http", "Status": "passing"}]
                })
            })
            .collect();
        let consul: ConsulAppState = serde_json::from_value(serde_json::json!({
            "service": "checkout-web", "zone": s.zone, "entries": entries,
        }))
        .unwrap();
        agent.consul.apply(Envelope::new(
            Kind::Snapshot,
            consul.key(),
            agent.region.clone(),
            1,
            consul,
        ));
    }

    fn mesos(
        agent: &DeploymentStateAgent,
        s: &MarathonAppState,
        task: &str,
        state: &str,
        reason: Option<&str>,
    ) {
        let task = MesosTaskState {
            region: s.region.clone(),
            zone: s.zone.clone(),
            task_id: task.into(),
            name: "checkout-web".into(),
            framework_id: "marathon".into(),
            agent_id: "a1".into(),
            hostname: Some("h".into()),
            state: state.into(),
            cpus: None,
            mem_mb: None,
            ports: None,
            labels: s.app.labels.clone(),
            reason: reason.map(str::to_owned),
            message: reason.map(|_| "agent h disconnected".to_owned()),
        };
        let env = Envelope::new(Kind::Snapshot, task.key(), agent.region.clone(), 1, task);
        agent.mesos.apply(env);
    }

    const D1: &str = "6f1c1c9e-7d55-4a8e-9d4e-0d7c6b3f0a11";
    const D2: &str = "0a0b0c0d-7d55-4a8e-9d4e-0d7c6b3f0a22";

    fn run(
        agent: &DeploymentStateAgent,
        kind: Kind,
        s: MarathonAppState,
    ) -> Vec<(Kind, Envelope<DeploymentZoneState>)> {
        on_agents(agent, &s, "TASK_RUNNING");
        let key = s.key();
        agent
            .marathon
            .apply(Envelope::new(kind, key.clone(), agent.region.clone(), 7, s));
        let records = agent.changes(&key, 7, &Incoming::unprompted()).unwrap();
        crate::actors::cache::tests::assert_deletions_tombstoned(&records);
        records
            .into_iter()
            .filter(|o| o.value.is_some())
            .map(|o| {
                let env: Envelope<DeploymentZoneState> =
                    crate::models::envelope::decode(o.key.as_deref(), o.value.as_deref()).unwrap();
                (env.kind, env)
            })
            .collect()
    }

    #[test]
    fn deploying_then_healthy_then_degraded_then_healthy() {
        let a = agent();
        let steps: [(&[bool], ZoneStatus); 5] = [
            (&[], ZoneStatus::Deploying),
            (&[false, true], ZoneStatus::Deploying),
            (&[true, true], ZoneStatus::Healthy),
            (&[true], ZoneStatus::Degraded),
            (&[true, true], ZoneStatus::Healthy),
        ];
        for (alive, want) in steps {
            let out = run(&a, Kind::Snapshot, app(D1, 2, alive));
            assert_eq!(out.len(), 1, "{alive:?}");
            assert_eq!(out[0].1.payload.status, want, "{alive:?}");
            assert_eq!(
                out[0].1.payload.healthy as usize,
                alive.iter().filter(|a| **a).count()
            );
            assert_eq!(out[0].1.key, format!("{D1}/test-us-east-1/a"));
        }
        assert!(
            run(&a, Kind::Snapshot, app(D1, 2, &[true, true])).is_empty(),
            "nothing changed, nothing published"
        );
    }

    #[test]
    fn a_later_deployment_supersedes_the_earlier_one_in_the_zone() {
        let a = agent();
        run(&a, Kind::Snapshot, app(D1, 2, &[true, true]));
        let out = run(&a, Kind::Snapshot, app(D2, 2, &[true, true]));
        let kinds: Vec<(Kind, String)> = out
            .iter()
            .map(|(k, e)| (*k, e.payload.deployment_id.to_string()))
            .collect();
        assert_eq!(
            kinds,
            [
                (Kind::Created, D2.to_owned()),
                (Kind::Deleted, D1.to_owned())
            ]
        );
        let gone = run(&a, Kind::Deleted, app(D2, 2, &[true, true]));
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].0, Kind::Deleted);
    }

    #[test]
    fn during_a_replacement_only_the_new_versions_tasks_count() {
        let a = agent();
        let mut replacing = app(D2, 2, &[true, true, false, false]);
        replacing.app.version = Some("v2".into());
        replacing.app.tasks_running = Some(4);
        replacing.app.tasks_healthy = Some(2);
        for (i, task) in replacing.app.tasks.iter_mut().enumerate() {
            task.version = Some(if i < 2 { "v1" } else { "v2" }.into());
        }
        let out = run(&a, Kind::Snapshot, replacing.clone());
        let state = &out[0].1.payload;
        assert_eq!(
            (state.running, state.healthy, state.status),
            (2, 0, ZoneStatus::Deploying),
            "the old version's passing tasks are not this deployment's"
        );
        for task in replacing.app.tasks.iter_mut().skip(2) {
            task.health_check_results[0].alive = true;
        }
        let out = run(&a, Kind::Snapshot, replacing);
        assert_eq!(out[0].1.payload.status, ZoneStatus::Healthy);
    }

    /// The zone state published after `s` is consumed, with Mesos's tasks as they stand.
    fn state_after(agent: &DeploymentStateAgent, s: &MarathonAppState) -> DeploymentZoneState {
        let key = s.key();
        agent.marathon.apply(Envelope::new(
            Kind::Snapshot,
            key.clone(),
            agent.region.clone(),
            7,
            s.clone(),
        ));
        let out = agent.changes(&key, 7, &Incoming::unprompted()).unwrap();
        let env: Envelope<DeploymentZoneState> =
            crate::models::envelope::decode(out[0].key.as_deref(), out[0].value.as_deref())
                .unwrap();
        env.payload
    }

    #[test]
    fn a_task_mesos_reports_lost_is_not_healthy_and_mesos_is_named() {
        let a = agent();
        let s = app(D1, 2, &[true, true]);
        on_agents(&a, &s, "TASK_RUNNING");
        assert_eq!(state_after(&a, &s).status, ZoneStatus::Healthy);
        mesos(&a, &s, "t1", "TASK_LOST", Some("REASON_AGENT_DISCONNECTED"));
        let state = state_after(&a, &s.clone());
        assert_eq!((state.running, state.healthy), (1, 1));
        assert_eq!(state.status, ZoneStatus::Degraded);
        assert_eq!(
            state.reason.as_deref(),
            Some("mesos: task t1 is TASK_LOST on h (REASON_AGENT_DISCONNECTED: agent h disconnected)")
        );
    }

    #[test]
    fn a_task_mesos_has_not_reported_yet_keeps_the_zone_deploying() {
        let a = agent();
        let s = app(D1, 1, &[true]);
        consul_passing(&a, &s);
        let state = state_after(&a, &s);
        assert_eq!((state.healthy, state.status), (0, ZoneStatus::Deploying));
        assert_eq!(
            state.reason.as_deref(),
            Some("mesos: task t0 not reported by the master")
        );
    }

    #[test]
    fn a_task_consul_has_not_listed_yet_keeps_the_zone_deploying() {
        let a = agent();
        let s = app(D1, 1, &[true]);
        for t in &s.app.tasks {
            mesos(&a, &s, &t.id, "TASK_RUNNING", None);
        }
        let state = state_after(&a, &s);
        assert_eq!((state.healthy, state.status), (0, ZoneStatus::Deploying));
        assert_eq!(
            state.reason.as_deref(),
            Some("consul: task t0 is not registered (no checkout-web in the zone's Consul)")
        );
    }

    #[test]
    fn a_check_consul_sees_failing_names_consul() {
        let a = agent();
        let s = app(D1, 1, &[true]);
        on_agents(&a, &s, "TASK_RUNNING");
        let consul: ConsulAppState = serde_json::from_value(serde_json::json!({
            "service": "checkout-web", "zone": "a",
            "entries": [{
                "Node": {"Node": "h", "Address": "h"},
                "Service": {"ID": "t0", "Service": "checkout-web", "Port": 1},
                "Checks": [{"CheckID": "service:t0", "Name": "http", "Status": "critical",
                            "Output": "HTTP GET /health: 503"}]
            }]
        }))
        .unwrap();
        a.consul.apply(Envelope::new(
            Kind::Snapshot,
            consul.key(),
            a.region.clone(),
            1,
            consul,
        ));
        let state = state_after(&a, &s);
        assert_eq!((state.healthy, state.status), (0, ZoneStatus::Deploying));
        assert_eq!(
            state.reason.as_deref(),
            Some("consul: task t0 http critical: HTTP GET /health: 503")
        );
    }

    #[test]
    fn a_replacement_in_progress_names_the_older_tasks() {
        let a = agent();
        let mut s = app(D2, 1, &[true, false]);
        s.app.version = Some("v2".into());
        s.app.tasks[0].version = Some("v1".into());
        s.app.tasks[1].version = Some("v2".into());
        on_agents(&a, &s, "TASK_RUNNING");
        let state = state_after(&a, &s);
        assert_eq!((state.running, state.healthy), (1, 0));
        assert_eq!(
            state.reason.as_deref(),
            Some("marathon: 1 task(s) of an older version still running; marathon: task t1 fails its health checks")
        );
    }

    #[test]
    fn an_app_not_deployed_by_mot_is_ignored() {
        let a = agent();
        let mut s = app(D1, 1, &[true]);
        s.app.labels.clear();
        assert!(run(&a, Kind::Snapshot, s).is_empty());
    }
}
