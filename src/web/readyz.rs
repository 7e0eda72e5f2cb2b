//! `GET /readyz`: whether this process can serve: the central Kafka cluster answers metadata
//! requests and Cassandra answers a query. 503 names what is not ready.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::Serialize;

use super::AppState;

#[derive(Serialize)]
struct Check {
    name: String,
    ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let mut checks = Vec::new();

    let central = state.topology().central_home();
    let kafka_name = format!("kafka {}", central.name());
    let probe = state.kafka_probe.clone();
    let kafka = web::block(move || {
        probe
            .fetch_metadata(None, Duration::from_secs(2))
            .map(|m| m.brokers().len())
    })
    .await;
    checks.push(match kafka {
        Ok(Ok(brokers)) if brokers > 0 => Check {
            name: kafka_name,
            ready: true,
            reason: None,
        },
        Ok(Ok(_)) => Check {
            name: kafka_name,
            ready: false,
            reason: Some("no broker in the metadata".into()),
        },
        Ok(Err(e)) => Check {
            name: kafka_name,
            ready: false,
            reason: Some(e.to_string()),
        },
        Err(e) => Check {
            name: kafka_name,
            ready: false,
            reason: Some(e.to_string()),
        },
    });

    let cassandra = state
        .session
        .query_unpaged("SELECT release_version FROM system.local", ())
        .await;
    checks.push(Check {
        name: "cassandra".into(),
        ready: cassandra.is_ok(),
        reason: cassandra.err().map(|e| e.to_string()),
    });

    let ready = checks.iter().all(|c| c.ready);
    let body = serde_json::json!({ "ready": ready, "checks": checks });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// The client `/readyz` asks for the central cluster's metadata.
pub fn kafka_probe(
    config: &rdkafka::ClientConfig,
) -> Result<BaseConsumer, rdkafka::error::KafkaError> {
    config.clone().set("group.id", "mot-readyz").create()
}
