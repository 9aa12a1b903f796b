//! Real NATS servers for the tests: one JetStream server (`NatsCluster::single`) or a
//! three-server JetStream cluster (`NatsCluster::three`), each a `nats-server` child process with
//! its own store directory in a tempdir, on loopback ports.
//!
//! Decisions:
//! - Ports are picked by binding 127.0.0.1:0 and releasing the listeners (`free_ports`): cluster
//!   routes name each other's ports up front, so `port: -1` cannot be used, and a killed server
//!   is restarted on the same ports and store dir, so they must be known anyway.
//! - A server is ready when its monitoring endpoint answers `GET /healthz` with 200: with `-js`
//!   that means JetStream is enabled and, in a cluster, that the meta group has a leader and
//!   this server is current (nats-server 2.9 answers 503 until then). Plain std TCP, no
//!   runtime, so that synchronous tests can start servers too.
//! - `kill` is SIGKILL (the crash the cluster must survive), `restart` starts the same server
//!   again on the same store dir; dropping the `NatsCluster` kills and reaps every server.
//! - No `nats-server` on PATH: `NatsCluster::available()` prints a note and says no, so the test
//!   passes without checking anything, except under `CI=true`, where it fails (the rule of
//!   `support::shared_data`): CI installs the server (`.ci/run`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = "nats-server";
const READY_WITHIN: Duration = Duration::from_secs(30);

/// One `nats-server` of a test: its ports, its store, its process while it runs.
pub struct NatsServer {
    pub name: String,
    pub port: u16,
    pub monitor_port: u16,
    pub cluster_port: Option<u16>,
    routes: Vec<u16>,
    store: tempfile::TempDir,
    child: Option<Child>,
}

/// The servers of one test, killed on drop.
pub struct NatsCluster {
    pub servers: Vec<NatsServer>,
}

/// `n` distinct ports free right now on 127.0.0.1 (all bound at once, then released).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

impl NatsServer {
    fn new(name: &str, ports: &[u16], cluster_port: Option<u16>) -> NatsServer {
        NatsServer {
            name: name.into(),
            port: ports[0],
            monitor_port: ports[1],
            cluster_port,
            routes: Vec::new(),
            store: tempfile::tempdir().unwrap(),
            child: None,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn store_dir(&self) -> PathBuf {
        self.store.path().to_path_buf()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(BINARY);
        cmd.args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-m", &self.monitor_port.to_string()])
            .args(["-n", &self.name, "-js", "-sd"])
            .arg(self.store.path());
        if let Some(cluster) = self.cluster_port {
            let routes: Vec<String> = self.routes.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect();
            cmd.args(["--cluster_name", "herald-test", "--cluster", &format!("nats://127.0.0.1:{cluster}")])
                .args(["--routes", &routes.join(",")]);
        }
        // Its log goes to a file in its store dir, read back when it does not get ready.
        let log = std::fs::File::create(self.log_path()).unwrap();
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        self.child = Some(cmd.spawn().unwrap_or_else(|e| panic!("cannot start {BINARY}: {e}")));
    }

    fn log_path(&self) -> PathBuf {
        self.store.path().join("server.log")
    }

    /// The monitoring endpoint's answer to `GET path`: status code and body, if it answered.
    pub fn monitor(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect_timeout(&([127, 0, 0, 1], self.monitor_port).into(), Duration::from_secs(1)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n", self.monitor_port);
        stream.write_all(request.as_bytes()).ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        let status = answer.split_whitespace().nth(1)?.parse().ok()?;
        let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        Some((status, body))
    }

    fn healthz(&self) -> Option<u16> {
        self.monitor("/healthz").map(|(status, _)| status)
    }

    /// The last sequence this server's own copy of stream `name` holds (`/jsz`), if it has one.
    pub fn stream_last_seq(&self, name: &str) -> Option<u64> {
        let (_, body) = self.monitor("/jsz?accounts=true&streams=true")?;
        let jsz: serde_json::Value = serde_json::from_str(&body).ok()?;
        jsz["account_details"].as_array()?.iter().flat_map(|a| a["stream_detail"].as_array().into_iter().flatten()).find_map(|s| {
            if s["name"] == name {
                s["state"]["last_seq"].as_u64()
            } else {
                None
            }
        })
    }

    /// Waits until the server answers `/healthz` with 200 (JetStream enabled and current).
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if self.healthz() == Some(200) {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("{} exited with {status}: {}", self.name, std::fs::read_to_string(self.log_path()).unwrap_or_default());
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready within {READY_WITHIN:?}; its log:\n{}",
                self.name,
                std::fs::read_to_string(self.log_path()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no shutdown, no flush, as a crash of its machine.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl NatsCluster {
    /// Whether `nats-server` is on PATH; without it a test prints a note and passes, except
    /// under `CI=true`, where it fails.
    pub fn available() -> bool {
        let found = Command::new(BINARY).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
        if found {
            return true;
        }
        if std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
            panic!("{BINARY} is not on PATH and CI=true: CI must install it (.ci/run)");
        }
        println!("note: {BINARY} is not on PATH; skipping the checks that need a NATS server");
        false
    }

    /// One JetStream server, ready; `None` when `nats-server` is absent (see `available`).
    pub fn single() -> Option<NatsCluster> {
        if !Self::available() {
            return None;
        }
        let mut server = NatsServer::new("n1", &free_ports(2), None);
        server.spawn();
        server.wait_ready();
        Some(NatsCluster { servers: vec![server] })
    }

    /// Three JetStream servers routed to each other, each ready (a meta leader elected).
    pub fn three() -> Option<NatsCluster> {
        if !Self::available() {
            return None;
        }
        let ports = free_ports(9);
        let cluster_ports = &ports[6..];
        let mut servers: Vec<NatsServer> = cluster_ports
            .iter()
            .enumerate()
            .map(|(i, p)| NatsServer::new(&format!("n{}", i + 1), &ports[2 * i..2 * i + 2], Some(*p)))
            .collect();
        for (i, server) in servers.iter_mut().enumerate() {
            server.routes = cluster_ports.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, p)| *p).collect();
            server.spawn();
        }
        for server in &mut servers {
            server.wait_ready();
        }
        Some(NatsCluster { servers })
    }

    /// Every server's client URL, comma-separated (what `async_nats::connect` takes).
    pub fn urls(&self) -> String {
        self.servers.iter().map(NatsServer::url).collect::<Vec<_>>().join(",")
    }

    /// SIGKILLs server `i`.
    pub fn kill(&mut self, i: usize) {
        self.servers[i].kill();
    }

    /// Starts server `i` again on the same ports and store dir and waits until it is ready.
    pub fn restart(&mut self, i: usize) {
        let server = &mut self.servers[i];
        server.kill();
        server.spawn();
        server.wait_ready();
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for server in &mut self.servers {
            server.kill();
        }
    }
}
