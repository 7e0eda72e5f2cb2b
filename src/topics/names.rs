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
                f.write_str(&self.0)
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
}
