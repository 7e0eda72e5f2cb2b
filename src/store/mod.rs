//! Cassandra: the session every reader and writer of the projections shares, and the schema
//! migrations (`mot migrate`) that shape the tables after the API's reads.

pub mod migrate;

use std::sync::Arc;
use std::time::Duration;

use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::DefaultPolicy;

use crate::config::CassandraConfig;

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
