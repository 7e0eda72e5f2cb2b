//! TLS where mot is the server (the API's listener) and where it is the client (the zones'
//! schedulers at `https://` URLs, trusted through `[tls] ca_file`), with certificates of a CA the
//! test makes.

mod common;

use serde_json::json;

use common::flow::{self, OwnConsul};
use common::TestPki;

#[actix_web::test]
async fn the_api_serves_https_with_its_certificate_and_nothing_in_clear() {
    let pki = TestPki::new();
    let app = common::api::spawn_app_auth(&format!(
        "\n[web.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        pki.cert.display(),
        pki.key.display()
    ))
    .await;
    assert!(app.url.starts_with("https://"), "{}", app.url);
    let trusting = common::api_client()
        .add_root_certificate(pki.ca_certificate())
        .build()
        .unwrap();
    let response = trusting
        .get(format!("{}/deployments", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // A client that does not trust the CA refuses the server; plain HTTP gets no answer.
    let error = common::api_client()
        .build()
        .unwrap()
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .unwrap_err();
    assert!(format!("{error:?}").contains("UnknownIssuer"), "{error:?}");
    let plain = reqwest::Client::new()
        .get(app.url.replace("https://", "http://") + "/healthz")
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
}

#[actix_web::test]
async fn zones_at_https_urls_deploy_end_to_end() {
    let pki = TestPki::new();
    let flow = flow::start_on(
        mot::platform::sim::SimOptions {
            health_delay: std::time::Duration::from_millis(100),
        },
        None,
        &OwnConsul::shared(),
        Some(&pki),
    )
    .await;
    assert!(flow.sim(&flow.test_region).starts_with("https://"));
    let zone = &flow.topology.config().regions[1].zones[0];
    assert!(zone.marathon.starts_with("https://"), "{}", zone.marathon);
    let id = flow
        .post(json!([{"region": flow.test_region}, {"region": flow.prod_region}]))
        .await;
    // The operation agents put the app over TLS, the pollers read Marathon and Mesos over TLS.
    let view = flow
        .deployment_until(&id, "healthy", |v| v["status"] == "healthy")
        .await;
    assert_eq!(view["regions"].as_array().unwrap().len(), 2);
    let app = flow.app(&flow.prod_region, "b").await;
    assert_eq!(app["app"]["labels"]["mot-deployment-id"], id.as_str());
}
