//! The glue between what the outbox returns (stored events with the versions they saw) and
//! what `notify` renders: the subscriber's grant at send time ([`send_grant`]), screening
//! events against it ([`screen`], `notify::withhold` says what that means), and the views
//! `notify` takes ([`event_view`], [`status`], [`error_view`]). Used by the lanes, `$events`
//! and `$status`, so the outbox below stays free of `notify` and `notify` of store records.

use crate::auth::{Authenticator, Scopes, SendGrant};
use crate::notify::{self, ContextView, ErrorView, EventView, VersionView};
use crate::outbox::{Cached, StoredEvent, Version};
use crate::store::{EventRecord, GrantSource, StoredError, StoredGrant, SubStatus};

/// What the subscription's owner may read now; `None`: nothing to check. `owner` is the
/// subscription's owner (`SubState.owner`); `auth` the server's authenticator (`None`: no
/// `[auth]`, everything is allowed). An API key's grant is its client's configured scopes
/// today (none left: nothing); a token's is the recorded snapshot (unparsable: nothing). A
/// `jwt:` owner has no API key (`auth::Authenticator::client_scopes`), so it never gets one's.
pub fn send_grant(owner: Option<&str>, stored: Option<&StoredGrant>, auth: Option<&Authenticator>) -> Option<SendGrant> {
    let stored = stored?;
    let auth = auth?;
    let scopes = match stored.via {
        GrantSource::ApiKey => owner.map(|client| auth.client_scopes(client)).unwrap_or_default(),
        GrantSource::Jwt => Scopes::parse(&stored.scopes).unwrap_or_default(),
    };
    Some(SendGrant::new(scopes, stored.patient.clone()))
}

/// Checks one event against `grant`. Returns true when the event is withheld (its context is
/// then cleared too); otherwise sets to `None` each context version the grant cannot read
/// (`notify` is then not given those).
pub fn screen(grant: &SendGrant, event: &EventRecord, focus: Option<&Version>, context: &mut [Option<Version>]) -> bool {
    if !grant.may_read(&event.focus_type, focus.and_then(|v| v.resource.as_ref())) {
        context.iter_mut().for_each(|c| *c = None);
        return true;
    }
    for (r, v) in event.context.iter().zip(context.iter_mut()) {
        if v.as_ref().is_some_and(|v| !grant.may_read(&r.resource_type, v.resource.as_ref())) {
            *v = None;
        }
    }
    false
}

/// A stored version as `notify` shows it (borrowed, resource included). `full`: the
/// subscription is sent at `full-resource`, so its resource's JSON is written here, once for
/// every subscriber of the version (`Cached::rendered`).
pub fn version_view(v: &Cached, full: bool) -> VersionView<'_> {
    VersionView {
        version_id: &v.version_id,
        last_updated: v.last_updated,
        full_url: v.full_url.as_deref(),
        resource: v.resource.as_ref(),
        rendered: if full { v.rendered(notify::resource_json) } else { None },
    }
}

/// A stored event as `notify` renders it: `focus` and `context` are the versions it saw
/// (`context` in the order of `event.context`; a `None` or missing one is left out); `full`
/// as for [`version_view`].
pub fn event_view<'a>(
    event: &'a EventRecord,
    focus: Option<&'a Version>,
    context: &'a [Option<Version>],
    withheld: bool,
    full: bool,
) -> EventView<'a> {
    EventView {
        number: event.number,
        timestamp: event.timestamp,
        interaction: &event.interaction,
        focus_type: &event.focus_type,
        focus_id: &event.focus_id,
        focus: focus.map(|v| version_view(v, full)),
        context: event
            .context
            .iter()
            .zip(context)
            .filter_map(|(r, v)| Some(ContextView { resource_type: &r.resource_type, id: &r.id, version: version_view(v.as_ref()?, full) }))
            .collect(),
        withheld,
    }
}

/// A stored status as a status resource reports it.
pub fn status(s: SubStatus) -> notify::Status {
    match s {
        SubStatus::Requested => notify::Status::Requested,
        SubStatus::Active => notify::Status::Active,
        SubStatus::Error => notify::Status::Error,
        SubStatus::Off => notify::Status::Off,
        SubStatus::EnteredInError => notify::Status::EnteredInError,
    }
}

/// A stored error as a status resource reports it.
pub fn error_view(e: &StoredError) -> ErrorView<'_> {
    ErrorView { code: &e.code, text: &e.text }
}

/// A stored event with its versions, and whether the subscriber may see its focus.
pub struct Replayed {
    pub stored: StoredEvent,
    /// Its focus is not covered by the subscriber's grant ([`screen`]).
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

    /// The event as `notify` takes it (`full`: sent at `full-resource`, see [`version_view`]).
    pub fn as_notify(&self, full: bool) -> EventView<'_> {
        let s = &self.stored;
        event_view(&s.event, s.version.as_ref(), &s.context, self.withheld, full)
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
