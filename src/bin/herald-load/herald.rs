//! Herald as a child process: `herald serve --listen 127.0.0.1:PORT --data-dir DIR
//! --allow-private-endpoints [--config FILE]` (plus `--nats`, `--node-id` for a cluster node)
//! on a fresh data directory, its log in a file beside it, ready once `GET /readyz` answers 200.
//! Stopped with SIGTERM (then SIGKILL after 20 s), and killed if dropped. Also the scratch
//! directory every run writes under.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::proc;
use crate::Result;

/// A directory under the system temp dir, removed with everything in it when dropped.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new() -> Result<Scratch> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let path = std::env::temp_dir().join(format!("herald-load-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(Scratch { path })
    }

    /// A new, empty sub-directory.
    pub fn dir(&self, name: &str) -> Result<PathBuf> {
        let p = self.path.join(name);
        if p.exists() {
            std::fs::remove_dir_all(&p)?;
        }
        std::fs::create_dir_all(&p)?;
        Ok(p)
    }

    /// Removes a sub-directory once its run is over (a full run writes gigabytes).
    pub fn remove(&self, dir: &Path) {
        if dir.starts_with(&self.path) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

pub struct Herald {
    child: Child,
    pid: String,
    /// FHIR base, `http://127.0.0.1:PORT/fhir`.
    pub base: String,
    log: PathBuf,
}

/// How to start Herald: the binary, `--config`, and for a cluster node its extra arguments
/// (`--nats`, `--node-id`) and environment.
#[derive(Clone, Debug, Default)]
pub struct Launch {
    pub bin: PathBuf,
    pub config: Option<PathBuf>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// How long Herald may take to answer `/readyz` (a cluster follower waits up to a lease TTL
/// before it serves).
const READY_WITHIN: Duration = Duration::from_secs(120);

impl Herald {
    /// Starts `bin` on a fresh data directory under `dir` and waits until it is ready.
    pub async fn start(bin: &Path, config: Option<&Path>, dir: &Path, client: &reqwest::Client) -> Result<Herald> {
        let launch = Launch { bin: bin.to_path_buf(), config: config.map(Path::to_path_buf), ..Launch::default() };
        let mut herald = Herald::spawn(&launch, dir)?;
        herald.wait_ready(client).await?;
        Ok(herald)
    }

    /// Starts Herald on a fresh data directory `dir/data`, its log in `dir/herald.log`, without
    /// waiting for it (several cluster nodes start at once).
    pub fn spawn(launch: &Launch, dir: &Path) -> Result<Herald> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = dir.join("herald.log");
        let out = std::fs::File::create(&log)?;
        let mut cmd = Command::new(&launch.bin);
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(dir.join("data"))
            .arg("--allow-private-endpoints")
            .args(&launch.args)
            // All load comes from 127.0.0.1, one client to the per-client connection bound.
            .env("HERALD_SERVER__MAX_CONNECTIONS_PER_CLIENT", "0")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        if let Some(c) = &launch.config {
            cmd.arg("--config").arg(c);
        }
        if std::env::var_os("HERALD_LOG__LEVEL").is_none() && std::env::var_os("RUST_LOG").is_none() {
            cmd.env("HERALD_LOG__LEVEL", "warn");
        }
        for (k, v) in &launch.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", launch.bin.display()))?;
        Ok(Herald { pid: child.id().to_string(), child, base: format!("http://127.0.0.1:{port}/fhir"), log })
    }

    /// Waits until `GET /readyz` answers 200.
    pub async fn wait_ready(&mut self, client: &reqwest::Client) -> Result<()> {
        let health = format!("{}/readyz", self.base.trim_end_matches("/fhir"));
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("Herald exited before it was ready ({status}); its log:\n{}", self.log_tail()).into());
            }
            if let Ok(r) = client.get(&health).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("Herald was not ready within {} s; its log:\n{}", READY_WITHIN.as_secs(), self.log_tail()).into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> &str {
        &self.pid
    }

    pub fn rss_mib(&self) -> Result<f64> {
        proc::memory_mib(&self.pid, "VmRSS")
    }

    /// The largest resident set the process has had.
    pub fn peak_rss_mib(&self) -> Result<f64> {
        proc::memory_mib(&self.pid, "VmHWM")
    }

    /// The last lines of Herald's log (for error messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines.iter().skip(lines.len().saturating_sub(20)).copied().collect::<Vec<_>>().join("\n")
    }

    /// SIGTERM, then SIGKILL if it has not exited within 20 s. Whether it stopped cleanly
    /// (exit status 0) is returned; crash safety never depends on it.
    pub async fn stop(mut self) -> Result<bool> {
        let _ = Command::new("kill").args(["-TERM", &self.pid]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.success());
            }
            if Instant::now() > deadline {
                self.child.kill()?;
                self.child.wait()?;
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
