//! Benchmark 5: End to end: POST -> GET shows every instance healthy, over the dev topology (four Kafka
//! clusters, the platform simulator with no health delay), for one region (the mirrored path
//! through the pseudo-central cluster) and for two; and what each hop adds, read back from the
//! deployments' traces in Jaeger.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use scylla::client::session::Session;
use serde_json::{json, Value};
use uuid::Uuid;

use mot::actors::counters::Registry;
use mot::actors::supervisor::Shutdown;
use mot::config::Config;
use mot::platform::sim::{Platform, SimOptions};
use mot::store::projections::Projections;
use mot::topics::clients;
use mot::topics::names::ClusterName;
use mot::topics::topology::Topology;
use mot::web::{self, AppState};

use crate::report::{Figure, Section};
use crate::Env;

fn free_listener() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap()
}

/// Posts one deployment of `app` to `regions` (all their zones, two instances each); the
/// deployment's id, its trace id and the time from the POST until GET shows it healthy.
async fn deploy(
    http: &reqwest::Client,
    url: &str,
    app: &str,
    regions: &[&str],
) -> (Uuid, String, f64) {
    deploy_with(http, url, app, regions, None).await
}

/// [`deploy`] with a rollout `strategy`: healthy once its last wave is.
async fn deploy_with(
    http: &reqwest::Client,
    url: &str,
    app: &str,
    regions: &[&str],
    strategy: Option<Value>,
) -> (Uuid, String, f64) {
    let targets: Vec<Value> = regions.iter().map(|r| json!({"region": r})).collect();
    let mut body = json!({
        "app": app, "version": "1.0.0", "artifact": "registry.example.com/bench:1",
        "instances_per_zone": 2, "resources": {"cpus": 0.1, "mem_mb": 64},
        "targets": targets,
    });
    if let Some(strategy) = strategy {
        body["strategy"] = strategy;
    }
    let started = Instant::now();
    let accepted: Value = http
        .post(format!("{url}/deployments"))
        .json(&body)
        .send()
        .await
        .expect("POST")
        .json()
        .await
        .expect("202 body");
    let id: Uuid = accepted["id"].as_str().expect("an id").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let view: Value = http
            .get(format!("{url}/deployments/{id}"))
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .unwrap_or_default();
        if view["status"] == "healthy" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "deployment never healthy: {view:#}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    (
        id,
        accepted["trace_id"].as_str().unwrap_or_default().to_owned(),
        elapsed,
    )
}

/// A span as Jaeger returns it: name, start and end (µs), tags.
struct Span {
    name: String,
    start: i64,
    end: i64,
    agent: String,
}

async fn trace(http: &reqwest::Client, trace_id: &str) -> Vec<Span> {
    let body: Value = match http
        .get(format!("http://127.0.0.1:16686/api/traces/{trace_id}"))
        .send()
        .await
    {
        Ok(resp) => resp.json().await.unwrap_or_default(),
        Err(_) => return Vec::new(),
    };
    body["data"][0]["spans"]
        .as_array()
        .map(|spans| {
            spans
                .iter()
                .map(|s| {
                    let start = s["startTime"].as_i64().unwrap_or(0);
                    let agent = s["tags"]
                        .as_array()
                        .and_then(|tags| tags.iter().find(|t| t["key"] == "mot.agent"))
                        .and_then(|t| t["value"].as_str())
                        .unwrap_or("")
                        .to_owned();
                    Span {
                        name: s["operationName"].as_str().unwrap_or("").to_owned(),
                        start,
                        end: start + s["duration"].as_i64().unwrap_or(0),
                        agent,
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The hops of one mirrored-path deployment's trace, in ms; `None` when a span is missing.
fn hops(spans: &[Span]) -> Option<Vec<(&'static str, f64)>> {
    let first_start =
        |f: &dyn Fn(&Span) -> bool| spans.iter().filter(|s| f(s)).map(|s| s.start).min();
    let last_end = |f: &dyn Fn(&Span) -> bool| spans.iter().filter(|s| f(s)).map(|s| s.end).max();
    let post = first_start(&|s| s.name == "POST /deployments")?;
    let answered = last_end(&|s| s.name == "POST /deployments")?;
    let sent = first_start(&|s| s.name == "send mot-deployment-requests")?;
    let fan_out = first_start(&|s| s.agent == "DeploymentFanOutAgent")?;
    let localized = first_start(&|s| s.agent == "Localizer" && s.name.contains("launch"))?;
    let operation = first_start(&|s| s.agent == "DeploymentOperationAgent")?;
    let scheduled = last_end(&|s| s.name.starts_with("PUT /v2/apps"))?;
    let back = first_start(&|s| s.agent == "Localizer" && s.name.contains("complete"))?;
    let archival = first_start(&|s| s.agent == "CompleteEventArchivalAgent")?;
    let written = last_end(&|s| s.name == "INSERT deployment_events")?;
    let ms = |a: i64, b: i64| (b - a) as f64 / 1000.0;
    Some(vec![
        (
            "API: request checked and recorded, handed to Kafka",
            ms(post, sent),
        ),
        ("API: 202 answered (Kafka acknowledged)", ms(post, answered)),
        ("request topic -> fan-out picks it up", ms(sent, fan_out)),
        (
            "localizer: central -> pseudo-central launch topic",
            ms(fan_out, localized),
        ),
        (
            "operation agent picks the launch up",
            ms(localized, operation),
        ),
        (
            "scheduler calls (3 zones, concurrent)",
            ms(operation, scheduled),
        ),
        (
            "complete event back: region -> central localizer",
            ms(scheduled, back),
        ),
        ("archival agent picks it up", ms(back, archival)),
        ("Cassandra writes of the timeline", ms(archival, written)),
        (
            "total traced: POST -> last timeline write",
            ms(post, written),
        ),
    ])
}

pub async fn run(env: &Env, session: &Arc<Session>) -> (Section, Uuid, String, Projections) {
    let (sim_test, sim_prod) = (free_listener(), free_listener());
    let mut text = std::fs::read_to_string("dev/mot.toml").expect("dev/mot.toml");
    text = text
        .replace(
            "keyspace = \"mot\"",
            &format!("keyspace = \"{}\"", env.keyspace),
        )
        .replace(
            "127.0.0.1:38080",
            &sim_test.local_addr().unwrap().to_string(),
        )
        .replace(
            "127.0.0.1:48080",
            &sim_prod.local_addr().unwrap().to_string(),
        );
    let config =
        Config::from_toml(std::path::Path::new("dev/mot.toml"), &text).expect("dev topology");
    let topology = Topology::checked(&config).expect("dev topology");
    for (region, listener) in [
        ("test-us-east-1", sim_test),
        ("production-us-west-2", sim_prod),
    ] {
        let region = config.region(&region.parse().unwrap()).unwrap();
        let platform = Platform::new(
            region,
            SimOptions {
                health_delay: Duration::ZERO,
            },
        );
        actix_web::rt::spawn(platform.server(listener).unwrap());
    }
    for cluster in &config.clusters {
        let name: &ClusterName = &cluster.name;
        clients::ensure_topics(&topology, &topology.cluster_admin(name).unwrap())
            .await
            .expect("topics");
    }
    let registry = Registry::default();
    let supervisors = mot::daemon::start_agents(&topology, &registry);
    let listener = free_listener();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = AppState::connect(topology.clone()).await.expect("api");
    actix_web::rt::spawn(
        web::server(
            listener,
            None,
            Some(actix_web::web::Data::new(state)),
            registry.clone(),
            Arc::new(web::readyz::Readiness::new(
                &topology,
                registry.store.clone(),
            )),
        )
        .unwrap(),
    );
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", crate::admin_token()).parse().unwrap(),
    );
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    // Warm up: every agent has joined its group and met its topics once.
    deploy(
        &http,
        &url,
        "bench-warm-a",
        &["test-us-east-1", "production-us-west-2"],
    )
    .await;
    deploy(
        &http,
        &url,
        "bench-warm-b",
        &["test-us-east-1", "production-us-west-2"],
    )
    .await;

    let n = env.size(20, 2);
    let mut section = Section::new(
        "e2e",
        "End to end",
        &format!(
            "The dev topology in one process (every role; four Kafka clusters; the platform simulator \
             with no health delay). {n} deployments per case, one after the other, each of a new app \
             in all three zones with two instances per zone: the time from sending the POST until \
             GET /deployments/{{id}} (polled every 10 ms) shows it `healthy`. One region is \
             test-us-east-1 (launch through the pseudo-central cluster, results back through a \
             localizer); two adds production-us-west-2 (reads central directly); two waves deploys to \
             the same two regions with a strategy of two waves (test-us-east-1 first; \
             min_healthy_secs 0), where the gate of the first wave is measured to the Kafka \
             timestamp of the second wave's launch record. The hops come from each one-region \
             deployment's trace in Jaeger (span start and end times)."
        ),
    );
    let mut one = Vec::new();
    let mut traces = Vec::new();
    for k in 0..n {
        let (_, trace_id, ms) = deploy(
            &http,
            &url,
            &format!("bench-one-{}-{k}", env.run_id),
            &["test-us-east-1"],
        )
        .await;
        one.push(ms);
        traces.push(trace_id);
    }
    let mut two = Vec::new();
    let mut last = Uuid::nil();
    for k in 0..n {
        let (id, _, ms) = deploy(
            &http,
            &url,
            &format!("bench-two-{}-{k}", env.run_id),
            &["test-us-east-1", "production-us-west-2"],
        )
        .await;
        two.push(ms);
        last = id;
    }
    // The same two regions in two waves, each gated on the wave before being healthy (held for
    // 0 s): what the gate costs, and how soon after it opens the next wave's launch is produced.
    let waves = json!({"waves": [["test-us-east-1"], ["production-us-west-2"]],
                       "min_healthy_secs": 0, "deadline_secs": 120});
    let mut in_waves = Vec::new();
    let mut gates = Vec::new();
    for k in 0..n {
        let (id, _, ms) = deploy_with(
            &http,
            &url,
            &format!("bench-waves-{}-{k}", env.run_id),
            &["test-us-east-1", "production-us-west-2"],
            Some(waves.clone()),
        )
        .await;
        in_waves.push(ms);
        let view: Value = http
            .get(format!("{url}/deployments/{id}"))
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("the view");
        gates.push((
            id,
            view["waves"][0]["ended_ms"]
                .as_i64()
                .expect("wave 0's gate"),
        ));
    }
    let mut launched: BTreeMap<Uuid, i64> = BTreeMap::new();
    let launches =
        mot::topics::names::TopicName::parse("mot-deployment-launch-events-production-us-west-2")
            .unwrap();
    mot::actors::pipeline::read_to_end(
        &topology.central_home(),
        &launches,
        &format!("bench-waves-reader-{}", env.run_id),
        |m| {
            use rdkafka::Message;
            if let Ok(e) = mot::models::envelope::decode::<mot::models::deployment::LaunchRequested>(
                m.key(),
                m.payload(),
            ) {
                if let Some(ts) = m.timestamp().to_millis() {
                    launched.entry(e.payload.deployment_id).or_insert(ts);
                }
            }
        },
    )
    .await
    .expect("reading the launches");
    let gate_lags: Vec<f64> = gates
        .iter()
        .filter_map(|(id, gate)| launched.get(id).map(|ts| (ts - gate) as f64))
        .collect();
    assert_eq!(
        gate_lags.len(),
        gates.len(),
        "every second wave was launched"
    );
    for supervisor in supervisors {
        let _ = supervisor.send(Shutdown).await;
    }
    let one_p50 = section.figure(Figure::new(
        "one region: POST -> healthy",
        "ms",
        one.clone(),
    ));
    let two_p50 = section.figure(Figure::new(
        "two regions: POST -> healthy",
        "ms",
        two.clone(),
    ));
    section.figure(Figure::new(
        "one region: p99 POST -> healthy",
        "ms",
        vec![crate::report::percentile(&one, 0.99)],
    ));
    section.figure(Figure::new(
        "two regions: p99 POST -> healthy",
        "ms",
        vec![crate::report::percentile(&two, 0.99)],
    ));
    section.ratio("two regions / one region (p50)", two_p50, one_p50);
    let waves_p50 = section.figure(Figure::new(
        "two regions in two waves (min_healthy_secs 0): POST -> healthy",
        "ms",
        in_waves,
    ));
    section.ratio("two waves / two regions at once (p50)", waves_p50, two_p50);
    section.figure(Figure::new(
        "wave 1's gate opens -> wave 2's launch record produced",
        "ms",
        gate_lags,
    ));

    // The hops, from the traces (exported every 500 ms; Jaeger may need a moment more).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut by_hop: BTreeMap<usize, (&'static str, Vec<f64>)> = BTreeMap::new();
    let mut traced = 0;
    for trace_id in &traces {
        let mut found = None;
        for _ in 0..20 {
            found = hops(&trace(&http, trace_id).await);
            if found.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if let Some(hops) = found {
            traced += 1;
            for (i, (name, ms)) in hops.into_iter().enumerate() {
                by_hop.entry(i).or_insert((name, Vec::new())).1.push(ms);
            }
        }
    }
    let mut slowest = ("", 0.0);
    let last_hop = by_hop.len().saturating_sub(1);
    let mut traced_total = f64::NAN;
    for (i, (name, values)) in by_hop {
        let median = section.figure(Figure::new(format!("hop: {name}"), "ms", values));
        if i == last_hop {
            traced_total = median;
        } else if median > slowest.1 && !name.contains("202") {
            slowest = (name, median);
        }
    }
    section.figure(Figure::new(
        "after the trace: pollers observe healthy -> state and instances archived -> GET",
        "ms",
        vec![one_p50 - traced_total],
    ));
    section.note(format!(
        "hops measured on {traced} of {n} one-region traces; slowest traced hop: {} ({:.1} ms median)",
        slowest.0, slowest.1
    ));
    section.note(
        "`healthy` is observed by pollers after the launch: Marathon is polled every second and \
         Consul watched with blocking queries, so the part after the trace is bounded below by \
         the polling interval, not by Kafka or Cassandra",
    );
    let projections = Projections::prepare(session.clone(), &env.keyspace)
        .await
        .expect("projections");
    (section, last, url, projections)
}
