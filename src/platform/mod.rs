//! The platform beside each region's schedulers: clients of the APIs mot drives and polls
//! (Marathon today; Mesos and Consul through the pollers), and the simulator that plays them
//! locally (`mot platform-sim`).

pub mod calls;
pub mod marathon;
pub mod sim;
