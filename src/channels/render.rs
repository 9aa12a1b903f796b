//! The glue between what the outbox returns (stored events with the versions they saw) and
//! what `notify` renders: screening against the subscriber's grant (`notify::withhold`) and
//! the view `notify` takes. Used by the lanes and by `$events`, so the outbox below stays free
//! of `notify`.

use crate::auth::SendGrant;
use crate::notify::withhold::screen;
use crate::notify::EventWithVersion;
use crate::outbox::StoredEvent;

/// A stored event with its versions, and whether the subscriber may see its focus.
pub struct Replayed {
    pub stored: StoredEvent,
    /// Its focus is not covered by the subscriber's grant (`notify::withhold::screen`).
    pub withheld: bool,
}

impl From<StoredEvent> for Replayed {
    fn from(stored: StoredEvent) -> Self {
        Replayed { stored, withheld: false }
    }
}

impl Replayed {
    /// The event's number.
    pub fn number(&self) -> u64 {
        self.stored.event.number
    }

    /// The event as `notify` takes it.
    pub fn as_notify(&self) -> EventWithVersion<'_> {
        let s = &self.stored;
        EventWithVersion { event: &s.event, version: s.version.as_ref(), context: &s.context, withheld: self.withheld }
    }

    /// Applies the subscriber's grant (`None`: nothing to check); true when withheld.
    pub fn screen(&mut self, grant: Option<&SendGrant>) -> bool {
        if let Some(grant) = grant {
            let s = &mut self.stored;
            self.withheld = screen(grant, &s.event, s.version.as_ref(), &mut s.context);
        }
        self.withheld
    }
}
