//! The real `herald` binary as a child process, for tests that must kill it with SIGKILL and
//! restart it on the same data directory.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

pub struct Herald {
    child: Child,
    pub base: String,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Herald {
    pub async fn start(dir: &std::path::Path, port: u16) -> Herald {
        let child = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(dir)
            .arg("--allow-private-endpoints")
            .env("HERALD_DELIVERY__INITIAL_INTERVAL", "50ms")
            .env("HERALD_DELIVERY__MAX_INTERVAL", "200ms")
            .env("HERALD_DELIVERY__MAX_ATTEMPTS", "100000")
            .env("HERALD_LOG__LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let h = Herald { child, base: format!("http://127.0.0.1:{port}/fhir") };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = client.get(format!("http://127.0.0.1:{port}/healthz")).send().await {
                if r.status() == StatusCode::OK {
                    return h;
                }
            }
            assert!(Instant::now() < deadline, "herald did not become healthy");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
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
