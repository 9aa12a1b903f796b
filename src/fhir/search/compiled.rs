//! A SearchParameter expression compiled for one base type with Herald's FHIRPath engine
//! (`crate::fhir::fhirpath`), and what a search needs from its results.
//!
//! In: the branches of a parameter's expression kept for one type (see `branches`). Out:
//! [`CompiledPath`], whose `evaluate` hands back the JSON nodes the expression selects, plus
//! JSON booleans for Boolean results (`Patient.deceased.exists() and ...`). Other System
//! values (strings, numbers, dates computed by functions) are not part of a search value.
//!
//! `resolve()` in a search expression (`subject.where(resolve() is Patient)`) asks for the
//! target's *type*, which the search spec lets a server read from the reference itself. So
//! evaluation runs with [`TargetTypes`], a resolver that answers with a stub
//! `{"resourceType": T}` taken from the reference (`Type/id`, `.../Type/id/_history/v`, a
//! canonical) or from `Reference.type`; contained (`#id`) and Bundle targets are found by the
//! engine itself. Stubs never appear in the output. `fits_type` tells `params` which
//! context-rooted union branches the engine refuses for a type. Nothing here does IO.

use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::OnceLock;

use super::reference::parse_literal;
use super::types;
use crate::fhir::fhirpath::{Env, ErrorKind, Expression, FhirPathError, Resolver};

/// `true` and `false` as JSON, for Boolean results that are no element of the resource.
static TRUE: Value = Value::Bool(true);
static FALSE: Value = Value::Bool(false);

/// A compiled expression, or the empty path for a type the parameter has no branch for.
#[derive(Debug, Clone)]
pub struct CompiledPath {
    source: String,
    /// `None` for [`CompiledPath::empty`], which selects nothing.
    expression: Option<Expression>,
}

impl CompiledPath {
    /// Compile `source` with the FHIRPath engine. Never panics; the engine bounds length and
    /// nesting.
    pub fn parse(source: &str) -> Result<CompiledPath, FhirPathError> {
        Ok(CompiledPath { source: source.to_owned(), expression: Some(Expression::parse(source)?) })
    }

    /// The path that selects nothing: what a shared parameter compiles to for a base type
    /// its expression has no branch for.
    pub fn empty() -> CompiledPath {
        CompiledPath { source: String::new(), expression: None }
    }

    /// The expression text this path was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// True for [`CompiledPath::empty`].
    pub fn is_empty(&self) -> bool {
        self.expression.is_none()
    }

    /// The compiled engine expression; `None` for the empty path.
    pub fn expression(&self) -> Option<&Expression> {
        self.expression.as_ref()
    }

    /// What the expression selects in `resource`: its JSON nodes in engine order, and
    /// Boolean results as JSON booleans. The engine's default limits bound the work.
    pub fn evaluate<'a>(&self, resource: &'a Value) -> Result<Vec<&'a Value>, FhirPathError> {
        let Some(expression) = &self.expression else {
            return Ok(Vec::new());
        };
        // Most parameters of a type name elements a given resource does not have.
        if expression.selects_nothing_from(resource) {
            return Ok(Vec::new());
        }
        let env = Env::new(Some(resource)).with_resolver(&TargetTypes);
        let outputs = expression.evaluate(&env)?;
        Ok(outputs
            .iter()
            .filter_map(|out| match out.node() {
                Some(node) if TargetTypes::is_stub(node) => None,
                Some(node) => Some(node),
                None => out.as_bool().map(|b| if b { &TRUE } else { &FALSE }),
            })
            .collect())
    }
}

/// Whether `branch`, a union branch that starts from the context itself rather than from a
/// type name, can apply to a `resource_type`: false when the engine refuses it for that type
/// because it names an element the type does not have. Evaluating it on an empty resource of
/// the type is enough, since the engine checks each name against the model before it looks
/// at data. A branch that does not compile is kept, so that compiling reports it.
pub(super) fn fits_type(branch: &str, resource_type: &str) -> bool {
    let (Ok(expression), Some(stub)) = (Expression::parse(branch), TargetTypes::stub(resource_type)) else {
        return true;
    };
    !matches!(expression.evaluate(&Env::new(Some(stub))), Err(FhirPathError { kind: ErrorKind::UnknownElement { .. }, .. }))
}

/// Resolves a reference to a stub resource of the target's type; see the module header.
pub(crate) struct TargetTypes;

impl TargetTypes {
    /// One `{"resourceType": T}` per resource type of any FHIR version (a reference names a
    /// type; whether the version has it is not this resolver's question), built on first use.
    fn stubs() -> &'static HashMap<&'static str, Value> {
        static STUBS: OnceLock<HashMap<&'static str, Value>> = OnceLock::new();
        STUBS.get_or_init(|| {
            crate::fhir::version::FhirVersion::ALL
                .into_iter()
                .flat_map(types::resource_types_of)
                .map(|ty| {
                    let mut stub = Map::new();
                    stub.insert("resourceType".to_owned(), Value::String(ty.to_owned()));
                    (ty, Value::Object(stub))
                })
                .collect()
        })
    }

    fn stub(ty: &str) -> Option<&'static Value> {
        Self::stubs().get(ty)
    }

    /// Whether `node` is one of the stubs rather than part of the resource.
    fn is_stub(node: &Value) -> bool {
        let ty = node.get("resourceType").and_then(Value::as_str).unwrap_or("");
        Self::stub(ty).is_some_and(|stub| std::ptr::eq(stub, node))
    }
}

impl<'a> Resolver<'a> for TargetTypes {
    /// A literal reference or a canonical (`url|version`): the type named in its path.
    fn resolve(&self, reference: &str) -> Option<&'a Value> {
        let url = reference.split('|').next().unwrap_or(reference);
        parse_literal(url).and_then(|literal| Self::stub(literal.ty))
    }

    /// A Reference element: its literal reference, else its `type` (a resource type name or
    /// its StructureDefinition url), as R5 search reads `resolve() is T`.
    fn resolve_reference(&self, reference: Option<&str>, type_hint: Option<&str>) -> Option<&'a Value> {
        if let Some(found) = reference.and_then(parse_literal).and_then(|literal| Self::stub(literal.ty)) {
            return Some(found);
        }
        let ty = type_hint?;
        Self::stub(ty.strip_prefix("http://hl7.org/fhir/StructureDefinition/").unwrap_or(ty))
    }
}
