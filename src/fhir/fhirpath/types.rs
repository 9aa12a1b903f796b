//! What the engine asks of the FHIR model of the instance's version (`Model::current`: R4,
//! R4B or R5, per `fhir::version::instance`): the type of each element it navigates to,
//! choice elements (`Observation.value` is `valueQuantity` in JSON), `is`/`as`/`ofType`
//! tests, and which type names exist.
//!
//! Navigation is model-driven when the item's type is known, so a misspelt element on a
//! known type is a semantic error rather than a silent empty result, and lenient (plain
//! JSON) where the model has nothing to say. Nothing here evaluates expressions.

use serde_json::{Map, Value};

use super::ast::TypeName;
use super::error::ErrorKind;
use super::value::{Collection, Item, Node};
use crate::fhir::model::{Kind, Model};

pub(super) const SYSTEM_TYPES: [&str; 10] =
    ["Boolean", "String", "Integer", "Long", "Decimal", "Date", "DateTime", "Time", "Quantity", "Any"];

fn model() -> Option<&'static Model> {
    Model::current().ok()
}

/// The model's own copy of a type name, so items can hold it without allocating.
pub(super) fn static_type_name(name: &str) -> Option<&'static str> {
    model()?.type_info(name).map(|t| t.name.as_str())
}

pub(super) fn is_fhir_subtype(sub: &str, sup: &str) -> bool {
    sub == sup || model().is_some_and(|m| m.is_subtype_of(sub, sup))
}

pub(super) fn is_fhir_type(name: &str) -> bool {
    model().is_some_and(|m| m.type_info(name).is_some())
}

/// Whether a type named in `is`, `as` or `ofType` exists.
pub(super) fn known_type(ty: &TypeName) -> bool {
    let system = SYSTEM_TYPES.contains(&ty.name.as_str());
    match ty.namespace.as_deref() {
        // A qualified System name that does not exist simply matches nothing.
        Some("System") => true,
        Some("FHIR") => is_fhir_type(&ty.name),
        None => system || is_fhir_type(&ty.name),
        Some(_) => false,
    }
}

/// `item is ty`. With `exact`, a FHIR primitive matches only its own type (`as(string)` on a
/// `code` is empty, as the R5 suite expects), while complex types and resources still match
/// their base types (`ofType(Resource)`).
pub(super) fn item_is(item: &Item<'_>, ty: &TypeName, exact: bool) -> bool {
    let (namespace, name) = item.type_name();
    let ns_ok = ty.namespace.as_deref().is_none_or(|ns| ns == namespace);
    if !ns_ok {
        return false;
    }
    if namespace == "System" {
        return name == ty.name || ty.name == "Any";
    }
    if exact && model().is_some_and(|m| m.is_primitive(&name)) {
        return name == ty.name;
    }
    is_fhir_subtype(&name, &ty.name)
}

/// `suffix` is `code` with its first letter upper-cased (`Quantity`, `String` for `string`).
fn is_capitalised(code: &str, suffix: &str) -> bool {
    let (mut c, mut s) = (code.chars(), suffix.chars());
    match (c.next(), s.next()) {
        (Some(a), Some(b)) => a.to_ascii_uppercase() == b && c.eq(s),
        _ => false,
    }
}

/// The children of `node` called `name`, appended to `out`.
pub(super) fn navigate<'a>(node: &Node<'a>, name: &str, out: &mut Collection<'a>) -> Result<(), ErrorKind> {
    let Some(model) = model() else {
        return lenient(node, name, out);
    };
    let Some(ty) = node.ty.filter(|t| !t.starts_with("System.")) else {
        return lenient(node, name, out);
    };
    let Some(info) = model.type_info(ty) else {
        return lenient(node, name, out);
    };
    let Some(element) = model.element(ty, name) else {
        if node.strict {
            return Err(ErrorKind::UnknownElement { type_name: ty.to_owned(), element: name.to_owned() });
        }
        return Ok(());
    };
    // A primitive's own children (`id`, `extension`) live in its `_name` shadow.
    let holder = if matches!(info.kind, Kind::PrimitiveType) { node.shadow } else { node.value };
    let Some(obj) = holder.and_then(Value::as_object) else {
        return Ok(());
    };
    if element.choice {
        // `value[x]` is `valueQuantity`, `valueString`... in JSON (or only `_valueString` for a
        // primitive with just extensions): scan the object's keys once rather than building
        // a name per allowed type.
        for key in obj.keys() {
            let plain = key.strip_prefix('_').unwrap_or(key);
            if plain.len() != key.len() && obj.contains_key(plain) {
                continue;
            }
            let Some(suffix) = plain.strip_prefix(name) else { continue };
            if let Some(code) = element.types.iter().find(|code| is_capitalised(code, suffix)) {
                push_property(obj, plain, Some(code.as_str()), node.strict, out);
            }
        }
    } else {
        // A System-typed element that stands for a FHIR type (`Resource.id` is an `id`).
        let child = element.fhir_type.as_deref().or(element.types.first().map(String::as_str));
        let child = child.and_then(|c| static_type_name(c).or(element.types.first().map(String::as_str)));
        push_property(obj, name, child, node.strict, out);
    }
    Ok(())
}

/// Navigation without a model: JSON properties by name, and `name` + a type suffix for
/// choice elements.
fn lenient<'a>(node: &Node<'a>, name: &str, out: &mut Collection<'a>) -> Result<(), ErrorKind> {
    let holder = match node.value {
        Some(Value::Object(_)) => node.value,
        _ => node.shadow,
    };
    let Some(obj) = holder.and_then(Value::as_object) else {
        return Ok(());
    };
    let before = out.len();
    push_property(obj, name, None, false, out);
    if out.len() == before {
        for key in obj.keys() {
            if let Some(suffix) = key.strip_prefix(name).filter(|s| s.starts_with(|c: char| c.is_ascii_uppercase())) {
                let lower = {
                    let mut c = suffix.chars();
                    c.next().map(|f| f.to_lowercase().chain(c).collect::<String>()).unwrap_or_default()
                };
                let ty = static_type_name(suffix).or_else(|| static_type_name(&lower));
                push_property(obj, key, ty, false, out);
            }
        }
    }
    Ok(())
}

/// The values of `obj[prop]` (and their `_prop` shadows) as nodes of type `ty`.
fn push_property<'a>(obj: &'a Map<String, Value>, prop: &str, ty: Option<&'static str>, strict: bool, out: &mut Collection<'a>) {
    let value = obj.get(prop);
    let shadow = obj.get(&format!("_{prop}"));
    let node = |value: Option<&'a Value>, shadow: Option<&'a Value>| {
        let value = value.filter(|v| !v.is_null());
        let shadow = shadow.filter(|v| !v.is_null());
        if value.is_none() && shadow.is_none() {
            return None;
        }
        let resource_type = value.and_then(|v| v.get("resourceType")).and_then(Value::as_str);
        let (ty, strict) = match (ty, resource_type) {
            // The element's declared type is abstract; the resource names its own.
            (None | Some("Resource" | "DomainResource"), Some(rt)) => (static_type_name(rt).or(ty), false),
            _ => (ty, strict && ty.is_some()),
        };
        Some(Item::Node(Node { value, shadow, ty, strict }))
    };
    match (value, shadow) {
        (Some(Value::Array(values)), shadow) => {
            let shadows = shadow.and_then(Value::as_array);
            for (i, v) in values.iter().enumerate() {
                out.extend(node(Some(v), shadows.and_then(|s| s.get(i))));
            }
        }
        (None, Some(Value::Array(shadows))) => {
            for s in shadows {
                out.extend(node(None, Some(s)));
            }
        }
        (value, shadow) => out.extend(node(value, shadow)),
    }
}

/// Every child element of `node`, in document order (`children()`).
pub(super) fn children<'a>(node: &Node<'a>, out: &mut Collection<'a>) {
    let model = model();
    let info = node.ty.and_then(|t| model.and_then(|m| m.type_info(t)));
    let holder = match info.map(|i| &i.kind) {
        Some(Kind::PrimitiveType) => node.shadow,
        _ => match node.value {
            Some(Value::Object(_)) => node.value,
            _ => node.shadow,
        },
    };
    let Some(obj) = holder.and_then(Value::as_object) else {
        return;
    };
    for key in obj.keys() {
        if key == "resourceType" {
            continue;
        }
        let name = key.strip_prefix('_').unwrap_or(key);
        if key.starts_with('_') && obj.contains_key(name) {
            continue;
        }
        let ty = match (node.ty, model) {
            (Some(t), Some(m)) => {
                m.property(t, name).and_then(|(_, code)| static_type_name(code).or_else(|| m.type_info(code).map(|i| i.name.as_str())))
            }
            _ => None,
        };
        push_property(obj, name, ty, false, out);
    }
}
