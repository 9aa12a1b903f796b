//! Configuration: embedded defaults (`config/default.toml`), then the file given with
//! `--config` or `HERALD_CONFIG`, then `HERALD_*` variables (`__` separates sections:
//! `HERALD_DELIVERY__DEFAULT_TIMEOUT=5s`), then command-line flags. Parsed once into typed
//! values and checked; a bad value stops startup naming its key.
//!
//! The loader takes the environment as an argument so tests never touch process env.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

mod sections;

pub use sections::*;

/// The defaults, compiled in so the binary runs with no file present.
pub const DEFAULTS: &str = include_str!("../../config/default.toml");

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub fhir: FhirSettings,
    pub store: StoreConfig,
    pub ingest: IngestConfig,
    pub delivery: DeliverySettings,
    pub subscriptions: SubscriptionSettings,
    pub search: SearchSettings,
    pub websocket: WebsocketSettings,
    pub admin: AdminSettings,
    pub auth: AuthSettings,
    pub log: LogConfig,
    pub cluster: ClusterSettings,
}

/// The FHIR version the instance serves (`[fhir]`); see `crate::fhir::version`.
/// Command-line overrides (the last layer).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub fhir_version: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub allow_private_endpoints: bool,
    pub allow_anonymous: bool,
    /// `--nats`: cluster mode on these NATS servers (`cluster.nats`).
    pub nats: Option<String>,
    /// `--node-id` (`cluster.node_id`).
    pub node_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Figment(#[from] Box<figment::Error>),
    #[error("configuration key {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// Durations are written `10s`, `500ms`, `5m`, `24h`.
pub fn parse_duration(key: &'static str, text: &str) -> Result<Duration, ConfigError> {
    humantime_parse(text).ok_or_else(|| ConfigError::Invalid { key, message: format!("'{text}' is not a duration like 10s, 500ms, 5m") })
}

fn humantime_parse(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (num, unit) = text.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

impl Config {
    /// Loads the layers. `env` is the process environment (or a test's).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        let env: Vec<(String, String)> = env.into_iter().collect();
        let file = file.map(Path::to_path_buf).or_else(|| env.iter().find(|(k, _)| k == "HERALD_CONFIG").map(|(_, v)| PathBuf::from(v)));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Invalid { key: "--config", message: format!("{} does not exist", path.display()) });
            }
            figment = figment.merge(Toml::file(path));
        }
        for (key, value) in env {
            let Some(rest) = key.strip_prefix("HERALD_") else { continue };
            // Only HERALD_SECTION__KEY configures the server; other HERALD_* variables belong
            // to other tools (the CLI's HERALD_SERVER and HERALD_ADMIN_TOKEN, test switches).
            if rest == "CONFIG" || !rest.contains("__") {
                continue;
            }
            let path = rest.to_ascii_lowercase().replace("__", ".");
            // figment's value parser panics on some escapes followed by non-ASCII text (found
            // by `fuzz::configuration_overrides_load_or_fail_cleanly`); such values are strings.
            let parsed: figment::value::Value = if value.is_ascii() {
                value.parse().unwrap_or_else(|_| figment::value::Value::from(value.clone()))
            } else {
                figment::value::Value::from(value.clone())
            };
            figment = figment.merge(Serialized::default(&path, parsed));
        }
        let mut cfg: Config = figment.extract().map_err(|e| ConfigError::Figment(Box::new(e)))?;
        if let Some(listen) = overrides.listen {
            cfg.server.listen = listen;
        }
        if let Some(dir) = &overrides.data_dir {
            cfg.store.data_dir = dir.clone();
        }
        if overrides.allow_private_endpoints {
            cfg.delivery.allow_private_endpoints = true;
        }
        if overrides.allow_anonymous {
            cfg.auth.allow_anonymous = true;
        }
        if let Some(version) = &overrides.fhir_version {
            cfg.fhir.version = version.clone();
        }
        if let Some(nats) = &overrides.nats {
            cfg.cluster.nats = nats.clone();
        }
        if let Some(node) = &overrides.node_id {
            cfg.cluster.node_id = node.clone();
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// The FHIR version `fhir.version` names (checked by `validate`, so R5 is only a fallback).
    pub fn fhir_version(&self) -> crate::fhir::FhirVersion {
        crate::fhir::FhirVersion::parse(&self.fhir.version).unwrap_or(crate::fhir::FhirVersion::R5)
    }

    /// Cross-field and value checks.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if crate::fhir::FhirVersion::parse(&self.fhir.version).is_none() {
            return Err(ConfigError::Invalid {
                key: "fhir.version",
                message: format!("must be 4.0.1 (R4), 4.3.0 (R4B) or 5.0.0 (R5), not {:?}", self.fhir.version),
            });
        }
        for (key, text) in [
            ("server.shutdown_grace", &self.server.shutdown_grace),
            ("delivery.default_timeout", &self.delivery.default_timeout),
            ("delivery.initial_interval", &self.delivery.initial_interval),
            ("delivery.max_interval", &self.delivery.max_interval),
            ("delivery.max_age", &self.delivery.max_age),
            ("subscriptions.max_timeout", &self.subscriptions.max_timeout),
            ("subscriptions.max_heartbeat_period", &self.subscriptions.max_heartbeat_period),
            ("websocket.token_lifetime", &self.websocket.token_lifetime),
            ("websocket.send_timeout", &self.websocket.send_timeout),
            ("subscriptions.events_max_age", &self.subscriptions.events_max_age),
            ("auth.leeway", &self.auth.leeway),
            ("subscriptions.events_prune_interval", &self.subscriptions.events_prune_interval),
            ("store.read_committed_timeout", &self.store.read_committed_timeout),
            ("store.dangerous_flush_delay", &self.store.dangerous_flush_delay),
            ("store.flush_timeout", &self.store.flush_timeout),
            ("delivery.handshake_delay", &self.delivery.handshake_delay),
            ("delivery.ack_linger", &self.delivery.ack_linger),
            ("cluster.lease_ttl", &self.cluster.lease_ttl),
            ("cluster.forward_timeout", &self.cluster.forward_timeout),
        ] {
            parse_duration(key, text)?;
        }
        self.handshake_retry_schedule()?;
        self.validate_cluster()?;
        if self.duration("websocket.token_lifetime").is_zero() {
            return Err(ConfigError::Invalid { key: "websocket.token_lifetime", message: "must be longer than zero".into() });
        }
        if self.store.compression_level > 22 {
            return Err(ConfigError::Invalid {
                key: "store.compression_level",
                message: "must be 0 (off) or a zstd level from 1 to 22".into(),
            });
        }
        if self.websocket.send_buffer < 2 {
            return Err(ConfigError::Invalid { key: "websocket.send_buffer", message: "must be at least 2".into() });
        }
        if self.websocket.max_message_bytes < 256 {
            return Err(ConfigError::Invalid { key: "websocket.max_message_bytes", message: "must be at least 256".into() });
        }
        if self.websocket.max_connections == 0 {
            return Err(ConfigError::Invalid { key: "websocket.max_connections", message: "must be at least 1".into() });
        }
        if !self.websocket.url.is_empty() && !url::Url::parse(&self.websocket.url).is_ok_and(|u| matches!(u.scheme(), "ws" | "wss")) {
            return Err(ConfigError::Invalid { key: "websocket.url", message: "must be an absolute ws:// or wss:// URL".into() });
        }
        if self.duration("subscriptions.events_prune_interval").is_zero() {
            return Err(ConfigError::Invalid { key: "subscriptions.events_prune_interval", message: "must be longer than zero".into() });
        }
        if self.duration("store.flush_timeout") <= self.duration("store.dangerous_flush_delay") {
            return Err(ConfigError::Invalid {
                key: "store.flush_timeout",
                message: "must be longer than store.dangerous_flush_delay".into(),
            });
        }
        if self.subscriptions.default_max_count == 0 || self.subscriptions.default_max_count > self.subscriptions.max_count {
            return Err(ConfigError::Invalid {
                key: "subscriptions.default_max_count",
                message: format!("must be between 1 and subscriptions.max_count ({})", self.subscriptions.max_count),
            });
        }
        if self.subscriptions.purge_batch == 0 {
            return Err(ConfigError::Invalid { key: "subscriptions.purge_batch", message: "must be at least 1".into() });
        }
        if self.subscriptions.max_events_per_query == 0 {
            return Err(ConfigError::Invalid { key: "subscriptions.max_events_per_query", message: "must be at least 1".into() });
        }
        if !(1.0..=10.0).contains(&self.delivery.multiplier) {
            return Err(ConfigError::Invalid { key: "delivery.multiplier", message: "must be between 1 and 10".into() });
        }
        if !(0.0..=1.0).contains(&self.delivery.randomization_factor) {
            return Err(ConfigError::Invalid { key: "delivery.randomization_factor", message: "must be between 0 and 1".into() });
        }
        self.delivery.signing_secrets.keys()?;
        if self.delivery.max_attempts == 0 {
            return Err(ConfigError::Invalid { key: "delivery.max_attempts", message: "must be at least 1".into() });
        }
        if self.server.max_body_memory_mib == 0 {
            return Err(ConfigError::Invalid { key: "server.max_body_memory_mib", message: "must be at least 1".into() });
        }
        if self.server.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid { key: "server.max_body_bytes", message: "must be at least 1024".into() });
        }
        self.tls_files()?;
        if self.search.max_params == 0 {
            return Err(ConfigError::Invalid { key: "search.max_params", message: "must be at least 1".into() });
        }
        if !self.server.base_url.is_empty() && url::Url::parse(&self.server.base_url).is_err() {
            return Err(ConfigError::Invalid { key: "server.base_url", message: "must be an absolute URL".into() });
        }
        if self.search.max_scan == 0 {
            return Err(ConfigError::Invalid { key: "search.max_scan", message: "must be at least 1".into() });
        }
        self.search.index_set(self.fhir_version())?;
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(ConfigError::Invalid { key: "log.format", message: "must be text or json".into() });
        }
        Ok(())
    }

    /// `delivery.handshake_retry_schedule`, parsed: at most [`MAX_HANDSHAKE_RETRIES`] delays,
    /// each at most [`MAX_HANDSHAKE_RETRY_DELAY`].
    pub fn handshake_retry_schedule(&self) -> Result<Vec<Duration>, ConfigError> {
        const KEY: &str = "delivery.handshake_retry_schedule";
        let list = &self.delivery.handshake_retry_schedule;
        if list.len() > MAX_HANDSHAKE_RETRIES {
            return Err(ConfigError::Invalid { key: KEY, message: format!("at most {MAX_HANDSHAKE_RETRIES} retries") });
        }
        list.iter()
            .enumerate()
            .map(|(i, text)| match humantime_parse(text) {
                Some(d) if d <= MAX_HANDSHAKE_RETRY_DELAY => Ok(d),
                Some(_) => Err(ConfigError::Invalid {
                    key: KEY,
                    message: format!("entry {i} ({text:?}) is longer than {} s", MAX_HANDSHAKE_RETRY_DELAY.as_secs()),
                }),
                None => Err(ConfigError::Invalid { key: KEY, message: format!("entry {i} ({text:?}) is not a duration such as \"2s\"") }),
            })
            .collect()
    }

    /// Whether Herald serves TLS on its listener (`server.tls_cert` and `server.tls_key`).
    pub fn tls(&self) -> bool {
        matches!(self.tls_files(), Ok(Some(_)))
    }

    /// The certificate and key paths when TLS is on; an error when only one is set.
    pub fn tls_files(&self) -> Result<Option<(&str, &str)>, ConfigError> {
        let (cert, key) = (self.server.tls_cert.trim(), self.server.tls_key.trim());
        match (cert.is_empty(), key.is_empty()) {
            (false, false) => Ok(Some((cert, key))),
            (true, true) => Ok(None),
            (false, true) => Err(ConfigError::Invalid {
                key: "server.tls_key",
                message: "is empty but server.tls_cert is set; set both (TLS) or neither (plain HTTP)".into(),
            }),
            (true, false) => Err(ConfigError::Invalid {
                key: "server.tls_cert",
                message: "is empty but server.tls_key is set; set both (TLS) or neither (plain HTTP)".into(),
            }),
        }
    }

    /// The FHIR base URL notifications and references use: `server.base_url`, else
    /// `http://{bound}/fhir` (`https` when Herald serves TLS).
    pub fn base_url(&self, bound: SocketAddr) -> String {
        if self.server.base_url.is_empty() {
            let scheme = if self.tls() { "https" } else { "http" };
            format!("{scheme}://{bound}/fhir")
        } else {
            self.server.base_url.trim_end_matches('/').to_string()
        }
    }

    /// The websocket URL clients connect to: `websocket.url`, else derived from the FHIR base.
    pub fn websocket_url(&self, base_url: &str) -> String {
        if !self.websocket.url.is_empty() {
            return self.websocket.url.clone();
        }
        let rest = base_url.strip_prefix("https://").map(|r| format!("wss://{r}"));
        let url = rest.unwrap_or_else(|| match base_url.strip_prefix("http://") {
            Some(r) => format!("ws://{r}"),
            None => base_url.to_string(),
        });
        format!("{}/$subscription-ws", url.trim_end_matches('/'))
    }

    /// Whether this is a cluster node (`--nats` or `cluster.nats`).
    pub fn clustered(&self) -> bool {
        !self.cluster.nats.trim().is_empty()
    }

    /// The cluster settings' own checks (only when clustered).
    fn validate_cluster(&self) -> Result<(), ConfigError> {
        if !self.clustered() {
            return Ok(());
        }
        let c = &self.cluster;
        let bad = |key, message: &str| Err(ConfigError::Invalid { key, message: message.into() });
        for url in c.nats.split(',') {
            let url = url.trim();
            if !url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "nats" | "tls") && u.host_str().is_some()) {
                return Err(ConfigError::Invalid { key: "cluster.nats", message: format!("{url:?} is not a nats://HOST:PORT URL") });
            }
        }
        if c.node_id.is_empty() || c.node_id.len() > 64 || !c.node_id.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        {
            return bad("cluster.node_id", "a cluster node needs --node-id: 1 to 64 letters, digits, '-' or '_'");
        }
        if !(1..=5).contains(&c.replicas) {
            return bad("cluster.replicas", "must be between 1 and 5 (3 for a three-server NATS cluster)");
        }
        if !(1..=1024).contains(&c.shards) {
            return bad("cluster.shards", "must be between 1 and 1024");
        }
        if c.stream.is_empty() || !c.stream.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_') {
            return bad("cluster.stream", "must be a JetStream stream name: letters, digits, '-' or '_'");
        }
        if self.duration("cluster.lease_ttl") < Duration::from_secs(1) {
            return bad("cluster.lease_ttl", "must be at least 1s");
        }
        if self.duration("cluster.forward_timeout").is_zero() {
            return bad("cluster.forward_timeout", "must be longer than zero");
        }
        if !c.advertise_url.is_empty() && !url::Url::parse(&c.advertise_url).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
            return bad("cluster.advertise_url", "must be an absolute http:// or https:// URL");
        }
        Ok(())
    }

    pub fn duration(&self, key: &'static str) -> Duration {
        let text = match key {
            "server.shutdown_grace" => &self.server.shutdown_grace,
            "delivery.default_timeout" => &self.delivery.default_timeout,
            "delivery.initial_interval" => &self.delivery.initial_interval,
            "delivery.max_interval" => &self.delivery.max_interval,
            "delivery.max_age" => &self.delivery.max_age,
            "subscriptions.max_timeout" => &self.subscriptions.max_timeout,
            "subscriptions.max_heartbeat_period" => &self.subscriptions.max_heartbeat_period,
            "websocket.token_lifetime" => &self.websocket.token_lifetime,
            "websocket.send_timeout" => &self.websocket.send_timeout,
            "subscriptions.events_max_age" => &self.subscriptions.events_max_age,
            "auth.leeway" => &self.auth.leeway,
            "subscriptions.events_prune_interval" => &self.subscriptions.events_prune_interval,
            "store.read_committed_timeout" => &self.store.read_committed_timeout,
            "store.dangerous_flush_delay" => &self.store.dangerous_flush_delay,
            "store.flush_timeout" => &self.store.flush_timeout,
            "delivery.handshake_delay" => &self.delivery.handshake_delay,
            "delivery.ack_linger" => &self.delivery.ack_linger,
            "cluster.lease_ttl" => &self.cluster.lease_ttl,
            "cluster.forward_timeout" => &self.cluster.forward_timeout,
            _ => return Duration::ZERO,
        };
        // Validated in `validate`.
        humantime_parse(text).unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::index::IndexSet;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn embedded_defaults_load() {
        let cfg = Config::load(None, env(&[]), &Overrides::default()).unwrap();
        assert_eq!(cfg.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(cfg.store.data_dir, PathBuf::from("./data"));
        assert!(!cfg.delivery.allow_private_endpoints);
    }

    #[test]
    fn default_max_count_is_one_and_bounded_by_max_count() {
        let cfg = Config::load(None, env(&[]), &Overrides::default()).unwrap();
        assert_eq!(cfg.subscriptions.default_max_count, 1);
        let ok = Config::load(None, env(&[("HERALD_SUBSCRIPTIONS__DEFAULT_MAX_COUNT", "50")]), &Overrides::default()).unwrap();
        assert_eq!(ok.subscriptions.default_max_count, 50);
        for bad in ["0", "1001"] {
            let err = Config::load(None, env(&[("HERALD_SUBSCRIPTIONS__DEFAULT_MAX_COUNT", bad)]), &Overrides::default()).err();
            assert!(
                matches!(err, Some(ConfigError::Invalid { key: "subscriptions.default_max_count", .. })),
                "{bad}: {:?}",
                err.map(|e| e.to_string())
            );
        }
    }

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("h.toml");
        std::fs::write(&file, "[delivery]\nmax_attempts = 3\ndefault_timeout = \"2s\"\n").unwrap();
        let cfg = Config::load(
            Some(&file),
            env(&[("HERALD_DELIVERY__MAX_ATTEMPTS", "7"), ("HERALD_SERVER__LISTEN", "127.0.0.1:9999"), ("OTHER", "x")]),
            &Overrides { data_dir: Some("/tmp/x".into()), ..Overrides::default() },
        )
        .unwrap();
        assert_eq!(cfg.delivery.max_attempts, 7);
        assert_eq!(cfg.duration("delivery.default_timeout"), Duration::from_secs(2));
        assert_eq!(cfg.server.listen.to_string(), "127.0.0.1:9999");
        assert_eq!(cfg.store.data_dir, PathBuf::from("/tmp/x"));
        let cfg = Config::load(
            None,
            env(&[("HERALD_SERVER__LISTEN", "127.0.0.1:9999")]),
            &Overrides { listen: Some("127.0.0.1:1".parse().unwrap()), ..Default::default() },
        )
        .unwrap();
        assert_eq!(cfg.server.listen.to_string(), "127.0.0.1:1");
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = Config::load(None, env(&[("HERALD_DELIVERY__DEFAULT_TIMEOUT", "soon")]), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("delivery.default_timeout"), "{err}");
        let cfg = Config::load(None, env(&[("HERALD_SERVER", "http://x/fhir"), ("HERALD_ADMIN_TOKEN", "t")]), &Overrides::default());
        assert!(cfg.is_ok(), "the CLI's variables are not configuration: {cfg:?}");
        let err = Config::load(None, env(&[("HERALD_DELIVERY__NOPE", "1")]), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let cfg =
            Config::load(None, env(&[("HERALD_DELIVERY__ALLOW_PRIVATE_NETWORKS", "[\"127.0.0.0/8\"]")]), &Overrides::default()).unwrap();
        assert_eq!(cfg.delivery.allow_private_networks.len(), 1);
    }

    #[test]
    fn signing_secrets_are_checked_and_never_printed() {
        let good = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo=";
        let cfg =
            Config::load(None, env(&[("HERALD_DELIVERY__SIGNING_SECRETS", &format!("[\"{good}\"]"))]), &Overrides::default()).unwrap();
        assert_eq!(cfg.delivery.signing_secrets.keys().unwrap().len(), 1);
        assert!(!format!("{cfg:?}").contains("MfKQ9r8"), "the secret shows in Debug");
        let bad = "whsec_c2hvcnQ=";
        let err = Config::load(None, env(&[("HERALD_DELIVERY__SIGNING_SECRETS", &format!("[\"{bad}\"]"))]), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("delivery.signing_secrets") && err.contains("entry 0") && !err.contains("c2hvcnQ"), "{err}");
    }

    #[test]
    fn search_index_takes_a_name_or_a_list_and_names_bad_parameters() {
        let cfg = Config::load(None, env(&[]), &Overrides::default()).unwrap();
        assert_eq!(cfg.search.index_set(cfg.fhir_version()).unwrap(), IndexSet::default());
        let cfg = Config::load(None, env(&[("HERALD_SEARCH__INDEX", "all")]), &Overrides::default()).unwrap();
        assert_eq!(cfg.search.index_set(cfg.fhir_version()).unwrap(), IndexSet::All);
        let cfg = Config::load(None, env(&[("HERALD_SEARCH__INDEX", "[\"default\", \"Task.intent\"]")]), &Overrides::default()).unwrap();
        assert!(cfg.search.index_set(cfg.fhir_version()).unwrap().covers("Task", "intent"));
        let err = Config::load(None, env(&[("HERALD_SEARCH__INDEX", "[\"Task.nope\"]")]), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("search.index") && err.to_string().contains("Task.nope"), "{err}");
    }

    #[test]
    fn websocket_url_follows_the_base_unless_set() {
        let mut cfg = Config::load(None, env(&[]), &Overrides::default()).unwrap();
        assert_eq!(cfg.websocket_url("http://h:8080/fhir"), "ws://h:8080/fhir/$subscription-ws");
        assert_eq!(cfg.websocket_url("https://h/base/fhir/"), "wss://h/base/fhir/$subscription-ws");
        cfg.websocket.url = "wss://edge.example/ws".into();
        assert_eq!(cfg.websocket_url("http://h/fhir"), "wss://edge.example/ws");
        let err = Config::load(None, env(&[("HERALD_WEBSOCKET__URL", "http://x/ws")]), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("websocket.url"), "{err}");
        assert_eq!(cfg.duration("websocket.token_lifetime"), Duration::from_secs(300));
    }

    #[test]
    fn tls_needs_both_files_and_turns_the_derived_urls_secure() {
        let err = Config::load(None, env(&[("HERALD_SERVER__TLS_CERT", "/etc/herald/cert.pem")]), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("server.tls_key"), "{err}");
        let err = Config::load(None, env(&[("HERALD_SERVER__TLS_KEY", "/etc/herald/key.pem")]), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("server.tls_cert"), "{err}");
        let cfg = Config::load(None, env(&[]), &Overrides::default()).unwrap();
        let bound: SocketAddr = "127.0.0.1:8443".parse().unwrap();
        assert!(!cfg.tls());
        assert_eq!(cfg.base_url(bound), "http://127.0.0.1:8443/fhir");
        let cfg = Config::load(
            None,
            env(&[("HERALD_SERVER__TLS_CERT", "/etc/herald/cert.pem"), ("HERALD_SERVER__TLS_KEY", "/etc/herald/key.pem")]),
            &Overrides::default(),
        )
        .unwrap();
        assert!(cfg.tls());
        assert_eq!(cfg.base_url(bound), "https://127.0.0.1:8443/fhir");
        assert_eq!(cfg.websocket_url(&cfg.base_url(bound)), "wss://127.0.0.1:8443/fhir/$subscription-ws");
        let err = Config::load(None, env(&[("HERALD_SEARCH__MAX_PARAMS", "0")]), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("search.max_params"), "{err}");
    }

    #[test]
    fn handshake_retries_default_to_three_quick_ones_and_are_checked() {
        let cfg = Config::load(None, env(&[]), &Overrides::default()).unwrap();
        let secs = |s: u64| Duration::from_secs(s);
        assert_eq!(cfg.handshake_retry_schedule().unwrap(), vec![secs(1), secs(2), secs(4)]);
        assert_eq!(cfg.duration("delivery.handshake_delay"), Duration::from_millis(250));
        let cfg = Config::load(None, env(&[("HERALD_DELIVERY__HANDSHAKE_RETRY_SCHEDULE", "[]")]), &Overrides::default()).unwrap();
        assert!(cfg.handshake_retry_schedule().unwrap().is_empty(), "no retries");
        for bad in ["[\"soon\"]", "[\"1h\"]", "[\"1s\",\"1s\",\"1s\",\"1s\",\"1s\",\"1s\",\"1s\",\"1s\",\"1s\",\"1s\",\"1s\"]"] {
            let err = Config::load(None, env(&[("HERALD_DELIVERY__HANDSHAKE_RETRY_SCHEDULE", bad)]), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("delivery.handshake_retry_schedule"), "{bad}: {err}");
        }
        let err = Config::load(None, env(&[("HERALD_DELIVERY__HANDSHAKE_DELAY", "later")]), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("delivery.handshake_delay"), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(humantime_parse("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(humantime_parse("5m"), Some(Duration::from_secs(300)));
        assert_eq!(humantime_parse("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(humantime_parse("5"), None);
        assert_eq!(humantime_parse("-1s"), None);
    }
}
