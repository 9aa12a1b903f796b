//! The outbox contract: what any `Outbox` implementation must do, one function per property.
//! Each takes a [`Factory`] that opens a fresh outbox over a real store in a directory, so a
//! second implementation runs the whole suite by adding one line: `contract_tests!(name,
//! factory);` at the bottom of this file. Commits are applied to that store (`Store::apply`),
//! as the committer applies them; nothing is mocked.
//!
//! The write verbs take the lane's state (`SubState`) from the caller, as the committer passes
//! it; the properties check both that value and what the applied commit left in the store.

use std::path::Path;

use serde_json::json;
use tempfile::TempDir;

use super::{EventDraft, Outbox, SledOutbox};
use crate::store::records::FORMAT;
use crate::store::{Commit, ContextRef, Store, StoreError, StoredError, SubState, SubStatus, VersionRecord};

/// Opens an outbox and the store its commits are applied to, in `dir`.
pub(crate) type Factory = fn(&Path) -> Result<(Box<dyn Outbox>, Store), StoreError>;

/// The outbox under test, its store and the directory they live in.
struct Harness {
    outbox: Box<dyn Outbox>,
    store: Store,
    _dir: TempDir,
}

type Checked = Result<(), Box<dyn std::error::Error>>;

const SUB: &str = "s1";

fn open(factory: Factory) -> Result<Harness, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let (outbox, store) = factory(dir.path())?;
    Ok(Harness { outbox, store, _dir: dir })
}

fn draft<'a>(topic: &'a str, focus_id: &'a str, context: &'a [ContextRef]) -> EventDraft<'a> {
    EventDraft { timestamp: 1_000, topic, interaction: "create", focus_type: "Patient", focus_id, focus_seq: 1, context }
}

/// A lane of incarnation `incarnation`, as the committer starts it.
fn lane(incarnation: u64) -> SubState {
    let mut lane = SubState::new(SubStatus::Active);
    lane.incarnation = incarnation;
    lane
}

impl Harness {
    /// Enqueues `n` events in one commit and applies it.
    fn enqueue(&self, lane: &mut SubState, n: usize) -> Checked {
        let mut commit = Commit::new();
        for i in 0..n {
            let id = format!("p{i}");
            self.outbox.enqueue(&mut commit, SUB, lane, draft("t", &id, &[]))?;
        }
        self.store.apply(commit)?;
        Ok(())
    }

    fn numbers(&self, incarnation: u64, after: u64, max: usize) -> Result<Vec<u64>, StoreError> {
        Ok(self.outbox.claim(SUB, incarnation, after, max)?.iter().map(|e| e.number).collect())
    }

    fn stored(&self) -> Result<SubState, Box<dyn std::error::Error>> {
        self.store.sub_state(SUB)?.ok_or_else(|| "the lane's state was not stored".into())
    }
}

/// Enqueue numbers a lane's events 1, 2, 3, ... with no gap, in commit order.
pub(crate) fn enqueue_numbers_gap_free_in_commit_order(factory: Factory) -> Checked {
    let h = open(factory)?;
    let mut l = lane(1);
    let mut first = Commit::new();
    let mut numbers = Vec::new();
    for topic in ["a", "b", "c"] {
        numbers.push(h.outbox.enqueue(&mut first, SUB, &mut l, draft(topic, "p", &[]))?.number);
    }
    h.store.apply(first)?;
    let mut second = Commit::new();
    for topic in ["d", "e"] {
        numbers.push(h.outbox.enqueue(&mut second, SUB, &mut l, draft(topic, "p", &[]))?.number);
    }
    h.store.apply(second)?;
    assert_eq!(numbers, [1, 2, 3, 4, 5]);
    let claimed = h.outbox.claim(SUB, 1, 0, 10)?;
    let seen: Vec<(u64, &str)> = claimed.iter().map(|e| (e.number, e.topic.as_str())).collect();
    assert_eq!(seen, [(1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "e")]);
    assert_eq!(l.events_since_start, 5);
    assert_eq!(h.stored()?.events_since_start, 5);
    Ok(())
}

/// Claim returns events after the cursor in number order, at most `max`, and never one of
/// another incarnation (the id was deleted and reused).
pub(crate) fn claim_is_ordered_bounded_and_of_one_incarnation(factory: Factory) -> Checked {
    let h = open(factory)?;
    let mut old = lane(1);
    h.enqueue(&mut old, 3)?;
    assert_eq!(h.numbers(1, 0, 10)?, [1, 2, 3]);
    assert_eq!(h.numbers(1, 0, 2)?, [1, 2]);
    assert_eq!(h.numbers(1, 1, 2)?, [2, 3]);
    assert_eq!(h.numbers(1, 3, 10)?, Vec::<u64>::new());
    // The id re-created: a new incarnation numbers from 1 again, over the old event 1.
    let mut new = lane(2);
    h.enqueue(&mut new, 1)?;
    assert_eq!(h.numbers(2, 0, 10)?, [1]);
    assert_eq!(h.numbers(1, 0, 10)?, [2, 3]);
    assert!(h.outbox.claim(SUB, 1, 0, 10)?.iter().all(|e| e.incarnation == 1));
    Ok(())
}

/// Ack moves the cursor only forward and never past the last number handed out.
pub(crate) fn ack_moves_forward_only_and_never_past_the_last(factory: Factory) -> Checked {
    let h = open(factory)?;
    let mut l = lane(1);
    h.enqueue(&mut l, 3)?;
    l.attempts = 2;
    l.next_attempt_at = Some(5);
    l.first_failure_at = Some(4);
    let mut commit = Commit::new();
    h.outbox.ack(&mut commit, SUB, &mut l, 2, 77)?;
    h.store.apply(commit)?;
    assert_eq!((l.delivered_through, l.attempts, l.next_attempt_at, l.first_failure_at), (2, 0, None, None));
    assert_eq!(l.last_delivery_at, Some(77));
    assert_eq!(h.stored()?, l);
    let mut commit = Commit::new();
    h.outbox.ack(&mut commit, SUB, &mut l, 1, 88)?;
    h.store.apply(commit)?;
    assert_eq!((l.delivered_through, l.last_delivery_at), (2, Some(77)));
    assert_eq!(h.stored()?.delivered_through, 2);
    let mut commit = Commit::new();
    h.outbox.ack(&mut commit, SUB, &mut l, 99, 99)?;
    h.store.apply(commit)?;
    assert_eq!(l.delivered_through, 3);
    assert_eq!(h.stored()?.delivered_through, 3);
    Ok(())
}

/// Nack keeps the cursor and records the retry schedule.
pub(crate) fn nack_keeps_the_cursor_and_records_the_schedule(factory: Factory) -> Checked {
    let h = open(factory)?;
    let mut l = lane(1);
    h.enqueue(&mut l, 2)?;
    let mut commit = Commit::new();
    h.outbox.nack(&mut commit, SUB, &mut l, 3, 1_000, 500)?;
    h.store.apply(commit)?;
    let stored = h.stored()?;
    assert_eq!(
        (stored.delivered_through, stored.attempts, stored.next_attempt_at, stored.first_failure_at),
        (0, 3, Some(1_000), Some(500))
    );
    assert_eq!(stored, l);
    assert_eq!(h.numbers(1, stored.delivered_through, 10)?, [1, 2]);
    Ok(())
}

/// Park dead-letters exactly the events after the cursor up to `through` (never past the last)
/// and moves the cursor there.
pub(crate) fn park_dead_letters_exactly_the_range(factory: Factory) -> Checked {
    let h = open(factory)?;
    let mut l = lane(1);
    h.enqueue(&mut l, 5)?;
    let mut commit = Commit::new();
    h.outbox.ack(&mut commit, SUB, &mut l, 1, 10)?;
    l.attempts = 4;
    let why = StoredError { code: "no-response".into(), text: "timed out".into(), at: 20 };
    h.outbox.park(&mut commit, SUB, &mut l, 3, 4, &why)?;
    h.store.apply(commit)?;
    let dead = h.outbox.dead_letters(SUB, 1, 10, 10)?;
    let seen: Vec<(u64, u32, &str, i64)> = dead.iter().map(|d| (d.number, d.attempts, d.reason.as_str(), d.parked_at)).collect();
    assert_eq!(seen, [(2, 4, "timed out", 20), (3, 4, "timed out", 20)]);
    assert_eq!((l.delivered_through, l.dead_count, l.attempts), (3, 2, 0));
    assert_eq!(h.stored()?, l);
    let mut commit = Commit::new();
    h.outbox.park(&mut commit, SUB, &mut l, 99, 1, &why)?;
    h.store.apply(commit)?;
    let numbers: Vec<u64> = h.outbox.dead_letters(SUB, 1, 99, 99)?.iter().map(|d| d.number).collect();
    assert_eq!(numbers, [2, 3, 4, 5]);
    assert_eq!((l.delivered_through, l.dead_count), (5, 4));
    assert_eq!(h.stored()?.delivered_through, 5);
    Ok(())
}

/// Enqueue writes only into its commit: a commit that is not applied leaves nothing visible.
pub(crate) fn enqueue_in_an_unapplied_commit_leaves_nothing(factory: Factory) -> Checked {
    let h = open(factory)?;
    let mut l = lane(1);
    let mut commit = Commit::new();
    for id in ["a", "b"] {
        h.outbox.enqueue(&mut commit, SUB, &mut l, draft("t", id, &[]))?;
    }
    drop(commit);
    assert!(h.outbox.claim(SUB, 1, 0, 10)?.is_empty());
    assert!(h.outbox.events(SUB, None, 1, u64::MAX, 10)?.is_empty());
    assert!(h.store.sub_state(SUB)?.is_none());
    Ok(())
}

/// The read verbs answer what was written: events of a numbered range (one incarnation or
/// any), the versions each saw (with or without resources; `None` for one never stored),
/// both at once, and dead letters of a range.
pub(crate) fn read_verbs_answer_what_was_written(factory: Factory) -> Checked {
    let h = open(factory)?;
    let version = |ty: &str, id: &str| VersionRecord {
        v: FORMAT,
        resource_type: ty.into(),
        id: id.into(),
        seq: 1,
        version_id: "1".into(),
        last_updated: 3,
        method: "PUT".into(),
        deleted: false,
        resource: Some(json!({"resourceType": ty, "id": id})),
        full_url: None,
    };
    let mut commit = Commit::new();
    commit.put_version(&version("Patient", "p0"))?;
    commit.put_version(&version("Group", "g"))?;
    let context = [
        ContextRef { resource_type: "Group".into(), id: "g".into(), seq: 1 },
        ContextRef { resource_type: "Group".into(), id: "never".into(), seq: 1 },
    ];
    let mut l = lane(1);
    h.outbox.enqueue(&mut commit, SUB, &mut l, draft("t", "p0", &context))?;
    for id in ["p1", "p2", "p3"] {
        h.outbox.enqueue(&mut commit, SUB, &mut l, draft("t", id, &[]))?;
    }
    h.store.apply(commit)?;

    let numbers = |inc, from, until, max| -> Result<Vec<u64>, StoreError> {
        Ok(h.outbox.events(SUB, inc, from, until, max)?.iter().map(|e| e.number).collect())
    };
    assert_eq!(numbers(None, 2, 3, 10)?, [2, 3]);
    assert_eq!(numbers(Some(1), 0, u64::MAX, 3)?, [1, 2, 3]);
    assert_eq!(numbers(Some(2), 1, 4, 10)?, Vec::<u64>::new());
    assert_eq!(numbers(None, 3, 2, 10)?, Vec::<u64>::new());
    assert_eq!(numbers(None, 1, 4, 0)?, Vec::<u64>::new());

    let events = h.outbox.events(SUB, Some(1), 1, 2, 10)?;
    let full = h.outbox.versions(&events, true);
    assert_eq!(full.len(), 2);
    let (focus, ctx) = &full[0];
    assert_eq!(focus.as_ref().and_then(|v| v.resource.as_ref()), Some(&json!({"resourceType": "Patient", "id": "p0"})));
    assert_eq!(ctx.len(), 2);
    assert_eq!(ctx[0].as_ref().map(|v| v.id.as_str()), Some("g"));
    assert!(ctx[1].is_none());
    assert!(full[1].0.is_none(), "p1 has no stored version");
    let heads = h.outbox.versions(&events, false);
    let head = heads[0].0.as_ref().ok_or("the focus version was not read")?;
    // The resource may come along (`SledOutbox` shares what it read for `full` above).
    assert_eq!((head.version_id.as_str(), head.last_updated), ("1", 3));

    let replayed = h.outbox.events_with_versions(SUB, Some(1), 1, 1, 10)?;
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].event.number, 1);
    assert!(replayed[0].version.as_ref().is_some_and(|v| v.resource.is_some()));
    assert_eq!(replayed[0].context.len(), 2);

    let why = StoredError { code: "no-response".into(), text: "gone".into(), at: 9 };
    let mut commit = Commit::new();
    h.outbox.park(&mut commit, SUB, &mut l, 4, 1, &why)?;
    h.store.apply(commit)?;
    let dead = |from, until, max| -> Result<Vec<u64>, StoreError> {
        Ok(h.outbox.dead_letters(SUB, from, until, max)?.iter().map(|d| d.number).collect())
    };
    assert_eq!(dead(2, 3, 10)?, [2, 3]);
    assert_eq!(dead(1, 4, 2)?, [1, 2]);
    assert_eq!(dead(5, 9, 10)?, Vec::<u64>::new());
    Ok(())
}

/// One `#[test]` per property for the implementation `factory` opens.
macro_rules! contract_tests {
    ($name:ident, $factory:expr) => {
        mod $name {
            use super::*;

            #[test]
            fn enqueue_numbers_gap_free_in_commit_order() -> Checked {
                super::enqueue_numbers_gap_free_in_commit_order($factory)
            }
            #[test]
            fn claim_is_ordered_bounded_and_of_one_incarnation() -> Checked {
                super::claim_is_ordered_bounded_and_of_one_incarnation($factory)
            }
            #[test]
            fn ack_moves_forward_only_and_never_past_the_last() -> Checked {
                super::ack_moves_forward_only_and_never_past_the_last($factory)
            }
            #[test]
            fn nack_keeps_the_cursor_and_records_the_schedule() -> Checked {
                super::nack_keeps_the_cursor_and_records_the_schedule($factory)
            }
            #[test]
            fn park_dead_letters_exactly_the_range() -> Checked {
                super::park_dead_letters_exactly_the_range($factory)
            }
            #[test]
            fn enqueue_in_an_unapplied_commit_leaves_nothing() -> Checked {
                super::enqueue_in_an_unapplied_commit_leaves_nothing($factory)
            }
            #[test]
            fn read_verbs_answer_what_was_written() -> Checked {
                super::read_verbs_answer_what_was_written($factory)
            }
        }
    };
}

fn sled(dir: &Path) -> Result<(Box<dyn Outbox>, Store), StoreError> {
    let store = Store::open(dir)?;
    // With the version cache the lanes have (`delivery.version_cache_mib`).
    Ok((Box::new(SledOutbox::with_version_cache(store.clone(), 1 << 20)), store))
}

// Every implementation in the repository, one line each.
contract_tests!(sled_outbox, sled);
