//! Reading stored events back with the resource version each one saw, for whatever renders
//! events after matching: the websocket lane (pushes, and replays on bind) and `$events`.
//! Event records stay after delivery, so this reads delivered events too.

use crate::notify::EventWithVersion;
use crate::store::{EventRecord, Store, StoreError, VersionRecord};

/// A stored event and the focus version it saw (`None` if that version cannot be read).
pub struct Replayed {
    pub event: EventRecord,
    pub version: Option<VersionRecord>,
}

impl Replayed {
    /// The pair as `notify` takes it.
    pub fn as_notify(&self) -> EventWithVersion<'_> {
        event_with_version(&self.event, self.version.as_ref())
    }
}

/// Builds notify's `EventWithVersion`; the one place outside the rest-hook lane that does.
pub fn event_with_version<'a>(event: &'a EventRecord, version: Option<&'a VersionRecord>) -> EventWithVersion<'a> {
    EventWithVersion { event, version }
}

/// Events `from..=until` of `sub` in number order, at most `max`, each with its version.
/// A version that cannot be read is logged and left out; the event is still returned.
pub fn events_with_versions(store: &Store, sub: &str, from: u64, until: u64, max: usize) -> Result<Vec<Replayed>, StoreError> {
    let from = from.max(1);
    if until < from || max == 0 {
        return Ok(Vec::new());
    }
    let span = usize::try_from(until - from).unwrap_or(usize::MAX).saturating_add(1);
    let events = store.events(sub, from, max.min(span))?;
    Ok(events
        .into_iter()
        .filter(|e| e.number <= until)
        .map(|event| {
            let version = match store.version(&event.focus_type, &event.focus_id, event.focus_seq) {
                Ok(v) => v,
                Err(err) => {
                    tracing::error!(event.number = event.number, error = %err, "could not read the event's resource version; rendering without it");
                    None
                }
            };
            Replayed { event, version }
        })
        .collect())
}
