//! DeploymentStateArchivalAgent (persistence layer, one per region): consumes the region's
//! `mot-deployment-state-change.<region>` on the central cluster and writes each deployment's
//! state per zone (`deployment_zones`), a timeline entry per change (`deployment_events`), and
//! the region's heartbeats (`region_freshness`). A deleted zone state (the deployment's app left
//! the zone: replaced by a later deployment, removed, or deleted by hand) is written as no
//! instance running, and `gone` on the timeline; its status is the region's report of why
//! (superseded, removed: the CompleteEventArchivalAgent writes it) or, deleted by hand, the drift
//! the mending agent reports.

use std::sync::Arc;

use scylla::statement::prepared::PreparedStatement;

use crate::models::envelope::Kind;
use crate::models::state::{DeploymentZoneState, RegionHeartbeat, HEARTBEAT_PREFIX};
use crate::topics::catalog;
use crate::topics::names::RegionName;

use super::archival::{self, stored, timestamp, with_retries, Archive, TimelineEntry};
use super::pipeline::{Agent, AgentContext, Incoming, Outcome, PipelineError, Source};

/// The agent: its writes, shared by those in flight.
pub struct DeploymentStateArchivalAgent(Arc<Writer>);

/// The agent's session and statements.
struct Writer {
    region: RegionName,
    archive: Archive,
    zone: PreparedStatement,
    /// A zone the deployment's app left: counts only.
    gone: PreparedStatement,
    heartbeat: PreparedStatement,
}

impl Writer {
    async fn heartbeat(&self, incoming: &Incoming) -> Outcome {
        let beat = match incoming.decode::<RegionHeartbeat>() {
            Ok(beat) => beat,
            Err(rejected) => return rejected,
        };
        if beat.origin != self.region {
            return Outcome::Skip;
        }
        stored(
            with_retries("INSERT region_freshness", || {
                self.archive.session.execute_unpaged(
                    &self.heartbeat,
                    (beat.origin.as_str(), timestamp(beat.time_us), beat.time_us),
                )
            })
            .await
            .map(|_| 1),
        )
    }

    async fn zone_state(&self, incoming: &Incoming) -> Outcome {
        let change = match incoming.decode::<DeploymentZoneState>() {
            Ok(change) => change,
            Err(rejected) => return rejected,
        };
        if change.origin != self.region {
            return Outcome::Skip;
        }
        let s = &change.payload;
        let t = change.time_us;
        if change.kind == Kind::Deleted {
            return self.gone(s, t).await;
        }
        let status = s.status;
        let counts = (s.desired as i32, s.running as i32, s.healthy as i32);
        let mut detail = serde_json::json!({
            "desired": s.desired, "running": s.running, "healthy": s.healthy, "version": s.version,
        });
        if let Some(reason) = &s.reason {
            detail["reason"] = reason.as_str().into();
        }
        let detail = detail.to_string();
        let zone = with_retries("INSERT deployment_zones", || {
            self.archive.session.execute_unpaged(
                &self.zone,
                (
                    s.deployment_id,
                    s.region.as_str(),
                    s.zone.as_str(),
                    s.app.as_str(),
                    s.version.as_str(),
                    counts.0,
                    counts.1,
                    counts.2,
                    status.as_str(),
                    s.reason.as_deref(),
                    timestamp(t),
                    t,
                ),
            )
        })
        .await;
        if let Err(problem) = zone {
            return problem.into();
        }
        self.zone_event(s, t, status.as_str(), &detail).await
    }

    /// The zone's timeline entry, once its row is written: the record is stored (2 writes).
    async fn zone_event(
        &self,
        s: &DeploymentZoneState,
        t: i64,
        kind: &str,
        detail: &str,
    ) -> Outcome {
        stored(
            self.archive
                .timeline(TimelineEntry {
                    deployment: s.deployment_id,
                    time_us: t,
                    region: s.region.as_str(),
                    zone: s.zone.as_str(),
                    subject: "zone",
                    kind,
                    detail,
                })
                .await
                .map(|_| 2),
        )
    }
}

impl Writer {
    /// The deployment's app left the zone: nothing of it runs there any more.
    async fn gone(&self, s: &DeploymentZoneState, t: i64) -> Outcome {
        let written = with_retries("INSERT deployment_zones", || {
            self.archive.session.execute_unpaged(
                &self.gone,
                (
                    s.deployment_id,
                    s.region.as_str(),
                    s.zone.as_str(),
                    s.app.as_str(),
                    s.version.as_str(),
                    s.desired as i32,
                    timestamp(t),
                    t,
                ),
            )
        })
        .await;
        if let Err(problem) = written {
            return problem.into();
        }
        let detail = serde_json::json!({"desired": s.desired, "version": s.version}).to_string();
        self.zone_event(s, t, "gone", &detail).await
    }
}

impl Agent for DeploymentStateArchivalAgent {
    const NAME: &'static str = "DeploymentStateArchivalAgent";

    fn source(ctx: &AgentContext) -> Result<Source, PipelineError> {
        Ok(archival::source(ctx, &catalog::DEPLOYMENT_STATE_CHANGE))
    }

    async fn build(ctx: &AgentContext) -> Result<Self, PipelineError> {
        let archive = Archive::open(ctx).await?;
        Ok(Self(Arc::new(Writer {
            region: ctx.region.name.clone(),
            zone: archive
                .prepare(
                    "INSERT INTO {ks}.deployment_zones (deployment_id, region, zone, app, version, \
                     desired, running, healthy, status, reason, event_time) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?",
                )
                .await?,
            gone: archive
                .prepare(
                    "INSERT INTO {ks}.deployment_zones (deployment_id, region, zone, app, version, \
                     desired, running, healthy, event_time) VALUES (?, ?, ?, ?, ?, ?, 0, 0, ?) \
                     USING TIMESTAMP ?",
                )
                .await?,
            heartbeat: archive
                .prepare(
                    "INSERT INTO {ks}.region_freshness (region, heartbeat_at) VALUES (?, ?) \
                     USING TIMESTAMP ?",
                )
                .await?,
            archive,
        })))
    }

    async fn process(&mut self, incoming: &Incoming) -> Outcome {
        let (writer, incoming) = (self.0.clone(), incoming.clone());
        Outcome::pending(async move { writer.write(&incoming).await })
    }
}

impl Writer {
    /// Writes what `incoming` says (the windowed part of the agent).
    async fn write(&self, incoming: &Incoming) -> Outcome {
        let heartbeat = incoming
            .key
            .as_deref()
            .is_some_and(|k| k.starts_with(HEARTBEAT_PREFIX.as_bytes()));
        if heartbeat {
            self.heartbeat(incoming).await
        } else {
            self.zone_state(incoming).await
        }
    }
}
