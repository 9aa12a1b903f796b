//! Reading stored events back with the resource version each one saw, for whatever renders
//! events after matching: the websocket lane (pushes, and replays on bind) and `$events`.
//! Event records stay after delivery, so this reads delivered events too.

use super::event_versions;
use crate::auth::SendGrant;
use crate::notify::withhold::screen;
use crate::notify::EventWithVersion;
use crate::store::{EventRecord, Store, StoreError, VersionRecord};

/// A stored event and the versions it saw: its focus (`None` if that version cannot be
/// read) and its additional context, in order.
pub struct Replayed {
    pub event: EventRecord,
    pub version: Option<VersionRecord>,
    pub context: Vec<Option<VersionRecord>>,
    /// Its focus is not covered by the subscriber's grant (`notify::withhold::screen`).
    pub withheld: bool,
}

impl Replayed {
    /// The event as `notify` takes it.
    pub fn as_notify(&self) -> EventWithVersion<'_> {
        EventWithVersion { event: &self.event, version: self.version.as_ref(), context: &self.context, withheld: self.withheld }
    }

    /// Applies the subscriber's grant (`None`: nothing to check); true when withheld.
    pub fn screen(&mut self, grant: Option<&SendGrant>) -> bool {
        if let Some(grant) = grant {
            self.withheld = screen(grant, &self.event, self.version.as_ref(), &mut self.context);
        }
        self.withheld
    }
}

/// Events `from..=until` of `sub` in number order, at most `max`, each with its versions.
/// A version that cannot be read is logged and left out; the event is still returned.
/// `incarnation`: only events of that incarnation (a lane's); `None`: whatever is stored now.
pub fn events_with_versions(
    store: &Store,
    sub: &str,
    incarnation: Option<u64>,
    from: u64,
    until: u64,
    max: usize,
) -> Result<Vec<Replayed>, StoreError> {
    let from = from.max(1);
    if until < from || max == 0 {
        return Ok(Vec::new());
    }
    let span = usize::try_from(until - from).unwrap_or(usize::MAX).saturating_add(1);
    let mut events = store.events(sub, from, max.min(span))?;
    events.retain(|e| e.number <= until && incarnation.is_none_or(|i| e.incarnation == i));
    let versions = event_versions(store, &events, true);
    Ok(events.into_iter().zip(versions).map(|(event, (version, context))| Replayed { event, version, context, withheld: false }).collect())
}
