//! The plan of the dev topology, written out by hand from the seed, and topologies that break
//! each rule.

use std::path::Path;

use super::*;
use crate::topics::clients::{ForeignTopic, Subscription};

fn dev_toml() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/dev/mot.toml")).unwrap()
}

fn topology(text: &str) -> Topology {
    Topology::new(&Config::from_toml(Path::new("test.toml"), text).unwrap())
}

fn dev() -> Topology {
    topology(&dev_toml())
}

fn edited(from: &str, to: &str) -> Topology {
    let text = dev_toml();
    assert!(text.contains(from), "dev/mot.toml has no `{from}`");
    topology(&text.replacen(from, to, 1))
}

fn n(s: &str) -> ClusterName {
    ClusterName::parse(s).unwrap()
}

fn t(s: &str) -> TopicName {
    TopicName::parse(s).unwrap()
}

fn agent<'p>(plan: &'p Plan, agent: &str, region: &str) -> &'p AgentPlan {
    plan.agents
        .iter()
        .find(|a| a.agent == agent && a.region.as_ref().map(|r| r.as_str()) == Some(region))
        .unwrap_or_else(|| panic!("no {agent} for {region}"))
}

fn kafka(cluster: &str, topic: &str) -> (ClusterName, TopicName) {
    (n(cluster), t(topic))
}

fn kafka_reads(a: &AgentPlan) -> Vec<(ClusterName, TopicName)> {
    a.reads
        .iter()
        .filter_map(|e| match e {
            Endpoint::Kafka { cluster, topic, .. } => Some((cluster.clone(), topic.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn dev_topology_keeps_the_three_rules() {
    assert_eq!(dev().check(), vec![]);
}

#[test]
fn dev_routes_are_the_seeds() {
    let routes: Vec<_> = dev()
        .routes()
        .into_iter()
        .map(|r| {
            (
                r.topic.to_string(),
                r.from.to_string(),
                r.to.to_string(),
                r.as_topic.to_string(),
                r.runs_in.to_string(),
            )
        })
        .collect();
    let expected = [
        (
            "mot-deployment-launch-events-test-us-east-1",
            "production-us-east-1",
            "stage-us-east-1",
            "mot-deployment-launch-events-test-us-east-1",
            "stage-us-east-1",
        ),
        (
            "mot-traffic-events-test-us-east-1",
            "production-us-east-1",
            "stage-us-east-1",
            "mot-traffic-events-test-us-east-1",
            "stage-us-east-1",
        ),
        (
            "mot-deployment-complete-events",
            "test-us-east-1",
            "production-us-east-1",
            "mot-deployment-complete-events.test-us-east-1",
            "production-us-east-1",
        ),
        (
            "mot-instance-state-change",
            "test-us-east-1",
            "production-us-east-1",
            "mot-instance-state-change.test-us-east-1",
            "production-us-east-1",
        ),
        (
            "mot-deployment-state-change",
            "test-us-east-1",
            "production-us-east-1",
            "mot-deployment-state-change.test-us-east-1",
            "production-us-east-1",
        ),
        (
            "mot-deployment-complete-events",
            "production-us-west-2",
            "production-us-east-1",
            "mot-deployment-complete-events.production-us-west-2",
            "production-us-east-1",
        ),
        (
            "mot-instance-state-change",
            "production-us-west-2",
            "production-us-east-1",
            "mot-instance-state-change.production-us-west-2",
            "production-us-east-1",
        ),
        (
            "mot-deployment-state-change",
            "production-us-west-2",
            "production-us-east-1",
            "mot-deployment-state-change.production-us-west-2",
            "production-us-east-1",
        ),
    ]
    .map(|(a, b, c, d, e)| {
        (
            a.to_owned(),
            b.to_owned(),
            c.to_owned(),
            d.to_owned(),
            e.to_owned(),
        )
    });
    assert_eq!(routes, expected);
}

#[test]
fn test_region_launch_topic_is_produced_centrally_relayed_to_stage_and_consumed_there() {
    let plan = dev().plan();
    let api = plan.agents.iter().find(|a| a.agent == "WebApi").unwrap();
    assert_eq!(api.runs_in, n("production-us-east-1"));
    assert!(api.writes.contains(&Endpoint::Kafka {
        cluster: n("production-us-east-1"),
        topic: t("mot-deployment-requests"),
        foreign: None,
    }));
    let fan_out = agent(&plan, "DeploymentFanOutAgent", "production-us-east-1");
    assert_eq!(fan_out.runs_in, n("production-us-east-1"));
    assert_eq!(
        kafka_reads(fan_out),
        [kafka("production-us-east-1", "mot-deployment-requests")]
    );
    assert!(fan_out.writes.contains(&Endpoint::Kafka {
        cluster: n("production-us-east-1"),
        topic: t("mot-deployment-launch-events-test-us-east-1"),
        foreign: None,
    }));
    let op = agent(&plan, "DeploymentOperationAgent", "test-us-east-1");
    assert_eq!(op.runs_in, n("test-us-east-1"));
    assert_eq!(
        kafka_reads(op),
        [
            kafka(
                "stage-us-east-1",
                "mot-deployment-launch-events-test-us-east-1"
            ),
            kafka("test-us-east-1", "mot-desired-state"),
        ],
        "launches where the topology relays them; what was applied, at home"
    );
    let localizer = plan
        .agents
        .iter()
        .find(|a| {
            a.agent == "Localizer"
                && kafka_reads(a)
                    == [kafka(
                        "production-us-east-1",
                        "mot-deployment-launch-events-test-us-east-1",
                    )]
        })
        .unwrap();
    assert_eq!(
        localizer.runs_in,
        n("stage-us-east-1"),
        "the localizer runs at its destination"
    );
}

#[test]
fn test_region_state_change_arrives_in_central_with_its_suffix() {
    let plan = dev().plan();
    let state = agent(&plan, "DeploymentStateAgent", "test-us-east-1");
    assert!(state.writes.contains(&Endpoint::Kafka {
        cluster: n("test-us-east-1"),
        topic: t("mot-deployment-state-change"),
        foreign: None,
    }));
    let archival = agent(&plan, "DeploymentStateArchivalAgent", "test-us-east-1");
    assert_eq!(archival.runs_in, n("production-us-east-1"));
    assert_eq!(
        kafka_reads(archival),
        [kafka(
            "production-us-east-1",
            "mot-deployment-state-change.test-us-east-1"
        )]
    );
}

#[test]
fn production_region_consumes_central_directly() {
    let topology = dev();
    let plan = topology.plan();
    let op = agent(&plan, "DeploymentOperationAgent", "production-us-west-2");
    assert_eq!(
        kafka_reads(op),
        [
            kafka(
                "production-us-east-1",
                "mot-deployment-launch-events-production-us-west-2"
            ),
            kafka("production-us-west-2", "mot-desired-state"),
        ]
    );
    assert!(!plan
        .routes
        .iter()
        .any(|r| r.topic.as_str().ends_with("production-us-west-2")
            && r.base.as_str().contains("launch")));
}

#[test]
fn every_agent_produces_only_in_the_datacenter_it_runs_in() {
    for a in dev().plan().agents {
        for w in &a.writes {
            if let Endpoint::Kafka { cluster, .. } = w {
                assert_eq!(
                    cluster, &a.runs_in,
                    "{} ({:?}) writes to {cluster}",
                    a.agent, a.region
                );
            }
        }
    }
}

#[test]
fn foreign_subscriptions_come_only_from_paths_and_routes_and_carry_the_suffix() {
    let topology = dev();
    for region in &topology.config().regions {
        for spec in [catalog::DEPLOYMENT_LAUNCH_EVENTS, catalog::TRAFFIC_EVENTS] {
            match topology.central_topic_subscription(region, &spec) {
                Subscription::Home { home, topic } => {
                    assert_eq!(region.name, topology.config().topology.central);
                    assert_eq!(home.name(), &region.cluster);
                    assert_eq!(topic, TopicName::to_region(&spec.base(), &region.name));
                }
                Subscription::Foreign(sub) => {
                    assert_ne!(sub.cluster(), &region.cluster);
                    let ForeignTopic::ForRegion(suffixed) = sub.topic() else {
                        panic!("launch paths read region-named topics")
                    };
                    assert_eq!(suffixed.region(), &region.name);
                    assert!(sub
                        .topic_to_read()
                        .as_str()
                        .ends_with(&format!("-{}", region.name)));
                }
            }
        }
    }
    for route in topology.routes() {
        let sub = topology.localizer_source(&route);
        assert_eq!(sub.cluster(), &route.from);
        let lands = match sub.topic() {
            ForeignTopic::ForRegion(s) => s,
            ForeignTopic::Mirrored { lands_as, .. } => lands_as,
        };
        assert_eq!(lands.name(), &route.as_topic);
        assert_eq!(lands.region(), &route.region);
        assert_eq!(topology.localizer_home(&route).name(), &route.to);
    }
}

fn rules(problems: &[Problem]) -> Vec<Option<Rule>> {
    problems.iter().map(|p| p.rule).collect()
}

#[test]
fn a_carrier_running_at_the_source_breaks_rule_1() {
    let topology = edited(
        "to = \"stage-us-east-1\"\n",
        "to = \"stage-us-east-1\"\nruns_in = \"production-us-east-1\"\n",
    );
    let problems = topology.check();
    assert_eq!(rules(&problems), [Some(Rule::NeverProduceAbroad)]);
    assert_eq!(problems[0].field, "routes[0].runs_in");
    assert!(problems[0]
        .to_string()
        .starts_with("rule 1 (never produce to a topic outside your datacenter)"));
    assert!(problems[0].fix.contains("runs_in = \"stage-us-east-1\""));
}

#[test]
fn carrying_a_local_topic_abroad_breaks_rule_2() {
    let topology = edited(
        "topics = [\"mot-deployment-complete-events\",",
        "topics = [\"mot-consul-app-state\", \"mot-deployment-complete-events\",",
    );
    let problems = topology.check();
    assert_eq!(rules(&problems), [Some(Rule::ConsumeLocally)]);
    assert_eq!(problems[0].topic.as_deref(), Some("mot-consul-app-state"));
    assert_eq!(problems[0].cluster, Some(n("test-us-east-1")));
}

#[test]
fn a_route_nobody_needs_breaks_rule_2() {
    let mut text = dev_toml();
    text.push_str("\n[[routes]]\nfrom = \"stage-us-east-1\"\nto = \"production-us-west-2\"\ntopics = [\"mot-deployment-state-change\"]\n");
    let problems = topology(&text).check();
    assert_eq!(rules(&problems), [Some(Rule::ConsumeLocally)]);
    assert!(
        problems[0].problem.contains("nobody consumes"),
        "{}",
        problems[0]
    );
}

#[test]
fn regional_topics_arriving_without_suffix_break_rule_3() {
    let topology = edited(
        "from = \"test-us-east-1\"\nto = \"production-us-east-1\"\n",
        "from = \"test-us-east-1\"\nto = \"production-us-east-1\"\nrename = \"identity\"\n",
    );
    let problems = topology.check();
    assert!(
        problems
            .iter()
            .any(|p| p.rule == Some(Rule::SuffixForeignTopics) && p.field == "routes[1].rename"),
        "{problems:#?}"
    );
    assert!(problems
        .iter()
        .all(|p| p.rule == Some(Rule::SuffixForeignTopics) || p.rule.is_none()));
}

#[test]
fn routes_that_loop_are_refused() {
    let mut text = dev_toml();
    text.push_str("\n[[routes]]\nfrom = \"stage-us-east-1\"\nto = \"production-us-east-1\"\ntopics = [\"mot-deployment-launch-events\"]\n");
    let problems = topology(&text).check();
    let looped: Vec<_> = problems
        .iter()
        .filter(|p| p.problem.starts_with("routes loop"))
        .collect();
    assert_eq!(looped.len(), 1, "{problems:#?}");
    assert!(looped[0]
        .problem
        .contains("production-us-east-1 -> stage-us-east-1 -> production-us-east-1"));
}

#[test]
fn a_non_production_region_with_no_path_to_central_is_refused() {
    let text = dev_toml().replacen(
        "[[routes]]\nfrom = \"test-us-east-1\"\nto = \"production-us-east-1\"\ntopics = [\"mot-deployment-complete-events\", \"mot-instance-state-change\", \"mot-deployment-state-change\"]\ncarrier = \"mot\"\n",
        "",
        1,
    );
    assert_ne!(text, dev_toml());
    let problems = topology(&text).check();
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems
        .iter()
        .all(|p| p.problem.contains("test-us-east-1's")
            && p.problem.contains("no path to the central cluster")));
}

#[test]
fn a_non_production_region_without_pseudo_central_is_refused() {
    let topology = edited("pseudo_central = \"stage-us-east-1\"\n", "");
    let problems = topology.check();
    assert!(
        problems
            .iter()
            .any(|p| p.field == "regions[1].pseudo_central"
                && p.problem.contains("not a production region")),
        "{problems:#?}"
    );
}

#[test]
fn missing_relay_to_pseudo_central_is_refused() {
    let topology = edited(
        "topics = [\"mot-deployment-launch-events\", \"mot-traffic-events\"]",
        "topics = [\"mot-traffic-events\"]",
    );
    let problems = topology.check();
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(
        problems[0].topic.as_deref(),
        Some("mot-deployment-launch-events-test-us-east-1")
    );
    assert!(problems[0]
        .fix
        .contains("from = \"production-us-east-1\", to = \"stage-us-east-1\""));
}

#[test]
fn two_regions_sharing_a_home_cluster_are_refused() {
    let topology = edited(
        "cluster = \"production-us-west-2\"",
        "cluster = \"test-us-east-1\"",
    );
    let problems = topology.check();
    assert!(
        problems.iter().any(|p| p.field == "regions[2].cluster"
            && p.problem.contains("already the home of test-us-east-1")),
        "{problems:#?}"
    );
}
