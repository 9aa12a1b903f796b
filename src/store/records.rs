//! Stored record types. Each carries `v` (format version, currently 1); decoding an unknown
//! version fails with `StoreError::Corrupt` rather than guessing.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fhir::instant::Millis;

pub const FORMAT: u8 = 1;

fn format_v1<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let v = u8::deserialize(d)?;
    if v == FORMAT {
        Ok(v)
    } else {
        Err(serde::de::Error::custom(format!("unknown record format {v}")))
    }
}

/// Pointer to a resource's latest version.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CurrentRecord {
    #[serde(deserialize_with = "format_v1")]
    pub v: u8,
    pub seq: u64,
    pub version_id: String,
    pub deleted: bool,
}

/// One version of a resource.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VersionRecord {
    #[serde(deserialize_with = "format_v1")]
    pub v: u8,
    pub resource_type: String,
    pub id: String,
    /// Herald's per-resource sequence (1, 2, ...); the history key.
    pub seq: u64,
    /// `meta.versionId`: equal to `seq` for resources written here, the upstream server's for
    /// changes fed in by side-car ingest.
    pub version_id: String,
    pub last_updated: Millis,
    /// `POST`, `PUT` or `DELETE`: how this version came to be.
    pub method: String,
    pub deleted: bool,
    /// The resource, absent for a deletion.
    pub resource: Option<Value>,
    /// Where the resource lives when it is not here (side-car ingest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_url: Option<String>,
}

/// A `VersionRecord` read without its resource, which is skipped rather than built: what
/// notifications below `full-resource` need (`Store::version_sized`).
#[derive(Deserialize)]
pub(super) struct VersionHead {
    #[serde(deserialize_with = "format_v1")]
    v: u8,
    resource_type: String,
    id: String,
    seq: u64,
    version_id: String,
    last_updated: Millis,
    method: String,
    deleted: bool,
    #[serde(default)]
    full_url: Option<String>,
}

impl From<VersionHead> for VersionRecord {
    fn from(h: VersionHead) -> VersionRecord {
        VersionRecord {
            v: h.v,
            resource_type: h.resource_type,
            id: h.id,
            seq: h.seq,
            version_id: h.version_id,
            last_updated: h.last_updated,
            method: h.method,
            deleted: h.deleted,
            resource: None,
            full_url: h.full_url,
        }
    }
}

/// Server-side status of a subscription (`subscription-status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubStatus {
    Requested,
    Active,
    Error,
    Off,
    EnteredInError,
}

impl SubStatus {
    pub fn code(self) -> &'static str {
        match self {
            SubStatus::Requested => "requested",
            SubStatus::Active => "active",
            SubStatus::Error => "error",
            SubStatus::Off => "off",
            SubStatus::EnteredInError => "entered-in-error",
        }
    }

    /// The code `version`'s `Subscription.status` has for this status. R4 and R4B have no
    /// `entered-in-error` (their codes are requested, active, error, off): such a
    /// subscription delivers nothing, so it shows as `off`.
    pub fn code_in(self, version: crate::fhir::version::FhirVersion) -> &'static str {
        match self {
            SubStatus::EnteredInError if version.is_backport() => "off",
            other => other.code(),
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "requested" => Some(SubStatus::Requested),
            "active" => Some(SubStatus::Active),
            "error" => Some(SubStatus::Error),
            "off" => Some(SubStatus::Off),
            "entered-in-error" => Some(SubStatus::EnteredInError),
            _ => None,
        }
    }

    /// R5: events keep being counted for `error` subscriptions; `requested` ones count too so
    /// that nothing between creation and handshake is lost.
    pub fn counts_events(self) -> bool {
        matches!(self, SubStatus::Requested | SubStatus::Active | SubStatus::Error)
    }
}

/// Why a subscription went to `error`, rendered as `SubscriptionStatus.error`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredError {
    /// A `subscription-error` code: `no-response`, `error-response`, `dns-resolution-error`.
    pub code: String,
    pub text: String,
    pub at: Millis,
}

/// A subscription's server-side state: one record, written by the committer only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubState {
    #[serde(deserialize_with = "format_v1")]
    pub v: u8,
    pub status: SubStatus,
    /// Bumped whenever a client changes the status; delivery results carry the generation they
    /// were produced under so that a stale one cannot undo a newer client request.
    /// Which life of this subscription id the state belongs to: the version number of the
    /// Subscription create that began it (0 for records from before incarnations were kept).
    /// A deleted and re-created id starts a new one, so that a lane's report about the old one
    /// (an attempt in flight across the delete) is recognised and ignored.
    #[serde(default)]
    pub incarnation: u64,
    pub generation: u64,
    /// `eventsSinceSubscriptionStart`: the last event number assigned.
    pub events_since_start: u64,
    /// Every event up to here was accepted by the endpoint or dead-lettered.
    pub delivered_through: u64,
    /// Failed attempts at the event after `delivered_through`.
    pub attempts: u32,
    pub next_attempt_at: Option<Millis>,
    pub first_failure_at: Option<Millis>,
    pub error: Option<StoredError>,
    pub dead_count: u64,
    pub last_delivery_at: Option<Millis>,
    /// Events up to here were removed by retention (`[events]`); `$events` says so.
    #[serde(default)]
    pub pruned_through: u64,
    /// A redelivery of stored events an operator or client asked for (`$resend`), in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resend: Option<Resend>,
    /// Resends asked for so far (the id of the next one); ids are never reused.
    #[serde(default)]
    pub resends: u64,
    /// The authenticated client that created the subscription (`None`: created anonymously);
    /// only it may read, change or use it. Named as `auth::Principal::client` names it: an
    /// API key's client, or `jwt:<client_id>` for a token (the bare id when the operator
    /// aliased it). Releases before that stored a token's bare client id; see `owner_form`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// How `owner` names its client. Absent from records of older releases (`Bare`): on
    /// decode (`upgraded`) a bare owner whose grant came from a token becomes
    /// `jwt:<owner>`, so an API key of that name does not take it over. Records written
    /// before grants were recorded cannot tell a token from a key and keep their bare owner.
    #[serde(default)]
    pub owner_form: OwnerForm,
    /// The Subscription's `managingEntity` reference; the clients the operator maps to it
    /// (`auth.entities`) share the owner's rights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managing_entity: Option<String>,
    /// What the owner was granted when it last created or updated the subscription, checked
    /// again for every event at send time (`notify::withhold`); `None`: anonymous, or written
    /// before Herald recorded grants: nothing is withheld.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<StoredGrant>,
    /// Events rendered without their focus because the grant no longer covered it, each
    /// counted once (the first time a lane withheld it, in number order).
    #[serde(default)]
    pub withheld: u64,
    /// The highest event number counted in `withheld`.
    #[serde(default)]
    pub withheld_through: u64,
}

/// How `SubState.owner` names a client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OwnerForm {
    /// Older releases: a token's client is its bare client id, like an API key's.
    #[default]
    Bare,
    /// A token's client is `jwt:<client_id>` unless aliased: the owner is used as stored.
    Kinded,
}

/// How the owner of a subscription authenticated, which decides where send-time checks find
/// its scopes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GrantSource {
    /// An API key: its client's *current* configured scopes (`auth.api_keys`), so narrowing a
    /// key or removing it takes effect at the next start.
    ApiKey,
    /// A token: the scopes below, as of the last create or update (tokens expire; the
    /// subscription outlives them, digest §6.1).
    Jwt,
}

/// A snapshot of the grant a subscription was written under.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredGrant {
    pub via: GrantSource,
    /// The granted scopes, space-separated as in the token or key configuration.
    pub scopes: String,
    /// The `patient` launch context, which `patient/` scopes are limited to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
}

/// Stored events to send again, in number order, from `next` through `until`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resend {
    pub next: u64,
    pub until: u64,
    /// Only the dead letters in the range (a dead-letter replay); each is removed from the
    /// dead letters once its endpoint accepts it.
    pub dead_only: bool,
    /// Bumped for every new request, so that a lane's report about an older one is ignored.
    pub id: u64,
}

impl SubState {
    pub fn new(status: SubStatus) -> Self {
        SubState {
            v: FORMAT,
            status,
            incarnation: 0,
            generation: 0,
            events_since_start: 0,
            delivered_through: 0,
            attempts: 0,
            next_attempt_at: None,
            first_failure_at: None,
            error: None,
            dead_count: 0,
            last_delivery_at: None,
            pruned_through: 0,
            resend: None,
            resends: 0,
            owner: None,
            owner_form: OwnerForm::Kinded,
            managing_entity: None,
            grant: None,
            withheld: 0,
            withheld_through: 0,
        }
    }

    /// This record as the current release reads it: an older release's token owner becomes
    /// `jwt:<owner>` (see `owner_form`). The store applies it to every SubState it decodes.
    pub fn upgraded(mut self) -> Self {
        if self.owner_form == OwnerForm::Bare {
            let from_token = self.grant.as_ref().is_some_and(|g| g.via == GrantSource::Jwt);
            if let Some(owner) = self.owner.as_mut().filter(|o| from_token && !o.starts_with(crate::auth::JWT_CLIENT_PREFIX)) {
                *owner = format!("{}{owner}", crate::auth::JWT_CLIENT_PREFIX);
            }
            self.owner_form = OwnerForm::Kinded;
        }
        self
    }

    /// Events assigned but not yet delivered or dead-lettered.
    pub fn pending(&self) -> u64 {
        self.events_since_start.saturating_sub(self.delivered_through)
    }
}

/// One event matched for one subscription.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    #[serde(deserialize_with = "format_v1")]
    pub v: u8,
    pub number: u64,
    pub timestamp: Millis,
    pub topic: String,
    /// `create`, `update` or `delete`.
    pub interaction: String,
    pub focus_type: String,
    pub focus_id: String,
    /// The focus version this event saw: notifications render this version, not today's.
    pub focus_seq: u64,
    /// The topic's `notificationShape` include/revInclude results at event time, in order
    /// (`notificationEvent.additionalContext`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context: Vec<ContextRef>,
    /// The subscription incarnation (`SubState.incarnation`) the event was numbered in: a lane
    /// of an older incarnation never sends a newer one's events.
    #[serde(default, rename = "inc", skip_serializing_if = "is_zero")]
    pub incarnation: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A resource version an event carries as additional context.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextRef {
    #[serde(rename = "t")]
    pub resource_type: String,
    pub id: String,
    pub seq: u64,
}

/// An event delivery gave up on, kept for operators.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadRecord {
    #[serde(deserialize_with = "format_v1")]
    pub v: u8,
    pub number: u64,
    pub parked_at: Millis,
    pub attempts: u32,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::SubStatus;
    use crate::fhir::version::FhirVersion;

    #[test]
    fn every_status_has_a_code_in_every_version_and_r4_has_no_entered_in_error() {
        let all = [SubStatus::Requested, SubStatus::Active, SubStatus::Error, SubStatus::Off, SubStatus::EnteredInError];
        for s in all {
            assert_eq!(SubStatus::from_code(s.code()), Some(s));
            assert_eq!(s.code_in(FhirVersion::R5), s.code());
            for v in [FhirVersion::R4, FhirVersion::R4B] {
                assert!(["requested", "active", "error", "off"].contains(&s.code_in(v)), "{s:?} in {v}");
            }
        }
        assert_eq!(SubStatus::EnteredInError.code_in(FhirVersion::R4), "off");
        assert_eq!(SubStatus::Error.code_in(FhirVersion::R4B), "error");
    }
}
