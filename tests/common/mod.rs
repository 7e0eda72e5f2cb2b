//! Shared by the integration tests: the dev topology, unique names, and the running servers.
//!
//! Tests talk to the real Kafka clusters, Cassandra and Consul that `dev/infra up` started
//! (dev/test starts them). They never restart servers; they isolate themselves by unique topic names,
//! regions and keyspaces.
#![allow(dead_code)]

pub mod api;
pub mod consul;
pub mod flow;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use mot::config::Config;
use serde_json::Value;

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The dev topology, as `dev/run` uses it.
pub fn dev_config() -> Config {
    Config::load(&repo_path("dev/mot.toml")).expect("dev/mot.toml is valid")
}

/// A name no other test (nor an earlier run) uses: `prefix_<pid>_<n>_<nanos>`, lowercase.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// dev/mot.toml with some text replaced, written to a temporary file.
pub fn dev_toml_with(replacements: &[(&str, &str)]) -> tempfile::NamedTempFile {
    let mut text = std::fs::read_to_string(repo_path("dev/mot.toml")).unwrap();
    for (from, to) in replacements {
        assert!(text.contains(from), "dev/mot.toml has no `{from}`");
        text = text.replace(from, to);
    }
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

/// The dev principals' API tokens, from dev/tokens.env (dev/infra makes it; the dev config's
/// tokens file holds their hashes).
pub struct DevTokens {
    /// `dev-admin`: admin, team platform, every environment.
    pub admin: String,
    /// `dev-checkout`: deployer, team checkout, test and production.
    pub checkout: String,
    /// `dev-checkout-nonprod`: deployer, team checkout, test only.
    pub nonprod: String,
    /// `dev-viewer`: viewer of every team.
    pub viewer: String,
}

pub fn dev_tokens() -> &'static DevTokens {
    static TOKENS: std::sync::OnceLock<DevTokens> = std::sync::OnceLock::new();
    TOKENS.get_or_init(|| {
        let text = std::fs::read_to_string(repo_path("dev/tokens.env"))
            .expect("dev/tokens.env: run dev/infra tokens (dev/test and dev/run do)");
        let var = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("dev/tokens.env has no {name}"))
                .trim()
                .to_owned()
        };
        DevTokens {
            admin: var("MOT_TOKEN_ADMIN"),
            checkout: var("MOT_TOKEN_CHECKOUT"),
            nonprod: var("MOT_TOKEN_NONPROD"),
            viewer: var("MOT_TOKEN_VIEWER"),
        }
    })
}

/// An HTTP client that sends `Authorization: Bearer <token>` on every request.
pub fn client_as(token: &str) -> reqwest::ClientBuilder {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    reqwest::Client::builder().default_headers(headers)
}

/// An HTTP client of the dev admin: what the tests that are not about access use.
pub fn api_client() -> reqwest::ClientBuilder {
    client_as(&dev_tokens().admin)
}

/// A certificate authority and a server certificate it signed for `127.0.0.1` and `localhost`
/// (P-256, made with the openssl command line), in a directory of the test's own.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    /// The CA's certificate (PEM): what clients trust.
    pub ca: PathBuf,
    /// The server's certificate and key (PEM).
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestPki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("openssl (dev/setup installs it)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"],
                &ec[..],
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=mot-test-ca",
                ],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req"],
                &ec[..],
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=localhost",
                ],
            ]
            .concat(),
        );
        std::fs::write(
            path("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ]);
        Self {
            ca: path("ca.pem"),
            cert: path("server.pem"),
            key: path("server.key"),
            dir,
        }
    }

    /// The server's TLS settings.
    pub fn server_config(&self) -> rustls::ServerConfig {
        mot::web::tls_server_config(&mot::config::WebTlsConfig {
            cert_file: self.cert.clone(),
            key_file: self.key.clone(),
        })
        .unwrap()
    }

    /// The CA as reqwest trusts it.
    pub fn ca_certificate(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(&std::fs::read(&self.ca).unwrap()).unwrap()
    }
}

/// Sends the request `build` makes as a client should, again when the answer says to: a 503
/// (Cassandra or Kafka did not answer in time on a loaded machine) after its Retry-After, a 408
/// or a connection the server closed under the request (an API server just stopped, a machine
/// busy restarting every agent) at once.
pub async fn send_retrying(
    what: &str,
    build: impl Fn() -> reqwest::RequestBuilder,
) -> reqwest::Response {
    let mut attempts = 0;
    loop {
        match build().send().await {
            Ok(resp) if resp.status().as_u16() == 408 && attempts < 3 => attempts += 1,
            Ok(resp) if resp.status().as_u16() == 503 && attempts < 5 => {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Ok(resp) => break resp,
            Err(e) if attempts < 3 && (e.is_request() || e.is_connect()) => attempts += 1,
            Err(e) => panic!("{what}: {e:?}"),
        }
    }
}

/// The `mot` binary built for this test run.
pub fn mot_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mot")
}

/// A production region name no other test uses: `production-t<unique digits>`.
pub fn unique_region() -> String {
    format!("production-t{}", unique("").replace('_', ""))
}

/// A topology of the dev clusters: a central region of its own plus `regions` (name, home
/// cluster), each routing its regional topics to the central cluster with `carrier`.
pub fn topology_toml(regions: &[(&str, &str)], carrier: &str) -> String {
    let dev = dev_config();
    // The central region is this topology's own (on the central cluster), so the consumer groups
    // its agents share are too.
    let central = format!("production-c{}", unique("").replace('_', ""));
    let mut text = format!(
        "[auth]\ntokens_file = \".mot/auth/tokens.toml\"\n\n\
         [secrets]\nkeyring_file = \".mot/auth/keyring\"\n\n\
         [kafka]\npartitions = 2\nreplication_factor = 1\n\n[topology]\ncentral = \"{central}\"\n\n\
         [[regions]]\nname = \"{central}\"\ncluster = \"production-us-east-1\"\n",
    );
    // The dev servers' login and TLS (keyspace `mot`, as the tests' replacements expect).
    let mut cassandra = dev.cassandra.clone();
    cassandra.replication_factor = 1;
    text.push('\n');
    text.push_str(&cassandra.to_toml());
    for c in &dev.clusters {
        text.push('\n');
        text.push_str(&c.to_toml());
    }
    for (region, home) in regions {
        text.push_str(&format!(
            "\n[[regions]]\nname = \"{region}\"\ncluster = \"{home}\"\n{}\n",
            zones_toml(region, &["a", "b"], "http://127.0.0.1:1")
        ));
    }
    let mut homes: Vec<&str> = regions
        .iter()
        .map(|(_, h)| *h)
        .filter(|h| *h != "production-us-east-1")
        .collect();
    homes.sort();
    homes.dedup();
    for home in homes {
        text.push_str(&format!(
            "\n[[routes]]\nfrom = \"{home}\"\nto = \"production-us-east-1\"\n\
             topics = [\"mot-deployment-complete-events\", \"mot-instance-state-change\", \"mot-deployment-state-change\"]\n\
             carrier = \"{carrier}\"\n"
        ));
    }
    text
}

/// Waits until `condition` holds, up to `secs` seconds; panics with `what` otherwise.
pub async fn eventually(secs: u64, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Sends mot's logs to the test's captured output (shown when a test fails).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,librdkafka=warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// `zones = [...]` of `region` for `names`, each zone's Marathon and Mesos under `base/<zone>/`,
/// its instances in the shared Consul under the tag `mot-zone=<region>/<zone>`.
pub fn zones_toml(region: &str, names: &[&str], base: &str) -> String {
    let zones: Vec<String> = names
        .iter()
        .map(|z| format!("{{ name = \"{z}\", marathon = \"{base}/{z}/marathon\", mesos = \"{base}/{z}/mesos\", consul = \"{}\", consul_tag = \"mot-zone={region}/{z}\", consul_token = \"{}\" }}", consul::URL, consul::MANAGEMENT_TOKEN))
        .collect();
    format!("zones = [{}]", zones.join(", "))
}

/// Connects to the configured Cassandra and applies mot's migrations to the configured keyspace,
/// as `mot migrate` does.
pub async fn migrated(config: &Config) {
    let session = mot::store::connect(&config.cassandra).await.unwrap();
    let migrations = mot::store::migrate::Migration::embedded().unwrap();
    mot::store::migrate::migrate(&session, &config.cassandra, &migrations)
        .await
        .unwrap();
}

/// Drops its keyspace when dropped: a test's tables do not outlive it (hundreds of tables left
/// by earlier tests fill Cassandra's heap).
pub struct DropKeyspace(pub mot::config::CassandraConfig);

impl Drop for DropKeyspace {
    fn drop(&mut self) {
        let config = self.0.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(session) = mot::store::connect(&config).await {
                    let _ = session
                        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {}", config.keyspace), ())
                        .await;
                }
            });
        })
        .join();
    }
}

/// Deletes consumer `groups` on `cluster` (their members must have left): the next consumer of
/// each starts from the beginning, as a reset to the earliest offsets does.
pub async fn delete_consumer_groups(cluster: &mot::config::ClusterConfig, groups: &[String]) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> =
        mot::topics::clients::base_config(cluster).create().unwrap();
    let names: Vec<&str> = groups.iter().map(String::as_str).collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let results = admin
            .delete_groups(&names, &AdminOptions::new())
            .await
            .unwrap();
        let waiting: Vec<String> = results
            .into_iter()
            .filter_map(|r| match r {
                Err((group, rdkafka::types::RDKafkaErrorCode::NonEmptyGroup)) => Some(group),
                _ => None,
            })
            .collect();
        if waiting.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "groups still have members: {waiting:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// An extra single-node Kafka cluster, stopped and removed when dropped.
pub struct ExtraKafka {
    pub name: String,
    pub bootstrap: String,
}

impl ExtraKafka {
    /// A cluster of a unique name on two free ports; not started yet.
    pub fn new() -> Self {
        Self {
            name: format!("extra-{}", unique("").replace('_', "")),
            bootstrap: format!("127.0.0.1:{}", free_port_pair()),
        }
    }

    fn infra(&self, args: &[&str]) {
        let status = std::process::Command::new(repo_path("dev/infra"))
            .args(["kafka"])
            .args(args)
            .args([self.name.as_str(), self.bootstrap.as_str()])
            .status()
            .unwrap();
        assert!(status.success(), "dev/infra kafka {args:?} {}", self.name);
    }

    pub fn start(&self) {
        self.infra(&["up"]);
    }

    pub fn stop(&self) {
        self.infra(&["down"]);
    }
}

impl Drop for ExtraKafka {
    fn drop(&mut self) {
        let _ = std::process::Command::new(repo_path("dev/infra"))
            .args(["kafka", "down", &self.name, &self.bootstrap, "--purge"])
            .status();
    }
}

/// A port nothing listens on now (the listener that found it is closed again).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Two free consecutive ports (the broker's and its controller's), below the kernel's ephemeral
/// range: a cluster that is stopped and started again must get its ports back, and while it is
/// down every client's reconnection attempt takes an ephemeral port, which could be one of them.
pub fn free_port_pair() -> u16 {
    free_consecutive_ports(2)
}

/// `n` free consecutive ports below the kernel's ephemeral range (see [`free_port_pair`]);
/// answers the first.
pub fn free_consecutive_ports(n: u16) -> u16 {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10000u16, ephemeral_low.saturating_sub(2).max(10002));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos() as u64
        ^ u64::from(std::process::id());
    for attempt in 0..200u64 {
        let port = low
            + ((seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(attempt * 7919))
                % u64::from(high - low)) as u16;
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if (port..port + n).all(free) {
            return port;
        }
    }
    panic!("no {n} free consecutive ports");
}

/// A `mot run` child process, killed when dropped (a failed test leaves none behind).
pub struct MotProcess(Option<Child>);

impl std::ops::Deref for MotProcess {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("running")
    }
}

impl std::ops::DerefMut for MotProcess {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("running")
    }
}

impl Drop for MotProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `mot run --config CONFIG` as a child process, its output discarded.
pub fn spawn_mot(config: &Path) -> MotProcess {
    spawn_mot_logging_to(config, Stdio::null())
}

/// `mot run --config CONFIG` as a child process, its logs (stderr) to `logs`.
pub fn spawn_mot_logging_to(config: &Path, logs: impl Into<Stdio>) -> MotProcess {
    MotProcess(Some(
        Command::new(mot_bin())
            .args(["run", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(logs)
            .spawn()
            .unwrap(),
    ))
}

/// Waits until `mot run` answers `/healthz` (start-up ensures topics; brokers take a while).
pub async fn wait_healthz(http: &reqwest::Client, url: &str, child: &mut Child) {
    for _ in 0..1200 {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("mot run exited early with {status}");
        }
        if http.get(format!("{url}/healthz")).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("mot run never answered /healthz");
}

/// SIGKILL, as a crash: nothing is drained, committed or flushed.
pub async fn sigkill(mut process: MotProcess) {
    let mut child = process.0.take().expect("running");
    child.kill().unwrap();
    tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
}

/// SIGTERM, then the exit, which must be 0 (a graceful stop).
pub async fn sigterm_and_wait(mut process: MotProcess) {
    let mut child = process.0.take().expect("running");
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0), "a graceful stop exits 0");
}

/// `/readyz`: its status and body, or None when it did not answer.
async fn readyz(http: &reqwest::Client, url: &str) -> Option<(u16, Value)> {
    let resp = http.get(format!("{url}/readyz")).send().await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.json().await.ok()?))
}

/// The check named `name` in a `/readyz` body.
pub fn readyz_check<'a>(body: &'a Value, name: &str) -> Option<&'a Value> {
    body["checks"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

/// Polls `/readyz` until `wanted` holds for its answer; panics with the last answer otherwise.
pub async fn readyz_until(
    http: &reqwest::Client,
    url: &str,
    secs: u64,
    what: &str,
    wanted: impl Fn(u16, &Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    let mut last = None;
    loop {
        if let Some((status, body)) = readyz(http, url).await {
            if wanted(status, &body) {
                return body;
            }
            last = Some((status, body));
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for /readyz: {what}; last answer: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
