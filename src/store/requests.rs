//! The service layer's own rows: each app's generations, Idempotency-Key claims, and the shell of
//! each accepted deployment (its row before the regions report anything). Written by the API and
//! by the RolloutAgent, which makes rollback deployments the same way the API makes deployments.

use std::sync::Arc;

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::CqlTimestamp;
use uuid::Uuid;

use super::projections::month_of;
use crate::models::deployment::DeploymentRequested;
use crate::models::envelope::Envelope;

/// Attempts at taking the next generation of an app while other requests take them too.
const GENERATION_ATTEMPTS: u32 = 32;

/// Why a request row could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RequestsError {
    /// Cassandra failed `what`.
    #[error("{what}: {problem}")]
    Cassandra { what: &'static str, problem: String },
    /// Too many requests for one app took generations at once.
    #[error("too many deployments of this app at once")]
    Contended,
    /// The key was claimed for a different request.
    #[error("this Idempotency-Key was used for a different request")]
    KeyReused,
}

fn failed(what: &'static str) -> impl Fn(&dyn std::fmt::Display) -> RequestsError {
    move |e| RequestsError::Cassandra {
        what,
        problem: e.to_string(),
    }
}

/// What an idempotency key stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// The deployment id.
    pub id: Uuid,
    /// Whether its request is already on the request log.
    pub logged: bool,
    /// The generation it was given.
    pub generation: u64,
}

/// The statements, prepared once.
pub struct Requests {
    session: Arc<Session>,
    insert_deployment: PreparedStatement,
    insert_by_app: PreparedStatement,
    insert_by_month: PreparedStatement,
    claim_key: PreparedStatement,
    select_key: PreparedStatement,
    mark_key_logged: PreparedStatement,
    select_generation: PreparedStatement,
    first_generation: PreparedStatement,
    next_generation: PreparedStatement,
}

impl Requests {
    /// Prepares the statements on `session`, in keyspace `ks`.
    pub async fn prepare(session: Arc<Session>, ks: &str) -> Result<Self, RequestsError> {
        let prepare = |cql: String| {
            let session = session.clone();
            async move {
                session
                    .prepare(cql)
                    .await
                    .map_err(|e| failed("preparing the request statements")(&e))
            }
        };
        Ok(Self {
            insert_deployment: prepare(format!(
                "INSERT INTO {ks}.deployments (id, app, version, request, status, targets, created_at, updated_at, trace_id, generation) \
                 VALUES (?, ?, ?, ?, 'requested', ?, ?, ?, ?, ?) USING TIMESTAMP ?"
            ))
            .await?,
            insert_by_app: prepare(format!(
                "INSERT INTO {ks}.deployments_by_app (app, created_at, id, version, status) \
                 VALUES (?, ?, ?, ?, 'requested') USING TIMESTAMP ?"
            ))
            .await?,
            insert_by_month: prepare(format!(
                "INSERT INTO {ks}.deployments_by_month (month, created_at, id, app) VALUES (?, ?, ?, ?) \
                 USING TIMESTAMP ?"
            ))
            .await?,
            claim_key: prepare(format!(
                "INSERT INTO {ks}.idempotency_keys (key, deployment_id, request_hash, generation, created_at) \
                 VALUES (?, ?, ?, ?, toTimestamp(now())) IF NOT EXISTS"
            ))
            .await?,
            select_key: prepare(format!(
                "SELECT deployment_id, request_hash, logged, generation FROM {ks}.idempotency_keys WHERE key = ?"
            ))
            .await?,
            select_generation: prepare(format!(
                "SELECT generation FROM {ks}.app_generations WHERE app = ?"
            ))
            .await?,
            first_generation: prepare(format!(
                "INSERT INTO {ks}.app_generations (app, generation) VALUES (?, 1) IF NOT EXISTS"
            ))
            .await?,
            next_generation: prepare(format!(
                "UPDATE {ks}.app_generations SET generation = ? WHERE app = ? IF generation = ?"
            ))
            .await?,
            mark_key_logged: prepare(format!(
                "UPDATE {ks}.idempotency_keys SET logged = true WHERE key = ?"
            ))
            .await?,
            session,
        })
    }

    /// The next generation of `app`: one more than any given out before, by any instance of the
    /// API (a compare-and-set on `app_generations`, retried while others win the race).
    pub async fn next_generation(&self, app: &str) -> Result<u64, RequestsError> {
        let failed = failed("taking a generation");
        let mut current: Option<i64> = self
            .session
            .execute_unpaged(&self.select_generation, (app,))
            .await
            .map_err(|e| failed(&e))?
            .into_rows_result()
            .map_err(|e| failed(&e))?
            .maybe_first_row::<(Option<i64>,)>()
            .map_err(|e| failed(&e))?
            .and_then(|(g,)| g);
        for _ in 0..GENERATION_ATTEMPTS {
            let (result, next) = match current {
                None => (
                    self.session
                        .execute_unpaged(&self.first_generation, (app,))
                        .await,
                    1,
                ),
                Some(g) => (
                    self.session
                        .execute_unpaged(&self.next_generation, (g + 1, app, g))
                        .await,
                    g + 1,
                ),
            };
            let row = result
                .map_err(|e| failed(&e))?
                .into_rows_result()
                .map_err(|e| failed(&e))?
                .maybe_first_row::<scylla::value::Row>()
                .map_err(|e| failed(&e))?;
            let columns = row.map(|r| r.columns).unwrap_or_default();
            let applied = columns
                .first()
                .cloned()
                .flatten()
                .and_then(|v| v.as_boolean())
                .unwrap_or(false);
            if applied {
                return Ok(next as u64);
            }
            // Not applied: the row shows the generation someone else took.
            current = columns.iter().skip(1).flatten().find_map(|v| v.as_bigint());
        }
        Err(RequestsError::Contended)
    }

    /// The deployment id and generation `key` stands for: `fresh` and a new generation when the
    /// key is new, the first ones when the same request (same `hash`) comes again;
    /// [`RequestsError::KeyReused`] when the key was used for another request.
    pub async fn claim(
        &self,
        key: &str,
        hash: &str,
        app: &str,
        fresh: Uuid,
    ) -> Result<Claim, RequestsError> {
        if let Some(claim) = self.existing_claim(key, hash).await? {
            return Ok(claim);
        }
        let generation = self.next_generation(app).await?;
        let claimed = self
            .session
            .execute_unpaged(&self.claim_key, (key, fresh, hash, generation as i64))
            .await
            .map_err(|e| failed("claiming an idempotency key")(&e))?;
        let applied = claimed
            .into_rows_result()
            .ok()
            .and_then(|rows| rows.first_row::<scylla::value::Row>().ok())
            .and_then(|row| row.columns.first().cloned().flatten())
            .and_then(|v| v.as_boolean())
            .unwrap_or(false);
        if applied {
            return Ok(Claim {
                id: fresh,
                logged: false,
                generation,
            });
        }
        // Another retry of the same key claimed it first.
        self.existing_claim(key, hash)
            .await?
            .ok_or_else(|| failed("claiming an idempotency key")(&"no row after a failed claim"))
    }

    /// What `key` already stands for, if it was claimed.
    async fn existing_claim(&self, key: &str, hash: &str) -> Result<Option<Claim>, RequestsError> {
        let failed = failed("reading an idempotency key");
        let existing = self
            .session
            .execute_unpaged(&self.select_key, (key,))
            .await
            .map_err(|e| failed(&e))?
            .into_rows_result()
            .map_err(|e| failed(&e))?
            .maybe_first_row::<(Uuid, String, Option<bool>, Option<i64>)>()
            .map_err(|e| failed(&e))?;
        match existing {
            None => Ok(None),
            Some((id, stored, logged, generation)) if stored == hash => Ok(Some(Claim {
                id,
                logged: logged.unwrap_or(false),
                generation: generation.unwrap_or(0) as u64,
            })),
            Some(_) => Err(RequestsError::KeyReused),
        }
    }

    /// Records that the request `key` stands for is on the request log.
    pub async fn mark_logged(&self, key: &str) -> Result<(), RequestsError> {
        self.session
            .execute_unpaged(&self.mark_key_logged, (key,))
            .await
            .map(|_| ())
            .map_err(|e| failed("marking an idempotency key")(&e))
    }

    /// Writes the deployment's shell (its row, its app's and its month's listings), timestamped
    /// with the request time.
    pub async fn write_shell(
        &self,
        envelope: &Envelope<DeploymentRequested>,
        trace_id: &str,
    ) -> Result<(), RequestsError> {
        let failed = failed("writing a deployment's shell");
        let request = &envelope.payload;
        let created = CqlTimestamp(envelope.time_us / 1000);
        let targets: Vec<String> = request
            .targets
            .iter()
            .map(|t| t.region.to_string())
            .collect();
        let json = serde_json::to_string(request).map_err(|e| failed(&e))?;
        let app = request.spec.app.as_str();
        self.session
            .execute_unpaged(
                &self.insert_deployment,
                (
                    request.id,
                    app,
                    &request.spec.version,
                    json,
                    targets,
                    created,
                    created,
                    trace_id,
                    request.generation as i64,
                    envelope.time_us,
                ),
            )
            .await
            .map_err(|e| failed(&e))?;
        self.session
            .execute_unpaged(
                &self.insert_by_app,
                (
                    app,
                    created,
                    request.id,
                    &request.spec.version,
                    envelope.time_us,
                ),
            )
            .await
            .map_err(|e| failed(&e))?;
        self.session
            .execute_unpaged(
                &self.insert_by_month,
                (
                    month_of(envelope.time_us / 1000),
                    created,
                    request.id,
                    app,
                    envelope.time_us,
                ),
            )
            .await
            .map_err(|e| failed(&e))?;
        Ok(())
    }
}
