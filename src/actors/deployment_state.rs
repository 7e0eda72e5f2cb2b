//! DeploymentStateAgent (regional): turns each zone's scheduler state (MarathonAppState, from
//! `mot-marathon-app-state`) into the state of the deployment that app runs, per zone: desired,
//! running and healthy instances and a status (deploying, healthy, degraded), and publishes it to
//! `mot-deployment-state-change` when it changed. When a later deployment replaces the app in a
//! zone (or the app is removed), the earlier deployment's zone state is published deleted, with
//! its last state: the persistence layer shows it superseded.
//!
//! Each input is a complete snapshot of one app in one zone, so the agent needs no join state:
//! its only memory is the last-record cache (rebuilt from its output topic at start), which also
//! tells "was healthy, is no longer" (degraded) from "not yet healthy" (deploying).

use crate::models::envelope::{Envelope, Kind};
use crate::models::state::{DeploymentZoneState, MarathonAppState, ZoneStatus};
use crate::platform::marathon::LABEL_DEPLOYMENT_ID;
use crate::topics::catalog;
use crate::topics::names::{RegionName, TopicName};

use super::cache::LastRecordCache;
use super::deployment_operation::{LABEL_APP_VERSION, LABEL_TRACEPARENT};
use super::pipeline::{Agent, AgentContext, Incoming, Outcome, Outgoing, PipelineError, Source};

/// The agent.
pub struct DeploymentStateAgent {
    region: RegionName,
    cache: LastRecordCache,
    output: TopicName,
}

/// The cache group one app in one zone forms: `<region>/<zone>/<app>`.
fn group(state: &DeploymentZoneState) -> String {
    format!("{}/{}/{}", state.region, state.zone, state.app)
}

/// The tasks running and healthy of the deployment the app's definition is now: during a
/// replacement Marathon keeps the older version's tasks beside the new one's (and counts both in
/// `tasksRunning`/`tasksHealthy`), so with the tasks at hand only those started for the app's
/// current version count. Without tasks (not embedded), Marathon's counters are all there is.
pub fn own_tasks(app: &crate::platform::marathon::App) -> (u32, u32) {
    if app.tasks.is_empty() {
        return (
            app.tasks_running.unwrap_or(0),
            app.tasks_healthy.unwrap_or(0),
        );
    }
    let own: Vec<_> = app
        .tasks
        .iter()
        .filter(|t| match (app.version.as_deref(), t.version.as_deref()) {
            (Some(current), Some(started_for)) => current == started_for,
            _ => true,
        })
        .collect();
    let healthy = own
        .iter()
        .filter(|t| {
            !t.health_check_results.is_empty() && t.health_check_results.iter().all(|h| h.alive)
        })
        .count();
    (own.len() as u32, healthy as u32)
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
    /// The deployment state `input` shows, if the app was deployed by mot.
    fn zone_state(&self, input: &MarathonAppState) -> Option<DeploymentZoneState> {
        let app = &input.app;
        let deployment_id = app.labels.get(LABEL_DEPLOYMENT_ID)?.parse().ok()?;
        let (running, healthy) = own_tasks(app);
        let mut state = DeploymentZoneState {
            deployment_id,
            region: self.region.clone(),
            zone: input.zone.clone(),
            app: app.id.trim_start_matches('/').to_owned(),
            version: app
                .labels
                .get(LABEL_APP_VERSION)
                .cloned()
                .unwrap_or_default(),
            desired: app.instances,
            running,
            healthy,
            status: ZoneStatus::Deploying,
        };
        let last = self
            .cache
            .last(&state.key())
            .and_then(|json| serde_json::from_slice::<DeploymentZoneState>(&json).ok())
            .map(|s| s.status);
        state.status = status(state.desired, running, healthy, last);
        Some(state)
    }

    /// The records to publish for one input.
    pub fn changes(
        &self,
        input: &Envelope<MarathonAppState>,
        cause: &Incoming,
    ) -> Result<Vec<Outgoing>, String> {
        let group = format!(
            "{}/{}/{}",
            self.region,
            input.payload.zone,
            input.payload.app.id.trim_start_matches('/')
        );
        let current = match input.kind {
            Kind::Deleted => None,
            _ => self.zone_state(&input.payload),
        };
        let span = linked_span(&input.payload);
        let mut serialized = Vec::new();
        if let Some(state) = current {
            serialized.push((
                state.key(),
                serde_json::to_vec(&state).map_err(|e| e.to_string())?,
            ));
        }
        self.cache
            .diff_group(&group, serialized)
            .into_iter()
            .map(|change| {
                let head = Envelope::new(
                    change.kind,
                    change.key,
                    self.region.clone(),
                    input.time_us,
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
                Ok(record)
            })
            .collect()
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
        Ok(Source::Home(vec![TopicName::local(
            &catalog::MARATHON_APP_STATE.base(),
        )]))
    }

    async fn build(ctx: &AgentContext) -> Result<Self, PipelineError> {
        let output = TopicName::local(&catalog::DEPLOYMENT_STATE_CHANGE.base());
        let cache = LastRecordCache::rebuild(Self::NAME, ctx, &output, group).await?;
        Ok(Self {
            region: ctx.region.name.clone(),
            cache,
            output,
        })
    }

    async fn process(&mut self, incoming: &Incoming) -> Outcome {
        let input = match incoming.decode::<MarathonAppState>() {
            Ok(input) => input,
            Err(rejected) => return rejected,
        };
        if input.origin != self.region {
            return Outcome::Skip;
        }
        match self.changes(&input, incoming) {
            Ok(records) => Outcome::Publish(records),
            Err(reason) => Outcome::Reject(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        DeploymentStateAgent {
            region: RegionName::parse("test-us-east-1").unwrap(),
            cache: LastRecordCache::new(),
            output: TopicName::local(&catalog::DEPLOYMENT_STATE_CHANGE.base()),
        }
    }

    const D1: &str = "6f1c1c9e-7d55-4a8e-9d4e-0d7c6b3f0a11";
    const D2: &str = "0a0b0c0d-7d55-4a8e-9d4e-0d7c6b3f0a22";

    fn run(
        agent: &DeploymentStateAgent,
        kind: Kind,
        s: MarathonAppState,
    ) -> Vec<(Kind, Envelope<DeploymentZoneState>)> {
        let input = Envelope::new(kind, s.key(), agent.region.clone(), 7, s);
        agent
            .changes(&input, &Incoming::unprompted())
            .unwrap()
            .into_iter()
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

    #[test]
    fn an_app_not_deployed_by_mot_is_ignored() {
        let a = agent();
        let mut s = app(D1, 1, &[true]);
        s.app.labels.clear();
        assert!(run(&a, Kind::Snapshot, s).is_empty());
    }
}
