//! R4 topics: a `Basic` resource whose `code` is `SubscriptionTopic` (system
//! `http://hl7.org/fhir/fhir-types`) carrying the R5 elements as cross-version extensions, as
//! the Subscriptions Backport IG (1.2.0 guidance) publishes R4 topics. Converted to and from
//! the R5-shaped JSON `parse_topic` reads.
//!
//! Each R5 element is an extension `http://hl7.org/fhir/5.0/StructureDefinition/extension-
//! SubscriptionTopic.<element>`; backbone elements are complex extensions whose children are
//! sub-extensions named by the bare child name (`resource`, `queryCriteria`, ...). `status`
//! is a modifier extension. The IG's own example mixes the `5.0` namespace with the R4B
//! (`4.3`) one, so both are read; Herald writes `5.0`. An R4B-style `modifier` list (with
//! comparators in it) is split as R5 does (`elements::split_r4b_modifiers`).
//!
//! Reading is strict where a wrong guess would change what a topic means: an unknown
//! element of the topic, a repeated single element, a value of the wrong JSON kind, or a
//! modifier extension Herald does not understand is refused with the extension at fault.
//! Other extensions (another IG's, like `backport-related-query`) are kept on the element
//! they sit on.

use serde_json::{json, Map, Value};

use super::elements::{find, split_r4b_modifiers, Element, Shape, TOPIC};
use crate::fhir::{Issue, IssueType};

/// `Basic.code` system and code that make a Basic a topic.
pub const CODE_SYSTEM: &str = "http://hl7.org/fhir/fhir-types";
pub const CODE: &str = "SubscriptionTopic";

/// The namespace Herald writes, and the ones it reads.
const WRITE_PREFIX: &str = "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic.";
const READ_PREFIXES: [&str; 2] = [WRITE_PREFIX, "http://hl7.org/fhir/4.3/StructureDefinition/extension-SubscriptionTopic."];

/// `Basic` elements that mean the same on the topic and are carried over as they are.
const SHARED: [&str; 5] = ["id", "meta", "implicitRules", "language", "text"];

/// Whether a `Basic` is a topic: a `code.coding` with code `SubscriptionTopic` in the
/// fhir-types system (or with no system).
pub fn is_topic(basic: &Value) -> bool {
    basic.pointer("/code/coding").and_then(Value::as_array).into_iter().flatten().any(|c| {
        c.get("code").and_then(Value::as_str) == Some(CODE) && c.get("system").and_then(Value::as_str).is_none_or(|s| s == CODE_SYSTEM)
    })
}

/// The R5 element a top-level extension url names, if it is a SubscriptionTopic one.
fn element_name(url: &str) -> Option<&str> {
    READ_PREFIXES.iter().find_map(|p| url.strip_prefix(p))
}

/// The `value[x]` of an extension: its key suffix (`Uri`) and value.
fn value_of(ext: &Map<String, Value>) -> Option<(&str, &Value)> {
    ext.iter().find_map(|(k, v)| k.strip_prefix("value").filter(|t| !t.is_empty()).map(|t| (t, v)))
}

/// Whether a JSON value has the kind a FHIR type is written in.
fn kind_fits(ty: &str, v: &Value) -> bool {
    match ty {
        "Boolean" => v.is_boolean(),
        "Integer" | "UnsignedInt" | "PositiveInt" | "Decimal" => v.is_number(),
        "String" | "Uri" | "Url" | "Canonical" | "Code" | "Markdown" | "Id" | "DateTime" | "Date" | "Instant" => v.is_string(),
        _ => v.is_object(),
    }
}

/// Reads the extensions of one level (`list`, at `path`) into `out`, following `table`.
fn read_level(list: &[Value], table: &'static [Element], top: bool, path: &str, out: &mut Map<String, Value>, issues: &mut Vec<Issue>) {
    for (i, ext) in list.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let Some(obj) = ext.as_object() else {
            issues.push(Issue::at(IssueType::Structure, at, "an extension must be a JSON object"));
            continue;
        };
        let Some(url) = obj.get("url").and_then(Value::as_str) else {
            issues.push(Issue::at(IssueType::Required, format!("{at}.url"), "an extension needs its url"));
            continue;
        };
        let name = if top { element_name(url) } else { Some(url).filter(|u| !u.contains(':')) };
        let Some(name) = name else {
            // Another IG's extension: kept where it was.
            push_array(out, "extension", ext.clone());
            continue;
        };
        let Some(element) = find(table, name) else {
            issues.push(Issue::at(IssueType::Value, format!("{at}.url"), format!("'{name}' is not an element of SubscriptionTopic here")));
            continue;
        };
        let value = match element.shape {
            Shape::Backbone(children) => {
                if value_of(obj).is_some() {
                    issues.push(Issue::at(
                        IssueType::Structure,
                        at.clone(),
                        format!("'{name}' is a complex extension; it takes sub-extensions, not a value"),
                    ));
                    continue;
                }
                let mut inner = Map::new();
                let subs = obj.get("extension").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
                read_level(subs, children, false, &format!("{at}.extension"), &mut inner, issues);
                if name == "canFilterBy" {
                    split_r4b_modifiers(&mut inner);
                    // fhir-candle's R4 topics (the only computable US Core patient-data-feed)
                    // write `*` for "any type"; R5 says that by leaving `resource` out.
                    if inner.get("resource").and_then(Value::as_str) == Some("*") {
                        inner.remove("resource");
                    }
                }
                Value::Object(inner)
            }
            Shape::Typed(ty) => match value_of(obj) {
                Some((_, v)) if kind_fits(ty, v) => v.clone(),
                Some((found, _)) => {
                    issues.push(Issue::at(IssueType::Value, at, format!("'{name}' takes a value{ty}, not a value{found} of another kind")));
                    continue;
                }
                None => {
                    issues.push(Issue::at(IssueType::Required, at, format!("'{name}' needs a value{ty}")));
                    continue;
                }
            },
            Shape::Choice(types) => match value_of(obj) {
                Some((found, v)) if types.contains(&found) && kind_fits(found, v) => {
                    if out.keys().any(|k| k.strip_prefix(name).is_some_and(|t| types.contains(&t))) {
                        issues.push(Issue::at(IssueType::Structure, at, format!("'{name}' may appear once")));
                    } else {
                        out.insert(format!("{name}{found}"), v.clone());
                    }
                    continue;
                }
                _ => {
                    issues.push(Issue::at(IssueType::Value, at, format!("'{name}' takes a value of one of {types:?}")));
                    continue;
                }
            },
        };
        if element.repeats {
            push_array(out, name, value);
        } else if out.contains_key(name) {
            issues.push(Issue::at(IssueType::Structure, at, format!("'{name}' may appear once")));
        } else {
            out.insert(name.to_owned(), value);
        }
    }
}

fn push_array(out: &mut Map<String, Value>, key: &str, value: Value) {
    match out.entry(key.to_owned()).or_insert_with(|| Value::Array(Vec::new())) {
        Value::Array(a) => a.push(value),
        other => *other = Value::Array(vec![value]),
    }
}

/// The R5-shaped topic a topic `Basic` carries. The caller checked [`is_topic`].
pub fn to_r5(basic: &Value) -> Result<Value, Vec<Issue>> {
    let mut issues = Vec::new();
    let mut out = Map::new();
    out.insert("resourceType".into(), json!("SubscriptionTopic"));
    for key in SHARED {
        if let Some(v) = basic.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    let list = |key: &str| basic.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    read_level(list("extension"), TOPIC, true, "Basic.extension", &mut out, &mut issues);
    // Modifier extensions: `status` is one (it changes what the topic means); any other is
    // one Herald does not understand, and so may not ignore.
    for (i, ext) in list("modifierExtension").iter().enumerate() {
        let at = format!("Basic.modifierExtension[{i}]");
        let url = ext.get("url").and_then(Value::as_str).unwrap_or_default();
        if element_name(url) != Some("status") {
            issues.push(Issue::at(IssueType::NotSupported, at, format!("modifier extension '{url}' is not understood here")));
            continue;
        }
        match ext.get("valueCode").and_then(Value::as_str) {
            Some(code) if !out.contains_key("status") => {
                out.insert("status".into(), json!(code));
            }
            Some(_) => issues.push(Issue::at(IssueType::Structure, at, "'status' may appear once")),
            None => issues.push(Issue::at(IssueType::Required, at, "'status' needs a valueCode")),
        }
    }
    if issues.is_empty() {
        Ok(Value::Object(out))
    } else {
        Err(issues)
    }
}

/// Writes the children of one R5 level (`obj`) as extensions, following `table`; the
/// level's own `extension` entries (another IG's) come after them.
fn write_level(obj: &Map<String, Value>, table: &'static [Element], top: bool, path: &str, issues: &mut Vec<Issue>) -> Vec<Value> {
    let mut out = Vec::new();
    for (key, value) in obj {
        let (element, ty) = match find(table, key) {
            Some(e) => (e, None),
            None => match table.iter().find_map(|e| match e.shape {
                Shape::Choice(types) => key.strip_prefix(e.name).filter(|t| types.contains(t)).map(|t| (e, Some(t))),
                _ => None,
            }) {
                Some((e, t)) => (e, t),
                None => {
                    let handled = key == "extension"
                        || (top && (key == "resourceType" || key == "modifierExtension" || SHARED.contains(&key.as_str())));
                    if !handled {
                        issues.push(Issue::at(IssueType::NotSupported, format!("{path}.{key}"), format!("'{key}' has no R4 form here")));
                    }
                    continue;
                }
            },
        };
        if top && element.name == "status" {
            continue;
        }
        let url = if top { format!("{WRITE_PREFIX}{}", element.name) } else { element.name.to_owned() };
        let items: Vec<&Value> = match value {
            Value::Array(a) if element.repeats => a.iter().collect(),
            v => vec![v],
        };
        for item in items {
            let ext = match (element.shape, ty) {
                (Shape::Backbone(children), _) => {
                    let Some(inner) = item.as_object() else {
                        issues.push(Issue::at(IssueType::Structure, format!("{path}.{key}"), "expected an object"));
                        continue;
                    };
                    json!({ "url": url, "extension": write_level(inner, children, false, &format!("{path}.{key}"), issues) })
                }
                (Shape::Typed(t), _) | (Shape::Choice(_), Some(t)) => json!({ "url": url, format!("value{t}"): item }),
                (Shape::Choice(_), None) => continue,
            };
            out.push(ext);
        }
    }
    if let Some(Value::Array(own)) = obj.get("extension") {
        out.extend(own.iter().cloned());
    }
    out
}

/// The R4 `Basic` form of an R5-shaped topic.
pub fn from_r5(topic: &Value) -> Result<Value, Vec<Issue>> {
    let Some(obj) = topic.as_object() else {
        return Err(vec![Issue::new(IssueType::Structure, "a topic must be a JSON object")]);
    };
    let mut issues = Vec::new();
    let mut out = Map::new();
    out.insert("resourceType".into(), json!("Basic"));
    for key in SHARED {
        if let Some(v) = obj.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    let extension = write_level(obj, TOPIC, true, "SubscriptionTopic", &mut issues);
    if !extension.is_empty() {
        out.insert("extension".into(), Value::Array(extension));
    }
    let mut modifiers: Vec<Value> = obj.get("modifierExtension").and_then(Value::as_array).cloned().unwrap_or_default();
    if let Some(status) = obj.get("status") {
        modifiers.insert(0, json!({ "url": format!("{WRITE_PREFIX}status"), "valueCode": status }));
    }
    if !modifiers.is_empty() {
        out.insert("modifierExtension".into(), Value::Array(modifiers));
    }
    out.insert("code".into(), json!({ "coding": [{ "system": CODE_SYSTEM, "code": CODE }] }));
    if issues.is_empty() {
        Ok(Value::Object(out))
    } else {
        Err(issues)
    }
}
