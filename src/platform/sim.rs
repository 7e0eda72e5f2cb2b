//! `mot platform-sim`: a dev tool that plays one region's platform, per zone, over the same HTTP
//! APIs mot uses against the real products: Marathon (`/v2/apps`), the Mesos master state and
//! Consul's catalog and health. The three agree: an app put to a zone's Marathon gets tasks on
//! hosts with ports, those tasks appear in the Mesos state and as Consul service instances, and
//! become healthy after a configurable delay. A changed app is replaced as Marathon replaces it:
//! the older version's tasks keep running until every new task passes its checks.
//!
//! Zone `z` is served under `/z/marathon`, `/z/mesos` and `/z/consul`, as the topology's zone
//! URLs say. `/z/_sim/...` lets a test take a zone's scheduler or Consul down, kill a task, lose
//! one (its agent disconnects: Mesos reports it lost before Marathon and Consul notice), fail an
//! app's health checks, or fail only the tasks started from now on (a broken new version). This is the one simulator mot ships: those platforms cannot run here.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::dev::Server;
use actix_web::{web, App as WebApp, HttpResponse, HttpServer};
use serde_json::json;

use super::marathon::{App, HealthCheckResult, Task, LABEL_DEPLOYMENT_ID};
use crate::config::RegionConfig;

/// How the simulated platform behaves.
#[derive(Debug, Clone, Copy)]
pub struct SimOptions {
    /// Time from a task's start until its health checks pass.
    pub health_delay: Duration,
}

#[derive(Debug, Default)]
struct ZoneState {
    scheduler_down: bool,
    consul_down: bool,
    /// Consul's ACLs deny mot's token `service:write`: maintenance changes are refused (403).
    consul_denies_writes: bool,
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
    /// Consul's index: bumps on every change, including a task's checks starting to pass.
    index: u64,
    /// Reads of `/v1/health/service/<s>` (what a poller pays per zone and service).
    consul_reads: u64,
    /// Tasks whose health delay has passed (each counted once in the index).
    seen_healthy: BTreeSet<String>,
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
    /// Consul maintenance mode (traffic off), with its reason.
    maintenance: Option<String>,
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
        }
    }

    fn with_zone<T>(&self, zone: &str, f: impl FnOnce(&mut ZoneState) -> T) -> Option<T> {
        let mut zones = self.zones.lock().unwrap_or_else(|p| p.into_inner());
        zones.get_mut(zone).map(|z| {
            self.count_health_transitions(z);
            f(z)
        })
    }

    /// Bumps the zone's index once for each task whose health delay has passed since last
    /// looked, so Consul blocking queries wake up when checks start passing, as they do on a
    /// real Consul.
    fn count_health_transitions(&self, z: &mut ZoneState) {
        let newly: Vec<String> = z
            .apps
            .values()
            .flat_map(|a| &a.tasks)
            .filter(|t| {
                t.started.elapsed() >= self.options.health_delay && !z.seen_healthy.contains(&t.id)
            })
            .map(|t| t.id.clone())
            .collect();
        for id in newly {
            z.seen_healthy.insert(id);
            z.index += 1;
        }
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
                z.index += 1;
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
            z.index += 1;
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
                        maintenance: None,
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

    /// The API server on `listener`.
    pub fn server(self, listener: TcpListener) -> std::io::Result<Server> {
        let data = web::Data::new(self);
        Ok(HttpServer::new(move || {
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
                    "/{zone}/consul/v1/catalog/services",
                    web::get().to(consul_services),
                )
                .route(
                    "/{zone}/consul/v1/health/service/{service}",
                    web::get().to(consul_health),
                )
                .route(
                    "/{zone}/consul/v1/health/state/any",
                    web::get().to(consul_checks),
                )
                .route(
                    "/{zone}/consul/v1/agent/service/maintenance/{id}",
                    web::put().to(consul_maintenance),
                )
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
                .route("/{zone}/_sim/consul/{state}", web::post().to(set_consul))
                .route("/{zone}/_sim/stats", web::get().to(stats))
        })
        .workers(1)
        // A loaded test machine may take seconds between connecting and sending: the default
        // 5 s would answer 408 under the client's request (hyper's UnexpectedMessage).
        .client_request_timeout(std::time::Duration::from_secs(60))
        .disable_signals()
        .listen(listener)?
        .run())
    }
}

type P = web::Data<Platform>;

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
                z.index += 1;
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

/// Consul's blocking query parameters: `?index=N&wait=5s`.
#[derive(serde::Deserialize)]
struct Blocking {
    index: Option<u64>,
    wait: Option<String>,
}

/// Holds a blocking query until the zone's index passes `index` or `wait` elapses (at most
/// 10 s here; Consul's default is 5 min).
async fn block(p: &Platform, zone: &str, q: &Blocking) {
    let Some(index) = q.index else { return };
    let wait = q
        .wait
        .as_deref()
        .and_then(parse_wait)
        .unwrap_or(Duration::from_secs(10))
        .min(Duration::from_secs(10));
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        match p.with_zone(zone, |z| (z.index, z.consul_down)) {
            Some((current, false)) if current <= index => {}
            _ => return,
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `500ms`, `5s`, `1m`.
fn parse_wait(s: &str) -> Option<Duration> {
    if let Some(ms) = s.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    if let Some(secs) = s.strip_suffix('s') {
        return secs.parse().ok().map(Duration::from_secs);
    }
    if let Some(mins) = s.strip_suffix('m') {
        return mins
            .parse::<u64>()
            .ok()
            .map(|m| Duration::from_secs(m * 60));
    }
    s.parse().ok().map(Duration::from_secs)
}

async fn consul_services(p: P, path: web::Path<String>, q: web::Query<Blocking>) -> HttpResponse {
    let zone = path.into_inner();
    block(&p, &zone, &q).await;
    p.with_zone(&zone, |z| {
        if z.consul_down {
            return consul_unavailable();
        }
        let services: BTreeMap<String, Vec<String>> = z
            .apps
            .values()
            .map(|a| {
                (
                    a.definition.id.trim_start_matches('/').to_owned(),
                    service_tags(&a.definition),
                )
            })
            .collect();
        HttpResponse::Ok()
            .insert_header(("X-Consul-Index", z.index.to_string()))
            .json(services)
    })
    .unwrap_or_else(|| no_zone(&zone))
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

async fn consul_health(
    p: P,
    path: web::Path<(String, String)>,
    q: web::Query<Blocking>,
) -> HttpResponse {
    let (zone, service) = path.into_inner();
    block(&p, &zone, &q).await;
    p.with_zone(&zone, |z| {
        if z.consul_down {
            return consul_unavailable();
        }
        z.consul_reads += 1;
        let id = format!("/{service}");
        let entries: Vec<_> = z
            .apps
            .get(&id)
            .map(|a| {
                a.tasks
                    .iter()
                    .map(|t| {
                        let healthy = p.healthy(z, &id, t);
                        let mut meta = BTreeMap::new();
                        if let Some(d) = a.definition.labels.get(LABEL_DEPLOYMENT_ID) {
                            meta.insert(LABEL_DEPLOYMENT_ID.to_owned(), d.clone());
                        }
                        json!({
                            "Node": {"Node": t.host, "Address": t.host, "Datacenter": format!("{}-{}", p.region, zone)},
                            "Service": {"ID": t.id, "Service": service, "Tags": service_tags(&a.definition), "Address": t.host, "Port": t.port, "Meta": meta},
                            "Checks": task_checks(t, healthy),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        HttpResponse::Ok().insert_header(("X-Consul-Index", z.index.to_string())).json(entries)
    })
    .unwrap_or_else(|| no_zone(&zone))
}

async fn set_scheduler(p: P, path: web::Path<(String, String)>) -> HttpResponse {
    let (zone, state) = path.into_inner();
    p.with_zone(&zone, |z| {
        z.scheduler_down = state == "down";
        HttpResponse::NoContent().finish()
    })
    .unwrap_or_else(|| no_zone(&zone))
}

async fn set_consul(p: P, path: web::Path<(String, String)>) -> HttpResponse {
    let (zone, state) = path.into_inner();
    p.with_zone(&zone, |z| {
        match state.as_str() {
            "deny-writes" => z.consul_denies_writes = true,
            "allow-writes" => z.consul_denies_writes = false,
            _ => z.consul_down = state == "down",
        }
        HttpResponse::NoContent().finish()
    })
    .unwrap_or_else(|| no_zone(&zone))
}

/// A task's checks as Consul reports them: its HTTP check, and the maintenance check while in
/// maintenance mode.
fn task_checks(t: &SimTask, healthy: bool) -> Vec<serde_json::Value> {
    let mut checks = vec![json!({
        "CheckID": format!("service:{}", t.id), "Name": "http", "ServiceID": t.id,
        "Status": if healthy { "passing" } else { "critical" },
        "Output": if healthy { "HTTP GET: 200 OK" } else { "HTTP GET: connection refused" },
    })];
    if let Some(reason) = &t.maintenance {
        checks.push(json!({
            "CheckID": format!("_service_maintenance:{}", t.id), "Name": "Service Maintenance Mode",
            "ServiceID": t.id, "Status": "critical", "Output": reason,
        }));
    }
    checks
}

/// `GET /v1/health/state/any`: every check of the zone (what a watch blocks on).
async fn consul_checks(p: P, path: web::Path<String>, q: web::Query<Blocking>) -> HttpResponse {
    let zone = path.into_inner();
    block(&p, &zone, &q).await;
    p.with_zone(&zone, |z| {
        if z.consul_down {
            return consul_unavailable();
        }
        let checks: Vec<serde_json::Value> = z
            .apps
            .iter()
            .flat_map(|(id, a)| a.tasks.iter().map(move |t| (id, t)))
            .flat_map(|(id, t)| task_checks(t, p.healthy(z, id, t)))
            .collect();
        HttpResponse::Ok()
            .insert_header(("X-Consul-Index", z.index.to_string()))
            .json(checks)
    })
    .unwrap_or_else(|| no_zone(&zone))
}

#[derive(serde::Deserialize)]
struct Maintenance {
    enable: bool,
    reason: Option<String>,
}

/// `PUT /v1/agent/service/maintenance/{id}?enable=true&reason=...`: traffic off (or on again).
async fn consul_maintenance(
    p: P,
    path: web::Path<(String, String)>,
    q: web::Query<Maintenance>,
) -> HttpResponse {
    let (zone, id) = path.into_inner();
    p.with_zone(&zone, |z| {
        if z.consul_down {
            return consul_unavailable();
        }
        if z.consul_denies_writes {
            return HttpResponse::Forbidden().body(
                "Permission denied: token with AccessorID 'mot' lacks permission 'service:write'",
            );
        }
        let Some(task) = z
            .apps
            .values_mut()
            .flat_map(|a| a.tasks.iter_mut())
            .find(|t| t.id == id)
        else {
            return HttpResponse::NotFound().body(format!("Unknown service ID \"{id}\""));
        };
        let wanted = q.enable.then(|| {
            q.reason
                .clone()
                .unwrap_or_else(|| "Maintenance mode is enabled".into())
        });
        if task.maintenance != wanted {
            task.maintenance = wanted;
            z.index += 1;
        }
        HttpResponse::Ok().finish()
    })
    .unwrap_or_else(|| no_zone(&zone))
}

fn consul_unavailable() -> HttpResponse {
    HttpResponse::ServiceUnavailable().body("No cluster leader")
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
        z.index += 1;
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
                    maintenance: None,
                    broken: z.failing_new_tasks.contains(&app.definition.id),
                    lost: false,
                });
                z.index += 1;
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
        HttpResponse::Ok().json(json!({"puts": z.puts, "changes": z.changes, "puts_by_deployment": z.puts_by_deployment, "deletes": z.deletes, "apps": z.apps.len(), "consul_reads": z.consul_reads, "consul_index": z.index}))
    })
    .unwrap_or_else(|| no_zone(&zone))
}

/// The `host:port` every zone of `region` is served on; they must share one.
pub fn listen_address(region: &RegionConfig) -> Result<String, String> {
    let mut addresses = BTreeSet::new();
    for zone in &region.zones {
        for url in [&zone.marathon, &zone.mesos, &zone.consul] {
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
