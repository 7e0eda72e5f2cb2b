//! mot against the real Consul where its semantics matter: maintenance mode kept by the agent
//! across its restart, a watch cut by a restart of the (lone, leading) server resumed, and ACLs in
//! default-deny mode: an answer Consul's ACLs cut short is refused (counted in
//! `zone_errors`) rather than believed.

mod common;

use std::time::Duration;

use serde_json::{json, Value};

use common::flow::{start, start_on, Flow, OwnConsul};
use mot::platform::sim::SimOptions;
use mot::topics::names::RegionName;

fn all_healthy(view: &Value) -> bool {
    view["status"] == "healthy"
}

/// The maintenance checks Consul at `base` holds for `service` in zone `tag`.
async fn maintenance_checks(base: &str, service: &str, tag: &str) -> usize {
    common::consul::health(base, service, tag)
        .await
        .iter()
        .flat_map(|e| e["Checks"].as_array().cloned().unwrap_or_default())
        .filter(|c| {
            c["CheckID"]
                .as_str()
                .is_some_and(|id| id.starts_with("_service_maintenance:"))
        })
        .count()
}

async fn traffic(flow: &Flow, id: &str, enabled: bool) {
    let resp = flow
        .http
        .post(format!("{}/deployments/{id}/traffic", flow.url))
        .json(&json!({"enabled": enabled}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
}

#[actix_web::test]
async fn maintenance_holds_across_a_consul_restart_and_the_watch_it_cut_resumes() {
    let consul = common::consul::ExtraConsul::start();
    let flow = start_on(
        SimOptions {
            health_delay: Duration::from_millis(100),
        },
        None,
        &OwnConsul {
            at: consul.address(),
            relays: false,
            register_on: None,
        },
        None,
    )
    .await;
    let p = flow.prod_region.clone();
    let tag = format!("mot-zone={p}/a");
    let id = flow.post(json!([{"region": p, "zones": ["a"]}])).await;
    flow.deployment_until(&id, "healthy", all_healthy).await;
    flow.instances_until(&id, "serving", |i| i["traffic"] == true)
        .await;

    // Off: the agent the instances are registered on holds a maintenance check for each.
    traffic(&flow, &id, false).await;
    flow.instances_until(&id, "out of traffic", |i| i["traffic"] == false)
        .await;
    assert_eq!(
        maintenance_checks(&consul.url(), "checkout-web", &tag).await,
        2
    );

    // The server restarts under mot's held watch. The agent persisted the maintenance: it is
    // still there after, and mot never saw the instances back in traffic.
    let watcher = flow
        .registry
        .get("ConsulStateAgent", &RegionName::parse(&p).unwrap());
    let before = watcher.snapshot();
    consul.restart();
    assert_eq!(
        maintenance_checks(&consul.url(), "checkout-web", &tag).await,
        2,
        "maintenance survives the agent's restart"
    );
    // The watch resumed: it answers again (each held at most 5 s).
    common::eventually(60, "the watch answering again after the restart", || {
        watcher.snapshot().records_in >= before.records_in + 2
    })
    .await;
    let (_, body) = flow.get(&format!("/deployments/{id}/instances")).await;
    assert!(
        body["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["state"] == "running")
            .all(|i| i["traffic"] == false),
        "{body:#}"
    );

    // On again, after the restart: applied through the restarted agent and seen by the watch.
    traffic(&flow, &id, true).await;
    flow.instances_until(&id, "back in traffic", |i| i["traffic"] == true)
        .await;
    assert_eq!(
        maintenance_checks(&consul.url(), "checkout-web", &tag).await,
        0
    );
}

#[actix_web::test]
async fn a_token_consul_hides_services_from_is_refused_and_deletes_nothing() {
    let flow = start().await;
    let p = flow.prod_region.clone();
    let region = RegionName::parse(&p).unwrap();
    let id = flow.post(json!([{"region": p, "zones": ["b"]}])).await;
    flow.deployment_until(&id, "healthy", all_healthy).await;
    flow.instances_until(&id, "serving", |i| i["traffic"] == true)
        .await;

    // mot's token loses the right to read the app: Consul would answer as if it had no instance.
    flow.consul_token
        .set_rules(
            "service_prefix \"\" { policy = \"write\" }\nservice \"checkout-web\" { policy = \"deny\" }\nnode_prefix \"\" { policy = \"read\" }",
        )
        .await;
    let watcher = flow.registry.get("ConsulStateAgent", &region);
    let before = watcher.snapshot();
    // Any change in the datacenter wakes the watch; a kill in zone b is one mot must read.
    let victim = flow.instances_until(&id, "serving", |_| true).await[0]["instance_id"]
        .as_str()
        .unwrap()
        .to_owned();
    flow.sim_control(&p, "b", &format!("tasks/{victim}/kill"))
        .await;
    common::eventually(60, "the hidden answer refused", || {
        watcher.snapshot().zone_errors > before.zone_errors
    })
    .await;
    let latest = flow.instance_changes(&p).await;
    let deleted = latest
        .values()
        .filter(|e| e.kind == mot::models::envelope::Kind::Deleted)
        .count();
    assert_eq!(deleted, 0, "a withheld answer deletes nothing");
    assert_eq!(watcher.snapshot().published, before.published);

    // The right back: the kill is seen (the victim deleted, its replacement created).
    flow.consul_token.set_rules(common::consul::MOT_RULES).await;
    flow.instances_until(&id, "replaced", |i| {
        i["instance_id"] != victim.as_str() && i["health"] == "passing"
    })
    .await;
}

#[actix_web::test]
async fn traffic_is_switched_on_the_agent_an_instance_is_registered_on() {
    // Two nodes of one datacenter: the server (the zone's Consul URL) and a client agent on
    // another address, where the tasks' hosts register them. Only that agent takes maintenance
    // for them; the server answers 404 (Unknown service ID).
    let server = common::consul::ExtraConsul::start();
    let agent = common::consul::ExtraConsul::client_of(&server, "127.0.0.2");
    let flow = start_on(
        SimOptions {
            health_delay: Duration::from_millis(100),
        },
        None,
        &OwnConsul {
            at: server.address(),
            relays: false,
            register_on: Some(agent.address()),
        },
        None,
    )
    .await;
    let p = flow.prod_region.clone();
    let tag = format!("mot-zone={p}/a");
    let id = flow.post(json!([{"region": p, "zones": ["a"]}])).await;
    flow.deployment_until(&id, "healthy", all_healthy).await;
    let serving = flow
        .instances_until(&id, "serving", |i| i["traffic"] == true)
        .await;
    assert!(
        serving.iter().all(|i| i["host"].as_str().is_some()),
        "{serving:#?}"
    );
    let entries = common::consul::health(&server.url(), "checkout-web", &tag).await;
    assert!(
        entries.iter().all(|e| e["Node"]["Address"] == "127.0.0.2"),
        "registered on the client agent's node: {entries:#?}"
    );

    traffic(&flow, &id, false).await;
    flow.instances_until(&id, "out of traffic", |i| i["traffic"] == false)
        .await;
    assert_eq!(
        maintenance_checks(&server.url(), "checkout-web", &tag).await,
        2
    );
    let applied = flow.events_of_kind(&id, "traffic-applied").await;
    assert_eq!(applied.len(), 1, "{applied:#?}");
    assert_eq!(
        applied[0]["detail"],
        json!({"enabled": false, "instances": 2})
    );
}
