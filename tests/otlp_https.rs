//! Spans exported to an `https://` OTLP collector whose certificate only `[tls] ca_file` vouches
//! for (a company CA): the exporter trusts it as every other `https://` call mot makes does.
//! Alone in its binary: telemetry is installed once per process.

mod common;

use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

use mot::config::{LogFormat, TelemetryConfig, TlsConfig};

/// What the collector received: one (content type, body length) per export request.
type Received = Arc<Mutex<Vec<(String, usize)>>>;

async fn collect(
    req: HttpRequest,
    body: web::Bytes,
    received: web::Data<Received>,
) -> HttpResponse {
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    received.lock().unwrap().push((content_type, body.len()));
    HttpResponse::Ok()
        .content_type("application/x-protobuf")
        .finish()
}

#[test]
fn spans_reach_an_https_collector_trusted_through_the_configured_ca() {
    let pki = common::TestPki::new();
    let received = Received::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server_config = pki.server_config();
    let served = received.clone();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            HttpServer::new(move || {
                App::new()
                    .app_data(web::Data::new(served.clone()))
                    .route("/v1/traces", web::post().to(collect))
            })
            .workers(1)
            .listen_rustls_0_23(listener, server_config)
            .unwrap()
            .run()
            .await
        })
    });

    let telemetry = mot::telemetry::init(
        &TelemetryConfig {
            otlp_endpoint: Some(format!("https://127.0.0.1:{port}")),
            service_name: Some("mot-otlp-https-test".into()),
            sample_ratio: None,
            log_format: LogFormat::Text,
        },
        &TlsConfig {
            ca_file: Some(pki.ca.clone()),
        },
    )
    .unwrap();
    tracing::info_span!("exported over https").in_scope(|| tracing::info!("a span to export"));
    telemetry.flush();

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while received.lock().unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the collector received nothing"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "one export of the one span: {got:?}");
    assert_eq!(got[0].0, "application/x-protobuf");
    assert!(got[0].1 > 0, "{got:?}");
    telemetry.shutdown();
}
