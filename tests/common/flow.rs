//! A whole mot in-process over the real Kafka clusters and Cassandra, with its app regions'
//! zones served by simulators: what the flow tests drive through the API.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rdkafka::Message;
use serde_json::{json, Value};

use mot::actors::counters::Registry;
use mot::actors::pipeline;
use mot::config::Config;
use mot::models::deployment::DeploymentCompleted;
use mot::models::envelope::{self, Envelope, Kind};
use mot::models::instance::{Health, InstanceInfo};
use mot::platform::sim::{Platform, SimOptions};
use mot::topics::clients;
use mot::topics::names::{RegionName, TopicName};
use mot::topics::topology::Topology;
use mot::web::{self, AppState};

pub struct Flow {
    pub url: String,
    pub topology: Topology,
    pub sims: Vec<(String, String)>,
    pub test_region: String,
    pub prod_region: String,
    /// The region on an extra cluster of the test's own, if it asked for one.
    pub extra_region: Option<String>,
    pub http: reqwest::Client,
    pub registry: Registry,
    /// The region supervisors running now.
    pub supervisors: Vec<actix::Addr<mot::actors::supervisor::RegionSupervisor>>,
    /// Each zone's relay to Consul, by region and zone.
    pub consul: BTreeMap<(String, String), super::consul::Relay>,
    /// The ACL token mot presents to Consul in every zone.
    pub consul_token: super::consul::Token,
    /// The test's keyspace, dropped with it.
    pub _keyspace: super::DropKeyspace,
}

/// dev/mot.toml with its two app regions renamed uniquely (so a run's topics and consumer groups
/// are its own), its keyspace unique, and each region's zones on a free port of its own, bound
/// here for the region's simulator.
pub struct DevTopology {
    /// The unique digits in the names.
    pub id: String,
    /// The configuration file's text.
    pub text: String,
    pub keyspace: String,
    pub test_region: String,
    pub prod_region: String,
    /// Each region's simulator listener.
    pub sims: Vec<(String, std::net::TcpListener)>,
}

/// See [`DevTopology`].
pub fn renamed_dev_topology() -> DevTopology {
    let id = super::unique("").replace('_', "");
    let (test_region, prod_region) = (format!("test-t{id}"), format!("production-t{id}"));
    let mut sims = Vec::new();
    let mut text = std::fs::read_to_string(super::repo_path("dev/mot.toml")).unwrap();
    let keyspace = super::unique("mot_flow");
    text = text.replace("keyspace = \"mot\"", &format!("keyspace = \"{keyspace}\""));
    // The central region renamed too: the central agents' consumer groups are this run's own,
    // and each run's agents take only the requests its own API logged (their origin).
    text = text
        .replace(
            "central = \"production-us-east-1\"",
            &format!("central = \"production-c{id}\""),
        )
        .replace(
            "name = \"production-us-east-1\"\ncluster",
            &format!("name = \"production-c{id}\"\ncluster"),
        );
    for (old_name, new_name, old_port) in [
        ("test-us-east-1", &test_region, "38080"),
        ("production-us-west-2", &prod_region, "48080"),
    ] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        text = text
            .replace(
                &format!("name = \"{old_name}\"\ncluster"),
                &format!("name = \"{new_name}\"\ncluster"),
            )
            .replace(
                &format!("127.0.0.1:{old_port}"),
                &format!("127.0.0.1:{port}"),
            )
            .replace(
                &format!("consul_tag = \"mot-zone={old_name}/"),
                &format!("consul_tag = \"mot-zone={new_name}/"),
            );
        sims.push((new_name.clone(), listener));
    }
    DevTopology {
        id,
        text,
        keyspace,
        test_region,
        prod_region,
        sims,
    }
}

/// The dev topology with its two app regions renamed uniquely (so this run's topics and consumer
/// groups are its own) and their zones served by simulators on free ports; every role of the
/// process started in-process, as `mot run` starts them.
pub async fn start() -> Flow {
    start_with(SimOptions {
        health_delay: Duration::from_millis(100),
    })
    .await
}

/// [`start`], with simulators behaving as `options` say.
pub async fn start_with(options: SimOptions) -> Flow {
    start_custom(options, None).await
}

/// [`start_with`], plus (with `extra = Some((cluster, bootstrap))`) a third production region
/// `production-x<id>` with one zone on that cluster, its topics routed to central by mot.
pub async fn start_custom(options: SimOptions, extra: Option<(&str, &str)>) -> Flow {
    start_on(options, extra, &OwnConsul::shared(), None).await
}

/// Where a flow's zones find Consul.
pub struct OwnConsul {
    /// `host:port` of the Consul (agent) the zones' configuration names.
    pub at: String,
    /// Each zone through a relay of its own ([`Flow::consul`]) to it, for tests that cut a zone off.
    pub relays: bool,
    /// The agent the simulators register their tasks on (`host:port`), when not `at`.
    pub register_on: Option<String>,
}

impl OwnConsul {
    /// The Consul every test shares, each zone through a relay.
    pub fn shared() -> Self {
        Self {
            at: "127.0.0.1:8500".into(),
            relays: true,
            register_on: None,
        }
    }
}

/// [`start_custom`], every zone's Consul as `consul` says.
/// With `https`, the zones' Marathon and Mesos are served over TLS with its certificate, at
/// `https://` URLs, and mot trusts its CA (`[tls] ca_file`).
pub async fn start_on(
    options: SimOptions,
    extra: Option<(&str, &str)>,
    own: &OwnConsul,
    https: Option<&super::TestPki>,
) -> Flow {
    let consul_at = own.at.as_str();
    super::init_tracing();
    let DevTopology {
        id,
        mut text,
        test_region,
        prod_region,
        mut sims,
        ..
    } = renamed_dev_topology();
    let extra_region = extra.map(|(cluster, bootstrap)| {
        let region = format!("production-x{id}");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        text.push_str(&format!(
            "\n[[clusters]]\nname = \"{cluster}\"\nbootstrap = [\"{bootstrap}\"]\n\n\
             [[regions]]\nname = \"{region}\"\ncluster = \"{cluster}\"\n{}\n\n\
             [[routes]]\nfrom = \"{cluster}\"\nto = \"production-us-east-1\"\n\
             topics = [\"mot-deployment-complete-events\", \"mot-instance-state-change\", \"mot-deployment-state-change\"]\n\
             carrier = \"mot\"\n",
            super::zones_toml(&region, &["a"], &base)
        ));
        sims.push((region.clone(), listener));
        region
    });
    // Each zone's Consul through a relay the test can cut, and mot with a token of its own that
    // may do what mot needs and no more.
    let consul_token = super::consul::Token::new(
        &format!("http://{consul_at}"),
        &format!("mot-flow-{id}"),
        super::consul::MOT_RULES,
    )
    .await;
    let mut consul = BTreeMap::new();
    for region in [&test_region, &prod_region]
        .into_iter()
        .chain(extra_region.as_ref())
    {
        for zone in ["a", "b", "c"] {
            let scope = format!(
                "consul = \"{}\", consul_tag = \"mot-zone={region}/{zone}\"",
                super::consul::URL
            );
            if text.contains(&scope) {
                let url = if own.relays {
                    let relay = super::consul::Relay::to(consul_at).await;
                    let url = relay.url.clone();
                    consul.insert((region.clone(), zone.to_owned()), relay);
                    url
                } else {
                    format!("http://{consul_at}")
                };
                text = text.replace(
                    &scope,
                    &format!("consul = \"{url}\", consul_tag = \"mot-zone={region}/{zone}\""),
                );
            }
        }
    }
    text = text.replace(
        &format!("consul_token = \"{}\"", super::consul::MANAGEMENT_TOKEN),
        &format!("consul_token = \"{}\"", consul_token.secret),
    );
    let scheme = if https.is_some() { "https" } else { "http" };
    if let Some(pki) = https {
        for (_, listener) in &sims {
            let port = listener.local_addr().unwrap().port();
            text = text.replace(
                &format!("http://127.0.0.1:{port}/"),
                &format!("https://127.0.0.1:{port}/"),
            );
        }
        text = format!("[tls]\nca_file = \"{}\"\n\n{text}", pki.ca.display());
    }
    let config = Config::from_toml(Path::new("flow-test.toml"), &text).unwrap();
    let topology = Topology::checked(&config).unwrap();
    let mut sim_urls = Vec::new();
    for (region, listener) in sims {
        let port = listener.local_addr().unwrap().port();
        let region_config = config.region(&RegionName::parse(&region).unwrap()).unwrap();
        // The scheduler's integration registers with a token of its own.
        let mut platform = Platform::new(region_config, options)
            .with_consul_token(super::consul::MANAGEMENT_TOKEN);
        if let Some(agent) = &own.register_on {
            platform = platform.registering_on(&format!("http://{agent}"));
        }
        actix_web::rt::spawn(
            platform
                .server_tls(listener, https.map(super::TestPki::server_config))
                .unwrap(),
        );
        sim_urls.push((region, format!("{scheme}://127.0.0.1:{port}")));
    }
    for cluster in &config.clusters {
        clients::ensure_topics(&topology, &topology.cluster_admin(&cluster.name).unwrap())
            .await
            .unwrap();
    }
    super::migrated(&config).await;
    let registry = Registry::default();
    let supervisors = mot::daemon::start_agents(&topology, &registry);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    actix_web::rt::spawn(
        web::server(
            listener,
            None,
            Some(actix_web::web::Data::new(
                AppState::connect(topology.clone()).await.unwrap(),
            )),
            // The agents' own counters: /metrics shows what they did.
            registry.clone(),
            std::sync::Arc::new(mot::web::readyz::Readiness::new(
                &topology,
                registry.store.clone(),
            )),
        )
        .unwrap(),
    );
    Flow {
        url: format!("http://127.0.0.1:{port}"),
        topology,
        sims: sim_urls,
        test_region,
        prod_region,
        extra_region,
        // No pooled connections: a connection the server (the API, a zone's simulator) is
        // closing is never reused under a request (hyper's UnexpectedMessage). Loopback
        // connects cost nothing here.
        http: https
            .into_iter()
            .fold(super::api_client(), |b, pki| {
                b.add_root_certificate(pki.ca_certificate())
            })
            .pool_max_idle_per_host(0)
            .build()
            .unwrap(),
        registry,
        supervisors,
        consul,
        consul_token,
        _keyspace: super::DropKeyspace(config.cassandra.clone()),
    }
}

impl Flow {
    /// Stops every agent gracefully, as a stopping `mot run` does.
    pub async fn stop_agents(&mut self) {
        for supervisor in self.supervisors.drain(..) {
            supervisor
                .send(mot::actors::supervisor::Shutdown)
                .await
                .unwrap();
        }
    }

    /// Starts every agent again (a restarted `mot run`), counting into a fresh registry.
    pub fn start_agents(&mut self) {
        self.registry = Registry::default();
        self.supervisors = mot::daemon::start_agents(&self.topology, &self.registry);
    }

    /// `GET path` on the API, answering status and JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = super::send_retrying(&format!("GET {path}"), || {
            self.http.get(format!("{}{path}", self.url))
        })
        .await;
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// `GET /metrics`, as text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// Region `name` of a deployment's view.
pub fn region<'a>(view: &'a Value, name: &str) -> &'a Value {
    view["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["region"] == name)
        .unwrap_or_else(|| panic!("no region {name} in {view:#}"))
}

impl Flow {
    /// Waits until `GET /deployments/{id}` satisfies `ok`, answering the last view.
    pub async fn deployment_until(
        &self,
        id: &str,
        what: &str,
        ok: impl Fn(&Value) -> bool,
    ) -> Value {
        self.deployment_within(120, id, what, ok).await
    }

    /// [`Self::deployment_until`], waiting at most `secs`.
    pub async fn deployment_within(
        &self,
        secs: u64,
        id: &str,
        what: &str,
        ok: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let (status, view) = self.get(&format!("/deployments/{id}")).await;
            assert_eq!(status, 200, "{view}");
            if ok(&view) {
                return view;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "deployment {id} never became {what}; last: {view:#}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// `POST /{zone}/_sim/{path}` on `region`'s simulator (a test switch), expecting 204.
    pub async fn sim_control(&self, region: &str, zone: &str, path: &str) {
        let resp = self
            .http
            .post(format!("{}/{zone}/_sim/{path}", self.sim(region)))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 204, "{path}");
    }

    /// Waits until the deployment `id` has exactly two running instances, all satisfying `ok`
    /// (up to 90 s); answers them.
    pub async fn instances_until(
        &self,
        id: &str,
        what: &str,
        ok: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            let (status, body) = self.get(&format!("/deployments/{id}/instances")).await;
            assert_eq!(status, 200);
            let running: Vec<Value> = body["instances"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| i["state"] == "running")
                .cloned()
                .collect();
            if running.len() == 2 && running.iter().all(&ok) {
                return running;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "instances never {what}: {body:#}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Waits (up to 60 s) until deployment `id`'s timeline has an event of `kind`; answers every
    /// event of that kind then (so a test can assert there is exactly one).
    pub async fn events_of_kind(&self, id: &str, kind: &str) -> Vec<Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (_, events) = self.get(&format!("/deployments/{id}/events")).await;
            let found: Vec<Value> = events["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["kind"] == kind)
                .cloned()
                .collect();
            if !found.is_empty() {
                return found;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the timeline never showed {kind}: {events:#}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// The relay standing for `zone`'s Consul in `region`.
    pub fn consul(&self, region: &str, zone: &str) -> &super::consul::Relay {
        &self.consul[&(region.to_owned(), zone.to_owned())]
    }

    pub fn sim(&self, region: &str) -> &str {
        &self.sims.iter().find(|(r, _)| r == region).unwrap().1
    }

    pub async fn post(&self, targets: Value) -> String {
        self.post_version("1.4.2", targets).await
    }

    /// POSTs version `version` of checkout-web to `targets`, answering the deployment id.
    pub async fn post_version(&self, version: &str, targets: Value) -> String {
        self.post_with(version, targets, json!({})).await
    }

    /// [`Self::post_version`] with the fields of `extra` added to the request.
    pub async fn post_with(&self, version: &str, targets: Value, extra: Value) -> String {
        let mut body = json!({
            "app": "checkout-web", "version": version, "artifact": format!("registry.example.com/checkout-web:{version}"),
            "instances_per_zone": 2, "resources": {"cpus": 0.5, "mem_mb": 256}, "ports": [8080],
            "health_check": {"path": "/health", "interval_secs": 10}, "targets": targets,
        });
        for (k, v) in extra.as_object().into_iter().flatten() {
            body[k] = v.clone();
        }
        // Every retry carries the same Idempotency-Key: it stays one deployment.
        let key = super::unique("post");
        let resp = super::send_retrying("POST /deployments", || {
            self.http
                .post(format!("{}/deployments", self.url))
                .header("Idempotency-Key", &key)
                .json(&body)
        })
        .await;
        assert_eq!(resp.status().as_u16(), 202);
        resp.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The complete events of deployment `id` on `region`'s own cluster, waiting for `n`.
    pub async fn complete_events(
        &self,
        region: &str,
        id: &str,
        n: usize,
    ) -> Vec<DeploymentCompleted> {
        let home = self
            .topology
            .region_home(&RegionName::parse(region).unwrap())
            .unwrap();
        let topic = TopicName::parse("mot-deployment-complete-events").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            let mut found = Vec::new();
            pipeline::read_to_end(&home, &topic, &super::unique("flow-reader"), |m| {
                if m.key() == Some(id.as_bytes()) {
                    let env: Envelope<DeploymentCompleted> =
                        envelope::decode(m.key(), m.payload()).unwrap();
                    found.push(env.payload);
                }
            })
            .await
            .unwrap();
            if found.len() >= n {
                return found;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{n} complete event(s) for {id} in {region} did not arrive"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// The latest InstanceInfo change of each instance of `region`.
    pub async fn instance_changes(&self, region: &str) -> BTreeMap<String, Envelope<InstanceInfo>> {
        let home = self
            .topology
            .region_home(&RegionName::parse(region).unwrap())
            .unwrap();
        let topic = TopicName::parse("mot-instance-state-change").unwrap();
        let mut latest = BTreeMap::new();
        pipeline::read_to_end(&home, &topic, &super::unique("flow-reader"), |m| {
            if let Ok(env) = envelope::decode::<InstanceInfo>(m.key(), m.payload()) {
                if env.origin.as_str() == region {
                    latest.insert(env.key.clone(), env);
                }
            }
        })
        .await
        .unwrap();
        latest
    }

    /// Waits until `n` instances of deployment `id` in `region` are live and passing.
    pub async fn healthy_instances(&self, region: &str, id: &str, n: usize) -> Vec<InstanceInfo> {
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            let healthy: Vec<InstanceInfo> = self
                .instance_changes(region)
                .await
                .into_values()
                .filter(|e| {
                    e.kind != Kind::Deleted
                        && e.payload.health == Health::Passing
                        && e.payload.deployment_id.as_deref() == Some(id)
                })
                .map(|e| e.payload)
                .collect();
            if healthy.len() == n {
                return healthy;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{n} healthy instances did not arrive ({} so far)",
                healthy.len()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    pub async fn app(&self, region: &str, zone: &str) -> Value {
        self.http
            .get(format!(
                "{}/{zone}/marathon/v2/apps/checkout-web",
                self.sim(region)
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn stats(&self, region: &str, zone: &str) -> Value {
        self.http
            .get(format!("{}/{zone}/_sim/stats", self.sim(region)))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}
