//! DeploymentOperationAgent (regional): takes its region's launch events (from the pseudo-central
//! cluster for a non-production region, from the central cluster for a production one, as the
//! topology plans), puts the app to each target zone's scheduler, and publishes what each zone
//! did to `mot-deployment-complete-events` on its home cluster.
//!
//! It keeps, per app and zone, what it applied there (`mot-desired-state`, compacted, rebuilt at
//! start; see [`crate::models::desired`]) and follows its rules:
//!
//! - **newer wins**: a launch whose generation is older than one applied in the zone is reported
//!   `superseded` and the scheduler is not called; so is one whose scheduler app already carries a
//!   newer generation (labels `mot-deployment-id`, `mot-generation`);
//! - **replays change nothing**: a launch already decided reports what it reported the first
//!   time, at the same time (from its history, or from the app's `mot-accepted-at-us` label when
//!   the agent stopped between the scheduler's answer and its own record), and calls nothing;
//! - **every deployment ends**: when a launch replaces an earlier deployment in a zone, the
//!   earlier one is reported superseded there, so it never waits forever for an observation;
//! - **what was asked is kept**: a launch the scheduler did not take is recorded as what the zone
//!   should run, for the DeploymentMendingAgent to put there once the scheduler is back.
//!
//! A transient scheduler error is retried with capped backoff; a zone that stays down is reported
//! failed (at the launch's time) while the other zones proceed.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use uuid::Uuid;

use crate::config::ZoneConfig;
use crate::models::deployment::{DeploymentCompleted, LaunchRequested, RemovalLaunch, ZoneOutcome};
use crate::models::desired::{self, Applied, Decision, RemovalMark, ZoneDesired};
use crate::models::envelope::{now_us, Envelope, Kind, HEADER_EVENT_TYPE};
use crate::platform::marathon::{
    self, App, Container, Docker, MarathonClient, MarathonHealthCheck, PortDefinition,
};
use crate::topics::catalog;
use crate::topics::clients::HomeProducer;
use crate::topics::names::{RegionName, TopicName, ZoneName};

use super::cache::LastRecordCache;
use super::pipeline::{Agent, AgentContext, Incoming, Outcome, Outgoing, PipelineError, Source};

/// Attempts per zone before it is reported failed.
const ATTEMPTS: u32 = 4;
/// First pause between attempts; doubles each time.
const FIRST_RETRY: Duration = Duration::from_millis(250);

/// Label with the W3C `traceparent` of the deployment that launched the app.
pub const LABEL_TRACEPARENT: &str = "mot-traceparent";

pub use crate::platform::marathon::{LABEL_APP_VERSION, LABEL_GENERATION};

/// Label with the time the scheduler was asked to run this deployment (microseconds): what a
/// replay reports as the acceptance time.
pub const LABEL_ACCEPTED_AT: &str = "mot-accepted-at-us";

/// The agent.
pub struct DeploymentOperationAgent {
    region: RegionName,
    zones: Vec<ZoneConfig>,
    http: reqwest::Client,
    output: TopicName,
    /// `mot-desired-state`: where what was applied is kept.
    desired_topic: TopicName,
    /// What was applied per app and zone (JSON [`ZoneDesired`]), grouped by `<region>/<app>`.
    desired: LastRecordCache,
    /// The process's producer to the home cluster, for a removal's intent (published before
    /// its effects, see [`Self::remove`]).
    producer: HomeProducer,
    /// Opens the launches' secret values for the scheduler.
    keyring: crate::secrets::Keyring,
}

/// What one zone made of a launch.
struct ZoneResult {
    outcome: ZoneOutcome,
    /// The zone's new desired state, when the scheduler accepted the launch now.
    desired: Option<ZoneDesired>,
    /// The deployment the launch replaced in the zone.
    replaced: Option<Applied>,
}

fn desired_group(desired: &ZoneDesired) -> String {
    format!("{}/{}", desired.region, desired.app)
}

/// The Marathon app definition of a launch, its secret values opened with `keyring` (the only
/// place they are: the scheduler needs them in the clear).
pub fn marathon_app(
    launch: &LaunchRequested,
    keyring: &crate::secrets::Keyring,
) -> Result<App, crate::secrets::SecretError> {
    let spec = &launch.spec;
    let mut env = spec.env.clone();
    env.extend(keyring.open_all(&spec.secret_env)?);
    let mut labels = std::collections::BTreeMap::new();
    labels.insert(
        marathon::LABEL_DEPLOYMENT_ID.to_owned(),
        launch.deployment_id.to_string(),
    );
    labels.insert(LABEL_APP_VERSION.to_owned(), spec.version.clone());
    labels.insert(LABEL_GENERATION.to_owned(), launch.generation.to_string());
    Ok(App {
        id: format!("/{}", spec.app),
        instances: spec.instances_per_zone,
        cpus: spec.resources.cpus,
        mem: f64::from(spec.resources.mem_mb),
        container: Some(Container {
            kind: "DOCKER".into(),
            docker: Docker {
                image: spec.artifact.clone(),
            },
        }),
        port_definitions: spec
            .ports
            .iter()
            .map(|p| PortDefinition { port: *p })
            .collect(),
        env,
        labels,
        health_checks: spec
            .health_check
            .iter()
            .map(|h| MarathonHealthCheck {
                protocol: "HTTP".into(),
                path: h.path.clone(),
                interval_seconds: h.interval_secs,
            })
            .collect(),
        version: None,
        tasks_running: None,
        tasks_healthy: None,
        tasks: Vec::new(),
    })
}

impl DeploymentOperationAgent {
    /// What was applied to `app` in `zone`, if anything.
    fn desired_in(&self, zone: &ZoneName, launch: &LaunchRequested) -> Option<ZoneDesired> {
        let key = desired::key(&self.region, zone, &launch.spec.app);
        let json = self.desired.last(&key)?;
        serde_json::from_slice(&json).ok()
    }

    /// Decides, and if need be applies, a launch in one zone.
    async fn in_zone(
        &self,
        zone: &ZoneName,
        launch: &Envelope<LaunchRequested>,
        app: &App,
    ) -> ZoneResult {
        let request = &launch.payload;
        let before = self.desired_in(zone, request);
        let outcome = match desired::decide(before.as_ref(), zone, request) {
            Decision::Report(outcome) => outcome,
            Decision::Apply => match self.zones.iter().find(|z| &z.name == zone) {
                Some(config) => self.apply(config, app, launch).await,
                None => ZoneOutcome::Failed {
                    zone: zone.clone(),
                    reason: format!("{} has no zone {zone}", self.region),
                    time_us: launch.time_us,
                },
            },
        };
        let ZoneOutcome::Accepted {
            version, time_us, ..
        } = &outcome
        else {
            // A launch the scheduler did not take is still what the zone should run: the
            // DeploymentMendingAgent puts it there once the scheduler takes it.
            let desired = match &outcome {
                ZoneOutcome::Failed { time_us, .. } => {
                    ZoneDesired::asked(before.as_ref(), &self.region, zone, request, *time_us)
                }
                _ => None,
            };
            return ZoneResult {
                outcome,
                desired,
                replaced: None,
            };
        };
        let replay = before.as_ref().filter(|b| {
            b.newest()
                .is_some_and(|n| n.deployment_id == request.deployment_id)
        });
        let desired = match replay {
            // What the history already holds: nothing new to record.
            Some(_) => None,
            None => Some(ZoneDesired::applied(
                before.as_ref(),
                &self.region,
                zone,
                request,
                Applied {
                    deployment_id: request.deployment_id,
                    generation: request.generation,
                    accepted_at_us: *time_us,
                    scheduler_version: version.clone(),
                    app_version: request.spec.version.clone(),
                },
            )),
        };
        // The deployment this one replaced is reported superseded, again on a replay: the first
        // report may not have reached Kafka before the agent stopped.
        let replaced = replay
            .or(desired.as_ref())
            .and_then(|d| d.predecessor(request.deployment_id))
            .cloned();
        ZoneResult {
            outcome,
            desired,
            replaced,
        }
    }

    /// Puts the app on one zone's scheduler, unless the scheduler already runs this deployment
    /// (a replay after a stop between the scheduler's answer and the agent's record) or a newer
    /// one (put there by a launch the agent's history no longer holds).
    async fn apply(
        &self,
        zone: &ZoneConfig,
        app: &App,
        launch: &Envelope<LaunchRequested>,
    ) -> ZoneOutcome {
        let request = &launch.payload;
        let client = MarathonClient::new(&zone.marathon, self.http.clone());
        let deployment = request.deployment_id.to_string();
        let mut pause = FIRST_RETRY;
        let mut last_error = String::new();
        for attempt in 1..=ATTEMPTS {
            let result = async {
                if let Some(existing) = client.app(&app.id).await? {
                    let label = |name: &str| existing.labels.get(name).map(String::as_str);
                    let accepted_at = label(LABEL_ACCEPTED_AT)
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(launch.time_us);
                    if label(marathon::LABEL_DEPLOYMENT_ID) == Some(deployment.as_str()) {
                        return Ok(ZoneOutcome::Accepted {
                            zone: zone.name.clone(),
                            version: existing.version.clone().unwrap_or_default(),
                            time_us: accepted_at,
                        });
                    }
                    let newer = label(LABEL_GENERATION)
                        .and_then(|g| g.parse::<u64>().ok())
                        .filter(|g| *g > request.generation);
                    let by =
                        label(marathon::LABEL_DEPLOYMENT_ID).and_then(|d| Uuid::parse_str(d).ok());
                    if let (Some(by_generation), Some(by)) = (newer, by) {
                        return Ok(ZoneOutcome::Superseded {
                            zone: zone.name.clone(),
                            by,
                            by_generation,
                            time_us: accepted_at,
                        });
                    }
                }
                let accepted_at = now_us();
                let mut app = app.clone();
                app.labels
                    .insert(LABEL_ACCEPTED_AT.to_owned(), accepted_at.to_string());
                client
                    .put_app(&app)
                    .await
                    .map(|accepted| ZoneOutcome::Accepted {
                        zone: zone.name.clone(),
                        version: accepted.version,
                        time_us: accepted_at,
                    })
            }
            .await;
            match result {
                Ok(outcome) => {
                    tracing::info!(region = %self.region, zone = %zone.name, %deployment, app = %app.id,
                        generation = request.generation, ?outcome, "scheduler accepted the app");
                    return outcome;
                }
                Err(e) => {
                    last_error = e.message.clone();
                    if !e.transient || attempt == ATTEMPTS {
                        break;
                    }
                    tracing::warn!(region = %self.region, zone = %zone.name, attempt, error = %e.message, "scheduler call failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
        ZoneOutcome::Failed {
            zone: zone.name.clone(),
            reason: last_error,
            time_us: launch.time_us,
        }
    }

    /// Launches in every target zone at once; returns the records to publish: the launch's
    /// complete event, the supersession of each deployment it replaced, and the zones' new
    /// desired state.
    async fn launch(
        &self,
        launch: &Envelope<LaunchRequested>,
        cause: &Incoming,
    ) -> Result<Vec<Outgoing>, String> {
        let request = &launch.payload;
        let results = match marathon_app(request, &self.keyring) {
            Ok(mut app) => {
                // The app remembers the trace that launched it: state changes it causes later
                // link to it.
                let mut trace = Vec::new();
                crate::telemetry::inject(&tracing::Span::current(), &mut trace);
                if let Some((_, traceparent)) = trace.into_iter().find(|(k, _)| k == "traceparent")
                {
                    app.labels.insert(
                        LABEL_TRACEPARENT.to_owned(),
                        String::from_utf8_lossy(&traceparent).into_owned(),
                    );
                }
                let app = &app;
                join_all(
                    request
                        .zones
                        .iter()
                        .map(|zone| self.in_zone(zone, launch, app)),
                )
                .await
            }
            // Every zone fails, saying why; no scheduler is called.
            Err(e) => request
                .zones
                .iter()
                .map(|zone| ZoneResult {
                    outcome: ZoneOutcome::Failed {
                        zone: zone.clone(),
                        reason: format!("its secrets cannot be opened here: {e}"),
                        time_us: launch.time_us,
                    },
                    desired: None,
                    replaced: None,
                })
                .collect(),
        };

        let cause_id = launch.id.to_string();
        let mut out = Vec::new();
        let mut replaced: BTreeMap<Uuid, (Applied, Vec<ZoneOutcome>)> = BTreeMap::new();
        let mut outcomes = Vec::new();
        for result in results {
            if let Some(desired) = &result.desired {
                out.push(self.keep(desired, result.outcome.time_us(), &cause_id, cause)?);
            }
            if let Some(previous) = result.replaced {
                replaced
                    .entry(previous.deployment_id)
                    .or_insert_with(|| (previous, Vec::new()))
                    .1
                    .push(ZoneOutcome::Superseded {
                        zone: result.outcome.zone().clone(),
                        by: request.deployment_id,
                        by_generation: request.generation,
                        time_us: result.outcome.time_us(),
                    });
            }
            outcomes.push(result.outcome);
        }
        let completed = DeploymentCompleted {
            deployment_id: request.deployment_id,
            generation: request.generation,
            region: self.region.clone(),
            app: request.spec.app.clone(),
            version: request.spec.version.clone(),
            zones: outcomes,
        };
        out.insert(
            0,
            self.complete_event(&completed, launch.time_us, &cause_id, cause)?,
        );
        for (previous, zones) in replaced.into_values() {
            let time_us = zones
                .iter()
                .map(ZoneOutcome::time_us)
                .max()
                .unwrap_or(launch.time_us);
            let superseded = DeploymentCompleted {
                deployment_id: previous.deployment_id,
                generation: previous.generation,
                region: self.region.clone(),
                app: request.spec.app.clone(),
                version: previous.app_version,
                zones,
            };
            out.push(self.complete_event(&superseded, time_us, &cause_id, cause)?);
        }
        Ok(out)
    }

    /// Removes the app from every zone of a removal; returns the records to publish: each removed
    /// deployment reported removed there, and the zones' new desired state.
    ///
    /// Intent first: before any scheduler is called, each zone's desired state says the app is
    /// removed (published and acknowledged), so the DeploymentMendingAgent never takes a zone
    /// this removal already emptied, while another zone's scheduler keeps the removal waiting,
    /// for a deployment gone missing and puts it back.
    async fn remove(
        &self,
        removal: &Envelope<RemovalLaunch>,
        cause: &Incoming,
    ) -> Result<Vec<Outgoing>, Outcome> {
        let r = &removal.payload;
        let cause_id = removal.id.to_string();
        let befores: Vec<(ZoneName, Option<ZoneDesired>)> = r
            .zones
            .iter()
            .map(|zone| {
                let key = desired::key(&self.region, zone, &r.app);
                let before = self
                    .desired
                    .last(&key)
                    .and_then(|json| serde_json::from_slice(&json).ok());
                (zone.clone(), before)
            })
            .collect();
        let replayed = |before: &Option<ZoneDesired>| {
            before
                .as_ref()
                .and_then(|b| b.removal.as_ref())
                .filter(|m| m.removal_id == r.removal_id)
                .cloned()
        };
        let past = |before: &Option<ZoneDesired>| {
            before
                .as_ref()
                .is_some_and(|b| b.asked_generation() > r.generation)
        };
        let asked_at = now_us();
        let mut intents = Vec::new();
        for (_, before) in &befores {
            if let Some(b) = before
                .as_ref()
                .filter(|_| replayed(before).is_none() && !past(before))
            {
                let intent = b.with_removal(RemovalMark {
                    removal_id: r.removal_id,
                    generation: r.generation,
                    removed_at_us: asked_at,
                    removed: Vec::new(),
                });
                let record = self
                    .keep(&intent, asked_at, &format!("{cause_id}/intent"), cause)
                    .map_err(Outcome::Reject)?;
                intents.push(record);
            }
        }
        self.producer.send_all(&intents).await.map_err(|e| {
            Outcome::Fail(format!(
                "the removal's desired state was not acknowledged: {e}"
            ))
        })?;

        let results = join_all(befores.into_iter().map(|(zone, before)| async move {
            if let Some(mark) = replayed(&before) {
                // A replay: what it reported the first time.
                return (zone, mark, None);
            }
            if past(&before) {
                // Something newer was asked of the zone since: the removal is past.
                let mark = RemovalMark {
                    removal_id: r.removal_id,
                    generation: r.generation,
                    removed_at_us: removal.time_us,
                    removed: Vec::new(),
                };
                return (zone, mark, None);
            }
            let removed_at_us = self.delete_in(&zone, r).await;
            let mark = RemovalMark {
                removal_id: r.removal_id,
                generation: r.generation,
                // Not removed yet (the scheduler did not answer): the removal stands, the
                // DeploymentMendingAgent removes the app once the scheduler takes it.
                removed_at_us: removed_at_us.unwrap_or(asked_at),
                removed: match removed_at_us {
                    Some(_) => before
                        .as_ref()
                        .map(ZoneDesired::to_remove)
                        .unwrap_or_default(),
                    None => Vec::new(),
                },
            };
            let desired = before.map(|b| b.with_removal(mark.clone()));
            (zone, mark, desired)
        }))
        .await;

        let mut out = Vec::new();
        let mut removed: BTreeMap<Uuid, (u64, Vec<ZoneOutcome>)> = BTreeMap::new();
        for (zone, mark, desired) in results {
            for (id, generation) in &mark.removed {
                removed
                    .entry(*id)
                    .or_insert_with(|| (*generation, Vec::new()))
                    .1
                    .push(ZoneOutcome::Removed {
                        zone: zone.clone(),
                        by: r.removal_id,
                        by_generation: r.generation,
                        time_us: mark.removed_at_us,
                    });
            }
            if let Some(desired) = desired {
                out.push(
                    self.keep(&desired, mark.removed_at_us, &cause_id, cause)
                        .map_err(Outcome::Reject)?,
                );
            }
        }
        for (id, (generation, zones)) in removed {
            let time_us = zones
                .iter()
                .map(ZoneOutcome::time_us)
                .max()
                .unwrap_or(removal.time_us);
            let completed = DeploymentCompleted {
                deployment_id: id,
                generation,
                region: self.region.clone(),
                app: r.app.clone(),
                version: String::new(),
                zones,
            };
            out.push(
                self.complete_event(&completed, time_us, &cause_id, cause)
                    .map_err(Outcome::Reject)?,
            );
        }
        Ok(out)
    }

    /// Deletes the app from one zone's scheduler (unless it runs a deployment newer than the
    /// removal); answers when, or `None` when the scheduler did not answer or refused.
    async fn delete_in(&self, zone: &ZoneName, removal: &RemovalLaunch) -> Option<i64> {
        let config = self.zones.iter().find(|z| &z.name == zone)?;
        let client = MarathonClient::new(&config.marathon, self.http.clone());
        let app_id = format!("/{}", removal.app);
        let mut pause = FIRST_RETRY;
        for attempt in 1..=ATTEMPTS {
            let result = async {
                if let Some(existing) = client.app(&app_id).await? {
                    let newer = existing
                        .labels
                        .get(LABEL_GENERATION)
                        .and_then(|g| g.parse::<u64>().ok())
                        .is_some_and(|g| g > removal.generation);
                    if newer {
                        return Ok(now_us());
                    }
                    client.delete_app(&app_id).await?;
                }
                Ok(now_us())
            }
            .await;
            match result {
                Ok(at) => {
                    tracing::info!(region = %self.region, %zone, app = %removal.app, removal = %removal.removal_id, "app removed from the scheduler");
                    return Some(at);
                }
                Err(e) => {
                    let e: marathon::MarathonError = e;
                    tracing::warn!(region = %self.region, %zone, attempt, error = %e.message, "scheduler did not remove the app");
                    if !e.transient || attempt == ATTEMPTS {
                        return None;
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
        None
    }

    /// Remembers a zone's new desired state and returns its record for `mot-desired-state`.
    fn keep(
        &self,
        desired: &ZoneDesired,
        time_us: i64,
        cause_id: &str,
        cause: &Incoming,
    ) -> Result<Outgoing, String> {
        let json = serde_json::to_vec(desired).map_err(|e| e.to_string())?;
        self.desired
            .remember(&desired_group(desired), &desired.key(), &json, time_us);
        let head = Envelope::derived(
            Kind::Updated,
            desired.key(),
            self.region.clone(),
            time_us,
            cause_id,
            (),
        );
        Outgoing::envelope(
            self.desired_topic.clone(),
            "ZoneDesired",
            head,
            &json,
            cause,
        )
        .map_err(|e| e.to_string())
    }

    fn complete_event(
        &self,
        completed: &DeploymentCompleted,
        time_us: i64,
        cause_id: &str,
        cause: &Incoming,
    ) -> Result<Outgoing, String> {
        complete_event(&self.output, completed, time_us, cause_id, cause)
    }
}

/// The record of `completed` on `output` (`mot-deployment-complete-events`), at `time_us`, its id
/// derived from `cause_id`.
pub fn complete_event(
    output: &TopicName,
    completed: &DeploymentCompleted,
    time_us: i64,
    cause_id: &str,
    cause: &Incoming,
) -> Result<Outgoing, String> {
    let json = serde_json::to_vec(completed).map_err(|e| e.to_string())?;
    let head = Envelope::derived(
        Kind::Completed,
        completed.deployment_id.to_string(),
        completed.region.clone(),
        time_us,
        cause_id,
        (),
    );
    Outgoing::envelope(output.clone(), "DeploymentCompleted", head, &json, cause)
        .map_err(|e| e.to_string())
}

impl Agent for DeploymentOperationAgent {
    const NAME: &'static str = "DeploymentOperationAgent";

    fn source(ctx: &AgentContext) -> Result<Source, PipelineError> {
        Ok(Source::central(ctx, &catalog::DEPLOYMENT_LAUNCH_EVENTS))
    }

    async fn build(ctx: &AgentContext) -> Result<Self, PipelineError> {
        let http = ctx.http_client(|b| b.connect_timeout(Duration::from_secs(3)))?;
        let desired_topic = TopicName::local(&catalog::DESIRED_STATE.base());
        let desired =
            LastRecordCache::rebuild(Self::NAME, ctx, &desired_topic, desired_group).await?;
        Ok(Self {
            region: ctx.region.name.clone(),
            zones: ctx.region.zones.clone(),
            http,
            output: TopicName::local(&catalog::DEPLOYMENT_COMPLETE_EVENTS.base()),
            desired_topic,
            desired,
            producer: ctx.producers.get(&ctx.home)?,
            keyring: crate::secrets::Keyring::from_config_or_problem(
                &ctx.topology.config().secrets,
            ),
        })
    }

    async fn process(&mut self, incoming: &Incoming) -> Outcome {
        if incoming
            .header(HEADER_EVENT_TYPE)
            .is_some_and(|t| t.starts_with(b"RemovalLaunch."))
        {
            let removal = match incoming.decode::<RemovalLaunch>() {
                Ok(removal) => removal,
                Err(rejected) => return rejected,
            };
            if removal.payload.region != self.region {
                return Outcome::Reject(format!(
                    "removal for {} on {}'s topic",
                    removal.payload.region, self.region
                ));
            }
            return match self.remove(&removal, incoming).await {
                Ok(records) => Outcome::Publish(records),
                Err(outcome) => outcome,
            };
        }
        let launch = match incoming.decode::<LaunchRequested>() {
            Ok(launch) => launch,
            Err(rejected) => return rejected,
        };
        if launch.payload.region != self.region {
            return Outcome::Reject(format!(
                "launch for {} on {}'s topic",
                launch.payload.region, self.region
            ));
        }
        match self.launch(&launch, incoming).await {
            Ok(records) => Outcome::Publish(records),
            Err(reason) => Outcome::Reject(reason),
        }
    }
}
