//! DeploymentMendingAgent (regional): the seed's "mending deployments". It keeps every zone's
//! scheduler in step with what was asked: for each app and zone, the newest deployment asked for
//! there (`mot-desired-state`, written by the DeploymentOperationAgent), compared with what the
//! Marathon poller observes (`mot-marathon-app-state`). Both are local, compacted topics, read by
//! one consumer and rebuilt from the beginning at start, so nothing rests on memory alone.
//!
//! A zone has drifted when its scheduler no longer runs that deployment: the app deleted, scaled
//! or replaced (image, version, labels) by hand, or never launched because the scheduler was down
//! (the operation agent records a launch the scheduler did not take as what the zone should run).
//! A difference seen in the poller's news is first confirmed by reading the app from the
//! scheduler itself (the news may be late): only a confirmed drift is reported or mended.
//! Each drift is reported (`DriftReport` on `mot-deployment-complete-events`: the timeline shows
//! `drift-detected` naming what differed, then `mended`, and GET the zone's drift) and, unless the
//! deployment asked `"drift": "report"`, mended: the deployment is put back. A mend the scheduler
//! refuses is retried on the agent's tick with capped backoff (1 s doubling to 60 s), never in a
//! tight loop.
//!
//! A removal (`DELETE /apps/{app}`) is a desired state too: an app removed from a zone and put
//! back there by hand is removed again.
//!
//! Never a newer deployment mended back to an older one: a scheduler running a higher generation
//! than the desired state knows is not drift (the desired state has not caught up yet), and the
//! desired state only ever moves to newer generations. Never a zone mended on stale news: a
//! difference counts only on an observation made after the deployment was asked for (or last
//! mended), or once [`SETTLE`] has passed since then with none (a deployment whose zone never
//! shows it).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::config::ZoneConfig;
use crate::models::deployment::{DeploymentCompleted, DriftPolicy, ZoneOutcome};
use crate::models::desired::{self, DriftEvent, DriftReport, ZoneDesired};
use crate::models::envelope::{now_us, Envelope, Kind};
use crate::models::state::MarathonAppState;
use crate::platform::marathon::{App, MarathonClient};
use crate::topics::catalog;
use crate::topics::names::{RegionName, TopicName};

use super::counters::Counters;
use super::deployment_operation::{complete_event, marathon_app, LABEL_ACCEPTED_AT};
use super::pipeline::{
    self, Agent, AgentContext, Incoming, Outcome, Outgoing, PipelineError, Source,
};

/// An observation stamped this soon after a deployment was asked for (or mended) may predate it
/// (the clocks of the pollers and the operation agent's host differ a little).
const MARGIN: Duration = Duration::from_secs(1);
/// With no observation after a deployment was asked for (or since the agent started), this long
/// later the scheduler's silence is taken as it is: the zone does not run it.
pub const SETTLE: Duration = Duration::from_secs(10);
/// Between two checks of every zone.
const TICK: Duration = Duration::from_secs(1);
/// The longest pause between two mends of one zone.
const MAX_MEND_BACKOFF: Duration = Duration::from_secs(60);

/// What the scheduler of one zone showed of one app, and when.
#[derive(Debug, Clone)]
struct Observed {
    time_us: i64,
    /// `None`: the app is gone from the scheduler.
    app: Option<App>,
}

/// A drift reported and being mended.
#[derive(Debug, Clone)]
struct Drift {
    what: String,
    /// The deployment it is a drift from.
    deployment: uuid::Uuid,
    /// When the last mend was accepted by the scheduler, microseconds.
    mended_at_us: Option<i64>,
}

/// One app in one zone.
#[derive(Debug, Default)]
struct Tracked {
    desired: Option<ZoneDesired>,
    observed: Option<Observed>,
    drift: Option<Drift>,
    /// Reads or mends the scheduler refused in a row.
    failures: u32,
    /// The scheduler is not asked again before this.
    next_attempt: Option<Instant>,
}

/// The agent.
pub struct DeploymentMendingAgent {
    region: RegionName,
    zones: Vec<ZoneConfig>,
    http: reqwest::Client,
    desired_topic: TopicName,
    output: TopicName,
    counters: std::sync::Arc<Counters>,
    /// By `<region>/<zone>/<app>`.
    tracked: HashMap<String, Tracked>,
    started_us: i64,
    /// Opens a deployment's secret values when it is put back.
    keyring: crate::secrets::Keyring,
}

impl DeploymentMendingAgent {
    /// Takes a desired state, unless an at least as new one is known.
    fn desire(&mut self, desired: ZoneDesired) -> String {
        let key = desired.key();
        let tracked = self.tracked.entry(key.clone()).or_default();
        let newer = tracked.desired.as_ref().is_none_or(|known| {
            (desired.launch.generation, desired.asked_at_us)
                >= (known.launch.generation, known.asked_at_us)
        });
        if newer {
            tracked.desired = Some(desired);
        }
        key
    }

    /// Takes an observation, unless a later one is known.
    fn observe(&mut self, key: String, observed: Observed) -> String {
        let tracked = self.tracked.entry(key.clone()).or_default();
        if tracked
            .observed
            .as_ref()
            .is_none_or(|known| observed.time_us >= known.time_us)
        {
            tracked.observed = Some(observed);
        }
        key
    }

    /// Checks one app in one zone: a difference between what was asked and what the poller saw is
    /// confirmed by reading the scheduler itself (the poller's news may be late), then reported,
    /// and mended; a drift that was reported and is gone is reported ended.
    async fn check(&mut self, key: &str) -> Result<Vec<Outgoing>, String> {
        let now = now_us();
        let Some(tracked) = self.tracked.get(key) else {
            return Ok(Vec::new());
        };
        let Some(desired) = tracked.desired.clone() else {
            return Ok(Vec::new());
        };
        let observed_app = tracked.observed.as_ref().and_then(|o| o.app.as_ref());
        if desired::drift_of(&desired, observed_app).is_none() {
            let time_us = tracked_time(Some(tracked)).unwrap_or(now);
            return self.in_step(key, &desired, time_us);
        }
        let since = tracked
            .drift
            .as_ref()
            .and_then(|d| d.mended_at_us)
            .unwrap_or(0)
            .max(desired.asked_at_us)
            // A removal is asked before its zones are emptied: let it do its work first.
            .max(desired.removal.as_ref().map_or(0, |r| r.removed_at_us));
        let fresh = tracked
            .observed
            .as_ref()
            .is_some_and(|o| o.time_us > since + MARGIN.as_micros() as i64);
        let settled = now > since.max(self.started_us) + SETTLE.as_micros() as i64;
        if !(fresh || settled) || tracked.next_attempt.is_some_and(|t| Instant::now() < t) {
            return Ok(Vec::new());
        }
        // Confirmed with the scheduler itself, or not at all.
        let live = match self.read_live(&desired).await {
            Ok(live) => live,
            Err(e) => {
                self.failed(key, &desired, &e);
                return Ok(Vec::new());
            }
        };
        self.observe(
            key.to_owned(),
            Observed {
                time_us: now,
                app: live.clone(),
            },
        );
        let Some(what) = desired::drift_of(&desired, live.as_ref()) else {
            return self.in_step(key, &desired, now);
        };
        let launch = &desired.launch;
        let mut out = Vec::new();
        let open = self.tracked.get(key).and_then(|t| t.drift.clone());
        if let Some(old) = open
            .as_ref()
            .filter(|d| d.deployment != launch.deployment_id)
        {
            // A drift of an earlier deployment, replaced since: it ends with it.
            out.push(self.report(
                &desired,
                old.deployment,
                DriftEvent::Resolved {
                    what: old.what.clone(),
                    time_us: now,
                },
            )?);
        }
        if open
            .as_ref()
            .is_none_or(|d| d.deployment != launch.deployment_id)
        {
            tracing::warn!(region = %self.region, zone = %desired.zone, app = %desired.app,
                deployment = %launch.deployment_id, %what, "zone drifted from its deployment");
            Counters::add(&self.counters.drifts_detected, 1);
            out.push(self.report(
                &desired,
                launch.deployment_id,
                DriftEvent::Detected {
                    what: what.clone(),
                    time_us: now,
                },
            )?);
            if let Some(t) = self.tracked.get_mut(key) {
                t.drift = Some(Drift {
                    what,
                    deployment: launch.deployment_id,
                    mended_at_us: None,
                });
            }
        }
        if launch.spec.drift == DriftPolicy::Report {
            // Reported; looked at again on the next news of the zone, or in a while.
            if let Some(t) = self.tracked.get_mut(key) {
                t.next_attempt = Some(Instant::now() + MAX_MEND_BACKOFF);
            }
            return Ok(out);
        }
        match self.mend(&desired).await {
            Ok(at) => {
                if let Some(removal) = desired.removed() {
                    // The removal is done now: the deployments it removed are reported so.
                    for (id, generation) in desired.to_remove() {
                        let completed = DeploymentCompleted {
                            deployment_id: id,
                            generation,
                            region: self.region.clone(),
                            app: desired.app.clone(),
                            version: String::new(),
                            zones: vec![ZoneOutcome::Removed {
                                zone: desired.zone.clone(),
                                by: removal.removal_id,
                                by_generation: removal.generation,
                                time_us: at,
                            }],
                        };
                        out.push(complete_event(
                            &self.output,
                            &completed,
                            at,
                            "mended removal",
                            &Incoming::unprompted(),
                        )?);
                    }
                }
                if let Some(t) = self.tracked.get_mut(key) {
                    t.failures = 0;
                    // Looked at again once the poller has seen the mend, not before.
                    t.next_attempt = Some(Instant::now() + MARGIN + SETTLE);
                    if let Some(d) = t.drift.as_mut() {
                        d.mended_at_us = Some(at);
                    }
                }
            }
            Err(e) => self.failed(key, &desired, &e),
        }
        Ok(out)
    }

    /// The zone runs what was asked: a drift that was open ends, mended by mot or set right
    /// otherwise, at `time_us` (when that was seen).
    fn in_step(
        &mut self,
        key: &str,
        desired: &ZoneDesired,
        time_us: i64,
    ) -> Result<Vec<Outgoing>, String> {
        let Some(t) = self.tracked.get_mut(key) else {
            return Ok(Vec::new());
        };
        t.failures = 0;
        t.next_attempt = None;
        let Some(drift) = t.drift.take() else {
            return Ok(Vec::new());
        };
        let event = match drift.mended_at_us {
            Some(_) => {
                Counters::add(&self.counters.mended, 1);
                DriftEvent::Mended {
                    what: drift.what,
                    time_us,
                }
            }
            None => DriftEvent::Resolved {
                what: drift.what,
                time_us,
            },
        };
        Ok(vec![self.report(desired, drift.deployment, event)?])
    }

    /// A read or a mend the scheduler refused or did not answer: tried again later, with backoff.
    fn failed(&mut self, key: &str, desired: &ZoneDesired, error: &str) {
        let Some(t) = self.tracked.get_mut(key) else {
            return;
        };
        t.failures += 1;
        let pause = TICK
            .saturating_mul(1 << t.failures.min(10))
            .min(MAX_MEND_BACKOFF);
        t.next_attempt = Some(Instant::now() + pause);
        Counters::add(&self.counters.mend_failures, 1);
        tracing::warn!(region = %self.region, zone = %desired.zone, app = %desired.app,
            %error, retry_in_ms = pause.as_millis() as u64, "zone not mended; retrying later");
    }

    /// The app as the zone's scheduler has it now (`None`: it has none).
    async fn read_live(&self, desired: &ZoneDesired) -> Result<Option<App>, String> {
        let zone = self
            .zones
            .iter()
            .find(|z| z.name == desired.zone)
            .ok_or_else(|| format!("{} has no zone {}", self.region, desired.zone))?;
        MarathonClient::new(&zone.marathon, self.http.clone())
            .app(&format!("/{}", desired.app))
            .await
            .map_err(|e| e.message)
    }

    /// Puts the desired deployment back on its zone's scheduler (or, with a removal in force,
    /// removes the app); answers when the scheduler took it.
    async fn mend(&self, desired: &ZoneDesired) -> Result<i64, String> {
        let zone = self
            .zones
            .iter()
            .find(|z| z.name == desired.zone)
            .ok_or_else(|| format!("{} has no zone {}", self.region, desired.zone))?;
        let client = MarathonClient::new(&zone.marathon, self.http.clone());
        if desired.removed().is_some() {
            client
                .delete_app(&format!("/{}", desired.app))
                .await
                .map_err(|e| e.message)?;
            tracing::info!(region = %self.region, zone = %desired.zone, app = %desired.app,
                "mended: the removed app is gone from the scheduler again");
            return Ok(now_us());
        }
        let mut app = marathon_app(&desired.launch, &self.keyring).map_err(|e| e.to_string())?;
        let at = now_us();
        app.labels
            .insert(LABEL_ACCEPTED_AT.to_owned(), at.to_string());
        client.put_app(&app).await.map_err(|e| e.message)?;
        tracing::info!(region = %self.region, zone = %desired.zone, app = %desired.app,
            deployment = %desired.launch.deployment_id, "mended: the deployment is back on the scheduler");
        Ok(at)
    }

    fn report(
        &self,
        desired: &ZoneDesired,
        deployment: uuid::Uuid,
        event: DriftEvent,
    ) -> Result<Outgoing, String> {
        let report = DriftReport {
            deployment_id: deployment,
            generation: desired.launch.generation,
            region: self.region.clone(),
            zone: desired.zone.clone(),
            app: desired.app.clone(),
            event,
        };
        let json = serde_json::to_vec(&report).map_err(|e| e.to_string())?;
        let head = Envelope::derived(
            Kind::Completed,
            deployment.to_string(),
            self.region.clone(),
            report.event.time_us(),
            &format!("{}/{}", desired.key(), report.event.kind()),
            (),
        );
        Outgoing::envelope(
            self.output.clone(),
            "DeploymentDrift",
            head,
            &json,
            &Incoming::unprompted(),
        )
        .map_err(|e| e.to_string())
    }
}

/// The time of the latest observation of a tracked app.
fn tracked_time(tracked: Option<&Tracked>) -> Option<i64> {
    tracked.and_then(|t| t.observed.as_ref()).map(|o| o.time_us)
}

impl Agent for DeploymentMendingAgent {
    const NAME: &'static str = "DeploymentMendingAgent";

    fn source(_: &AgentContext) -> Result<Source, PipelineError> {
        Ok(Source::Home(vec![
            TopicName::local(&catalog::DESIRED_STATE.base()),
            TopicName::local(&catalog::MARATHON_APP_STATE.base()),
        ]))
    }

    async fn build(ctx: &AgentContext) -> Result<Self, PipelineError> {
        let http = ctx.http_client(|b| b.connect_timeout(Duration::from_secs(3)))?;
        let mut agent = Self {
            region: ctx.region.name.clone(),
            zones: ctx.region.zones.clone(),
            http,
            desired_topic: TopicName::local(&catalog::DESIRED_STATE.base()),
            output: TopicName::local(&catalog::DEPLOYMENT_COMPLETE_EVENTS.base()),
            counters: ctx.counters.clone(),
            tracked: HashMap::new(),
            started_us: now_us(),
            keyring: crate::secrets::Keyring::from_config_or_problem(
                &ctx.topology.config().secrets,
            ),
        };
        // What was asked and what runs, as of now, before the first check.
        let reader = format!("{}-rebuild", pipeline::consumer_group(Self::NAME, ctx));
        let mut desired = Vec::new();
        pipeline::read_to_end(&ctx.home, &agent.desired_topic, &reader, |m| {
            use rdkafka::Message;
            if let Ok(e) = crate::models::envelope::decode::<ZoneDesired>(m.key(), m.payload()) {
                desired.push(e);
            }
        })
        .await?;
        let mut observed = Vec::new();
        let marathon = TopicName::local(&catalog::MARATHON_APP_STATE.base());
        pipeline::read_to_end(&ctx.home, &marathon, &reader, |m| {
            use rdkafka::Message;
            if let Ok(e) = crate::models::envelope::decode::<MarathonAppState>(m.key(), m.payload())
            {
                observed.push(e);
            }
        })
        .await?;
        let region = agent.region.clone();
        for e in desired.into_iter().filter(|e| e.origin == region) {
            agent.desire(e.payload);
        }
        for e in observed.into_iter().filter(|e| e.origin == region) {
            agent.take_observation(e);
        }
        tracing::info!(agent = Self::NAME, region = %agent.region, apps = agent.tracked.len(), "desired and observed state rebuilt");
        Ok(agent)
    }

    async fn process(&mut self, incoming: &Incoming) -> Outcome {
        let key = if incoming.topic == self.desired_topic.as_str() {
            match incoming.decode::<ZoneDesired>() {
                Ok(e) if e.origin == self.region => self.desire(e.payload),
                Ok(_) => return Outcome::Skip,
                Err(rejected) => return rejected,
            }
        } else {
            match incoming.decode::<MarathonAppState>() {
                Ok(e) if e.origin == self.region => self.take_observation(e),
                Ok(_) => return Outcome::Skip,
                Err(rejected) => return rejected,
            }
        };
        match self.check(&key).await {
            Ok(records) => Outcome::Publish(records),
            Err(reason) => Outcome::Reject(reason),
        }
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(TICK)
    }

    async fn tick(&mut self) -> Vec<Outgoing> {
        let keys: Vec<String> = self
            .tracked
            .iter()
            .filter(|(_, t)| t.desired.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::new();
        for key in keys {
            match self.check(&key).await {
                Ok(records) => out.extend(records),
                Err(e) => {
                    tracing::warn!(region = %self.region, %key, error = %e, "drift not reported")
                }
            }
        }
        out
    }
}

impl DeploymentMendingAgent {
    fn take_observation(&mut self, e: Envelope<MarathonAppState>) -> String {
        let app = (e.kind != Kind::Deleted).then_some(e.payload.app.clone());
        let key = e.payload.key();
        self.observe(
            key,
            Observed {
                time_us: e.time_us,
                app,
            },
        )
    }
}
