//! Test support: the official FHIR definitions in `../shared/fhir/data/{r4,r4b}` and (R5)
//! `../shared/fhir/data` (resource and data type StructureDefinition snapshots, the
//! SearchParameter bundle), read once per test, and a structural validator over them.
//!
//! [`shared`] reads a file there and applies the repository's rule for shared data: when it
//! is absent a test prints a note and passes, except under CI (`CI=true`), where it fails so
//! that a missing data set can never turn conformance tests into no-ops.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

/// A JSON file under `../shared/fhir/`; `None` (with a note) when absent outside CI.
pub(crate) fn shared(path: &str) -> Option<Value> {
    crate::testdata::fhir_json(path)
}

/// One element of a type (a resource, data type or backbone path).
#[derive(Debug, Clone)]
pub(crate) struct ElementDef {
    /// Type codes; a backbone element's type is its own path, a `contentReference` the path
    /// it names.
    pub types: Vec<String>,
    pub min: u64,
    pub many: bool,
    /// `value[x]`-style: the JSON name carries a type suffix.
    pub choice: bool,
    /// The binding's strength and value set canonical (with its `|version`, as published).
    pub binding: Option<(String, String)>,
    /// The element's `short` text (for a `code` with a small required value set, its codes
    /// joined by ` | `).
    pub short: Option<String>,
}

/// A version's definitions.
pub(crate) struct Official {
    resources: HashSet<String>,
    elements: HashMap<String, Vec<(String, ElementDef)>>,
    params: HashMap<(String, String), String>,
    urls: HashMap<String, Vec<String>>,
}

impl Official {
    /// `dir` is `r4`, `r4b` or `r5`.
    pub(crate) fn load(dir: &str) -> Option<Official> {
        let mut out = Official { resources: HashSet::new(), elements: HashMap::new(), params: HashMap::new(), urls: HashMap::new() };
        let (definitions, search) = match dir {
            "r5" => ("data".to_owned(), "data/search-parameters-r5.json".to_owned()),
            _ => (format!("data/{dir}"), format!("data/{dir}/search-parameters.json")),
        };
        for file in ["profiles-resources.json", "profiles-types.json"] {
            let bundle = shared(&format!("{definitions}/{file}"))?;
            for sd in bundle["entry"].as_array().into_iter().flatten().map(|e| &e["resource"]) {
                if sd["resourceType"] != "StructureDefinition" || sd["derivation"] == "constraint" {
                    continue;
                }
                if sd["kind"] == "resource" && sd["abstract"] != true {
                    out.resources.insert(sd["id"].as_str().unwrap_or_default().to_owned());
                }
                for el in sd["snapshot"]["element"].as_array().into_iter().flatten() {
                    let path = el["path"].as_str().unwrap_or_default();
                    let Some((parent, name)) = path.rsplit_once('.') else { continue };
                    let codes: Vec<String> =
                        el["type"].as_array().into_iter().flatten().filter_map(|t| t["code"].as_str()).map(str::to_owned).collect();
                    let types = match (el["contentReference"].as_str(), codes.first().map(String::as_str)) {
                        (Some(r), _) => vec![r.trim_start_matches('#').to_owned()],
                        (None, Some("BackboneElement" | "Element")) if codes.len() == 1 => vec![path.to_owned()],
                        _ => codes,
                    };
                    let def = ElementDef {
                        types,
                        min: el["min"].as_u64().unwrap_or(0),
                        many: el["max"].as_str() != Some("1") && el["max"].as_str() != Some("0"),
                        choice: name.ends_with("[x]"),
                        binding: el["binding"]["strength"]
                            .as_str()
                            .zip(el["binding"]["valueSet"].as_str())
                            .map(|(strength, vs)| (strength.to_owned(), vs.to_owned())),
                        short: el["short"].as_str().map(str::to_owned),
                    };
                    out.elements.entry(parent.to_owned()).or_default().push((name.trim_end_matches("[x]").to_owned(), def));
                }
            }
        }
        for sp in shared(&search)?["entry"].as_array().into_iter().flatten().map(|e| &e["resource"]) {
            let bases: Vec<String> = sp["base"].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect();
            let (Some(code), Some(url)) = (sp["code"].as_str(), sp["url"].as_str()) else { continue };
            for b in &bases {
                out.params.insert((b.clone(), code.to_owned()), url.to_owned());
            }
            out.urls.insert(url.to_owned(), bases);
        }
        Some(out)
    }

    /// A concrete resource type of this version.
    pub(crate) fn is_resource(&self, ty: &str) -> bool {
        self.resources.contains(ty)
    }

    /// The element `name` of `ty`.
    pub(crate) fn element(&self, ty: &str, name: &str) -> Option<&ElementDef> {
        self.elements.get(ty)?.iter().find(|(n, _)| n == name).map(|(_, d)| d)
    }

    /// Every element of `ty`.
    pub(crate) fn elements(&self, ty: &str) -> &[(String, ElementDef)] {
        self.elements.get(ty).map(Vec::as_slice).unwrap_or_default()
    }

    /// A search parameter `code` applies to `base` (directly or through Resource/DomainResource).
    pub(crate) fn has_param(&self, base: &str, code: &str) -> bool {
        ["Resource", "DomainResource", base].iter().any(|b| self.params.contains_key(&((*b).to_owned(), code.to_owned())))
    }

    /// The bases of the parameter with this canonical url.
    pub(crate) fn param_bases(&self, url: &str) -> Option<&[String]> {
        self.urls.get(url).map(Vec::as_slice)
    }

    /// Structural problems of `value` as an instance of `ty`: unknown elements, a list where
    /// one value is allowed (or the reverse), missing required elements, a JSON kind that does
    /// not fit a primitive. Not checked: invariants, bindings, profiles, references, choice
    /// suffixes beyond their type name.
    pub(crate) fn structure(&self, ty: &str, value: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        self.check(ty, value, ty, &mut errors);
        errors
    }

    fn check(&self, ty: &str, value: &Value, path: &str, errors: &mut Vec<String>) {
        let first = ty.chars().next().unwrap_or('a');
        if ty.starts_with("http://hl7.org/fhirpath/System.") || first.is_ascii_lowercase() && !ty.contains('.') {
            let fits = match ty {
                "boolean" | "http://hl7.org/fhirpath/System.Boolean" => value.is_boolean(),
                "integer" | "unsignedInt" | "positiveInt" | "decimal" | "integer64" => value.is_number(),
                _ => value.is_string(),
            };
            if !fits {
                errors.push(format!("{path}: {value} is not a {ty}"));
            }
            return;
        }
        let Some(obj) = value.as_object() else {
            errors.push(format!("{path}: expected an object ({ty})"));
            return;
        };
        for (key, v) in obj {
            if key == "resourceType" || key.starts_with('_') {
                continue;
            }
            let found = self.element(ty, key).map(|d| (d, None)).or_else(|| {
                self.elements(ty).iter().filter(|(_, d)| d.choice).find_map(|(n, d)| {
                    let suffix = key.strip_prefix(n.as_str())?;
                    d.types.iter().find(|t| t.eq_ignore_ascii_case(suffix)).map(|t| (d, Some(t.clone())))
                })
            });
            let Some((def, chosen)) = found else {
                errors.push(format!("{path}: unknown element '{key}'"));
                continue;
            };
            let at = format!("{path}.{key}");
            let items: Vec<&Value> = match (v, def.many) {
                (Value::Array(a), true) => a.iter().collect(),
                (Value::Array(_), false) => {
                    errors.push(format!("{at}: a list where one value is allowed"));
                    continue;
                }
                (_, true) => {
                    errors.push(format!("{at}: one value where a list is required"));
                    continue;
                }
                (v, false) => vec![v],
            };
            let Some(next) = chosen.or_else(|| def.types.first().cloned()) else { continue };
            for (i, item) in items.into_iter().enumerate() {
                self.check(&next, item, &format!("{at}[{i}]"), errors);
            }
        }
        for (name, def) in self.elements(ty) {
            let present = if def.choice { obj.keys().any(|k| k.starts_with(name.as_str())) } else { obj.contains_key(name) };
            if def.min > 0 && !present {
                errors.push(format!("{path}: required element '{name}' is missing"));
            }
        }
    }
}
