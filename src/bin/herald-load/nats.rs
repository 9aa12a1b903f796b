//! NATS servers for the cluster rows: one JetStream server (R1) or three routed to each other
//! (R3), each a `nats-server` child process on free loopback ports with its store and log in
//! its own directory under the scratch directory. Started with the server's defaults otherwise
//! (as `tests/it/support/nats.rs` does).
//!
//! Decisions:
//! - Ports are picked by binding 127.0.0.1:0 and releasing the listeners, all at once: routes
//!   name each other's cluster ports up front.
//! - A server is ready when its monitoring port answers `GET /healthz` with 200: with `-js`
//!   that means JetStream is enabled and, in a cluster, that the meta group has a leader and
//!   this server is current (nats-server 2.9 answers 503 until then).
//! - Every server is SIGKILLed and reaped when the `Nats` is dropped, on success, error or
//!   ctrl-c alike; its directory goes with the scenario's.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Result;

const BINARY: &str = "nats-server";
const READY_WITHIN: Duration = Duration::from_secs(60);

/// Whether `nats-server` is on PATH (and runs).
pub fn available() -> bool {
    Command::new(BINARY).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

struct Server {
    name: String,
    port: u16,
    monitor_port: u16,
    log: PathBuf,
    child: Child,
    pid: String,
}

/// The NATS servers of one cluster row, killed on drop.
pub struct Nats {
    servers: Vec<Server>,
}

/// `n` distinct ports free right now on 127.0.0.1 (all bound at once, then released).
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<std::io::Result<Vec<_>>>()?;
    Ok(listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<std::io::Result<Vec<_>>>()?)
}

impl Nats {
    /// Starts `count` servers (1, or 3 routed into one JetStream cluster) under `dir` and waits
    /// until every one is ready.
    pub async fn start(count: usize, dir: &Path, client: &reqwest::Client) -> Result<Nats> {
        // Client and monitoring port for each server, then each one's cluster port if routed.
        let mut ports = free_ports(if count > 1 { 3 * count } else { 2 })?.into_iter();
        let mut pairs = Vec::with_capacity(count);
        for _ in 0..count {
            pairs.push((ports.next().ok_or("no free port")?, ports.next().ok_or("no free port")?));
        }
        let cluster_ports: Vec<u16> = ports.collect();
        let mut nats = Nats { servers: Vec::with_capacity(count) };
        for (i, (port, monitor_port)) in pairs.into_iter().enumerate() {
            let name = format!("nats-{}", i + 1);
            let store = dir.join(&name);
            std::fs::create_dir_all(&store)?;
            let log = store.join("server.log");
            let mut cmd = Command::new(BINARY);
            cmd.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-m", &monitor_port.to_string()])
                .args(["-n", &name, "-js", "-sd"])
                .arg(&store);
            if let Some(own) = cluster_ports.get(i) {
                let routes: Vec<String> = cluster_ports.iter().filter(|p| *p != own).map(|p| format!("nats://127.0.0.1:{p}")).collect();
                cmd.args(["--cluster_name", "herald-load", "--cluster", &format!("nats://127.0.0.1:{own}")])
                    .args(["--routes", &routes.join(",")]);
            }
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(std::fs::File::create(&log)?);
            let child = cmd.spawn().map_err(|e| format!("cannot start {BINARY}: {e}"))?;
            nats.servers.push(Server { name, port, monitor_port, log, pid: child.id().to_string(), child });
        }
        for server in &mut nats.servers {
            server.wait_ready(client).await?;
        }
        Ok(nats)
    }

    /// Every server's client URL, comma-separated (what `herald serve --nats` takes).
    pub fn urls(&self) -> String {
        self.servers.iter().map(|s| format!("nats://127.0.0.1:{}", s.port)).collect::<Vec<_>>().join(",")
    }

    pub fn pids(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.pid.clone()).collect()
    }

    /// The last lines of every server's log (for error messages).
    pub fn log_tails(&self) -> String {
        self.servers.iter().map(|s| format!("{}:\n{}", s.name, tail(&s.log, 10))).collect::<Vec<_>>().join("\n")
    }
}

impl Server {
    async fn wait_ready(&mut self, client: &reqwest::Client) -> Result<()> {
        let url = format!("http://127.0.0.1:{}/healthz", self.monitor_port);
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("{} exited before it was ready ({status}); its log:\n{}", self.name, tail(&self.log, 20)).into());
            }
            if let Ok(r) = client.get(&url).timeout(Duration::from_secs(2)).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(
                    format!("{} was not ready within {} s; its log:\n{}", self.name, READY_WITHIN.as_secs(), tail(&self.log, 20)).into()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines.iter().skip(lines.len().saturating_sub(n)).copied().collect::<Vec<_>>().join("\n")
}

impl Drop for Nats {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
    }
}
