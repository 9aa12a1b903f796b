//! `SubscriptionSpec`: a validated Subscription, everything delivery needs in typed form,
//! whichever FHIR version's shape it was written in.
//!
//! In: Subscription JSON in the instance version's shape. Out: a `SubscriptionSpec`, or every
//! issue found. [`parse_subscription_as`] picks the parser by version: `r5` for the R5
//! resource, `backport` for the R4/R4B resource with the Subscriptions Backport IG 1.1.0
//! profile; [`parse_subscription`] asks [`crate::fhir::version::instance`]. `rules` holds the
//! checks the two share; `fields` reads a stored Subscription of either shape.
//!
//! The parsers check what can be checked from the resource alone (channel, endpoint syntax,
//! content, headers, periods, `end`). Whether the topic exists and the filters are allowed by
//! it is the registry's job; whether the endpoint's address is allowed is the channel guard's.
//!
//! Secrets (header values, webhook signing secrets) are parsed, redacted and kept across
//! updates by `secrets`.
//!
//! Defaults Herald applies and echoes back in the stored resource ([`fill_defaults`]): R5
//! `content` = `id-only` (the R5 security guidance's usual recommendation), `contentType` =
//! `application/fhir+json`; backport: the `backport-payload-content` extension `id-only` when
//! `channel.payload` has none.

use serde_json::Value;
use url::Url;

use super::instant::Millis;
use super::outcome::Issue;
use super::version::FhirVersion;
use crate::secret::Secret;

pub mod backport;
pub mod fields;
mod r5;
mod rules;
pub mod secrets;

pub use rules::SUPPORTED_MIME;

pub use secrets::SigningKey;

pub const CHANNEL_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/subscription-channel-type";

/// The payload MIME type when the client names none.
pub const DEFAULT_CONTENT_TYPE: &str = "application/fhir+json";

/// Channels Herald delivers on today.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelType {
    RestHook,
    /// R5 websocket: no endpoint; clients bind sockets with `$get-ws-binding-token` tokens.
    Websocket,
}

impl ChannelType {
    pub fn code(self) -> &'static str {
        match self {
            ChannelType::RestHook => "rest-hook",
            ChannelType::Websocket => "websocket",
        }
    }
}

/// `subscription-payload-content`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentLevel {
    Empty,
    IdOnly,
    FullResource,
}

impl ContentLevel {
    pub fn code(self) -> &'static str {
        match self {
            ContentLevel::Empty => "empty",
            ContentLevel::IdOnly => "id-only",
            ContentLevel::FullResource => "full-resource",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "empty" => Some(ContentLevel::Empty),
            "id-only" => Some(ContentLevel::IdOnly),
            "full-resource" => Some(ContentLevel::FullResource),
            _ => None,
        }
    }
}

/// The `status` a client wrote; the server decides what it becomes (see `registry`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestedStatus {
    Requested,
    Active,
    Error,
    Off,
    EnteredInError,
}

impl RequestedStatus {
    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "requested" => Some(RequestedStatus::Requested),
            "active" => Some(RequestedStatus::Active),
            "error" => Some(RequestedStatus::Error),
            "off" => Some(RequestedStatus::Off),
            "entered-in-error" => Some(RequestedStatus::EnteredInError),
            _ => None,
        }
    }
}

/// One filter: an R5 `filterBy`, or one `param=value` of a backport `backport-filter-criteria`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub resource_type: Option<String>,
    pub parameter: String,
    pub comparator: Option<String>,
    pub modifier: Option<String>,
    pub value: String,
    /// Where the client wrote it, for issues about it.
    pub source: FilterSource,
}

/// Where a filter was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterSource {
    /// R5 `Subscription.filterBy[i]`.
    FilterBy(usize),
    /// Backport: the `backport-filter-criteria` extension `Subscription.criteria.extension[i]`
    /// (one extension may hold several `&`-joined filters).
    Criteria(usize),
}

impl FilterSource {
    /// The path of `field` (`filterParameter`, `comparator`, `modifier`, `value`) of the filter;
    /// a backport filter is one string, so every field is that string.
    pub fn path(self, field: &str) -> String {
        match self {
            FilterSource::FilterBy(i) => format!("Subscription.filterBy[{i}].{field}"),
            FilterSource::Criteria(i) => format!("Subscription.criteria.extension[{i}].valueString"),
        }
    }
}

/// One `parameter`, sent as an HTTP header on rest-hook. The value is a secret: it often
/// carries the receiver's bearer token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelHeader {
    pub name: String,
    pub value: Secret<String>,
}

/// Bounds the operator sets on what a Subscription may ask for.
#[derive(Clone, Debug)]
pub struct SubscriptionLimits {
    pub max_timeout_secs: u64,
    pub max_heartbeat_secs: u64,
    pub max_count: u64,
    /// The `maxCount` of a Subscription that gives none (`subscriptions.default_max_count`).
    pub default_max_count: u64,
}

/// A validated Subscription.
#[derive(Clone, Debug)]
pub struct SubscriptionSpec {
    pub id: String,
    /// The FHIR version whose Subscription shape this was parsed from.
    pub version: FhirVersion,
    /// `topic` (R5) or `criteria` (backport) as written: a canonical, optionally `url|version`.
    pub topic: String,
    pub requested_status: RequestedStatus,
    pub channel: ChannelType,
    /// The rest-hook endpoint; `None` for websocket, which needs none (a websocket
    /// subscription's `endpoint`, if any, is ignored).
    pub endpoint: Option<Url>,
    pub headers: Vec<ChannelHeader>,
    /// Standard Webhooks keys from the webhook-signing-secret extension, in order; every one
    /// signs each rest-hook POST (rotation). Empty: the operator's default keys, if any.
    pub signing_keys: Vec<SigningKey>,
    pub heartbeat_period_secs: Option<u64>,
    pub timeout_secs: Option<u64>,
    pub content_type: String,
    pub content: ContentLevel,
    /// Events per notification bundle; `SubscriptionLimits::default_max_count` when `maxCount`
    /// is absent.
    pub max_count: u64,
    pub end: Option<Millis>,
    pub filters: Vec<Filter>,
    /// First `identifier`, echoed in `SubscriptionStatus.subscription.identifier` (COW). R4
    /// and R4B Subscriptions have none.
    pub identifier: Option<Value>,
}

impl SubscriptionSpec {
    /// The canonical url part of `topic` (before any `|version`).
    pub fn topic_url(&self) -> &str {
        self.topic.split('|').next().unwrap_or(&self.topic)
    }

    pub fn topic_version(&self) -> Option<&str> {
        self.topic.split_once('|').map(|(_, v)| v)
    }

    /// The element holding the topic, for issues about it.
    pub fn topic_path(&self) -> &'static str {
        if self.version.is_backport() {
            "Subscription.criteria"
        } else {
            "Subscription.topic"
        }
    }
}

/// Parses and validates a Subscription in the shape of the instance's FHIR version
/// ([`crate::fhir::version::instance`]); `now` decides whether `end` is already past.
pub fn parse_subscription(id: &str, sub: &Value, limits: &SubscriptionLimits, now: Millis) -> Result<SubscriptionSpec, Vec<Issue>> {
    parse_subscription_as(super::version::instance(), id, sub, limits, now)
}

/// Parses and validates a Subscription in the shape of `version`: R5, or R4/R4B with the
/// Backport IG profile.
pub fn parse_subscription_as(
    version: FhirVersion,
    id: &str,
    sub: &Value,
    limits: &SubscriptionLimits,
    now: Millis,
) -> Result<SubscriptionSpec, Vec<Issue>> {
    if version.is_backport() {
        backport::parse(version, id, sub, limits, now)
    } else {
        r5::parse(id, sub, limits, now)
    }
}

/// Writes the defaults Herald applied while parsing into the stored resource, so that what is
/// stored (and echoed) says what Herald does; never changes what the client wrote.
pub fn fill_defaults(resource: &mut Value, spec: &SubscriptionSpec) {
    if spec.version.is_backport() {
        backport::fill_defaults(resource, spec);
    } else if let Some(obj) = resource.as_object_mut() {
        obj.entry("content").or_insert_with(|| Value::from(spec.content.code()));
        obj.entry("contentType").or_insert_with(|| Value::from(spec.content_type.clone()));
    }
}

#[cfg(test)]
mod tests;
