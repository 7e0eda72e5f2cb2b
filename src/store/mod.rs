//! Cassandra: the session every reader and writer of the projections shares, and the schema
//! migrations (`mot migrate`) that shape the tables after the API's reads.

pub mod access;
pub mod migrate;
pub mod projections;
pub mod requests;

use std::sync::Arc;
use std::time::Duration;

use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::DefaultPolicy;

use crate::config::CassandraConfig;

/// One Cassandra session for everything in a process that writes projections (the archival
/// agents of every region), opened on first use; a failed attempt is retried on the next use.
/// Cloning shares it. It lives on the runtime that first used it.
#[derive(Clone, Default)]
pub struct SharedSession(Arc<tokio::sync::OnceCell<Arc<Session>>>);

impl SharedSession {
    /// The session, connecting to `config`'s cluster if nobody has yet.
    pub async fn get(&self, config: &CassandraConfig) -> Result<Arc<Session>, ConnectError> {
        self.0.get_or_try_init(|| connect(config)).await.cloned()
    }
}

impl std::fmt::Debug for SharedSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.initialized() {
            "SharedSession(connected)"
        } else {
            "SharedSession(not connected)"
        })
    }
}

/// Why Cassandra could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to cassandra at {contact_points}: {source}")]
pub struct ConnectError {
    /// The contact points tried.
    pub contact_points: String,
    #[source]
    pub source: scylla::errors::NewSessionError,
}

/// Opens a session to the cluster `config` names, preferring its datacenter. The session is not
/// bound to a keyspace: statements name `config.keyspace` themselves, so one session can serve
/// several keyspaces (tests isolate themselves by keyspace).
pub async fn connect(config: &CassandraConfig) -> Result<Arc<Session>, ConnectError> {
    let policy = DefaultPolicy::builder()
        .prefer_datacenter(config.datacenter.clone())
        .token_aware(true)
        .build();
    let profile = ExecutionProfile::builder()
        .load_balancing_policy(policy)
        .request_timeout(Some(Duration::from_millis(config.request_timeout_ms)))
        .build();
    let session = SessionBuilder::new()
        .known_nodes(&config.contact_points)
        .connection_timeout(Duration::from_secs(5))
        .default_execution_profile_handle(profile.into_handle())
        .build()
        .await
        .map_err(|source| ConnectError {
            contact_points: config.contact_points.join(","),
            source,
        })?;
    Ok(Arc::new(session))
}
