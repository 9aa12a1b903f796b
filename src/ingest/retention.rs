//! Retention: what the committer removes on its own while nothing waits. `prune` plans the
//! removal of delivered events past `subscriptions.events_keep` or `events_max_age` (never
//! undelivered ones, dead letters, or those a resend still has to send), one commit per
//! subscription; `purge_step` plans one bounded batch of a deleted subscription's events.

use super::plan::{Plan, View};
use super::IngestError;
use crate::fhir::instant::Millis;

/// Retention: removes delivered event records past `keep` or `max_age` (never undelivered
/// ones, dead letters, or those a resend still has to send).
pub(super) fn prune(view: &View<'_>, now: Millis) -> Vec<Plan> {
    let mut plans = Vec::new();
    let max_age = i64::try_from(view.cfg.retention.max_age.as_millis()).unwrap_or(i64::MAX);
    let oldest_kept = now.saturating_sub(max_age);
    for (sub, lane) in view.states {
        let mut lane = lane.clone();
        let sub = sub.clone();
        let mut limit = lane.delivered_through.min(lane.events_since_start.saturating_sub(0));
        if let Some(r) = &lane.resend {
            limit = limit.min(r.next.saturating_sub(1));
        }
        let by_count = lane.events_since_start.saturating_sub(view.cfg.retention.keep);
        let start = lane.pruned_through + 1;
        let mut cutoff = by_count.min(limit);
        // By age: events are numbered in commit order, so timestamps only grow.
        let scan_to = limit.min(lane.pruned_through + view.cfg.retention.batch);
        if cutoff < scan_to {
            match view.store.events(
                &sub,
                cutoff.max(lane.pruned_through) + 1,
                usize::try_from(scan_to - cutoff.max(lane.pruned_through)).unwrap_or(0),
            ) {
                Ok(events) => {
                    for e in events.iter().take_while(|e| e.timestamp < oldest_kept && e.number <= scan_to) {
                        cutoff = cutoff.max(e.number);
                    }
                }
                Err(e) => {
                    tracing::error!(subscription.id = %sub, error = %e, "retention could not read events");
                    continue;
                }
            }
        }
        let cutoff = cutoff.min(lane.pruned_through + view.cfg.retention.batch);
        if cutoff < start {
            continue;
        }
        let dead: Vec<u64> = match view.store.dead_letters_in(&sub, start, cutoff, usize::MAX) {
            Ok(d) => d.into_iter().map(|d| d.number).collect(),
            Err(e) => {
                tracing::error!(subscription.id = %sub, error = %e, "retention could not read dead letters");
                continue;
            }
        };
        let mut plan = Plan::default();
        for number in start..=cutoff {
            if !dead.contains(&number) {
                plan.commit.remove_event(&sub, number);
            }
        }
        lane.pruned_through = cutoff;
        if let Err(e) = plan.commit.put_sub_state(&sub, &lane) {
            tracing::error!(subscription.id = %sub, error = %e, "retention could not record its progress");
            continue;
        }
        plan.states.insert(sub.clone(), lane);
        tracing::debug!(subscription.id = %sub, through = cutoff, "events past retention to be removed");
        plans.push(plan);
    }
    plans
}

/// The next bounded batch of the oldest pending purge's events, as its own commit; true when
/// this batch finishes that subscription's purge.
pub(super) fn purge_step(view: &View<'_>, sub: &str) -> Result<(Plan, bool), IngestError> {
    let mut plan = Plan::default();
    let done = plan.commit.purge_outbox(view.store, sub, view.purge_batch())?;
    Ok((plan, done))
}
