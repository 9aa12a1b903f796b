//! Ingest: the write path. Every change Herald accepts (REST writes, transaction and batch
//! entries, side-car feeds) and every delivery result passes through one committer task, which
//! owns the registry and the subscription states and is the only writer to the store.
//!
//! For each write the committer, in one atomic `store::Commit`: reads the previous version,
//! writes the new one, matches the change against the registry, and enqueues each match in the
//! outbox with that subscription's next event number. It then hands the reply to the flusher,
//! which fsyncs many commits at once (group commit) and only then answers the client and wakes
//! the delivery lanes. So: **a write is acknowledged only after its resource version and all
//! its events are durable**, and lanes never see an event that a crash could take back.
//!
//! - `committer`: the task, its request loop, and `append`, the one door to the store and the
//!   commit log (`commitlog`).
//! - `plan`: a commit being planned (`Plan`) and what planning reads (`View`). The planners
//!   each take a `View` and a `Plan`: `write` (REST and side-car writes), `emit` (`$emit`),
//!   `events` (one `enqueue` for matched and emitted events), `subscriptions` (what writing a
//!   Subscription, topic or SearchParameter does to the registry), `lanes` (delivery results,
//!   resends), `retention` (pruning, purges).
//! - `materialize`: the registry and states a store implies (`rebuild`), and `Replica`, which
//!   applies commit log entries another process wrote.
//! - `group`: apply groups, the commits of requests queued back to back applied as one batch.
//! - `flusher`: group commit through `CommitLog::make_durable`.
//! - `builtin`: Herald's built-in SubscriptionTopics, installed at start and read-only.

mod builtin;
mod committer;
mod compartment;
mod context;
mod emit;
mod events;
mod flusher;
mod group;
mod lanes;
mod materialize;
mod outputs;
mod plan;
mod resolver;
mod retention;
mod settings;
mod subscriptions;
mod workflow;
mod write;

use std::sync::Arc;

use serde_json::Value;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use crate::fhir::instant::Millis;
use crate::fhir::Issue;
use crate::registry::SubEntry;
use crate::store::{StoreError, StoredError, StoredGrant, SubState, SubStatus, VersionRecord};

pub use committer::{spawn, spawn_with_log};
pub use materialize::Replica;
pub use settings::{CommitterConfig, Retention};

/// The committer's queue, created before the committer so that lanes can hold an `Ingest`
/// handle while the committer is being started.
pub struct IngestQueue(pub(crate) mpsc::Receiver<Request>);

/// A handle and the queue it feeds; pass the queue to `spawn`.
pub fn channel(depth: usize) -> (Ingest, IngestQueue) {
    let (tx, rx) = mpsc::channel(depth.max(1));
    (Ingest { tx }, IngestQueue(rx))
}

/// What a request does to one resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMethod {
    /// POST: a new resource with a server-assigned id.
    Create,
    /// PUT: update, or create with the client's id.
    Update,
    Delete,
}

/// One resource write. `id` is always set (the API assigns ids for creates).
#[derive(Clone, Debug)]
pub struct WriteEntry {
    pub method: WriteMethod,
    pub resource_type: String,
    pub id: String,
    pub resource: Option<Value>,
    /// `If-Match` as a versionId.
    pub if_match: Option<String>,
    /// A Provenance sent in `X-Provenance` with entry `n` of the same request: its `target`
    /// gets the version that entry writes.
    pub provenance_for: Option<usize>,
    /// An `Update` made by a PATCH: the version is recorded with method `PATCH` (history).
    pub patched: bool,
}

/// The result of one applied entry.
#[derive(Clone, Debug)]
pub struct WriteResult {
    pub record: VersionRecord,
    /// A new resource (or a re-creation after delete).
    pub created: bool,
    /// False for a delete of something already deleted: nothing was written.
    pub changed: bool,
}

/// A change reported by another FHIR server (side-car mode).
#[derive(Clone, Debug)]
pub struct ExternalChange {
    pub resource_type: String,
    pub id: String,
    pub version_id: Option<String>,
    pub deleted: bool,
    pub resource: Option<Value>,
    pub last_updated: Option<Millis>,
    pub full_url: Option<String>,
}

/// A business event for topics' `eventTrigger`s, reported by a client
/// (`POST /fhir/SubscriptionTopic/$emit`).
#[derive(Clone, Debug)]
pub struct EmittedEvent {
    pub system: String,
    pub code: String,
    pub focus: EventFocus,
    /// Local resources (`Type`, `id`) to carry as additional context, at their current version.
    pub context: Vec<(String, String)>,
}

/// The resource an emitted event is about.
#[derive(Clone, Debug)]
pub enum EventFocus {
    /// A resource Herald holds, at its current version.
    Stored { resource_type: String, id: String },
    /// A resource sent with the event: stored first (a create or an update), in the same commit.
    Write(WriteEntry),
}

/// What an emitted event did.
#[derive(Clone, Debug)]
pub struct EmitResult {
    /// The focus version the event names.
    pub focus: VersionRecord,
    /// Subscriptions notified.
    pub notified: usize,
    /// Urls of the topics that fired.
    pub topics: Vec<String>,
}

/// Counts for a side-car feed.
#[derive(Clone, Debug, Default)]
pub struct ExternalSummary {
    pub applied: usize,
    pub skipped: Vec<String>,
    pub events: usize,
}

/// Results reported by delivery lanes (serialized when a cluster node reports to the writer).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum LaneCommand {
    Delivered {
        sub: String,
        through: u64,
        at: Millis,
    },
    Retry {
        sub: String,
        attempts: u32,
        next_attempt_at: Millis,
        first_failure_at: Millis,
    },
    Dead {
        sub: String,
        generation: u64,
        through: u64,
        attempts: u32,
        error: StoredError,
    },
    Status {
        sub: String,
        generation: u64,
        status: SubStatus,
        error: Option<StoredError>,
    },
    /// Resend `id` sent every event it covers through `through`.
    Resent {
        sub: String,
        id: u64,
        through: u64,
    },
    /// Resend `id` failed past the retry schedule; it is dropped.
    ResendAbandoned {
        sub: String,
        id: u64,
        error: StoredError,
    },
    /// These events (number, focus type) were rendered withheld: the subscription's grant
    /// does not cover their focus. Each number is counted once (`SubState.withheld`).
    Withheld {
        sub: String,
        events: Vec<(u64, String)>,
    },
}

impl LaneCommand {
    /// The subscription the report is about.
    pub fn sub(&self) -> &str {
        match self {
            LaneCommand::Delivered { sub, .. }
            | LaneCommand::Retry { sub, .. }
            | LaneCommand::Dead { sub, .. }
            | LaneCommand::Status { sub, .. }
            | LaneCommand::Resent { sub, .. }
            | LaneCommand::ResendAbandoned { sub, .. }
            | LaneCommand::Withheld { sub, .. } => sub,
        }
    }
}

/// Which stored events a resend covers (inclusive bounds; absent = open).
#[derive(Clone, Copy, Debug)]
pub enum ResendRange {
    Numbers { since: Option<u64>, until: Option<u64> },
    Instants { since: Option<Millis>, until: Option<Millis> },
}

/// What a resend will send.
#[derive(Clone, Copy, Debug)]
pub struct ResendSummary {
    pub from: u64,
    pub until: u64,
    /// Events to send (for a dead-letter replay, the dead letters in the range).
    pub events: u64,
    /// The range reaches past what was accepted or dead-lettered: from this number on, events
    /// are first delivered in order as usual, and resent after that.
    pub pending_from: Option<u64>,
}

/// What a lane needs to know about its subscription, republished after each durable change.
#[derive(Clone, Debug)]
pub struct LaneView {
    pub entry: Arc<SubEntry>,
    pub state: SubState,
}

/// Where the committer publishes lane changes (implemented by `channels::Dispatcher`).
pub trait LaneSink: Send + Sync + 'static {
    /// `None`: the subscription is gone; stop its lane.
    fn publish(&self, sub: &str, view: Option<LaneView>);
}

#[derive(Debug, Error)]
pub enum IngestError {
    #[error("invalid resource")]
    Invalid(Vec<Issue>),
    #[error("refused by a business rule")]
    Rejected(Vec<Issue>),
    #[error("{0} not found")]
    NotFound(String),
    #[error("version mismatch: If-Match {expected}, current {actual}")]
    VersionMismatch { expected: String, actual: String },
    #[error("conflict: {0}")]
    Conflict(String),
    /// A write to a resource the server owns (a built-in SubscriptionTopic).
    #[error("read-only: {0}")]
    ReadOnly(String),
    #[error("transaction entry {index} failed")]
    Entry {
        index: usize,
        #[source]
        source: Box<IngestError>,
    },
    #[error("store failure")]
    Store(#[from] StoreError),
    #[error("commit log failure")]
    Log(#[from] crate::commitlog::LogError),
    /// Less than `store.min_free_mib` is free where the store lives: nothing was written.
    #[error("the disk holding the store is nearly full")]
    StorageFull,
    #[error("the write path is shut down")]
    Unavailable,
    /// The caller may not change this resource (another client's Subscription).
    #[error("forbidden: {0}")]
    Forbidden(String),
}

pub(crate) enum Request {
    Write {
        entries: Vec<WriteEntry>,
        atomic: bool,
        actor: Option<String>,
        grant: Option<StoredGrant>,
        reply: oneshot::Sender<Result<Vec<WriteResult>, IngestError>>,
    },
    External {
        changes: Vec<ExternalChange>,
        reply: oneshot::Sender<Result<ExternalSummary, IngestError>>,
    },
    Emit {
        event: EmittedEvent,
        reply: oneshot::Sender<Result<EmitResult, IngestError>>,
    },
    Resend {
        sub: String,
        range: ResendRange,
        dead_only: bool,
        actor: Option<String>,
        reply: oneshot::Sender<Result<ResendSummary, IngestError>>,
    },
    Lane(u64, LaneCommand),
}

impl Request {
    /// Answers the request with `error` without doing it (a lane report has nobody waiting).
    pub(crate) fn refuse(self, error: IngestError) {
        match self {
            Request::Write { reply, .. } => drop(reply.send(Err(error))),
            Request::External { reply, .. } => drop(reply.send(Err(error))),
            Request::Emit { reply, .. } => drop(reply.send(Err(error))),
            Request::Resend { reply, .. } => drop(reply.send(Err(error))),
            Request::Lane(..) => {}
        }
    }
}

/// The handle the API and the lanes use to reach the committer. Cheap to clone; the bounded
/// queue makes callers wait when the committer is behind (block, never drop).
#[derive(Clone)]
pub struct Ingest {
    tx: mpsc::Sender<Request>,
}

impl Ingest {
    /// Applies one write; returns once it is durable.
    pub async fn write(&self, entry: WriteEntry) -> Result<WriteResult, IngestError> {
        let mut results = self.write_all(vec![entry], false).await?;
        results.pop().ok_or(IngestError::Unavailable)
    }

    /// Applies entries; `atomic` makes them one all-or-nothing commit (a transaction),
    /// otherwise they are one commit each and the first failure stops the rest.
    pub async fn write_all(&self, entries: Vec<WriteEntry>, atomic: bool) -> Result<Vec<WriteResult>, IngestError> {
        self.write_all_as(entries, atomic, None, None).await
    }

    /// Like `write_all`, on behalf of the authenticated client `actor` (it owns the
    /// Subscriptions it creates, and may change only its own) holding `grant` (recorded with
    /// each Subscription it creates or updates, for send-time checks).
    pub async fn write_all_as(
        &self,
        entries: Vec<WriteEntry>,
        atomic: bool,
        actor: Option<String>,
        grant: Option<StoredGrant>,
    ) -> Result<Vec<WriteResult>, IngestError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::Write { entries, atomic, actor, grant, reply }).await.map_err(|_| IngestError::Unavailable)?;
        rx.await.map_err(|_| IngestError::Unavailable)?
    }

    pub async fn external(&self, changes: Vec<ExternalChange>) -> Result<ExternalSummary, IngestError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::External { changes, reply }).await.map_err(|_| IngestError::Unavailable)?;
        rx.await.map_err(|_| IngestError::Unavailable)?
    }

    /// Matches and enqueues a business event; returns once it is durable.
    pub async fn emit(&self, event: EmittedEvent) -> Result<EmitResult, IngestError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::Emit { event, reply }).await.map_err(|_| IngestError::Unavailable)?;
        rx.await.map_err(|_| IngestError::Unavailable)?
    }

    /// Asks for stored events to be sent again on the subscription's channel, in order, once
    /// it is active (`$resend`; with `dead_only`, a replay of its dead letters).
    /// `actor` is who asked, for the audit trail.
    pub async fn resend(
        &self,
        sub: &str,
        range: ResendRange,
        dead_only: bool,
        actor: Option<String>,
    ) -> Result<ResendSummary, IngestError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Resend { sub: sub.to_string(), range, dead_only, actor, reply })
            .await
            .map_err(|_| IngestError::Unavailable)?;
        rx.await.map_err(|_| IngestError::Unavailable)?
    }

    /// Reports a delivery result; not awaited for durability (a lost ack means a redelivery).
    /// `incarnation` is the subscription incarnation the lane serves (`SubState.incarnation`);
    /// a report about another one is ignored.
    pub async fn lane(&self, incarnation: u64, cmd: LaneCommand) {
        if self.tx.send(Request::Lane(incarnation, cmd)).await.is_err() {
            tracing::debug!("lane command dropped: committer stopped");
        }
    }
}
