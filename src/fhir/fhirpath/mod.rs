//! Herald's FHIRPath engine (FHIRPath N1 2.0.0 plus the 2.1 functions the R5 test suite
//! uses), evaluated directly over resources held as `serde_json::Value`.
//!
//! In: expression text, compiled once into an [`Expression`]; then any number of
//! evaluations, each against an [`Env`] naming the resource, extra variables (`%previous`,
//! `%current`), an optional [`Resolver`] for `resolve()`, and [`Limits`]. Out: a collection of
//! [`Output`] items, or a [`FhirPathError`] with the byte offset and class of the problem.
//! Never panics and never loops forever on input: text length and tree height are bounded
//! when compiling; steps, collection size, depth and time when evaluating.
//!
//! Map: `lex` → `parse` (into `ast`) at compile time; `eval` walks the tree, with `ops` for
//! operators, `functions/` for the library, `types` for the FHIR model (`crate::fhir::model`),
//! `value` for items, `temporal` and `quantity` for dates, times and UCUM quantities.

mod ast;
mod decimal;
mod error;
mod eval;
mod functions;
mod lex;
mod ops;
mod parse;
pub mod quantity;
mod roots;
pub mod temporal;
mod types;
mod value;

use std::time::Duration;

use serde_json::Value;

pub use error::{ErrorClass, ErrorKind, FhirPathError};

/// Longest expression accepted, in bytes. The longest official R5 SearchParameter
/// expression is about 3 KB (R4's and R4B's about 1.4 KB).
pub const MAX_EXPRESSION_LEN: usize = 16 * 1024;

/// Tallest syntax tree accepted: nesting of parentheses, arguments, operators and path
/// steps. Unions are flattened, so `a | b | ... | z` counts once. The tallest official R5
/// SearchParameter expression has height 7; at 64 the evaluator's worst case needs about
/// 1.5 MiB of stack in a debug build, within the 2 MiB of a tokio thread.
pub const MAX_DEPTH: usize = 64;

/// A compiled FHIRPath expression: parse once, evaluate many times, from many threads.
#[derive(Debug, Clone)]
pub struct Expression {
    source: String,
    root: ast::Expr,
    /// The resource elements every path of the expression starts from, when it is only such
    /// paths (`roots`).
    roots: Option<Vec<roots::Root>>,
}

/// Finds the resource a reference points to, for `resolve()`.
pub trait Resolver<'a> {
    /// `reference` is as written: relative (`Patient/123`), absolute, or versioned
    /// (`Patient/123/_history/2`). `None` when it cannot be resolved.
    fn resolve(&self, reference: &str) -> Option<&'a Value>;

    /// The target of a `Reference` element, given its `reference` (absent for a logical
    /// reference) and its `type` (a type name or StructureDefinition url). The default asks
    /// [`Resolver::resolve`] with the reference. A resolver that only needs the target's type,
    /// as search parameters' `resolve() is Patient` does, may answer from `type` when the
    /// reference is absent or opaque (`urn:uuid:...`).
    fn resolve_reference(&self, reference: Option<&str>, type_hint: Option<&str>) -> Option<&'a Value> {
        let _ = type_hint;
        reference.and_then(|r| self.resolve(r))
    }
}

/// Bounds on one evaluation. Exceeding any of them ends it with an
/// [`ErrorClass::Budget`] error.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Nodes visited plus items processed.
    pub max_steps: u64,
    /// Items in any one intermediate collection.
    pub max_items: usize,
    /// Nested evaluation frames.
    pub max_depth: usize,
    /// Wall-clock time, checked every few thousand steps.
    pub max_time: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_steps: 1_000_000, max_items: 100_000, max_depth: MAX_DEPTH + 8, max_time: Some(Duration::from_millis(250)) }
    }
}

/// What an expression is evaluated against.
pub struct Env<'a> {
    /// `%resource`, and the initial focus.
    resource: Option<&'a Value>,
    /// `%rootResource`; defaults to the resource.
    root_resource: Option<&'a Value>,
    /// `%context` when it differs from the resource.
    context: Option<value::Collection<'a>>,
    /// Named variables such as `previous` and `current`; `None` values are empty.
    variables: Vec<(String, Vec<&'a Value>)>,
    resolver: Option<&'a dyn Resolver<'a>>,
    limits: Limits,
}

impl<'a> Env<'a> {
    /// Evaluate against `resource` (`None`: an empty focus, for literal-only expressions).
    pub fn new(resource: Option<&'a Value>) -> Env<'a> {
        Env { resource, root_resource: None, context: None, variables: Vec::new(), resolver: None, limits: Limits::default() }
    }

    /// Set `%rootResource`, for a resource contained in another one.
    pub fn with_root(mut self, root: &'a Value) -> Self {
        self.root_resource = Some(root);
        self
    }

    /// Define `%name` as a resource, or as the empty collection when `value` is `None`
    /// (`%previous` on create, `%current` on delete).
    pub fn with_variable(mut self, name: &str, value: Option<&'a Value>) -> Self {
        self.variables.push((name.to_owned(), value.into_iter().collect()));
        self
    }

    pub fn with_resolver(mut self, resolver: &'a dyn Resolver<'a>) -> Self {
        self.resolver = Some(resolver);
        self
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}

/// One item of a result.
#[derive(Debug, Clone)]
pub struct Output<'a>(value::Item<'a>);

impl<'a> Output<'a> {
    /// The JSON element this item is, when it came from a resource.
    pub fn node(&self) -> Option<&'a Value> {
        match &self.0 {
            value::Item::Node(n) => n.value,
            _ => None,
        }
    }

    /// The `_name` object of a primitive element that has only an id or extensions
    /// (`"_birthDate": {"extension": [...]}` without `birthDate`), where [`Output::node`]
    /// has no value to give.
    pub fn shadow(&self) -> Option<&'a Value> {
        match &self.0 {
            value::Item::Node(n) if n.value.is_none() => n.shadow,
            _ => None,
        }
    }

    /// The item's type: `("FHIR", "HumanName")`, `("System", "Boolean")`.
    pub fn type_name(&self) -> (&'static str, String) {
        self.0.type_name()
    }

    /// `Some(b)` for a Boolean (System or FHIR).
    pub fn as_bool(&self) -> Option<bool> {
        match self.0.to_system() {
            value::Item::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// What `toString()` gives for this item; `None` for complex elements.
    pub fn to_fhirpath_string(&self) -> Option<String> {
        functions::render(&self.0.to_system())
    }

    /// The item as JSON: the element itself, or a System value rendered as JSON.
    pub fn to_json(&self) -> Value {
        self.0.to_json()
    }
}

impl Expression {
    /// Compile `source`. Errors carry the byte offset of the problem.
    pub fn parse(source: &str) -> Result<Expression, FhirPathError> {
        let root = parse::parse(source)?;
        let roots = roots::roots(&root);
        Ok(Expression { source: source.to_owned(), root, roots })
    }

    /// Whether evaluating on `resource` (as the resource, without context) certainly selects
    /// nothing and raises no error, decided without evaluating: the expression is a union of
    /// paths from elements the resource does not have (see `roots`). `false` when it cannot
    /// tell.
    pub fn selects_nothing_from(&self, resource: &Value) -> bool {
        self.roots.as_deref().is_some_and(|roots| roots::selects_nothing(roots, resource))
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluate against `env`.
    pub fn evaluate<'a>(&self, env: &Env<'a>) -> Result<Vec<Output<'a>>, FhirPathError> {
        let ev = eval::Evaluator::new(env);
        let focus: value::Collection<'a> = match &env.context {
            Some(items) => items.clone(),
            None => env.resource.map(|r| value::Item::Node(value::Node::resource(r))).into_iter().collect(),
        };
        let scope = eval::Scope { this: focus.first().cloned(), index: None, total: None, vars: eval::Vars::default() };
        let items = ev.eval(&self.root, &focus, &scope)?;
        Ok(items.into_iter().map(Output).collect())
    }

    /// Evaluate as a criterion: singleton evaluation to a Boolean (`None` for an empty result).
    pub fn evaluate_bool(&self, env: &Env<'_>) -> Result<Option<bool>, FhirPathError> {
        let items = self.evaluate(env)?;
        let pos = 0;
        ops::to_bool(items.into_iter().map(|o| o.0).collect(), pos)
    }
}

impl std::str::FromStr for Expression {
    type Err = FhirPathError;

    fn from_str(source: &str) -> Result<Self, Self::Err> {
        Expression::parse(source)
    }
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
