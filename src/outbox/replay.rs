//! A stored event read back with the resource versions it saw, the shape
//! `Outbox::events_with_versions` returns for whatever renders events after matching: the
//! websocket lane (pushes, and replays on bind) and `$events`. Event records stay after
//! delivery, so this covers delivered events too. Screening and rendering happen above the
//! outbox (`channels::render`).

use super::Version;
use crate::store::EventRecord;

/// A stored event and the versions it saw: its focus (`None` if that version cannot be
/// read) and its additional context, in order; shared with the other subscribers of the same
/// write (`versions`).
pub struct StoredEvent {
    pub event: EventRecord,
    pub version: Option<Version>,
    pub context: Vec<Option<Version>>,
}
