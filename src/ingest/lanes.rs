//! Delivery results and resends: what a lane's report (`LaneCommand`) or a `$resend` request
//! does to a subscription's stored state, through the outbox's verbs (`ack`, `nack`, `park`),
//! with the audit entries and status changes that go with it. Each is planned as its own
//! commit; a report about another incarnation of the id, or a deleted subscription, plans
//! nothing.

use super::plan::{Plan, View};
use super::{IngestError, LaneCommand, ResendRange, ResendSummary};
use crate::fhir::{Issue, IssueType};
use crate::ops::audit::{self, AuditEntry};
use crate::ops::metrics::metrics;
use crate::outbox::Outbox;
use crate::store::{Resend, SubStatus};

/// Plans a resend of stored events (`$resend`, dead-letter replay) for the lane to carry
/// out. The lane never lets a resend overtake an event not yet accepted or dead-lettered
/// (`channels::lane`): what lies beyond its cursor is resent once delivery got past it.
pub(super) fn plan_resend(
    view: &View<'_>,
    sub: &str,
    range: ResendRange,
    dead_only: bool,
    actor: Option<&str>,
) -> Result<(Plan, ResendSummary), IngestError> {
    let mut lane = view.states.get(sub).cloned().ok_or_else(|| IngestError::NotFound(format!("Subscription/{sub}")))?;
    let (from, until) = match range {
        ResendRange::Numbers { since, until } => {
            (since.unwrap_or(1).max(1), until.unwrap_or(lane.events_since_start).min(lane.events_since_start))
        }
        ResendRange::Instants { since, until } => {
            let mut first = None;
            let mut last = None;
            let mut from = lane.pruned_through + 1;
            loop {
                let page = view.store.events(sub, from, 1000)?;
                let Some(end) = page.last().map(|e| e.number) else { break };
                for e in &page {
                    let after = since.is_none_or(|s| e.timestamp >= s);
                    let before = until.is_none_or(|u| e.timestamp <= u);
                    if after && before {
                        first.get_or_insert(e.number);
                        last = Some(e.number);
                    }
                }
                if until.is_some_and(|u| page.last().is_some_and(|e| e.timestamp > u)) {
                    break;
                }
                from = end + 1;
            }
            match (first, last) {
                (Some(f), Some(l)) => (f, l),
                _ => (1, 0),
            }
        }
    };
    let first_kept = lane.pruned_through + 1;
    if from < first_kept && !dead_only {
        return Err(IngestError::Rejected(vec![Issue::at(
            IssueType::NotFound,
            "eventsSinceNumber",
            format!("events 1 to {} are past retention; events {first_kept} to {} are kept", lane.pruned_through, lane.events_since_start),
        )]));
    }
    let pending = (until > lane.delivered_through).then(|| (lane.delivered_through + 1).max(from));
    let count = if from > until {
        0
    } else if dead_only {
        view.store.dead_letters_in(sub, from, until, usize::MAX)?.len() as u64
    } else {
        until - from + 1
    };
    lane.resends += 1;
    let id = lane.resends;
    lane.resend = (count > 0).then_some(Resend { next: from, until, dead_only, id });
    let mut plan = Plan::default();
    plan.commit.put_sub_state(sub, &lane)?;
    audit::stage(
        view.store,
        &mut plan.commit,
        &AuditEntry::new("resend", actor, "success")
            .subscription(sub)
            .detail("from", from)
            .detail("until", until)
            .detail("events", count)
            .detail("deadLettersOnly", dead_only),
    );
    plan.states.insert(sub.to_string(), lane);
    plan.touch(sub);
    Ok((plan, ResendSummary { from, until, events: count, pending_from: pending }))
}

pub(super) fn plan_lane_result(view: &View<'_>, incarnation: u64, cmd: LaneCommand) -> Option<Plan> {
    let sub = cmd.sub().to_owned();
    let Some(mut lane) = view.states.get(&sub).cloned() else {
        return None; // deleted meanwhile
    };
    if lane.incarnation != incarnation {
        // A lane of a deleted incarnation of this id, reporting an attempt that was in
        // flight across the delete: it says nothing about the events numbered since.
        tracing::debug!(subscription.id = %sub, incarnation, current = lane.incarnation, "lane report for an older incarnation ignored");
        return None;
    }
    let mut plan = Plan::default();
    let result = match cmd {
        LaneCommand::Delivered { through, at, .. } => view.outbox.ack(&mut plan.commit, &sub, &mut lane, through, at),
        LaneCommand::Retry { attempts, next_attempt_at, first_failure_at, .. } => {
            view.outbox.nack(&mut plan.commit, &sub, &mut lane, attempts, next_attempt_at, first_failure_at)
        }
        LaneCommand::Dead { generation, through, attempts, error, .. } => {
            metrics().dead_letters.inc_by(through.saturating_sub(lane.delivered_through));
            audit::stage(
                view.store,
                &mut plan.commit,
                &AuditEntry::herald("dead-letter", "failure")
                    .subscription(sub.clone())
                    .detail("from", lane.delivered_through + 1)
                    .detail("through", through)
                    .detail("attempts", attempts)
                    .detail("error", error.code.clone()),
            );
            let parked = view.outbox.park(&mut plan.commit, &sub, &mut lane, through, attempts, &error);
            // R5 §2.2: delivery failure puts the subscription in error; it stays there
            // (still counting events) until the client asks for a new handshake.
            if lane.generation == generation && lane.status == SubStatus::Active {
                audit::stage(
                    view.store,
                    &mut plan.commit,
                    &AuditEntry::herald("status", "failure").subscription(sub.clone()).detail("from", "active").detail("to", "error"),
                );
                lane.status = SubStatus::Error;
                lane.error = Some(error);
            }
            plan.touch(&sub);
            parked.and_then(|()| plan.commit.put_sub_state(&sub, &lane))
        }
        LaneCommand::Resent { id, through, .. } => match lane.resend.clone() {
            Some(r) if r.id == id => {
                if r.dead_only {
                    match view.store.dead_letters_in(&sub, r.next, through, usize::MAX) {
                        Ok(dead) => {
                            for d in dead {
                                plan.commit.remove_dead(&sub, d.number);
                                lane.dead_count = lane.dead_count.saturating_sub(1);
                            }
                        }
                        Err(e) => tracing::error!(subscription.id = %sub, error = %e, "could not read dead letters after a replay"),
                    }
                }
                lane.resend = (through < r.until).then_some(Resend { next: through + 1, ..r });
                if lane.resend.is_none() {
                    tracing::info!(subscription.id = %sub, "resend finished");
                }
                plan.touch(&sub);
                plan.commit.put_sub_state(&sub, &lane)
            }
            _ => Ok(()),
        },
        LaneCommand::ResendAbandoned { id, error, .. } => match &lane.resend {
            Some(r) if r.id == id => {
                tracing::error!(subscription.id = %sub, reason = %error.text, "resend abandoned; the events stay stored (and dead letters stay dead)");
                lane.resend = None;
                plan.touch(&sub);
                plan.commit.put_sub_state(&sub, &lane)
            }
            _ => Ok(()),
        },
        LaneCommand::Withheld { events, .. } => {
            // Counted once per number: retries and resends render the same events again.
            let mut changed = false;
            for (number, focus_type) in events {
                if number <= lane.withheld_through {
                    continue;
                }
                lane.withheld += 1;
                lane.withheld_through = number;
                changed = true;
                metrics().withheld(&focus_type);
                // The focus id is left out: with the type and the event number an operator
                // finds the resource, and the audit log need not hold what the subscriber
                // was not allowed to see.
                let client = lane.owner.as_deref().unwrap_or("anonymous");
                audit::stage(
                    view.store,
                    &mut plan.commit,
                    &AuditEntry::herald("withheld", "success")
                        .subscription(sub.clone())
                        .detail("client", client)
                        .detail("event", number)
                        .detail("resourceType", focus_type.clone())
                        .detail("reason", "not-authorized"),
                );
            }
            if changed {
                plan.commit.put_sub_state(&sub, &lane)
            } else {
                Ok(())
            }
        }
        LaneCommand::Status { generation, status, error, .. } => {
            if lane.generation == generation && lane.status != status {
                tracing::info!(subscription.id = %sub, from = lane.status.code(), to = status.code(), "subscription status changed");
                audit::stage(
                    view.store,
                    &mut plan.commit,
                    &AuditEntry::herald("status", "success")
                        .subscription(sub.clone())
                        .detail("from", lane.status.code())
                        .detail("to", status.code()),
                );
                lane.status = status;
                lane.error = if status == SubStatus::Active { None } else { error };
                plan.touch(&sub);
                plan.commit.put_sub_state(&sub, &lane)
            } else {
                Ok(())
            }
        }
    };
    if let Err(e) = result {
        tracing::error!(subscription.id = %sub, error = %e, "could not record a delivery result");
        return None;
    }
    plan.states.insert(sub, lane);
    Some(plan)
}
