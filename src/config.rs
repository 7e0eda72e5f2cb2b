//! The configuration file (`mot.toml`): which roles this process runs, where Cassandra and the
//! API live, and the topology (clusters, regions, the central region, routes).
//!
//! The topology is the single source of truth: nothing else invents a cluster or a topic name.
//! Loading is two steps: serde refuses unknown fields and malformed names (with line and column),
//! then [`Config::validate`] checks what serde cannot (references between sections, ranges) and
//! names every bad field at once.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::topics::names::{ClusterName, RegionName, TopicBase, ZoneName};

/// A secret the configuration holds (a token, a password): its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one call that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(crate::secrets::REDACTED)
    }
}

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown field, or a malformed value.
    #[error("{file}: {message}")]
    Parse { file: PathBuf, message: String },
    /// The file parsed, but some fields are inconsistent or out of range.
    #[error("{file}: invalid configuration:\n{}", problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        file: PathBuf,
        problems: Vec<ConfigProblem>,
    },
}

/// One bad field: where it is and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Path of the field in the file, e.g. `regions[1].cluster`.
    pub field: String,
    /// What is wrong, and where it helps, how to fix it.
    pub problem: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

/// The whole file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// What this process runs.
    #[serde(default)]
    pub node: NodeConfig,
    /// The HTTP API (service role).
    #[serde(default)]
    pub web: WebConfig,
    /// The Cassandra cluster holding the projections (service and persistence roles).
    pub cassandra: CassandraConfig,
    /// Defaults for the topics mot creates.
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// Which region is central.
    pub topology: TopologyConfig,
    /// Every Kafka cluster, one per datacenter.
    pub clusters: Vec<ClusterConfig>,
    /// Every region mot deploys to or hears from.
    pub regions: Vec<RegionConfig>,
    /// How topics travel between clusters.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Logs and traces.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Who may call the API (service role).
    #[serde(default)]
    pub auth: AuthConfig,
    /// The keys that seal `secret_env` values (service and regional roles).
    #[serde(default)]
    pub secrets: SecretsConfig,
    /// What the `https://` calls mot makes trust.
    #[serde(default)]
    pub tls: TlsConfig,
}

/// `[tls]`: the certificate authorities trusted for the `https://` calls mot makes (schedulers,
/// Consul agents, the identity provider's JWKS URL), beside the system's roots.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificates, e.g. the company's internal CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// `[web.tls]`: the API's own TLS listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebTlsConfig {
    /// The server's certificate chain (PEM), leaf first.
    pub cert_file: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// `[secrets]`: the keyring that seals `secret_env` values (see `mot::secrets`): `<id>=<base64 of
/// 32 bytes>` entries, the first sealing, all opening. The API seals with it; the regional
/// agents open with it for the scheduler call. Without one, requests with `secret_env` are
/// refused.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    /// A file of entries, one per line (`mot secrets new-key` makes one).
    #[serde(default)]
    pub keyring_file: Option<PathBuf>,
    /// ... or the environment variable holding them, comma-separated.
    #[serde(default)]
    pub keyring_env: Option<String>,
}

/// `[auth]`: how the API authenticates its callers. The service role needs at least one way:
/// static tokens and/or JWTs. Relative paths are relative to the directory mot runs in.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Static tokens for bots and CI: a file of `[[tokens]]` entries, each holding a token's
    /// SHA-256, its principal, teams, roles and environments (see `mot token new`).
    #[serde(default)]
    pub tokens_file: Option<PathBuf>,
    /// JWTs (OIDC access tokens) from the company's identity provider.
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
    /// Mutating calls one principal may make per minute on one API instance (0: no limit).
    #[serde(default = "AuthConfig::default_mutations_per_minute")]
    pub mutations_per_minute: u32,
    /// How many mutating calls a principal may make at once before the rate applies.
    #[serde(default = "AuthConfig::default_mutation_burst")]
    pub mutation_burst: u32,
}

impl AuthConfig {
    fn default_mutations_per_minute() -> u32 {
        600
    }
    fn default_mutation_burst() -> u32 {
        100
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            tokens_file: None,
            jwt: None,
            mutations_per_minute: Self::default_mutations_per_minute(),
            mutation_burst: Self::default_mutation_burst(),
        }
    }
}

/// `[auth.jwt]`: the identity provider's access tokens.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` every token must include.
    pub audience: String,
    /// The provider's public keys (a JWKS document) from a file ...
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// ... or from a URL, cached and re-read every `jwks_refresh_secs`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    #[serde(default = "JwtConfig::default_jwks_refresh_secs")]
    pub jwks_refresh_secs: u64,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default = "JwtConfig::default_leeway_secs")]
    pub leeway_secs: u64,
    /// The claim naming the principal.
    #[serde(default = "JwtConfig::default_principal_claim")]
    pub principal_claim: String,
    /// The claim listing its teams (an array, or space-separated words; dotted paths reach into
    /// objects, e.g. `realm_access.groups`).
    #[serde(default = "JwtConfig::default_teams_claim")]
    pub teams_claim: String,
    /// The claim listing its roles; `viewer`, `deployer` and `admin` count, others are ignored.
    #[serde(default = "JwtConfig::default_roles_claim")]
    pub roles_claim: String,
    /// The claim listing the environments it may change.
    #[serde(default = "JwtConfig::default_environments_claim")]
    pub environments_claim: String,
}

impl JwtConfig {
    fn default_jwks_refresh_secs() -> u64 {
        300
    }
    fn default_leeway_secs() -> u64 {
        60
    }
    fn default_principal_claim() -> String {
        "sub".into()
    }
    fn default_teams_claim() -> String {
        "groups".into()
    }
    fn default_roles_claim() -> String {
        "roles".into()
    }
    fn default_environments_claim() -> String {
        "environments".into()
    }
}

/// `[telemetry]`: logs and traces. Unset fields fall back to the standard `OTEL_*` variables.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/HTTP endpoint spans are exported to (e.g. `http://127.0.0.1:4318`); none: spans
    /// are made (trace ids still travel) but not exported.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the spans (default `OTEL_SERVICE_NAME`, else `mot`).
    #[serde(default)]
    pub service_name: Option<String>,
    /// Share of new traces kept, 0.0-1.0 (children follow their parent's decision).
    #[serde(default)]
    pub sample_ratio: Option<f64>,
    /// `text` or `json` logs on stderr.
    #[serde(default)]
    pub log_format: LogFormat,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A role this process can run; see the three layers in DESIGN.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The central HTTP API: validates requests, produces them to region topics, reads Cassandra.
    Service,
    /// The agents beside each region's scheduler.
    Regional,
    /// The archival agents that fold every region's news into Cassandra.
    Persistence,
}

/// `[node]`: what this process runs.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Roles to run. A local run starts all three; a real deployment runs each where it belongs.
    #[serde(default = "NodeConfig::default_roles")]
    pub roles: Vec<Role>,
    /// Regions whose regional layer this process hosts; empty means every region.
    #[serde(default)]
    pub regions: Vec<RegionName>,
    /// Upper bound on a graceful shutdown: drain, store offsets, flush, then exit.
    #[serde(default = "NodeConfig::default_shutdown_timeout_secs")]
    pub shutdown_timeout_secs: u64,
    /// Threads the agents run on; unset: one per core.
    #[serde(default)]
    pub worker_threads: Option<usize>,
    /// Writes to an agent's own sink (Cassandra) it may keep in flight while it reads on;
    /// offsets are still stored in order, and records with the same key are written in order.
    #[serde(default = "NodeConfig::default_sink_window")]
    pub sink_window: usize,
    /// Whether agents reading their region's own topics or a foreign cluster share one consumer
    /// per agent kind and cluster (lanes per region); off: each agent reads with a consumer of
    /// its own.
    #[serde(default = "NodeConfig::default_shared_consumers")]
    pub shared_consumers: bool,
}

impl NodeConfig {
    fn default_roles() -> Vec<Role> {
        vec![Role::Service, Role::Regional, Role::Persistence]
    }
    fn default_shutdown_timeout_secs() -> u64 {
        30
    }
    fn default_sink_window() -> usize {
        32
    }
    fn default_shared_consumers() -> bool {
        true
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            roles: Self::default_roles(),
            regions: Vec::new(),
            shutdown_timeout_secs: Self::default_shutdown_timeout_secs(),
            worker_threads: None,
            sink_window: Self::default_sink_window(),
            shared_consumers: Self::default_shared_consumers(),
        }
    }
}

/// `[web]`: the HTTP API.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// Address the API listens on; port 0 picks a free port (tests).
    #[serde(default = "WebConfig::default_listen")]
    pub listen: String,
    /// With it, the API serves HTTPS only.
    #[serde(default)]
    pub tls: Option<WebTlsConfig>,
}

impl WebConfig {
    fn default_listen() -> String {
        "127.0.0.1:8080".to_owned()
    }
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            listen: Self::default_listen(),
            tls: None,
        }
    }
}

/// `[cassandra]`: where the projections live.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CassandraConfig {
    /// `host:port` of one or more nodes.
    pub contact_points: Vec<String>,
    /// Keyspace of mot's tables; `mot migrate` creates it.
    pub keyspace: String,
    /// Datacenter the keyspace is replicated in (NetworkTopologyStrategy) and the driver prefers.
    #[serde(default = "CassandraConfig::default_datacenter")]
    pub datacenter: String,
    /// Replicas in that datacenter.
    #[serde(default = "CassandraConfig::default_replication_factor")]
    pub replication_factor: u32,
    /// How long one request may take before the driver gives up.
    #[serde(default = "CassandraConfig::default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// The role mot logs in as (`PasswordAuthenticator`); none: no authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Credentials>,
    /// TLS to the nodes' native transport (`client_encryption_options`); none: plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<CassandraTls>,
}

/// `[cassandra] tls = { ca_file, cert_file, key_file }`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CassandraTls {
    /// The CA the nodes' certificates are checked against (PEM); none: the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM), for nodes that require one (`require_client_auth`).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM, unencrypted).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

impl CassandraConfig {
    /// This section as TOML (`[cassandra]`, passwords only by where they are read from), for a
    /// configuration made from another (tests, benchmarks).
    pub fn to_toml(&self) -> String {
        toml::to_string(&std::collections::BTreeMap::from([("cassandra", self)]))
            .expect("the cassandra section serializes")
    }

    fn default_datacenter() -> String {
        "datacenter1".to_owned()
    }
    fn default_replication_factor() -> u32 {
        3
    }
    fn default_request_timeout_ms() -> u64 {
        10_000
    }
}

/// `[kafka]`: defaults for the topics mot creates.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Partitions per topic.
    #[serde(default = "KafkaConfig::default_partitions")]
    pub partitions: i32,
    /// Replicas per partition.
    #[serde(default = "KafkaConfig::default_replication_factor")]
    pub replication_factor: i32,
    /// Topic settings for the compacted topics mot creates, over its defaults
    /// ([`KafkaConfig::compacted_topic_config`]).
    #[serde(default)]
    pub compacted_topics: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// What a compacted topic is created with. A deletion is published followed by a tombstone
    /// for its key; `min.compaction.lag.ms` (24 h unless set) keeps the deletion record itself
    /// readable that long, so every consumer less than a day behind sees it, and
    /// `delete.retention.ms` (24 h unless set) keeps the tombstone that long after compaction
    /// reached it. Then the key is gone from the topic.
    pub fn compacted_topic_config(&self) -> BTreeMap<String, String> {
        let mut config: BTreeMap<String, String> = [
            ("min.compaction.lag.ms", "86400000"),
            ("delete.retention.ms", "86400000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        config.extend(self.compacted_topics.clone());
        config
    }

    fn default_partitions() -> i32 {
        6
    }
    fn default_replication_factor() -> i32 {
        3
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            partitions: Self::default_partitions(),
            replication_factor: Self::default_replication_factor(),
            compacted_topics: BTreeMap::new(),
        }
    }
}

/// `[topology]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyConfig {
    /// The central region: its cluster carries requests out and the regions' news in.
    pub central: RegionName,
}

/// `[[clusters]]`: one Kafka cluster in one datacenter.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The datacenter's name.
    pub name: ClusterName,
    /// `host:port` of its brokers.
    pub bootstrap: Vec<String>,
    /// How mot's clients reach it: plaintext (the default), TLS, and/or SASL (SCRAM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<Box<KafkaSecurity>>,
    /// Extra librdkafka client properties, set after (and so over) those `security` makes;
    /// values never printed.
    #[serde(default, skip_serializing)]
    pub client: std::collections::BTreeMap<String, String>,
}

/// `security = { protocol, ca_file, cert_file, key_file, sasl }` of a `[[clusters]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSecurity {
    /// librdkafka's `security.protocol`.
    pub protocol: KafkaProtocol,
    /// The CA the brokers' certificates are checked against (PEM), beside the system's roots;
    /// the broker's name or address must be in its certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM), for brokers that ask for one (mutual TLS).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM, unencrypted).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The SASL mechanism (`SASL_SSL`, `SASL_PLAINTEXT`): `SCRAM-SHA-512` (the default),
    /// `SCRAM-SHA-256` or `PLAIN`.
    #[serde(default = "KafkaSecurity::default_sasl_mechanism")]
    pub sasl_mechanism: SaslMechanism,
    /// Its credentials (`SASL_SSL`, `SASL_PLAINTEXT`).
    #[serde(default)]
    pub sasl: Option<Credentials>,
}

/// Kafka's `security.protocol` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum KafkaProtocol {
    #[serde(rename = "PLAINTEXT")]
    Plaintext,
    #[serde(rename = "SSL")]
    Ssl,
    #[serde(rename = "SASL_PLAINTEXT")]
    SaslPlaintext,
    #[serde(rename = "SASL_SSL")]
    SaslSsl,
}

impl KafkaProtocol {
    /// As librdkafka spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::SaslSsl => "SASL_SSL",
        }
    }

    fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// The SASL mechanisms mot's librdkafka speaks (built with SSL, without GSSAPI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum SaslMechanism {
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "PLAIN")]
    Plain,
}

impl SaslMechanism {
    /// As librdkafka spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScramSha512 => "SCRAM-SHA-512",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::Plain => "PLAIN",
        }
    }
}

/// A user name and where its password comes from: a file (its first line, so rotating it is
/// rewriting the file and reloading) or an environment variable. Never the password itself in
/// the configuration file. Read when the configuration is loaded; `Debug` never shows it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// The password read from `password_file` or `password_env` by [`Config::load`].
    #[serde(skip)]
    password: Option<Secret>,
}

impl Credentials {
    /// Credentials whose password is given (tests, tools).
    pub fn new(username: impl Into<String>, password: Secret) -> Self {
        Self {
            username: username.into(),
            password_file: None,
            password_env: None,
            password: Some(password),
        }
    }

    /// The password (empty before [`Config::load`] read it).
    pub fn password(&self) -> &str {
        self.password.as_ref().map_or("", Secret::expose)
    }

    /// Reads the password from where the file says; `field` names these credentials in errors.
    fn resolve(&mut self, field: &str) -> Result<(), ConfigProblem> {
        let problem = |at: &str, problem: String| ConfigProblem {
            field: format!("{field}.{at}"),
            problem,
        };
        let password = match (&self.password_file, &self.password_env) {
            (Some(_), Some(_)) => {
                return Err(problem(
                    "password_file",
                    "set password_file or password_env, not both".into(),
                ))
            }
            (None, None) if self.password.is_some() => return Ok(()),
            (None, None) => {
                return Err(problem(
                    "password_file",
                    "set password_file or password_env (the password itself is never in this file)"
                        .into(),
                ))
            }
            (Some(file), None) => std::fs::read_to_string(file)
                .map_err(|e| {
                    problem(
                        "password_file",
                        format!("cannot read {}: {e}", file.display()),
                    )
                })?
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
            (None, Some(var)) => std::env::var(var)
                .map_err(|e| problem("password_env", format!("environment variable {var}: {e}")))?,
        };
        if password.is_empty() {
            return Err(problem(
                if self.password_file.is_some() {
                    "password_file"
                } else {
                    "password_env"
                },
                "holds an empty password".into(),
            ));
        }
        self.password = Some(Secret::new(password));
        Ok(())
    }
}

/// The `client` properties' values may be secrets: only their keys are shown.
impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("name", &self.name)
            .field("bootstrap", &self.bootstrap)
            .field("security", &self.security)
            .field("client", &self.client.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ClusterConfig {
    /// This cluster as a `[[clusters]]` entry of TOML (its `security` included, passwords only by
    /// where they are read from, `client` left out), for a configuration made from another.
    pub fn to_toml(&self) -> String {
        toml::to_string(&std::collections::BTreeMap::from([("clusters", [self])]))
            .expect("a cluster serializes")
    }

    /// The `bootstrap.servers` value.
    pub fn bootstrap_servers(&self) -> String {
        self.bootstrap.join(",")
    }
}

/// `[[regions]]`: a region with its home cluster.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    /// `<env>-<place>`.
    pub name: RegionName,
    /// The Kafka cluster in the region's datacenter.
    pub cluster: ClusterName,
    /// Non-production regions receive central topics through this cluster, so that only one
    /// link crosses the production | non-production boundary.
    #[serde(default)]
    pub pseudo_central: Option<ClusterName>,
    /// Availability zones, each with its own scheduler; a region without zones (e.g. a central
    /// region running no apps) is not a deployment target.
    #[serde(default)]
    pub zones: Vec<ZoneConfig>,
}

impl RegionConfig {
    /// The zone named `name`.
    pub fn zone(&self, name: &ZoneName) -> Option<&ZoneConfig> {
        self.zones.iter().find(|z| &z.name == name)
    }
}

/// `zones = [{ name, marathon, mesos, consul }]`: one availability zone and its platform APIs.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// The zone's name within its region, e.g. `a`.
    pub name: ZoneName,
    /// Base URL of the zone's Marathon (scheduler) API, e.g. `http://10.0.0.1:8080`.
    pub marathon: String,
    /// Base URL of the zone's Mesos master.
    pub mesos: String,
    /// Base URL of the zone's Consul agent. Maintenance calls go to the agent an instance is
    /// registered on: this URL with the instance's node address.
    pub consul: String,
    /// When zones share a Consul datacenter: the service tag that marks this zone's instances.
    /// mot then reads only the services carrying it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consul_tag: Option<String>,
    /// The ACL token mot presents to the zone's Consul (`X-Consul-Token`): reading the catalog and
    /// health needs `service:read` and `node:read`, traffic changes `service:write`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consul_token: Option<Secret>,
}

/// Who carries a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Carrier {
    /// mot's own localizer, running in the destination datacenter.
    Mot,
    /// An external MirrorMaker 2 that mot only expects.
    Mirrormaker2,
}

/// `[[routes]]`: topics that travel from one cluster to another.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Source cluster.
    pub from: ClusterName,
    /// Destination cluster.
    pub to: ClusterName,
    /// Base names of the topics carried.
    pub topics: Vec<TopicBase>,
    /// Who carries them.
    #[serde(default = "RouteConfig::default_carrier")]
    pub carrier: Carrier,
    /// Datacenter the carrier runs in; must be `to` (a carrier produces only to its own
    /// datacenter). Defaults to `to`.
    #[serde(default)]
    pub runs_in: Option<ClusterName>,
    /// How topics are named at the destination: `suffix` (regional topics gain
    /// `.<env>-<region>`), or `identity` (names kept, as MirrorMaker 2's identity policy does).
    #[serde(default)]
    pub rename: Rename,
}

/// How a route names topics at its destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rename {
    /// Regional topics arrive as `<base>.<env>-<region>`.
    #[default]
    Suffix,
    /// Names are kept as they are.
    Identity,
}

impl RouteConfig {
    fn default_carrier() -> Carrier {
        Carrier::Mot
    }
}

impl Config {
    /// Reads, parses and validates `path`; every error names the file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_owned(),
            source,
        })?;
        Self::from_toml(path, &text)
    }

    /// Parses and validates `text`, reporting errors against `path`.
    pub fn from_toml(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let mut config = config;
        let mut problems = config.validate();
        problems.extend(config.read_passwords());
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                file: path.to_owned(),
                problems,
            })
        }
    }

    /// Every problem serde could not see: references between sections, duplicates, ranges.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let mut bad = |field: String, problem: String| out.push(ConfigProblem { field, problem });

        if self.node.roles.is_empty() {
            bad(
                "node.roles".into(),
                "names no role; use service, regional and/or persistence".into(),
            );
        }
        if let Some(ratio) = self.telemetry.sample_ratio {
            if !(0.0..=1.0).contains(&ratio) {
                bad(
                    "telemetry.sample_ratio".into(),
                    "must be between 0.0 and 1.0".into(),
                );
            }
        }
        if let Some(endpoint) = &self.telemetry.otlp_endpoint {
            if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
                bad(
                    "telemetry.otlp_endpoint".into(),
                    "must be an http:// or https:// URL".into(),
                );
            }
        }
        if self.node.shutdown_timeout_secs == 0 {
            bad(
                "node.shutdown_timeout_secs".into(),
                "must be at least 1".into(),
            );
        }
        if self.node.worker_threads == Some(0) {
            bad("node.worker_threads".into(), "must be at least 1".into());
        }
        if self.node.sink_window == 0 {
            bad("node.sink_window".into(), "must be at least 1".into());
        }
        if let Err(e) = self.web.listen.parse::<SocketAddr>() {
            bad(
                "web.listen".into(),
                format!("`{}` is not `ip:port`: {e}", self.web.listen),
            );
        }

        let auth = &self.auth;
        if self.runs(Role::Service) && auth.tokens_file.is_none() && auth.jwt.is_none() {
            bad(
                "auth".into(),
                "the service role authenticates every call: set auth.tokens_file and/or [auth.jwt]"
                    .into(),
            );
        }
        if let Some(jwt) = &auth.jwt {
            if jwt.jwks_file.is_some() == jwt.jwks_url.is_some() {
                bad(
                    "auth.jwt".into(),
                    "set exactly one of jwks_file and jwks_url".into(),
                );
            }
            if let Some(url) = &jwt.jwks_url {
                if !url.starts_with("http://") && !url.starts_with("https://") {
                    bad(
                        "auth.jwt.jwks_url".into(),
                        "must be an http:// or https:// URL".into(),
                    );
                }
            }
            for (field, value) in [("issuer", &jwt.issuer), ("audience", &jwt.audience)] {
                if value.trim().is_empty() {
                    bad(format!("auth.jwt.{field}"), "must not be empty".into());
                }
            }
        }

        if self.secrets.keyring_file.is_some() && self.secrets.keyring_env.is_some() {
            bad(
                "secrets".into(),
                "set keyring_file or keyring_env, not both".into(),
            );
        }

        let c = &self.cassandra;
        if c.contact_points.is_empty() {
            bad(
                "cassandra.contact_points".into(),
                "must name at least one `host:port`".into(),
            );
        }
        for (i, point) in c.contact_points.iter().enumerate() {
            if !is_host_port(point) {
                bad(
                    format!("cassandra.contact_points[{i}]"),
                    format!("`{point}` is not `host:port`"),
                );
            }
        }
        if let Err(problem) = check_keyspace(&c.keyspace) {
            bad("cassandra.keyspace".into(), problem);
        }
        if c.replication_factor == 0 {
            bad(
                "cassandra.replication_factor".into(),
                "must be at least 1".into(),
            );
        }
        if let Some(tls) = &c.tls {
            for (field, problem) in tls_file_problems(&tls.ca_file, &tls.cert_file, &tls.key_file) {
                bad(format!("cassandra.tls.{field}"), problem);
            }
        }
        if self.kafka.partitions < 1 {
            bad("kafka.partitions".into(), "must be at least 1".into());
        }
        if self.kafka.replication_factor < 1 {
            bad(
                "kafka.replication_factor".into(),
                "must be at least 1".into(),
            );
        }

        let mut clusters = BTreeSet::new();
        for (i, cluster) in self.clusters.iter().enumerate() {
            if !clusters.insert(&cluster.name) {
                bad(
                    format!("clusters[{i}].name"),
                    format!("cluster `{}` is defined twice", cluster.name),
                );
            }
            if cluster.bootstrap.is_empty() {
                bad(
                    format!("clusters[{i}].bootstrap"),
                    "must name at least one `host:port`".into(),
                );
            }
            for (j, server) in cluster.bootstrap.iter().enumerate() {
                if !is_host_port(server) {
                    bad(
                        format!("clusters[{i}].bootstrap[{j}]"),
                        format!("`{server}` is not `host:port`"),
                    );
                }
            }
        }
        for (i, cluster) in self.clusters.iter().enumerate() {
            if let Some(security) = &cluster.security {
                for (field, problem) in security.problems() {
                    bad(format!("clusters[{i}].security.{field}"), problem);
                }
            }
        }
        let known_clusters = || {
            let names: Vec<_> = clusters.iter().map(|c| c.as_str()).collect();
            names.join(", ")
        };
        let unknown = |name: &ClusterName| {
            format!(
                "unknown cluster `{name}` (clusters: {}); add it under [[clusters]]",
                known_clusters()
            )
        };

        let mut regions = BTreeSet::new();
        for (i, region) in self.regions.iter().enumerate() {
            if !regions.insert(&region.name) {
                bad(
                    format!("regions[{i}].name"),
                    format!("region `{}` is defined twice", region.name),
                );
            }
            if !clusters.contains(&region.cluster) {
                bad(format!("regions[{i}].cluster"), unknown(&region.cluster));
            }
            if let Some(pseudo) = &region.pseudo_central {
                if !clusters.contains(pseudo) {
                    bad(format!("regions[{i}].pseudo_central"), unknown(pseudo));
                } else if pseudo == &region.cluster {
                    bad(
                        format!("regions[{i}].pseudo_central"),
                        "is the region's own cluster; name the cluster that relays central topics"
                            .into(),
                    );
                }
            }
            let mut zones = BTreeSet::new();
            for (j, zone) in region.zones.iter().enumerate() {
                for (api, url) in [
                    ("marathon", &zone.marathon),
                    ("mesos", &zone.mesos),
                    ("consul", &zone.consul),
                ] {
                    if !is_http_url(url) {
                        bad(
                            format!("regions[{i}].zones[{j}].{api}"),
                            format!("`{url}` is not an http:// or https:// URL"),
                        );
                    }
                }
                let zone = &zone.name;
                if !zones.insert(zone) {
                    bad(
                        format!("regions[{i}].zones[{j}]"),
                        format!("zone `{zone}` is listed twice"),
                    );
                }
            }
        }
        if !regions.contains(&self.topology.central) {
            bad(
                "topology.central".into(),
                format!(
                    "names `{}`, which is not under [[regions]]",
                    self.topology.central
                ),
            );
        }
        for (i, region) in self.node.regions.iter().enumerate() {
            if !regions.contains(region) {
                bad(
                    format!("node.regions[{i}]"),
                    format!("region `{region}` is not under [[regions]]"),
                );
            }
        }

        for (i, route) in self.routes.iter().enumerate() {
            if !clusters.contains(&route.from) {
                bad(format!("routes[{i}].from"), unknown(&route.from));
            }
            if !clusters.contains(&route.to) {
                bad(format!("routes[{i}].to"), unknown(&route.to));
            }
            if let Some(runs_in) = &route.runs_in {
                if !clusters.contains(runs_in) {
                    bad(format!("routes[{i}].runs_in"), unknown(runs_in));
                }
            }
            if route.from == route.to {
                bad(
                    format!("routes[{i}].to"),
                    "is the same cluster as `from`; a route joins two clusters".into(),
                );
            }
            if route.topics.is_empty() {
                bad(format!("routes[{i}].topics"), "names no topic".into());
            }
        }
        out
    }

    /// Reads every password the file points to (Kafka SASL, Cassandra); a problem for each one
    /// that cannot be read.
    fn read_passwords(&mut self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        for (i, cluster) in self.clusters.iter_mut().enumerate() {
            if let Some(sasl) = cluster.security.as_mut().and_then(|s| s.sasl.as_mut()) {
                problems.extend(sasl.resolve(&format!("clusters[{i}].security.sasl")).err());
            }
        }
        if let Some(auth) = &mut self.cassandra.auth {
            problems.extend(auth.resolve("cassandra.auth").err());
        }
        problems
    }

    /// The cluster named `name`.
    pub fn cluster(&self, name: &ClusterName) -> Option<&ClusterConfig> {
        self.clusters.iter().find(|c| &c.name == name)
    }

    /// The region named `name`.
    pub fn region(&self, name: &RegionName) -> Option<&RegionConfig> {
        self.regions.iter().find(|r| &r.name == name)
    }

    /// Whether this process runs `role`.
    pub fn runs(&self, role: Role) -> bool {
        self.node.roles.contains(&role)
    }
}

impl KafkaSecurity {
    fn default_sasl_mechanism() -> SaslMechanism {
        SaslMechanism::ScramSha512
    }

    /// What is inconsistent in these settings, by field.
    fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let protocol = self.protocol.as_str();
        match (&self.sasl, self.protocol.uses_sasl()) {
            (None, true) => out.push((
                "sasl",
                format!("{protocol} needs sasl = {{ username, password_file | password_env }}"),
            )),
            (Some(_), false) => out.push((
                "sasl",
                format!("is for SASL_SSL or SASL_PLAINTEXT, not {protocol}"),
            )),
            _ => {}
        }
        if !self.protocol.uses_tls() {
            for (field, file) in [
                ("ca_file", &self.ca_file),
                ("cert_file", &self.cert_file),
                ("key_file", &self.key_file),
            ] {
                if file.is_some() {
                    out.push((field, format!("is for SSL or SASL_SSL, not {protocol}")));
                }
            }
        }
        out.extend(tls_file_problems(
            &self.ca_file,
            &self.cert_file,
            &self.key_file,
        ));
        out
    }
}

/// A client certificate needs its key (and the other way round), and every file named must
/// exist: a typo is reported when the file is loaded, not at the first connection.
fn tls_file_problems(
    ca_file: &Option<PathBuf>,
    cert_file: &Option<PathBuf>,
    key_file: &Option<PathBuf>,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    match (cert_file, key_file) {
        (Some(_), None) => out.push(("key_file", "cert_file needs its key_file".into())),
        (None, Some(_)) => out.push(("cert_file", "key_file needs its cert_file".into())),
        _ => {}
    }
    for (field, file) in [
        ("ca_file", ca_file),
        ("cert_file", cert_file),
        ("key_file", key_file),
    ] {
        if let Some(file) = file {
            if !file.is_file() {
                out.push((field, format!("{} is not a readable file", file.display())));
            }
        }
    }
    out
}

fn is_http_url(value: &str) -> bool {
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"));
    rest.is_some_and(|r| !r.is_empty() && !r.contains(char::is_whitespace))
}

fn is_host_port(value: &str) -> bool {
    match value.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

/// Cassandra keyspace names: a letter then letters, digits or `_`, at most 48 characters.
fn check_keyspace(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    if !starts_with_letter
        || name.len() > 48
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(format!(
            "`{name}` is not a keyspace name: a lowercase letter, then lowercase letters, digits or `_`, at most 48 characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev_toml() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/dev/mot.toml")).unwrap()
    }

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(Path::new("test.toml"), text)
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let config = load(&dev_toml()).unwrap();
        let token = "6d6f7400-0000-4000-8000-00000000c0de";
        let zone = &config.regions[1].zones[0];
        assert_eq!(zone.consul_token.as_ref().map(Secret::expose), Some(token));
        let shown = format!("{config:?}");
        assert!(
            !shown.contains(token) && shown.contains("<redacted>"),
            "{shown}"
        );
        let consul = format!("{:?}", crate::platform::consul::Consul::of(zone));
        assert!(!consul.contains(token), "{consul}");
    }

    #[test]
    fn passwords_are_read_from_files_or_the_environment_and_never_shown() {
        std::env::set_var("MOT_TEST_CASSANDRA_PASSWORD", "c4ss-from-env");
        let text = dev_toml().replace(
            "password_file = \".mot/auth/cassandra.password\"",
            "password_env = \"MOT_TEST_CASSANDRA_PASSWORD\"",
        );
        let config = load(&text).unwrap();
        let cassandra = config.cassandra.auth.as_ref().unwrap();
        assert_eq!(cassandra.password(), "c4ss-from-env");
        let cluster = &config.clusters[2];
        let sasl = cluster.security.as_ref().unwrap().sasl.as_ref().unwrap();
        let file = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(".mot/auth/kafka-test-us-east-1.password"),
        )
        .unwrap();
        assert_eq!(sasl.password(), file.lines().next().unwrap());
        let shown = format!("{config:?}");
        for secret in [cassandra.password(), sasl.password()] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn kafka_and_cassandra_security_is_checked_field_by_field() {
        let problems = |from: &str, to: &str| {
            let text = dev_toml().replace(from, to);
            assert_ne!(text, dev_toml(), "{from}");
            match load(&text) {
                Err(ConfigError::Invalid { problems, .. }) => problems
                    .into_iter()
                    .map(|p| format!("{}: {}", p.field, p.problem))
                    .collect::<Vec<_>>(),
                other => panic!("{to}: {other:?}"),
            }
        };
        let sasl = "sasl = { username = \"mot\", password_file = \".mot/auth/kafka-test-us-east-1.password\" }";
        assert_eq!(
            problems(&format!(", {sasl}"), ""),
            ["clusters[2].security.sasl: SASL_SSL needs sasl = { username, password_file | password_env }"]
        );
        assert_eq!(
            problems("protocol = \"SASL_SSL\"", "protocol = \"PLAINTEXT\""),
            [
                "clusters[2].security.sasl: is for SASL_SSL or SASL_PLAINTEXT, not PLAINTEXT",
                "clusters[2].security.ca_file: is for SSL or SASL_SSL, not PLAINTEXT"
            ]
        );
        assert_eq!(
            problems(
                "ca_file = \".mot/tls/ca.pem\", sasl",
                "ca_file = \"/nonexistent/ca.pem\", cert_file = \".mot/tls/ca.pem\", sasl"
            ),
            [
                "clusters[2].security.key_file: cert_file needs its key_file",
                "clusters[2].security.ca_file: /nonexistent/ca.pem is not a readable file"
            ]
        );
        assert_eq!(
            problems(
                "password_file = \".mot/auth/kafka-test-us-east-1.password\"",
                "password_file = \".mot/auth/kafka-test-us-east-1.password\", password_env = \"X\""
            ),
            ["clusters[2].security.sasl.password_file: set password_file or password_env, not both"]
        );
        assert_eq!(
            problems("cert_file = \".mot/tls/client.pem\", ", ""),
            ["cassandra.tls.cert_file: key_file needs its cert_file"]
        );
        assert_eq!(
            problems(
                "password_file = \".mot/auth/cassandra.password\"",
                "password_env = \"MOT_TEST_NO_SUCH_VARIABLE\""
            ),
            ["cassandra.auth.password_env: environment variable MOT_TEST_NO_SUCH_VARIABLE: environment variable not found"]
        );
    }

    #[test]
    fn a_service_without_auth_is_refused() {
        let text = dev_toml().replace("tokens_file = \".mot/auth/tokens.toml\"", "");
        let Err(ConfigError::Invalid { problems, .. }) = load(&text) else {
            panic!("accepted")
        };
        assert_eq!(problems[0].field, "auth", "{problems:?}");
    }

    #[test]
    fn dev_topology_loads() {
        let config = load(&dev_toml()).unwrap();
        assert_eq!(config.clusters.len(), 4);
        assert_eq!(config.topology.central.as_str(), "production-us-east-1");
        let test = config.region(&"test-us-east-1".parse().unwrap()).unwrap();
        assert_eq!(
            test.pseudo_central.as_ref().unwrap().as_str(),
            "stage-us-east-1"
        );
    }

    #[test]
    fn unknown_cluster_is_refused_naming_file_and_field() {
        let text = dev_toml().replace(
            "cluster = \"test-us-east-1\"",
            "cluster = \"test-us-east-9\"",
        );
        let err = load(&text).unwrap_err().to_string();
        assert!(err.starts_with("test.toml: "), "{err}");
        assert!(
            err.contains("regions[1].cluster: unknown cluster `test-us-east-9`"),
            "{err}"
        );
    }

    #[test]
    fn unknown_field_is_refused_with_its_line() {
        let text = dev_toml().replace("[web]\n", "[web]\nlisten_port = 8080\n");
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("unknown field `listen_port`"), "{err}");
        assert!(err.contains("line "), "{err}");
    }

    #[test]
    fn malformed_region_name_is_refused_with_the_reason() {
        let text = dev_toml().replace(
            "name = \"production-us-west-2\"\ncluster",
            "name = \"Production US\"\ncluster",
        );
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("region `Production US`"), "{err}");
    }

    #[test]
    fn a_zone_api_that_is_not_a_url_is_refused() {
        let text = dev_toml().replacen(
            "marathon = \"http://127.0.0.1:38080/a/marathon\"",
            "marathon = \"127.0.0.1:38080\"",
            1,
        );
        let err = load(&text).unwrap_err().to_string();
        assert!(
            err.contains(
                "regions[1].zones[0].marathon: `127.0.0.1:38080` is not an http:// or https:// URL"
            ),
            "{err}"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = dev_toml()
            .replace(
                "central = \"production-us-east-1\"",
                "central = \"production-eu-west-1\"",
            )
            .replace("keyspace = \"mot\"", "keyspace = \"1mot\"");
        let Err(ConfigError::Invalid { problems, .. }) = load(&text) else {
            panic!("expected an invalid configuration");
        };
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["cassandra.keyspace", "topology.central"]);
    }
}
