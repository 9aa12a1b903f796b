//! The listener's edge (issue #11): connections per client and TLS, in front of `axum::serve`.
//!
//! In: the bound `TcpListener`, an optional rustls configuration (`tls::server_config`) and
//! `server.max_connections_per_client`. Out: `Edge`, an `axum::serve::Listener` whose streams
//! (`EdgeStream`, plain TCP or TLS) each hold their client's connection slot until dropped, so
//! an upgraded websocket keeps counting. A client (an IPv4 address, an IPv6 /64) already
//! holding its quota has the new connection closed at once, before any TLS or HTTP work:
//! answering 429 would need the handshake and the request parse the bound is there to save.
//! Plain connections are accepted in `Edge::accept` itself. With TLS one task accepts and
//! starts a handshake task per connection, bounded by `HANDSHAKE_TIMEOUT`, so a slow, failed or
//! plain-HTTP handshake closes only its own connection and never holds the accept loop. When
//! `axum::serve` drops the `Edge` (shutdown), accepting ends and the port closes. It never
//! reads or writes HTTP.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::ops::metrics::{metrics, RejectLabels};

/// Longest a TLS handshake may take before its connection is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepted connections waiting for `axum::serve` to take them.
const BACKLOG: usize = 256;

/// The listener `axum::serve` serves: connections accepted, counted and, with TLS, handshaken.
pub struct Edge {
    mode: Mode,
    local: SocketAddr,
}

enum Mode {
    /// Plain TCP: accepted and counted in `accept` itself, as axum's own `TcpListener` is.
    Plain { listener: TcpListener, clients: Clients },
    /// TLS: the accept task hands over the connections whose handshake completed.
    Tls { incoming: mpsc::Receiver<(EdgeStream, SocketAddr)> },
}

impl Edge {
    /// Serves `listener`, with TLS when `tls` is given. `max_per_client` 0 means no bound.
    pub fn spawn(listener: TcpListener, tls: Option<Arc<rustls::ServerConfig>>, max_per_client: usize) -> io::Result<Edge> {
        let local = listener.local_addr()?;
        let clients = Clients { max: max_per_client, open: Arc::new(Mutex::new(HashMap::new())) };
        let mode = match tls {
            None => Mode::Plain { listener, clients },
            Some(config) => {
                let (tx, incoming) = mpsc::channel(BACKLOG);
                tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), clients, tx));
                Mode::Tls { incoming }
            }
        };
        Ok(Edge { mode, local })
    }
}

impl axum::serve::Listener for Edge {
    type Io = EdgeStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (EdgeStream, SocketAddr) {
        match &mut self.mode {
            Mode::Plain { listener, clients } => loop {
                if let Some((tcp, peer, slot)) = admit(listener, clients).await {
                    return (EdgeStream { io: Io::Plain(tcp), _slot: slot }, peer);
                }
            },
            Mode::Tls { incoming } => match incoming.recv().await {
                Some(connection) => connection,
                // The accept task only ends once this `Edge` is gone; nothing more will come.
                None => std::future::pending().await,
            },
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// The next connection, if it is within its client's quota; `None` when it was closed (over
/// the quota) or accepting failed. Cancel-safe: nothing is awaited after a connection is taken.
async fn admit(listener: &TcpListener, clients: &Clients) -> Option<(TcpStream, SocketAddr, Slot)> {
    let (tcp, peer) = match listener.accept().await {
        Ok(pair) => pair,
        Err(e) => {
            accept_failed(e).await;
            return None;
        }
    };
    // Responses and TLS records go out as they are written: with Nagle, a small write (a TLS
    // 1.3 session ticket, then the response) waits for the peer's delayed ACK.
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(peer = %peer.ip(), error = %e, "cannot set TCP_NODELAY");
    }
    let Some(slot) = clients.take(peer.ip()) else {
        metrics().connections_rejected.get_or_create(&RejectLabels { reason: "per_client" }).inc();
        tracing::debug!(peer = %peer.ip(), limit = clients.max, "connection closed: the client holds server.max_connections_per_client connections");
        return None;
    };
    Some((tcp, peer, slot))
}

/// With TLS: accepts, and starts one handshake task per connection within its quota.
async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, clients: Clients, tx: mpsc::Sender<(EdgeStream, SocketAddr)>) {
    loop {
        let admitted = tokio::select! {
            admitted = admit(&listener, &clients) => admitted,
            () = tx.closed() => return,
        };
        if let Some((tcp, peer, slot)) = admitted {
            tokio::spawn(handshake(acceptor.clone(), tcp, peer, slot, tx.clone()));
        }
    }
}

/// One TLS handshake; a failure closes this connection only.
async fn handshake(acceptor: TlsAcceptor, tcp: TcpStream, peer: SocketAddr, slot: Slot, tx: mpsc::Sender<(EdgeStream, SocketAddr)>) {
    let outcome = tokio::select! {
        outcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => outcome,
        () = tx.closed() => return,
    };
    let why = match outcome {
        Ok(Ok(stream)) => {
            let _ = tx.send((EdgeStream { io: Io::Tls(Box::new(stream)), _slot: slot }, peer)).await;
            return;
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no handshake within {HANDSHAKE_TIMEOUT:?}"),
    };
    metrics().connections_rejected.get_or_create(&RejectLabels { reason: "tls_handshake" }).inc();
    tracing::debug!(peer = %peer.ip(), error = %why, "TLS handshake failed; connection closed");
}

/// As `axum::serve` does for a `TcpListener`: a connection that died before `accept` is
/// skipped; anything else (out of file descriptors) is logged and retried after a pause.
async fn accept_failed(e: io::Error) {
    if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "cannot accept connections; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Open connections per client.
#[derive(Clone)]
struct Clients {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// The address connections are counted under: an IPv4 address (also when mapped into IPv6),
/// or the /64 of an IPv6 one, since one host commonly holds a whole /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            for s in segments.iter_mut().skip(4) {
                *s = 0;
            }
            IpAddr::V6(segments.into())
        }
        v4 => v4,
    }
}

impl Clients {
    /// A slot for one more connection from `ip`, or `None` when it holds `max`.
    fn take(&self, ip: IpAddr) -> Option<Slot> {
        let key = client_key(ip);
        if self.max > 0 {
            let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
            let count = open.entry(key).or_insert(0);
            if *count >= self.max {
                return None;
            }
            *count += 1;
        }
        metrics().connections_open.inc();
        Some(Slot { clients: (self.max > 0).then(|| self.open.clone()), key })
    }
}

/// One connection's place in its client's count, given back on drop.
struct Slot {
    clients: Option<Arc<Mutex<HashMap<IpAddr, usize>>>>,
    key: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        metrics().connections_open.dec();
        if let Some(clients) = &self.clients {
            let mut open = clients.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = open.get_mut(&self.key) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    open.remove(&self.key);
                }
            }
        }
    }
}

/// A served connection: plain TCP or TLS, holding its client slot.
pub struct EdgeStream {
    io: Io,
    _slot: Slot,
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for EdgeStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for EdgeStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_ipv4_addresses_or_ipv6_slash_64s() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(client_key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")), ip("2001:db8:1:2::"));
    }

    #[tokio::test]
    async fn a_client_gets_its_quota_and_slots_come_back_on_drop() {
        let clients = Clients { max: 2, open: Arc::new(Mutex::new(HashMap::new())) };
        let a = "192.0.2.1".parse().unwrap();
        let (one, two) = (clients.take(a).unwrap(), clients.take(a).unwrap());
        assert!(clients.take(a).is_none(), "a third connection is over the quota");
        assert!(clients.take("192.0.2.2".parse().unwrap()).is_some(), "other clients have their own quota");
        drop(one);
        let three = clients.take(a);
        assert!(three.is_some(), "a closed connection frees its slot");
        drop((two, three));
        assert!(clients.open.lock().unwrap().get(&a).is_none(), "idle clients are forgotten");
        let unbounded = Clients { max: 0, open: Arc::new(Mutex::new(HashMap::new())) };
        let many: Vec<_> = (0..1000).map(|_| unbounded.take(a)).collect();
        assert!(many.iter().all(Option::is_some));
    }
}
