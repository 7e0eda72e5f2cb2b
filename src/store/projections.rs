//! The read side of the projections: the queries the API answers from, one table per query
//! (see `migrations/`). The archival agents write these tables; the API only reads them (and
//! writes the service layer's own rows: the request shell and app configuration).

use std::collections::BTreeMap;
use std::sync::Arc;

use scylla::client::session::Session;
use scylla::response::{PagingState, PagingStateResponse};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlTimestamp;
use uuid::Uuid;

use crate::models::deployment::DeploymentRequested;
use crate::models::rollout::Rollout;

/// Deployments read, newest first, looking for what a rollback puts back.
pub const ROLLBACK_SCAN: usize = 200;

/// Why a read failed.
pub type ReadError = Box<dyn std::error::Error + Send + Sync>;

/// A deployment's state in one zone.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneRow {
    pub region: String,
    pub zone: String,
    pub desired: Option<i32>,
    pub running: Option<i32>,
    pub healthy: Option<i32>,
    pub status: String,
    pub reason: Option<String>,
    pub event_time_ms: Option<i64>,
    /// The zone's drift from the deployment, as JSON `{detected_at_ms, what}`.
    pub drift: Option<String>,
}

/// One instance of a deployment.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct InstanceRow {
    pub region: String,
    pub zone: String,
    pub instance_id: String,
    pub service: Option<String>,
    pub node: Option<String>,
    pub host: Option<String>,
    pub port: Option<i32>,
    pub health: Option<String>,
    pub checks: serde_json::Value,
    pub tags: Vec<String>,
    pub traffic: Option<bool>,
    pub state: Option<String>,
    pub last_event_ms: Option<i64>,
}

/// One timeline entry.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EventRow {
    pub time_us: i64,
    pub region: String,
    pub zone: String,
    pub subject: String,
    pub kind: String,
    pub detail: serde_json::Value,
}

/// The deployment's own row: what the service layer accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentRow {
    pub id: Uuid,
    pub app: String,
    pub version: String,
    pub request: String,
    pub targets: Vec<String>,
    pub created_ms: i64,
    pub trace_id: Option<String>,
    /// Its place in its app's history (absent for deployments accepted before generations).
    pub generation: Option<i64>,
}

/// An app's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct AppConfigRow {
    pub config: String,
    pub revision: i64,
    pub updated_ms: i64,
}

/// The API's prepared reads.
pub struct Projections {
    session: Arc<Session>,
    deployment: PreparedStatement,
    zones: PreparedStatement,
    freshness: PreparedStatement,
    instances: PreparedStatement,
    events: PreparedStatement,
    by_app: PreparedStatement,
    by_month: PreparedStatement,
    config: PreparedStatement,
    put_config: PreparedStatement,
    insert_event: PreparedStatement,
    rollout: PreparedStatement,
}

impl Projections {
    /// Prepares the reads against keyspace `ks`.
    pub async fn prepare(session: Arc<Session>, ks: &str) -> Result<Self, ReadError> {
        let p = |cql: String| {
            let session = session.clone();
            async move { session.prepare(cql).await }
        };
        Ok(Self {
            deployment: p(format!(
                "SELECT id, app, version, request, targets, created_at, trace_id, generation FROM {ks}.deployments WHERE id = ?"
            ))
            .await?,
            zones: p(format!(
                "SELECT region, zone, desired, running, healthy, status, reason, event_time, drift, \
                 ended, ended_reason FROM {ks}.deployment_zones WHERE deployment_id = ?"
            ))
            .await?,
            freshness: p(format!(
                "SELECT heartbeat_at FROM {ks}.region_freshness WHERE region = ?"
            ))
            .await?,
            instances: p(format!(
                "SELECT region, zone, instance_id, service, node, host, port, health, checks, tags, \
                 traffic, state, event_time FROM {ks}.deployment_instances WHERE deployment_id = ?"
            ))
            .await?,
            events: p(format!(
                "SELECT event_time_us, region, zone, subject, kind, detail \
                 FROM {ks}.deployment_events WHERE deployment_id = ?"
            ))
            .await?,
            by_app: p(format!(
                "SELECT id FROM {ks}.deployments_by_app WHERE app = ?"
            ))
            .await?,
            by_month: p(format!(
                "SELECT id FROM {ks}.deployments_by_month WHERE month = ?"
            ))
            .await?,
            config: p(format!(
                "SELECT config, revision, updated_at FROM {ks}.app_config WHERE app = ?"
            ))
            .await?,
            put_config: p(format!(
                "INSERT INTO {ks}.app_config (app, config, revision, updated_at) VALUES (?, ?, ?, ?) \
                 USING TIMESTAMP ?"
            ))
            .await?,
            insert_event: p(crate::actors::archival::INSERT_EVENT.replace("{ks}", ks)).await?,
            rollout: p(format!(
                "SELECT rollout FROM {ks}.deployment_rollouts WHERE deployment_id = ?"
            ))
            .await?,
            session,
        })
    }

    /// The rollout of deployment `id`, if it has a strategy and the rollout was archived.
    pub async fn rollout(&self, id: Uuid) -> Result<Option<Rollout>, ReadError> {
        let row = self
            .session
            .execute_unpaged(&self.rollout, (id,))
            .await?
            .into_rows_result()?
            .maybe_first_row::<(Option<String>,)>()?;
        Ok(row
            .and_then(|(json,)| json)
            .map(|json| serde_json::from_str(&json))
            .transpose()?)
    }

    /// Puts an event of the service layer's own on a deployment's timeline.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_event(
        &self,
        id: Uuid,
        time_us: i64,
        region: &str,
        zone: &str,
        subject: &str,
        kind: &str,
        detail: &str,
    ) -> Result<(), ReadError> {
        self.session
            .execute_unpaged(
                &self.insert_event,
                (id, time_us, region, zone, subject, kind, detail, time_us),
            )
            .await?;
        Ok(())
    }

    pub async fn deployment(&self, id: Uuid) -> Result<Option<DeploymentRow>, ReadError> {
        type Row = (
            Uuid,
            String,
            String,
            String,
            Option<Vec<String>>,
            CqlTimestamp,
            Option<String>,
            Option<i64>,
        );
        let row = self
            .session
            .execute_unpaged(&self.deployment, (id,))
            .await?
            .into_rows_result()?
            .maybe_first_row::<Row>()?;
        Ok(row.map(
            |(id, app, version, request, targets, created, trace_id, generation)| DeploymentRow {
                id,
                app,
                version,
                request,
                targets: targets.unwrap_or_default(),
                created_ms: created.0,
                trace_id,
                generation,
            },
        ))
    }

    pub async fn zones(&self, id: Uuid) -> Result<Vec<ZoneRow>, ReadError> {
        type Row = (
            String,
            String,
            Option<i32>,
            Option<i32>,
            Option<i32>,
            Option<String>,
            Option<String>,
            Option<CqlTimestamp>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let rows = self
            .session
            .execute_unpaged(&self.zones, (id,))
            .await?
            .into_rows_result()?;
        let mut out = Vec::new();
        for row in rows.rows::<Row>()? {
            let (region, zone, desired, running, healthy, status, reason, time, drift, ended, why) =
                row?;
            // An ended zone stays ended, whatever was observed there afterwards.
            let (status, reason) = match ended {
                Some(ended) => (Some(ended), why),
                None => (status, reason),
            };
            out.push(ZoneRow {
                region,
                zone,
                desired,
                running,
                healthy,
                status: status.unwrap_or_else(|| "pending".into()),
                reason,
                event_time_ms: time.map(|t| t.0),
                drift,
            });
        }
        Ok(out)
    }

    /// The last heartbeat of each of `regions` that has one, in milliseconds.
    pub async fn freshness(&self, regions: &[String]) -> Result<BTreeMap<String, i64>, ReadError> {
        let mut out = BTreeMap::new();
        for region in regions {
            let row = self
                .session
                .execute_unpaged(&self.freshness, (region,))
                .await?
                .into_rows_result()?
                .maybe_first_row::<(Option<CqlTimestamp>,)>()?;
            if let Some((Some(at),)) = row {
                out.insert(region.clone(), at.0);
            }
        }
        Ok(out)
    }

    pub async fn instances(&self, id: Uuid) -> Result<Vec<InstanceRow>, ReadError> {
        type Row = (
            String,
            String,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<i32>,
            Option<String>,
            Option<String>,
            Option<Vec<String>>,
            Option<bool>,
            Option<String>,
            Option<CqlTimestamp>,
        );
        let rows = self
            .session
            .execute_unpaged(&self.instances, (id,))
            .await?
            .into_rows_result()?;
        let mut out = Vec::new();
        for row in rows.rows::<Row>()? {
            let (
                region,
                zone,
                instance_id,
                service,
                node,
                host,
                port,
                health,
                checks,
                tags,
                traffic,
                state,
                time,
            ) = row?;
            out.push(InstanceRow {
                region,
                zone,
                instance_id,
                service,
                node,
                host,
                port,
                health,
                checks: checks
                    .and_then(|c| serde_json::from_str(&c).ok())
                    .unwrap_or(serde_json::Value::Null),
                tags: tags.unwrap_or_default(),
                traffic,
                state,
                last_event_ms: time.map(|t| t.0),
            });
        }
        Ok(out)
    }

    /// The timeline, oldest first.
    pub async fn events(&self, id: Uuid) -> Result<Vec<EventRow>, ReadError> {
        type Row = (i64, String, String, String, String, Option<String>);
        let rows = self
            .session
            .execute_unpaged(&self.events, (id,))
            .await?
            .into_rows_result()?;
        let mut out = Vec::new();
        for row in rows.rows::<Row>()? {
            let (time_us, region, zone, subject, kind, detail) = row?;
            out.push(EventRow {
                time_us,
                region,
                zone,
                subject,
                kind,
                detail: detail
                    .and_then(|d| serde_json::from_str(&d).ok())
                    .unwrap_or(serde_json::Value::Null),
            });
        }
        Ok(out)
    }

    /// Up to `n` deployment ids, newest first, of `app` (or of month `month` when `app` is
    /// `None`), from `page` on; and where the next page starts, if there is one.
    pub async fn deployment_ids(
        &self,
        app: Option<&str>,
        month: &str,
        n: i32,
        page: PagingState,
    ) -> Result<(Vec<Uuid>, Option<Vec<u8>>), ReadError> {
        let (mut statement, key) = match app {
            Some(app) => (self.by_app.clone(), app),
            None => (self.by_month.clone(), month),
        };
        statement.set_page_size(n.max(1));
        let (result, next) = self
            .session
            .execute_single_page(&statement, (key,), page)
            .await?;
        let mut ids = Vec::new();
        for row in result.into_rows_result()?.rows::<(Uuid,)>()? {
            ids.push(row?.0);
        }
        let next = match next {
            PagingStateResponse::HasMorePages { state } => {
                state.as_bytes_slice().map(|b| b.to_vec())
            }
            PagingStateResponse::NoMorePages => None,
        };
        Ok((ids, next))
    }

    /// For each of `regions`, the newest deployment of `app` with a generation below `before`
    /// that was healthy there (its timeline shows every zone it targeted in the region healthy
    /// at some point): what a rollback puts back. A region with none is left out. At most
    /// [`ROLLBACK_SCAN`] deployments are read, newest first.
    pub async fn earlier_healthy(
        &self,
        app: &str,
        before: u64,
        regions: &[crate::topics::names::RegionName],
    ) -> Result<BTreeMap<crate::topics::names::RegionName, DeploymentRequested>, ReadError> {
        let mut found = BTreeMap::new();
        let mut paging = PagingState::start();
        let mut scanned = 0;
        loop {
            let (ids, next) = self.deployment_ids(Some(app), "", 50, paging).await?;
            for id in ids {
                scanned += 1;
                if found.len() == regions.len() {
                    return Ok(found);
                }
                let Some(row) = self.deployment(id).await? else {
                    continue;
                };
                let Ok(request) = serde_json::from_str::<DeploymentRequested>(&row.request) else {
                    continue;
                };
                if request.generation >= before {
                    continue;
                }
                let events = self.events(id).await?;
                for target in &request.targets {
                    if found.contains_key(&target.region) || !regions.contains(&target.region) {
                        continue;
                    }
                    let healthy = target.zones.iter().all(|zone| {
                        events.iter().any(|e| {
                            e.subject == "zone"
                                && e.kind == "healthy"
                                && e.region == target.region.as_str()
                                && e.zone == zone.as_str()
                        })
                    });
                    if healthy {
                        found.insert(target.region.clone(), request.clone());
                    }
                }
            }
            match next {
                Some(state) if scanned < ROLLBACK_SCAN => {
                    paging = PagingState::new_from_raw_bytes(state)
                }
                _ => return Ok(found),
            }
        }
    }

    pub async fn app_config(&self, app: &str) -> Result<Option<AppConfigRow>, ReadError> {
        let row = self
            .session
            .execute_unpaged(&self.config, (app,))
            .await?
            .into_rows_result()?
            .maybe_first_row::<(Option<String>, Option<i64>, Option<CqlTimestamp>)>()?;
        Ok(row.map(|(config, revision, updated)| AppConfigRow {
            config: config.unwrap_or_else(|| "{}".into()),
            revision: revision.unwrap_or(0),
            updated_ms: updated.map(|t| t.0).unwrap_or(0),
        }))
    }

    /// Writes an app's configuration at `time_us` (the write timestamp: a later PUT wins).
    pub async fn put_app_config(
        &self,
        app: &str,
        config: &str,
        revision: i64,
        time_us: i64,
    ) -> Result<(), ReadError> {
        self.session
            .execute_unpaged(
                &self.put_config,
                (app, config, revision, CqlTimestamp(time_us / 1000), time_us),
            )
            .await?;
        Ok(())
    }
}

/// `YYYY-MM` of a time in milliseconds since the epoch (UTC): the deployments_by_month partition.
pub fn month_of(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let (year, month, _) = civil_from_days(days);
    format!("{year:04}-{month:02}")
}

/// The month before `YYYY-MM`.
pub fn previous_month(month: &str) -> Option<String> {
    let (y, m) = month.split_once('-')?;
    let (y, m): (i32, u32) = (y.parse().ok()?, m.parse().ok()?);
    Some(if m <= 1 {
        format!("{:04}-12", y - 1)
    } else {
        format!("{y:04}-{:02}", m - 1)
    })
}

/// Howard Hinnant's days-to-civil: (year, month, day) of a count of days since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months() {
        assert_eq!(month_of(0), "1970-01");
        // 2026-11-27T16:00:00Z
        assert_eq!(month_of(1_795_795_200_000), "2026-11");
        // 2024-02-29T23:59:59Z
        assert_eq!(month_of(1_709_251_199_000), "2024-02");
        assert_eq!(previous_month("2026-01").as_deref(), Some("2025-12"));
        assert_eq!(previous_month("2026-11").as_deref(), Some("2026-10"));
    }
}
