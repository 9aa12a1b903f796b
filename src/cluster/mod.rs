//! Cluster mode (`herald serve --nats URLS --node-id NAME`): several Herald nodes on one
//! replicated commit log, a NATS JetStream stream (`commitlog::jetstream`).
//!
//! - **One writer, elected** (`node`): the node holding the `writer` lease in a JetStream KV
//!   bucket (`lease`) runs the committer, whose commits go to the stream and are acknowledged
//!   to clients only once JetStream acknowledged them. Before accepting writes it applies the
//!   stream up to its last sequence (`follow::catch_up`); a deposed writer is fenced by the
//!   stream itself. It runs the websocket lanes (its websocket endpoint is the one binding
//!   tokens name) and records the lane reports of other nodes (`reports`).
//! - **Delivery is spread** (`shards`): rest-hook subscriptions fall in `cluster.shards`
//!   shards, each node delivers the shards whose lease it holds (a fair share), from its own
//!   store's outbox, and reports results to the writer; a dead node's shards are taken over
//!   once their leases expire.
//! - **Every node materializes** (`follow`): the others apply the stream, in order, to their
//!   own sled store through `ingest::Replica`, and serve reads, search, `$status` and `$events`
//!   from it. They forward writes (and binding-token requests) to the writer over HTTP
//!   (`forward`) and answer once their own store has applied the writer's commit: a client
//!   reads its own writes on the node it wrote through.
//! - **Roles change in place**: the node loop (`node::serve`) runs `crate::serve` once per role
//!   on the same listener; a follower that wins the lease becomes the writer, a writer that
//!   loses it (or whose log broke) becomes a follower, after discarding its store (it may hold
//!   commits the stream refused) and rebuilding it from the stream.
//!
//! Nothing here runs unless a node is started with NATS; a single node on sled never names it.

pub mod follow;
pub mod forward;
pub mod lease;
pub mod node;
pub mod reports;
pub mod shards;
pub mod snapshot;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::commitlog::{JetStreamLog, LogReader};

pub use lease::{Lease, LeaseBucket, LeaseError};
pub use node::serve;

/// The lease key of the writer role.
pub const WRITER_LEASE: &str = "writer";
/// The lease key a follower holds while it takes a snapshot.
pub const SNAPSHOT_LEASE: &str = "snapshot";
/// The bucket the leases are kept in.
pub const LEASE_BUCKET: &str = "herald_leases";
/// A request header marking a write another node forwarded (it is never forwarded again).
pub const FORWARDED: &str = "x-herald-forwarded-by";

/// What a node knows of its cluster, whatever its role.
pub struct Node {
    pub node_id: String,
    pub client: async_nats::Client,
    /// The log's subject prefix (`herald.log`): followers wake on `<prefix>.>`.
    pub log_subject: String,
    /// Where the other nodes reach this one (`cluster.advertise_url`).
    pub advertise_url: String,
    pub leases: LeaseBucket,
    pub reader: LogReader,
    pub forward_timeout: Duration,
    pub snapshots: snapshot::Snapshots,
    /// `cluster.snapshot_every` (0: no snapshots).
    pub snapshot_every: u64,
    /// The delivery shards this node holds (`shards`).
    pub shards: shards::Shards,
}

/// The role a `crate::serve` run plays; `ended` is cancelled when the role must end (a
/// follower won the lease, a writer lost it).
pub enum Role {
    Writer { node: Arc<Node>, log: Arc<JetStreamLog>, ended: CancellationToken },
    Follower { node: Arc<Node>, ended: CancellationToken },
}

impl Role {
    pub fn ended(&self) -> &CancellationToken {
        match self {
            Role::Writer { ended, .. } | Role::Follower { ended, .. } => ended,
        }
    }

    pub fn node(&self) -> &Arc<Node> {
        match self {
            Role::Writer { node, .. } | Role::Follower { node, .. } => node,
        }
    }
}

/// The last commit seq a follower's store applied, watched by forwarded writes waiting to
/// read their own commit.
pub type Applied = watch::Receiver<u64>;
