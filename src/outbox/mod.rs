//! The outbox: durable, ordered per-subscription lanes of events.
//!
//! A lane is one subscription's events numbered 1, 2, 3, ... (`SubState.events_since_start` is
//! the last number handed out) and a cursor, `delivered_through`: every event up to it was
//! accepted by its endpoint or dead-lettered. Retry bookkeeping for the event after the cursor
//! (`attempts`, `next_attempt_at`) lives in the same stored state, so a retry schedule survives
//! a restart. Event records stay after delivery; they are what `$events` will read (issue #8).
//!
//! The `Outbox` trait has write verbs and read verbs. Writes: `enqueue` runs inside the write's
//! commit (so an acknowledged write's events are exactly as durable as the write), and `ack`,
//! `nack` and `park` move the cursor or the retry schedule (the committer calls them). Reads,
//! everything a lane reads: `claim` (the next events of a lane), `events` (a numbered range,
//! for resends), `dead_letters` (a range of them, for dead-letter resends), `versions` (the
//! resource versions events saw) and `events_with_versions` (both at once, for websocket
//! replays). The sled implementation here is the only one; the trait is the seam a multi-node
//! deployment can put another queue behind without touching matching or channels, which hold
//! an `Arc<dyn Outbox>` and no `Store`.
//!
//! `replay` has the stored-event-with-versions shape the read verbs return; `versions` is the
//! cache that reads each version once for every subscriber that sends it; `contract` is the
//! test suite every implementation must pass.
//! **Invariant:** the outbox imports nothing from `notify` or `channels` (they sit above it).

#[cfg(test)]
mod contract;
pub mod replay;
pub mod versions;

use crate::fhir::instant::Millis;
use crate::store::records::FORMAT;
use crate::store::{Commit, ContextRef, DeadRecord, EventRecord, Store, StoreError, StoredError, SubState};

pub use replay::StoredEvent;
pub use versions::{Cached, Version, VersionCache};

/// What a matched event records, before it has a number.
pub struct EventDraft<'a> {
    pub timestamp: Millis,
    pub topic: &'a str,
    pub interaction: &'a str,
    pub focus_type: &'a str,
    pub focus_id: &'a str,
    pub focus_seq: u64,
    pub context: &'a [ContextRef],
}

pub trait Outbox: Send + Sync {
    /// Appends an event to a lane in `commit`, giving it the lane's next number.
    fn enqueue(&self, commit: &mut Commit, sub: &str, lane: &mut SubState, draft: EventDraft<'_>) -> Result<EventRecord, StoreError>;
    /// Up to `max` events of `incarnation` after `after`, in number order (none of another
    /// incarnation: the id was deleted and reused since the caller last looked).
    fn claim(&self, sub: &str, incarnation: u64, after: u64, max: usize) -> Result<Vec<EventRecord>, StoreError>;
    /// Every event up to `through` was accepted.
    fn ack(&self, commit: &mut Commit, sub: &str, lane: &mut SubState, through: u64, at: Millis) -> Result<(), StoreError>;
    /// The next event failed; try again at `next_attempt_at`.
    fn nack(
        &self,
        commit: &mut Commit,
        sub: &str,
        lane: &mut SubState,
        attempts: u32,
        next_attempt_at: Millis,
        first_failure_at: Millis,
    ) -> Result<(), StoreError>;
    /// Gives up on events up to `through`, keeping them as dead letters for operators.
    fn park(
        &self,
        commit: &mut Commit,
        sub: &str,
        lane: &mut SubState,
        through: u64,
        attempts: u32,
        why: &StoredError,
    ) -> Result<(), StoreError>;

    /// Events `from..=until` of `sub` in number order, at most `max`: a resend's range.
    /// `incarnation`: only events of that incarnation (a lane's); `None`: whatever is stored.
    fn events(&self, sub: &str, incarnation: Option<u64>, from: u64, until: u64, max: usize) -> Result<Vec<EventRecord>, StoreError>;
    /// Dead letters of `sub` numbered `from..=until`, in number order, at most `max`.
    fn dead_letters(&self, sub: &str, from: u64, until: u64, max: usize) -> Result<Vec<DeadRecord>, StoreError>;
    /// The versions each of `events` saw, in order; `with_resources: false` need not read
    /// their resources (enough for every content level but `full-resource`; one already read
    /// for another subscriber may come with its resource, so callers decide by content level,
    /// never by the resource being there). A version that
    /// cannot be read is logged and `None`; the event keeps its place.
    fn versions(&self, events: &[EventRecord], with_resources: bool) -> Vec<EventVersions>;

    /// `events` of the range, each with the versions it saw (resources included): what a
    /// websocket replay and `$events` render.
    fn events_with_versions(
        &self,
        sub: &str,
        incarnation: Option<u64>,
        from: u64,
        until: u64,
        max: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let events = self.events(sub, incarnation, from, until, max)?;
        let versions = self.versions(&events, true);
        Ok(events.into_iter().zip(versions).map(|(event, (version, context))| StoredEvent { event, version, context }).collect())
    }
}

/// The outbox in Herald's own store.
pub struct SledOutbox {
    store: Store,
    /// The versions events saw, read once for all their subscribers (`versions`).
    versions: VersionCache,
}

impl SledOutbox {
    /// An outbox without a version cache: for the committer (which reads no versions) and
    /// one-off reads such as `$events`.
    pub fn new(store: Store) -> Self {
        Self::with_version_cache(store, 0)
    }

    /// An outbox whose version cache holds about `bytes` (0: none).
    pub fn with_version_cache(store: Store, bytes: usize) -> Self {
        SledOutbox { store, versions: VersionCache::new(bytes) }
    }
}

impl Outbox for SledOutbox {
    fn enqueue(&self, commit: &mut Commit, sub: &str, lane: &mut SubState, draft: EventDraft<'_>) -> Result<EventRecord, StoreError> {
        // R5 event numbering: counts events, not deliveries, and is consumed at match time.
        lane.events_since_start += 1;
        let event = EventRecord {
            v: FORMAT,
            number: lane.events_since_start,
            timestamp: draft.timestamp,
            topic: draft.topic.to_string(),
            interaction: draft.interaction.to_string(),
            focus_type: draft.focus_type.to_string(),
            focus_id: draft.focus_id.to_string(),
            focus_seq: draft.focus_seq,
            context: draft.context.to_vec(),
            incarnation: lane.incarnation,
        };
        commit.put_event(sub, &event)?;
        commit.put_sub_state(sub, lane)?;
        Ok(event)
    }

    fn claim(&self, sub: &str, incarnation: u64, after: u64, max: usize) -> Result<Vec<EventRecord>, StoreError> {
        let mut events = self.store.events(sub, after.saturating_add(1), max)?;
        events.retain(|e| e.incarnation == incarnation);
        Ok(events)
    }

    fn events(&self, sub: &str, incarnation: Option<u64>, from: u64, until: u64, max: usize) -> Result<Vec<EventRecord>, StoreError> {
        let from = from.max(1);
        if until < from || max == 0 {
            return Ok(Vec::new());
        }
        let span = usize::try_from(until - from).unwrap_or(usize::MAX).saturating_add(1);
        let mut events = self.store.events(sub, from, max.min(span))?;
        events.retain(|e| e.number <= until && incarnation.is_none_or(|i| e.incarnation == i));
        Ok(events)
    }

    fn dead_letters(&self, sub: &str, from: u64, until: u64, max: usize) -> Result<Vec<DeadRecord>, StoreError> {
        self.store.dead_letters_in(sub, from, until, max)
    }

    fn versions(&self, events: &[EventRecord], with_resources: bool) -> Vec<EventVersions> {
        let read = |number: u64, ty: &str, id: &str, seq: u64| match self.versions.get(&self.store, ty, id, seq, with_resources) {
            Ok(v) => v,
            Err(err) => {
                tracing::error!(event.number = number, error = %err, "could not read a resource version the event saw; sending without it");
                None
            }
        };
        events
            .iter()
            .map(|e| {
                let focus = read(e.number, &e.focus_type, &e.focus_id, e.focus_seq);
                let context = e.context.iter().map(|c| read(e.number, &c.resource_type, &c.id, c.seq)).collect();
                (focus, context)
            })
            .collect()
    }

    fn ack(&self, commit: &mut Commit, sub: &str, lane: &mut SubState, through: u64, at: Millis) -> Result<(), StoreError> {
        if through > lane.delivered_through {
            lane.delivered_through = through.min(lane.events_since_start);
            lane.attempts = 0;
            lane.next_attempt_at = None;
            lane.first_failure_at = None;
            lane.last_delivery_at = Some(at);
            commit.put_sub_state(sub, lane)?;
        }
        Ok(())
    }

    fn nack(
        &self,
        commit: &mut Commit,
        sub: &str,
        lane: &mut SubState,
        attempts: u32,
        next_attempt_at: Millis,
        first_failure_at: Millis,
    ) -> Result<(), StoreError> {
        lane.attempts = attempts;
        lane.next_attempt_at = Some(next_attempt_at);
        lane.first_failure_at = Some(first_failure_at);
        commit.put_sub_state(sub, lane)
    }

    fn park(
        &self,
        commit: &mut Commit,
        sub: &str,
        lane: &mut SubState,
        through: u64,
        attempts: u32,
        why: &StoredError,
    ) -> Result<(), StoreError> {
        let through = through.min(lane.events_since_start);
        for number in lane.delivered_through.saturating_add(1)..=through {
            commit.put_dead(sub, &DeadRecord { v: FORMAT, number, parked_at: why.at, attempts, reason: why.text.clone() })?;
            lane.dead_count += 1;
        }
        lane.delivered_through = lane.delivered_through.max(through);
        lane.attempts = 0;
        lane.next_attempt_at = None;
        lane.first_failure_at = None;
        commit.put_sub_state(sub, lane)
    }
}

/// The versions each event saw: its focus, and its additional context in order.
pub type EventVersions = (Option<Version>, Vec<Option<Version>>);
