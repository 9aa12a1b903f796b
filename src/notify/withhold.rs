//! Authorization at send time (digest §6.1, §2.9 item 48): before an event is rendered, its
//! subscription's grant (`SubState.grant`, resolved by [`send_grant`]) is checked against the
//! versions the event saw.
//!
//! - The focus not covered (`SendGrant::may_read`): the event is *withheld*. It keeps its
//!   number and timestamp (a gap would make the client try to repair it forever) and is
//!   rendered like `empty` content, with no focus, no additional context and no entries, marked
//!   with the [`WITHHELD_URL`] extension (`valueCode` [`NOT_AUTHORIZED`]).
//! - The focus covered: each additional-context version the grant cannot read is left out, its
//!   reference and its entry both (at `id-only` too, since a reference reveals an id).
//!
//! Subscriptions without a recorded grant (anonymous, or written before grants were recorded)
//! and servers without `[auth]` check nothing, at no cost. Pure: no IO.

use crate::auth::{Authenticator, Scopes, SendGrant};
use crate::store::{EventRecord, GrantSource, StoredGrant, VersionRecord};

/// The extension on a `notificationEvent` whose focus was withheld.
pub const WITHHELD_URL: &str = "http://herald.dev/fhir/StructureDefinition/withheld";
/// Its code: the subscriber's grant does not cover the focus.
pub const NOT_AUTHORIZED: &str = "not-authorized";

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
/// (`notify` leaves those out).
pub fn screen(grant: &SendGrant, event: &EventRecord, focus: Option<&VersionRecord>, context: &mut [Option<VersionRecord>]) -> bool {
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

#[cfg(test)]
mod tests;
