//! Who owns each app (`app_owners`) and who did what (`audit`): the service layer's rows for
//! authorization. Owners are written only with lightweight transactions, so that two teams
//! deploying a new app at once cannot both take it.

use std::collections::BTreeSet;
use std::sync::Arc;

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlDate, CqlTimestamp};
use uuid::Uuid;

use super::projections::ReadError;

/// Attempts at changing an app's owners while other calls change them too.
const OWNER_ATTEMPTS: u32 = 8;

/// Audit rows one `GET /audit` reads at most.
pub const AUDIT_LIMIT_MAX: usize = 1000;

/// One mutating call, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AuditRow {
    pub at_ms: i64,
    pub id: Uuid,
    pub principal: String,
    pub action: String,
    pub app: Option<String>,
    pub deployment: Option<Uuid>,
    pub regions: Vec<String>,
    pub source: Option<String>,
    pub status: i32,
    pub outcome: String,
    pub reason: Option<String>,
}

/// The prepared statements of `app_owners` and `audit`.
pub struct Access {
    session: Arc<Session>,
    select_owners: PreparedStatement,
    claim_owners: PreparedStatement,
    update_owners: PreparedStatement,
    insert_audit: PreparedStatement,
    select_audit: PreparedStatement,
}

/// A row written with a lightweight transaction: whether it applied.
fn applied(result: scylla::response::query_result::QueryResult) -> bool {
    result
        .into_rows_result()
        .ok()
        .and_then(|rows| rows.first_row::<scylla::value::Row>().ok())
        .and_then(|row| row.columns.first().cloned().flatten())
        .and_then(|v| v.as_boolean())
        .unwrap_or(false)
}

/// The day (UTC) of `ms` since the epoch, as Cassandra's `date`.
fn day_of(ms: i64) -> CqlDate {
    CqlDate(((1i64 << 31) + ms.div_euclid(86_400_000)) as u32)
}

impl Access {
    pub async fn prepare(session: Arc<Session>, ks: &str) -> Result<Self, ReadError> {
        Ok(Self {
            select_owners: session
                .prepare(format!("SELECT teams FROM {ks}.app_owners WHERE app = ?"))
                .await?,
            claim_owners: session
                .prepare(format!(
                    "INSERT INTO {ks}.app_owners (app, teams, changed_by, changed_at) \
                     VALUES (?, ?, ?, ?) IF NOT EXISTS"
                ))
                .await?,
            update_owners: session
                .prepare(format!(
                    "UPDATE {ks}.app_owners SET teams = ?, changed_by = ?, changed_at = ? \
                     WHERE app = ? IF EXISTS"
                ))
                .await?,
            insert_audit: session
                .prepare(format!(
                    "INSERT INTO {ks}.audit (day, at, id, principal, action, app, deployment, regions, \
                     source, status, outcome, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ))
                .await?,
            select_audit: {
                let mut statement = session
                    .prepare(format!(
                        "SELECT at, id, principal, action, app, deployment, regions, source, status, \
                         outcome, reason FROM {ks}.audit WHERE day = ? AND at >= ?"
                    ))
                    .await?;
                statement.set_page_size(500);
                statement
            },
            session,
        })
    }

    /// The teams owning `app`, `None` when nobody owns it yet.
    pub async fn owners(&self, app: &str) -> Result<Option<BTreeSet<String>>, ReadError> {
        Ok(self
            .session
            .execute_unpaged(&self.select_owners, (app,))
            .await?
            .into_rows_result()?
            .maybe_first_row::<(Option<BTreeSet<String>>,)>()?
            .map(|(teams,)| teams.unwrap_or_default()))
    }

    /// Gives unowned `app` to `team`; the owners it has after (someone else's, when another
    /// call claimed it first).
    pub async fn claim(
        &self,
        app: &str,
        team: &str,
        by: &str,
    ) -> Result<BTreeSet<String>, ReadError> {
        let teams = BTreeSet::from([team.to_owned()]);
        let now = CqlTimestamp(crate::models::envelope::now_us() / 1000);
        let result = self
            .session
            .execute_unpaged(&self.claim_owners, (app, &teams, by, now))
            .await?;
        if applied(result) {
            return Ok(teams);
        }
        Ok(self.owners(app).await?.unwrap_or_default())
    }

    /// Makes `teams` the owners of `app`.
    pub async fn set_owners(
        &self,
        app: &str,
        teams: &BTreeSet<String>,
        by: &str,
    ) -> Result<(), ReadError> {
        for _ in 0..OWNER_ATTEMPTS {
            let now = CqlTimestamp(crate::models::envelope::now_us() / 1000);
            let updated = self
                .session
                .execute_unpaged(&self.update_owners, (teams, by, now, app))
                .await?;
            if applied(updated) {
                return Ok(());
            }
            let inserted = self
                .session
                .execute_unpaged(&self.claim_owners, (app, teams, by, now))
                .await?;
            if applied(inserted) {
                return Ok(());
            }
        }
        Err("the app's owners kept changing; retry".into())
    }

    /// Appends one call to the audit log.
    pub async fn audit(&self, row: &AuditRow) -> Result<(), ReadError> {
        self.session
            .execute_unpaged(
                &self.insert_audit,
                (
                    day_of(row.at_ms),
                    CqlTimestamp(row.at_ms),
                    row.id,
                    &row.principal,
                    &row.action,
                    &row.app,
                    row.deployment,
                    &row.regions,
                    &row.source,
                    row.status,
                    &row.outcome,
                    &row.reason,
                ),
            )
            .await?;
        Ok(())
    }

    /// The calls since `since_ms` (newest first) that `keep` keeps, at most `limit`: the days
    /// newest first, each read in pages (a day of many calls is never held whole), until
    /// `limit` are found.
    pub async fn audit_since(
        &self,
        since_ms: i64,
        now_ms: i64,
        limit: usize,
        keep: impl Fn(&AuditRow) -> bool,
    ) -> Result<Vec<AuditRow>, ReadError> {
        use futures::TryStreamExt;
        type Row = (
            CqlTimestamp,
            Uuid,
            String,
            String,
            Option<String>,
            Option<Uuid>,
            Option<Vec<String>>,
            Option<String>,
            i32,
            String,
            Option<String>,
        );
        let mut out = Vec::new();
        for day in (day_of(since_ms).0..=day_of(now_ms).0).rev() {
            let mut rows = self
                .session
                .execute_iter(
                    self.select_audit.clone(),
                    (CqlDate(day), CqlTimestamp(since_ms)),
                )
                .await?
                .rows_stream::<Row>()?;
            while let Some(row) = rows.try_next().await? {
                let (
                    at,
                    id,
                    principal,
                    action,
                    app,
                    deployment,
                    regions,
                    source,
                    status,
                    outcome,
                    reason,
                ) = row;
                let row = AuditRow {
                    at_ms: at.0,
                    id,
                    principal,
                    action,
                    app,
                    deployment,
                    regions: regions.unwrap_or_default(),
                    source,
                    status,
                    outcome,
                    reason,
                };
                if keep(&row) {
                    out.push(row);
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::day_of;

    #[test]
    fn days_count_from_the_epoch_at_two_to_the_31() {
        assert_eq!(day_of(0).0, 1 << 31);
        assert_eq!(day_of(86_400_000 - 1).0, 1 << 31);
        assert_eq!(day_of(86_400_000).0, (1 << 31) + 1);
        assert_eq!(day_of(-1).0, (1 << 31) - 1);
    }
}
