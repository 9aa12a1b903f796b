//! The registry of SearchParameters: the official set of each FHIR version (R4 and R4B with
//! the Subscriptions Backport IG's Subscription parameters, R5), looked up by type and code or
//! by url, each parameter compiling its expression per base type on first use.
//!
//! In: the compact definitions files written by `tools/gen_search_params.py --version
//! r4|r4b|r5` (embedded with `include_str!`). Out: [`SearchParams`] ([`SearchParams::current`]
//! for the instance's version, [`SearchParams::for_version`] for any) and [`SearchParam`],
//! whose `values` hand a resource's selected JSON nodes to `token` and `reference` matching.
//! A broken embedded file is a [`SearchError`], never a panic. Expressions are compiled with
//! the FHIRPath engine (`crate::fhir::fhirpath`) once per (parameter, base entry) and cached
//! for the life of the set. Which types a parameter's `Resource`/`DomainResource` base covers
//! is the set's own version's answer; the FHIRPath engine types values with the instance's
//! model (`Model::current`), so evaluation is exact for the instance's own set.

use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{OnceLock, PoisonError, RwLock};

use super::branches::split_union;
use super::compiled::{fits_type, CompiledPath};
use super::{types, SearchError};
use crate::fhir::version::{self, FhirVersion};

/// The official definitions, one compact object per parameter.
const R4_DEFINITIONS: &str = include_str!("search-parameters-r4.json");
const R4B_DEFINITIONS: &str = include_str!("search-parameters-r4b.json");
const R5_DEFINITIONS: &str = include_str!("search-parameters-r5.json");

/// SearchParameter.type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamType {
    Number,
    Date,
    String,
    Token,
    Reference,
    Composite,
    Quantity,
    Uri,
    Special,
}

impl ParamType {
    /// The FHIR code (`token`, `reference`, ...).
    pub fn code(self) -> &'static str {
        match self {
            ParamType::Number => "number",
            ParamType::Date => "date",
            ParamType::String => "string",
            ParamType::Token => "token",
            ParamType::Reference => "reference",
            ParamType::Composite => "composite",
            ParamType::Quantity => "quantity",
            ParamType::Uri => "uri",
            ParamType::Special => "special",
        }
    }

    /// Parse a FHIR code; `None` for anything outside the R5 value set.
    pub fn from_code(code: &str) -> Option<ParamType> {
        Some(match code {
            "number" => ParamType::Number,
            "date" => ParamType::Date,
            "string" => ParamType::String,
            "token" => ParamType::Token,
            "reference" => ParamType::Reference,
            "composite" => ParamType::Composite,
            "quantity" => ParamType::Quantity,
            "uri" => ParamType::Uri,
            "special" => ParamType::Special,
            _ => return None,
        })
    }
}

/// SearchParameter.component of a composite parameter.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParamComponent {
    /// Canonical url of the component's own SearchParameter.
    pub definition: String,
    /// FHIRPath relative to each item the composite's expression selects.
    pub expression: String,
}

/// One SearchParameter definition.
#[derive(Debug)]
pub struct SearchParam {
    /// Canonical url, e.g. `http://hl7.org/fhir/SearchParameter/Task-owner`.
    pub url: String,
    /// The name used in a search (`owner`).
    pub code: String,
    /// Resource types it applies to; `Resource` and `DomainResource` stand for their subtypes.
    pub base: Vec<String>,
    pub kind: ParamType,
    /// FHIRPath over all of `base`; absent for a few special and undefined parameters.
    pub expression: Option<String>,
    /// Resource types a reference parameter may point to.
    pub targets: Vec<String>,
    /// Parts of a composite parameter; empty for every other type.
    pub components: Vec<SearchParamComponent>,
    /// The FHIR version whose resource types `Resource` and `DomainResource` bases stand for.
    version: FhirVersion,
    /// One lazily compiled path per `base` entry, in the same order. A `Resource` or
    /// `DomainResource` entry serves every type that reaches the parameter through it.
    paths: Vec<OnceLock<Result<CompiledPath, SearchError>>>,
    /// The components' expressions, compiled once on first use (composite parameters only).
    component_paths: OnceLock<Result<Vec<crate::fhir::fhirpath::Expression>, String>>,
}

impl SearchParam {
    /// A parameter of the instance's version from its parts, its expression compiled per
    /// base type on first use.
    pub fn new(
        url: String,
        code: String,
        base: Vec<String>,
        kind: ParamType,
        expression: Option<String>,
        targets: Vec<String>,
        components: Vec<SearchParamComponent>,
    ) -> SearchParam {
        SearchParam {
            paths: base.iter().map(|_| OnceLock::new()).collect(),
            component_paths: OnceLock::new(),
            url,
            code,
            base,
            kind,
            expression,
            targets,
            components,
            version: version::instance(),
        }
    }

    /// The components' expressions, compiled once; the error names the one that does not
    /// compile.
    pub fn component_expressions(&self) -> Result<&[crate::fhir::fhirpath::Expression], String> {
        self.component_paths
            .get_or_init(|| {
                self.components
                    .iter()
                    .map(|c| {
                        crate::fhir::fhirpath::Expression::parse(&c.expression).map_err(|e| format!("component {}: {e}", c.expression))
                    })
                    .collect()
            })
            .as_deref()
            .map_err(Clone::clone)
    }

    /// Whether this parameter applies to resources of `resource_type`: its base names the
    /// type, or `Resource`, or `DomainResource` and the type is not Bundle, Binary or
    /// Parameters.
    pub fn applies_to(&self, resource_type: &str) -> bool {
        self.slot(resource_type).is_some()
    }

    /// Index into `base`/`paths` of the entry that covers `resource_type`.
    fn slot(&self, resource_type: &str) -> Option<usize> {
        let position = |name: &str| self.base.iter().position(|b| b == name);
        position(resource_type)
            .or_else(|| types::is_domain_resource_of(self.version, resource_type).then(|| position("DomainResource")).flatten())
            .or_else(|| types::is_resource_type_of(self.version, resource_type).then(|| position("Resource")).flatten())
    }

    /// The part of this parameter's expression that applies to `resource_type`, compiled
    /// once and cached.
    ///
    /// A union is cut into its branches and only those rooted at the type, at `Resource` or
    /// `DomainResource`, or at the context itself are kept; a branch rooted at the context is
    /// dropped when the FHIRPath engine refuses it for the type (R5 `clinical-date` has
    /// `(start | requestedPeriod.start).first()`, meant for Appointment, among the branches
    /// for all its bases). A type with no branch gets [`CompiledPath::empty`]. Errors: the
    /// parameter does not apply to the type, has no expression, or the kept text does not
    /// compile.
    pub fn path_for(&self, resource_type: &str) -> Result<&CompiledPath, SearchError> {
        let index = self
            .slot(resource_type)
            .ok_or_else(|| SearchError::NotApplicable { url: self.url.clone(), resource_type: resource_type.to_owned() })?;
        let (Some(cell), Some(key)) = (self.paths.get(index), self.base.get(index)) else {
            return Err(SearchError::NotApplicable { url: self.url.clone(), resource_type: resource_type.to_owned() });
        };
        cell.get_or_init(|| self.compile(key)).as_ref().map_err(Clone::clone)
    }

    /// Compile the branches for the base entry `key` (a type, `Resource` or `DomainResource`).
    fn compile(&self, key: &str) -> Result<CompiledPath, SearchError> {
        let expression = self.expression.as_deref().ok_or_else(|| SearchError::NoExpression { url: self.url.clone() })?;
        let branches = split_union(expression);
        let subset = if branches.len() > 1 {
            let is_domain = types::is_domain_resource_of(self.version, key);
            let kept: Vec<&str> = branches
                .iter()
                .filter(|b| b.applies_to(key, is_domain))
                .filter(|b| !b.roots.is_empty() || fits_type(b.text, key))
                .map(|b| b.text)
                .collect();
            if kept.is_empty() {
                return Ok(CompiledPath::empty());
            }
            kept.join(" | ")
        } else {
            // One branch: a type mismatch already selects nothing at evaluation time.
            expression.to_owned()
        };
        CompiledPath::parse(&subset).map_err(|source| SearchError::Path {
            url: self.url.clone(),
            resource_type: key.to_owned(),
            expression: subset,
            source: Box::new(source),
        })
    }

    /// The JSON nodes this parameter selects in `resource`, which must be a `resource_type`,
    /// with Boolean results as JSON booleans (see [`CompiledPath::evaluate`]).
    pub fn values<'a>(&self, resource_type: &str, resource: &'a Value) -> Result<Vec<&'a Value>, SearchError> {
        let found = resource.get("resourceType").and_then(Value::as_str);
        if found != Some(resource_type) {
            return Err(SearchError::ResourceType { expected: resource_type.to_owned(), found: found.unwrap_or("(none)").to_owned() });
        }
        self.path_for(resource_type)?.evaluate(resource).map_err(|source| SearchError::Evaluation {
            url: self.url.clone(),
            resource_type: resource_type.to_owned(),
            source: Box::new(source),
        })
    }
}

/// A set of SearchParameters indexed by base type and code, and by url.
#[derive(Debug)]
pub struct SearchParams {
    /// The FHIR version the official parameters are of.
    version: FhirVersion,
    params: Vec<SearchParam>,
    by_url: HashMap<String, usize>,
    /// base type -> code -> index into `params`.
    by_base: HashMap<String, HashMap<String, usize>>,
    /// Parameters defined by SearchParameter resources stored in Herald, consulted after the
    /// official ones. Each registered version is leaked so that compiled queries and bound
    /// filters can keep `&'static` references to it; versions are few (an administrator's
    /// writes), and a replaced version stays valid for filters still bound to it.
    custom: RwLock<Custom>,
}

#[derive(Debug, Default)]
struct Custom {
    by_url: HashMap<String, &'static SearchParam>,
    /// base type -> code -> parameter.
    by_base: HashMap<String, HashMap<String, &'static SearchParam>>,
}

/// The on-disk shape of one parameter in the compact file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Definition {
    url: String,
    code: String,
    base: Vec<String>,
    #[serde(rename = "type")]
    kind: String,
    expression: Option<String>,
    target: Vec<String>,
    #[serde(default)]
    component: Vec<SearchParamComponent>,
}

impl SearchParams {
    /// The official set of `version`, parsed from the embedded file on first use and shared
    /// after. Custom parameters registered on it stay with it.
    pub fn for_version(version: FhirVersion) -> Result<&'static SearchParams, SearchError> {
        static R4: OnceLock<Result<SearchParams, SearchError>> = OnceLock::new();
        static R4B: OnceLock<Result<SearchParams, SearchError>> = OnceLock::new();
        static R5: OnceLock<Result<SearchParams, SearchError>> = OnceLock::new();
        let (cell, text) = match version {
            FhirVersion::R4 => (&R4, R4_DEFINITIONS),
            FhirVersion::R4B => (&R4B, R4B_DEFINITIONS),
            FhirVersion::R5 => (&R5, R5_DEFINITIONS),
        };
        cell.get_or_init(|| SearchParams::from_compact_json(text, version)).as_ref().map_err(Clone::clone)
    }

    /// The official R5 set ([`SearchParams::for_version`] for R5).
    pub fn r5() -> Result<&'static SearchParams, SearchError> {
        SearchParams::for_version(FhirVersion::R5)
    }

    /// The official set of the FHIR version this instance serves (`fhir::version::instance`).
    pub fn current() -> Result<&'static SearchParams, SearchError> {
        SearchParams::for_version(version::instance())
    }

    /// Build a set of `version`'s parameters from text in the compact format of
    /// `tools/gen_search_params.py`. Errors on malformed JSON, an unknown type, or a duplicate
    /// url or (base, code).
    pub fn from_compact_json(text: &str, version: FhirVersion) -> Result<SearchParams, SearchError> {
        let definitions: Vec<Definition> = serde_json::from_str(text).map_err(|e| SearchError::Definitions(e.to_string()))?;
        let mut set = SearchParams {
            version,
            params: Vec::with_capacity(definitions.len()),
            by_url: HashMap::with_capacity(definitions.len()),
            by_base: HashMap::new(),
            custom: RwLock::new(Custom::default()),
        };
        for definition in definitions {
            let kind = ParamType::from_code(&definition.kind)
                .ok_or_else(|| SearchError::Definitions(format!("{}: unknown type {:?}", definition.url, definition.kind)))?;
            let index = set.params.len();
            if set.by_url.insert(definition.url.clone(), index).is_some() {
                return Err(SearchError::Definitions(format!("duplicate url {}", definition.url)));
            }
            for base in &definition.base {
                let codes = set.by_base.entry(base.clone()).or_default();
                if codes.insert(definition.code.clone(), index).is_some() {
                    return Err(SearchError::Definitions(format!("two parameters named {} on {base}", definition.code)));
                }
            }
            set.params.push(SearchParam {
                paths: definition.base.iter().map(|_| OnceLock::new()).collect(),
                component_paths: OnceLock::new(),
                url: definition.url,
                code: definition.code,
                base: definition.base,
                kind,
                expression: definition.expression,
                targets: definition.target,
                components: definition.component,
                version,
            });
        }
        Ok(set)
    }

    /// The parameter `code` that applies to `resource_type`: one defined on the type itself,
    /// else on `DomainResource` (for DomainResource types), else on `Resource`.
    pub fn get(&self, resource_type: &str, code: &str) -> Option<&SearchParam> {
        let lookup = |base: &str| self.by_base.get(base).and_then(|codes| codes.get(code)).and_then(|&i| self.params.get(i));
        let v = self.version;
        let core = lookup(resource_type)
            .or_else(|| types::is_domain_resource_of(v, resource_type).then(|| lookup("DomainResource")).flatten())
            .or_else(|| types::is_resource_type_of(v, resource_type).then(|| lookup("Resource")).flatten());
        core.or_else(|| {
            let custom = self.custom.read().unwrap_or_else(PoisonError::into_inner);
            let lookup = |base: &str| custom.by_base.get(base).and_then(|codes| codes.get(code)).copied();
            lookup(resource_type)
                .or_else(|| types::is_domain_resource_of(v, resource_type).then(|| lookup("DomainResource")).flatten())
                .or_else(|| types::is_resource_type_of(v, resource_type).then(|| lookup("Resource")).flatten())
        })
    }

    /// The parameter with canonical url `url`.
    pub fn by_url(&self, url: &str) -> Option<&SearchParam> {
        self.by_url
            .get(url)
            .and_then(|&i| self.params.get(i))
            .or_else(|| self.custom.read().unwrap_or_else(PoisonError::into_inner).by_url.get(url).copied())
    }

    /// Whether `url` names one of the official parameters (which cannot be redefined).
    pub fn is_official(&self, url: &str) -> bool {
        self.by_url.contains_key(url)
    }

    /// The url of a parameter other than `except_url` that already answers to `code` on
    /// `base` (official or custom): a new definition must not shadow it.
    pub fn code_taken(&self, base: &str, code: &str, except_url: &str) -> Option<String> {
        if let Some(p) = self.by_base.get(base).and_then(|codes| codes.get(code)).and_then(|&i| self.params.get(i)) {
            return Some(p.url.clone());
        }
        let custom = self.custom.read().unwrap_or_else(PoisonError::into_inner);
        custom.by_base.get(base).and_then(|codes| codes.get(code)).filter(|p| p.url != except_url).map(|p| p.url.clone())
    }

    /// Make a custom parameter visible to every later lookup, replacing an earlier version
    /// with the same url.
    pub fn register_custom(&self, param: SearchParam) {
        self.unregister_custom(&param.url);
        let param: &'static SearchParam = Box::leak(Box::new(param));
        let mut custom = self.custom.write().unwrap_or_else(PoisonError::into_inner);
        custom.by_url.insert(param.url.clone(), param);
        for base in &param.base {
            custom.by_base.entry(base.clone()).or_default().insert(param.code.clone(), param);
        }
    }

    /// Stop answering lookups with the custom parameter `url`.
    pub fn unregister_custom(&self, url: &str) {
        let mut custom = self.custom.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = custom.by_url.remove(url) {
            for base in &old.base {
                if let Some(codes) = custom.by_base.get_mut(base) {
                    if codes.get(&old.code).is_some_and(|p| p.url == url) {
                        codes.remove(&old.code);
                    }
                }
            }
        }
    }

    /// The custom parameters now registered.
    pub fn custom_params(&self) -> Vec<&'static SearchParam> {
        self.custom.read().unwrap_or_else(PoisonError::into_inner).by_url.values().copied().collect()
    }

    /// The FHIR version of the official parameters.
    pub fn version(&self) -> FhirVersion {
        self.version
    }

    /// Every official parameter, sorted by url ([`SearchParams::custom_params`] lists the
    /// others).
    pub fn iter(&self) -> impl Iterator<Item = &SearchParam> {
        self.params.iter()
    }

    pub fn len(&self) -> usize {
        self.params.len()
    }

    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }
}
