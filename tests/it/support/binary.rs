//! The real `herald` binary as a child process, for tests that must stop it with a signal
//! (SIGKILL, SIGTERM) and restart it on the same data directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

pub struct Herald {
    child: Child,
    pub base: String,
    /// `http://127.0.0.1:PORT`, where `/healthz` and `/readyz` are.
    pub root: String,
    log: Option<PathBuf>,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Herald {
    /// Starts Herald with fast retries and waits until `/readyz` answers 200.
    pub async fn start(dir: &Path, port: u16) -> Herald {
        Self::start_with(dir, port, &[], None).await
    }

    /// `start` with more `HERALD_*` variables (they win over the defaults here) and, when `log`
    /// is given, stdout and stderr appended to that file at level info.
    pub async fn start_with(dir: &Path, port: u16, env: &[(&str, &str)], log: Option<&Path>) -> Herald {
        let mut h = Self::spawn(dir, port, env, log);
        h.wait_ready(Duration::from_secs(60)).await;
        h
    }

    /// Starts the process without waiting for anything.
    pub fn spawn(dir: &Path, port: u16, env: &[(&str, &str)], log: Option<&Path>) -> Herald {
        Self::spawn_args(dir, port, &[], env, log)
    }

    /// `spawn` with more `herald serve` arguments (`--fhir-version 4.0.1`).
    pub fn spawn_args(dir: &Path, port: u16, args: &[&str], env: &[(&str, &str)], log: Option<&Path>) -> Herald {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(dir)
            .arg("--allow-private-endpoints")
            .args(args)
            .env("HERALD_DELIVERY__INITIAL_INTERVAL", "50ms")
            .env("HERALD_DELIVERY__MAX_INTERVAL", "200ms")
            .env("HERALD_DELIVERY__MAX_ATTEMPTS", "100000")
            .env("HERALD_LOG__LEVEL", if log.is_some() { "info" } else { "warn" })
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        match log {
            Some(path) => {
                let file = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
                cmd.stdout(file.try_clone().unwrap()).stderr(file);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = cmd.spawn().unwrap();
        Herald {
            child,
            base: format!("http://127.0.0.1:{port}/fhir"),
            root: format!("http://127.0.0.1:{port}"),
            log: log.map(Path::to_path_buf),
        }
    }

    /// Waits until `/readyz` answers 200; fails if the process exits first.
    pub async fn wait_ready(&mut self, d: Duration) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + d;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("herald exited before it was ready ({status}); log:\n{}", self.log_text());
            }
            if let Ok(r) = client.get(format!("{}/readyz", self.root)).send().await {
                if r.status() == StatusCode::OK {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "herald did not become ready within {d:?}; log:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// What the process wrote so far (empty without a log file).
    pub fn log_text(&self) -> String {
        self.log.as_ref().and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default()
    }

    /// Sends SIGTERM (the graceful stop).
    pub fn terminate(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) with a pid this test started and still owns (not yet reaped).
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "kill(SIGTERM) failed");
    }

    /// SIGSTOP: the process freezes as a machine that stopped answering would (connections
    /// are still accepted by the kernel, nothing answers them).
    pub fn pause(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) with a pid this test started and still owns (not yet reaped).
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0, "kill(SIGSTOP) failed");
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: as in `pause`.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0, "kill(SIGCONT) failed");
    }

    /// Waits for the process to exit; fails after `d`.
    pub async fn wait_exit(&mut self, d: Duration) -> ExitStatus {
        let deadline = Instant::now() + d;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "herald did not exit within {d:?}; log:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The exit status if the process has ended, without waiting.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL on Unix
        self.child.wait().unwrap();
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
