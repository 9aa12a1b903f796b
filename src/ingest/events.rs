//! Enqueuing events: one function, `enqueue`, turns a match report into numbered outbox
//! events for every kind of event: a resource change matched against topics' triggers
//! (`matched`), an emitted business event (`emit`), and the `output-modified` events a
//! Provenance records (`output_modified`). Each event records the versions it saw: its focus,
//! the context it was given, then its topic's notificationShape context.

use std::collections::HashMap;

use serde_json::Value;

use super::plan::{Plan, View};
use super::resolver::{CommitResolver, SeenChange};
use super::{outputs, IngestError};
use crate::fhir::instant::Millis;
use crate::fhir::topic::Interaction;
use crate::matching::{match_change, MatchReport, TopicEvent};
use crate::ops::metrics::metrics;
use crate::outbox::{EventDraft, Outbox};
use crate::store::{ContextRef, VersionRecord};

/// The version an event is about.
#[derive(Clone, Copy)]
pub(super) struct Focus<'r> {
    pub resource_type: &'r str,
    pub id: &'r str,
    pub seq: u64,
    /// Its content (`None`: a delete), for notificationShape context.
    pub resource: Option<&'r Value>,
}

impl<'r> Focus<'r> {
    pub(super) fn of(record: &'r VersionRecord) -> Self {
        Focus { resource_type: &record.resource_type, id: &record.id, seq: record.seq, resource: record.resource.as_ref() }
    }
}

/// Counts a match report in the metrics: each topic that fired once, each event.
fn count_matches(report: &MatchReport) {
    if report.matches.is_empty() {
        return;
    }
    let m = metrics();
    let mut last: Option<&str> = None;
    for matched in &report.matches {
        let label = m.topic_label(&matched.topic_url);
        if last != Some(matched.topic_url.as_str()) {
            m.topic_triggers.get_or_create(&label).inc();
            last = Some(&matched.topic_url);
        }
        m.events.get_or_create(&label).inc();
    }
}

/// Enqueues one event per match in `report`, each subscription's next number, about `focus`;
/// each carries `given` then what its topic's notificationShape adds (resolved once per
/// topic). Returns how many subscriptions were notified and the urls of the topics that fired.
pub(super) fn enqueue(
    view: &View<'_>,
    plan: &mut Plan,
    report: MatchReport,
    focus: Focus<'_>,
    interaction: &str,
    given: &[ContextRef],
    now: Millis,
) -> Result<(usize, Vec<String>), IngestError> {
    for d in &report.diagnostics {
        tracing::warn!(resource.type = %focus.resource_type, diagnostic = %d, "matching.filter_error");
    }
    count_matches(&report);
    let mut contexts: HashMap<String, Vec<ContextRef>> = HashMap::new();
    let mut topics: Vec<String> = Vec::new();
    let mut notified = 0;
    for m in report.matches {
        let Some(mut lane) = view.state(plan, &m.subscription_id) else { continue };
        if !contexts.contains_key(&m.topic_id) {
            let mut context = given.to_vec();
            if let (Some(topic), Some(resource)) = (view.registry.topic(&m.topic_id), focus.resource) {
                let shaped = super::context::event_context(
                    view.store,
                    view.pending(plan),
                    &view.cfg.base_url,
                    topic,
                    (focus.resource_type, focus.id, resource),
                )?;
                for c in shaped {
                    if !context.contains(&c) {
                        context.push(c);
                    }
                }
            }
            contexts.insert(m.topic_id.clone(), context);
            topics.push(m.topic_url.clone());
        }
        let draft = EventDraft {
            timestamp: now,
            topic: &m.topic_url,
            interaction,
            focus_type: focus.resource_type,
            focus_id: focus.id,
            focus_seq: focus.seq,
            context: contexts.get(&m.topic_id).map(Vec::as_slice).unwrap_or_default(),
        };
        view.outbox.enqueue(&mut plan.commit, &m.subscription_id, &mut lane, draft)?;
        plan.states.insert(m.subscription_id.clone(), lane);
        plan.touch(&m.subscription_id);
        notified += 1;
    }
    Ok((notified, topics))
}

/// The events a stored change matches (resource triggers), matched as seen: a Subscription
/// without its secrets (`resolver` module doc).
pub(super) fn matched(
    view: &View<'_>,
    plan: &mut Plan,
    record: &VersionRecord,
    interaction: Interaction,
    previous: Option<&Value>,
    now: Millis,
) -> Result<(), IngestError> {
    let seen = SeenChange::new(record, interaction, previous);
    let change = seen.change();
    let report = {
        let resolver = CommitResolver::new(view.store, view.pending(plan), &view.cfg.base_url);
        let resolver_ref = &resolver;
        match_change(&change, view.registry, &view.cfg.base_url, Some(&resolver_ref), |sub| {
            view.state(plan, sub).is_some_and(|s| s.status.counts_events())
        })
    };
    enqueue(view, plan, report, Focus::of(record), interaction.code(), &[], now)?;
    Ok(())
}

/// Enqueues an `eventTrigger` event for the subscriptions it matches. Filters see a
/// Subscription focus without its secrets, as changes are matched.
pub(super) fn emitted(
    view: &View<'_>,
    plan: &mut Plan,
    event: &TopicEvent<'_>,
    focus: Focus<'_>,
    given: &[ContextRef],
    now: Millis,
) -> Result<(usize, Vec<String>), IngestError> {
    let subject = event.filter_subject.map(crate::fhir::subscription::secrets::redacted);
    let event = &TopicEvent { filter_subject: subject.as_deref(), ..*event };
    let report = crate::matching::match_event(event, view.registry, &view.cfg.base_url, |sub| {
        view.state(plan, sub).is_some_and(|s| s.status.counts_events())
    });
    enqueue(view, plan, report, focus, "event", given, now)
}

/// The `output-modified` events a Provenance records (`ingest::outputs`).
pub(super) fn output_modified(view: &View<'_>, plan: &mut Plan, provenance: &VersionRecord, now: Millis) -> Result<(), IngestError> {
    let Some(resource) = provenance.resource.as_ref() else { return Ok(()) };
    let found = outputs::detect(view.store, view.pending(plan), &view.cfg.base_url, resource)?;
    for modified in found {
        let event = TopicEvent {
            system: outputs::EVENT_SYSTEM,
            code: outputs::EVENT_CODE,
            resource_type: &modified.resource_type,
            id: &modified.id,
            filter_subject: Some(&modified.first),
        };
        // The Provenance first, then the Tasks listing the output.
        let mut given = vec![ContextRef { resource_type: "Provenance".into(), id: provenance.id.clone(), seq: provenance.seq }];
        given.extend(modified.tasks.iter().cloned());
        let focus = Focus { resource_type: &modified.resource_type, id: &modified.id, seq: modified.seq, resource: Some(&modified.focus) };
        emitted(view, plan, &event, focus, &given, now)?;
    }
    Ok(())
}
