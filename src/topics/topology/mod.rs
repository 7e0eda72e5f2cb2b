//! The topology: which cluster is whose home, how every topic travels, and the plan of every
//! agent's reads and writes, computed from the configuration and checked against the seed's
//! three rules of Kafka etiquette.
//!
//! The rules, as `mot topology check` names them:
//! 1. never produce to a topic outside your datacenter;
//! 2. consume from the local cluster whenever possible;
//! 3. topics consumed from a foreign datacenter carry an identifying suffix.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use serde::Serialize;

use super::catalog::{self, Flow, TopicSpec};
use super::names::{ClusterName, RegionName, TopicBase, TopicName};
use crate::config::{Carrier, ClusterConfig, Config, RegionConfig, Rename};

/// One of the seed's rules of Kafka etiquette.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Rule {
    /// Never produce to a topic outside your datacenter.
    NeverProduceAbroad,
    /// Consume from the local cluster whenever possible.
    ConsumeLocally,
    /// Topics consumed from a foreign datacenter carry an identifying suffix.
    SuffixForeignTopics,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rule::NeverProduceAbroad => "rule 1 (never produce to a topic outside your datacenter)",
            Rule::ConsumeLocally => "rule 2 (consume from the local cluster whenever possible)",
            Rule::SuffixForeignTopics => {
                "rule 3 (topics consumed from a foreign datacenter carry an identifying suffix)"
            }
        })
    }
}

/// One thing wrong with a topology.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The etiquette rule broken, if it is one of the three; otherwise a completeness problem.
    pub rule: Option<Rule>,
    /// Where in the file: `routes[2]`, `regions[1]`.
    pub field: String,
    /// The cluster involved.
    pub cluster: Option<ClusterName>,
    /// The topic involved.
    pub topic: Option<String>,
    /// What is wrong.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rule {
            Some(rule) => write!(f, "{rule}: ")?,
            None => f.write_str("incomplete topology: ")?,
        }
        write!(f, "{}: {}", self.field, self.problem)?;
        if let Some(cluster) = &self.cluster {
            write!(f, " [cluster {cluster}")?;
            if let Some(topic) = &self.topic {
                write!(f, ", topic {topic}")?;
            }
            f.write_str("]")?;
        }
        write!(f, "\n    fix: {}", self.fix)
    }
}

/// A topology refused by [`Topology::checked`]: every problem, one per line.
#[derive(Debug, thiserror::Error)]
#[error("the topology has {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct TopologyError {
    pub problems: Vec<Problem>,
}

/// A topic's journey over one hop, carried by a localizer or MirrorMaker 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedRoute {
    /// Index of the `[[routes]]` entry this comes from.
    pub route: usize,
    /// The region whose topic this is.
    pub region: RegionName,
    /// The topic's base name.
    pub base: TopicBase,
    /// The topic's name on the source cluster.
    pub topic: TopicName,
    /// Source cluster.
    pub from: ClusterName,
    /// Destination cluster.
    pub to: ClusterName,
    /// The topic's name on the destination cluster.
    #[serde(rename = "as")]
    pub as_topic: TopicName,
    /// Who carries it.
    pub carrier: Carrier,
    /// Where the carrier runs.
    pub runs_in: ClusterName,
}

/// Where an agent reads from or writes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Endpoint {
    /// A Kafka topic on a cluster.
    Kafka {
        cluster: ClusterName,
        topic: TopicName,
        /// Whether the cluster is outside the agent's datacenter, and what justifies it.
        #[serde(skip_serializing_if = "Option::is_none")]
        foreign: Option<String>,
    },
    /// A Cassandra table of the projections.
    Cassandra { table: String },
    /// A platform API beside the region's scheduler.
    Platform { api: String },
    /// HTTP requests from users.
    Http { api: String },
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Kafka {
                cluster,
                topic,
                foreign,
            } => {
                write!(f, "kafka {cluster:<22} {topic}")?;
                if let Some(why) = foreign {
                    write!(f, "  (foreign: {why})")?;
                }
                Ok(())
            }
            Endpoint::Cassandra { table } => write!(f, "cassandra {table}"),
            Endpoint::Platform { api } => write!(f, "platform {api}"),
            Endpoint::Http { api } => write!(f, "http {api}"),
        }
    }
}

/// Which layer an agent belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    Service,
    Regional,
    Localizer,
    Persistence,
}

/// One agent's place in the flows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentPlan {
    pub layer: Layer,
    pub agent: String,
    /// The region the agent works for (none for the API).
    pub region: Option<RegionName>,
    /// The datacenter (cluster) it runs in: the only cluster it produces to.
    pub runs_in: ClusterName,
    pub reads: Vec<Endpoint>,
    pub writes: Vec<Endpoint>,
}

/// Every agent and every route of a topology.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub central: RegionName,
    pub agents: Vec<AgentPlan>,
    pub routes: Vec<PlannedRoute>,
}

/// The topology of a configuration: homes, routes and paths.
#[derive(Debug, Clone)]
pub struct Topology {
    config: Config,
}

impl Topology {
    /// The topology of a validated configuration.
    pub fn new(config: &Config) -> Self {
        Self {
            config: config.clone(),
        }
    }

    /// The topology of `config`, refused when it breaks a rule of Kafka etiquette or is
    /// incomplete.
    pub fn checked(config: &Config) -> Result<Self, TopologyError> {
        let topology = Self::new(config);
        let problems = topology.check();
        if problems.is_empty() {
            Ok(topology)
        } else {
            Err(TopologyError { problems })
        }
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The central region.
    pub fn central_region(&self) -> &RegionConfig {
        self.config
            .region(&self.config.topology.central)
            .unwrap_or_else(|| unreachable!("validated: topology.central is a region"))
    }

    /// The central cluster: the central region's home.
    pub fn central_cluster(&self) -> &ClusterConfig {
        self.cluster(&self.central_region().cluster)
    }

    fn cluster(&self, name: &ClusterName) -> &ClusterConfig {
        self.config
            .cluster(name)
            .unwrap_or_else(|| unreachable!("validated: cluster {name} exists"))
    }

    fn is_central(&self, region: &RegionConfig) -> bool {
        region.name == self.config.topology.central
    }

    /// Every route, expanded into one hop per topic and region.
    pub fn routes(&self) -> Vec<PlannedRoute> {
        self.expand_routes().0
    }

    /// Expands `[[routes]]` into hops; also returns the problems found on the way.
    fn expand_routes(&self) -> (Vec<PlannedRoute>, Vec<Problem>) {
        let central = &self.central_region().cluster;
        let mut planned = Vec::new();
        let mut problems = Vec::new();
        for (i, route) in self.config.routes.iter().enumerate() {
            let field = format!("routes[{i}]");
            let runs_in = route.runs_in.clone().unwrap_or_else(|| route.to.clone());
            if runs_in != route.to {
                problems.push(Problem {
                    rule: Some(Rule::NeverProduceAbroad),
                    field: format!("{field}.runs_in"),
                    cluster: Some(route.to.clone()),
                    topic: None,
                    problem: format!(
                        "the carrier runs in {runs_in} but produces to {}, a foreign datacenter",
                        route.to
                    ),
                    fix: format!(
                        "run the carrier where it produces: runs_in = \"{}\" (or drop runs_in)",
                        route.to
                    ),
                });
            }
            for base in &route.topics {
                let Some(spec) = catalog::find(base) else {
                    problems.push(Problem {
                        rule: None,
                        field: format!("{field}.topics"),
                        cluster: Some(route.from.clone()),
                        topic: Some(base.to_string()),
                        problem: format!("`{base}` is not a topic mot knows"),
                        fix: format!(
                            "use one of: {}",
                            catalog::ALL
                                .iter()
                                .filter(|s| s.flow != Flow::Local)
                                .map(|s| s.base)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    });
                    continue;
                };
                let before = planned.len();
                for region in &self.config.regions {
                    if self.is_central(region) {
                        continue;
                    }
                    let pseudo = region.pseudo_central.as_ref();
                    let hop = match spec.flow {
                        Flow::Local => None,
                        Flow::ToRegion => {
                            let from_ok = &route.from == central || Some(&route.from) == pseudo;
                            let to_ok = Some(&route.to) == pseudo || route.to == region.cluster;
                            let name = TopicName::to_region(base, &region.name);
                            (from_ok && to_ok).then(|| (name.clone(), name))
                        }
                        Flow::ToCentral => {
                            let source = if route.from == region.cluster {
                                Some(TopicName::local(base))
                            } else if Some(&route.from) == pseudo {
                                Some(TopicName::from_region(base, &region.name))
                            } else {
                                None
                            };
                            let to_ok = &route.to == central || Some(&route.to) == pseudo;
                            source.filter(|_| to_ok).map(|source| {
                                let arrives = match route.rename {
                                    Rename::Suffix => TopicName::from_region(base, &region.name),
                                    Rename::Identity => source.clone(),
                                };
                                (source, arrives)
                            })
                        }
                    };
                    if let Some((topic, as_topic)) = hop {
                        if spec.flow == Flow::ToCentral
                            && route.rename == Rename::Identity
                            && topic == TopicName::local(base)
                        {
                            problems.push(Problem {
                                rule: Some(Rule::SuffixForeignTopics),
                                field: format!("{field}.rename"),
                                cluster: Some(route.to.clone()),
                                topic: Some(as_topic.to_string()),
                                problem: format!(
                                    "{}'s `{base}` would arrive in {} without the `.{}` suffix, indistinguishable from every other region's",
                                    region.name, route.to, region.name
                                ),
                                fix: "use rename = \"suffix\" (the default)".into(),
                            });
                        }
                        planned.push(PlannedRoute {
                            route: i,
                            region: region.name.clone(),
                            base: base.clone(),
                            topic,
                            from: route.from.clone(),
                            to: route.to.clone(),
                            as_topic,
                            carrier: route.carrier,
                            runs_in: runs_in.clone(),
                        });
                    }
                }
                if planned.len() == before {
                    let problem = match spec.flow {
                        Flow::Local => format!("`{base}` is local to each datacenter; carrying it makes a foreign consumer for a stream that needs no outside information"),
                        Flow::ToRegion => format!("no region receives central topics through {} -> {}, so nobody consumes what it carries", route.from, route.to),
                        Flow::ToCentral => format!("{} -> {} is not on any region's way to the central cluster ({central}), so nobody consumes what it carries", route.from, route.to),
                    };
                    problems.push(Problem {
                        rule: Some(Rule::ConsumeLocally),
                        field: format!("{field}.topics"),
                        cluster: Some(route.from.clone()),
                        topic: Some(base.to_string()),
                        problem,
                        fix: "remove the topic from this route (or the route)".into(),
                    });
                }
            }
        }
        (planned, problems)
    }

    /// Where `region`'s regional layer reads its central topic `spec` (a [`Flow::ToRegion`]
    /// topic), and why that cluster: its own cluster when a route brings the topic there, its
    /// pseudo-central cluster for a non-production region, the central cluster otherwise.
    pub fn central_topic_source(
        &self,
        region: &RegionConfig,
        spec: &TopicSpec,
        routes: &[PlannedRoute],
    ) -> (ClusterName, TopicName, Option<String>) {
        let topic = TopicName::to_region(&spec.base(), &region.name);
        let delivered = |cluster: &ClusterName| {
            routes
                .iter()
                .any(|r| &r.to == cluster && r.as_topic == topic)
        };
        if self.is_central(region) || delivered(&region.cluster) {
            return (region.cluster.clone(), topic, None);
        }
        match &region.pseudo_central {
            Some(pseudo) if !region.name.environment().is_production() || delivered(pseudo) => (
                pseudo.clone(),
                topic,
                Some("central topic via the pseudo-central cluster".into()),
            ),
            _ => (
                self.central_region().cluster.clone(),
                topic,
                Some("central topic, consumed from the central cluster".into()),
            ),
        }
    }

    /// Where the persistence layer reads `region`'s regional topic `spec` in the central
    /// cluster: the bare name for the central region's own topics, the suffixed one otherwise.
    pub fn archived_topic(&self, region: &RegionConfig, spec: &TopicSpec) -> TopicName {
        if self.is_central(region) {
            TopicName::local(&spec.base())
        } else {
            TopicName::from_region(&spec.base(), &region.name)
        }
    }

    /// Every agent with what it reads and writes, and every route.
    pub fn plan(&self) -> Plan {
        let routes = self.routes();
        let central = self.central_region().cluster.clone();
        let kafka = |cluster: &ClusterName, topic: TopicName| Endpoint::Kafka {
            cluster: cluster.clone(),
            topic,
            foreign: None,
        };
        let local = |cluster: &ClusterName, spec: &TopicSpec| {
            kafka(cluster, TopicName::local(&spec.base()))
        };
        let mut agents = Vec::new();

        let for_each_region = |spec: TopicSpec| {
            self.config
                .regions
                .iter()
                .map(|r| kafka(&central, TopicName::to_region(&spec.base(), &r.name)))
                .collect::<Vec<_>>()
        };
        let mut api_writes = vec![local(&central, &catalog::DEPLOYMENT_REQUESTS)];
        api_writes.extend(for_each_region(catalog::TRAFFIC_EVENTS));
        api_writes.push(Endpoint::Cassandra {
            table: "deployments".into(),
        });
        agents.push(AgentPlan {
            layer: Layer::Service,
            agent: "WebApi".into(),
            region: None,
            runs_in: central.clone(),
            reads: vec![Endpoint::Http {
                api: "POST /deployments, POST /deployments/{id}/traffic".into(),
            }],
            writes: api_writes,
        });
        agents.push(AgentPlan {
            layer: Layer::Service,
            agent: "DeploymentFanOutAgent".into(),
            region: Some(self.config.topology.central.clone()),
            runs_in: central.clone(),
            reads: vec![local(&central, &catalog::DEPLOYMENT_REQUESTS)],
            writes: for_each_region(catalog::DEPLOYMENT_LAUNCH_EVENTS),
        });
        let mut rollout_reads = vec![local(&central, &catalog::DEPLOYMENT_REQUESTS)];
        for region in &self.config.regions {
            for spec in [
                catalog::DEPLOYMENT_STATE_CHANGE,
                catalog::DEPLOYMENT_COMPLETE_EVENTS,
            ] {
                rollout_reads.push(kafka(&central, self.archived_topic(region, &spec)));
            }
        }
        rollout_reads.push(local(&central, &catalog::ROLLOUTS));
        rollout_reads.push(Endpoint::Cassandra {
            table: "deployments_by_app, deployments, deployment_events, idempotency_keys, app_generations"
                .into(),
        });
        let mut rollout_writes = for_each_region(catalog::DEPLOYMENT_LAUNCH_EVENTS);
        rollout_writes.push(local(&central, &catalog::DEPLOYMENT_REQUESTS));
        rollout_writes.push(local(&central, &catalog::ROLLOUTS));
        rollout_writes.push(local(&central, &catalog::CDEVENTS));
        agents.push(AgentPlan {
            layer: Layer::Service,
            agent: "RolloutAgent".into(),
            region: Some(self.config.topology.central.clone()),
            runs_in: central.clone(),
            reads: rollout_reads,
            writes: rollout_writes,
        });

        for region in &self.config.regions {
            let home = &region.cluster;
            let name = Some(region.name.clone());
            let central_read = |spec: &TopicSpec| {
                let (cluster, topic, foreign) = self.central_topic_source(region, spec, &routes);
                Endpoint::Kafka {
                    cluster,
                    topic,
                    foreign,
                }
            };
            let mut push = |agent: &str, reads: Vec<Endpoint>, writes: Vec<Endpoint>| {
                agents.push(AgentPlan {
                    layer: Layer::Regional,
                    agent: agent.into(),
                    region: name.clone(),
                    runs_in: home.clone(),
                    reads,
                    writes,
                })
            };
            push(
                "DeploymentOperationAgent",
                vec![
                    central_read(&catalog::DEPLOYMENT_LAUNCH_EVENTS),
                    local(home, &catalog::DESIRED_STATE),
                ],
                vec![
                    Endpoint::Platform {
                        api: "scheduler (Marathon), per zone".into(),
                    },
                    local(home, &catalog::DEPLOYMENT_COMPLETE_EVENTS),
                    local(home, &catalog::DESIRED_STATE),
                ],
            );
            push(
                "TrafficAgent",
                vec![central_read(&catalog::TRAFFIC_EVENTS)],
                vec![
                    Endpoint::Platform {
                        api: "service catalog (Consul), per zone".into(),
                    },
                    local(home, &catalog::DEPLOYMENT_COMPLETE_EVENTS),
                ],
            );
            for (agent, api, spec) in [
                (
                    "MarathonStateAgent",
                    "Marathon /v2/apps, per zone",
                    catalog::MARATHON_APP_STATE,
                ),
                (
                    "MesosStateAgent",
                    "Mesos master state, per zone",
                    catalog::MESOS_TASK_STATE,
                ),
                (
                    "ConsulStateAgent",
                    "Consul catalog and health, per zone",
                    catalog::CONSUL_APP_STATE,
                ),
            ] {
                push(
                    agent,
                    vec![Endpoint::Platform { api: api.into() }],
                    vec![local(home, &spec)],
                );
            }
            push(
                "InstanceConsulStateAgent",
                vec![local(home, &catalog::CONSUL_APP_STATE)],
                vec![local(home, &catalog::INSTANCE_STATE_CHANGE)],
            );
            push(
                "DeploymentMendingAgent",
                vec![
                    local(home, &catalog::DESIRED_STATE),
                    local(home, &catalog::MARATHON_APP_STATE),
                ],
                vec![
                    Endpoint::Platform {
                        api: "scheduler (Marathon), per zone".into(),
                    },
                    local(home, &catalog::DEPLOYMENT_COMPLETE_EVENTS),
                ],
            );
            push(
                "DeploymentStateAgent",
                vec![
                    local(home, &catalog::MARATHON_APP_STATE),
                    local(home, &catalog::MESOS_TASK_STATE),
                    local(home, &catalog::CONSUL_APP_STATE),
                ],
                vec![local(home, &catalog::DEPLOYMENT_STATE_CHANGE)],
            );
        }

        for route in routes.iter().filter(|r| r.carrier == Carrier::Mot) {
            agents.push(AgentPlan {
                layer: Layer::Localizer,
                agent: "Localizer".into(),
                region: Some(route.region.clone()),
                runs_in: route.runs_in.clone(),
                reads: vec![Endpoint::Kafka {
                    cluster: route.from.clone(),
                    topic: route.topic.clone(),
                    foreign: Some(format!("routes[{}]", route.route)),
                }],
                writes: vec![kafka(&route.to, route.as_topic.clone())],
            });
        }

        for region in &self.config.regions {
            for (agent, spec, table) in [
                (
                    "DeploymentStateArchivalAgent",
                    catalog::DEPLOYMENT_STATE_CHANGE,
                    "deployment_zones, deployment_events, region_freshness",
                ),
                (
                    "InstanceArchivalAgent",
                    catalog::INSTANCE_STATE_CHANGE,
                    "deployment_instances, deployment_events",
                ),
                (
                    "CompleteEventArchivalAgent",
                    catalog::DEPLOYMENT_COMPLETE_EVENTS,
                    "deployment_zones, deployment_events",
                ),
            ] {
                agents.push(AgentPlan {
                    layer: Layer::Persistence,
                    agent: agent.into(),
                    region: Some(region.name.clone()),
                    runs_in: central.clone(),
                    reads: vec![kafka(&central, self.archived_topic(region, &spec))],
                    writes: vec![Endpoint::Cassandra {
                        table: table.into(),
                    }],
                });
            }
        }
        agents.push(AgentPlan {
            layer: Layer::Persistence,
            agent: "RolloutArchivalAgent".into(),
            region: Some(self.config.topology.central.clone()),
            runs_in: central.clone(),
            reads: vec![local(&central, &catalog::ROLLOUTS)],
            writes: vec![Endpoint::Cassandra {
                table: "deployment_rollouts, deployment_events".into(),
            }],
        });
        Plan {
            central: self.config.topology.central.clone(),
            agents,
            routes,
        }
    }

    /// Every way the topology breaks the etiquette or is incomplete. Empty means it is sound.
    pub fn check(&self) -> Vec<Problem> {
        let (routes, mut problems) = self.expand_routes();
        problems.extend(self.check_loops());
        let central = self.central_region().cluster.clone();

        let mut homes: BTreeMap<&ClusterName, &RegionName> = BTreeMap::new();
        for (i, region) in self.config.regions.iter().enumerate() {
            if let Some(other) = homes.insert(&region.cluster, &region.name) {
                problems.push(Problem {
                    rule: None,
                    field: format!("regions[{i}].cluster"),
                    cluster: Some(region.cluster.clone()),
                    topic: None,
                    problem: format!(
                        "is already the home of {other}; two regions' local topics would mix"
                    ),
                    fix: "give each region a Kafka cluster of its own".into(),
                });
            }
        }

        for (i, region) in self.config.regions.iter().enumerate() {
            if self.is_central(region) {
                continue;
            }
            let field = format!("regions[{i}]");
            let production = region.name.environment().is_production();
            if !production {
                match &region.pseudo_central {
                    None => problems.push(Problem {
                        rule: None,
                        field: format!("{field}.pseudo_central"),
                        cluster: Some(region.cluster.clone()),
                        topic: None,
                        problem: format!("{} is not a production region, so central topics reach it through a pseudo-central cluster; none is named", region.name),
                        fix: "name the non-production cluster that relays central topics, e.g. pseudo_central = \"stage-us-east-1\"".into(),
                    }),
                    Some(pseudo) if pseudo == &central => problems.push(Problem {
                        rule: None,
                        field: format!("{field}.pseudo_central"),
                        cluster: Some(pseudo.clone()),
                        topic: None,
                        problem: "is the central cluster; the pseudo-central cluster exists so that only one link crosses the production | non-production boundary".into(),
                        fix: "name a non-production cluster".into(),
                    }),
                    Some(_) => {}
                }
            }
            for spec in catalog::ALL.iter().filter(|s| s.flow == Flow::ToRegion) {
                let (cluster, topic, _) = self.central_topic_source(region, spec, &routes);
                if cluster != central && !reaches(&routes, (&central, &topic), (&cluster, &topic)) {
                    problems.push(Problem {
                        rule: None,
                        field: "routes".into(),
                        cluster: Some(cluster.clone()),
                        topic: Some(topic.to_string()),
                        problem: format!("{} reads {topic} in {cluster}, but no route carries it there from the central cluster {central}", region.name),
                        fix: format!("add a route from = \"{central}\", to = \"{cluster}\", topics = [\"{}\"]", spec.base),
                    });
                }
            }
            for spec in catalog::ALL.iter().filter(|s| s.flow == Flow::ToCentral) {
                let start = TopicName::local(&spec.base());
                let goal = TopicName::from_region(&spec.base(), &region.name);
                if !reaches(&routes, (&region.cluster, &start), (&central, &goal)) {
                    problems.push(Problem {
                        rule: None,
                        field: "routes".into(),
                        cluster: Some(region.cluster.clone()),
                        topic: Some(spec.base.into()),
                        problem: format!("{}'s {} has no path to the central cluster {central}, where it should arrive as {goal}", region.name, spec.base),
                        fix: format!("add a route from = \"{}\", to = \"{central}\", topics = [\"{}\"]", region.cluster, spec.base),
                    });
                }
            }
        }

        let mut seen: BTreeMap<(&ClusterName, &TopicName), &PlannedRoute> = BTreeMap::new();
        for route in &routes {
            if let Some(first) = seen.insert((&route.to, &route.as_topic), route) {
                if first.route != route.route || first.topic != route.topic {
                    problems.push(Problem {
                        rule: None,
                        field: format!("routes[{}]", route.route),
                        cluster: Some(route.to.clone()),
                        topic: Some(route.as_topic.to_string()),
                        problem: format!("routes[{}] already delivers this topic here; records would arrive twice", first.route),
                        fix: "keep one of the two routes".into(),
                    });
                }
            }
        }
        problems
    }

    /// Routes that loop: following `from -> to` for one topic base comes back to where it began.
    fn check_loops(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut bases: BTreeSet<&TopicBase> = BTreeSet::new();
        for route in &self.config.routes {
            bases.extend(route.topics.iter());
        }
        for base in bases {
            let edges: Vec<(usize, &ClusterName, &ClusterName)> = self
                .config
                .routes
                .iter()
                .enumerate()
                .filter(|(_, r)| r.topics.contains(base))
                .map(|(i, r)| (i, &r.from, &r.to))
                .collect();
            for &(i, from, to) in &edges {
                // Is `from` reachable again from `to`?
                let mut queue = VecDeque::from([(to, vec![from.as_str(), to.as_str()])]);
                let mut visited = BTreeSet::new();
                while let Some((at, path)) = queue.pop_front() {
                    if at == from {
                        problems.push(Problem {
                            rule: None,
                            field: format!("routes[{i}]"),
                            cluster: Some(from.clone()),
                            topic: Some(base.to_string()),
                            problem: format!("routes loop: {}", path.join(" -> ")),
                            fix: "remove one direction; a topic travels one way".into(),
                        });
                        break;
                    }
                    if !visited.insert(at) {
                        continue;
                    }
                    for &(_, f, t) in &edges {
                        if f == at {
                            let mut next = path.clone();
                            next.push(t.as_str());
                            queue.push_back((t, next));
                        }
                    }
                }
            }
        }
        // Report each loop once, at its first route.
        problems.sort_by(|a, b| a.field.cmp(&b.field));
        let mut reported: BTreeSet<(Option<String>, BTreeSet<String>)> = BTreeSet::new();
        problems.retain(|p| {
            let clusters = p
                .problem
                .trim_start_matches("routes loop: ")
                .split(" -> ")
                .map(str::to_owned)
                .collect();
            reported.insert((p.topic.clone(), clusters))
        });
        problems
    }
}

/// Whether `(cluster, topic)` can travel to `goal` over `routes`.
fn reaches(
    routes: &[PlannedRoute],
    start: (&ClusterName, &TopicName),
    goal: (&ClusterName, &TopicName),
) -> bool {
    let mut queue = VecDeque::from([(start.0.clone(), start.1.clone())]);
    let mut visited = BTreeSet::new();
    while let Some((cluster, topic)) = queue.pop_front() {
        if (&cluster, &topic) == goal {
            return true;
        }
        if !visited.insert((cluster.clone(), topic.clone())) {
            continue;
        }
        for r in routes
            .iter()
            .filter(|r| r.from == cluster && r.topic == topic)
        {
            queue.push_back((r.to.clone(), r.as_topic.clone()));
        }
    }
    false
}

impl Plan {
    /// A table a person reads at a glance.
    pub fn to_table(&self) -> String {
        let mut out = format!("central region: {}\n\nAGENTS\n", self.central);
        for agent in &self.agents {
            let region = agent
                .region
                .as_ref()
                .map_or("-".to_owned(), |r| r.to_string());
            out.push_str(&format!(
                "{:<11} {:<22} {:<32} runs in {}\n",
                format!("{:?}", agent.layer).to_lowercase(),
                region,
                agent.agent,
                agent.runs_in
            ));
            for read in &agent.reads {
                out.push_str(&format!("    reads   {read}\n"));
            }
            for write in &agent.writes {
                out.push_str(&format!("    writes  {write}\n"));
            }
        }
        out.push_str("\nROUTES\n");
        out.push_str(&format!(
            "{:<46} {:<22} {:<22} {:<46} {:<13} runs in\n",
            "topic", "from", "to", "as", "carried by"
        ));
        for r in &self.routes {
            let carrier = match r.carrier {
                Carrier::Mot => "mot localizer",
                Carrier::Mirrormaker2 => "mirrormaker2",
            };
            out.push_str(&format!(
                "{:<46} {:<22} {:<22} {:<46} {:<13} {}\n",
                r.topic, r.from, r.to, r.as_topic, carrier, r.runs_in
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests;
