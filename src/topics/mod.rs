//! Topics, clusters and the Kafka etiquette: names that cannot be invalid, the catalog of topics
//! mot knows, the topology (homes, routes, the plan of every flow, `mot topology check`), and the
//! Kafka clients that can only be built the way the seed's rules allow.
//!
//! Everything that names a topic or points a client at a cluster goes through this module.

pub mod catalog;
pub mod clients;
pub mod mm2;
pub mod names;
pub mod produce;
pub mod topology;
