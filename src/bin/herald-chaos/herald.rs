//! Herald as a child process: `herald serve --listen 127.0.0.1:PORT --data-dir DIR
//! --allow-private-endpoints`, with fast retries and a short delivery timeout unless a scenario
//! overrides them, its stdout and stderr appended to a log file outside the data directory (so
//! that a full disk does not silence it). Ready once `GET /readyz` answers 200.
//!
//! Stopping is the point of this harness, so each way is explicit: `kill9` (SIGKILL, nothing
//! runs after it), `terminate` (SIGTERM, then SIGKILL after 20 s). A dropped `Herald` is killed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::Result;

/// How to start Herald; reused for every restart of a scenario.
#[derive(Clone, Debug)]
pub struct Launch {
    pub bin: PathBuf,
    pub data: PathBuf,
    pub port: u16,
    pub log: PathBuf,
    env: Vec<(String, String)>,
    /// Arguments after the fixed ones (`--nats URL --node-id NAME` for a cluster node).
    args: Vec<String>,
}

impl Launch {
    /// Retries every 50 to 200 ms and practically forever, a 1 s delivery timeout (so that a
    /// stalled receiver costs a second, not ten), warnings only in the log.
    pub fn new(bin: &Path, data: &Path, port: u16, log: &Path) -> Launch {
        let env = [
            ("HERALD_DELIVERY__INITIAL_INTERVAL", "50ms"),
            ("HERALD_DELIVERY__MAX_INTERVAL", "200ms"),
            ("HERALD_DELIVERY__MAX_ATTEMPTS", "1000000"),
            ("HERALD_DELIVERY__DEFAULT_TIMEOUT", "1s"),
            // Every request comes from 127.0.0.1: one client to the per-client bound.
            ("HERALD_SERVER__MAX_CONNECTIONS_PER_CLIENT", "0"),
            ("HERALD_LOG__LEVEL", "warn"),
        ];
        Launch {
            bin: bin.to_path_buf(),
            data: data.to_path_buf(),
            port,
            log: log.to_path_buf(),
            env: env.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect(),
            args: Vec::new(),
        }
    }

    /// Adds arguments after the fixed ones.
    pub fn args(mut self, args: &[&str]) -> Launch {
        self.args.extend(args.iter().map(|a| (*a).to_string()));
        self
    }

    /// Sets (or replaces) one `HERALD_*` variable.
    pub fn env(mut self, key: &str, value: &str) -> Launch {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}/fhir", self.port)
    }

    /// Starts the process without waiting for anything.
    pub fn spawn(&self) -> Result<Herald> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{}", self.port), "--data-dir"])
            .arg(&self.data)
            .arg("--allow-private-endpoints")
            .args(&self.args)
            .env_remove("RUST_LOG")
            .env_remove("HERALD_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", self.bin.display()))?;
        Ok(Herald { child, ready_url: format!("http://127.0.0.1:{}/readyz", self.port), log: self.log.clone() })
    }

    /// Starts Herald and waits until it is ready; returns it and how long that took.
    pub async fn start(&self, client: &reqwest::Client) -> Result<(Herald, Duration)> {
        let mut h = self.spawn()?;
        match h.wait(client, Duration::from_secs(120)).await? {
            Startup::Ready(took) => Ok((h, took)),
            Startup::Exited(status, _) => Err(format!("Herald exited before it was ready ({status}); its log:\n{}", h.log_tail(20)).into()),
            Startup::Hung => Err(format!("Herald was not ready within 120 s; its log:\n{}", h.log_tail(20)).into()),
        }
    }
}

/// How a start ended.
#[derive(Debug)]
pub enum Startup {
    /// `/readyz` answered 200 this long after the spawn.
    Ready(Duration),
    /// The process exited first, after this long.
    Exited(ExitStatus, Duration),
    /// Neither happened within the wait.
    Hung,
}

pub struct Herald {
    child: Child,
    ready_url: String,
    log: PathBuf,
}

impl Herald {
    /// Waits until `/readyz` answers 200 or the process exits, at most `within`.
    pub async fn wait(&mut self, client: &reqwest::Client, within: Duration) -> Result<Startup> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Startup::Exited(status, started.elapsed()));
            }
            if let Ok(r) = client.get(&self.ready_url).timeout(Duration::from_secs(2)).send().await {
                if r.status().is_success() {
                    return Ok(Startup::Ready(started.elapsed()));
                }
            }
            if started.elapsed() > within {
                return Ok(Startup::Hung);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `GET /readyz`'s status, or the error text.
    pub async fn readyz(&self, client: &reqwest::Client) -> String {
        match client.get(&self.ready_url).timeout(Duration::from_secs(5)).send().await {
            Ok(r) => r.status().as_u16().to_string(),
            Err(e) => format!("no answer ({})", crate::chain(&e)),
        }
    }

    /// Resident set size from `/proc/PID/status` (`VmRSS`), in MiB.
    pub fn rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }

    /// SIGKILL: the process gets no chance to flush or clean up.
    pub fn kill9(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM, then SIGKILL if it has not exited within 20 s. Returns the exit status of the
    /// clean stop, or `None` when it had to be killed.
    pub async fn terminate(mut self) -> Result<Option<ExitStatus>> {
        let pid = self.pid().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() > deadline {
                self.child.kill()?;
                self.child.wait()?;
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last `n` lines of the log (every run of this launch appends to it).
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log, n)
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

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines.iter().skip(lines.len().saturating_sub(n)).copied().collect::<Vec<_>>().join("\n")
}

/// The first `n` lines of a log at level ERROR, without colour codes, each cut to 240 chars.
pub fn errors(path: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(plain).filter(|l| l.contains("ERROR")).take(n).map(|l| l.chars().take(240).collect()).collect()
}

/// A log line without ANSI escape sequences (`ESC [ ... letter`).
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip to the sequence's final letter.
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Lines of a log that report a Rust panic (what a crash-proof start must never print).
pub fn panics(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().filter(|l| l.contains("panicked at")).map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_codes_are_dropped() {
        assert_eq!(plain("\u{1b}[31mERROR\u{1b}[0m store: full"), "ERROR store: full");
    }
}
