//! `GET /metrics`: Prometheus text format. Per agent and region: records in, published,
//! unchanged, skipped, dead-lettered, poll errors, restarts; per HTTP route, method and status:
//! request counts and time spent; per consumer group, topic and partition: consumer lag; per
//! platform, operation and outcome: calls to Marathon, Mesos and Consul and their time.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use dashmap::DashMap;

use crate::actors::counters::{CountersSnapshot, Registry};

/// Route pattern, method, status.
type RequestKey = (String, String, u16);
/// Requests, and microseconds spent on them.
type RequestTotals = (AtomicU64, AtomicU64);
/// One agent counter: its name, help text, and how to read it.
type Series = (&'static str, &'static str, fn(&CountersSnapshot) -> u64);

/// The method label of a request: a standard method's name, `other` for anything else, so a
/// client cannot make up label values (route labels are the matched pattern or `unmatched`).
pub fn method_label(method: &actix_web::http::Method) -> String {
    use actix_web::http::Method;
    const KNOWN: [Method; 7] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
    ];
    if KNOWN.contains(method) {
        method.as_str().to_owned()
    } else {
        "other".to_owned()
    }
}

/// Requests served, by route pattern, method and status.
#[derive(Debug, Default, Clone)]
pub struct HttpMetrics {
    requests: Arc<DashMap<RequestKey, RequestTotals>>,
}

impl HttpMetrics {
    /// Counts one request that took `elapsed`.
    pub fn record(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let entry = self
            .requests
            .entry((route.to_owned(), method.to_owned(), status))
            .or_default();
        entry.0.fetch_add(1, Ordering::Relaxed);
        entry
            .1
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }
}

/// The metrics page.
pub fn render(registry: &Registry, http: &HttpMetrics) -> String {
    let mut out = String::new();
    let agents = registry.snapshot();
    let series: [Series; 9] = [
        ("records_in_total", "Records consumed by an agent.", |c| {
            c.records_in
        }),
        (
            "published_total",
            "Records an agent produced and the broker acknowledged.",
            |c| c.published,
        ),
        (
            "unchanged_total",
            "Records whose result equalled the last published one.",
            |c| c.unchanged,
        ),
        (
            "skipped_total",
            "Records of another region passed over.",
            |c| c.skipped,
        ),
        (
            "dead_lettered_total",
            "Records sent to mot-dead-letters.",
            |c| c.dead_lettered,
        ),
        (
            "poll_errors_total",
            "Platform polls that got no answer.",
            |c| c.poll_errors,
        ),
        (
            "zone_reads_total",
            "Full reads of a zone by a poller that watches before it reads (Consul).",
            |c| c.zone_reads,
        ),
        (
            "zone_errors_total",
            "Reads of one zone that got no usable answer (a zone poller).",
            |c| c.zone_errors,
        ),
        (
            "restarts_total",
            "Times an agent was restarted by its supervisor.",
            |c| c.restarts,
        ),
    ];
    for (name, help, get) in series {
        let _ = writeln!(
            out,
            "# HELP mot_agent_{name} {help}\n# TYPE mot_agent_{name} counter"
        );
        for (agent, region, counters) in &agents {
            let _ = writeln!(
                out,
                "mot_agent_{name}{{agent=\"{}\",region=\"{region}\"}} {}",
                escape(agent),
                get(counters)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP mot_consumer_lag Records on a partition a consumer group has not processed yet.\n# TYPE mot_consumer_lag gauge"
    );
    let mut lags: Vec<_> = crate::topics::clients::consumer_lags()
        .iter()
        .filter(|e| e.value().seen.elapsed() < Duration::from_secs(60))
        .map(|e| (e.key().clone(), e.value().records))
        .collect();
    lags.sort();
    for ((group, topic, partition), records) in lags {
        let _ = writeln!(
            out,
            "mot_consumer_lag{{group=\"{}\",topic=\"{}\",partition=\"{partition}\"}} {records}",
            escape(&group),
            escape(&topic)
        );
    }
    let drift: [Series; 3] = [
        (
            "mot_drift_detected_total",
            "Zones found no longer running what was asked (deleted, scaled or replaced by hand, never launched).",
            |c| c.drifts_detected,
        ),
        (
            "mot_drift_mended_total",
            "Drifted zones put back: the scheduler runs the deployment again.",
            |c| c.mended,
        ),
        (
            "mot_drift_mend_failures_total",
            "Mends the scheduler refused or did not answer, each retried with backoff.",
            |c| c.mend_failures,
        ),
    ];
    for (name, help, get) in drift {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (agent, region, counters) in &agents {
            if agent == <crate::actors::deployment_mending::DeploymentMendingAgent as crate::actors::pipeline::Agent>::NAME {
                let _ = writeln!(out, "{name}{{region=\"{region}\"}} {}", get(counters));
            }
        }
    }
    let platform = crate::platform::calls::snapshot();
    let _ = writeln!(
        out,
        "# HELP mot_platform_requests_total Calls to the platforms' APIs, by outcome.\n# TYPE mot_platform_requests_total counter"
    );
    for ((name, operation, outcome), count, _) in &platform {
        let _ = writeln!(
            out,
            "mot_platform_requests_total{{platform=\"{name}\",operation=\"{}\",outcome=\"{outcome}\"}} {count}",
            escape(operation)
        );
    }
    let _ = writeln!(
        out,
        "# HELP mot_platform_request_duration_seconds Time spent in calls to the platforms (Consul watches are held up to 5 s).\n# TYPE mot_platform_request_duration_seconds summary"
    );
    for ((name, operation, outcome), count, micros) in &platform {
        let labels = format!(
            "platform=\"{name}\",operation=\"{}\",outcome=\"{outcome}\"",
            escape(operation)
        );
        let _ = writeln!(
            out,
            "mot_platform_request_duration_seconds_sum{{{labels}}} {}",
            *micros as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "mot_platform_request_duration_seconds_count{{{labels}}} {count}"
        );
    }
    let mut requests: Vec<_> = http
        .requests
        .iter()
        .map(|e| {
            (
                e.key().clone(),
                e.value().0.load(Ordering::Relaxed),
                e.value().1.load(Ordering::Relaxed),
            )
        })
        .collect();
    requests.sort();
    let _ = writeln!(out, "# HELP mot_http_requests_total HTTP requests served.\n# TYPE mot_http_requests_total counter");
    for ((route, method, status), count, _) in &requests {
        let _ = writeln!(
            out,
            "mot_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {count}",
            escape(route)
        );
    }
    let _ = writeln!(
        out,
        "# HELP mot_http_request_duration_seconds Time spent serving HTTP requests.\n# TYPE mot_http_request_duration_seconds summary"
    );
    for ((route, method, status), count, micros) in &requests {
        let labels = format!(
            "route=\"{}\",method=\"{method}\",status=\"{status}\"",
            escape(route)
        );
        let _ = writeln!(
            out,
            "mot_http_request_duration_seconds_sum{{{labels}}} {}",
            *micros as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "mot_http_request_duration_seconds_count{{{labels}}} {count}"
        );
    }
    out
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub async fn metrics(registry: web::Data<Registry>, http: web::Data<HttpMetrics>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(render(&registry, &http))
}
