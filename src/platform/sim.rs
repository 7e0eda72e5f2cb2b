//! `mot platform-sim`: a dev tool that plays what cannot run here of one region's platform, per
//! zone, over the same HTTP APIs mot uses against the real products: Marathon (`/v2/apps`) and the
//! Mesos master state. Its tasks are registered as service instances in the zone's real Consul
//! (v1.16, run by `dev/infra`), as a scheduler's integration would: an app put to a zone's Marathon
//! gets tasks on hosts with ports, those tasks appear in the Mesos state and in Consul, and become
//! healthy after a configurable delay. Each instance carries a TTL check that the simulator passes
//! or fails as the task's health goes (and refreshes while it lives); a killed task is
//! deregistered; a task whose simulator died goes critical when its TTL runs out and Consul
//! deregisters it a minute later. A changed app is replaced as Marathon replaces it: the older
//! version's tasks keep running until every new task passes its checks.
//!
//! Zone `z` is served under `/z/marathon` and `/z/mesos`, as the topology's zone URLs say.
//! `/z/_sim/...` lets a test take a zone's scheduler down, kill a task, lose one (its agent
//! disconnects: Mesos reports it lost before Marathon and Consul notice), fail an app's health
//! checks, or fail only the tasks started from now on (a broken new version).

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::dev::Server;
use actix_web::{web, App as WebApp, HttpResponse, HttpServer};
use serde_json::json;

use super::marathon::{App, HealthCheckResult, Task, LABEL_DEPLOYMENT_ID};
use crate::config::{RegionConfig, ZoneConfig};

/// How the simulated platform behaves.
#[derive(Debug, Clone, Copy)]
pub struct SimOptions {
    /// Time from a task's start until its health checks pass.
    pub health_delay: Duration,
}

#[derive(Debug, Default)]
struct ZoneState {
    scheduler_down: bool,
    apps: BTreeMap<String, SimApp>,
    /// PUTs that changed an app (a repeated identical PUT changes nothing).
    changes: u64,
    /// PUTs received.
    puts: u64,
    /// PUTs that changed an app, by the deployment id it carried (`mot-deployment-id`): how
    /// often each deployment was launched in the zone.
    puts_by_deployment: BTreeMap<String, u64>,
    /// DELETEs that removed an app.
    deletes: u64,
    failing_health: BTreeSet<String>,
    /// Apps whose tasks started from now on fail their checks (a broken new version).
    failing_new_tasks: BTreeSet<String>,
}

#[derive(Debug, Clone)]
struct SimApp {
    definition: App,
    tasks: Vec<SimTask>,
}

#[derive(Debug, Clone)]
struct SimTask {
    id: String,
    host: String,
    port: u16,
    started: Instant,
    /// The app version it was started for.
    version: String,
    /// Started while its app's new tasks fail: never passes its checks.
    broken: bool,
    /// Its agent disconnected: Mesos reports it lost while Marathon and Consul still show it.
    lost: bool,
}

/// The simulated platform of one region.
#[derive(Clone)]
pub struct Platform {
    region: String,
    zones: Arc<Mutex<BTreeMap<String, ZoneState>>>,
    options: SimOptions,
    next_port: Arc<Mutex<u16>>,
    /// Each zone's configuration: where its Consul is, its tag and token.
    consul: Arc<BTreeMap<String, ZoneConfig>>,
}

impl Platform {
    /// A platform with `region`'s zones, all up and empty.
    pub fn new(region: &RegionConfig, options: SimOptions) -> Self {
        let zones = region
            .zones
            .iter()
            .map(|z| (z.name.to_string(), ZoneState::default()))
            .collect();
        Self {
            region: region.name.to_string(),
            zones: Arc::new(Mutex::new(zones)),
            options,
            next_port: Arc::new(Mutex::new(31000)),
            consul: Arc::new(
                region
                    .zones
                    .iter()
                    .map(|z| (z.name.to_string(), z.clone()))
                    .collect(),
            ),
        }
    }

    /// Registers in Consul with `token` rather than each zone's configured one (a scheduler's
    /// integration has credentials of its own).
    pub fn with_consul_token(self, token: &str) -> Self {
        self.with_each_zone(|zone| zone.consul_token = Some(crate::config::Secret::new(token)))
    }

    /// Registers the tasks on the Consul agent at `url` rather than each zone's configured one
    /// (the agent of the hosts the tasks run on, where that is another node of the datacenter).
    pub fn registering_on(self, url: &str) -> Self {
        self.with_each_zone(|zone| zone.consul = url.to_owned())
    }

    /// Every zone's Consul settings, as `change` leaves them.
    fn with_each_zone(mut self, change: impl Fn(&mut ZoneConfig)) -> Self {
        let mut zones = (*self.consul).clone();
        zones.values_mut().for_each(change);
        self.consul = Arc::new(zones);
        self
    }

    /// Every task of every zone as it should stand in Consul now.
    fn instances(&self) -> BTreeMap<String, Instance> {
        let mut zones = self.zones.lock().unwrap_or_else(|p| p.into_inner());
        let mut all = BTreeMap::new();
        for (zone, z) in zones.iter_mut() {
            self.end_finished_replacements(z);
            let scope = self.consul.get(zone).and_then(|c| c.consul_tag.clone());
            for (id, app) in &z.apps {
                let mut tags = service_tags(&app.definition);
                tags.extend(scope.clone());
                let mut meta = BTreeMap::new();
                if let Some(d) = app.definition.labels.get(LABEL_DEPLOYMENT_ID) {
                    meta.insert(LABEL_DEPLOYMENT_ID.to_owned(), d.clone());
                }
                for t in &app.tasks {
                    all.insert(
                        t.id.clone(),
                        Instance {
                            zone: zone.clone(),
                            service: id.trim_start_matches('/').to_owned(),
                            tags: tags.clone(),
                            address: t.host.clone(),
                            port: t.port,
                            meta: meta.clone(),
                            passing: self.healthy(z, id, t),
                        },
                    );
                }
            }
        }
        all
    }

    fn with_zone<T>(&self, zone: &str, f: impl FnOnce(&mut ZoneState) -> T) -> Option<T> {
        let mut zones = self.zones.lock().unwrap_or_else(|p| p.into_inner());
        zones.get_mut(zone).map(|z| {
            self.end_finished_replacements(z);
            f(z)
        })
    }

    /// Ends the replacements whose new tasks all pass, as time passes.
    fn end_finished_replacements(&self, z: &mut ZoneState) {
        // A replacement ends, as Marathon ends it, once every task of the new version passes:
        // only then are the older version's tasks killed.
        let mut finished = Vec::new();
        for (id, app) in &z.apps {
            let current = app.definition.version.as_deref().unwrap_or_default();
            let new: Vec<&SimTask> = app.tasks.iter().filter(|t| t.version == current).collect();
            let older = app.tasks.len() - new.len();
            if older > 0
                && new.len() as u32 >= app.definition.instances
                && new.iter().all(|t| self.healthy(z, id, t))
            {
                finished.push(id.clone());
            }
        }
        for id in finished {
            if let Some(app) = z.apps.get_mut(&id) {
                let current = app.definition.version.clone().unwrap_or_default();
                app.tasks.retain(|t| t.version == current);
            }
        }
    }

    fn healthy(&self, zone: &ZoneState, app: &str, task: &SimTask) -> bool {
        !zone.failing_health.contains(app)
            && !task.broken
            && task.started.elapsed() >= self.options.health_delay
    }

    fn app_view(&self, zone: &ZoneState, app: &SimApp) -> App {
        let mut view = app.definition.clone();
        view.tasks = app
            .tasks
            .iter()
            .map(|t| Task {
                id: t.id.clone(),
                app_id: view.id.clone(),
                host: t.host.clone(),
                ports: vec![t.port],
                state: "TASK_RUNNING".into(),
                started_at: None,
                version: Some(t.version.clone()),
                health_check_results: vec![HealthCheckResult {
                    alive: self.healthy(zone, &view.id, t),
                    task_id: t.id.clone(),
                }],
            })
            .collect();
        view.tasks_running = Some(view.tasks.len() as u32);
        view.tasks_healthy = Some(
            view.tasks
                .iter()
                .filter(|t| t.health_check_results[0].alive)
                .count() as u32,
        );
        view
    }

    fn put_app(&self, zone: &str, id: &str, mut app: App) -> HttpResponse {
        let id = format!("/{}", id.trim_start_matches('/'));
        app.id = id.clone();
        app.version = None;
        let region = self.region.clone();
        let next_port = self.next_port.clone();
        let answer = self.with_zone(zone, |z| {
            z.puts += 1;
            if z.scheduler_down {
                return HttpResponse::ServiceUnavailable()
                    .json(json!({"message": "Marathon is not available"}));
            }
            if let Some(existing) = z.apps.get(&id) {
                let mut same = existing.definition.clone();
                same.version = None;
                if same == app {
                    let version = existing.definition.version.clone().unwrap_or_default();
                    return HttpResponse::Ok().json(
                        json!({"version": version, "deploymentId": format!("noop-{version}")}),
                    );
                }
            }
            z.changes += 1;
            if let Some(deployment) = app.labels.get(super::marathon::LABEL_DEPLOYMENT_ID) {
                *z.puts_by_deployment.entry(deployment.clone()).or_default() += 1;
            }
            let version = format!("2026-01-01T00:00:{:02}.{:03}Z", z.changes % 60, z.changes);
            let created = !z.apps.contains_key(&id);
            let broken = z.failing_new_tasks.contains(&id);
            // Like Marathon's rolling replacement: the running tasks stay until the new
            // version's pass their checks.
            let older: Vec<SimTask> = z.apps.get(&id).map(|a| a.tasks.clone()).unwrap_or_default();
            let tasks = (0..app.instances)
                .map(|n| {
                    let mut port = next_port.lock().unwrap_or_else(|p| p.into_inner());
                    *port = port.wrapping_add(1).max(31000);
                    SimTask {
                        id: format!(
                            "{}.{}-{}-{}",
                            id.trim_start_matches('/'),
                            region,
                            zone,
                            uuid::Uuid::new_v4()
                        ),
                        host: format!("{region}-{zone}-agent-{}", n % 3 + 1),
                        port: *port,
                        started: Instant::now(),
                        version: version.clone(),
                        broken,
                        lost: false,
                    }
                })
                .chain(older)
                .collect();
            app.version = Some(version.clone());
            z.apps.insert(
                id.clone(),
                SimApp {
                    definition: app.clone(),
                    tasks,
                },
            );
            let body =
                json!({"version": version, "deploymentId": uuid::Uuid::new_v4().to_string()});
            if created {
                HttpResponse::Created().json(body)
            } else {
                HttpResponse::Ok().json(body)
            }
        });
        answer.unwrap_or_else(|| {
            HttpResponse::NotFound().json(json!({"message": format!("no zone {zone}")}))
        })
    }

    /// The API server on `listener`, and the task that keeps the zones' Consul in step with the
    /// tasks (it ends once the server and every other copy of this platform are gone).
    pub fn server(self, listener: TcpListener) -> std::io::Result<Server> {
        self.server_tls(listener, None)
    }

    /// [`Self::server`], serving HTTPS with `tls` (zones at `https://` URLs).
    pub fn server_tls(
        self,
        listener: TcpListener,
        tls: Option<rustls::ServerConfig>,
    ) -> std::io::Result<Server> {
        actix_web::rt::spawn(keep_consul(self.clone()));
        let data = web::Data::new(self);
        let server = HttpServer::new(move || {
            WebApp::new()
                .app_data(data.clone())
                .app_data(web::JsonConfig::default().limit(1 << 20))
                .route("/{zone}/marathon/v2/apps", web::get().to(list_apps))
                .route("/{zone}/marathon/v2/apps/{id}", web::get().to(get_app))
                .route("/{zone}/marathon/v2/apps/{id}", web::put().to(put_app))
                .route(
                    "/{zone}/marathon/v2/apps/{id}",
                    web::delete().to(delete_app),
                )
                .route("/{zone}/mesos/master/state", web::get().to(mesos_state))
                .route(
                    "/{zone}/_sim/scheduler/{state}",
                    web::post().to(set_scheduler),
                )
                .route(
                    "/{zone}/_sim/apps/{id}/health/{state}",
                    web::post().to(set_health),
                )
                .route("/{zone}/_sim/tasks/{task}/kill", web::post().to(kill_task))
                .route("/{zone}/_sim/tasks/{task}/lose", web::post().to(lose_task))
                .route("/{zone}/_sim/stats", web::get().to(stats))
        })
        .workers(1)
        // A loaded test machine may take seconds between connecting and sending: the default
        // 5 s would answer 408 under the client's request (hyper's UnexpectedMessage).
        .client_request_timeout(std::time::Duration::from_secs(60))
        .disable_signals();
        let server = match tls {
            Some(tls) => server.listen_rustls_0_23(listener, tls)?,
            None => server.listen(listener)?,
        };
        Ok(server.run())
    }
}

type P = web::Data<Platform>;

/// A task as the simulator registers it in its zone's Consul.
#[derive(Debug, Clone, PartialEq)]
struct Instance {
    zone: String,
    service: String,
    tags: Vec<String>,
    address: String,
    port: u16,
    meta: BTreeMap<String, String>,
    passing: bool,
}

/// How often the simulator looks for changes to bring to Consul.
const CONSUL_TICK: Duration = Duration::from_millis(50);
/// The TTL of an instance's check: a simulator that died leaves its instances critical after it,
/// and Consul deregisters them a minute later.
const CHECK_TTL: &str = "30s";
/// How often a living instance's check is passed (or failed) again, well within its TTL.
const CHECK_REFRESH: Duration = Duration::from_secs(10);

/// A zone's Consul agent API, with the zone's token.
fn consul_call(http: &reqwest::Client, zone: &ZoneConfig, path: &str) -> reqwest::RequestBuilder {
    let request = http.put(format!("{}{path}", zone.consul.trim_end_matches('/')));
    match &zone.consul_token {
        Some(token) => request.header("X-Consul-Token", token.expose()),
        None => request,
    }
}

/// The check's status and output for a task's health.
fn check_status(passing: bool) -> (&'static str, &'static str) {
    if passing {
        ("passing", "HTTP GET: 200 OK")
    } else {
        ("critical", "HTTP GET: connection refused")
    }
}

/// Consul's answer as a result: `Ok(true)` on success, `Ok(false)` on 404, `Err` otherwise.
async fn answered(call: reqwest::RequestBuilder) -> Result<bool, String> {
    let answer = call.send().await.map_err(|e| e.to_string())?;
    match answer.status() {
        s if s.is_success() => Ok(true),
        reqwest::StatusCode::NOT_FOUND => Ok(false),
        s => Err(format!(
            "consul answered {s}: {}",
            answer.text().await.unwrap_or_default()
        )),
    }
}

/// Keeps the zones' Consul agents in step with the tasks: registers a new task (with its TTL
/// check), passes or fails each check as its task's health goes and refreshes it within its TTL,
/// deregisters tasks that are gone. A Consul that does not answer is tried again next round;
/// nothing is taken as registered until Consul said so. Ends when the platform is dropped.
async fn keep_consul(platform: Platform) {
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(http) => http,
        Err(e) => {
            tracing::error!(error = %e, "platform-sim: no HTTP client for Consul");
            return;
        }
    };
    let mut registered: BTreeMap<String, (Instance, Instant)> = BTreeMap::new();
    let mut last_error = String::new();
    loop {
        // The last copy: the server and whoever else held the platform are gone.
        if Arc::strong_count(&platform.zones) == 1 {
            return;
        }
        let wanted = platform.instances();
        let mut errors = Vec::new();
        for (id, instance) in &wanted {
            let Some(zone) = platform.consul.get(&instance.zone) else {
                continue;
            };
            let (status, output) = check_status(instance.passing);
            let due = match registered.get(id) {
                None => {
                    let registration = json!({
                        "ID": id, "Name": instance.service, "Tags": instance.tags,
                        "Address": instance.address, "Port": instance.port, "Meta": instance.meta,
                        "Check": {
                            "CheckID": format!("service:{id}"), "Name": "marathon health",
                            "TTL": CHECK_TTL, "Status": status,
                            "DeregisterCriticalServiceAfter": "1m",
                        },
                    });
                    match answered(
                        consul_call(&http, zone, "/v1/agent/service/register").json(&registration),
                    )
                    .await
                    {
                        Ok(true) => true,
                        Ok(false) => false,
                        Err(e) => {
                            errors.push(e);
                            false
                        }
                    }
                }
                Some((last, refreshed)) => {
                    last.passing != instance.passing || refreshed.elapsed() >= CHECK_REFRESH
                }
            };
            if !due {
                continue;
            }
            let update = consul_call(&http, zone, &format!("/v1/agent/check/update/service:{id}"))
                .json(&json!({"Status": status, "Output": output}));
            match answered(update).await {
                Ok(true) => {
                    registered.insert(id.clone(), (instance.clone(), Instant::now()));
                }
                // The agent lost it (its state was wiped): registered again next round.
                Ok(false) => {
                    registered.remove(id);
                }
                Err(e) => errors.push(e),
            }
        }
        let gone: Vec<(String, String)> = registered
            .iter()
            .filter(|(id, _)| !wanted.contains_key(*id))
            .map(|(id, (instance, _))| (id.clone(), instance.zone.clone()))
            .collect();
        for (id, zone) in gone {
            let Some(config) = platform.consul.get(&zone) else {
                continue;
            };
            let call = consul_call(&http, config, &format!("/v1/agent/service/deregister/{id}"));
            match answered(call).await {
                Ok(_) => {
                    registered.remove(&id);
                }
                Err(e) => errors.push(e),
            }
        }
        let error = errors.into_iter().next().unwrap_or_default();
        if !error.is_empty() && error != last_error {
            tracing::warn!(region = %platform.region, %error, "platform-sim: consul did not take a registration; retrying");
        }
        last_error = error;
        tokio::time::sleep(CONSUL_TICK).await;
    }
}

fn no_zone(zone: &str) -> HttpResponse {
    HttpResponse::NotFound().json(json!({"message": format!("no zone {zone}")}))
}

async fn list_apps(p: P, path: web::Path<String>) -> HttpResponse {
    let zone = path.into_inner();
    p.with_zone(&zone, |z| {
        if z.scheduler_down {
            return HttpResponse::ServiceUnavailable()
                .json(json!({"message": "Marathon is not available"}));
        }
        let apps: Vec<App> = z.apps.values().map(|a| p.app_view(z, a)).collect();
        HttpResponse::Ok().json(json!({ "apps": apps }))
    })
    .unwrap_or_else(|| no_zone(&zone))
}

async fn get_app(p: P, path: web::Path<(String, String)>) -> HttpResponse {
    let (zone, id) = path.into_inner();
    p.with_zone(&zone, |z| {
        if z.scheduler_down {
            return HttpResponse::ServiceUnavailable()
                .json(json!({"message": "Marathon is not available"}));
        }
        match z.apps.get(&format!("/{id}")) {
            Some(app) => HttpResponse::Ok().json(json!({ "app": p.app_view(z, app) })),
            None => HttpResponse::NotFound()
                .json(json!({"message": format!("App '/{id}' does not exist")})),
        }
    })
    .unwrap_or_else(|| no_zone(&zone))
}

async fn put_app(p: P, path: web::Path<(String, String)>, body: web::Json<App>) -> HttpResponse {
    let (zone, id) = path.into_inner();
    p.put_app(&zone, &id, body.into_inner())
}

async fn delete_app(p: P, path: web::Path<(String, String)>) -> HttpResponse {
    let (zone, id) = path.into_inner();
    let id = format!("/{}", id.trim_start_matches('/'));
    p.with_zone(&zone, |z| {
        if z.scheduler_down {
            return HttpResponse::ServiceUnavailable()
                .json(json!({"message": "Marathon is not available"}));
        }
        match z.apps.remove(&id) {
            Some(_) => {
                z.changes += 1;
                z.deletes += 1;
                HttpResponse::Ok().json(
                    json!({"version": "deleted", "deploymentId": uuid::Uuid::new_v4().to_string()}),
                )
            }
            None => HttpResponse::NotFound()
                .json(json!({"message": format!("App '{id}' does not exist")})),
        }
    })
    .unwrap_or_else(|| no_zone(&zone))
}

async fn mesos_state(p: P, path: web::Path<String>) -> HttpResponse {
    let zone = path.into_inner();
    p.with_zone(&zone, |z| {
        let mut slaves = BTreeSet::new();
        let tasks: Vec<_> = z
            .apps
            .values()
            .flat_map(|a| a.tasks.iter().map(move |t| (a, t)))
            .map(|(a, t)| {
                slaves.insert(t.host.clone());
                json!({
                    "id": t.id, "name": a.definition.id.trim_start_matches('/'), "framework_id": "marathon",
                    "slave_id": t.host, "state": if t.lost { "TASK_LOST" } else { "TASK_RUNNING" },
                    "statuses": mesos_statuses(t),
                    "resources": {"cpus": a.definition.cpus, "mem": a.definition.mem, "ports": format!("[{}-{}]", t.port, t.port)},
                    "labels": a.definition.labels.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
                })
            })
            .collect();
        let slaves: Vec<_> = slaves.iter().map(|h| json!({"id": h, "hostname": h, "active": true})).collect();
        HttpResponse::Ok().json(json!({
            "cluster": format!("{}-{}", p.region, zone),
            "frameworks": [{"id": "marathon", "name": "marathon", "active": !z.scheduler_down, "tasks": tasks}],
            "slaves": slaves,
        }))
    })
    .unwrap_or_else(|| no_zone(&zone))
}

/// A task's status updates as the master keeps them: running, then lost if its agent went.
fn mesos_statuses(t: &SimTask) -> Vec<serde_json::Value> {
    let mut statuses = vec![json!({"state": "TASK_RUNNING", "timestamp": 1.0})];
    if t.lost {
        statuses.push(json!({
            "state": "TASK_LOST", "timestamp": 2.0, "reason": "REASON_AGENT_DISCONNECTED",
            "message": format!("Agent {} disconnected", t.host),
        }));
    }
    statuses
}

fn service_tags(app: &App) -> Vec<String> {
    let mut tags = vec![format!(
        "version={}",
        app.labels
            .get("mot-app-version")
            .cloned()
            .unwrap_or_default()
    )];
    tags.push("mot".into());
    tags
}

async fn set_scheduler(p: P, path: web::Path<(String, String)>) -> HttpResponse {
    let (zone, state) = path.into_inner();
    p.with_zone(&zone, |z| {
        z.scheduler_down = state == "down";
        HttpResponse::NoContent().finish()
    })
    .unwrap_or_else(|| no_zone(&zone))
}

async fn set_health(p: P, path: web::Path<(String, String, String)>) -> HttpResponse {
    let (zone, id, state) = path.into_inner();
    p.with_zone(&zone, |z| {
        let id = format!("/{id}");
        match state.as_str() {
            "failing" => {
                z.failing_health.insert(id);
            }
            "new-tasks-failing" => {
                z.failing_new_tasks.insert(id);
            }
            _ => {
                z.failing_health.remove(&id);
                z.failing_new_tasks.remove(&id);
                for task in z.apps.get_mut(&id).into_iter().flat_map(|a| &mut a.tasks) {
                    task.broken = false;
                }
            }
        }
        HttpResponse::NoContent().finish()
    })
    .unwrap_or_else(|| no_zone(&zone))
}

/// Kills a task; like Marathon, the zone starts a replacement (healthy after the delay).
async fn kill_task(p: P, path: web::Path<(String, String)>) -> HttpResponse {
    let (zone, task) = path.into_inner();
    let region = p.region.clone();
    let next_port = p.next_port.clone();
    p.with_zone(&zone, |z| {
        for app in z.apps.values_mut() {
            if let Some(i) = app.tasks.iter().position(|t| t.id == task) {
                let killed = app.tasks.remove(i);
                let mut port = next_port.lock().unwrap_or_else(|p| p.into_inner());
                *port = port.wrapping_add(1).max(31000);
                app.tasks.push(SimTask {
                    id: format!(
                        "{}.{}-{}-{}",
                        app.definition.id.trim_start_matches('/'),
                        region,
                        zone,
                        uuid::Uuid::new_v4()
                    ),
                    host: killed.host,
                    port: *port,
                    started: Instant::now(),
                    version: app.definition.version.clone().unwrap_or_default(),
                    broken: z.failing_new_tasks.contains(&app.definition.id),
                    lost: false,
                });
                return HttpResponse::NoContent().finish();
            }
        }
        HttpResponse::NotFound().json(json!({"message": format!("no task {task}")}))
    })
    .unwrap_or_else(|| no_zone(&zone))
}

/// The task's agent disconnects: Mesos reports the task lost; Marathon and Consul, slower to
/// notice, still show it running and passing.
async fn lose_task(p: P, path: web::Path<(String, String)>) -> HttpResponse {
    let (zone, task) = path.into_inner();
    p.with_zone(&zone, |z| {
        match z
            .apps
            .values_mut()
            .flat_map(|a| &mut a.tasks)
            .find(|t| t.id == task)
        {
            Some(t) => {
                t.lost = true;
                HttpResponse::NoContent().finish()
            }
            None => HttpResponse::NotFound().json(json!({"message": format!("no task {task}")})),
        }
    })
    .unwrap_or_else(|| no_zone(&zone))
}

async fn stats(p: P, path: web::Path<String>) -> HttpResponse {
    let zone = path.into_inner();
    p.with_zone(&zone, |z| {
        HttpResponse::Ok().json(json!({"puts": z.puts, "changes": z.changes, "puts_by_deployment": z.puts_by_deployment, "deletes": z.deletes, "apps": z.apps.len()}))
    })
    .unwrap_or_else(|| no_zone(&zone))
}

/// The `host:port` every zone's Marathon and Mesos of `region` are served on; they must share one.
pub fn listen_address(region: &RegionConfig) -> Result<String, String> {
    let mut addresses = BTreeSet::new();
    for zone in &region.zones {
        for url in [&zone.marathon, &zone.mesos] {
            let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
            addresses.insert(rest.split('/').next().unwrap_or(rest).to_owned());
        }
    }
    match addresses.len() {
        1 => Ok(addresses.into_iter().next().unwrap_or_default()),
        0 => Err(format!("region {} has no zones", region.name)),
        _ => Err(format!(
            "the zones of {} are on several addresses ({}); the simulator serves one region on one",
            region.name,
            addresses.into_iter().collect::<Vec<_>>().join(", ")
        )),
    }
}
