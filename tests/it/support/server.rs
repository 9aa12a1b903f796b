//! Herald in-process: `herald::run` on 127.0.0.1:0 over a fresh temp dir, with a shutdown the
//! test owns (plain HTTP, or HTTPS with a fresh self-signed `TestCert`). Delivery to 127.0.0.0/8 is allowed explicitly (the guard test runs without it)
//! and retries (of deliveries and of refused handshakes) are fast.

use std::time::{Duration, Instant};

use herald::config::{Config, Overrides};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::sync::oneshot;

pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    pub dir: tempfile::TempDir,
    /// The FHIR version served (`fhir.version`), for the version-dependent helpers below.
    pub version: String,
}

pub fn test_config(dir: &std::path::Path) -> Config {
    let mut cfg = Config::load(None, Vec::<(String, String)>::new(), &Overrides::default()).unwrap();
    cfg.store.data_dir = dir.to_path_buf();
    cfg.delivery.allow_private_networks = vec!["127.0.0.0/8".parse().unwrap()];
    cfg.delivery.initial_interval = "50ms".into();
    cfg.delivery.max_interval = "200ms".into();
    cfg.delivery.max_attempts = 5;
    cfg.delivery.default_timeout = "2s".into();
    // Refused handshakes are retried as quickly as deliveries (the default is 1 s, 2 s, 4 s).
    cfg.delivery.handshake_retry_schedule = vec!["50ms".into(), "100ms".into(), "200ms".into()];
    cfg
}

/// A self-signed certificate for `127.0.0.1` and `localhost` (rcgen), as PEM files.
pub struct TestCert {
    pub cert_pem: String,
    pub cert_path: std::path::PathBuf,
    pub key_path: std::path::PathBuf,
}

impl TestCert {
    pub fn write(dir: &std::path::Path) -> TestCert {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, signing_key.serialize_pem()).unwrap();
        TestCert { cert_pem: cert.pem(), cert_path, key_path }
    }

    /// An HTTPS client that trusts this certificate and no other.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.cert_pem.as_bytes()).unwrap())
            .build()
            .unwrap()
    }

    /// A rustls client configuration that trusts this certificate and no other.
    pub fn rustls_client(&self) -> std::sync::Arc<rustls::ClientConfig> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls::pki_types::CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).unwrap()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        std::sync::Arc::new(config)
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = test_config(dir.path());
        adjust(&mut cfg);
        Self::launch(cfg, dir, "http", reqwest::Client::new()).await
    }

    /// Herald on a data directory the test keeps (`stop_keeping`), e.g. to start again on it.
    pub async fn start_in(dir: tempfile::TempDir, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let mut cfg = test_config(dir.path());
        adjust(&mut cfg);
        Self::launch(cfg, dir, "http", reqwest::Client::new()).await
    }

    /// Herald serving HTTPS with a fresh self-signed certificate for 127.0.0.1 (`TestCert`,
    /// written into the server's temp dir); `client` trusts that certificate alone.
    pub async fn start_tls(adjust: impl FnOnce(&mut Config)) -> (TestServer, TestCert) {
        let dir = tempfile::tempdir().unwrap();
        let cert = TestCert::write(dir.path());
        // The store in a directory of its own: Herald refuses one holding other files.
        let mut cfg = test_config(&dir.path().join("store"));
        cfg.server.tls_cert = cert.cert_path.display().to_string();
        cfg.server.tls_key = cert.key_path.display().to_string();
        adjust(&mut cfg);
        let client = cert.client();
        (Self::launch(cfg, dir, "https", client).await, cert)
    }

    async fn launch(cfg: Config, dir: tempfile::TempDir, scheme: &str, client: reqwest::Client) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let version = herald::fhir::FhirVersion::parse(&cfg.fhir.version).unwrap().number().to_owned();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            herald::run(cfg, listener, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        let server = TestServer { base: format!("{scheme}://{addr}/fhir"), client, stop: Some(stop), task: Some(task), dir, version };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        let url = self.base.replace("/fhir", "/readyz");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(r) = self.client.get(&url).send().await {
                if r.status() == StatusCode::OK {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("server not ready within 10s");
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }

    /// Stops the server and hands back its data directory, intact.
    pub async fn stop_keeping(mut self) -> tempfile::TempDir {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }

    async fn finish(resp: reqwest::Response) -> (StatusCode, Value) {
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) })
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        Self::finish(self.client.get(self.url(path)).send().await.unwrap()).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        Self::finish(self.client.post(self.url(path)).header("content-type", "application/fhir+json").json(body).send().await.unwrap())
            .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        Self::finish(self.client.put(self.url(path)).header("content-type", "application/fhir+json").json(body).send().await.unwrap()).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        Self::finish(self.client.delete(self.url(path)).send().await.unwrap()).await
    }

    /// Creates a topic on Task create/update/delete with the usual Task filters.
    pub async fn task_topic(&self, url: &str) {
        if self.version != super::versions::R5 {
            let (ty, topic) = super::versions::topic(&self.version, url, "Task", &["owner", "status", "requester"]);
            let (s, b) = self.post(ty, &topic).await;
            assert_eq!(s, StatusCode::CREATED, "{b}");
            return;
        }
        let topic = json!({
            "resourceType": "SubscriptionTopic",
            "url": url,
            "status": "active",
            "resourceTrigger": [{ "resource": "Task", "supportedInteraction": ["create", "update", "delete"] }],
            "canFilterBy": [
                { "resource": "Task", "filterParameter": "owner" },
                { "resource": "Task", "filterParameter": "status" },
                { "resource": "Task", "filterParameter": "requester" }
            ],
            "notificationShape": [{ "resource": "Task" }]
        });
        let (s, b) = self.post("SubscriptionTopic", &topic).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }

    /// Creates a rest-hook subscription; `extra` is merged into the resource.
    pub async fn subscribe(&self, topic: &str, endpoint: &str, extra: Value) -> String {
        if self.version != super::versions::R5 {
            assert!(extra.as_object().is_none_or(|o| o.is_empty()), "R5 fields on a {} Subscription: {extra}", self.version);
            let sub = super::versions::subscription(&self.version, topic, endpoint, "id-only", "Task", &[], &[]);
            let (s, b) = self.post("Subscription", &sub).await;
            assert_eq!(s, StatusCode::CREATED, "{b}");
            assert_eq!(b["status"], "requested", "a new rest-hook subscription answers requested: {b}");
            return b["id"].as_str().unwrap().to_string();
        }
        let mut sub = json!({
            "resourceType": "Subscription",
            "status": "requested",
            "topic": topic,
            "channelType": { "system": "http://terminology.hl7.org/CodeSystem/subscription-channel-type", "code": "rest-hook" },
            "endpoint": endpoint,
            "content": "id-only",
            "contentType": "application/fhir+json"
        });
        if let (Some(obj), Some(extra)) = (sub.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                obj.insert(k.clone(), v.clone());
            }
        }
        let (s, b) = self.post("Subscription", &sub).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        assert_eq!(b["status"], "requested", "a new rest-hook subscription answers requested: {b}");
        b["id"].as_str().unwrap().to_string()
    }

    /// The subscription's `query-status` status resource (R4: a Parameters; read it with
    /// `support::status`).
    pub async fn status_of(&self, id: &str) -> Value {
        let (s, b) = self.get(&format!("Subscription/{id}/$status")).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b["entry"][0]["resource"].clone()
    }

    /// Polls `$status` until the subscription has `status`, or fails after `d`.
    pub async fn wait_status(&self, id: &str, status: &str, d: Duration) -> Value {
        let deadline = Instant::now() + d;
        loop {
            let st = self.status_of(id).await;
            if super::versions::field(&st, "status").as_deref() == Some(status) {
                return st;
            }
            if Instant::now() > deadline {
                panic!("subscription {id} did not reach {status} within {d:?}; last: {st}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Creates a Task; returns its id.
    pub async fn create_task(&self, status: &str, owner: &str) -> String {
        let (s, b) = self
            .post("Task", &json!({ "resourceType": "Task", "status": status, "intent": "order", "owner": { "reference": owner } }))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        b["id"].as_str().unwrap().to_string()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}
