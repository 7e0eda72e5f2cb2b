//! The records that travel on mot's topics: the versioned envelope every record is wrapped in,
//! and the payloads agents exchange (raw platform state, instance and deployment records).

pub mod cdevents;
pub mod consul;
pub mod deployment;
pub mod desired;
pub mod envelope;
pub mod instance;
pub mod rollout;
pub mod state;
