//! Turning a page of matches into what the client receives: `_include`/`_revinclude`
//! (`:iterate` bounded to three rounds and `max_include` resources), `_elements` and
//! `_summary=data|true|text` on the matches, and the `searchset` Bundle with its links.

use serde_json::{json, Value};

use super::context::StoreContext;
use super::page::{Options, Summary};
use crate::fhir::model::{summary, Model};
use crate::fhir::search::include::{self, IncludeSource};
use crate::fhir::search::{normalize_reference_query, SearchParam};
use crate::fhir::Issue;
use crate::store::index::Probe;
use crate::store::StoreError;

/// One resource in the result: (type, id, resource).
pub type Found = include::Found;

impl IncludeSource for StoreContext<'_> {
    type Error = StoreError;

    fn base_url(&self) -> &str {
        self.base_url
    }

    fn load(&self, resource_type: &str, id: &str) -> Result<Option<Value>, StoreError> {
        StoreContext::load(self, resource_type, id)
    }

    fn referencing(&self, source: &str, param: &SearchParam, target: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let Some(key) = normalize_reference_query(target, self.base_url) else { return Ok(Vec::new()) };
        let mut ids = Vec::new();
        self.store.index_scan(source, &param.code, &Probe::Equal(key), |sid| {
            ids.push(sid.to_owned());
            ids.len() <= limit
        })?;
        Ok(ids)
    }
}

/// Resources `_include` and `_revinclude` add for `matches`, without repeating any match
/// (`:iterate` bounded to [`include::MAX_ITERATE`] rounds and `max` resources).
pub fn includes(
    ctx: &StoreContext<'_>,
    opts: &Options,
    matches: &[Found],
    max: usize,
    notes: &mut Vec<Issue>,
) -> Result<Vec<Found>, StoreError> {
    let expansion = include::expand(ctx, &opts.includes, &opts.revincludes, matches, max)?;
    if expansion.truncated {
        notes.push(Issue::info(format!("_include/_revinclude stopped at {max} resources")));
    }
    Ok(expansion.found)
}

/// `_elements` and `_summary=data|true|text` applied to one match (and to a read or vread,
/// `api::rest`). A resource missing elements is marked SUBSETTED (FHIR search.html#summary).
/// Should the embedded model be unusable, `true` and `text` give the whole resource,
/// unmarked: more than asked for, never less than claimed.
pub fn shape(opts: &Options, mut resource: Value) -> Value {
    let mut subsetted = false;
    if let (Summary::True | Summary::Text, Ok(model)) = (opts.summary, Model::current()) {
        let (shaped, removed) = match opts.summary {
            Summary::Text => summary::summary_text(model, &resource),
            _ => summary::summary_true(model, &resource),
        };
        resource = shaped;
        subsetted = removed;
    }
    let Some(obj) = resource.as_object_mut() else { return resource };
    if opts.summary == Summary::Data {
        subsetted |= obj.remove("text").is_some();
    }
    if let Some(keep) = &opts.elements {
        obj.retain(|k, _| matches!(k.as_str(), "resourceType" | "id" | "meta") || keep.iter().any(|e| e == k));
        subsetted = true;
    }
    if subsetted {
        let meta = obj.entry("meta").or_insert_with(|| json!({}));
        if let Some(m) = meta.as_object_mut() {
            let tags = m.entry("tag").or_insert_with(|| json!([]));
            if let Some(list) = tags.as_array_mut() {
                list.push(json!({ "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED" }));
            }
        }
    }
    resource
}

pub fn entry(base_url: &str, found: &Found, mode: &str) -> Value {
    let (ty, id, resource) = found;
    json!({ "fullUrl": format!("{base_url}/{ty}/{id}"), "resource": resource, "search": { "mode": mode } })
}
