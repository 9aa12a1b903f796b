//! The FHIR type model a FHIRPath engine navigates by: every data type, resource and
//! backbone element with its base type and its elements (name, types, cardinality, choice),
//! one model per FHIR version Herald serves (R4 4.0.1, R4B 4.3.0, R5 5.0.0).
//!
//! In: `model-r4.json`, `model-r4b.json`, `model-r5.json`, generated from the official
//! StructureDefinitions by `tools/gen_fhir_model.py --version r4|r4b|r5` (do not edit them)
//! and embedded with `include_str!`. Each is parsed and checked once, on first use of
//! [`Model::for_version`]; [`Model::current`] is the model of the instance's version
//! (`fhir::version::instance`), the one every non-test caller uses. Out: [`Model`] lookups by
//! type name, by FHIRPath element name ([`Model::element`]) and by JSON property name
//! ([`Model::property`]), subtype tests, and the concrete resource types
//! ([`Model::resource_types`]). Backbone elements are pseudo-types named by their path
//! (`Patient.contact`); `contentReference` elements point at the pseudo-type they reuse.
//! The roots differ by version: `Base` in R5, `Element` and `Resource` in R4 and R4B.
//! Each element also carries its `isSummary` flag and minimum cardinality, which
//! [`summary`] uses to shape `_summary=true` and `_summary=text`.
//!
//! Nothing here does IO or panics: a malformed embedded file is a [`ModelError`].

use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::OnceLock;

use crate::fhir::version::{self, FhirVersion};

/// The generated models, one type per line.
const R4_MODEL: &str = include_str!("model-r4.json");
const R4B_MODEL: &str = include_str!("model-r4b.json");
const R5_MODEL: &str = include_str!("model-r5.json");

/// Longest base chain accepted, in types (R5's longest is 6: uuid -> uri -> PrimitiveType ->
/// DataType -> Element -> Base); a bound keeps a damaged file from looping.
const MAX_BASE_DEPTH: usize = 16;

/// What a type is. Serialised as the StructureDefinition `kind` codes plus two of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    PrimitiveType,
    ComplexType,
    Resource,
    /// A backbone element's pseudo-type, named by its path (`Patient.contact`).
    Backbone,
    /// A FHIRPath system type (`System.String`), the type of primitive values, `Element.id`,
    /// `Resource.id` and `Extension.url`.
    System,
}

/// One element of a type, as FHIRPath names it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Element {
    /// The name without `[x]`: `value` for `Observation.value[x]`.
    pub name: String,
    /// Type names, each a key of the model: FHIR types (`date`, `HumanName`), pseudo-types
    /// (`Patient.contact`) or system types (`System.String`). Several only on choice elements.
    #[serde(rename = "type")]
    pub types: Vec<String>,
    /// Max cardinality is not 1.
    #[serde(default)]
    pub many: bool,
    /// A choice element (`value[x]`): in JSON the name carries a capitalised type suffix.
    #[serde(default)]
    pub choice: bool,
    /// Marked `isSummary` in the definition: part of `_summary=true` (`s` in the file).
    #[serde(default, rename = "s")]
    pub summary: bool,
    /// Minimum cardinality; only written when at least 1 (a mandatory element).
    #[serde(default)]
    pub min: u32,
    /// For system-typed elements, the FHIR type the definition says they stand for
    /// (`Resource.id` is `id`, `Extension.url` is `uri`), as stated by the defining type.
    #[serde(default, rename = "fhirType")]
    pub fhir_type: Option<String>,
}

impl Element {
    /// At least one occurrence is required (`min` >= 1).
    pub fn is_mandatory(&self) -> bool {
        self.min >= 1
    }

    /// Shown by `_summary=true`: marked isSummary, or mandatory (FHIR search.html#summary,
    /// "plus mandatory elements").
    pub fn in_summary(&self) -> bool {
        self.summary || self.is_mandatory()
    }
}

/// One type: a StructureDefinition, a backbone pseudo-type or a system type.
#[derive(Debug)]
pub struct TypeInfo {
    pub name: String,
    pub kind: Kind,
    /// The parent type (`Patient` -> `DomainResource`); `None` for `Base` and system types.
    pub base: Option<String>,
    pub is_abstract: bool,
    /// R5 interfaces declared by the structuredefinition-implements extension (ValueSet
    /// implements MetadataResource). Not part of the base chain; see [`Model::implements`].
    pub implements: Vec<String>,
    /// Elements this type adds or redefines, in definition order; inherited ones are found
    /// through `base`.
    elements: Vec<Element>,
    /// Element name -> index into `elements`.
    index: HashMap<String, usize>,
}

impl TypeInfo {
    /// The elements this type defines itself, in definition order.
    pub fn own_elements(&self) -> &[Element] {
        &self.elements
    }

    /// An element this type defines itself, without looking at its base types.
    pub fn own_element(&self, name: &str) -> Option<&Element> {
        self.index.get(name).and_then(|&i| self.elements.get(i))
    }
}

/// The embedded model file is not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelError {
    /// Not JSON of the expected shape.
    Parse(String),
    /// Well-formed, but inconsistent (an unknown type named, a base cycle, a duplicate).
    Invalid(String),
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelError::Parse(msg) => write!(f, "FHIR type model cannot be parsed: {msg}"),
            ModelError::Invalid(msg) => write!(f, "FHIR type model is inconsistent: {msg}"),
        }
    }
}

impl std::error::Error for ModelError {}

/// The whole type model. Build it with [`Model::for_version`] or [`Model::current`]
/// (embedded, shared) or [`Model::from_json`].
#[derive(Debug)]
pub struct Model {
    fhir_version: String,
    types: HashMap<String, TypeInfo>,
    /// Constraint profiles usable as type names (`SimpleQuantity` -> `Quantity`).
    aliases: HashMap<String, String>,
    /// The concrete (non-abstract) resource types, sorted.
    resource_types: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawModel {
    fhir_version: String,
    aliases: BTreeMap<String, String>,
    types: Vec<RawType>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawType {
    name: String,
    kind: Kind,
    #[serde(default)]
    base: Option<String>,
    #[serde(default, rename = "abstract")]
    is_abstract: bool,
    #[serde(default)]
    implements: Vec<String>,
    elements: Vec<Element>,
}

impl Model {
    /// The official model of `version`, parsed on first call and shared afterwards.
    pub fn for_version(version: FhirVersion) -> Result<&'static Model, ModelError> {
        static R4: OnceLock<Result<Model, ModelError>> = OnceLock::new();
        static R4B: OnceLock<Result<Model, ModelError>> = OnceLock::new();
        static R5: OnceLock<Result<Model, ModelError>> = OnceLock::new();
        let (cell, text) = match version {
            FhirVersion::R4 => (&R4, R4_MODEL),
            FhirVersion::R4B => (&R4B, R4B_MODEL),
            FhirVersion::R5 => (&R5, R5_MODEL),
        };
        cell.get_or_init(|| Model::from_json(text)).as_ref().map_err(Clone::clone)
    }

    /// The official FHIR R5 model ([`Model::for_version`] for R5).
    pub fn r5() -> Result<&'static Model, ModelError> {
        Model::for_version(FhirVersion::R5)
    }

    /// The model of the FHIR version this instance serves (`fhir::version::instance`).
    pub fn current() -> Result<&'static Model, ModelError> {
        Model::for_version(version::instance())
    }

    /// Parse and check a model file in the format `tools/gen_fhir_model.py` writes.
    pub fn from_json(text: &str) -> Result<Model, ModelError> {
        let raw: RawModel = serde_json::from_str(text).map_err(|e| ModelError::Parse(e.to_string()))?;
        let mut types = HashMap::with_capacity(raw.types.len());
        for t in raw.types {
            let mut index = HashMap::with_capacity(t.elements.len());
            for (i, element) in t.elements.iter().enumerate() {
                if element.types.is_empty() || (element.types.len() > 1 && !element.choice) {
                    return Err(invalid(format!("{}.{} has {} types", t.name, element.name, element.types.len())));
                }
                if index.insert(element.name.clone(), i).is_some() {
                    return Err(invalid(format!("{}.{} is defined twice", t.name, element.name)));
                }
            }
            if types.contains_key(&t.name) {
                return Err(invalid(format!("type {} is defined twice", t.name)));
            }
            let info = TypeInfo {
                name: t.name.clone(),
                kind: t.kind,
                base: t.base,
                is_abstract: t.is_abstract,
                implements: t.implements,
                elements: t.elements,
                index,
            };
            types.insert(t.name, info);
        }
        let mut resource_types: Vec<String> =
            types.values().filter(|t| t.kind == Kind::Resource && !t.is_abstract).map(|t| t.name.clone()).collect();
        resource_types.sort();
        let model = Model { fhir_version: raw.fhir_version, types, aliases: raw.aliases.into_iter().collect(), resource_types };
        model.check()?;
        Ok(model)
    }

    /// Every name the file mentions resolves, and every base chain ends.
    fn check(&self) -> Result<(), ModelError> {
        for (alias, target) in &self.aliases {
            if self.types.contains_key(alias) || !self.types.contains_key(target) {
                return Err(invalid(format!("alias {alias} -> {target}")));
            }
        }
        for t in self.types.values() {
            let mut seen = HashSet::new();
            let mut current = Some(t);
            while let Some(info) = current {
                if !seen.insert(info.name.as_str()) || seen.len() > MAX_BASE_DEPTH {
                    return Err(invalid(format!("base chain of {} does not end", t.name)));
                }
                current = match &info.base {
                    Some(base) => Some(self.types.get(base).ok_or_else(|| invalid(format!("{}: unknown base {base}", info.name)))?),
                    None => None,
                };
            }
            let named = t.implements.iter().chain(t.elements.iter().flat_map(|e| e.types.iter()));
            if let Some(unknown) = named.into_iter().find(|n| !self.types.contains_key(n.as_str())) {
                return Err(invalid(format!("{} names unknown type {unknown}", t.name)));
            }
        }
        Ok(())
    }

    /// The FHIR version the model was generated from (`5.0.0`).
    pub fn fhir_version(&self) -> &str {
        &self.fhir_version
    }

    /// The concrete resource types (`Patient`; not `Resource` or `DomainResource`), sorted.
    pub fn resource_types(&self) -> impl Iterator<Item = &str> {
        self.resource_types.iter().map(String::as_str)
    }

    /// A concrete resource type of this version, by its exact name (no aliases).
    pub fn is_resource_type(&self, name: &str) -> bool {
        self.types.get(name).is_some_and(|t| t.kind == Kind::Resource && !t.is_abstract)
    }

    /// A concrete resource type deriving from `DomainResource` (all but `Binary`, `Bundle`
    /// and `Parameters`).
    pub fn is_domain_resource(&self, name: &str) -> bool {
        self.is_resource_type(name) && self.is_subtype_of(name, "DomainResource")
    }

    /// A type by name: a FHIR type (`Patient`, `date`), a pseudo-type (`Patient.contact`), a
    /// system type (`System.String`), or an alias (`SimpleQuantity` gives `Quantity`).
    pub fn type_info(&self, name: &str) -> Option<&TypeInfo> {
        self.types.get(name).or_else(|| self.aliases.get(name).and_then(|target| self.types.get(target)))
    }

    /// All type names, aliases excluded, in no particular order.
    pub fn type_names(&self) -> impl Iterator<Item = &str> {
        self.types.keys().map(String::as_str)
    }

    /// The type and its base types, nearest first (`Patient`, `DomainResource`, `Resource`,
    /// `Base`). Empty for an unknown name.
    pub fn ancestors<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a TypeInfo> + 'a {
        let first = self.type_info(name);
        std::iter::successors(first, move |t| t.base.as_deref().and_then(|b| self.types.get(b))).take(MAX_BASE_DEPTH)
    }

    /// An element by its FHIRPath name (`value` for `value[x]`), on the type or any base type.
    pub fn element(&self, type_name: &str, element: &str) -> Option<&Element> {
        self.ancestors(type_name).find_map(|t| t.own_element(element))
    }

    /// Every element of a type, inherited ones first (`id`, `meta`, ... then its own), in
    /// definition order.
    pub fn elements(&self, type_name: &str) -> Vec<&Element> {
        let chain: Vec<&TypeInfo> = self.ancestors(type_name).collect();
        chain.iter().rev().flat_map(|t| t.elements.iter()).collect()
    }

    /// The element and type behind a JSON property of an object of `type_name`.
    ///
    /// `birthDate` gives (birthDate, `date`); a choice element is matched by its name plus a
    /// capitalised type code (`valueQuantity` gives (value, `Quantity`)), and its bare name
    /// (`value`) gives `None`, as JSON never uses it. Names starting with `_` (primitive
    /// extensions) and unknown names give `None`.
    pub fn property(&self, type_name: &str, json_name: &str) -> Option<(&Element, &str)> {
        if json_name.starts_with('_') {
            return None;
        }
        if let Some(element) = self.element(type_name, json_name) {
            return match element.types.as_slice() {
                [only] if !element.choice => Some((element, only.as_str())),
                _ => None,
            };
        }
        // Choice: split before each uppercase letter (`valueCodeable|Concept` and
        // `value|CodeableConcept` are both tried), first matching element wins.
        json_name.char_indices().filter(|&(i, c)| i > 0 && c.is_ascii_uppercase()).find_map(|(i, _)| {
            let (prefix, suffix) = json_name.split_at_checked(i)?;
            let element = self.element(type_name, prefix).filter(|e| e.choice)?;
            let code = element.types.iter().find(|code| is_capitalised(code, suffix))?;
            Some((element, code.as_str()))
        })
    }

    /// Whether `sub` is `sup` or derives from it through base types. Aliases resolve to their
    /// target; unknown names are subtypes of nothing. Interfaces do not count.
    pub fn is_subtype_of(&self, sub: &str, sup: &str) -> bool {
        match self.type_info(sup) {
            Some(target) => self.ancestors(sub).any(|t| t.name == target.name),
            None => false,
        }
    }

    /// Whether `name` (or one of its base types) declares the R5 interface `interface` (R4 and
    /// R4B models declare none)
    /// (`ValueSet` implements `MetadataResource` and, through it, `CanonicalResource`).
    pub fn implements(&self, name: &str, interface: &str) -> bool {
        let mut pending: Vec<&str> = self.ancestors(name).flat_map(|t| t.implements.iter().map(String::as_str)).collect();
        let mut seen = HashSet::new();
        while let Some(next) = pending.pop() {
            if next == interface {
                return true;
            }
            if seen.insert(next) {
                pending.extend(self.ancestors(next).flat_map(|t| t.implements.iter().map(String::as_str)));
            }
        }
        false
    }

    /// A resource type, abstract ones (`Resource`, `DomainResource`) included.
    pub fn is_resource(&self, name: &str) -> bool {
        self.type_info(name).is_some_and(|t| t.kind == Kind::Resource)
    }

    /// Whether the element `name` of `type_name` (a FHIRPath name, `value` for `value[x]`;
    /// backbone elements by their path type, `Task.input`) is shown by `_summary=true`.
    /// Unknown elements are not.
    pub fn is_summary_element(&self, type_name: &str, name: &str) -> bool {
        self.element(type_name, name).is_some_and(Element::in_summary)
    }

    /// Whether the element `name` of `type_name` is mandatory (`min` >= 1).
    pub fn is_mandatory_element(&self, type_name: &str, name: &str) -> bool {
        self.element(type_name, name).is_some_and(Element::is_mandatory)
    }

    /// A FHIR primitive type (`string`, `date`, `positiveInt`); system types are not.
    pub fn is_primitive(&self, name: &str) -> bool {
        self.type_info(name).is_some_and(|t| t.kind == Kind::PrimitiveType)
    }
}

/// `suffix` is `code` with its first letter in upper case (`dateTime` / `DateTime`).
fn is_capitalised(code: &str, suffix: &str) -> bool {
    let mut chars = code.chars();
    match chars.next() {
        Some(first) => suffix.strip_prefix(first.to_ascii_uppercase()) == Some(chars.as_str()),
        None => false,
    }
}

fn invalid(msg: String) -> ModelError {
    ModelError::Invalid(msg)
}

pub mod summary;
#[cfg(test)]
mod summary_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod version_tests;
