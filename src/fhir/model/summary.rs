//! `_summary=true` and `_summary=text` (FHIR search.html#summary) over the type model.
//!
//! `true` keeps, at every level, the elements the base definition marks `isSummary` plus the
//! mandatory ones (`min` >= 1), and shapes what it keeps by the element's own type: a
//! complex datatype by the datatype's summary elements (`Attachment.data` goes,
//! `Attachment.url` stays), a backbone element by its path type (`Observation.component`),
//! a nested resource by its own `resourceType`. Primitive values are kept whole; their `_x`
//! companions are shaped as `Element` (whose `id` and `extension` are not summary, so they
//! go). `id` and `meta` of the resource are always kept, `meta` unchanged.
//!
//! `text` keeps `resourceType`, `id`, `meta`, `text` and the top-level mandatory elements,
//! each whole.
//!
//! Both answer whether anything was removed, so the caller can add the SUBSETTED tag.
//! Unknown properties are removed (they are in no summary); a value that is not an object
//! of a known resource type is returned unchanged. Nothing here panics.

use serde_json::{Map, Value};

use super::Model;

/// `_summary=true` applied to `resource`: (the subset, whether anything was removed).
pub fn summary_true(model: &Model, resource: &Value) -> (Value, bool) {
    let mut removed = false;
    let shaped = shape_resource(model, resource, &mut removed);
    (shaped, removed)
}

/// `_summary=text` applied to `resource`: (the subset, whether anything was removed).
pub fn summary_text(model: &Model, resource: &Value) -> (Value, bool) {
    let Some((ty, obj)) = resource_parts(model, resource) else { return (resource.clone(), false) };
    let mut out = Map::new();
    let mut removed = false;
    for (key, value) in obj {
        let base = key.strip_prefix('_').unwrap_or(key);
        let keep = matches!(base, "resourceType" | "id" | "meta" | "text")
            || model.property(ty, base).is_some_and(|(element, _)| element.is_mandatory());
        if keep {
            out.insert(key.clone(), value.clone());
        } else {
            removed = true;
        }
    }
    (Value::Object(out), removed)
}

/// The resource type and the object, when `value` is an object of a known resource type.
fn resource_parts<'v>(model: &Model, value: &'v Value) -> Option<(&'v str, &'v Map<String, Value>)> {
    let obj = value.as_object()?;
    let ty = obj.get("resourceType")?.as_str()?;
    model.is_resource(ty).then_some((ty, obj))
}

fn shape_resource(model: &Model, value: &Value, removed: &mut bool) -> Value {
    let Some((ty, obj)) = resource_parts(model, value) else { return value.clone() };
    let mut out = Map::new();
    for (key, v) in obj {
        match key.as_str() {
            "resourceType" | "id" | "meta" | "_id" => {
                out.insert(key.clone(), v.clone());
            }
            _ => keep_property(model, ty, key, v, &mut out, removed),
        }
    }
    Value::Object(out)
}

/// The summary of an object of (complex, backbone) type `ty`.
fn shape_object(model: &Model, ty: &str, obj: &Map<String, Value>, removed: &mut bool) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, v) in obj {
        keep_property(model, ty, key, v, &mut out, removed);
    }
    out
}

/// Puts the summary of property `key` of an object of type `ty` into `out`, or notes its removal.
fn keep_property(model: &Model, ty: &str, key: &str, value: &Value, out: &mut Map<String, Value>, removed: &mut bool) {
    let name = key.strip_prefix('_').unwrap_or(key);
    let Some((element, code)) = model.property(ty, name) else {
        *removed = true;
        return;
    };
    if !element.in_summary() {
        *removed = true;
        return;
    }
    // A primitive's `_x` holds its id and extensions and is shaped as the primitive type,
    // whose `id` and `extension` are not summary elements: usually nothing is left.
    let shaped = shape_each(value, |v| shape_value(model, code, v, removed));
    match shaped {
        Some(v) => {
            out.insert(key.to_owned(), v);
        }
        None => *removed = true,
    }
}

/// `f` on a value or on each item of an array; `None` when nothing is left (an empty object,
/// an array of nothing but nulls).
fn shape_each(value: &Value, mut f: impl FnMut(&Value) -> Value) -> Option<Value> {
    let shaped = match value {
        Value::Array(items) => {
            let items: Vec<Value> = items.iter().map(|v| if v.is_null() { Value::Null } else { f(v) }).collect();
            Value::Array(items)
        }
        other => f(other),
    };
    let empty = match &shaped {
        Value::Object(m) => m.is_empty(),
        Value::Array(items) => items.iter().all(|v| v.is_null() || v.as_object().is_some_and(Map::is_empty)),
        _ => false,
    };
    (!empty).then_some(shaped)
}

/// One value of FHIR type `code`.
fn shape_value(model: &Model, code: &str, value: &Value, removed: &mut bool) -> Value {
    match value {
        Value::Object(_) if model.is_resource(code) => shape_resource(model, value, removed),
        Value::Object(obj) => Value::Object(shape_object(model, code, obj, removed)),
        other => other.clone(),
    }
}
