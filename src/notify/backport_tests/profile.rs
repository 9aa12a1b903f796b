//! A checker for `backport-subscription-status-r4`, read from the profile's own differential
//! (`shared/fhir/backport/definitions/`), with the profile's rules written out as a fallback
//! when the data set is absent (outside CI).
//!
//! It checks what the differential says: the slices of `Parameters.parameter` and of
//! `notification-event.part` by their fixed `name`, each slice's cardinality, the one value
//! type each allows (`valueReference`, `valueCanonical`, ...) and whether the value is
//! required, the minimum number of parameters and parts; and it refuses names the profile
//! does not slice (its slicing is open, but Herald sends nothing else). Value formats are
//! checked for the primitive types used (instant, code, canonical, string). It does not check
//! terminology bindings (the profile sets none on these values), invariants, references'
//! targets, or anything outside the Parameters (the Bundle is checked by the callers).

use std::collections::HashMap;

use serde_json::Value;

/// One slice: its name, cardinality, value type and whether the value is required.
#[derive(Clone, Debug)]
struct Slice {
    name: String,
    min: u64,
    max: Option<u64>,
    value_type: Option<String>,
    value_required: bool,
}

#[derive(Debug)]
pub(crate) struct Profile {
    min_parameters: u64,
    parameters: Vec<Slice>,
    min_parts: u64,
    parts: Vec<Slice>,
}

fn max_of(text: &str) -> Option<u64> {
    text.parse().ok()
}

/// The slices under `prefix` (`Parameters.parameter` or `...:notificationEvent.part`).
fn slices(elements: &[Value], prefix: &str) -> Vec<Slice> {
    let by_id: HashMap<&str, &Value> = elements.iter().filter_map(|e| Some((e["id"].as_str()?, e))).collect();
    let mut out = Vec::new();
    for e in elements {
        let Some(id) = e["id"].as_str() else { continue };
        let Some(slice) = id.strip_prefix(&format!("{prefix}:")) else { continue };
        if slice.contains('.') {
            continue;
        }
        let name = by_id.get(format!("{id}.name").as_str()).and_then(|n| n["fixedString"].as_str()).unwrap_or(slice).to_owned();
        let value = by_id.get(format!("{id}.value[x]").as_str());
        out.push(Slice {
            name,
            min: e["min"].as_u64().unwrap_or(0),
            max: e["max"].as_str().and_then(max_of),
            value_type: value.and_then(|v| v["type"][0]["code"].as_str()).map(str::to_owned),
            value_required: value.and_then(|v| v["min"].as_u64()).unwrap_or(0) >= 1,
        });
    }
    out
}

impl Profile {
    /// From the profile's differential, else the rules as the IG states them.
    pub(crate) fn load() -> Profile {
        let sd = super::shared("backport/definitions/StructureDefinition-backport-subscription-status-r4.json");
        let Some(elements) = sd.as_ref().and_then(|sd| sd["differential"]["element"].as_array()) else { return Profile::fallback() };
        let min_of = |id: &str| elements.iter().find(|e| e["id"] == id).and_then(|e| e["min"].as_u64()).unwrap_or(0);
        Profile {
            min_parameters: min_of("Parameters.parameter"),
            parameters: slices(elements, "Parameters.parameter"),
            min_parts: min_of("Parameters.parameter:notificationEvent.part"),
            parts: slices(elements, "Parameters.parameter:notificationEvent.part"),
        }
    }

    fn fallback() -> Profile {
        let s = |name: &str, min, max, value_type: Option<&str>, value_required| Slice {
            name: name.into(),
            min,
            max,
            value_type: value_type.map(str::to_owned),
            value_required,
        };
        Profile {
            min_parameters: 3,
            parameters: vec![
                s("subscription", 1, Some(1), Some("Reference"), true),
                s("topic", 0, Some(1), Some("canonical"), false),
                s("status", 1, Some(1), Some("code"), true),
                s("type", 1, Some(1), Some("code"), true),
                s("events-since-subscription-start", 0, Some(1), Some("string"), false),
                s("notification-event", 0, None, None, false),
                s("error", 0, None, Some("CodeableConcept"), false),
            ],
            min_parts: 1,
            parts: vec![
                s("event-number", 1, Some(1), Some("string"), true),
                s("timestamp", 0, Some(1), Some("instant"), false),
                s("focus", 0, Some(1), Some("Reference"), false),
                s("additional-context", 0, None, Some("Reference"), false),
            ],
        }
    }

    /// Every way `params` breaks the profile; empty when it conforms.
    pub(crate) fn check(&self, params: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        if params["resourceType"] != "Parameters" {
            errors.push(format!("not a Parameters: {}", params["resourceType"]));
            return errors;
        }
        let list = params["parameter"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        check_list(list, self.min_parameters, &self.parameters, "parameter", &mut errors);
        for (i, p) in list.iter().enumerate().filter(|(_, p)| p["name"] == "notification-event") {
            let parts = p["part"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            check_list(parts, self.min_parts, &self.parts, &format!("parameter[{i}].part"), &mut errors);
        }
        errors
    }
}

fn check_list(list: &[Value], min: u64, slices: &[Slice], path: &str, errors: &mut Vec<String>) {
    if (list.len() as u64) < min {
        errors.push(format!("{path}: {} elements, the profile wants at least {min}", list.len()));
    }
    for (i, p) in list.iter().enumerate() {
        let name = p["name"].as_str().unwrap_or_default();
        if !slices.iter().any(|s| s.name == name) {
            errors.push(format!("{path}[{i}]: '{name}' is not a parameter of the profile"));
        }
    }
    for slice in slices {
        let found: Vec<&Value> = list.iter().filter(|p| p["name"] == slice.name.as_str()).collect();
        let n = found.len() as u64;
        if n < slice.min || slice.max.is_some_and(|max| n > max) {
            errors.push(format!("{path} '{}': {n} present, cardinality {}..{:?}", slice.name, slice.min, slice.max));
        }
        for p in found {
            check_value(p, slice, path, errors);
        }
    }
}

fn check_value(p: &Value, slice: &Slice, path: &str, errors: &mut Vec<String>) {
    let values: Vec<(&String, &Value)> = p.as_object().into_iter().flatten().filter(|(k, _)| k.starts_with("value")).collect();
    if values.len() > 1 {
        errors.push(format!("{path} '{}': more than one value", slice.name));
    }
    let Some(ty) = &slice.value_type else {
        if !values.is_empty() {
            errors.push(format!("{path} '{}': takes parts, not a value", slice.name));
        }
        return;
    };
    let mut chars = ty.chars();
    let key = format!("value{}{}", chars.next().map(|c| c.to_ascii_uppercase()).unwrap_or_default(), chars.as_str());
    match values.first() {
        None if slice.value_required => errors.push(format!("{path} '{}': {key} is required", slice.name)),
        None => {}
        Some((k, _)) if **k != key => errors.push(format!("{path} '{}': {k} where the profile allows {key}", slice.name)),
        Some((_, v)) => {
            if let Some(why) = bad_value(ty, v) {
                errors.push(format!("{path} '{}': {why}", slice.name));
            }
        }
    }
}

/// Why `v` is not a valid value of FHIR type `ty`, for the types the profile uses.
fn bad_value(ty: &str, v: &Value) -> Option<String> {
    let text = || v.as_str().filter(|s| !s.is_empty() && s.trim() == *s);
    match ty {
        "string" | "canonical" => text().is_none().then(|| format!("not a non-empty {ty}: {v}")),
        "code" => text().filter(|s| !s.contains(char::is_whitespace)).is_none().then(|| format!("not a code: {v}")),
        "instant" => text()
            .filter(|s| {
                s.len() >= 20 && s.as_bytes().get(10) == Some(&b'T') && (s.ends_with('Z') || s.contains('+') || s.rfind('-') > Some(10))
            })
            .is_none()
            .then(|| format!("not an instant: {v}")),
        "Reference" => v
            .get("reference")
            .or_else(|| v.get("identifier"))
            .is_none()
            .then(|| format!("a Reference with neither reference nor identifier: {v}")),
        "CodeableConcept" => {
            v.get("coding").or_else(|| v.get("text")).is_none().then(|| format!("a CodeableConcept with neither coding nor text: {v}"))
        }
        _ => None,
    }
}

#[test]
fn the_checker_reads_the_profile_and_catches_what_it_forbids() {
    let p = Profile::load();
    assert_eq!(p.min_parameters, 3);
    assert_eq!(p.parameters.len(), 7, "{p:?}");
    assert_eq!(p.parts.len(), 4, "{p:?}");
    let good = serde_json::json!({ "resourceType": "Parameters", "parameter": [
        { "name": "subscription", "valueReference": { "reference": "Subscription/1" } },
        { "name": "status", "valueCode": "active" },
        { "name": "type", "valueCode": "heartbeat" },
    ] });
    assert_eq!(p.check(&good), Vec::<String>::new());
    let bad = serde_json::json!({ "resourceType": "Parameters", "parameter": [
        { "name": "subscription", "valueString": "Subscription/1" },
        { "name": "status", "valueCode": "active" },
        { "name": "status", "valueCode": "off" },
        { "name": "events-since-subscription-start", "valueInteger": 1 },
        { "name": "notification-event", "part": [{ "name": "timestamp", "valueInstant": "yesterday" }] },
        { "name": "colour", "valueString": "red" },
    ] });
    let errors = p.check(&bad);
    for want in
        ["valueString where", "'status': 2 present", "'type': 0 present", "valueInteger", "'event-number': 0", "not an instant", "'colour'"]
    {
        assert!(errors.iter().any(|e| e.contains(want)), "{want} not reported: {errors:#?}");
    }
}
