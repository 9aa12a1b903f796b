//! Leases in a JetStream key-value bucket: at most one holder of a key at a time, lost by a
//! holder that stops renewing within the TTL.
//!
//! Decisions:
//! - The bucket's `max_age` is the TTL and its history is 1: every write of a key (acquire,
//!   renew) restarts its age, and a key nobody renewed for the TTL is removed by JetStream
//!   itself, so no node needs to be alive to expire another's lease.
//! - `acquire` is the KV create (succeeds only while the key is absent, deleted or expired);
//!   `renew` and `release` are compare-and-set on the revision the holder got last, so a
//!   holder whose lease expired and was taken by another cannot renew or release it (the
//!   revision moved on: `LeaseError::Lost`).
//! - The holder's own clock bounds its tenure: `Lease::valid_until` is the start of its last
//!   successful acquire or renew plus the TTL, a moment earlier than the server's expiry
//!   (which counts from when the write was stored). A holder must stop acting for the role
//!   at that instant whether or not its renewal answered; what it writes afterwards is fenced
//!   elsewhere (the commit log refuses a deposed writer).
//! - Expected conditions are not errors: a key held by another is `Ok(None)` from `acquire`.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum LeaseError {
    /// The lease moved on: it expired and someone else acquired it (or it was released).
    #[error("the lease on {key} is lost")]
    Lost { key: String },
    /// The bucket could not be reached or refused the request for another reason.
    #[error("lease bucket: {0}")]
    Bucket(String),
}

fn bucket_error(e: impl std::fmt::Display) -> LeaseError {
    LeaseError::Bucket(e.to_string())
}

/// A bucket of leases, all with the same TTL.
#[derive(Clone)]
pub struct LeaseBucket {
    kv: kv::Store,
    ttl: Duration,
}

/// A lease held: the key, the holder's name, the revision of its last write.
#[derive(Clone, Debug)]
pub struct Lease {
    pub key: String,
    pub holder: String,
    revision: u64,
    renewed_at: Instant,
    ttl: Duration,
}

impl Lease {
    /// Until when the holder may act for the role (its own clock; see the module doc).
    pub fn valid_until(&self) -> Instant {
        self.renewed_at + self.ttl
    }

    /// The bucket revision of the holder's last write.
    pub fn revision(&self) -> u64 {
        self.revision
    }
}

impl LeaseBucket {
    /// Opens the bucket `name`, creating it (TTL `ttl`, history 1, `replicas`) if missing.
    ///
    /// The bucket's stream is created here, laid out as a KV bucket is (`KV_<name>` on
    /// `$KV.<name>.>`, one message per key, rollups allowed, deletes denied, direct gets,
    /// discard new), and then opened as a bucket: the client's own `create_key_value` first
    /// asks for the account's JetStream limits, an answer async-nats 0.46 cannot read from the
    /// nats-server 2.9 of Debian.
    pub async fn open(js: &jetstream::Context, name: &str, ttl: Duration, replicas: usize) -> Result<LeaseBucket, LeaseError> {
        if js.get_key_value(name).await.is_err() {
            let config = jetstream::stream::Config {
                name: format!("KV_{name}"),
                subjects: vec![format!("$KV.{name}.>")],
                max_messages_per_subject: 1,
                max_age: ttl,
                storage: jetstream::stream::StorageType::File,
                num_replicas: replicas.max(1),
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: jetstream::stream::DiscardPolicy::New,
                // At most the TTL: JetStream refuses a duplicate window longer than max_age.
                duplicate_window: ttl.min(Duration::from_secs(120)),
                ..Default::default()
            };
            js.get_or_create_stream(config).await.map_err(bucket_error)?;
        }
        let kv = js.get_key_value(name).await.map_err(bucket_error)?;
        Ok(LeaseBucket { kv, ttl })
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Takes `key` for `holder` if nobody holds it; `None` if someone does.
    pub async fn acquire(&self, key: &str, holder: &str) -> Result<Option<Lease>, LeaseError> {
        let started = Instant::now();
        match self.kv.create(key, Bytes::from(holder.to_string())).await {
            Ok(revision) => Ok(Some(Lease { key: key.into(), holder: holder.into(), revision, renewed_at: started, ttl: self.ttl })),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(bucket_error(e)),
        }
    }

    /// Extends `lease` by the TTL, if it is still the holder's (compare-and-set on its revision).
    pub async fn renew(&self, lease: &mut Lease) -> Result<(), LeaseError> {
        let started = Instant::now();
        match self.kv.update(&lease.key, Bytes::from(lease.holder.clone()), lease.revision).await {
            Ok(revision) => {
                lease.revision = revision;
                lease.renewed_at = started;
                Ok(())
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Err(LeaseError::Lost { key: lease.key.clone() }),
            Err(e) => Err(bucket_error(e)),
        }
    }

    /// Gives `lease` up so that another can acquire it at once, if it is still the holder's.
    pub async fn release(&self, lease: Lease) -> Result<(), LeaseError> {
        match self.kv.delete_expect_revision(&lease.key, Some(lease.revision)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == kv::DeleteErrorKind::WrongLastRevision => Err(LeaseError::Lost { key: lease.key }),
            Err(e) => Err(bucket_error(e)),
        }
    }

    /// Writes `key` (a presence mark that lasts the TTL unless written again).
    pub async fn announce(&self, key: &str, value: &str) -> Result<(), LeaseError> {
        self.kv.put(key, Bytes::from(value.to_string())).await.map(drop).map_err(bucket_error)
    }

    /// How many live keys start with `prefix`.
    pub async fn count(&self, prefix: &str) -> Result<usize, LeaseError> {
        use futures_util::StreamExt;
        let mut keys = self.kv.keys().await.map_err(bucket_error)?;
        let mut n = 0;
        while let Some(key) = keys.next().await {
            if key.map_err(bucket_error)?.starts_with(prefix) {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Who holds `key` now, as the bucket says (`None`: nobody, or the lease expired).
    pub async fn holder(&self, key: &str) -> Result<Option<String>, LeaseError> {
        match self.kv.entry(key).await.map_err(bucket_error)? {
            Some(entry) if entry.operation == kv::Operation::Put => Ok(Some(String::from_utf8_lossy(&entry.value).into_owned())),
            _ => Ok(None),
        }
    }
}
