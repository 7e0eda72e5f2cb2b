//! CompleteEventArchivalAgent (persistence layer, one per region): consumes the region's
//! `mot-deployment-complete-events.<region>` on the central cluster and writes what each zone's
//! scheduler did with the launch to the timeline; a zone whose scheduler refused it (or could not
//! be reached) is also written to `deployment_zones` as failed, with the reason.

use scylla::statement::prepared::PreparedStatement;

use crate::models::deployment::{DeploymentCompleted, ZoneOutcome};
use crate::models::state::ZoneStatus;
use crate::topics::catalog;
use crate::topics::names::RegionName;

use super::archival::{self, stored, timestamp, with_retries, Archive, INSERT_EVENT};
use super::pipeline::{Agent, AgentContext, Incoming, Outcome, PipelineError, Source};

/// The agent.
pub struct CompleteEventArchivalAgent {
    region: RegionName,
    archive: Archive,
    failed_zone: PreparedStatement,
    event: PreparedStatement,
}

impl Agent for CompleteEventArchivalAgent {
    const NAME: &'static str = "CompleteEventArchivalAgent";

    fn source(ctx: &AgentContext) -> Result<Source, PipelineError> {
        Ok(archival::source(ctx, &catalog::DEPLOYMENT_COMPLETE_EVENTS))
    }

    async fn build(ctx: &AgentContext) -> Result<Self, PipelineError> {
        let archive = Archive::open(ctx).await?;
        Ok(Self {
            region: ctx.region.name.clone(),
            failed_zone: archive
                .prepare(
                    "INSERT INTO {ks}.deployment_zones (deployment_id, region, zone, app, version, \
                     status, reason, event_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?",
                )
                .await?,
            event: archive.prepare(INSERT_EVENT).await?,
            archive,
        })
    }

    async fn process(&mut self, incoming: &Incoming) -> Outcome {
        let done = match incoming.decode::<DeploymentCompleted>() {
            Ok(done) => done,
            Err(rejected) => return rejected,
        };
        if done.origin != self.region {
            return Outcome::Skip;
        }
        let c = &done.payload;
        let t = done.time_us;
        let mut writes = 0;
        for outcome in &c.zones {
            let (zone, kind, detail) = match outcome {
                ZoneOutcome::Accepted { zone, version } => (
                    zone,
                    "scheduler-accepted",
                    serde_json::json!({"scheduler_version": version}),
                ),
                ZoneOutcome::Failed { zone, reason } => {
                    let failed = with_retries("INSERT deployment_zones", || {
                        self.archive.session.execute_unpaged(
                            &self.failed_zone,
                            (
                                c.deployment_id,
                                c.region.as_str(),
                                zone.as_str(),
                                c.app.as_str(),
                                c.version.as_str(),
                                ZoneStatus::Failed.as_str(),
                                reason.as_str(),
                                timestamp(t),
                                t,
                            ),
                        )
                    })
                    .await;
                    if let Err(problem) = failed {
                        return Outcome::Fail(problem);
                    }
                    writes += 1;
                    (
                        zone,
                        "scheduler-failed",
                        serde_json::json!({"reason": reason}),
                    )
                }
            };
            let detail = detail.to_string();
            let event = with_retries("INSERT deployment_events", || {
                self.archive.session.execute_unpaged(
                    &self.event,
                    (
                        c.deployment_id,
                        t,
                        c.region.as_str(),
                        zone.as_str(),
                        "scheduler",
                        kind,
                        detail.as_str(),
                        t,
                    ),
                )
            })
            .await;
            if let Err(problem) = event {
                return Outcome::Fail(problem);
            }
            writes += 1;
        }
        stored(Ok(writes))
    }
}
