//! A FHIR structure validator for the tests: checks a resource against the base
//! StructureDefinitions of its version (snapshots from `../shared/fhir/data/r4`, `r4b`) and
//! against a profile's differential (the Backport IG's definitions in
//! `../shared/fhir/backport/definitions`).
//!
//! What it checks:
//! - base: every JSON property is an element of its type (choice types by their typed names,
//!   `_x` companions of primitives allowed), arrays exactly where `max` is not 1, every
//!   element with `min` ≥ 1 present, the JSON kind of every primitive (string, boolean,
//!   integer, decimal; `positiveInt` > 0, `unsignedInt` ≥ 0), the lexical form of `instant`,
//!   `code`, `id`, and nested resources (`Bundle.entry.resource`, `Parameters...resource`)
//!   against their own type; no empty array, object or null anywhere (FHIR JSON rules);
//! - profile: each differential element's `min`/`max` per parent, `fixed*`/`pattern*`
//!   primitive values, the type of a `value[x]` and of a `resource`, slices by `value`
//!   discriminators (`name`, extension `url`) and by `type` (`resource`), profiles on
//!   slices (a nested resource profile, or an extension definition's url and value type).
//!
//! What it does not check: terminology bindings, FHIRPath invariants (`constraint`),
//! reference targets, `mustSupport`, closed slicing, and the order of slices. Tests add the
//! invariants the kit asserts (for example "entry 1 is the status") themselves.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::{Map, Value};

/// One element of a snapshot.
#[derive(Debug, Clone)]
struct Element {
    path: String,
    min: u64,
    many: bool,
    types: Vec<String>,
    content_reference: Option<String>,
}

/// Base definitions of one FHIR version, by type name.
pub struct Definitions {
    types: HashMap<String, Vec<Element>>,
    profiles: HashMap<String, Value>,
}

const PRIMITIVES: [&str; 20] = [
    "base64Binary",
    "boolean",
    "canonical",
    "code",
    "date",
    "dateTime",
    "decimal",
    "id",
    "instant",
    "integer",
    "markdown",
    "oid",
    "positiveInt",
    "string",
    "time",
    "unsignedInt",
    "uri",
    "url",
    "uuid",
    "xhtml",
];

fn shared_fhir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fhir")
}

fn load_bundle(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let bundle: Value = serde_json::from_str(&text).unwrap();
    bundle["entry"].as_array().unwrap().iter().map(|e| e["resource"].clone()).collect()
}

fn type_code(t: &Value) -> String {
    let code = t["code"].as_str().unwrap_or_default();
    match code.strip_prefix("http://hl7.org/fhirpath/System.") {
        Some("String") => "string".into(),
        Some("Boolean") => "boolean".into(),
        Some("Integer") => "integer".into(),
        Some("Decimal") => "decimal".into(),
        Some(other) => other.to_lowercase(),
        None => code.to_owned(),
    }
}

impl Definitions {
    /// The definitions of `version` ("r4" or "r4b"), loaded once per process; `None` (with a
    /// note) when `../shared` is absent outside CI.
    pub fn of(version: &str) -> Option<&'static Definitions> {
        static R4: OnceLock<Option<Definitions>> = OnceLock::new();
        static R4B: OnceLock<Option<Definitions>> = OnceLock::new();
        let cell = match version {
            "r4" => &R4,
            "r4b" => &R4B,
            other => panic!("no definitions for {other}"),
        };
        cell.get_or_init(|| {
            let dir = super::shared_data(&format!("data/{version}"))?;
            let mut types = HashMap::new();
            for file in ["profiles-types.json", "profiles-resources.json"] {
                for sd in load_bundle(&dir.join(file)) {
                    if sd["resourceType"] != "StructureDefinition" || sd["derivation"] == "constraint" {
                        continue;
                    }
                    let Some(name) = sd["type"].as_str() else { continue };
                    let elements = sd["snapshot"]["element"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|e| Element {
                            path: e["path"].as_str().unwrap_or_default().to_owned(),
                            min: e["min"].as_u64().unwrap_or(0),
                            many: e["max"].as_str() != Some("1") && e["max"].as_str() != Some("0"),
                            types: e["type"].as_array().into_iter().flatten().map(type_code).collect(),
                            content_reference: e["contentReference"].as_str().map(|s| s.trim_start_matches('#').to_owned()),
                        })
                        .collect();
                    types.insert(name.to_owned(), elements);
                }
            }
            let mut profiles = HashMap::new();
            let ig = shared_fhir().join("backport/definitions");
            for entry in std::fs::read_dir(&ig).unwrap_or_else(|e| panic!("{}: {e}", ig.display())) {
                let path = entry.unwrap().path();
                if !path.file_name().unwrap().to_string_lossy().starts_with("StructureDefinition-") {
                    continue;
                }
                let sd: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                profiles.insert(sd["url"].as_str().unwrap().to_owned(), sd);
            }
            Some(Definitions { types, profiles })
        })
        .as_ref()
    }

    /// Errors of `resource` against its base definition; empty when it conforms.
    pub fn check_base(&self, resource: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        let ty = resource["resourceType"].as_str().unwrap_or_default();
        if !self.types.contains_key(ty) {
            errors.push(format!("unknown resourceType {ty:?}"));
            return errors;
        }
        self.check_object(ty, ty, resource, ty, &mut errors);
        errors
    }

    /// Errors of `resource` against its base definition and the profile `url`.
    pub fn check(&self, resource: &Value, url: &str) -> Vec<String> {
        let mut errors = self.check_base(resource);
        self.check_profile(resource, url, &mut errors);
        errors
    }

    /// The children of `path` in `ty`'s snapshot.
    fn children(&self, ty: &str, path: &str) -> Vec<&Element> {
        let Some(elements) = self.types.get(ty) else { return Vec::new() };
        let prefix = format!("{path}.");
        elements.iter().filter(|e| e.path.strip_prefix(&prefix).is_some_and(|rest| !rest.contains('.'))).collect()
    }

    fn element(&self, ty: &str, path: &str) -> Option<&Element> {
        self.types.get(ty)?.iter().find(|e| e.path == path)
    }

    /// Checks the properties of `value`, an instance of element `path` of type `ty`.
    fn check_object(&self, ty: &str, path: &str, value: &Value, at: &str, errors: &mut Vec<String>) {
        let Some(object) = value.as_object() else {
            errors.push(format!("{at}: expected an object"));
            return;
        };
        let children = self.children(ty, path);
        for (key, v) in object {
            if key == "resourceType" && path == ty {
                continue;
            }
            let (name, companion) = match key.strip_prefix('_') {
                Some(rest) => (rest, true),
                None => (key.as_str(), false),
            };
            let found = children.iter().find_map(|e| {
                let last = e.path.rsplit('.').next().unwrap_or_default();
                if last == name {
                    return Some((*e, e.types.first().cloned().unwrap_or_default()));
                }
                let stem = last.strip_suffix("[x]")?;
                let suffix = name.strip_prefix(stem)?;
                e.types.iter().find(|t| capitalized(t) == suffix).map(|t| (*e, t.clone()))
            });
            let Some((element, ty_code)) = found else {
                errors.push(format!("{at}.{key}: not an element of {path}"));
                continue;
            };
            let at = format!("{at}.{key}");
            if v.as_array().is_some_and(Vec::is_empty) || v.as_object().is_some_and(Map::is_empty) || v.is_null() && !companion {
                errors.push(format!("{at}: FHIR JSON has no empty arrays, objects or nulls"));
                continue;
            }
            if element.many != v.is_array() {
                errors.push(format!("{at}: {} expected", if element.many { "an array" } else { "a single value" }));
                continue;
            }
            let items: Vec<&Value> = if v.is_array() { v.as_array().into_iter().flatten().collect() } else { vec![v] };
            for (i, item) in items.into_iter().enumerate() {
                let at = if element.many { format!("{at}[{i}]") } else { at.clone() };
                if companion {
                    if !item.is_null() {
                        self.check_object("Element", "Element", item, &at, errors);
                    }
                    continue;
                }
                self.check_value(ty, element, &ty_code, item, &at, errors);
            }
        }
        for e in children {
            if e.min == 0 {
                continue;
            }
            let last = e.path.rsplit('.').next().unwrap_or_default();
            let present = match last.strip_suffix("[x]") {
                Some(stem) => object.keys().any(|k| k.starts_with(stem) && k.len() > stem.len()),
                None => object.contains_key(last) || object.contains_key(&format!("_{last}")),
            };
            if !present {
                errors.push(format!("{at}: required element {} missing", e.path));
            }
        }
    }

    fn check_value(&self, ty: &str, element: &Element, code: &str, item: &Value, at: &str, errors: &mut Vec<String>) {
        if let Some(target) = &element.content_reference {
            return self.check_object(ty, target, item, at, errors);
        }
        if PRIMITIVES.contains(&code) {
            return check_primitive(code, item, at, errors);
        }
        match code {
            "BackboneElement" | "Element" if self.element(ty, &element.path).is_some() && !self.children(ty, &element.path).is_empty() => {
                self.check_object(ty, &element.path, item, at, errors)
            }
            "Resource" => {
                let inner = item["resourceType"].as_str().unwrap_or_default();
                if !self.types.contains_key(inner) {
                    errors.push(format!("{at}: unknown resourceType {inner:?}"));
                } else {
                    self.check_object(inner, inner, item, at, errors);
                }
            }
            other if self.types.contains_key(other) => self.check_object(other, other, item, at, errors),
            other => errors.push(format!("{at}: no definition for type {other}")),
        }
    }

    fn check_profile(&self, resource: &Value, url: &str, errors: &mut Vec<String>) {
        let Some(sd) = self.profiles.get(url) else {
            errors.push(format!("profile {url} is not among the IG's definitions"));
            return;
        };
        let elements: Vec<&Value> = sd["differential"]["element"].as_array().into_iter().flatten().collect();
        let by_id: HashMap<&str, &Value> = elements.iter().map(|e| (e["id"].as_str().unwrap_or_default(), *e)).collect();
        let root = Item { value: resource, companion: None };
        for e in &elements {
            let id = e["id"].as_str().unwrap_or_default();
            let Some((parent_id, last)) = id.rsplit_once('.') else { continue };
            for parent in select(&by_id, parent_id, root) {
                let items = children_in_slice(&by_id, parent, id, last);
                if let Some(stem) = last.strip_suffix("[x]") {
                    let allowed: Vec<String> =
                        e["type"].as_array().into_iter().flatten().map(|t| format!("{stem}{}", capitalized(&type_code(t)))).collect();
                    let keys = parent.value.as_object().into_iter().flatten().map(|(k, _)| k);
                    for k in keys.filter(|k| k.starts_with(stem) && k.len() > stem.len() && k.as_bytes()[stem.len()].is_ascii_uppercase()) {
                        if !allowed.is_empty() && !allowed.contains(k) {
                            errors.push(format!("{url}: {id} must be one of {allowed:?}, is {k}"));
                        }
                    }
                }
                let min = e["min"].as_u64().unwrap_or(0);
                if (items.len() as u64) < min {
                    errors.push(format!("{url}: {id} has {} item(s), at least {min} required", items.len()));
                }
                if let Some(max) = e["max"].as_str().and_then(|m| m.parse::<u64>().ok()) {
                    if items.len() as u64 > max {
                        errors.push(format!("{url}: {id} has {} item(s), at most {max} allowed", items.len()));
                    }
                }
                for item in &items {
                    self.check_constraints(e, id, url, *item, errors);
                }
            }
        }
    }

    fn check_constraints(&self, e: &Value, id: &str, url: &str, item: Item<'_>, errors: &mut Vec<String>) {
        let Some(object) = e.as_object() else { return };
        for (key, fixed) in object {
            if key.starts_with("fixed") || key.starts_with("pattern") {
                let matches = if fixed.is_object() { contains(item.value, fixed) } else { item.value == fixed };
                if !matches {
                    errors.push(format!("{url}: {id} is {} but must be {fixed}", item.value));
                }
            }
        }
        let types: Vec<&Value> = e["type"].as_array().into_iter().flatten().collect();
        if types.is_empty() {
            return;
        }
        if id.ends_with("value[x]") {
            // The item is the `value…` property itself; its key was checked in `children_in_slice`.
            return;
        }
        for t in &types {
            let code = t["code"].as_str().unwrap_or_default();
            let profiles: Vec<&str> = t["profile"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            if id.ends_with(".resource") || id.ends_with("resource") && item.value.get("resourceType").is_some() {
                if item.value["resourceType"].as_str() != Some(code) {
                    errors.push(format!("{url}: {id} must be a {code}, is {}", item.value["resourceType"]));
                    continue;
                }
                for p in &profiles {
                    self.check_profile(item.value, p, errors);
                }
            } else if code == "Extension" {
                for p in &profiles {
                    self.check_extension(item.value, p, errors);
                }
            }
        }
    }

    /// An extension against its definition: the url and the type of its value.
    fn check_extension(&self, ext: &Value, profile: &str, errors: &mut Vec<String>) {
        let Some(sd) = self.profiles.get(profile) else {
            errors.push(format!("extension definition {profile} is unknown"));
            return;
        };
        if ext["url"].as_str() != Some(profile) {
            errors.push(format!("extension url {} is not {profile}", ext["url"]));
        }
        for e in sd["differential"]["element"].as_array().into_iter().flatten() {
            if e["id"] != "Extension.value[x]" {
                continue;
            }
            let allowed: Vec<String> =
                e["type"].as_array().into_iter().flatten().map(|t| format!("value{}", capitalized(&type_code(t)))).collect();
            let keys: Vec<&String> = ext.as_object().into_iter().flatten().map(|(k, _)| k).filter(|k| k.starts_with("value")).collect();
            if keys.len() != 1 || !allowed.contains(keys[0]) {
                errors.push(format!("extension {profile}: value must be one of {allowed:?}, has {keys:?}"));
            }
        }
    }
}

/// A value reached in a resource, with the `_x` companion of a primitive (where its
/// extensions live).
#[derive(Clone, Copy)]
struct Item<'a> {
    value: &'a Value,
    companion: Option<&'a Value>,
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
}

/// Whether `value` holds everything `pattern` has (FHIR pattern semantics for objects).
fn contains(value: &Value, pattern: &Value) -> bool {
    match (value, pattern) {
        (Value::Object(v), Value::Object(p)) => p.iter().all(|(k, pv)| v.get(k).is_some_and(|vv| contains(vv, pv))),
        (Value::Array(v), Value::Array(p)) => p.iter().all(|pv| v.iter().any(|vv| contains(vv, pv))),
        _ => value == pattern,
    }
}

/// The items an element id selects, from the root (`Parameters`,
/// `Parameters.parameter:notificationEvent`, ...).
fn select<'a>(by_id: &HashMap<&str, &Value>, id: &str, root: Item<'a>) -> Vec<Item<'a>> {
    match id.rsplit_once('.') {
        None => vec![root],
        Some((parent, last)) => select(by_id, parent, root).into_iter().flat_map(|p| children_in_slice(by_id, p, id, last)).collect(),
    }
}

/// The children of `parent` named by the last id segment `last` (`part:eventNumber`,
/// `value[x]`, `extension:content`), restricted to the slice when it names one.
fn children_in_slice<'a>(by_id: &HashMap<&str, &Value>, parent: Item<'a>, id: &str, last: &str) -> Vec<Item<'a>> {
    let (name, slice) = match last.split_once(':') {
        Some((n, s)) => (n, Some(s)),
        None => (last, None),
    };
    let object: Option<&Map<String, Value>> = match (parent.value.as_object(), name) {
        (Some(o), _) => Some(o),
        (None, "extension") => parent.companion.and_then(Value::as_object),
        _ => None,
    };
    let Some(object) = object else { return Vec::new() };
    let mut items = Vec::new();
    if let Some(stem) = name.strip_suffix("[x]") {
        for (k, v) in object {
            if k.starts_with(stem) && k.len() > stem.len() && k.as_bytes()[stem.len()].is_ascii_uppercase() {
                items.push(Item { value: v, companion: None });
            }
        }
        return items;
    }
    let companion = object.get(&format!("_{name}"));
    match object.get(name) {
        Some(Value::Array(a)) => {
            let companions = companion.and_then(Value::as_array);
            for (i, v) in a.iter().enumerate() {
                items.push(Item { value: v, companion: companions.and_then(|c| c.get(i)) });
            }
        }
        Some(v) => items.push(Item { value: v, companion }),
        None if name == "extension" => {}
        None => {
            if let Some(c) = companion {
                items.push(Item { value: &Value::Null, companion: Some(c) });
            }
        }
    }
    let Some(slice) = slice else { return items };
    let sliced_id = id.rsplit_once(':').map(|(head, _)| head).unwrap_or(id);
    let Some(sliced) = by_id.get(sliced_id) else { return Vec::new() };
    let discriminator = &sliced["slicing"]["discriminator"][0];
    let slice_id = id;
    match (discriminator["type"].as_str(), discriminator["path"].as_str()) {
        (Some("value"), Some("url")) => {
            let want = by_id.get(slice_id).and_then(|e| e["type"][0]["profile"][0].as_str()).unwrap_or_default().to_owned();
            items.retain(|i| i.value["url"].as_str() == Some(want.as_str()));
        }
        (Some("value"), Some(path)) => {
            let want =
                by_id.get(format!("{slice_id}.{path}").as_str()).and_then(|e| e["fixedString"].as_str().or(e["patternString"].as_str()));
            items.retain(|i| i.value[path].as_str() == want);
        }
        (Some("type"), Some(path)) => {
            let want = by_id.get(format!("{slice_id}.{path}").as_str()).and_then(|e| e["type"][0]["code"].as_str());
            items.retain(|i| i.value[path]["resourceType"].as_str() == want);
        }
        _ => panic!("{slice}: discriminator {discriminator} not supported by this validator"),
    }
    items
}

fn check_primitive(code: &str, v: &Value, at: &str, errors: &mut Vec<String>) {
    let ok = match code {
        "boolean" => v.is_boolean(),
        "integer" => v.as_i64().is_some(),
        "unsignedInt" => v.as_u64().is_some(),
        "positiveInt" => v.as_u64().is_some_and(|n| n > 0),
        "decimal" => v.is_number(),
        _ => v.as_str().is_some_and(|s| !s.is_empty() && s.trim() == s || code == "string" && !s.is_empty() || code == "markdown"),
    };
    if !ok {
        errors.push(format!("{at}: {v} is not a valid {code}"));
        return;
    }
    let s = v.as_str().unwrap_or_default();
    let lexical = match code {
        "instant" => is_instant(s),
        "id" => s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'),
        "code" => !s.contains("  ") && s.trim() == s,
        "uri" | "url" | "canonical" => !s.chars().any(char::is_whitespace),
        _ => true,
    };
    if !lexical {
        errors.push(format!("{at}: {s:?} is not a valid {code}"));
    }
}

/// `YYYY-MM-DDThh:mm:ss(.sss)(Z|±hh:mm)`.
fn is_instant(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    if b.len() < 20 || !digits(0..4) || b[4] != b'-' || !digits(5..7) || b[7] != b'-' || !digits(8..10) || b[10] != b'T' {
        return false;
    }
    if !digits(11..13) || b[13] != b':' || !digits(14..16) || b[16] != b':' || !digits(17..19) {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    rest == "Z" || (rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) && rest.as_bytes()[3] == b':')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The validator passes the IG's own examples and catches what it claims to catch.
    #[test]
    fn the_igs_examples_pass_and_broken_copies_fail() {
        let Some(defs) = Definitions::of("r4") else { return };
        let examples = shared_fhir().join("backport/examples");
        let read = |name: &str| -> Value { serde_json::from_str(&std::fs::read_to_string(examples.join(name)).unwrap()).unwrap() };
        const NOTIFICATION_R4: &str =
            "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-notification-r4";
        const SUBSCRIPTION: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription";
        for name in ["handshake", "heartbeat", "empty", "id-only", "full-resource", "multi-resource", "error"] {
            let bundle = read(&format!("Bundle-r4-notification-{name}.json"));
            assert_eq!(defs.check(&bundle, NOTIFICATION_R4), Vec::<String>::new(), "{name}");
        }
        let sub = read("Subscription-subscription-admission.json");
        assert_eq!(defs.check(&sub, SUBSCRIPTION), Vec::<String>::new());
        let r4b = Definitions::of("r4b").unwrap();
        const NOTIFICATION_R4B: &str =
            "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-notification";
        for name in ["handshake", "heartbeat", "empty", "id-only", "full-resource", "multi-resource", "error"] {
            let bundle = read(&format!("Bundle-r4b-notification-{name}.json"));
            assert_eq!(r4b.check(&bundle, NOTIFICATION_R4B), Vec::<String>::new(), "r4b {name}");
        }
        assert_eq!(r4b.check(&sub, SUBSCRIPTION), Vec::<String>::new());

        let mut broken = read("Bundle-r4-notification-full-resource.json");
        broken["type"] = "searchset".into();
        broken["entry"][0]["resource"]["parameter"][1]["valueString"] =
            broken["entry"][0]["resource"]["parameter"][1]["valueCanonical"].take();
        broken["entry"][0]["resource"]["parameter"][1].as_object_mut().unwrap().remove("valueCanonical");
        broken["entry"][1]["request"]["bogus"] = true.into();
        let errors = defs.check(&broken, NOTIFICATION_R4);
        assert!(errors.iter().any(|e| e.contains("Bundle.type")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("bogus")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("topic")), "{errors:?}");

        let mut broken = sub.clone();
        broken["channel"]["extension"][0]["valueInteger"] = broken["channel"]["extension"][0]["valueUnsignedInt"].take();
        broken["channel"]["extension"][0].as_object_mut().unwrap().remove("valueUnsignedInt");
        broken["channel"].as_object_mut().unwrap().remove("_payload");
        broken.as_object_mut().unwrap().remove("reason");
        let errors = defs.check(&broken, SUBSCRIPTION);
        assert!(errors.iter().any(|e| e.contains("valueUnsignedInt")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("extension:content")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("Subscription.reason")), "{errors:?}");
    }
}
