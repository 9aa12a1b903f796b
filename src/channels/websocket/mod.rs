//! The R5 websocket channel. A websocket subscription has a lane like any other (the
//! Dispatcher starts `lane::run` for it), but instead of POSTing, the lane pushes each
//! notification Bundle, serialized once, into the send queue of every socket bound to the
//! subscription. Sockets themselves are served by `api::ws`, which holds a `Socket` and binds
//! it through the `Hub` with a token from `Tokens`.
//!
//! Delivery model: events are numbered at match time like every channel's. While no socket is
//! bound they stay pending in the outbox (a websocket subscription never goes to `error` for
//! want of a listener). While at least one is bound, the lane claims events after its cursor
//! in order and acknowledges them (`LaneCommand::Delivered`) once at least one socket's queue
//! took them; R5 websocket delivery has no receipt from the client, so "accepted" means
//! "queued for a live socket". A socket whose queue stays full for `send_timeout` is
//! disconnected (warn log, `slow_disconnects_total`) so that it never holds its lane longer.
//!
//! - `lane`: the per-subscription loop (binds, handshakes, pushes, replays, heartbeats).
//! - `tokens`: `$get-ws-binding-token` tokens, in memory, as digests.
//! - `protocol`: client messages (`bind-with-token` ...) and error/pong frames.

pub(crate) mod lane;
pub mod protocol;
pub mod tokens;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ops::metrics::{metrics, Held};

pub use tokens::Tokens;

/// One text frame (a notification Bundle or an OperationOutcome, UTF-8 JSON), shared by
/// every socket it goes to.
pub type Frame = Bytes;

static SLOW_DISCONNECTS: AtomicU64 = AtomicU64::new(0);

/// Sockets disconnected because their send queue stayed full (since the process started).
pub fn slow_disconnects_total() -> u64 {
    SLOW_DISCONNECTS.load(Ordering::Relaxed)
}

/// Websocket settings (`[websocket]`).
#[derive(Clone, Debug)]
pub struct WsConfig {
    /// The URL `$get-ws-binding-token` hands out.
    pub url: String,
    pub token_lifetime: Duration,
    pub max_message_bytes: usize,
    /// Frames queued per socket.
    pub send_buffer: usize,
    /// How long the lane waits for room in a full queue before disconnecting the socket.
    pub send_timeout: Duration,
    pub max_connections: usize,
}

/// The lane's handle on one socket: its send queue and the switch that disconnects it.
#[derive(Clone)]
pub struct SocketHandle {
    pub id: u64,
    tx: mpsc::Sender<Frame>,
    kicked: CancellationToken,
}

impl SocketHandle {
    fn is_closed(&self) -> bool {
        self.tx.is_closed() || self.kicked.is_cancelled()
    }

    /// Disconnects a socket that cannot keep up.
    fn kick(&self, sub: &str, why: &str) {
        if !self.kicked.is_cancelled() {
            SLOW_DISCONNECTS.fetch_add(1, Ordering::Relaxed);
            crate::ops::metrics::metrics().websocket_slow_disconnects.inc();
            tracing::warn!(subscription.id = %sub, socket = self.id, reason = why, "websocket client too slow; disconnecting it");
            self.kicked.cancel();
        }
    }
}

/// What `api::ws` holds for one open connection.
pub struct Socket {
    pub handle: SocketHandle,
    /// Frames to write, in order.
    pub frames: mpsc::Receiver<Frame>,
    /// Cancelled when a lane gave up on this socket (too slow).
    pub kicked: CancellationToken,
    /// One of `max_connections`, released when the socket is dropped.
    _slot: OwnedSemaphorePermit,
    /// Counted in `herald_websocket_connections` while it lives.
    _counted: Held,
}

/// Messages from sockets to a subscription's lane.
pub(crate) enum Control {
    /// Send a handshake, replay from `since` if asked, then stream to this socket too.
    Bind {
        socket: SocketHandle,
        since: Option<u64>,
    },
    Unbind {
        socket: u64,
    },
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    /// No websocket lane runs for it: deleted, or no longer a websocket subscription.
    #[error("Subscription/{0} is not an active websocket subscription on this server")]
    NoLane(String),
}

/// Depth of a lane's control queue; a socket binding waits when it is full.
const CONTROL_DEPTH: usize = 64;

/// Shared by the websocket lanes and `api::ws`: tokens, the lanes' control queues, the cap
/// on connections, and shutdown.
pub struct Hub {
    config: WsConfig,
    tokens: Tokens,
    lanes: Mutex<HashMap<String, (u64, mpsc::Sender<Control>)>>,
    slots: Arc<Semaphore>,
    next_id: AtomicU64,
    shutdown: CancellationToken,
    sockets: TaskTracker,
}

impl Hub {
    /// `shutdown` closes every socket (Herald is stopping); socket tasks run on `sockets`.
    pub fn new(config: WsConfig, shutdown: CancellationToken, sockets: TaskTracker) -> Self {
        Hub {
            tokens: Tokens::new(config.token_lifetime),
            slots: Arc::new(Semaphore::new(config.max_connections.max(1))),
            config,
            lanes: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            shutdown,
            sockets,
        }
    }

    pub fn config(&self) -> &WsConfig {
        &self.config
    }

    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Where socket tasks run, so that shutdown can wait for them.
    pub fn sockets(&self) -> &TaskTracker {
        &self.sockets
    }

    fn lanes(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, mpsc::Sender<Control>)>> {
        // Entries are replaced whole; a panic elsewhere cannot leave one half-written.
        self.lanes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new connection's send queue, or `None` when `max_connections` are open.
    pub fn open_socket(&self) -> Option<Socket> {
        let slot = self.slots.clone().try_acquire_owned().ok()?;
        let (tx, frames) = mpsc::channel(self.config.send_buffer.max(2));
        let kicked = CancellationToken::new();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        Some(Socket {
            handle: SocketHandle { id, tx, kicked: kicked.clone() },
            frames,
            kicked,
            _slot: slot,
            _counted: Held::add(&metrics().websocket_connections, 1),
        })
    }

    /// Asks `sub`'s lane to bind `socket` (the lane sends the handshake).
    pub async fn bind(&self, sub: &str, socket: &SocketHandle, since: Option<u64>) -> Result<(), BindError> {
        let lane = self.lanes().get(sub).map(|(_, tx)| tx.clone());
        let Some(lane) = lane else { return Err(BindError::NoLane(sub.to_string())) };
        lane.send(Control::Bind { socket: socket.clone(), since }).await.map_err(|_| BindError::NoLane(sub.to_string()))
    }

    /// Stops streaming `sub` to `socket`. Never waits: a lane that misses this notices the
    /// closed socket itself.
    pub fn unbind(&self, sub: &str, socket: u64) {
        if let Some((_, lane)) = self.lanes().get(sub) {
            let _ = lane.try_send(Control::Unbind { socket });
        }
    }

    /// A websocket lane starts: its control queue, and the registration to end with.
    pub(crate) fn register(&self, sub: &str) -> (u64, mpsc::Receiver<Control>) {
        let (tx, rx) = mpsc::channel(CONTROL_DEPTH);
        let registration = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lanes().insert(sub.to_string(), (registration, tx));
        (registration, rx)
    }

    /// `sub`'s websocket lane is being stopped (deleted, or moved to another channel): binds
    /// fail from now on instead of queueing for a lane that ends without reading them. The
    /// lane runs on the delivery runtime and may take a while to notice.
    pub(crate) fn forget(&self, sub: &str) {
        self.lanes().remove(sub);
    }

    /// A websocket lane ends; a newer lane's registration for the same id is left alone.
    pub(crate) fn unregister(&self, sub: &str, registration: u64) {
        let mut lanes = self.lanes();
        if lanes.get(sub).is_some_and(|(r, _)| *r == registration) {
            lanes.remove(sub);
        }
    }

    /// Websocket lanes running (for tests and the load example).
    pub fn lane_count(&self) -> usize {
        self.lanes().len()
    }
}
