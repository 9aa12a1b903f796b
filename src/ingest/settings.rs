//! What the write path needs from configuration (`lifecycle` builds it from `Config`).

use tokio_util::sync::CancellationToken;

use crate::fhir::subscription::SubscriptionLimits;

/// What the committer needs from configuration.
#[derive(Clone, Debug)]
pub struct CommitterConfig {
    pub base_url: String,
    pub limits: SubscriptionLimits,
    /// `ingest.enforce_task_state_machine`.
    pub enforce_task_state_machine: bool,
    /// Event retention (`subscriptions.events_*`).
    pub retention: Retention,
    /// `auth.entities`: who shares a subscription through its `managingEntity`.
    pub entities: crate::auth::Entities,
    /// `store.dangerous_flush_delay` (testing only): how long each group flush is held.
    pub flush_delay: std::time::Duration,
    /// `store.flush_timeout`: a flush that takes longer ends the process (`flusher`).
    pub flush_timeout: std::time::Duration,
    /// The store's directory and `store.min_free_mib` (0: no check), for the free-space guard.
    pub data_dir: std::path::PathBuf,
    pub min_free_bytes: u64,
    /// Cancelled when the store fails to apply or flush: sled keeps failing after an IO error
    /// (a full disk), so Herald reopens it from what is durable (`herald::run`).
    pub store_lost: CancellationToken,
    /// `delivery.ack_linger`: how long a group holding only delivery results (nobody waits
    /// for them) may stay open for more before it is applied and flushed.
    pub ack_linger: std::time::Duration,
    /// `store.record_commits`: a file every commit is copied to (`commitlog::recording`).
    pub record_commits: Option<std::path::PathBuf>,
}

/// How long delivered events are kept for `$events` and `$resend`.
#[derive(Clone, Debug)]
pub struct Retention {
    /// Newest events kept per subscription.
    pub keep: u64,
    pub max_age: std::time::Duration,
    pub interval: std::time::Duration,
    /// Most events one commit removes (`subscriptions.purge_batch`).
    pub batch: u64,
}
