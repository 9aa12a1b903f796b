//! FHIRPath Patch (fhirpatch.html): a `Parameters` resource whose `operation` parameters each
//! name a `type` (add, insert, delete, replace, move), a FHIRPath `path`, and as the type
//! needs a `name`, a `value` (a `value[x]`, or `part`s for an element with children), an
//! `index`, a `source` and a `destination`.
//!
//! The path is evaluated by Herald's engine (`crate::fhir::fhirpath`) over the resource; the
//! elements it selects are found again in the JSON by identity, so any expression that selects
//! elements of the resource works (`Task.input.where(type.text = 'a')`, `Patient.name[1]`).
//! Which JSON property an element is written to (`valueQuantity` for a choice) and whether
//! it repeats come from the FHIR model of the served version. `insert` into a list that is
//! absent (or empty) works at index 0 when the path ends in the list's name
//! (`Task.note`, `Task.input.where(...).x`): the path before the last name must select one
//! element, and the model must say the name repeats. A primitive that has only an id or
//! extensions (`"_status": {...}` without `status`) is a target like any other: `replace`
//! gives it a value beside its extensions, `delete` removes it with them. Limitation: `move`
//! needs a path that selects at least one item of the list.

use std::collections::HashMap;

use axum::http::StatusCode;
use serde_json::{Map, Value};

use crate::api::outcome::ApiError;
use crate::fhir::fhirpath::{Env, Expression};
use crate::fhir::model::{Element, Model};
use crate::fhir::{Issue, IssueType};

/// What an operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Add,
    Insert,
    Delete,
    Replace,
    Move,
}

/// An operation's `value`: a typed value (`valueCoding` gives the suffix `Coding`) or the
/// children of an element given as `part`s.
#[derive(Debug)]
enum PatchValue {
    Typed { suffix: String, value: Value },
    Parts(Vec<(String, PatchValue)>),
}

/// One parsed `operation` parameter.
#[derive(Debug)]
pub(crate) struct Operation {
    /// Its position among the `operation` parameters, for error messages.
    at: usize,
    kind: Kind,
    path: Expression,
    name: Option<String>,
    value: Option<PatchValue>,
    index: Option<usize>,
    source: Option<usize>,
    destination: Option<usize>,
}

/// One step from a JSON value to one inside it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn malformed(at: usize, why: impl Into<String>) -> ApiError {
    ApiError::issues(StatusCode::BAD_REQUEST, vec![Issue::at(IssueType::Invalid, format!("Parameters.parameter[{at}]"), why.into())])
}

fn failed(op: &Operation, why: impl Into<String>) -> ApiError {
    ApiError::issues(
        StatusCode::UNPROCESSABLE_ENTITY,
        vec![Issue::at(
            IssueType::BusinessRule,
            format!("Parameters.parameter[{}]", op.at),
            format!("FHIRPath Patch operation {} ({:?} at '{}'): {}", op.at, op.kind, op.path.source(), why.into()),
        )],
    )
}

/// The typed value of a part (`valueString`, `valueCodeableConcept`, ...) or its children.
fn part_value(at: usize, part: &Value) -> Result<PatchValue, ApiError> {
    if let Some(obj) = part.as_object() {
        if let Some((key, value)) = obj.iter().find(|(k, _)| k.len() > 5 && k.starts_with("value")) {
            let suffix = key.get(5..).unwrap_or_default().to_owned();
            return Ok(PatchValue::Typed { suffix, value: value.clone() });
        }
        if let Some(parts) = obj.get("part").and_then(Value::as_array) {
            let mut children = Vec::with_capacity(parts.len());
            for p in parts {
                let name = p.get("name").and_then(Value::as_str).ok_or_else(|| malformed(at, "a value part has a part without a name"))?;
                children.push((name.to_owned(), part_value(at, p)?));
            }
            return Ok(PatchValue::Parts(children));
        }
    }
    Err(malformed(at, "a value part needs a value[x] or parts"))
}

fn index_of(at: usize, part: &Value, name: &str) -> Result<usize, ApiError> {
    part.get("valueInteger")
        .and_then(Value::as_u64)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| malformed(at, format!("'{name}' must be a valueInteger of 0 or more")))
}

/// The operations of a FHIRPath Patch `Parameters` (400 for anything malformed).
pub(super) fn parse(parameters: &Value) -> Result<Vec<Operation>, ApiError> {
    let params = parameters.get("parameter").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if params.is_empty() {
        return Err(malformed(0, "a FHIRPath Patch needs at least one operation parameter"));
    }
    let mut ops = Vec::with_capacity(params.len());
    for (at, param) in params.iter().enumerate() {
        if param.get("name").and_then(Value::as_str) != Some("operation") {
            return Err(malformed(at, "every parameter of a FHIRPath Patch is named 'operation'"));
        }
        let (mut kind, mut path, mut name, mut value, mut index, mut source, mut destination) = (None, None, None, None, None, None, None);
        for part in param.get("part").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
            let text = || part.get("valueCode").or_else(|| part.get("valueString")).and_then(Value::as_str);
            match part.get("name").and_then(Value::as_str).unwrap_or_default() {
                "type" => {
                    kind = Some(match text() {
                        Some("add") => Kind::Add,
                        Some("insert") => Kind::Insert,
                        Some("delete") => Kind::Delete,
                        Some("replace") => Kind::Replace,
                        Some("move") => Kind::Move,
                        other => {
                            return Err(malformed(at, format!("unknown operation type {other:?} (add, insert, delete, replace, move)")))
                        }
                    })
                }
                "path" => {
                    let source = text().ok_or_else(|| malformed(at, "'path' must be a valueString"))?;
                    let expr = Expression::parse(source).map_err(|e| malformed(at, format!("'path' is not a FHIRPath expression: {e}")))?;
                    path = Some(expr);
                }
                "name" => name = Some(text().ok_or_else(|| malformed(at, "'name' must be a valueString"))?.to_owned()),
                "value" => value = Some(part_value(at, part)?),
                "index" => index = Some(index_of(at, part, "index")?),
                "source" => source = Some(index_of(at, part, "source")?),
                "destination" => destination = Some(index_of(at, part, "destination")?),
                other => return Err(malformed(at, format!("unknown operation part '{other}'"))),
            }
        }
        let kind = kind.ok_or_else(|| malformed(at, "an operation needs a 'type'"))?;
        let path = path.ok_or_else(|| malformed(at, "an operation needs a 'path'"))?;
        let needs = |what: &str, present: bool| if present { Ok(()) } else { Err(malformed(at, format!("{kind:?} needs '{what}'"))) };
        match kind {
            Kind::Add => {
                needs("name", name.is_some())?;
                needs("value", value.is_some())?;
            }
            Kind::Insert => {
                needs("index", index.is_some())?;
                needs("value", value.is_some())?;
            }
            Kind::Replace => needs("value", value.is_some())?,
            Kind::Move => {
                needs("source", source.is_some())?;
                needs("destination", destination.is_some())?;
            }
            Kind::Delete => {}
        }
        ops.push(Operation { at, kind, path, name, value, index, source, destination });
    }
    Ok(ops)
}

/// Applies `ops` in order to `resource` (422 when one cannot be applied).
pub(super) fn apply(resource: &mut Value, ops: &[Operation]) -> Result<(), ApiError> {
    let model = Model::current().ok();
    let root_type = resource.get("resourceType").and_then(Value::as_str).unwrap_or_default().to_owned();
    let ctx = Ctx { model, root_type: &root_type };
    for op in ops {
        apply_one(&ctx, resource, op)?;
    }
    Ok(())
}

/// The model and the resource type, for finding the type behind a JSON location.
struct Ctx<'a> {
    model: Option<&'static Model>,
    root_type: &'a str,
}

impl Ctx<'_> {
    /// The FHIR type of the element at `segs` (`None` where the model cannot tell).
    fn type_at(&self, segs: &[Seg]) -> Option<String> {
        let model = self.model?;
        let mut ty = self.root_type.to_owned();
        for seg in segs {
            if let Seg::Key(k) = seg {
                ty = model.property(&ty, k).map(|(_, t)| t.to_owned())?;
            }
        }
        Some(ty)
    }

    /// The element definition behind the property `key` of the object at `segs`.
    fn property_at(&self, segs: &[Seg], key: &str) -> Option<&'static Element> {
        let ty = self.type_at(segs)?;
        self.model?.property(&ty, key).map(|(e, _)| e)
    }

    /// The element definition named `name` (FHIRPath name) on the object at `segs`.
    fn element_at(&self, segs: &[Seg], name: &str) -> Option<&'static Element> {
        let ty = self.type_at(segs)?;
        self.model?.element(&ty, name)
    }

    /// `value` as JSON for `element` (nested parts placed by the element's type).
    fn json(&self, element: Option<&Element>, value: &PatchValue) -> Value {
        match value {
            PatchValue::Typed { value, .. } => value.clone(),
            PatchValue::Parts(children) => {
                let ty = element.and_then(|e| match e.types.as_slice() {
                    [only] if !e.choice => Some(only.as_str()),
                    _ => None,
                });
                let mut obj = Map::new();
                for (name, child) in children {
                    let child_el = ty.and_then(|t| self.model.and_then(|m| m.element(t, name)));
                    let key = json_key(child_el, name, child);
                    let v = self.json(child_el, child);
                    if child_el.is_some_and(|e| e.many) {
                        if let Value::Array(items) = obj.entry(key).or_insert_with(|| Value::Array(Vec::new())) {
                            items.push(v);
                        }
                    } else {
                        obj.insert(key, v);
                    }
                }
                Value::Object(obj)
            }
        }
    }
}

/// The JSON property an element is written to: its name, plus the type for a choice.
fn json_key(element: Option<&Element>, name: &str, value: &PatchValue) -> String {
    match (element, value) {
        (Some(e), PatchValue::Typed { suffix, .. }) if e.choice => format!("{name}{suffix}"),
        _ => name.to_owned(),
    }
}

/// Every value of `root` by address, with the way to it.
fn locations(root: &Value) -> HashMap<*const Value, Vec<Seg>> {
    fn walk(v: &Value, path: &mut Vec<Seg>, out: &mut HashMap<*const Value, Vec<Seg>>) {
        out.insert(std::ptr::from_ref(v), path.clone());
        match v {
            Value::Object(obj) => {
                for (k, child) in obj {
                    path.push(Seg::Key(k.clone()));
                    walk(child, path, out);
                    path.pop();
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    path.push(Seg::Index(i));
                    walk(child, path, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = HashMap::new();
    walk(root, &mut Vec::new(), &mut out);
    out
}

/// Where the elements `op.path` selects are in `resource`.
fn targets(resource: &Value, op: &Operation) -> Result<Vec<Vec<Seg>>, ApiError> {
    let found = op.path.evaluate(&Env::new(Some(resource))).map_err(|e| failed(op, format!("the path cannot be evaluated: {e}")))?;
    let places = locations(resource);
    found
        .iter()
        .map(|item| {
            let at = match (item.node(), item.shadow()) {
                (Some(n), _) => places.get(&std::ptr::from_ref(n)).cloned(),
                // A primitive with only `_name`: addressed by its plain name, as if it had a value.
                (None, Some(s)) => places.get(&std::ptr::from_ref(s)).map(|segs| unshadowed(segs)),
                (None, None) => None,
            };
            at.ok_or_else(|| failed(op, "the path selects something that is not an element of the resource"))
        })
        .collect()
}

/// `segs` with its last `_name` key as `name` (`[_status]` -> `[status]`).
fn unshadowed(segs: &[Seg]) -> Vec<Seg> {
    let mut out = segs.to_vec();
    if let Some(Seg::Key(k)) = out.iter_mut().rev().find(|s| matches!(s, Seg::Key(_))) {
        if let Some(plain) = k.strip_prefix('_') {
            *k = plain.to_owned();
        }
    }
    out
}

/// For an `insert` whose path selects nothing: the absent (or empty) list the path names, as
/// (where its parent is, its property name). The path must end in `.name`, the rest must
/// select exactly one element, and `name` must repeat there.
fn absent_list(ctx: &Ctx<'_>, resource: &Value, op: &Operation) -> Result<(Vec<Seg>, String), ApiError> {
    let none = || failed(op, "the path selects no list item, and does not end in the name of a list of one element");
    let source = op.path.source().trim();
    let (parent_src, name) = source.rsplit_once('.').ok_or_else(none)?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(none());
    }
    let parent = Expression::parse(parent_src).map_err(|_| none())?;
    let parent_op =
        Operation { at: op.at, kind: op.kind, path: parent, name: None, value: None, index: None, source: None, destination: None };
    let at = exactly_one(op, targets(resource, &parent_op)?)?;
    let element = ctx.element_at(&at, name).ok_or_else(none)?;
    if !element.many || element.choice {
        return Err(failed(op, format!("'{name}' is not a list")));
    }
    Ok((at, name.to_owned()))
}

fn get_mut<'v>(mut v: &'v mut Value, segs: &[Seg]) -> Option<&'v mut Value> {
    for seg in segs {
        v = match seg {
            Seg::Key(k) => v.get_mut(k.as_str())?,
            Seg::Index(i) => v.get_mut(*i)?,
        };
    }
    Some(v)
}

fn exactly_one(op: &Operation, found: Vec<Vec<Seg>>) -> Result<Vec<Seg>, ApiError> {
    let n = found.len();
    let mut found = found.into_iter();
    match (found.next(), n) {
        (Some(one), 1) => Ok(one),
        _ => Err(failed(op, format!("the path must select exactly one element; it selects {n}"))),
    }
}

/// The list the items `found` belong to, as (where the list is, its property name), when
/// they are all items of one list.
fn one_list(op: &Operation, found: &[Vec<Seg>]) -> Result<(Vec<Seg>, String), ApiError> {
    let list_of = |segs: &Vec<Seg>| match segs.as_slice() {
        [parent @ .., Seg::Key(key), Seg::Index(_)] => Some((parent.to_vec(), key.clone())),
        _ => None,
    };
    let first = found.first().and_then(list_of).ok_or_else(|| failed(op, "the path must select the items of a list (none selected)"))?;
    if found.iter().any(|s| list_of(s).as_ref() != Some(&first)) {
        return Err(failed(op, "the path must select the items of one list"));
    }
    Ok(first)
}

fn apply_one(ctx: &Ctx<'_>, resource: &mut Value, op: &Operation) -> Result<(), ApiError> {
    let found = targets(resource, op)?;
    match op.kind {
        Kind::Add => {
            let at = exactly_one(op, found)?;
            let (Some(name), Some(value)) = (op.name.as_deref(), op.value.as_ref()) else { return Err(failed(op, "needs name and value")) };
            let element = ctx.element_at(&at, name);
            let key = json_key(element, name, value);
            let new = ctx.json(element, value);
            let obj = get_mut(resource, &at)
                .and_then(Value::as_object_mut)
                .ok_or_else(|| failed(op, "the path must select an element with children"))?;
            match obj.get_mut(&key) {
                Some(Value::Array(items)) => items.push(new),
                Some(_) => return Err(failed(op, format!("'{key}' is already there; use replace"))),
                None if element.is_some_and(|e| e.many) => {
                    obj.insert(key, Value::Array(vec![new]));
                }
                None => {
                    obj.insert(key, new);
                }
            }
        }
        Kind::Insert => {
            let (parent, key) = if found.is_empty() { absent_list(ctx, resource, op)? } else { one_list(op, &found)? };
            let value = op.value.as_ref().ok_or_else(|| failed(op, "needs a value"))?;
            let new = ctx.json(ctx.property_at(&parent, &key), value);
            let index = op.index.unwrap_or_default();
            let holder = get_mut(resource, &parent).and_then(Value::as_object_mut).ok_or_else(|| failed(op, "the list is not there"))?;
            let items = holder.entry(key.as_str()).or_insert_with(|| Value::Array(Vec::new())).as_array_mut();
            let items = items.ok_or_else(|| failed(op, "the list is not there"))?;
            if index > items.len() {
                return Err(failed(op, format!("index {index} is past the end of the list ({} items)", items.len())));
            }
            items.insert(index, new);
        }
        Kind::Move => {
            let (parent, key) = one_list(op, &found)?;
            let (source, destination) = (op.source.unwrap_or_default(), op.destination.unwrap_or_default());
            let items = get_mut(resource, &parent).and_then(|p| p.get_mut(key.as_str())).and_then(Value::as_array_mut);
            let items = items.ok_or_else(|| failed(op, "the list is not there"))?;
            if source >= items.len() || destination >= items.len() {
                return Err(failed(
                    op,
                    format!("source {source} and destination {destination} must be within the list ({} items)", items.len()),
                ));
            }
            let moved = items.remove(source);
            items.insert(destination, moved);
        }
        Kind::Delete => {
            if found.is_empty() {
                return Ok(()); // nothing to delete is not an error (fhirpatch.html)
            }
            let at = exactly_one(op, found)?;
            let Some((last, parent)) = at.split_last() else { return Err(failed(op, "the resource itself cannot be deleted")) };
            let container = get_mut(resource, parent).ok_or_else(|| failed(op, "the element is not there"))?;
            match (last, container) {
                (Seg::Key(k), Value::Object(obj)) => {
                    // A primitive goes with its id and extensions (`_name`).
                    obj.remove(k.as_str());
                    obj.remove(&format!("_{k}"));
                }
                (Seg::Index(i), Value::Array(items)) if *i < items.len() => {
                    items.remove(*i);
                    let emptied = items.is_empty();
                    if let Some((Seg::Key(k), grand)) = parent.split_last() {
                        if let Some(obj) = get_mut(resource, grand).and_then(Value::as_object_mut) {
                            // The `_name` list of a primitive list loses the same item.
                            let shadow = format!("_{k}");
                            if let Some(Value::Array(shadows)) = obj.get_mut(&shadow) {
                                if *i < shadows.len() {
                                    shadows.remove(*i);
                                }
                                if shadows.iter().all(Value::is_null) {
                                    obj.remove(&shadow);
                                }
                            }
                            // An empty list is no list in FHIR JSON.
                            if emptied {
                                obj.remove(k.as_str());
                            }
                        }
                    }
                }
                _ => return Err(failed(op, "the element is not there")),
            }
        }
        Kind::Replace => {
            let at = exactly_one(op, found)?;
            let value = op.value.as_ref().ok_or_else(|| failed(op, "needs a value"))?;
            let Some((last, parent)) = at.split_last() else { return Err(failed(op, "the resource itself cannot be replaced")) };
            match last {
                Seg::Key(key) => {
                    let element = ctx.property_at(parent, key);
                    let new = ctx.json(element, value);
                    let obj =
                        get_mut(resource, parent).and_then(Value::as_object_mut).ok_or_else(|| failed(op, "the element is not there"))?;
                    // A choice may change type: `valueString` replaced by a `valueQuantity`.
                    let renamed = element.filter(|e| e.choice).map(|e| json_key(Some(e), &e.name, value));
                    match renamed {
                        Some(new_key) if new_key != *key => {
                            obj.remove(key.as_str());
                            obj.insert(new_key, new);
                        }
                        _ => {
                            obj.insert(key.clone(), new);
                        }
                    }
                }
                Seg::Index(_) => {
                    let element = match parent {
                        [grand @ .., Seg::Key(key)] => ctx.property_at(grand, key),
                        _ => None,
                    };
                    let new = ctx.json(element, value);
                    let slot = get_mut(resource, &at).ok_or_else(|| failed(op, "the element is not there"))?;
                    *slot = new;
                }
            }
        }
    }
    Ok(())
}
