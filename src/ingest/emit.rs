//! Planning an emitted business event (`POST /fhir/SubscriptionTopic/$emit`): its focus
//! (stored first when the event carries it), its context at their current versions, then
//! its events (`events::emitted`).

use super::events::{self, Focus};
use super::plan::{Plan, View};
use super::{write, EmitResult, EmittedEvent, EventFocus, IngestError, WriteMethod};
use crate::fhir::instant::Millis;
use crate::fhir::{Issue, IssueType};
use crate::matching::TopicEvent;
use crate::store::ContextRef;

/// Emitted events: the focus (stored first if sent), the context, then as any event.
pub(super) fn plan_emit(view: &View<'_>, plan: &mut Plan, ev: &EmittedEvent, now: Millis) -> Result<EmitResult, IngestError> {
    let record = match &ev.focus {
        EventFocus::Write(entry) => {
            if entry.method == WriteMethod::Delete {
                return Err(IngestError::Invalid(vec![Issue::at(IssueType::Invalid, "focus", "an event's focus cannot be a delete")]));
            }
            write::plan_entry(view, plan, entry.clone(), now)?.record
        }
        EventFocus::Stored { resource_type, id } => {
            let missing = || IngestError::NotFound(format!("{resource_type}/{id}"));
            let latest = view.store.latest(resource_type, id)?.filter(|l| !l.deleted).ok_or_else(missing)?;
            view.store.version(resource_type, id, latest.seq)?.ok_or_else(missing)?
        }
    };
    let Some(focus_value) = record.resource.as_ref() else {
        return Err(IngestError::NotFound(format!("{}/{}", record.resource_type, record.id)));
    };
    let mut given = Vec::with_capacity(ev.context.len());
    for (i, (ty, id)) in ev.context.iter().enumerate() {
        match view.store.latest(ty, id)? {
            Some(l) if !l.deleted => given.push(ContextRef { resource_type: ty.clone(), id: id.clone(), seq: l.seq }),
            _ if ty == &record.resource_type && id == &record.id => {}
            _ => {
                return Err(IngestError::Invalid(vec![Issue::at(
                    IssueType::NotFound,
                    format!("Parameters.parameter[context][{i}]"),
                    format!("{ty}/{id} is not a resource Herald holds"),
                )]))
            }
        }
    }
    let event = TopicEvent {
        system: &ev.system,
        code: &ev.code,
        resource_type: &record.resource_type,
        id: &record.id,
        filter_subject: Some(focus_value),
    };
    let (notified, topics) = events::emitted(view, plan, &event, Focus::of(&record), &given, now)?;
    Ok(EmitResult { focus: record.clone(), notified, topics })
}
