//! R4B topics: the R4B (4.3.0) `SubscriptionTopic` resource, converted to and from the
//! R5-shaped JSON `parse_topic` reads.
//!
//! The two resources differ in little (compared element by element with the R4B
//! StructureDefinition): R4B has no `name`, `versionAlgorithm[x]`, `copyrightLabel` and no
//! `canFilterBy.comparator`; its `canFilterBy.modifier` codes (`subscription-search-modifier`)
//! mix comparators (`eq`, `gt`, ...) with modifiers (`above`, `below`, `in`, `not-in`,
//! `of-type`) and `=` for plain equality. Everything else has the same name, type and
//! cardinality.
//!
//! R4B → R5 splits the modifier list into R5's `comparator` and `modifier`. R5 → R4B writes
//! comparators and the R4B modifiers into `modifier`; what R4B cannot say (`name`,
//! `versionAlgorithm[x]`, `copyrightLabel`, modifiers such as `not` that the R4B value set
//! lacks) travels as the R5 cross-version extension on the element it belongs to
//! (`http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic.<path>`), which
//! R4B → R5 reads back, so a round trip loses nothing.

use serde_json::{json, Map, Value};

use super::elements::{split_r4b_modifiers, COMPARATORS, R4B_MODIFIERS};
use crate::fhir::{Issue, IssueType};

const XV: &str = "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic.";

/// Top-level R5 elements R4B lacks, with their cross-version extension value type.
const R5_ONLY: [(&str, &str); 3] = [("name", "String"), ("copyrightLabel", "String"), ("versionAlgorithm", "")];

/// Appends `more` to `obj.extension`.
fn push_extensions(obj: &mut Map<String, Value>, more: Vec<Value>) {
    match obj.get_mut("extension") {
        Some(Value::Array(a)) => a.extend(more),
        _ => {
            obj.insert("extension".into(), Value::Array(more));
        }
    }
}

/// Removes the extensions of `obj` whose url is `XV` + `path` + one of `names`, returning
/// (name, value key, value) for each. Other extensions stay (an extension that is not a
/// modifier may be ignored).
fn take_cross_version(obj: &mut Map<String, Value>, path: &str, names: &[&str]) -> Vec<(String, String, Value)> {
    let prefix = format!("{XV}{path}");
    let Some(Value::Array(list)) = obj.remove("extension") else { return Vec::new() };
    let mut taken = Vec::new();
    let mut kept = Vec::new();
    for ext in list {
        let name = ext.get("url").and_then(Value::as_str).and_then(|u| u.strip_prefix(&prefix)).map(str::to_owned);
        let value = ext.as_object().and_then(|o| o.iter().find(|(k, _)| k.starts_with("value")).map(|(k, v)| (k.clone(), v.clone())));
        match (name, value) {
            (Some(name), Some((key, v))) if names.contains(&name.as_str()) => taken.push((name, key, v)),
            _ => kept.push(ext),
        }
    }
    if !kept.is_empty() {
        obj.insert("extension".into(), Value::Array(kept));
    }
    taken
}

/// The R5-shaped topic an R4B `SubscriptionTopic` is.
pub fn to_r5(topic: &Value) -> Result<Value, Vec<Issue>> {
    let Some(obj) = topic.as_object() else {
        return Err(vec![Issue::new(IssueType::Structure, "a topic must be a JSON object")]);
    };
    let mut out = obj.clone();
    let names: Vec<&str> = R5_ONLY.iter().map(|(n, _)| *n).collect();
    for (name, key, value) in take_cross_version(&mut out, "", &names) {
        if name == "versionAlgorithm" {
            out.insert(format!("versionAlgorithm{}", key.trim_start_matches("value")), value);
        } else {
            out.insert(name, value);
        }
    }
    let mut issues = Vec::new();
    if let Some(Value::Array(filters)) = out.get_mut("canFilterBy") {
        for (i, f) in filters.iter_mut().enumerate() {
            let Some(f) = f.as_object_mut() else {
                issues.push(Issue::at(IssueType::Structure, format!("SubscriptionTopic.canFilterBy[{i}]"), "expected an object"));
                continue;
            };
            split_r4b_modifiers(f);
            for (name, _, value) in take_cross_version(f, "canFilterBy.", &["comparator", "modifier"]) {
                match f.entry(name).or_insert_with(|| Value::Array(Vec::new())) {
                    Value::Array(a) => a.push(value),
                    other => *other = Value::Array(vec![value]),
                }
            }
        }
    }
    if issues.is_empty() {
        Ok(Value::Object(out))
    } else {
        Err(issues)
    }
}

/// The R4B `SubscriptionTopic` form of an R5-shaped topic.
pub fn from_r5(topic: &Value) -> Result<Value, Vec<Issue>> {
    let Some(obj) = topic.as_object() else {
        return Err(vec![Issue::new(IssueType::Structure, "a topic must be a JSON object")]);
    };
    let mut out = obj.clone();
    let mut carried = Vec::new();
    for (name, ty) in R5_ONLY {
        if name == "versionAlgorithm" {
            for t in ["String", "Coding"] {
                if let Some(v) = out.remove(&format!("versionAlgorithm{t}")) {
                    carried.push(json!({ "url": format!("{XV}versionAlgorithm"), format!("value{t}"): v }));
                }
            }
        } else if let Some(v) = out.remove(name) {
            carried.push(json!({ "url": format!("{XV}{name}"), format!("value{ty}"): v }));
        }
    }
    if !carried.is_empty() {
        push_extensions(&mut out, carried);
    }
    if let Some(Value::Array(filters)) = out.get_mut("canFilterBy") {
        for f in filters.iter_mut().filter_map(Value::as_object_mut) {
            let comparators = match f.remove("comparator") {
                Some(Value::Array(c)) => c,
                _ => Vec::new(),
            };
            let modifiers = match f.remove("modifier") {
                Some(Value::Array(m)) => m,
                _ => Vec::new(),
            };
            let mut codes = Vec::new();
            let mut extra = Vec::new();
            for c in comparators {
                if c.as_str().is_some_and(|c| COMPARATORS.contains(&c)) {
                    codes.push(c);
                } else {
                    extra.push(json!({ "url": format!("{XV}canFilterBy.comparator"), "valueCode": c }));
                }
            }
            for m in modifiers {
                if m.as_str().is_some_and(|m| R4B_MODIFIERS.contains(&m)) {
                    codes.push(m);
                } else {
                    extra.push(json!({ "url": format!("{XV}canFilterBy.modifier"), "valueCode": m }));
                }
            }
            if !codes.is_empty() {
                f.insert("modifier".into(), Value::Array(codes));
            }
            if !extra.is_empty() {
                push_extensions(f, extra);
            }
        }
    }
    Ok(Value::Object(out))
}
