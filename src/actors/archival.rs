//! What the persistence layer's archival agents share: each consumes one region's suffixed topic
//! on the central cluster (the bare topic for the central region itself) and writes Cassandra
//! projections, returning [`Outcome::Stored`] only once Cassandra acknowledged every write, so
//! the offset is stored after the sink and never before.
//!
//! Idempotence: every write carries `USING TIMESTAMP <event time in microseconds>`. A replayed
//! or duplicated record rewrites the same cells with the same timestamp; a late, older record
//! loses to the newer cells already there. Two writes to one cell with the same timestamp are
//! settled by Cassandra's own tie-breaker (the greater value wins), the same on every replica and
//! every replay, so projections converge whatever the order. Timeline rows are keyed by the
//! event's own content (its time, place, subject and kind), so a replay lands on the same row.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use scylla::client::session::Session;
use scylla::errors::{BadQuery, DbError, ExecutionError, RequestAttemptError};
use scylla::statement::prepared::PreparedStatement;

use super::pipeline::{AgentContext, Outcome, PipelineError, Source};
use crate::topics::catalog::TopicSpec;

/// Attempts of one write before the agent gives up and is restarted (the record replays).
const WRITE_ATTEMPTS: u32 = 3;

/// An archival agent's connection: the shared session and the agent's prepared statements.
pub struct Archive {
    pub session: Arc<Session>,
    /// The keyspace statements are prepared in.
    pub keyspace: String,
    /// [`INSERT_EVENT`], prepared.
    insert_event: PreparedStatement,
}

/// One timeline entry of a deployment, written at its own time.
pub struct TimelineEntry<'a> {
    pub deployment: uuid::Uuid,
    /// When it happened (µs): its place on the timeline and its write timestamp.
    pub time_us: i64,
    pub region: &'a str,
    pub zone: &'a str,
    /// What it is about: the zone, an instance, the scheduler, traffic, drift.
    pub subject: &'a str,
    pub kind: &'a str,
    /// JSON.
    pub detail: &'a str,
}

impl Archive {
    /// Opens (or shares) the process's session.
    pub async fn open(ctx: &AgentContext) -> Result<Self, PipelineError> {
        let config = &ctx.topology.config().cassandra;
        let session = ctx.session().await?;
        let cql = INSERT_EVENT.replace("{ks}", &config.keyspace);
        let insert_event = session
            .prepare(cql.clone())
            .await
            .map_err(|e| PipelineError::Other(format!("preparing {cql}: {e}")))?;
        Ok(Self {
            session,
            keyspace: config.keyspace.clone(),
            insert_event,
        })
    }

    /// Writes a timeline entry (retried as every write is).
    pub async fn timeline(&self, e: TimelineEntry<'_>) -> Result<(), WriteError> {
        with_retries("INSERT deployment_events", || {
            self.session.execute_unpaged(
                &self.insert_event,
                (
                    e.deployment,
                    e.time_us,
                    e.region,
                    e.zone,
                    e.subject,
                    e.kind,
                    e.detail,
                    e.time_us,
                ),
            )
        })
        .await
        .map(|_| ())
    }

    /// Prepares `cql`, in which `{ks}` stands for the keyspace.
    pub async fn prepare(&self, cql: &str) -> Result<PreparedStatement, PipelineError> {
        let cql = cql.replace("{ks}", &self.keyspace);
        self.session
            .prepare(cql.clone())
            .await
            .map_err(|e| PipelineError::Other(format!("preparing {cql}: {e}")))
    }
}

/// A timeline entry: deployment, time (µs), region, zone, subject, kind, detail (JSON), and the
/// write timestamp.
pub const INSERT_EVENT: &str = "INSERT INTO {ks}.deployment_events (deployment_id, event_time_us, \
     region, zone, subject, kind, detail) VALUES (?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?";

/// Where the archival agent of `spec` reads in the central cluster for `ctx`'s region.
pub fn source(ctx: &AgentContext, spec: &TopicSpec) -> Source {
    Source::Region(vec![ctx.topology.archived_topic(&ctx.region, spec)])
}

/// Why a write did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// Cassandra refused the record for what it holds: writing it again will not help.
    Refused(String),
    /// Cassandra could not take it now: the record must be retried.
    Unavailable(String),
}

impl From<WriteError> for Outcome {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Refused(reason) => Outcome::Reject(format!("cassandra refused: {reason}")),
            WriteError::Unavailable(problem) => Outcome::Fail(problem),
        }
    }
}

/// Whether `e` is Cassandra refusing the values themselves, as opposed to being unavailable. A
/// missing table or keyspace is unavailability (migrations not applied yet, schema not agreed),
/// not the record's fault.
pub fn refused_for_content(e: &ExecutionError) -> bool {
    match e {
        ExecutionError::BadQuery(
            BadQuery::SerializationError(_)
            | BadQuery::ValuesTooLongForKey(..)
            | BadQuery::TooManyQueriesInBatchStatement(_),
        ) => true,
        ExecutionError::LastAttemptError(RequestAttemptError::SerializationError(_)) => true,
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(
            DbError::Invalid,
            message,
        )) => {
            let message = message.to_ascii_lowercase();
            !(message.contains("unconfigured table")
                || message.contains("keyspace")
                || message.contains("does not exist"))
        }
        _ => false,
    }
}

/// Runs `write` until it succeeds, at most [`WRITE_ATTEMPTS`] times with a short pause between.
pub async fn with_retries<F, Fut, T>(what: &str, mut write: F) -> Result<T, WriteError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ExecutionError>>,
{
    use tracing::Instrument;
    // A database client span (OpenTelemetry conventions), within a traced flow only.
    let span = if tracing::Span::current().is_disabled() {
        tracing::Span::none()
    } else {
        tracing::info_span!(
            "db",
            otel.name = %what,
            otel.kind = "client",
            db.system.name = "cassandra",
            db.operation.name = "INSERT",
        )
    };
    let mut pause = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match write().instrument(span.clone()).await {
            Ok(done) => return Ok(done),
            Err(e) if attempt < WRITE_ATTEMPTS => {
                tracing::warn!(what, attempt, error = %e, "cassandra write failed; retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            Err(e) if refused_for_content(&e) => {
                return Err(WriteError::Refused(format!("{what}: {e}")))
            }
            Err(e) => return Err(WriteError::Unavailable(format!("{what}: {e}"))),
        }
    }
}

/// The outcome of `n` writes that all succeeded, or of one that did not.
pub fn stored(result: Result<u64, WriteError>) -> Outcome {
    match result {
        Ok(n) => Outcome::Stored(n),
        Err(e) => e.into(),
    }
}

/// A timestamp column's value for an event time in microseconds.
pub fn timestamp(time_us: i64) -> scylla::value::CqlTimestamp {
    scylla::value::CqlTimestamp(time_us.div_euclid(1000))
}
