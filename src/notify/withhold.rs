//! Authorization at send time (digest §6.1, §2.9 item 48), as rendered: before an event is
//! rendered, its subscription's grant is checked against the versions the event saw (the
//! check is `channels::render::screen`, over stored records; the grant is resolved by
//! `channels::render::send_grant`).
//!
//! - The focus not covered: the event is *withheld* (`EventView.withheld`). It keeps its
//!   number and timestamp (a gap would make the client try to repair it forever) and is
//!   rendered like `empty` content, with no focus, no additional context and no entries, marked
//!   with the [`WITHHELD_URL`] extension (`valueCode` [`NOT_AUTHORIZED`]).
//! - The focus covered: each additional-context version the grant cannot read is left out, its
//!   reference and its entry both (at `id-only` too, since a reference reveals an id).
//!
//! Subscriptions without a recorded grant (anonymous, or written before grants were recorded)
//! and servers without `[auth]` check nothing, at no cost. Pure: no IO.

/// The extension on a `notificationEvent` whose focus was withheld.
pub const WITHHELD_URL: &str = "http://herald.dev/fhir/StructureDefinition/withheld";
/// Its code: the subscriber's grant does not cover the focus.
pub const NOT_AUTHORIZED: &str = "not-authorized";

#[cfg(test)]
mod tests;
