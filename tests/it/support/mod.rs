//! Test support: `TestServer` (Herald in-process on 127.0.0.1:0 over a temp sled dir) and
//! `Receiver` (a real axum rest-hook endpoint whose answer the test can switch mid-run),
//! `WsClient` (a websocket client bound with a real `$get-ws-binding-token` token).

#![allow(dead_code)]

pub mod backport;
pub mod binary;
pub mod receiver;
pub mod server;
pub mod status;
pub mod ws;

pub use receiver::{Received, Receiver};
pub use server::{TestCert, TestServer};
pub use ws::WsClient;
pub mod inferno;
pub mod nats;
pub mod profile;
pub mod versions;

/// `../shared/fhir/<rel>` when it exists. When it is absent the test prints a note and passes
/// (`None`), except under CI (`CI=true`), where a missing data set must fail the test rather
/// than turn conformance checks into no-ops.
pub fn shared_data(rel: &str) -> Option<std::path::PathBuf> {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fhir").join(rel);
    if path.exists() {
        return Some(path);
    }
    if std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
        panic!("{} is missing and CI=true: the conformance data must be present under CI", path.display());
    }
    println!("note: {} is absent; skipping the checks that need it", path.display());
    None
}

/// Polls `check` until it holds, failing after 10 s.
pub async fn until<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Opens a store once sled lets go of the directory: a handle just dropped releases its lock
/// from sled's background thread, a moment later.
pub fn when_unlocked(open: impl Fn() -> Result<herald::store::Store, herald::store::StoreError>) -> herald::store::Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match open() {
            Err(herald::store::StoreError::Engine(e))
                if e.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other.unwrap(),
        }
    }
}
