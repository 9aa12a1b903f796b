//! Leases in a JetStream KV bucket (`herald::cluster::lease`) against a real NATS server:
//! acquiring is exclusive, renewing keeps the lease past its TTL, a holder that stops
//! renewing loses it after the TTL to the next who asks, and a stale holder can neither renew
//! nor release a lease another acquired.

use std::time::{Duration, Instant};

use herald::cluster::{LeaseBucket, LeaseError};

use crate::cluster_log::connect;
use crate::support::nats::NatsCluster;

const TTL: Duration = Duration::from_secs(1);

async fn bucket(nats: &NatsCluster) -> LeaseBucket {
    let js = async_nats::jetstream::new(connect(nats).await);
    LeaseBucket::open(&js, "herald_leases", TTL, 1).await.unwrap()
}

/// Polls `acquire` until it succeeds, failing after `within`; returns the lease and how long
/// it took.
async fn acquire_within(leases: &LeaseBucket, key: &str, holder: &str, within: Duration) -> (herald::cluster::Lease, Duration) {
    let started = Instant::now();
    loop {
        if let Some(lease) = leases.acquire(key, holder).await.unwrap() {
            return (lease, started.elapsed());
        }
        assert!(started.elapsed() < within, "{holder} could not acquire {key} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_lease_is_exclusive_and_renewing_keeps_it_past_its_ttl() {
    let Some(nats) = NatsCluster::single() else { return };
    let leases = bucket(&nats).await;
    let mut a = leases.acquire("writer", "node-a").await.unwrap().expect("a free lease is acquired");
    assert!(leases.acquire("writer", "node-b").await.unwrap().is_none(), "a held lease was acquired twice");
    assert!(leases.acquire("shard-1", "node-b").await.unwrap().is_some(), "another key is another lease");
    // Renewed at a third of the TTL for three TTLs: nobody else gets it.
    let until = Instant::now() + 3 * TTL;
    while Instant::now() < until {
        tokio::time::sleep(TTL / 3).await;
        let before = a.revision();
        leases.renew(&mut a).await.unwrap();
        assert!(a.revision() > before);
        assert!(a.valid_until() > Instant::now());
        assert!(leases.acquire("writer", "node-b").await.unwrap().is_none(), "a renewed lease was taken");
    }
    assert_eq!(leases.holder("writer").await.unwrap().as_deref(), Some("node-a"));
    // Released: another acquires it at once.
    leases.release(a).await.unwrap();
    assert!(leases.acquire("writer", "node-b").await.unwrap().is_some());
}

#[tokio::test]
async fn a_holder_that_stops_renewing_loses_the_lease_after_the_ttl_and_cannot_renew_it_back() {
    let Some(nats) = NatsCluster::single() else { return };
    let leases = bucket(&nats).await;
    let mut stale = leases.acquire("writer", "node-a").await.unwrap().unwrap();
    let stale_copy = stale.clone();
    // node-a stops renewing; node-b asks until the bucket lets the lease expire.
    let (mut b, waited) = acquire_within(&leases, "writer", "node-b", 10 * TTL).await;
    assert!(waited + Duration::from_millis(100) >= TTL, "taken over after {waited:?}, before the TTL of {TTL:?}");
    assert!(stale.valid_until() <= Instant::now(), "node-a's own clock says its lease is over");
    assert_eq!(leases.holder("writer").await.unwrap().as_deref(), Some("node-b"));
    // The stale holder can neither renew nor release it.
    assert!(matches!(leases.renew(&mut stale).await, Err(LeaseError::Lost { .. })));
    assert!(matches!(leases.release(stale_copy).await, Err(LeaseError::Lost { .. })));
    leases.renew(&mut b).await.unwrap();
    assert_eq!(leases.holder("writer").await.unwrap().as_deref(), Some("node-b"));
}
