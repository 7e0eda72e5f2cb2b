//! The platform beside each region's schedulers: clients of the APIs mot drives and polls
//! (Marathon, Consul; Mesos through its poller), and the simulator that plays them
//! locally (`mot platform-sim`).

pub mod calls;
pub mod consul;
pub mod http;
pub mod marathon;
pub mod sim;
