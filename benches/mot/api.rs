//! Benchmark 4: API reads: `GET /deployments/{id}` and `GET /deployments/{id}/instances` under wrk at a
//! fixed concurrency, vs the same queries issued directly with the driver at the same
//! concurrency.

use std::time::{Duration, Instant};

use futures::future::join_all;
use uuid::Uuid;

use mot::store::projections::Projections;

use crate::report::{Figure, Section};
use crate::Env;

const CONNECTIONS: usize = 16;

/// Requests per second and p50 / p99 latency (ms) from one wrk run.
/// (Asynchronous: the API's Cassandra session runs on this thread's runtime.)
async fn wrk(url: &str, seconds: u64) -> (f64, f64, f64) {
    let out = tokio::process::Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{CONNECTIONS}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-H",
            &format!("Authorization: Bearer {}", crate::admin_token()),
            url,
        ])
        .output()
        .await
        .expect("wrk (dev/setup installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let number = |line: &str| -> f64 {
        let token = line.split_whitespace().last().unwrap_or("");
        let (value, unit) = token.split_at(
            token
                .find(|c: char| c.is_alphabetic())
                .unwrap_or(token.len()),
        );
        let v: f64 = value.parse().unwrap_or(f64::NAN);
        match unit {
            "us" => v / 1000.0,
            "ms" | "" => v,
            "s" => v * 1000.0,
            "m" => v * 60_000.0,
            _ => f64::NAN,
        }
    };
    let rps = text
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    let p50 = text
        .lines()
        .find(|l| l.trim_start().starts_with("50%"))
        .map(number)
        .unwrap_or(f64::NAN);
    let p99 = text
        .lines()
        .find(|l| l.trim_start().starts_with("99%"))
        .map(number)
        .unwrap_or(f64::NAN);
    let non_2xx = text.lines().any(|l| l.contains("Non-2xx"));
    assert!(!non_2xx, "wrk saw errors:\n{text}");
    (rps, p50, p99)
}

/// The same reads through the driver: `CONNECTIONS` loops for `seconds`.
async fn direct(
    projections: &Projections,
    id: Uuid,
    instances: bool,
    seconds: u64,
) -> (f64, f64, f64) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let loops = (0..CONNECTIONS).map(|_| async move {
        let mut latencies = Vec::new();
        while Instant::now() < deadline {
            let started = Instant::now();
            let row = projections
                .deployment(id)
                .await
                .expect("read")
                .expect("exists");
            if instances {
                projections.instances(id).await.expect("read");
            } else {
                projections.zones(id).await.expect("read");
                projections.freshness(&row.targets).await.expect("read");
            }
            latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        latencies
    });
    let all: Vec<f64> = join_all(loops).await.into_iter().flatten().collect();
    (
        all.len() as f64 / seconds as f64,
        crate::report::percentile(&all, 0.5),
        crate::report::percentile(&all, 0.99),
    )
}

pub async fn run(env: &Env, url: &str, id: Uuid, projections: &Projections) -> Section {
    let seconds = if env.quick { 1 } else { 10 };
    let mut section = Section::new(
        "api",
        "API reads",
        &format!(
            "A two-region deployment (6 zones, 12 instances) from the end-to-end benchmark. wrk (as the dev admin: a static token), \
             {CONNECTIONS} connections on 2 threads for {seconds} s, against the API in the bench \
             process (actix-web, 2 workers); the baseline issues the queries the route issues \
             (`deployments`, `deployment_zones`, `region_freshness`; for instances `deployments`, \
             `deployment_instances`) with the driver from {CONNECTIONS} concurrent loops for as long. \
             wrk runs on the same two cores as the API, Kafka and Cassandra."
        ),
    );
    for (route, path, instances) in [
        (
            "GET /deployments/{id}",
            format!("{url}/deployments/{id}"),
            false,
        ),
        (
            "GET /deployments/{id}/instances",
            format!("{url}/deployments/{id}/instances"),
            true,
        ),
    ] {
        let (mut rps, mut p50, mut p99) = (vec![], vec![], vec![]);
        let (mut d_rps, mut d_p50, mut d_p99) = (vec![], vec![], vec![]);
        for _ in 0..env.runs() {
            let (r, a, b) = wrk(&path, seconds).await;
            rps.push(r);
            p50.push(a);
            p99.push(b);
            let (r, a, b) = direct(projections, id, instances, seconds).await;
            d_rps.push(r);
            d_p50.push(a);
            d_p99.push(b);
        }
        let api = section.figure(Figure::new(format!("{route}: API"), "requests/s", rps));
        section.figure(Figure::new(format!("{route}: API p50"), "ms", p50));
        section.figure(Figure::new(format!("{route}: API p99"), "ms", p99));
        let drv = section.figure(Figure::new(format!("{route}: driver"), "reads/s", d_rps));
        section.figure(Figure::new(format!("{route}: driver p50"), "ms", d_p50));
        section.figure(Figure::new(format!("{route}: driver p99"), "ms", d_p99));
        section.ratio(format!("{route}: API / driver"), api, drv);
    }
    section
}
