//! Websocket fan-out under load: N sockets, each bound to its own websocket subscription on one
//! topic, then E Task writes that every subscription matches (each write fans out to N
//! sockets). Reports the connect rate (connect + bind + handshake), the fan-out latency from
//! the write being sent to each socket's receipt (p50/p99/max), and Herald's RSS per
//! connection (VmRSS of the server process after binding minus before connecting, over N).
//!
//! Herald runs as its own process (so its RSS is its own): by default the `herald` binary next
//! to this example's build directory, on a free port over a temporary data directory; or an
//! already running one with `--base http://HOST:PORT/fhir --pid PID`. The open-file limit is
//! raised to its hard maximum first (the spawned server inherits it).
//!
//! Run: `cargo build --release --bin herald --example ws_load && target/release/examples/ws_load
//! [--n 10000] [--events 10] [--concurrency 256]`. Figures only; nothing is asserted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

const TOPIC: &str = "http://example.org/topics/ws-load";

struct Args {
    n: usize,
    events: u64,
    concurrency: usize,
    base: Option<String>,
    pid: Option<u32>,
}

fn args() -> Args {
    let mut a = Args { n: 10_000, events: 10, concurrency: 256, base: None, pid: None };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--n" => a.n = value.parse().expect("--n N"),
            "--events" => a.events = value.parse().expect("--events E"),
            "--concurrency" => a.concurrency = value.parse().expect("--concurrency C"),
            "--base" => a.base = Some(value.trim_end_matches('/').to_string()),
            "--pid" => a.pid = Some(value.parse().expect("--pid PID")),
            other => panic!("unknown flag {other}; see the file header"),
        }
    }
    a
}

/// Raises RLIMIT_NOFILE to its hard limit; returns the new soft limit.
fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap_or(0)
}

struct Spawned {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_herald(n: usize) -> (Spawned, String, u32) {
    let exe = std::env::current_exe().unwrap();
    let bin: PathBuf = exe.parent().and_then(|p| p.parent()).map(|p| p.join("herald")).unwrap();
    assert!(bin.exists(), "{} not found: build it with `cargo build [--release] --bin herald`", bin.display());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(&bin)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path())
        .env("HERALD_LOG__LEVEL", "warn")
        .env("HERALD_WEBSOCKET__MAX_CONNECTIONS", (n + 64).to_string())
        // Every socket comes from 127.0.0.1: one client, as far as the per-client bound knows.
        .env("HERALD_SERVER__MAX_CONNECTIONS_PER_CLIENT", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id();
    (Spawned { child, _dir: dir }, format!("http://127.0.0.1:{port}/fhir"), pid)
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    let url = base.replace("/fhir", "/readyz");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if http.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("herald at {base} not ready");
}

async fn post(http: &reqwest::Client, url: String, body: Value) -> Value {
    let r = http.post(url).header("content-type", "application/fhir+json").json(&body).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    r.json().await.unwrap()
}

fn param(p: &Value, name: &str, key: &str) -> String {
    p["parameter"].as_array().unwrap().iter().find(|x| x["name"] == name).unwrap()[key].as_str().unwrap().to_string()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn event_number(bundle: &Value) -> Option<u64> {
    let status = &bundle["entry"][0]["resource"];
    if status["type"] != "event-notification" {
        return None;
    }
    status["notificationEvent"][0]["eventNumber"].as_str()?.parse().ok()
}

#[tokio::main]
async fn main() {
    let a = args();
    let nofile = raise_nofile();
    println!("open-file limit: {nofile}");
    let mut spawned = None;
    let (base, pid) = match (&a.base, a.pid) {
        (Some(base), Some(pid)) => (base.clone(), pid),
        (None, None) => {
            let (s, base, pid) = spawn_herald(a.n);
            spawned = Some(s);
            (base, pid)
        }
        _ => panic!("--base and --pid go together"),
    };
    let http = reqwest::Client::builder().pool_max_idle_per_host(a.concurrency).build().unwrap();
    wait_ready(&http, &base).await;

    let topic = json!({
        "resourceType": "SubscriptionTopic", "url": TOPIC, "status": "active",
        "resourceTrigger": [{ "resource": "Task", "supportedInteraction": ["create"] }]
    });
    post(&http, format!("{base}/SubscriptionTopic"), topic).await;

    // N websocket subscriptions and one token each.
    let started = Instant::now();
    let tokens: Vec<(String, String)> = futures_util::stream::iter(0..a.n)
        .map(|_| {
            let (http, base) = (http.clone(), base.clone());
            async move {
                let sub = json!({
                    "resourceType": "Subscription", "status": "requested", "topic": TOPIC, "content": "id-only",
                    "channelType": { "system": "http://terminology.hl7.org/CodeSystem/subscription-channel-type", "code": "websocket" }
                });
                let created = post(&http, format!("{base}/Subscription"), sub).await;
                let id = created["id"].as_str().unwrap().to_string();
                let p: Value =
                    http.get(format!("{base}/Subscription/{id}/$get-ws-binding-token")).send().await.unwrap().json().await.unwrap();
                (param(&p, "token", "valueString"), param(&p, "websocket-url", "valueUrl"))
            }
        })
        .buffer_unordered(a.concurrency.min(64))
        .collect()
        .await;
    println!("{} subscriptions and tokens in {:.1?}", a.n, started.elapsed());

    let rss_before = rss_kib(pid);
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, Instant)>();
    let connected = Arc::new(tokio::sync::Semaphore::new(0));
    let started = Instant::now();
    let mut readers = Vec::with_capacity(a.n);
    let gate = Arc::new(tokio::sync::Semaphore::new(a.concurrency));
    for (token, url) in tokens {
        let (tx, connected, gate) = (tx.clone(), connected.clone(), gate.clone());
        readers.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.unwrap();
            let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.expect("connect");
            ws.send(Message::text(format!("bind-with-token {token}"))).await.unwrap();
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) if t.as_str().contains("\"handshake\"") => break,
                    Some(Ok(_)) => {}
                    other => panic!("no handshake: {other:?}"),
                }
            }
            drop(permit);
            connected.add_permits(1);
            while let Some(Ok(msg)) = ws.next().await {
                if let Message::Text(t) = msg {
                    let at = Instant::now();
                    if let Some(n) = serde_json::from_str::<Value>(t.as_str()).ok().as_ref().and_then(event_number) {
                        let _ = tx.send((n, at));
                    }
                }
            }
        }));
    }
    drop(tx);
    let _all = connected.acquire_many(a.n as u32).await.unwrap();
    let connect_time = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await; // let the server settle before reading RSS
    let rss_after = rss_kib(pid);

    // E writes, each matched by every subscription; wait for all N receipts before the next.
    let mut latencies = Vec::with_capacity(a.n * a.events as usize);
    let mut waits = Vec::new();
    for e in 1..=a.events {
        let sent = Instant::now();
        let task = json!({ "resourceType": "Task", "status": "requested", "intent": "order" });
        post(&http, format!("{base}/Task"), task).await;
        let acked = sent.elapsed();
        let mut got = 0;
        while got < a.n {
            let (n, at) = tokio::time::timeout(Duration::from_secs(120), rx.recv()).await.expect("fan-out stalled").expect("readers gone");
            if n == e {
                latencies.push(at - sent);
                got += 1;
            }
        }
        waits.push((acked, sent.elapsed()));
    }
    latencies.sort();
    let rss_end = rss_kib(pid);

    println!("connect + bind + handshake: {} sockets in {:.2?} = {:.0}/s", a.n, connect_time, a.n as f64 / connect_time.as_secs_f64());
    println!(
        "fan-out latency, write sent -> socket receipt ({} samples): p50 {:.1?}, p99 {:.1?}, max {:.1?}",
        latencies.len(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default()
    );
    let acks: Vec<Duration> = waits.iter().map(|w| w.0).collect();
    let alls: Vec<Duration> = waits.iter().map(|w| w.1).collect();
    println!("per write: ack {:.1?} (mean), last socket reached {:.1?} (mean)", mean(&acks), mean(&alls));
    println!(
        "herald RSS: {} MiB before sockets, {} MiB bound, {} MiB after the writes; {:.1} KiB per connection",
        rss_before / 1024,
        rss_after / 1024,
        rss_end / 1024,
        rss_after.saturating_sub(rss_before) as f64 / a.n as f64
    );
    for r in readers {
        r.abort();
    }
    drop(spawned);
}

fn mean(d: &[Duration]) -> Duration {
    if d.is_empty() {
        Duration::ZERO
    } else {
        d.iter().sum::<Duration>() / d.len() as u32
    }
}
