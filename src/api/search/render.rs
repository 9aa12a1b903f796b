//! Turning a page of matches into what the client receives: `_include`/`_revinclude`
//! (`:iterate` bounded to three rounds and `max_include` resources), `_elements` and
//! `_summary=data` on the matches, and the `searchset` Bundle with its links.

use std::collections::{BTreeSet, HashSet};

use serde_json::{json, Value};

use super::context::StoreContext;
use super::page::{Include, Options};
use crate::fhir::search::{normalize_reference_query, reference_matches, ParamType, SearchParam};
use crate::fhir::Issue;
use crate::store::index::extract::indexed_params;
use crate::store::index::Probe;
use crate::store::StoreError;

/// `:iterate` rounds after the first.
const MAX_ITERATE: usize = 3;

/// One resource in the result: (type, id, resource).
pub type Found = (String, String, Value);

fn reference_params(ty: &str, inc: &Include) -> Vec<&'static SearchParam> {
    match inc.param {
        Some(p) => vec![p],
        None => indexed_params(ty).iter().copied().filter(|p| p.kind == ParamType::Reference).collect(),
    }
}

fn reference_strings<'v>(nodes: &[&'v Value]) -> Vec<&'v str> {
    nodes
        .iter()
        .filter_map(|n| n.as_str().or_else(|| n.get("reference").and_then(|r| r.as_str().or_else(|| r.get("reference")?.as_str()))))
        .collect()
}

/// Resources `_include` and `_revinclude` add for `matches`, without repeating any match.
pub fn includes(
    ctx: &StoreContext<'_>,
    opts: &Options,
    matches: &[Found],
    max: usize,
    notes: &mut Vec<Issue>,
) -> Result<Vec<Found>, StoreError> {
    if opts.includes.is_empty() && opts.revincludes.is_empty() {
        return Ok(Vec::new());
    }
    let mut seen: HashSet<String> = matches.iter().map(|(t, i, _)| format!("{t}/{i}")).collect();
    let mut out: Vec<Found> = Vec::new();
    let mut frontier: Vec<Found> = matches.to_vec();
    for round in 0..=MAX_ITERATE {
        let mut added: Vec<Found> = Vec::new();
        let room = max.saturating_sub(out.len());
        let add = |seen: &mut HashSet<String>, ty: String, id: String, r: Value, added: &mut Vec<Found>| -> bool {
            if added.len() >= room {
                return false;
            }
            if seen.insert(format!("{ty}/{id}")) {
                added.push((ty, id, r));
            }
            true
        };
        let mut full = false;
        for (ty, id, resource) in &frontier {
            for inc in opts.includes.iter().filter(|i| (round == 0 || i.iterate) && &i.source == ty) {
                for p in reference_params(ty, inc) {
                    let Ok(nodes) = p.values(ty, resource) else { continue };
                    for reference in reference_strings(&nodes) {
                        let Some((tty, tid)) = ctx.local_target(reference) else { continue };
                        if inc.target.as_ref().is_some_and(|t| t != &tty) || seen.contains(&format!("{tty}/{tid}")) {
                            continue;
                        }
                        if let Some(r) = ctx.load(&tty, &tid)? {
                            full |= !add(&mut seen, tty, tid, r, &mut added);
                        }
                    }
                }
            }
            for inc in opts.revincludes.iter().filter(|i| round == 0 || i.iterate) {
                let Some(p) = inc.param else { continue };
                if inc.target.as_ref().is_some_and(|t| t != ty) {
                    continue;
                }
                let target = format!("{ty}/{id}");
                let Some(key) = normalize_reference_query(&target, ctx.base_url) else { continue };
                let mut ids = BTreeSet::new();
                ctx.store.index_scan(&inc.source, &p.code, &Probe::Equal(key), |sid| {
                    ids.insert(sid.to_owned());
                    ids.len() <= max
                })?;
                for sid in ids {
                    if seen.contains(&format!("{}/{sid}", inc.source)) {
                        continue;
                    }
                    let Some(r) = ctx.load(&inc.source, &sid)? else { continue };
                    if p.values(&inc.source, &r).is_ok_and(|v| reference_matches(&v, &target, ctx.base_url)) {
                        full |= !add(&mut seen, inc.source.clone(), sid, r, &mut added);
                    }
                }
            }
        }
        if full {
            notes.push(Issue::info(format!("_include/_revinclude stopped at {max} resources")));
        }
        out.extend(added.iter().cloned());
        if full || added.is_empty() || !(opts.includes.iter().any(|i| i.iterate) || opts.revincludes.iter().any(|i| i.iterate)) {
            break;
        }
        frontier = added;
    }
    Ok(out)
}

/// `_elements` and `_summary=data` applied to one match.
pub fn shape(opts: &Options, mut resource: Value) -> Value {
    let Some(obj) = resource.as_object_mut() else { return resource };
    if opts.summary_data {
        obj.remove("text");
    }
    if let Some(keep) = &opts.elements {
        obj.retain(|k, _| matches!(k.as_str(), "resourceType" | "id" | "meta") || keep.iter().any(|e| e == k));
        // R5: a resource missing elements is marked SUBSETTED.
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
