//! CDEvents (the CD Foundation's vocabulary, spec v0.4.1) for what happens to an app in a region,
//! as structured CloudEvents 1.0 JSON, published by the RolloutAgent on `mot-cdevents` in the
//! central cluster (key: the app), so chat bots, dashboards and audit tools can follow
//! deployments without polling the API.
//!
//! The service is the app, the environment is the region:
//!
//! - `service.deployed`: a deployment became healthy in a region where no earlier deployment of
//!   the app had been;
//! - `service.upgraded`: a later deployment of the app became healthy in a region;
//! - `service.rolledback`: a rollback deployment (`rollback_of`) became healthy in a region;
//! - `service.removed`: the app was removed from a region (`DELETE /apps/{app}`).
//!
//! `customData` carries mot's own identities: the deployment id, generation, version, and what
//! it rolled back.

use serde_json::{json, Value};
use uuid::Uuid;

/// The CDEvents specification version the events follow.
pub const SPEC_VERSION: &str = "0.4.1";

/// The CloudEvents content type of a record's value (the Kafka binding's structured mode).
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// What happened to the app in the region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceEvent {
    Deployed,
    Upgraded,
    RolledBack,
    Removed,
}

impl ServiceEvent {
    /// The CDEvent type.
    pub fn event_type(self) -> &'static str {
        match self {
            ServiceEvent::Deployed => "dev.cdevents.service.deployed.0.2.0",
            ServiceEvent::Upgraded => "dev.cdevents.service.upgraded.0.2.0",
            ServiceEvent::RolledBack => "dev.cdevents.service.rolledback.0.2.0",
            ServiceEvent::Removed => "dev.cdevents.service.removed.0.2.0",
        }
    }
}

/// What one event is about.
pub struct Occurrence<'a> {
    pub event: ServiceEvent,
    /// The central region: the events' source is `/mot/<central>`.
    pub central: &'a str,
    pub app: &'a str,
    pub region: &'a str,
    /// The deployment's artifact (an image reference), given as a package URL when it parses
    /// as `registry/name:tag`.
    pub artifact: &'a str,
    pub time_us: i64,
    /// mot's own identities, as `customData`.
    pub custom: Value,
    /// A stable id: the same occurrence, published again, has the same id.
    pub id: Uuid,
}

/// `registry.example.com/team/web:1.4.2` as `pkg:docker/team/web@1.4.2?repository_url=
/// registry.example.com`; anything else as it is.
pub fn artifact_purl(artifact: &str) -> String {
    let (path, tag) = match artifact.rsplit_once(':') {
        Some((path, tag)) if !tag.contains('/') => (path, Some(tag)),
        _ => (artifact, None),
    };
    let (registry, name) = match path.split_once('/') {
        Some((host, rest)) if host.contains('.') || host.contains(':') => (Some(host), rest),
        _ => (None, path),
    };
    let mut purl = format!("pkg:docker/{name}");
    if let Some(tag) = tag {
        purl.push('@');
        purl.push_str(tag);
    }
    if let Some(registry) = registry {
        purl.push_str("?repository_url=");
        purl.push_str(registry);
    }
    purl
}

/// RFC 3339 (UTC, microseconds) of a time in µs since the epoch.
pub fn rfc3339(time_us: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(time_us) * 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The CloudEvent: its `data` the CDEvent.
pub fn cloud_event(o: &Occurrence<'_>) -> Value {
    let source = format!("/mot/{}", o.central);
    let timestamp = rfc3339(o.time_us);
    let mut content = json!({
        "environment": {"id": o.region, "source": format!("{source}/regions")},
    });
    if o.event != ServiceEvent::Removed {
        content["artifactId"] = artifact_purl(o.artifact).into();
    }
    let cdevent = json!({
        "context": {
            "version": SPEC_VERSION,
            "id": o.id.to_string(),
            "source": source,
            "type": o.event.event_type(),
            "timestamp": timestamp,
        },
        "subject": {
            "id": o.app,
            "source": format!("{source}/apps"),
            "type": "service",
            "content": content,
        },
        "customData": o.custom,
        "customDataContentType": "application/json",
    });
    json!({
        "specversion": "1.0",
        "id": o.id.to_string(),
        "source": source,
        "type": o.event.event_type(),
        "subject": o.app,
        "time": timestamp,
        "datacontenttype": "application/json",
        "dataschema": format!("https://cdevents.dev/{SPEC_VERSION}/schema/service-{}-event",
            match o.event {
                ServiceEvent::Deployed => "deployed",
                ServiceEvent::Upgraded => "upgraded",
                ServiceEvent::RolledBack => "rolledback",
                ServiceEvent::Removed => "removed",
            }),
        "data": cdevent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_is_a_package_url() {
        assert_eq!(
            artifact_purl("registry.example.com/checkout-web:1.4.2"),
            "pkg:docker/checkout-web@1.4.2?repository_url=registry.example.com"
        );
        assert_eq!(artifact_purl("nginx:1.27"), "pkg:docker/nginx@1.27");
        assert_eq!(
            artifact_purl("localhost:5000/team/web"),
            "pkg:docker/team/web?repository_url=localhost:5000"
        );
    }

    #[test]
    fn times_are_rfc_3339() {
        assert_eq!(rfc3339(1_500_000), "1970-01-01T00:00:01.5Z");
    }
}
