//! The real Consul dev/infra runs, as the tests use it: its address and management token, ACL
//! tokens made for a test, reads as an operator makes them, and a relay in front of it that a
//! test can cut (a zone whose Consul stops answering, without stopping the Consul every other
//! test shares).

use std::sync::Arc;

use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The shared Consul's HTTP API (dev/infra's CONSUL_HTTP_PORT).
pub const URL: &str = "http://127.0.0.1:8500";
/// Its management token (dev/infra's CONSUL_MANAGEMENT_TOKEN).
pub const MANAGEMENT_TOKEN: &str = "6d6f7400-0000-4000-8000-00000000c0de";

/// What mot needs of Consul: read the catalog and health, switch maintenance.
pub const MOT_RULES: &str =
    "service_prefix \"\" { policy = \"write\" }\nnode_prefix \"\" { policy = \"read\" }";
/// Reading only.
pub const READ_RULES: &str =
    "service_prefix \"\" { policy = \"read\" }\nnode_prefix \"\" { policy = \"read\" }";

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// `method path` on the shared Consul with the management token, expecting success.
pub async fn call(method: reqwest::Method, base: &str, path: &str, body: Option<Value>) -> Value {
    let mut request = http()
        .request(method.clone(), format!("{base}{path}"))
        .header("X-Consul-Token", MANAGEMENT_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let answer = request.send().await.unwrap();
    let status = answer.status();
    let text = answer.text().await.unwrap();
    assert!(status.is_success(), "{method} {path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// An ACL policy with `rules` and a token bound to it (on the Consul at `base`).
pub struct Token {
    pub secret: String,
    policy_id: String,
    base: String,
}

impl Token {
    /// A new policy named after `name` (unique) with `rules`, and its token.
    pub async fn new(base: &str, name: &str, rules: &str) -> Self {
        let policy = call(
            reqwest::Method::PUT,
            base,
            "/v1/acl/policy",
            Some(json!({"Name": name, "Rules": rules})),
        )
        .await;
        let policy_id = policy["ID"].as_str().unwrap().to_owned();
        let token = call(
            reqwest::Method::PUT,
            base,
            "/v1/acl/token",
            Some(json!({"Description": name, "Policies": [{"ID": policy_id}]})),
        )
        .await;
        Self {
            secret: token["SecretID"].as_str().unwrap().to_owned(),
            policy_id,
            base: base.to_owned(),
        }
    }

    /// Changes what the token may do (at once: the lone server resolves tokens itself).
    pub async fn set_rules(&self, rules: &str) {
        let path = format!("/v1/acl/policy/{}", self.policy_id);
        let current = call(reqwest::Method::GET, &self.base, &path, None).await;
        call(
            reqwest::Method::PUT,
            &self.base,
            &path,
            Some(json!({"Name": current["Name"], "Rules": rules})),
        )
        .await;
    }
}

/// `GET /v1/health/service/<service>` of the zone tagged `tag`, as an operator reads it.
pub async fn health(base: &str, service: &str, tag: &str) -> Vec<Value> {
    let answer = http()
        .get(format!("{base}/v1/health/service/{service}"))
        .query(&[("filter", format!("\"{tag}\" in Service.Tags"))])
        .header("X-Consul-Token", MANAGEMENT_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{}", answer.status());
    answer.json().await.unwrap()
}

/// A TCP relay to a Consul: what a zone's configuration points at when its test cuts the zone off
/// ([`Relay::down`]: open connections are closed, new ones closed at once) and mends it.
pub struct Relay {
    pub url: String,
    up: Arc<watch::Sender<bool>>,
}

impl Relay {
    /// A relay on a free port to `target` (`host:port`), up.
    pub async fn to(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (up, _) = watch::channel(true);
        let up = Arc::new(up);
        let target = target.to_owned();
        let switch = up.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut state = switch.subscribe();
                if !*state.borrow() {
                    continue;
                }
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = state.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self { url, up }
    }

    pub fn down(&self) {
        self.up.send_replace(false);
    }

    pub fn up(&self) {
        self.up.send_replace(true);
    }
}

/// A Consul server of the test's own (`dev/infra consul up NAME PORT`), for a test that restarts
/// Consul without disturbing the one the others share; stopped and removed when dropped.
pub struct ExtraConsul {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// A client agent's: `--client HOST JOIN`.
    client: Vec<String>,
}

impl ExtraConsul {
    /// Started on three free consecutive ports (HTTP, server RPC, Serf LAN).
    pub fn start() -> Self {
        let extra = Self {
            name: format!("extra-{}", super::unique("").replace('_', "")),
            host: "127.0.0.1".into(),
            port: super::free_consecutive_ports(3),
            client: Vec::new(),
        };
        extra.infra(&["up"]);
        extra
    }

    /// A client agent joined to `server`: a second node of its datacenter, on loopback address
    /// `host` and the server's HTTP port (as every agent of a datacenter serves its API alike).
    pub fn client_of(server: &ExtraConsul, host: &str) -> Self {
        let extra = Self {
            name: format!("client-{}", super::unique("").replace('_', "")),
            host: host.into(),
            port: server.port,
            client: vec![
                "--client".into(),
                host.into(),
                format!("{}:{}", server.host, server.port + 2),
            ],
        };
        extra.infra(&["up"]);
        extra
    }

    /// `host:port` of its HTTP API.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address())
    }

    fn infra(&self, args: &[&str]) {
        let status = std::process::Command::new(super::repo_path("dev/infra"))
            .arg("consul")
            .args(args)
            .args([self.name.as_str(), &self.port.to_string()])
            .args(&self.client)
            .status()
            .unwrap();
        assert!(status.success(), "dev/infra consul {args:?} {}", self.name);
    }

    /// Stops it (SIGTERM: it leaves and persists its state) and starts it again on its data.
    pub fn restart(&self) {
        self.infra(&["down"]);
        self.infra(&["up"]);
    }
}

impl Drop for ExtraConsul {
    fn drop(&mut self) {
        let _ = std::process::Command::new(super::repo_path("dev/infra"))
            .args([
                "consul",
                "down",
                &self.name,
                &self.port.to_string(),
                "--purge",
            ])
            .status();
    }
}
