//! The API spawned in-process on port 0 against the running Kafka clusters and a Cassandra
//! keyspace of its own, and what its tests ask of it.

use std::path::Path;

use rdkafka::Message;
use serde_json::Value;

use mot::actors::counters::Registry;
use mot::actors::pipeline;
use mot::config::Config;
use mot::topics::names::TopicName;
use mot::topics::topology::Topology;
use mot::web::{self, AppState};

pub struct TestApp {
    pub url: String,
    pub topology: Topology,
    pub client: reqwest::Client,
    /// The agents' counters the app's `/metrics` shows.
    pub registry: Registry,
    /// The test's keyspace, dropped with it.
    _keyspace: super::DropKeyspace,
}

/// Spawns the API on port 0 with a fresh, migrated keyspace; `central_bootstrap` overrides the
/// central cluster's address (a closed port shows Kafka being down).
pub async fn spawn_app_with(central_bootstrap: Option<&str>) -> TestApp {
    spawn(central_bootstrap, Some(&unique_central()), "").await
}

/// A central region name for one test: the requests it logs on the shared central cluster are
/// its own (their origin), not work for another mot on the same servers (a `dev/run`, the
/// benchmarks), whose central region has the dev topology's name.
fn unique_central() -> String {
    format!("production-c{}", super::unique("").replace('_', ""))
}

/// The API as [`spawn_app`] makes it, with `auth` added to the `[auth]` section (e.g.
/// `mutation_burst = 2`, or an `[auth.jwt]` or `[web.tls]` table).
pub async fn spawn_app_auth(auth: &str) -> TestApp {
    spawn(None, Some(&unique_central()), auth).await
}

/// The API on the dev topology; with `central_bootstrap`, the central cluster is elsewhere; with
/// `central_name`, the central region has that name (its agents' consumer groups are the test's
/// own).
pub async fn spawn_app_custom(
    central_bootstrap: Option<&str>,
    central_name: Option<&str>,
) -> TestApp {
    spawn(central_bootstrap, central_name, "").await
}

/// [`spawn_app_custom`], with `auth` added to the `[auth]` section.
async fn spawn(central_bootstrap: Option<&str>, central_name: Option<&str>, auth: &str) -> TestApp {
    super::init_tracing();
    let keyspace = super::unique("mot_api");
    let mut text = std::fs::read_to_string(super::repo_path("dev/mot.toml"))
        .unwrap()
        .replace("keyspace = \"mot\"", &format!("keyspace = \"{keyspace}\""))
        .replace(
            "tokens_file = \".mot/auth/tokens.toml\"",
            &format!("tokens_file = \".mot/auth/tokens.toml\"\n{auth}"),
        );
    if let Some(bootstrap) = central_bootstrap {
        text = text.replace("127.0.0.1:19092", bootstrap);
    }
    if let Some(name) = central_name {
        text = text
            .replace(
                "central = \"production-us-east-1\"",
                &format!("central = \"{name}\""),
            )
            .replace(
                "name = \"production-us-east-1\"\ncluster",
                &format!("name = \"{name}\"\ncluster"),
            );
    }
    let config = Config::from_toml(Path::new("api-test.toml"), &text).unwrap();
    super::migrated(&config).await;
    let topology = Topology::checked(&config).unwrap();
    if central_bootstrap.is_none() {
        // As `mot run` does at start: the topics of the central cluster exist.
        let admin = topology
            .cluster_admin(&topology.central_region().cluster)
            .unwrap();
        mot::topics::clients::ensure_topics(&topology, &admin)
            .await
            .unwrap();
    }
    let state = AppState::connect(topology.clone()).await.unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let registry = Registry::default();
    actix_web::rt::spawn(
        web::server(
            listener,
            config
                .web
                .tls
                .as_ref()
                .map(|tls| web::tls_server_config(tls).unwrap()),
            Some(actix_web::web::Data::new(state)),
            registry.clone(),
            std::sync::Arc::new(mot::web::readyz::Readiness::new(
                &topology,
                registry.store.clone(),
            )),
        )
        .unwrap(),
    );
    TestApp {
        url: format!(
            "{}://127.0.0.1:{port}",
            if config.web.tls.is_some() {
                "https"
            } else {
                "http"
            }
        ),
        _keyspace: super::DropKeyspace(topology.config().cassandra.clone()),
        topology,
        client: super::api_client().build().unwrap(),
        registry,
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(None).await
}

impl TestApp {
    pub async fn post(&self, body: &Value, key: Option<&str>) -> (u16, Option<String>, Value) {
        let mut req = self
            .client
            .post(format!("{}/deployments", self.url))
            .json(body);
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, location, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_raw(&self, content_type: &str, body: Vec<u8>) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}/deployments", self.url))
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }

    /// Every record on central topic `topic` whose key is `key`.
    /// The records (key, value) on `topic` of the central cluster about deployment `id` (requests
    /// and launches are keyed by app: found by the id in their payload).
    pub async fn records(&self, topic: TopicName, id: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut found = Vec::new();
        pipeline::read_to_end(
            &self.topology.central_home(),
            &topic,
            &super::unique("api-reader"),
            |m| {
                let value = m.payload().unwrap_or_default();
                if String::from_utf8_lossy(value).contains(&format!("\"{id}\"")) {
                    found.push((m.key().unwrap_or_default().to_vec(), value.to_vec()));
                }
            },
        )
        .await
        .unwrap();
        found
    }

    /// `GET /metrics`.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Every request record whose version carries `marker`.
    pub async fn requests_marked(&self, marker: &str) -> usize {
        self.requests_marked_payloads(marker).await.len()
    }

    /// The payloads of the logged requests whose record mentions `marker`.
    pub async fn requests_marked_payloads(&self, marker: &str) -> Vec<Value> {
        let topic = TopicName::parse("mot-deployment-requests").unwrap();
        let mut found = Vec::new();
        pipeline::read_to_end(
            &self.topology.central_home(),
            &topic,
            &super::unique("api-reader"),
            |m| {
                if let Some(p) = m
                    .payload()
                    .filter(|p| String::from_utf8_lossy(p).contains(marker))
                {
                    let record: Value = serde_json::from_slice(p).unwrap();
                    found.push(record["payload"].clone());
                }
            },
        )
        .await
        .unwrap();
        found
    }
}
