//! Lane reports between nodes: a node delivering a shard (`shards`) reports each result of
//! its lanes to the writer, whose committer records it as a commit like a local lane's.
//!
//! Decisions:
//! - **Core NATS request/reply** on `herald.lanes`, which only the writer answers. A report
//!   is a small JSON document (the reporting node, the lane's incarnation, the
//!   `LaneCommand`); the writer answers once the committer has queued it.
//! - **Fenced by the shard lease**: the writer records a report only while the reporting node
//!   holds the subscription's shard (the lease bucket says so); a stale holder (frozen past
//!   its lease, partitioned) is told `stale` and its report dropped.
//! - **One report at a time, in order**, from one task per node: a lane's reports keep their
//!   order, and a writer failover (no responder) makes the reports wait, retried every 250 ms,
//!   while the lanes wait on the bounded queue. A report is dropped only when the node no
//!   longer holds the shard or stops: whoever delivers the shard next starts from what the
//!   writer recorded (at least once).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::shards::{shard_key, shard_of, Shards};
use super::Node;
use crate::ingest::{Ingest, IngestError, IngestQueue, LaneCommand, Request};

/// The subject lane reports are sent to.
pub const SUBJECT: &str = "herald.lanes";

#[derive(Serialize, Deserialize)]
struct Report {
    node: String,
    incarnation: u64,
    command: LaneCommand,
}

const OK: &[u8] = b"ok";
const STALE: &[u8] = b"stale";

/// A node that is not the writer: sends its lanes' reports (the queue its `Ingest` feeds) to
/// the writer; everything else on the queue is refused (writes are forwarded before they
/// reach it, `forward`).
pub async fn send(node: Arc<Node>, shards: Shards, mut queue: IngestQueue, stop: CancellationToken) {
    while let Some(req) = tokio::select! { () = stop.cancelled() => None, r = queue.0.recv() => r } {
        let Request::Lane(incarnation, command) = req else {
            req.refuse(IngestError::Unavailable);
            continue;
        };
        let sub = command.sub().to_owned();
        let Ok(body) = serde_json::to_vec(&Report { node: node.node_id.clone(), incarnation, command }) else { continue };
        loop {
            if stop.is_cancelled() || !shards.owns(&sub) {
                break;
            }
            let asked = tokio::time::timeout(Duration::from_secs(5), node.client.request(SUBJECT, body.clone().into())).await;
            match asked {
                Ok(Ok(answer)) if answer.payload.as_ref() == OK => break,
                Ok(Ok(answer)) if answer.payload.as_ref() == STALE => {
                    tracing::warn!(subscription.id = %sub, "the writer refused a lane report: this node no longer holds its shard");
                    break;
                }
                Ok(Ok(_)) => break,
                Ok(Err(e)) => tracing::debug!(error = %e, "no writer took a lane report yet; retrying"),
                Err(_) => tracing::debug!("a lane report got no answer in 5 s; retrying"),
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }
}

/// The writer: records the reports other nodes send, each after checking that the sender
/// holds the subscription's shard.
pub async fn receive(node: Arc<Node>, shard_count: u32, ingest: Ingest, stop: CancellationToken) {
    let mut inbox = match node.client.subscribe(SUBJECT).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot receive lane reports; other nodes' deliveries will wait");
            return;
        }
    };
    while let Some(msg) = tokio::select! { () = stop.cancelled() => None, m = inbox.next() => m } {
        let Some(reply) = msg.reply.clone() else { continue };
        let answer = match serde_json::from_slice::<Report>(&msg.payload) {
            Ok(report) => {
                let shard = shard_of(report.command.sub(), shard_count);
                match node.leases.holder(&shard_key(shard)).await {
                    Ok(Some(holder)) if holder == report.node => {
                        ingest.lane(report.incarnation, report.command).await;
                        OK
                    }
                    Ok(_) => STALE,
                    // Unknown: the sender asks again.
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot check a lane report's shard lease");
                        continue;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "an undecodable lane report was dropped");
                STALE
            }
        };
        let _ = node.client.publish(reply, answer.into()).await;
    }
    let _ = inbox.unsubscribe().await;
}
