//! What a Herald cluster node needs beyond the commit log (`commitlog::jetstream`): for now
//! the leases that elect one holder of a role (the writer, a shard of deliveries) in a NATS
//! JetStream key-value bucket (`lease`).
//!
//! Nothing here runs unless a node is started with NATS; a single node on sled never names it.

pub mod lease;

pub use lease::{Lease, LeaseBucket, LeaseError};
