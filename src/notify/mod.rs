//! Notification bundles in the instance's FHIR version (handshake, heartbeat,
//! event-notification, query-event) and the `query-status` resources of `$status`. Pure, and
//! it renders its own input types: callers pass the version (`StatusContext.version`), the
//! subscription's status (`Status`, `ErrorView`) and each event as an `EventView` (number,
//! timestamp, interaction, focus reference, and the resource versions it saw as
//! `VersionView`s, which borrow the caller's resources). `channels::render` makes these of
//! stored records; notify names no store record.
//!
//! - R5: a `subscription-notification` Bundle headed by a `SubscriptionStatus` whose entry has a
//!   `urn:uuid` fullUrl and no request/response (digest §1.3, §1.4, §2.5, §2.8).
//! - R4B (Backport IG 1.1.0): a `history` Bundle headed by an R4B `SubscriptionStatus` (the R5
//!   shape, field for field), whose entry carries `request` `GET <base>/Subscription/<id>/$status`
//!   and `response` `200`, as every entry of a history Bundle must (bdl-3, bdl-4).
//! - R4: the same `history` Bundle headed by a `Parameters` conforming to
//!   `backport-subscription-status-r4` (`parameters`), both declaring their backport profiles.
//!
//! Content levels are the same in every version: counters are JSON strings; `empty` carries
//! no focus, no topic and no other entry; `id-only` carries the focus and an entry with
//! `fullUrl`, `request` and `response` but no `resource`; `full-resource` adds the resource (a
//! deletion has none to add, so its entry stays request/response only). An event's additional
//! context (the topic's `notificationShape` includes, resolved when the event was committed)
//! is listed with the event and gets entries at the same level, so every reference in the
//! status resolves to an entry. A Subscription carried as a resource has its secrets redacted.
//! An event `withhold` marked (the subscriber's grant no longer covers its focus) keeps its
//! number and timestamp but is rendered as at `empty`, with the [`WITHHELD_URL`] extension (on
//! `notificationEvent` in R5/R4B, on the `notification-event` parameter in R4); context its
//! grant cannot read was taken out before rendering.
//!
//! `notification_bytes` (the delivery lanes' hot path) writes the `Serialize` shapes of
//! `bundle`, `status` and `parameters` straight out; the `Value` builders serialize the same.
//! What is the same for every subscriber of an event, a full resource's JSON, is written once
//! (`resource_json`) and spliced into each bundle (`VersionView.rendered`).

mod bundle;
mod parameters;
mod status;
pub mod withhold;

use serde_json::value::RawValue;
use serde_json::Value;

use crate::fhir::instant::Millis;
use crate::fhir::subscription::ContentLevel;
use crate::fhir::version::FhirVersion;

pub use parameters::STATUS_R4_PROFILE;
pub use withhold::WITHHELD_URL;

/// `subscription-notification-type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotificationType {
    Handshake,
    Heartbeat,
    EventNotification,
    QueryStatus,
    QueryEvent,
}

impl NotificationType {
    pub fn code(self) -> &'static str {
        match self {
            NotificationType::Handshake => "handshake",
            NotificationType::Heartbeat => "heartbeat",
            NotificationType::EventNotification => "event-notification",
            NotificationType::QueryStatus => "query-status",
            NotificationType::QueryEvent => "query-event",
        }
    }
}

/// What a status resource says about its subscription.
pub struct StatusContext<'a> {
    /// The FHIR version the bundle and status are written in (callers pass
    /// `crate::fhir::version::instance()`).
    pub version: FhirVersion,
    pub base_url: &'a str,
    pub subscription_id: &'a str,
    /// `Subscription.identifier[0]`, echoed as `subscription.identifier` (COW requires it).
    pub identifier: Option<&'a Value>,
    pub topic_url: &'a str,
    pub status: Status,
    pub events_since_start: u64,
    /// The subscription's last error, shown only while its status is `error`.
    pub error: Option<ErrorView<'a>>,
    pub content: ContentLevel,
}

/// `subscription-status`: a subscription's status as a status resource reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Requested,
    Active,
    Error,
    Off,
    EnteredInError,
}

impl Status {
    pub fn code(self) -> &'static str {
        match self {
            Status::Requested => "requested",
            Status::Active => "active",
            Status::Error => "error",
            Status::Off => "off",
            Status::EnteredInError => "entered-in-error",
        }
    }
}

/// A `subscription-error` code and its text.
#[derive(Clone, Copy, Debug)]
pub struct ErrorView<'a> {
    pub code: &'a str,
    pub text: &'a str,
}

impl StatusContext<'_> {
    /// The subscription's status code in this version. R4's `SubscriptionStatus` value set
    /// has no `entered-in-error`: such a subscription is reported `off` (it sends nothing).
    fn status_code(&self) -> &'static str {
        match (self.version, self.status) {
            (FhirVersion::R4, Status::EnteredInError) => Status::Off.code(),
            (_, status) => status.code(),
        }
    }

    /// `<base>/Subscription/<id>`.
    fn subscription_url(&self) -> String {
        format!("{}/Subscription/{}", self.base_url, self.subscription_id)
    }
}

/// A resource version an event saw: what its entry and references show. The resource is
/// borrowed (present for `full-resource`, and absent for a deletion).
#[derive(Clone, Copy, Debug)]
pub struct VersionView<'a> {
    /// `meta.versionId` (the entry's `etag`).
    pub version_id: &'a str,
    pub last_updated: Millis,
    /// Where the resource lives when not on this server (side-car ingest).
    pub full_url: Option<&'a str>,
    pub resource: Option<&'a Value>,
    /// `resource` already written by [`resource_json`], shared by every subscriber of the
    /// event (`outbox::versions`); at `full-resource` the entry carries these bytes as they
    /// are instead of writing `resource` again.
    pub rendered: Option<&'a RawValue>,
}

/// `resource` as a notification carries it (a Subscription's secrets redacted), written once
/// for every subscriber that sends it (`VersionView.rendered`).
pub fn resource_json(resource: &Value) -> Option<Box<RawValue>> {
    serde_json::value::to_raw_value(&bundle::shown(resource)).ok()
}

/// One additional-context resource of an event, with the version it saw.
#[derive(Clone, Copy, Debug)]
pub struct ContextView<'a> {
    pub resource_type: &'a str,
    pub id: &'a str,
    pub version: VersionView<'a>,
}

/// An event as notify renders it.
#[derive(Clone, Debug)]
pub struct EventView<'a> {
    pub number: u64,
    pub timestamp: Millis,
    /// `create`, `update`, `delete`, or `event` (an eventTrigger: the focus was read).
    pub interaction: &'a str,
    pub focus_type: &'a str,
    pub focus_id: &'a str,
    /// The focus version the event saw (`None`: it could not be read).
    pub focus: Option<VersionView<'a>>,
    /// The additional context the event can show, in order: references whose version could
    /// not be read (or that the subscriber may not see) are left out by the caller.
    pub context: Vec<ContextView<'a>>,
    /// The subscriber may not see the focus (`withhold`): no focus, no context.
    pub withheld: bool,
}

fn resource_url(base_url: &str, resource_type: &str, id: &str, full_url: Option<&str>) -> String {
    match full_url {
        Some(url) => url.to_string(),
        None => format!("{base_url}/{resource_type}/{id}"),
    }
}

/// A random (v4) UUID from the thread's userspace generator: `Uuid::new_v4` asks the kernel
/// (`getrandom`) for every id, two per notification.
fn new_id() -> String {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid().to_string()
}

/// The version's status resource (its `id` is fresh each time): a `SubscriptionStatus` in R5
/// and R4B, a `backport-subscription-status-r4` `Parameters` in R4.
pub fn subscription_status(ctx: &StatusContext<'_>, kind: NotificationType, events: &[EventView<'_>]) -> Value {
    serde_json::to_value(status::status_resource(ctx, kind, events)).unwrap_or_default()
}

/// A notification Bundle: `subscription-notification` in R5, `history` in R4 and R4B.
pub fn notification_bundle(ctx: &StatusContext<'_>, kind: NotificationType, events: &[EventView<'_>], now: Millis) -> Value {
    serde_json::to_value(bundle::bundle_out(ctx, kind, events, now)).unwrap_or_default()
}

/// The same Bundle as `notification_bundle`, as the JSON bytes a channel sends, written
/// without building a `Value` first (the delivery lanes' hot path).
pub fn notification_bytes(ctx: &StatusContext<'_>, kind: NotificationType, events: &[EventView<'_>], now: Millis) -> Vec<u8> {
    serde_json::to_vec(&bundle::bundle_out(ctx, kind, events, now)).unwrap_or_default()
}

#[cfg(test)]
mod backport_tests;
#[cfg(test)]
mod tests;
