//! `JetStreamLog`: the commit log as one NATS JetStream stream, replicated by JetStream's Raft
//! group (replicas 1 or 3). A commit is durable once JetStream acknowledged its publish; that
//! acknowledgement replaces the local fsync as the durability point.
//!
//! Decisions:
//! - **The stream sequence is the commit seq.** The stream holds nothing but commits, and
//!   commit `n` is published with `Nats-Expected-Last-Sequence: n-1`, so it lands at stream
//!   sequence `n` or not at all. A writer that opens the log continues after the stream's last
//!   sequence (`last_seq`); `read(from, max)` gives the commits from a sequence on (followers,
//!   catch-up), checking that each record's own seq is its stream sequence.
//! - **Fencing.** A deposed writer (someone else appended) cannot append: its publish expects a
//!   last sequence the stream no longer has, and the stream refuses it. The sequence check
//!   alone leaves one hole when publishes are pipelined: if writer A's commit `n` is refused
//!   because B appended `n`, A's commit `n+1`, already in flight and expecting `n`, would land
//!   on top of B's `n`. So every publish also carries `Nats-Msg-Id: <writer>-<seq>` and, but
//!   for the first one of a writer, `Nats-Expected-Last-Msg-Id: <writer>-<seq-1>`: a commit
//!   lands only on its own writer's predecessor. (The msg id also makes a resent publish
//!   idempotent: JetStream answers a duplicate with the sequence it already stored.)
//!   The server keeps the last msg id in memory and rebuilds it on restart only from the
//!   duplicate window (2 min by default): a commit refused for a wrong last msg id whose
//!   predecessor in the stream is this writer's own is resent on the sequence check alone.
//!   Any other refused publish breaks the log for good: `make_durable` fails with "fenced: the stream
//!   holds seq X" then and on every later call, so nothing after the fence point is ever
//!   reported durable; the writer must stop and open the log again (after taking the lease).
//! - **`append` never blocks.** It checks the order, encodes, and hands the record to one
//!   publisher task (an unbounded channel, so it may be called from the writer's async thread
//!   or any other). The task publishes in order, keeps up to `MAX_IN_FLIGHT` ack futures, and
//!   counts acknowledgements in order: an ack for `n` means every commit before `n` is stored
//!   too (each one expected its predecessor).
//! - **Transient failures are retried, not reported.** A publish that timed out or found no
//!   stream leader (a JetStream server died, an election runs) is resent with everything
//!   after it, in order, with the same headers, until `retry_for` passes without progress;
//!   then the log breaks like a fenced one. Resending is safe: a commit that did land is
//!   answered as a duplicate with its sequence, one that did not lands now.
//! - `make_durable` (called on a blocking thread) waits on a condvar until every commit
//!   appended before the call is acknowledged, then returns the highest acknowledged seq;
//!   `durable_through` moves only there, as the contract asks.
//! - Reads use direct get (`allow_direct` is on), so any replica can answer a follower.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage, stream};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesOrdered, StreamExt};
use tokio::sync::mpsc;

use super::{format, CommitLog, LogCommit, LogError};

/// How many direct gets a reader keeps in flight.
const READ_AHEAD: usize = 64;

/// How many publishes may wait for their acknowledgement at once (the client allows 5,000).
const MAX_IN_FLIGHT: usize = 1024;

/// The stream a log lives in: its name, the subject prefix of its records, its replicas.
#[derive(Clone, Debug)]
pub struct LogStream {
    /// Stream name, e.g. `HERALD_LOG`.
    pub name: String,
    /// Subject prefix, e.g. `herald.log`: the stream takes `herald.log.>`, a writer publishes on
    /// `herald.log.<writer>`.
    pub subject: String,
    /// 1 (a single NATS server) or 3; used when the stream is created.
    pub replicas: usize,
    /// How long transient publish failures are retried without progress before the log breaks.
    pub retry_for: Duration,
}

impl LogStream {
    pub fn new(name: &str, subject: &str, replicas: usize) -> LogStream {
        LogStream { name: name.into(), subject: subject.into(), replicas, retry_for: Duration::from_secs(30) }
    }
}

/// What the writer and the publisher task share.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// The last seq appended (handed to the publisher).
    appended: u64,
    /// The last seq JetStream acknowledged (everything before it is stored too).
    acked: u64,
    /// Why the log can take no more: fenced, retries exhausted, the publisher gone.
    broken: Option<String>,
}

fn poisoned() -> LogError {
    LogError::Failed("the log's lock is poisoned".into())
}

fn failed(e: impl std::fmt::Display) -> LogError {
    LogError::Failed(e.to_string().into())
}

impl Shared {
    fn break_with(&self, why: String) {
        if let Ok(mut state) = self.state.lock() {
            if state.broken.is_none() {
                tracing::error!(%why, "the JetStream commit log stops");
                state.broken = Some(why);
            }
        }
        self.changed.notify_all();
    }

    fn acked(&self, seq: u64) {
        if let Ok(mut state) = self.state.lock() {
            state.acked = state.acked.max(seq);
        }
        self.changed.notify_all();
    }
}

/// One commit on its way to the stream.
struct Record {
    seq: u64,
    payload: Bytes,
}

pub struct JetStreamLog {
    shared: Arc<Shared>,
    records: mpsc::UnboundedSender<Record>,
    durable: AtomicU64,
    stream: stream::Stream,
    last_at_open: u64,
}

impl JetStreamLog {
    /// Opens (creating it if missing: file storage, direct gets allowed) the stream `on`
    /// describes, and starts the publisher task on the current tokio runtime. The log continues
    /// after the stream's last sequence.
    pub async fn open(client: async_nats::Client, on: &LogStream) -> Result<JetStreamLog, LogError> {
        let js = jetstream::new(client);
        let mut stream = ensure_stream(&js, on).await?;
        let last = stream.info().await.map_err(failed)?.state.last_sequence;
        let shared = Arc::new(Shared::default());
        if let Ok(mut state) = shared.state.lock() {
            state.appended = last;
            state.acked = last;
        }
        let (records, rx) = mpsc::unbounded_channel();
        // A writer's own subject and msg ids: unique per opening.
        let writer = uuid::Uuid::new_v4().simple().to_string();
        let publisher = Publisher {
            js,
            subject: format!("{}.{writer}", on.subject),
            writer,
            first: last + 1,
            shared: shared.clone(),
            pending: VecDeque::new(),
            acks: FuturesOrdered::new(),
            retry_for: on.retry_for,
            stalled_since: None,
            unchained: None,
        };
        tokio::spawn(publisher.run(rx, stream.clone()));
        Ok(JetStreamLog { shared, records, durable: AtomicU64::new(last), stream, last_at_open: last })
    }

    /// The stream's last sequence when the log was opened: where this writer continued.
    pub fn last_seq(&self) -> u64 {
        self.last_at_open
    }

    /// A reader of the same stream.
    pub fn reader(&self) -> LogReader {
        LogReader { stream: self.stream.clone() }
    }

    /// Up to `max` commits from `from_seq` on (`LogReader::read`).
    pub async fn read(&self, from_seq: u64, max: usize) -> Result<Vec<LogCommit>, LogError> {
        self.reader().read(from_seq, max).await
    }
}

/// The stream `on` describes, created if missing (file storage, direct gets allowed).
async fn ensure_stream(js: &jetstream::Context, on: &LogStream) -> Result<stream::Stream, LogError> {
    let config = stream::Config {
        name: on.name.clone(),
        subjects: vec![format!("{}.>", on.subject)],
        num_replicas: on.replicas,
        storage: stream::StorageType::File,
        allow_direct: true,
        ..Default::default()
    };
    js.get_or_create_stream(config).await.map_err(failed)
}

/// Reads a log's stream without writing to it (followers, a new writer's catch-up).
#[derive(Clone)]
pub struct LogReader {
    stream: stream::Stream,
}

impl LogReader {
    /// The stream `on` describes (created if missing, as `JetStreamLog::open` does).
    pub async fn open(client: async_nats::Client, on: &LogStream) -> Result<LogReader, LogError> {
        let stream = ensure_stream(&jetstream::new(client), on).await?;
        Ok(LogReader { stream })
    }

    /// The stream's first sequence now: commits below it were trimmed (`cluster::snapshot`);
    /// the last sequence plus one when the stream holds none.
    pub async fn first_seq(&self) -> Result<u64, LogError> {
        let state = self.stream.get_info().await.map_err(failed)?.state;
        Ok(if state.messages == 0 { state.last_sequence + 1 } else { state.first_sequence })
    }

    /// Removes the commits below `seq` from the stream (they are in a snapshot).
    pub async fn trim_below(&self, seq: u64) -> Result<u64, LogError> {
        let purged = self.stream.purge().sequence(seq).await.map_err(failed)?;
        Ok(purged.purged)
    }

    /// The stream's last sequence now: the last commit stored (acknowledged or about to be).
    pub async fn last_seq(&self) -> Result<u64, LogError> {
        Ok(self.stream.get_info().await.map_err(failed)?.state.last_sequence)
    }

    /// Up to `max` commits from `from_seq` on, in order, as the stream holds them (acknowledged
    /// or not yet). Stops at the stream's last sequence; a record whose seq is not its stream
    /// sequence, or that does not decode, is `Corrupt`.
    pub async fn read(&self, from_seq: u64, max: usize) -> Result<Vec<LogCommit>, LogError> {
        let last = self.last_seq().await?;
        let from = from_seq.max(1);
        if from > last || max == 0 {
            return Ok(Vec::new());
        }
        let through = last.min(from.saturating_add(max as u64 - 1));
        // Up to READ_AHEAD direct gets in flight, answered in order: one round trip per batch
        // rather than per commit.
        let stream = &self.stream;
        let mut gets =
            futures_util::stream::iter(from..=through).map(|seq| async move { (seq, stream.direct_get(seq).await) }).buffered(READ_AHEAD);
        let mut out = Vec::new();
        while let Some((seq, got)) = gets.next().await {
            let message = got.map_err(|e| failed(format!("reading commit {seq}: {e}")))?;
            let commit = format::decode(&message.payload)?;
            if commit.seq != seq {
                return Err(LogError::Corrupt(format!("stream sequence {seq} holds commit {}", commit.seq)));
            }
            out.push(commit);
        }
        Ok(out)
    }
}

impl CommitLog for JetStreamLog {
    fn append(&self, commit: &LogCommit) -> Result<(), LogError> {
        let mut state = self.shared.state.lock().map_err(|_| poisoned())?;
        if let Some(why) = &state.broken {
            return Err(LogError::Failed(why.clone().into()));
        }
        if commit.seq != state.appended + 1 {
            return Err(LogError::OutOfOrder { seq: commit.seq, last: state.appended });
        }
        let record = Record { seq: commit.seq, payload: Bytes::from(format::encode(commit)) };
        self.records.send(record).map_err(|_| LogError::Failed("the log's publisher has stopped".into()))?;
        state.appended = commit.seq;
        Ok(())
    }

    fn make_durable(&self) -> Result<u64, LogError> {
        let mut state = self.shared.state.lock().map_err(|_| poisoned())?;
        let target = state.appended;
        loop {
            if let Some(why) = &state.broken {
                return Err(LogError::Failed(why.clone().into()));
            }
            if state.acked >= target {
                break;
            }
            state = self.shared.changed.wait(state).map_err(|_| poisoned())?;
        }
        let acked = state.acked;
        drop(state);
        Ok(self.durable.fetch_max(acked, Ordering::SeqCst).max(acked))
    }

    fn durable_through(&self) -> u64 {
        self.durable.load(Ordering::SeqCst)
    }
}

/// Whether the stream's message at `seq - 1` is `writer`'s own commit. (A free function: the
/// publisher holds futures that are not `Sync`, so `&Publisher` cannot live across an await.)
async fn own_predecessor(writer: &str, seq: u64, stream: &stream::Stream) -> bool {
    let Ok(message) = stream.direct_get(seq - 1).await else { return false };
    let own = format!("{writer}-{}", seq - 1);
    message.headers.get(async_nats::header::NATS_MESSAGE_ID).is_some_and(|id| id.as_str() == own)
}

type AckFuture = BoxFuture<'static, (u64, Result<jetstream::publish::PublishAck, jetstream::context::PublishError>)>;

/// The one task that publishes a log's records, in order, and counts their acknowledgements.
struct Publisher {
    js: jetstream::Context,
    subject: String,
    writer: String,
    /// The first seq this writer appends: it has no predecessor of its own to expect.
    first: u64,
    shared: Arc<Shared>,
    /// Appended and not yet acknowledged, in order; the first `acks.len()` are in flight.
    pending: VecDeque<Record>,
    acks: FuturesOrdered<AckFuture>,
    retry_for: Duration,
    /// Since when publishes fail without an acknowledgement in between.
    stalled_since: Option<Instant>,
    /// A commit resent without `Nats-Expected-Last-Msg-Id` (see `settle`).
    unchained: Option<u64>,
}

/// Breaks the log when the publisher task ends, however it ends (the runtime shutting down
/// included), so that `make_durable` never waits for a task that is gone.
struct BreakOnExit(Arc<Shared>);

impl Drop for BreakOnExit {
    fn drop(&mut self) {
        // Not an error in itself: the log was dropped (a role ended, shutdown). A `make_durable`
        // still waiting fails with this reason.
        if let Ok(mut state) = self.0.state.lock() {
            state.broken.get_or_insert_with(|| "the log's publisher has stopped".into());
        }
        self.0.changed.notify_all();
    }
}

enum Outcome {
    Continue,
    Stop,
}

impl Publisher {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Record>, stream: stream::Stream) {
        let _guard = BreakOnExit(self.shared.clone());
        let mut open = true;
        loop {
            if !open && self.pending.is_empty() {
                return;
            }
            tokio::select! {
                record = rx.recv(), if open => match record {
                    Some(record) => {
                        self.pending.push_back(record);
                        self.send_pending().await;
                    }
                    None => open = false,
                },
                Some((seq, result)) = self.acks.next(), if !self.acks.is_empty() => {
                    if let Outcome::Stop = self.settle(seq, result, &stream).await {
                        return;
                    }
                    self.send_pending().await;
                }
            }
        }
    }

    fn message(&self, record: &Record) -> PublishMessage {
        let mut message = PublishMessage::build()
            .payload(record.payload.clone())
            .message_id(format!("{}-{}", self.writer, record.seq))
            .expected_last_sequence(record.seq - 1);
        if record.seq > self.first && self.unchained != Some(record.seq) {
            message = message.expected_last_message_id(format!("{}-{}", self.writer, record.seq - 1));
        }
        message
    }

    /// Publishes the pending records that have no publish in flight, up to `MAX_IN_FLIGHT`.
    async fn send_pending(&mut self) {
        while self.acks.len() < MAX_IN_FLIGHT {
            let Some(record) = self.pending.get(self.acks.len()) else { return };
            let seq = record.seq;
            let message = self.message(record);
            let future: AckFuture = match self.js.send_publish(self.subject.clone(), message).await {
                Ok(ack) => Box::pin(async move { (seq, ack.await) }),
                Err(e) => Box::pin(async move { (seq, Err(e)) }),
            };
            self.acks.push_back(future);
        }
    }

    /// Handles the next acknowledgement (in publish order).
    async fn settle(
        &mut self,
        seq: u64,
        result: Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
        stream: &stream::Stream,
    ) -> Outcome {
        match result {
            Ok(ack) if ack.sequence == seq => {
                while self.pending.front().is_some_and(|r| r.seq <= seq) {
                    self.pending.pop_front();
                }
                self.stalled_since = None;
                self.shared.acked(seq);
                Outcome::Continue
            }
            Ok(ack) => {
                self.shared.break_with(format!("fenced: commit {seq} was stored at stream sequence {}", ack.sequence));
                Outcome::Stop
            }
            Err(e) if e.kind() == PublishErrorKind::WrongLastMessageId && own_predecessor(&self.writer, seq, stream).await => {
                // The server lost track of the last msg id (a restart with the last commit
                // older than the duplicate window), but the stream's last commit is ours: send
                // it again expecting the sequence only, which still refuses anyone else's.
                tracing::warn!(seq, "the stream forgot the last msg id; resending on the sequence alone");
                self.unchained = Some(seq);
                self.acks = FuturesOrdered::new();
                Outcome::Continue
            }
            Err(e) if matches!(e.kind(), PublishErrorKind::WrongLastSequence | PublishErrorKind::WrongLastMessageId) => {
                let holds = match stream.get_info().await {
                    Ok(info) => info.state.last_sequence.to_string(),
                    Err(_) => "an unknown sequence".into(),
                };
                self.shared.break_with(format!("fenced: the stream holds seq {holds}; commit {seq} was refused ({e})"));
                Outcome::Stop
            }
            Err(e) => {
                let since = *self.stalled_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= self.retry_for {
                    self.shared.break_with(format!("commit {seq} not acknowledged for {:?}: {e}", self.retry_for));
                    return Outcome::Stop;
                }
                tracing::warn!(seq, error = %e, "a commit publish failed; resending from it");
                // Everything in flight after it is resent too, in order, with the same headers.
                self.acks = FuturesOrdered::new();
                tokio::time::sleep(Duration::from_millis(200)).await;
                Outcome::Continue
            }
        }
    }
}
