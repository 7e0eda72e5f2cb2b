//! Blast radius: a region whose Kafka cluster stops. Uses an extra cluster of its own
//! (`dev/infra kafka up`), never the shared ones other tests use.

mod common;

use std::time::Duration;

use serde_json::{json, Value};

use common::flow::{region, start_custom};
use common::ExtraKafka;
use mot::platform::sim::SimOptions;

fn stale(view: &Value, name: &str) -> bool {
    region(view, name)["freshness"]["stale"] == true
}

#[actix_web::test]
async fn a_region_whose_cluster_stops_goes_stale_while_others_flow_and_catches_up_on_return() {
    let kafka = ExtraKafka::new();
    kafka.start();
    let mut flow = start_custom(
        SimOptions {
            health_delay: Duration::from_millis(100),
        },
        Some((&kafka.name, &kafka.bootstrap)),
    )
    .await;
    let (x, p) = (flow.extra_region.clone().unwrap(), flow.prod_region.clone());
    let first = flow
        .post(json!([{"region": x}, {"region": p, "zones": ["a"]}]))
        .await;
    let view = flow
        .deployment_until(&first, "healthy", |v| v["status"] == "healthy")
        .await;
    assert!(!stale(&view, &x) && !stale(&view, &p), "{view:#}");

    kafka.stop();
    // The other region's data keeps flowing.
    let second = flow.post(json!([{"region": p, "zones": ["b"]}])).await;
    flow.deployment_until(&second, "healthy", |v| v["status"] == "healthy")
        .await;
    // The stopped region's data is shown stale; the other's is not.
    let view = flow
        .deployment_until(&first, "stale in the stopped region", |v| stale(v, &x))
        .await;
    assert!(!stale(&view, &p), "{view:#}");
    assert_eq!(
        region(&view, &x)["status"],
        "healthy",
        "last known state kept"
    );
    // Something changes in the cut-off region meanwhile.
    let failing = flow
        .http
        .post(format!(
            "{}/a/_sim/apps/checkout-web/health/failing",
            flow.sim(&x)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(failing.status().as_u16(), 204);

    kafka.start();
    let returned = std::time::Instant::now();
    // Catching up waits for the restarted broker to grant producer ids again and for the
    // region's agents to come back from their restart backoff: seconds to minutes.
    let view = flow
        .deployment_within(300, &first, "fresh again, with the change", |v| {
            !stale(v, &x) && region(v, &x)["status"] == "degraded"
        })
        .await;
    eprintln!(
        "caught up {:?} after the cluster returned",
        returned.elapsed()
    );
    assert_eq!(region(&view, &x)["zones"][0]["healthy"], 0, "{view:#}");
    assert_eq!(region(&view, &p)["status"], "healthy");
    // Stop the agents while their cluster is still up, so they leave their groups at once.
    flow.stop_agents().await;
}
