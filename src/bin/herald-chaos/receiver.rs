//! A rest-hook endpoint that can misbehave below HTTP: a hand-written HTTP/1.1 server on a
//! loopback port (one per subscription), since a framework would not let it stall a request,
//! trickle a status line or drop a connection mid-request. What it does with each request is
//! a `Behaviour`, chosen by its `Policy` (fixed, or switched by a seeded RNG: `Chaos`).
//!
//! Every request whose body arrived whole is logged as a `Delivery`, in arrival order, before
//! it is answered; `accepted` is set only when a 2xx went out promptly (an answer after the
//! sender's timeout does not count). Handshakes are always answered 200: Herald retries a refused
//! handshake only briefly (`delivery.handshake_retry_schedule`), and every scenario needs its
//! subscriptions active before the faults start.
//! `down` closes the listener and every open connection (connection refused); `up` listens on
//! the same port again.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

use crate::client::int64;
use crate::Result;

/// What the receiver does with one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// 200 at once.
    Ok,
    /// This status at once.
    Status(u16),
    /// 200 after this delay (past the sender's timeout).
    Late(Duration),
    /// Never answers; holds the connection until the sender closes it.
    Stall,
    /// Closes the connection without answering.
    Close,
    /// A 200 sent one byte at a time, this long apart.
    Trickle(Duration),
    /// 302 to this URL.
    Redirect(String),
}

impl Behaviour {
    /// A short name for counting what receivers did.
    pub fn label(&self) -> &'static str {
        match self {
            Behaviour::Ok => "200",
            Behaviour::Status(503) => "503",
            Behaviour::Status(500) => "500",
            Behaviour::Status(_) => "other status",
            Behaviour::Late(_) => "late 200",
            Behaviour::Stall => "stall",
            Behaviour::Close => "close",
            Behaviour::Trickle(_) => "trickle",
            Behaviour::Redirect(_) => "302",
        }
    }
}

/// How the behaviour is chosen, request by request.
pub enum Policy {
    Fixed(Behaviour),
    /// Boxed: the RNG state is large beside a fixed behaviour.
    Chaos(Box<Chaos>),
}

/// Behaviour switched by a seeded RNG: time is cut into stretches; every third stretch is
/// healthy (so that the lane always makes progress), the others get one mode drawn from the
/// seed and the stretch number: 503, 500, late 200, stall, close, or a per-request mix.
pub struct Chaos {
    seed: u64,
    stretch: Duration,
    epoch: Instant,
    /// The delay of `Late`: past Herald's delivery timeout.
    late: Duration,
    /// Per-request draws of the mixed mode.
    rng: StdRng,
}

impl Chaos {
    pub fn new(seed: u64, stretch: Duration, late: Duration) -> Chaos {
        Chaos { seed, stretch, epoch: Instant::now(), late, rng: StdRng::seed_from_u64(seed) }
    }

    fn pick(&mut self) -> Behaviour {
        let n = u64::try_from(self.epoch.elapsed().as_nanos() / self.stretch.as_nanos().max(1)).unwrap_or(u64::MAX);
        if n % 3 == 0 {
            return Behaviour::Ok;
        }
        let mode = StdRng::seed_from_u64(self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)).gen_range(0..6u8);
        match mode {
            0 => Behaviour::Status(503),
            1 => Behaviour::Status(500),
            2 => Behaviour::Late(self.late),
            3 => Behaviour::Stall,
            4 => Behaviour::Close,
            _ => match self.rng.gen_range(0..10u8) {
                0 => Behaviour::Status(503),
                1 => Behaviour::Close,
                2 => Behaviour::Late(self.late),
                3 => Behaviour::Stall,
                _ => Behaviour::Ok,
            },
        }
    }
}

/// One event of a notification.
#[derive(Clone, Debug)]
pub struct Event {
    pub number: u64,
    /// The Task id of the focus, when the focus is a Task.
    pub task: Option<String>,
}

/// One request received whole.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub at: Instant,
    /// `SubscriptionStatus.type` (`handshake`, `heartbeat`, `event-notification`), empty if the
    /// body was not a notification Bundle.
    pub kind: String,
    /// The subscription id the notification names.
    pub subscription: String,
    pub events: Vec<Event>,
    /// A 2xx went out at once.
    pub accepted: bool,
    /// What the receiver did with it (`Behaviour::label`).
    pub answer: &'static str,
}

#[derive(Default)]
struct Shared {
    policy: Mutex<Option<Policy>>,
    log: Mutex<Vec<Delivery>>,
    /// Open connections, cut by `down`.
    conns: Mutex<Vec<AbortHandle>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere cannot leave these half-updated: each holder does one push or read.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub struct Receiver {
    /// The endpoint to put in a Subscription.
    pub url: String,
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Receiver {
    /// Listens on a new loopback port, answering 200 until told otherwise.
    pub async fn start() -> Result<Receiver> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        *lock(&shared.policy) = Some(Policy::Fixed(Behaviour::Ok));
        let accept = Some(tokio::spawn(accept_loop(listener, shared.clone())));
        Ok(Receiver { url: format!("http://{addr}/hook"), addr, shared, accept })
    }

    pub fn set(&self, policy: Policy) {
        *lock(&self.shared.policy) = Some(policy);
    }

    pub fn fixed(&self, b: Behaviour) {
        self.set(Policy::Fixed(b));
    }

    /// Stops listening and cuts every open connection: the sender now gets connection refused.
    pub fn down(&mut self) {
        if let Some(a) = self.accept.take() {
            a.abort();
        }
        for c in lock(&self.shared.conns).drain(..) {
            c.abort();
        }
    }

    /// Listens on the same port again.
    pub async fn up(&mut self) -> Result<()> {
        if self.accept.is_none() {
            // The aborted accept task drops its listener when the runtime next polls it.
            let deadline = Instant::now() + Duration::from_secs(5);
            let listener = loop {
                match TcpListener::bind(self.addr).await {
                    Ok(l) => break l,
                    Err(e) if Instant::now() > deadline => return Err(format!("cannot listen on {} again: {e}", self.addr).into()),
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            };
            self.accept = Some(tokio::spawn(accept_loop(listener, self.shared.clone())));
        }
        Ok(())
    }

    /// Every request received so far, in arrival order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.shared.log).clone()
    }

    /// Requests received so far.
    pub fn count(&self) -> usize {
        lock(&self.shared.log).len()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.down();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors or similar: try again shortly rather than spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handle = tokio::spawn(serve(stream, shared.clone())).abort_handle();
        let mut conns = lock(&shared.conns);
        conns.retain(|c| !c.is_finished());
        conns.push(handle);
    }
}

/// Largest request head and body accepted; Herald's notifications are far smaller.
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Serves the requests of one keep-alive connection until it closes or a behaviour ends it.
async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    loop {
        let Some((head_len, body_len)) = read_request(&mut stream, &mut buf).await else { return };
        let rest = buf.split_off(head_len + body_len);
        let body = buf.get(head_len..).unwrap_or_default().to_vec();
        buf = rest;
        let mut delivery = parse(&body);
        let behaviour = if delivery.kind == "handshake" {
            Behaviour::Ok
        } else {
            match lock(&shared.policy).as_mut() {
                Some(Policy::Fixed(b)) => b.clone(),
                Some(Policy::Chaos(c)) => c.pick(),
                None => Behaviour::Ok,
            }
        };
        let index = {
            let mut log = lock(&shared.log);
            delivery.at = Instant::now();
            delivery.answer = behaviour.label();
            log.push(delivery);
            log.len() - 1
        };
        let accepted = match behaviour {
            Behaviour::Ok => answer(&mut stream, "200 OK", "").await,
            Behaviour::Status(s) => answer(&mut stream, &format!("{s} {}", reason(s)), "").await && (200..300).contains(&s),
            Behaviour::Late(d) => {
                tokio::time::sleep(d).await;
                let _ = answer(&mut stream, "200 OK", "").await;
                false
            }
            Behaviour::Stall => {
                // Read (and drop) until the sender gives up and closes.
                let mut sink = [0u8; 1024];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                return;
            }
            Behaviour::Close => return,
            Behaviour::Trickle(d) => {
                for byte in b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n" {
                    if stream.write_all(&[*byte]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(d).await;
                }
                false
            }
            Behaviour::Redirect(to) => {
                let _ = answer(&mut stream, "302 Found", &format!("location: {to}\r\n")).await;
                false
            }
        };
        if accepted {
            if let Some(d) = lock(&shared.log).get_mut(index) {
                d.accepted = true;
            }
        }
    }
}

/// Reads one request into `buf`; returns the head's length (through the blank line) and the
/// body's (`Content-Length`), or `None` when the connection ended or the request is unusable.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(usize, usize)> {
    let head_len = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD || stream.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(buf.get(..head_len)?).to_string();
    let body_len = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    if body_len > MAX_BODY {
        return None;
    }
    while buf.len() < head_len + body_len {
        if stream.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
    Some((head_len, body_len))
}

/// Writes a response with an empty body; true if it went out.
async fn answer(stream: &mut TcpStream, status: &str, headers: &str) -> bool {
    let text = format!("HTTP/1.1 {status}\r\n{headers}content-length: 0\r\n\r\n");
    stream.write_all(text.as_bytes()).await.is_ok()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        302 => "Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// What the receiver reads of a notification Bundle: `entry[0].resource` is the
/// SubscriptionStatus.
fn parse(body: &[u8]) -> Delivery {
    let mut d =
        Delivery { at: Instant::now(), kind: String::new(), subscription: String::new(), events: Vec::new(), accepted: false, answer: "" };
    let Ok(bundle) = serde_json::from_slice::<Value>(body) else { return d };
    let Some(status) = bundle.get("entry").and_then(|e| e.get(0)).and_then(|e| e.get("resource")) else { return d };
    d.kind = status.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
    d.subscription = status
        .pointer("/subscription/reference")
        .and_then(Value::as_str)
        .and_then(|r| segment_after(r, "Subscription"))
        .unwrap_or_default();
    for e in status.get("notificationEvent").and_then(Value::as_array).into_iter().flatten() {
        if let Some(number) = e.get("eventNumber").and_then(int64) {
            let task = e.pointer("/focus/reference").and_then(Value::as_str).and_then(|r| segment_after(r, "Task"));
            d.events.push(Event { number, task });
        }
    }
    d
}

/// The path segment after `name` in a reference (`.../Task/abc/_history/2` -> `abc`).
pub fn segment_after(reference: &str, name: &str) -> Option<String> {
    let mut segments = reference.split('/');
    while let Some(s) = segments.next() {
        if s == name {
            return segments.next().filter(|id| !id.is_empty()).map(str::to_string);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_gives_its_type_subscription_numbers_and_tasks() {
        let body = br#"{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"SubscriptionStatus","type":"event-notification",
            "subscription":{"reference":"http://h/fhir/Subscription/s1"},
            "notificationEvent":[{"eventNumber":"7","focus":{"reference":"http://h/fhir/Task/abc/_history/1"}},{"eventNumber":"8"}]}}]}"#;
        let d = parse(body);
        assert_eq!(d.kind, "event-notification");
        assert_eq!(d.subscription, "s1");
        let got: Vec<(u64, Option<String>)> = d.events.into_iter().map(|e| (e.number, e.task)).collect();
        assert_eq!(got, vec![(7, Some("abc".to_string())), (8, None)]);
        assert_eq!(parse(b"not json").kind, "");
    }

    #[test]
    fn chaos_keeps_every_third_stretch_healthy() {
        let mut c = Chaos::new(1, Duration::from_secs(3600), Duration::from_secs(2));
        assert_eq!(c.pick(), Behaviour::Ok);
    }
}
