//! Waiting for delivery to catch up: after a fault ends, each subscription's receiver must
//! accept every acknowledged write's event and every number up to the subscription's
//! `eventsSinceSubscriptionStart` (events of writes that were committed but not acknowledged
//! before a crash count too). Polls `$status` and the receivers until then or a deadline;
//! what is still missing at the deadline is what the ledger then reports as lost.

use std::time::{Duration, Instant};

use crate::receiver::Receiver;
use crate::{client, ledger, Result};

/// Waits until every `(subscription id, receiver)` pair caught up with `acked`; returns how long
/// it took, or `None` if the deadline passed first.
pub async fn drain(
    client: &reqwest::Client,
    base: &str,
    pairs: &[(&str, &Receiver)],
    acked: &[&str],
    within: Duration,
) -> Result<Option<Duration>> {
    let started = Instant::now();
    loop {
        let mut behind = false;
        for (sub, rx) in pairs {
            let (_, since) = client::sub_status(client, base, sub).await?;
            let l = ledger::check(acked.iter().copied(), &rx.deliveries());
            if l.lost() > 0 || l.accepted_through < since {
                behind = true;
                break;
            }
        }
        if !behind {
            return Ok(Some(started.elapsed()));
        }
        if started.elapsed() > within {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
