//! InstanceConsulStateAgent, as the seed lists it:
//! 1. read ConsulAppState (from the ConsulStateAgent, on `mot-consul-app-state`);
//! 2. convert it into a collection of InstanceInfo records;
//! 3. compare each InstanceInfo with the previous record by key;
//! 4. publish the latest record to `mot-instance-state-change` on creation, update or deletion.
//!
//! The conversion ([`instances`]) is a plain function; the diff is the shared last-record cache.

use crate::models::consul::ConsulAppState;
use crate::models::envelope::{Envelope, Kind};
use crate::models::instance::{CheckResult, Health, InstanceInfo};
use crate::topics::catalog;
use crate::topics::names::{RegionName, TopicName};

use super::cache::LastRecordCache;
use super::pipeline::{Agent, AgentContext, Incoming, Outcome, Outgoing, PipelineError, Source};

/// Consul's check id prefix for a service in maintenance mode (traffic off).
const MAINTENANCE_CHECK: &str = "_service_maintenance:";
/// Service meta key the scheduler integration sets to the deployment that launched an instance.
pub const META_DEPLOYMENT_ID: &str = "mot-deployment-id";

/// Converts one service's Consul state in one zone into its instances.
pub fn instances(region: &RegionName, state: &ConsulAppState) -> Vec<InstanceInfo> {
    state
        .entries
        .iter()
        .map(|entry| {
            let mut checks: Vec<CheckResult> = entry
                .checks
                .iter()
                .map(|c| CheckResult {
                    name: c.name.clone(),
                    status: health(&c.status),
                    output: c.output.clone(),
                })
                .collect();
            checks.sort_by(|a, b| a.name.cmp(&b.name));
            let mut tags = entry.service.tags.clone();
            tags.sort();
            let host = if entry.service.address.is_empty() {
                entry.node.address.clone()
            } else {
                entry.service.address.clone()
            };
            InstanceInfo {
                region: region.clone(),
                zone: state.zone.clone(),
                service: state.service.clone(),
                instance_id: entry.service.id.clone(),
                deployment_id: entry.service.meta.get(META_DEPLOYMENT_ID).cloned(),
                node: entry.node.node.clone(),
                host,
                port: entry.service.port,
                tags,
                // Maintenance mode turns traffic off; it says nothing of the instance's health.
                health: entry
                    .checks
                    .iter()
                    .filter(|c| !c.check_id.starts_with(MAINTENANCE_CHECK))
                    .map(|c| health(&c.status))
                    .max()
                    .unwrap_or(Health::Passing),
                checks,
                traffic: !entry
                    .checks
                    .iter()
                    .any(|c| c.check_id.starts_with(MAINTENANCE_CHECK)),
            }
        })
        .collect()
}

/// A Consul check status as a health.
fn health(status: &str) -> Health {
    match status {
        "passing" => Health::Passing,
        "warning" => Health::Warning,
        _ => Health::Critical,
    }
}

/// The group a ConsulAppState describes completely: `<region>/<zone>/<service>`.
fn group(region: &RegionName, state: &ConsulAppState) -> String {
    format!("{region}/{}/{}", state.zone, state.service)
}

/// The agent.
pub struct InstanceConsulStateAgent {
    region: RegionName,
    cache: LastRecordCache,
    output: TopicName,
}

impl InstanceConsulStateAgent {
    /// The pure step: the records to publish for one input.
    pub fn changes(
        &self,
        input: &Envelope<ConsulAppState>,
        cause: &Incoming,
    ) -> Result<Vec<Outgoing>, String> {
        let current = if input.kind == Kind::Deleted {
            Vec::new()
        } else {
            instances(&self.region, &input.payload)
        };
        let mut serialized = Vec::with_capacity(current.len());
        for instance in &current {
            let json = serde_json::to_vec(instance).map_err(|e| e.to_string())?;
            serialized.push((instance.key(), json));
        }
        let changes = self
            .cache
            .diff_group(&group(&self.region, &input.payload), serialized);
        let mut records = Vec::with_capacity(changes.len());
        for change in changes {
            let head = Envelope::new(
                change.kind,
                change.key.clone(),
                self.region.clone(),
                input.time_us,
                (),
            );
            let record = Outgoing::envelope(
                self.output.clone(),
                "InstanceInfo",
                head,
                &change.json,
                cause,
            )
            .map_err(|e| e.to_string())?;
            records.extend(change.published_as(record));
        }
        Ok(records)
    }
}

impl Agent for InstanceConsulStateAgent {
    const NAME: &'static str = "InstanceConsulStateAgent";

    fn source(_: &AgentContext) -> Result<Source, PipelineError> {
        Ok(Source::Home(vec![TopicName::local(
            &catalog::CONSUL_APP_STATE.base(),
        )]))
    }

    async fn build(ctx: &AgentContext) -> Result<Self, PipelineError> {
        let output = TopicName::local(&catalog::INSTANCE_STATE_CHANGE.base());
        let cache = LastRecordCache::rebuild(Self::NAME, ctx, &output, InstanceInfo::group).await?;
        Ok(Self {
            region: ctx.region.name.clone(),
            cache,
            output,
        })
    }

    async fn process(&mut self, incoming: &Incoming) -> Outcome {
        let input = match incoming.decode::<ConsulAppState>() {
            Ok(input) => input,
            Err(rejected) => return rejected,
        };
        if input.origin != self.region {
            return Outcome::Skip;
        }
        match self.changes(&input, incoming) {
            Ok(records) => Outcome::Publish(records),
            Err(reason) => Outcome::Reject(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::consul::{ConsulCheck, ConsulNode, ConsulService, ConsulServiceEntry};
    use crate::topics::names::ZoneName;

    fn entry(id: &str, port: u16, status: &str) -> ConsulServiceEntry {
        ConsulServiceEntry {
            node: ConsulNode {
                node: format!("node-{id}"),
                address: "10.0.0.1".into(),
                datacenter: None,
            },
            service: ConsulService {
                id: id.into(),
                service: "checkout-web".into(),
                tags: vec!["v1".into(), "http".into()],
                address: String::new(),
                port,
                meta: [(META_DEPLOYMENT_ID.to_owned(), "d-1".to_owned())].into(),
            },
            checks: vec![ConsulCheck {
                check_id: format!("service:{id}"),
                name: "http".into(),
                status: status.into(),
                output: "ok".into(),
                service_id: id.into(),
            }],
        }
    }

    fn state(entries: Vec<ConsulServiceEntry>) -> ConsulAppState {
        ConsulAppState {
            service: "checkout-web".into(),
            zone: ZoneName::parse("a").unwrap(),
            entries,
        }
    }

    fn agent() -> InstanceConsulStateAgent {
        InstanceConsulStateAgent {
            region: RegionName::parse("test-us-east-1").unwrap(),
            cache: LastRecordCache::new(),
            output: TopicName::local(&catalog::INSTANCE_STATE_CHANGE.base()),
        }
    }

    fn cause() -> Incoming {
        Incoming {
            topic: "mot-consul-app-state".into(),
            partition: 0,
            offset: 0,
            key: None,
            value: None,
            headers: vec![("traceparent".into(), b"00-abc-def-01".to_vec())],
            timestamp_ms: None,
        }
    }

    fn run(
        agent: &InstanceConsulStateAgent,
        kind: Kind,
        s: ConsulAppState,
    ) -> Vec<(Kind, String, Envelope<InstanceInfo>)> {
        let input = Envelope::new(kind, s.key(), agent.region.clone(), 42, s);
        let records = agent.changes(&input, &cause()).unwrap();
        crate::actors::cache::tests::assert_deletions_tombstoned(&records);
        records
            .into_iter()
            .filter(|o| o.value.is_some())
            .map(|o| {
                let env: Envelope<InstanceInfo> =
                    crate::models::envelope::decode(o.key.as_deref(), o.value.as_deref()).unwrap();
                assert!(
                    o.headers.iter().any(|(k, _)| k == "traceparent"),
                    "trace context carried"
                );
                (env.kind, env.key.clone(), env)
            })
            .collect()
    }

    #[test]
    fn conversion_takes_host_port_health_and_tags() {
        let region = RegionName::parse("test-us-east-1").unwrap();
        let mut e = entry("i-1", 31000, "warning");
        e.checks.push(ConsulCheck {
            check_id: "_service_maintenance:i-1".into(),
            name: "maintenance".into(),
            status: "critical".into(),
            output: String::new(),
            service_id: "i-1".into(),
        });
        let got = instances(&region, &state(vec![e]));
        assert_eq!(got.len(), 1);
        let i = &got[0];
        assert_eq!(i.key(), "test-us-east-1/a/checkout-web/i-1");
        assert_eq!((i.host.as_str(), i.port), ("10.0.0.1", 31000));
        assert_eq!(i.tags, ["http", "v1"]);
        assert_eq!(
            i.health,
            Health::Warning,
            "the maintenance check is traffic, not health"
        );
        assert_eq!(i.checks.len(), 2, "both checks shown");
        assert_eq!(i.deployment_id.as_deref(), Some("d-1"));
        assert!(!i.traffic);
    }

    #[test]
    fn creation_publishes_every_instance() {
        let a = agent();
        let out = run(
            &a,
            Kind::Snapshot,
            state(vec![entry("i-1", 1, "passing"), entry("i-2", 2, "passing")]),
        );
        let kinds: Vec<_> = out.iter().map(|(k, key, _)| (*k, key.as_str())).collect();
        assert_eq!(
            kinds,
            [
                (Kind::Created, "test-us-east-1/a/checkout-web/i-1"),
                (Kind::Created, "test-us-east-1/a/checkout-web/i-2")
            ]
        );
        assert_eq!(out[0].2.time_us, 42, "event time is the observation's");
    }

    #[test]
    fn unchanged_state_publishes_nothing() {
        let a = agent();
        run(&a, Kind::Snapshot, state(vec![entry("i-1", 1, "passing")]));
        assert!(run(&a, Kind::Snapshot, state(vec![entry("i-1", 1, "passing")])).is_empty());
    }

    #[test]
    fn one_field_changing_publishes_one_update() {
        let a = agent();
        run(
            &a,
            Kind::Snapshot,
            state(vec![entry("i-1", 1, "passing"), entry("i-2", 2, "passing")]),
        );
        let out = run(
            &a,
            Kind::Snapshot,
            state(vec![
                entry("i-1", 1, "passing"),
                entry("i-2", 2, "critical"),
            ]),
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, Kind::Updated);
        assert_eq!(out[0].2.payload.health, Health::Critical);
    }

    #[test]
    fn one_of_three_disappearing_publishes_its_deletion() {
        let a = agent();
        run(
            &a,
            Kind::Snapshot,
            state(vec![
                entry("i-1", 1, "passing"),
                entry("i-2", 2, "passing"),
                entry("i-3", 3, "passing"),
            ]),
        );
        let out = run(
            &a,
            Kind::Snapshot,
            state(vec![entry("i-1", 1, "passing"), entry("i-3", 3, "passing")]),
        );
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].0, out[0].1.as_str()),
            (Kind::Deleted, "test-us-east-1/a/checkout-web/i-2")
        );
        assert_eq!(
            out[0].2.payload.port, 2,
            "a deletion carries the last state known"
        );
    }

    #[test]
    fn a_whole_service_disappearing_deletes_all_its_instances() {
        let a = agent();
        run(
            &a,
            Kind::Snapshot,
            state(vec![entry("i-1", 1, "passing"), entry("i-2", 2, "passing")]),
        );
        let emptied = run(&a, Kind::Snapshot, state(vec![]));
        assert_eq!(
            emptied
                .iter()
                .filter(|(k, _, _)| *k == Kind::Deleted)
                .count(),
            2
        );
        run(&a, Kind::Snapshot, state(vec![entry("i-1", 1, "passing")]));
        let deleted = run(&a, Kind::Deleted, state(vec![entry("i-1", 1, "passing")]));
        assert_eq!(deleted.len(), 1);
        assert_eq!(deleted[0].0, Kind::Deleted);
    }
}
