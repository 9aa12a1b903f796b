//! The settings of each configuration section (`[server]`, `[store]`, `[delivery]`, ...), as
//! deserialized; `Config` (the parent module) layers, checks and reads them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::fhir::subscription::secrets::MAX_SIGNING_SECRETS;
use crate::fhir::subscription::SigningKey;
use crate::store::index::IndexSet;

use super::ConfigError;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FhirSettings {
    /// `4.0.1` (R4), `4.3.0` (R4B) or `5.0.0` (R5).
    pub version: String,
}

/// Authentication of API clients (`[auth]`); see `crate::auth`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Required `iss` of bearer JWTs.
    pub issuer: String,
    /// Required `aud` of bearer JWTs (usually the FHIR base URL).
    pub audience: String,
    /// A JWKS file with the public keys JWTs are signed with (RS256, ES256, ...).
    pub jwks_file: String,
    /// Shared secrets for HS256 JWTs.
    pub hs256_secrets: Vec<String>,
    pub leeway: String,
    /// Machine clients: `{ client, sha256, scopes }`, the key's SHA-256 in hex.
    pub api_keys: Vec<ApiKeySetting>,
    /// JWT client ids that are the same client as the API-key client of that name; any other
    /// token's client is `jwt:<client_id>` (see `crate::auth`).
    pub jwt_as_api_key_clients: Vec<String>,
    /// Serve anonymous requests on a non-loopback address when no authentication is
    /// configured (`--allow-anonymous`).
    pub allow_anonymous: bool,
    /// Requests per second per client (0: no limit), with bursts of `rate_burst`.
    pub rate_limit: f64,
    pub rate_burst: f64,
    /// Managing entities: `{ reference, clients }`; the clients act for the entity, so they
    /// share the subscriptions whose `managingEntity` is that reference.
    pub entities: Vec<EntitySetting>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntitySetting {
    pub reference: String,
    pub clients: Vec<String>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySetting {
    pub client: String,
    pub sha256: String,
    pub scopes: String,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("jwks_file", &self.jwks_file)
            .field("hs256_secrets", &format!("[{} redacted]", self.hs256_secrets.len()))
            .field("api_keys", &self.api_keys.iter().map(|k| &k.client).collect::<Vec<_>>())
            .field("jwt_as_api_key_clients", &self.jwt_as_api_key_clients)
            .field("allow_anonymous", &self.allow_anonymous)
            .field("entities", &self.entities)
            .finish()
    }
}

/// Operator surfaces: `/metrics`, the dashboard and its API (`[admin]`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Bearer token for `/metrics` and `/admin`; empty: they answer loopback clients only.
    pub token: String,
    /// Subscriptions with the most pending events that get their own queue gauges (0: none).
    pub top_subscriptions: usize,
    /// Delivery attempts kept per subscription in the (in-memory) delivery log.
    pub delivery_log: usize,
    /// Entries the durable audit trail keeps (the oldest are trimmed once a minute).
    pub audit_keep: u64,
    /// Whether every delivery attempt goes into the audit trail too.
    pub audit_deliveries: bool,
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSettings")
            .field("token", &if self.token.is_empty() { "" } else { "[redacted]" })
            .field("top_subscriptions", &self.top_subscriptions)
            .field("delivery_log", &self.delivery_log)
            .field("audit_keep", &self.audit_keep)
            .field("audit_deliveries", &self.audit_deliveries)
            .finish()
    }
}

/// The websocket channel (`[websocket]`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebsocketSettings {
    /// Public `ws://` or `wss://` URL `$get-ws-binding-token` returns; empty = derived from the
    /// FHIR base URL (`http` to `ws`, `https` to `wss`) plus `/$subscription-ws`.
    pub url: String,
    /// How long a binding token may be used to bind.
    pub token_lifetime: String,
    /// Largest message a client may send (bytes); larger ones close the socket.
    pub max_message_bytes: usize,
    /// Frames queued per socket before the socket counts as slow.
    pub send_buffer: usize,
    /// How long a full send buffer may stay full before the socket is disconnected.
    pub send_timeout: String,
    /// Open websocket connections at once; more are refused with 503.
    pub max_connections: usize,
}

/// REST search bounds (`[search]`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSettings {
    /// Most candidates one page of an id-order search examines (a page may come back short,
    /// with a `next` link); for any other `_sort`, most candidates the whole search reads,
    /// beyond which the answer is 400 `too-costly`.
    pub max_scan: usize,
    /// Most resources `_include`/`_revinclude` add to one page.
    pub max_include: usize,
    /// Up to this many candidates, searches give an accurate `total` by default.
    pub cheap_total: usize,
    /// Most candidates checked to count `_total=accurate|estimate` and `_summary=count`;
    /// beyond it accurate is 400 `too-costly` and the others are estimated.
    pub max_total: usize,
    /// Most `name=value` parameters one search may have (query string and form body,
    /// `_include`s and result parameters included); more: 400 `too-costly`.
    pub max_params: usize,
    /// Which SearchParameters get index entries: `"default"`, `"all"`, `"none"`, or a list of
    /// `Type.code` / `Type.*` / `"default"` (see `store::index::IndexSet`).
    pub index: IndexSpec,
}

/// `search.index`: one name or a list.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IndexSpec {
    Named(String),
    List(Vec<String>),
}

impl SearchSettings {
    /// The index set `index` names in FHIR `version` (checked in `Config::validate`).
    pub fn index_set(&self, version: crate::fhir::FhirVersion) -> Result<IndexSet, ConfigError> {
        let parsed = match &self.index {
            IndexSpec::Named(name) => IndexSet::from_spec_for(version, std::slice::from_ref(name)),
            IndexSpec::List(items) => IndexSet::from_spec_for(version, items),
        };
        parsed.map_err(|message| ConfigError::Invalid { key: "search.index", message })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Public base URL of the FHIR endpoint; empty = `http://{listen}/fhir`.
    pub base_url: String,
    pub max_body_bytes: usize,
    /// What the bodies of requests being served may hold at once, in MiB (`api::budget`);
    /// further requests wait for room before their bodies are read.
    #[serde(default = "default_max_body_memory_mib")]
    pub max_body_memory_mib: usize,
    pub max_bundle_entries: usize,
    pub shutdown_grace: String,
    /// PEM certificate chain (leaf first) for TLS on `listen`; empty with `tls_key`: plain HTTP.
    pub tls_cert: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert`.
    pub tls_key: String,
    /// Open connections one client (an IPv4 address, an IPv6 /64) may hold; more are closed
    /// at once (0: no bound).
    pub max_connections_per_client: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    /// How long a read waits for what it saw to become durable before answering 503.
    #[serde(default = "default_read_committed_timeout")]
    pub read_committed_timeout: String,
    /// A group flush that takes longer ends the process (status 4) for a restart.
    #[serde(default = "default_flush_timeout")]
    pub flush_timeout: String,
    /// Writes are refused (503) while less than this many MiB are free where the store lives.
    #[serde(default = "default_min_free_mib")]
    pub min_free_mib: u64,
    /// The storage engine's cache of database pages, in MiB (sled's `cache_capacity`; its
    /// own default is 1 GiB). The largest single term of Herald's memory under load.
    #[serde(default = "default_cache_mib")]
    pub cache_mib: u64,
    /// zstd level (1-22) of the storage engine's pages in a store created with this setting;
    /// 0: uncompressed. An existing store keeps what it was created with.
    #[serde(default = "default_compression_level")]
    pub compression_level: u8,
    /// Testing only: holds every group flush this long and turns off sled's background flush,
    /// so that a crash test can land between a commit being applied and being flushed.
    #[serde(default = "zero_duration")]
    pub dangerous_flush_delay: String,
    /// A file every commit is copied to, in the commit log format (`commitlog::recording`),
    /// for replay tests and diagnosis; empty: none. It holds what the store holds.
    #[serde(default)]
    pub record_commits: String,
}

fn default_read_committed_timeout() -> String {
    "5s".into()
}

fn default_flush_timeout() -> String {
    "30s".into()
}

fn default_min_free_mib() -> u64 {
    16
}

fn default_cache_mib() -> u64 {
    crate::store::DEFAULT_CACHE_MIB
}

fn default_compression_level() -> u8 {
    0
}

fn zero_duration() -> String {
    "0s".into()
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    pub queue_depth: usize,
    /// Refuse impossible status transitions on coordination Tasks (off by default).
    #[serde(default)]
    pub enforce_task_state_machine: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    pub allow_private_endpoints: bool,
    /// Allow `full-resource` subscriptions with plain-http public endpoints.
    pub allow_plain_http: bool,
    pub allow_private_networks: Vec<IpNet>,
    pub default_timeout: String,
    pub initial_interval: String,
    pub multiplier: f64,
    pub max_interval: String,
    pub randomization_factor: f64,
    pub max_attempts: u32,
    pub max_age: String,
    pub max_concurrent: usize,
    /// Worker threads of the delivery runtime (0: one per CPU).
    pub threads: usize,
    /// Standard Webhooks secrets (`whsec_...`) that sign the rest-hook POSTs of subscriptions
    /// without a webhook-signing-secret extension of their own; empty: those go unsigned.
    pub signing_secrets: SigningSecrets,
    /// How long after the creating write was acknowledged a rest-hook handshake goes out.
    #[serde(default = "default_handshake_delay")]
    pub handshake_delay: String,
    /// Delays before each retry of a refused handshake; empty: a refused handshake is final.
    #[serde(default = "default_handshake_retry_schedule")]
    pub handshake_retry_schedule: Vec<String>,
    /// How long the committer gathers delivery results (acknowledgements, retry notes) that
    /// nobody waits for before writing them as one batch; "0s": each at once.
    #[serde(default = "default_ack_linger")]
    pub ack_linger: String,
    /// MiB of recently read resource versions kept for the lanes, so that the subscribers of
    /// one write share one read of each version it saw, and at `full-resource` one written
    /// copy of its JSON (`outbox::versions`); 0: every lane reads its own.
    #[serde(default = "default_version_cache_mib")]
    pub version_cache_mib: usize,
}

fn default_version_cache_mib() -> usize {
    16
}

fn default_handshake_delay() -> String {
    "250ms".into()
}

fn default_max_body_memory_mib() -> usize {
    64
}

fn default_ack_linger() -> String {
    "10ms".into()
}

fn default_handshake_retry_schedule() -> Vec<String> {
    vec!["1s".into(), "2s".into(), "4s".into()]
}

/// Most retries `delivery.handshake_retry_schedule` may list.
pub const MAX_HANDSHAKE_RETRIES: usize = 10;
/// Longest single delay it may hold: a handshake is a check that the endpoint is there now.
pub const MAX_HANDSHAKE_RETRY_DELAY: Duration = Duration::from_secs(300);

/// `delivery.signing_secrets`: kept out of `Debug` (the effective config may be logged).
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SigningSecrets(pub Vec<String>);

impl std::fmt::Debug for SigningSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{} redacted]", self.0.len())
    }
}

impl SigningSecrets {
    /// The parsed keys; the error names the entry and the rule, never the value.
    pub fn keys(&self) -> Result<Vec<SigningKey>, ConfigError> {
        if self.0.len() > MAX_SIGNING_SECRETS {
            return Err(ConfigError::Invalid {
                key: "delivery.signing_secrets",
                message: format!("at most {MAX_SIGNING_SECRETS} secrets"),
            });
        }
        self.0
            .iter()
            .enumerate()
            .map(|(i, text)| {
                SigningKey::parse(text)
                    .map_err(|why| ConfigError::Invalid { key: "delivery.signing_secrets", message: format!("entry {i}: {why}") })
            })
            .collect()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSettings {
    pub max_timeout: String,
    pub max_heartbeat_period: String,
    pub max_count: u64,
    /// The `maxCount` of a Subscription that gives none (R5 lets the server choose; 1 to
    /// `max_count`). 1: every event is its own notification; more: a lane sends up to this many
    /// pending events per POST or frame, which multiplies a busy subscription's throughput at
    /// the cost of clients that expect one event per notification.
    pub default_max_count: u64,
    /// Most events one `$events` call returns.
    pub max_events_per_query: usize,
    /// Retention: delivered events beyond the newest `events_keep` of a subscription, or older
    /// than `events_max_age`, are removed every `events_prune_interval`. Undelivered events and
    /// dead letters are never removed by retention.
    pub events_keep: u64,
    pub events_max_age: String,
    pub events_prune_interval: String,
    /// Most events one commit removes, for retention and for a deleted subscription's backlog
    /// (the rest in later commits), so that no single write batch grows with a backlog.
    #[serde(default = "default_purge_batch")]
    pub purge_batch: u64,
}

fn default_purge_batch() -> u64 {
    10_000
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: String,
    /// A `tracing` filter, e.g. `info` or `herald=debug,tower=warn`.
    pub level: String,
}

/// Cluster mode (`[cluster]`, `crate::cluster`): several nodes on one replicated commit log in
/// NATS JetStream. Empty `nats`: the single-node sled default, and nothing here is read.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// NATS server URLs, comma-separated (`--nats`); every node of a cluster gets the same.
    pub nats: String,
    /// This node's name, unique in the cluster (`--node-id`): letters, digits, `-` and `_`.
    pub node_id: String,
    /// JetStream replicas of the commit log and the lease bucket: 3, or 1 for one NATS server.
    pub replicas: usize,
    /// How long a node's writer lease lasts unless renewed (it renews every third of it).
    /// Writer failover takes about this long plus a restart of the role.
    pub lease_ttl: String,
    /// The JetStream stream holding the commit log (its subjects are `herald.log.>`).
    pub stream: String,
    /// The URL other nodes forward writes to (`http://HOST:PORT`); empty: `http://` and the
    /// listen address, which is right only where that address is reachable from the others.
    pub advertise_url: String,
    /// How long a node waits for the writer to answer a write it forwarded.
    pub forward_timeout: String,
    /// A follower uploads a snapshot of its store every this many commits, and the stream is
    /// trimmed below the snapshot before it (`cluster::snapshot`); 0: never.
    pub snapshot_every: u64,
    /// Rest-hook subscriptions are spread over this many delivery shards; each node delivers
    /// the shards whose lease it holds (`cluster::shards`). Every node of a cluster must agree.
    pub shards: u32,
}
