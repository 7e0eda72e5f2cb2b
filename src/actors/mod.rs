//! The agents: each an actix actor, supervised per region, forming pipelines over Kafka topics.
//!
//! Empty for now; the pipeline machinery (sources, last-record caches, sinks, supervision) lands
//! here with the first agent.
