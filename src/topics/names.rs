//! Names that cannot be invalid: environments, regions, clusters and topic base names.
//!
//! Every name mot puts on the wire (a topic, a consumer group, a key prefix) is built from these,
//! so a bad name is refused once, at the boundary (config file, HTTP request), with a message that
//! says what was wrong.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} `{value}`: {problem}")]
pub struct NameError {
    /// What kind of name it was meant to be ("region", "cluster", ...).
    pub kind: &'static str,
    /// The refused value, as given.
    pub value: String,
    /// What is wrong with it, in words a person can act on.
    pub problem: String,
}

impl NameError {
    fn new(kind: &'static str, value: &str, problem: impl Into<String>) -> Self {
        Self {
            kind,
            value: value.to_owned(),
            problem: problem.into(),
        }
    }
}

/// Lowercase letters, digits and single inner dashes: safe in Kafka topic names, consumer group
/// ids, Cassandra values and URLs alike.
fn check_dashed(kind: &'static str, value: &str, max_len: usize) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::new(kind, value, "must not be empty"));
    }
    if value.len() > max_len {
        return Err(NameError::new(
            kind,
            value,
            format!(
                "is {} characters long, at most {max_len} allowed",
                value.len()
            ),
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(NameError::new(
            kind,
            value,
            format!("contains `{c}`; only lowercase letters, digits and `-` are allowed"),
        ));
    }
    if value.starts_with('-') || value.ends_with('-') || value.contains("--") {
        return Err(NameError::new(
            kind,
            value,
            "must not start or end with `-` nor contain `--`",
        ));
    }
    Ok(())
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(value: String) -> Result<Self, NameError> {
                Self::parse(&value)
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(value: &str) -> Result<Self, NameError> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_newtype!(
    /// An application environment: `production`, `stage`, `test`, ...
    Environment
);

impl Environment {
    /// At most 32 characters of `[a-z0-9]`.
    pub fn parse(value: &str) -> Result<Self, NameError> {
        check_dashed("environment", value, 32)?;
        if value.contains('-') {
            return Err(NameError::new(
                "environment",
                value,
                "must not contain `-` (it separates the environment from the place in a region name)",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// Production environments are on the production side of the production | non-production
    /// boundary; everything else receives central topics through a pseudo-central cluster.
    pub fn is_production(&self) -> bool {
        matches!(self.0.as_str(), "production" | "prod")
    }
}

string_newtype!(
    /// A region: an environment and a place, `<env>-<place>`, e.g. `test-us-east-1`.
    RegionName
);

impl RegionName {
    /// `<env>-<place>` with both parts present, at most 64 characters.
    pub fn parse(value: &str) -> Result<Self, NameError> {
        check_dashed("region", value, 64)?;
        match value.split_once('-') {
            Some((env, place)) if !env.is_empty() && !place.is_empty() => {
                Environment::parse(env).map_err(|e| NameError::new("region", value, e.problem))?;
                Ok(Self(value.to_owned()))
            }
            _ => Err(NameError::new(
                "region",
                value,
                "must be `<env>-<place>`, e.g. `test-us-east-1`",
            )),
        }
    }

    /// The environment part: `test` in `test-us-east-1`.
    pub fn environment(&self) -> Environment {
        let env = self
            .0
            .split_once('-')
            .map(|(env, _)| env)
            .unwrap_or(&self.0);
        Environment(env.to_owned())
    }

    /// The place part: `us-east-1` in `test-us-east-1`.
    pub fn place(&self) -> &str {
        self.0.split_once('-').map(|(_, place)| place).unwrap_or("")
    }
}

string_newtype!(
    /// A Kafka cluster, named after its datacenter, e.g. `stage-us-east-1`.
    ClusterName
);

impl ClusterName {
    /// At most 64 characters of `[a-z0-9-]`.
    pub fn parse(value: &str) -> Result<Self, NameError> {
        check_dashed("cluster", value, 64)?;
        Ok(Self(value.to_owned()))
    }
}

string_newtype!(
    /// A topic's base name, before any suffix: `mot-deployment-state-change`.
    ///
    /// Base names use dashes only, so the suffixes mot appends (`-<env>-<region>` towards a
    /// region, `.<env>-<region>` towards the central cluster) can always be told apart, and
    /// `.` / `_` (which Kafka treats as colliding in metric names) never appear in them.
    TopicBase
);

impl TopicBase {
    /// At most 120 characters of `[a-z0-9-]`, leaving room for the longest suffix within
    /// Kafka's 249-character limit.
    pub fn parse(value: &str) -> Result<Self, NameError> {
        check_dashed("topic", value, 120)?;
        Ok(Self(value.to_owned()))
    }
}

string_newtype!(
    /// An availability zone of a region, e.g. `a`; each zone has its own scheduler.
    ZoneName
);

impl ZoneName {
    /// At most 32 characters of `[a-z0-9-]`.
    pub fn parse(value: &str) -> Result<Self, NameError> {
        check_dashed("zone", value, 32)?;
        Ok(Self(value.to_owned()))
    }
}

string_newtype!(
    /// An application, e.g. `checkout-web`: safe as a record key, a scheduler id and a URL segment.
    AppName
);

impl AppName {
    /// At most 63 characters of `[a-z0-9-]`.
    pub fn parse(value: &str) -> Result<Self, NameError> {
        check_dashed("app", value, 63)?;
        Ok(Self(value.to_owned()))
    }
}

/// Kafka's own limit on topic names.
pub const MAX_TOPIC_LEN: usize = 249;

/// A full topic name as it exists on a cluster.
///
/// mot builds these only through [`TopicName::local`], [`TopicName::to_region`] and
/// [`TopicName::from_region`], so its own topics never contain `_` and carry `.` only as the
/// regional suffix separator: no two of them collide in Kafka's metric names, and a suffixed name
/// can be split back into its base and region. [`TopicName::parse`] checks a name given from
/// outside against Kafka's rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(into = "String")]
pub struct TopicName(String);

impl TopicName {
    /// A topic that stays in its datacenter: the bare base name.
    pub fn local(base: &TopicBase) -> Self {
        Self(base.as_str().to_owned())
    }

    /// A central -> regional topic: `<base>-<env>-<region>`.
    pub fn to_region(base: &TopicBase, region: &RegionName) -> Self {
        Self(format!("{base}-{region}"))
    }

    /// A regional topic as it arrives in the central cluster: `<base>.<env>-<region>`.
    pub fn from_region(base: &TopicBase, region: &RegionName) -> Self {
        Self(format!("{base}.{region}"))
    }

    /// Splits a `<base>.<env>-<region>` name back into its parts.
    pub fn split_from_region(&self) -> Option<(TopicBase, RegionName)> {
        let (base, region) = self.0.split_once('.')?;
        Some((
            TopicBase::parse(base).ok()?,
            RegionName::parse(region).ok()?,
        ))
    }

    /// Checks any topic name against Kafka's rules: 1 to 249 characters of `[a-zA-Z0-9._-]`,
    /// not `.` or `..`.
    pub fn parse(value: &str) -> Result<Self, NameError> {
        if value.is_empty() || value == "." || value == ".." {
            return Err(NameError::new(
                "topic",
                value,
                "must not be empty, `.` or `..`",
            ));
        }
        if value.len() > MAX_TOPIC_LEN {
            return Err(NameError::new(
                "topic",
                value,
                format!(
                    "is {} characters long, Kafka allows at most {MAX_TOPIC_LEN}",
                    value.len()
                ),
            ));
        }
        if let Some(c) = value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(NameError::new(
                "topic",
                value,
                format!("contains `{c}`; Kafka allows only letters, digits, `.`, `_` and `-`"),
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl From<TopicName> for String {
    fn from(name: TopicName) -> String {
        name.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_splits_into_environment_and_place() {
        let region = RegionName::parse("test-us-east-1").unwrap();
        assert_eq!(region.environment().as_str(), "test");
        assert_eq!(region.place(), "us-east-1");
        assert!(!region.environment().is_production());
        assert!(RegionName::parse("production-us-west-2")
            .unwrap()
            .environment()
            .is_production());
    }

    #[test]
    fn region_without_place_is_refused_with_the_reason() {
        let err = RegionName::parse("test").unwrap_err();
        assert_eq!(err.kind, "region");
        assert!(err.problem.contains("<env>-<place>"), "{err}");
    }

    #[test]
    fn uppercase_and_dots_are_refused() {
        assert!(ClusterName::parse("Stage-us-east-1").is_err());
        let err = TopicBase::parse("mot.state").unwrap_err();
        assert!(err.to_string().contains("contains `.`"), "{err}");
    }

    #[test]
    fn topic_names_follow_the_seed() {
        let base = TopicBase::parse("mot-deployment-launch-events").unwrap();
        let region = RegionName::parse("test-us-east-1").unwrap();
        assert_eq!(
            TopicName::to_region(&base, &region).as_str(),
            "mot-deployment-launch-events-test-us-east-1"
        );
        let state = TopicBase::parse("mot-deployment-state-change").unwrap();
        let arrived = TopicName::from_region(&state, &region);
        assert_eq!(
            arrived.as_str(),
            "mot-deployment-state-change.test-us-east-1"
        );
        assert_eq!(arrived.split_from_region(), Some((state.clone(), region)));
        assert_eq!(
            TopicName::local(&state).as_str(),
            "mot-deployment-state-change"
        );
    }

    #[test]
    fn names_deserialize_through_validation() {
        #[derive(Deserialize)]
        struct Holder {
            #[allow(dead_code)]
            region: RegionName,
        }
        let err = toml::from_str::<Holder>("region = \"us east\"")
            .err()
            .unwrap();
        assert!(err.to_string().contains("region `us east`"), "{err}");
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        fn region() -> impl Strategy<Value = RegionName> {
            ("[a-z][a-z0-9]{0,9}", "[a-z0-9]{1,8}(-[a-z0-9]{1,8}){0,3}")
                .prop_map(|(env, place)| RegionName::parse(&format!("{env}-{place}")).unwrap())
        }

        fn base() -> impl Strategy<Value = TopicBase> {
            "[a-z0-9]{1,20}(-[a-z0-9]{1,20}){0,5}".prop_map(|b| TopicBase::parse(&b).unwrap())
        }

        proptest! {
            #[test]
            fn every_built_topic_name_is_valid_for_kafka(b in base(), r in region()) {
                for name in [TopicName::local(&b), TopicName::to_region(&b, &r), TopicName::from_region(&b, &r)] {
                    prop_assert!(TopicName::parse(name.as_str()).is_ok(), "{}", name);
                    prop_assert!(name.as_str().len() <= MAX_TOPIC_LEN);
                    // No `_`: never collides with a `.` name in Kafka's metric names.
                    prop_assert!(!name.as_str().contains('_'));
                }
            }

            #[test]
            fn central_suffix_splits_back_into_base_and_region(b in base(), r in region()) {
                let name = TopicName::from_region(&b, &r);
                prop_assert_eq!(name.split_from_region(), Some((b, r)));
            }

            #[test]
            fn suffixed_and_bare_names_never_meet(b in base(), b2 in base(), r in region()) {
                let central = TopicName::from_region(&b, &r);
                prop_assert_ne!(&central, &TopicName::to_region(&b2, &r));
                prop_assert_ne!(&central, &TopicName::local(&b2));
            }

            #[test]
            fn names_outside_the_charset_are_refused(s in "[a-z]{0,5}[^a-z0-9-][a-z]{0,5}") {
                prop_assert!(RegionName::parse(&s).is_err());
                prop_assert!(ClusterName::parse(&s).is_err());
                prop_assert!(TopicBase::parse(&s).is_err());
                prop_assert!(AppName::parse(&s).is_err());
            }

            #[test]
            fn valid_names_round_trip(r in region()) {
                prop_assert_eq!(RegionName::parse(r.as_str()), Ok(r.clone()));
                let env = r.environment();
                prop_assert_eq!(env.as_str(), r.as_str().split('-').next().unwrap());
            }
        }
    }
}
