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

use crate::config::{CassandraConfig, CassandraTls};

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
pub enum ConnectError {
    /// No session: the nodes did not answer, refused the credentials or the TLS handshake.
    #[error("cannot connect to cassandra at {contact_points}{}: {source}", login(.username))]
    Session {
        /// The contact points tried.
        contact_points: String,
        /// The role logged in as, if any.
        username: Option<String>,
        #[source]
        source: scylla::errors::NewSessionError,
    },
    /// `cassandra.tls` names files OpenSSL cannot use.
    #[error("cassandra.tls: {0}")]
    Tls(String),
}

fn login(username: &Option<String>) -> String {
    username
        .as_ref()
        .map(|u| format!(" as `{u}`"))
        .unwrap_or_default()
}

/// The client TLS context `[cassandra] tls` asks for: the nodes' certificates checked against
/// `ca_file` (else the system's roots), and a client certificate if one is given.
fn tls_context(tls: &CassandraTls) -> Result<openssl::ssl::SslContext, String> {
    use openssl::ssl::{SslContextBuilder, SslFiletype, SslMethod, SslVerifyMode};
    let named = |what: &str, path: &std::path::Path, e: openssl::error::ErrorStack| {
        format!("{what} {}: {e}", path.display())
    };
    let mut builder = SslContextBuilder::new(SslMethod::tls_client()).map_err(|e| e.to_string())?;
    builder.set_verify(SslVerifyMode::PEER);
    match &tls.ca_file {
        Some(ca) => builder
            .set_ca_file(ca)
            .map_err(|e| named("ca_file", ca, e))?,
        None => builder
            .set_default_verify_paths()
            .map_err(|e| e.to_string())?,
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        builder
            .set_certificate_chain_file(cert)
            .map_err(|e| named("cert_file", cert, e))?;
        builder
            .set_private_key_file(key, SslFiletype::PEM)
            .map_err(|e| named("key_file", key, e))?;
    }
    Ok(builder.build())
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
    let mut builder = SessionBuilder::new()
        .known_nodes(&config.contact_points)
        .connection_timeout(Duration::from_secs(5))
        .default_execution_profile_handle(profile.into_handle());
    if let Some(auth) = &config.auth {
        builder = builder.user(&auth.username, auth.password());
    }
    if let Some(tls) = &config.tls {
        builder = builder.tls_context(Some(tls_context(tls).map_err(ConnectError::Tls)?));
    }
    let session = builder
        .build()
        .await
        .map_err(|source| ConnectError::Session {
            contact_points: config.contact_points.join(","),
            username: config.auth.as_ref().map(|a| a.username.clone()),
            source,
        })?;
    Ok(Arc::new(session))
}
