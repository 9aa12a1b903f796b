//! Delivery shards: rest-hook subscriptions are spread over `cluster.shards` shards by a
//! stable hash of their id, and each node delivers the shards whose lease it holds.
//!
//! Decisions:
//! - **Leases, not assignment.** A shard's lease is the key `shard-<n>` in the lease bucket
//!   (`lease`): taken with a KV create, kept by compare-and-set renewals every third of the
//!   TTL, lost when its holder stops renewing. Nobody assigns shards, so nobody has to be alive
//!   for a dead node's shards to become free: JetStream expires the keys.
//! - **A fair share each.** Every node marks its presence (`member-<node>`, same TTL) and
//!   aims at `ceil(shards / members)` shards: it gives up the ones above that (so that a node
//!   that joins gets work) and tries to take free ones up to it, starting at an offset its id
//!   hashes to (so that nodes do not all race for shard 0).
//! - **Its own clock bounds a holder's tenure** (as for the writer lease): a shard whose
//!   renewal has not answered by the lease's end is dropped at that instant, and its lanes
//!   stop. What a stale holder still reports is refused by the writer, which checks that the
//!   reporting node holds the subscription's shard (`reports`).
//! - **Websocket subscriptions are not sharded**: their lanes run on the writer, where
//!   sockets bound on any node are relayed (`forward`).
//! - A new holder starts a shard's lanes from the cursors its own store has applied: what the
//!   previous holder delivered but its store had not applied yet is delivered again (at least
//!   once), in order, from the first event not acknowledged.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Lease, LeaseBucket, LeaseError};

/// The shards a node holds now.
pub type Held = Arc<BTreeSet<u32>>;

/// The lease key of shard `n`.
pub fn shard_key(n: u32) -> String {
    format!("shard-{n}")
}

const MEMBER_PREFIX: &str = "member-";

/// FNV-1a, 64 bits: stable across builds and platforms (the std hasher promises neither),
/// and every node of a cluster must place a subscription in the same shard.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// The shard subscription `sub` belongs to, of `count`.
pub fn shard_of(sub: &str, count: u32) -> u32 {
    (fnv1a(sub.as_bytes()) % u64::from(count.max(1))) as u32
}

/// What this node delivers: the shards it holds, watched.
#[derive(Clone)]
pub struct Shards {
    pub count: u32,
    pub held: watch::Receiver<Held>,
}

impl Shards {
    /// Whether this node holds the shard of `sub` now.
    pub fn owns(&self, sub: &str) -> bool {
        self.held.borrow().contains(&shard_of(sub, self.count))
    }
}

/// Keeps this node's fair share of the shards (module doc) until `stop`, telling `held`.
pub async fn keep(leases: LeaseBucket, node_id: String, count: u32, held: watch::Sender<Held>, stop: CancellationToken) {
    let every = leases.ttl() / 3;
    let member = format!("{MEMBER_PREFIX}{node_id}");
    let offset = (fnv1a(node_id.as_bytes()) % u64::from(count.max(1))) as u32;
    let mut mine: BTreeMap<u32, Lease> = BTreeMap::new();
    loop {
        if let Ok(Err(e)) = tokio::time::timeout(every, leases.announce(&member, &node_id)).await {
            tracing::warn!(error = %e, "cannot mark this node present for delivery shards");
        }
        // Renew what is held; drop what is lost, or cannot be renewed before it ends.
        let shards: Vec<u32> = mine.keys().copied().collect();
        for shard in shards {
            let Some(mut lease) = mine.remove(&shard) else { continue };
            match tokio::time::timeout(every, leases.renew(&mut lease)).await {
                Ok(Ok(())) => {
                    mine.insert(shard, lease);
                }
                Ok(Err(LeaseError::Lost { .. })) => tracing::warn!(shard, "a delivery shard's lease was lost"),
                Ok(Err(_)) | Err(_) if Instant::now() + every < lease.valid_until() => {
                    mine.insert(shard, lease);
                }
                Ok(Err(_)) | Err(_) => tracing::warn!(shard, "a delivery shard's lease could not be renewed before it ends; dropping it"),
            }
        }
        let members = match tokio::time::timeout(every, leases.count(MEMBER_PREFIX)).await {
            Ok(Ok(n)) => Some(n.max(1)),
            _ => None,
        };
        if let Some(members) = members {
            let target = count.div_ceil(members as u32) as usize;
            while mine.len() > target {
                let Some((shard, lease)) = mine.pop_last() else { break };
                publish(&held, &mine);
                let _ = leases.release(lease).await;
                tracing::info!(shard, target, "gave a delivery shard up for another node");
            }
            for k in 0..count {
                if mine.len() >= target {
                    break;
                }
                let shard = (offset + k) % count;
                if mine.contains_key(&shard) {
                    continue;
                }
                if let Ok(Ok(Some(lease))) = tokio::time::timeout(every, leases.acquire(&shard_key(shard), &node_id)).await {
                    tracing::info!(shard, "took a delivery shard");
                    mine.insert(shard, lease);
                }
            }
        }
        publish(&held, &mine);
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(every) => {}
        }
    }
    held.send_replace(Arc::new(BTreeSet::new()));
    for (_, lease) in mine {
        let _ = leases.release(lease).await;
    }
}

fn publish(held: &watch::Sender<Held>, mine: &BTreeMap<u32, Lease>) {
    let now: BTreeSet<u32> = mine.keys().copied().collect();
    held.send_if_modified(|h| {
        if **h == now {
            return false;
        }
        *h = Arc::new(now);
        true
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscription_has_one_shard_everywhere_and_shards_are_used_evenly() {
        // Fixed values: a change of hash would move every subscription between nodes of a
        // cluster running two builds.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let mut per = [0u32; 16];
        for i in 0..16_000 {
            per[shard_of(&format!("sub-{i}"), 16) as usize] += 1;
        }
        assert!(per.iter().all(|&n| (800..1200).contains(&n)), "{per:?}");
        assert_eq!(shard_of("x", 1), 0);
    }
}
