//! mot, the Ministry of Truth: deploy apps to many isolated datacenters with one API call, and see
//! in one place what runs where.
//!
//! A map of the modules, in the order a deployment travels through them:
//!
//! - [`config`]: the configuration file: roles, Cassandra, and the topology (clusters, regions,
//!   the central region, routes), validated so that a bad field is named;
//! - [`topics`]: names that cannot be invalid, and the Kafka clients built from the topology;
//! - [`web`]: the service layer's HTTP API (actix-web);
//! - [`auth`]: who calls the API (static tokens, JWTs), what each may do, the rate limit;
//! - [`secrets`]: `secret_env` values sealed by the API, opened only for the scheduler call;
//! - [`models`]: the records on the topics: the envelope and the payloads;
//! - [`actors`]: the agents, each an actix actor supervised per region;
//! - [`platform`]: clients of the schedulers and service catalogs, and their simulator;
//! - [`store`]: Cassandra: the shared session and the schema migrations;
//! - [`daemon`]: `mot run`, the long-running process that starts the roles a config names.

pub mod actors;
pub mod auth;
pub mod config;
pub mod daemon;
pub mod models;
pub mod notify;
pub mod platform;
pub mod secrets;
pub mod store;
pub mod telemetry;
pub mod topics;
pub mod web;
