//! What writing a SubscriptionTopic or Subscription does beyond storing it: validation, the
//! registry change, and the subscription's server-side status.
//!
//! Status rules (R5 §2.1–2.2, digest items 7, 10–15):
//! - create: `requested` (a handshake follows), or `off` if the client created it off; a
//!   websocket subscription has no REST handshake and is `active` at once (wherever the
//!   rules below say `requested`, a websocket subscription goes to `active`);
//! - update to `requested`, or to `active` from `error`/`off`: back to `requested`, errors
//!   cleared, a new handshake; `off` and `entered-in-error` stop delivery; `error` is
//!   server-owned, so a client writing it changes nothing;
//! - an update that changes where or how notifications go (endpoint, parameters, content
//!   type) while active re-handshakes, so the new endpoint proves it is listening.
//!
//! Every client-driven change bumps `generation`, which makes stale delivery results harmless.
//!
//! The same rules hold for R4/R4B (Backport IG) Subscriptions, parsed by the instance version's
//! parser (`fhir::subscription::parse_subscription`); the stored `status` is written in the
//! version's codes (`SubStatus::code_in`: R4 has no `entered-in-error`, shown as `off`).
//!
//! Secrets: reads show `[redacted]` for header values and signing secrets
//! (`fhir::subscription::secrets`); a write that sends the placeholder back keeps the stored
//! value. This happens here, in the committer, so REST updates and transaction entries alike
//! are covered, against the version the write replaces.

use std::sync::Arc;

use serde_json::{json, Value};

use super::plan::{Plan, RegistryOp, View};
use super::IngestError;
use crate::fhir::instant::now_millis;
use crate::fhir::search::custom::{custom_param, custom_param_replacing};
use crate::fhir::search::{SearchParam, SearchParams};
use crate::fhir::subscription::{
    fill_defaults, parse_subscription, secrets, ChannelType, RequestedStatus, SubscriptionLimits, SubscriptionSpec,
};
use crate::fhir::topic::{stored as stored_topic, TopicSpec};
use crate::fhir::version::instance;
use crate::fhir::FhirVersion;
use crate::fhir::{Issue, IssueType};
use crate::registry::{Registry, SubEntry};
use crate::store::records::StoredGrant;
use crate::store::{SubState, SubStatus};

/// 422 when every issue is a rule or capability refusal, 400 when the resource is malformed.
fn refusal(issues: Vec<Issue>) -> IngestError {
    if issues.iter().all(|i| matches!(i.code, IssueType::NotSupported | IssueType::BusinessRule)) {
        IngestError::Rejected(issues)
    } else {
        IngestError::Invalid(issues)
    }
}

/// Parses and binds a stored subscription at start (its `end` may have passed since; the lane
/// turns it off).
pub(super) fn parse_stored(registry: &Registry, id: &str, resource: &Value, limits: &SubscriptionLimits) -> Result<SubEntry, Vec<Issue>> {
    let spec = parse_subscription(id, resource, limits, i64::MIN)?;
    registry.bind(spec)
}

fn delivery_changed(old: &SubscriptionSpec, new: &SubscriptionSpec) -> bool {
    old.endpoint != new.endpoint || old.headers != new.headers || old.content_type != new.content_type || old.channel != new.channel
}

fn next_state(prev: Option<SubState>, old: Option<&SubscriptionSpec>, new: &SubscriptionSpec) -> SubState {
    // R5 websocket: there is no REST handshake, so what would wait in `requested` is `active`
    // at once; each socket bind gets its handshake instead (digest §2.1 item 8, §4).
    let websocket = new.channel == ChannelType::Websocket;
    let Some(mut state) = prev else {
        let status = match new.requested_status {
            RequestedStatus::Off => SubStatus::Off,
            _ if websocket => SubStatus::Active,
            _ => SubStatus::Requested,
        };
        return SubState::new(status);
    };
    let target = match (new.requested_status, state.status) {
        (RequestedStatus::Off, _) => SubStatus::Off,
        (RequestedStatus::EnteredInError, _) => SubStatus::EnteredInError,
        (RequestedStatus::Requested, _) => SubStatus::Requested,
        (RequestedStatus::Active, SubStatus::Active) => {
            if old.is_some_and(|o| delivery_changed(o, new)) {
                SubStatus::Requested
            } else {
                SubStatus::Active
            }
        }
        (RequestedStatus::Active, _) => SubStatus::Requested,
        (RequestedStatus::Error, current) => current,
    };
    let restart = target == SubStatus::Requested;
    let target = if websocket && restart { SubStatus::Active } else { target };
    let client_asked = target != state.status || new.requested_status == RequestedStatus::Requested;
    if client_asked {
        state.generation += 1;
        state.status = target;
        if restart {
            state.error = None;
            state.attempts = 0;
            state.next_attempt_at = None;
            state.first_failure_at = None;
        }
    }
    state
}

/// `stored` is the live version the write replaces, if any; `seq` the version being written.
pub(super) fn on_write(
    view: &View<'_>,
    plan: &mut Plan,
    ty: &str,
    id: &str,
    resource: &mut Value,
    stored: Option<&Value>,
    seq: u64,
) -> Result<(), IngestError> {
    match ty {
        ty if ty == stored_topic::topic_type(instance()) => on_topic_write(view, plan, ty, id, resource)?,
        "SearchParameter" => {
            let params =
                SearchParams::current().map_err(|e| IngestError::Invalid(vec![Issue::new(IssueType::Exception, e.to_string())]))?;
            let stored = stored_url(view, ty, id);
            let param = custom_param_replacing(resource, params, stored.as_deref()).map_err(refusal)?;
            if let Some(old) = stored.as_deref() {
                let same = |p: &SearchParam| {
                    p.url == param.url
                        && p.code == param.code
                        && p.base == param.base
                        && p.kind == param.kind
                        && p.expression == param.expression
                };
                if params.custom_params().iter().any(|p| p.url == old && !same(p)) {
                    refuse_if_bound(view, ty, id, old)?;
                }
            }
            // A new url for the same resource: the old definition goes away.
            if let Some(old_url) = stored.filter(|u| *u != param.url) {
                plan.registry_ops.push(RegistryOp::RemoveSearchParam { id: id.to_string(), url: old_url });
            }
            plan.registry_ops.push(RegistryOp::PutSearchParam { id: id.to_string(), param: Box::new(param) });
        }
        "Subscription" => {
            let current = view.state(plan, id);
            check_owner(view, current.as_ref(), plan.actor.as_deref(), id)?;
            if current.is_none() && view.purging(id) {
                return Err(IngestError::Conflict(format!(
                    "Subscription/{id} was deleted and its events are still being removed; create it again shortly"
                )));
            }
            let managing = resource.pointer("/managingEntity/reference").and_then(Value::as_str).map(str::to_owned);
            if let (Some(m), Some(actor)) = (managing.as_deref(), plan.actor.as_deref()) {
                if view.cfg.entities.is_mapped(m) && !view.cfg.entities.member(m, actor) {
                    return Err(IngestError::Forbidden(format!("client {actor} does not act for {m}, the managingEntity")));
                }
            }
            secrets::keep_stored(resource, stored).map_err(refusal)?;
            let spec = parse_subscription(id, resource, &view.cfg.limits, now_millis()).map_err(refusal)?;
            let entry = view.registry.bind(spec).map_err(refusal)?;
            if let (Some(grant), Some(topic)) = (plan.grant.as_ref(), view.registry.topic(&entry.topic_id)) {
                check_topic_readable(grant, topic)?;
            }
            let old = view.registry.subscription(id).map(|e| &e.spec);
            let created = current.is_none();
            let mut state = next_state(current, old, &entry.spec);
            if created {
                // A new life of this id (first create, or after a delete): named by the
                // version that begins it, which no later create of the id can repeat.
                state.incarnation = seq;
            }
            if state.owner.is_none() {
                state.owner = plan.actor.clone();
            }
            state.managing_entity = managing;
            // The grant of the last create or update by its owner is what send-time checks
            // use (an API key's is looked up again in the configuration then). Writes without
            // a client (anonymous, Herald's own) keep what was recorded.
            if plan.grant.is_some() && plan.actor.is_some() && state.owner == plan.actor {
                state.grant = plan.grant.clone();
            }
            if let Some(obj) = resource.as_object_mut() {
                obj.insert("status".into(), json!(state.status.code_in(entry.spec.version)));
            }
            fill_defaults(resource, &entry.spec);
            plan.commit.put_sub_state(id, &state)?;
            plan.states.insert(id.to_string(), state);
            plan.registry_ops.push(RegistryOp::PutSub(Arc::new(entry)));
            plan.touch(id);
        }
        _ => {}
    }
    Ok(())
}

/// A write of the type topics are stored as (`fhir::topic::stored`): a topic goes into the
/// registry; in R4, a `Basic` that is not (or no longer) coded as a topic is a plain resource
/// and takes its id out of the registry if it was one.
///
/// An R4 `Basic` that is coded as a topic but does not convert or validate is refused with
/// 422: it is valid R4, but not a topic Herald can run (FHIR's "violates profiles or business
/// rules"). R4B and R5 topics keep the R5 rule (400 for a malformed element, 422 for a
/// business rule), since their elements are FHIR's own.
fn on_topic_write(view: &View<'_>, plan: &mut Plan, ty: &str, id: &str, resource: &Value) -> Result<(), IngestError> {
    let version = instance();
    match stored_topic::parse_stored(version, ty, id, resource) {
        Some(Ok(topic)) => plan.registry_ops.push(RegistryOp::PutTopic(topic)),
        Some(Err(issues)) if version == FhirVersion::R4 => return Err(IngestError::Rejected(issues)),
        Some(Err(issues)) => return Err(refusal(issues)),
        None if view.registry.topic(id).is_some() => remove_topic(view, plan, ty, id)?,
        None => {}
    }
    Ok(())
}

/// A topic leaves the registry (deleted, or in R4 no longer coded as one); refused while
/// subscriptions still name it.
fn remove_topic(view: &View<'_>, plan: &mut Plan, ty: &str, id: &str) -> Result<(), IngestError> {
    let n = view.registry.subscriber_count(id);
    if n > 0 {
        return Err(IngestError::Conflict(format!("{ty}/{id} is a topic that still has {n} subscription(s); delete or move them first")));
    }
    plan.registry_ops.push(RegistryOp::RemoveTopic(id.to_string()));
    Ok(())
}

/// Authorization at creation (digest §6.1): a subscription is a request for future reads of
/// what its topic notifies about, so its owner must be able to read (or search) at least one
/// of the topic's resource types; otherwise every event would be withheld. Which resources of
/// those types it may see is checked again per event at send time (`notify::withhold`).
fn check_topic_readable(grant: &StoredGrant, topic: &TopicSpec) -> Result<(), IngestError> {
    let Ok(scopes) = crate::auth::Scopes::parse(&grant.scopes) else {
        return Err(IngestError::Forbidden("the client's scopes could not be read".into()));
    };
    let types = topic.triggers.iter().map(|t| t.resource.as_str()).chain(topic.event_triggers.iter().map(|t| t.resource.as_str()));
    let mut named = Vec::new();
    for ty in types {
        if [crate::auth::Perm::Read, crate::auth::Perm::Search].into_iter().any(|p| scopes.allows(ty, p)) {
            return Ok(());
        }
        named.push(ty);
    }
    if named.is_empty() {
        return Ok(());
    }
    Err(IngestError::Forbidden(format!(
        "the client may not read {} resources, which topic {} notifies about",
        named.join(" or "),
        topic.url
    )))
}

/// A Subscription another client owns may not be changed, unless the caller acts for its
/// managing entity (anonymous writes, possible only when no authentication is configured, and
/// Herald's own writes are not checked). To anyone else it does not exist: "not found", as
/// every read and operation answers them, so that no answer tells its id is taken.
fn check_owner(view: &View<'_>, state: Option<&SubState>, actor: Option<&str>, id: &str) -> Result<(), IngestError> {
    match (state, actor) {
        (Some(s), Some(actor)) if !view.cfg.entities.may_manage(s.owner.as_deref(), s.managing_entity.as_deref(), actor) => {
            Err(IngestError::NotFound(format!("Subscription/{id}")))
        }
        _ => Ok(()),
    }
}

pub(super) fn on_delete(view: &View<'_>, plan: &mut Plan, ty: &str, id: &str) -> Result<(), IngestError> {
    match ty {
        ty if ty == stored_topic::topic_type(instance()) => remove_topic(view, plan, ty, id)?,
        "Subscription" => {
            check_owner(view, view.state(plan, id).as_ref(), plan.actor.as_deref(), id)?;
            plan.commit.remove_sub_state(id);
            // A long backlog is removed in bounded commits after this one (`purge_step`).
            if !plan.commit.purge_outbox(view.store, id, view.purge_batch())? {
                plan.purging.push(id.to_string());
            }
            plan.registry_ops.push(RegistryOp::RemoveSub(id.to_string()));
            plan.removed.push(id.to_string());
        }
        "SearchParameter" => {
            if let Some(url) = stored_url(view, ty, id) {
                refuse_if_bound(view, ty, id, &url)?;
                plan.registry_ops.push(RegistryOp::RemoveSearchParam { id: id.to_string(), url });
            }
        }
        _ => {}
    }
    Ok(())
}

/// A SearchParameter that subscription filters are bound to keeps its definition (url, code,
/// base, type, expression) while they are: changing or deleting it would leave them bound to
/// what no longer exists, and a restart would bind them differently. Refused with 409, as a
/// topic's delete is while subscriptions name it.
fn refuse_if_bound(view: &View<'_>, ty: &str, id: &str, url: &str) -> Result<(), IngestError> {
    let n = view.registry.subscriptions().filter(|e| e.filters.iter().any(|f| f.params.iter().any(|(_, p)| p.url == url))).count();
    if n > 0 {
        return Err(IngestError::Conflict(format!(
            "{ty}/{id} defines a search parameter that {n} subscription filter(s) use; change or delete those subscriptions first"
        )));
    }
    Ok(())
}

/// The `url` of the stored current version of a resource, if any.
fn stored_url(view: &View<'_>, ty: &str, id: &str) -> Option<String> {
    let record = view.store.latest(ty, id).ok().flatten().filter(|r| !r.deleted)?;
    record.resource?.get("url").and_then(Value::as_str).map(str::to_owned)
}

/// Registers the stored SearchParameters at start, before topics and subscriptions that may
/// name them are parsed. One that no longer checks is logged and skipped.
pub(super) fn load_search_params(store: &crate::store::Store) -> Result<(), IngestError> {
    let Ok(params) = SearchParams::current() else { return Ok(()) };
    for (id, cur) in store.list_current("SearchParameter", None, usize::MAX)? {
        if cur.deleted {
            continue;
        }
        let Some(resource) = store.version("SearchParameter", &id, cur.seq)?.and_then(|r| r.resource) else { continue };
        match custom_param(&resource, params) {
            Ok(param) => params.register_custom(param),
            Err(issues) => {
                let text = issues.first().map(|i| i.diagnostics.clone()).unwrap_or_default();
                tracing::error!(resource.id = %id, reason = %text, "stored SearchParameter no longer valid; not registered");
            }
        }
    }
    Ok(())
}
