//! The FHIRPath subset that R5 SearchParameter expressions use, compiled once and evaluated
//! over a resource held as `serde_json::Value`.
//!
//! In: an expression string (at most [`MAX_EXPRESSION_LEN`] bytes, nested at most
//! [`MAX_DEPTH`] levels). Out: a [`CompiledPath`], or a [`PathError`] carrying the byte offset
//! of the problem. Evaluation borrows from the resource and never copies it.
//! Supported: unions, member navigation with choice elements, `where`, `exists`, `empty`,
//! `first`, `last`, `not`, `hasValue`, `select`, `ofType`/`as`/`is` (functions and
//! operators), `resolve` (type learned from the reference string), `extension(url)`,
//! indexers, `=`, `!=`, `and`, `or`, `xor`, `implies`, literals, `$this`, `%resource`.
//! Anything else is rejected when compiling, never guessed at when evaluating. A full FHIRPath
//! engine can replace this file behind the same two types.

mod eval;
mod lex;
mod parse;

use serde_json::Value;

/// Longest expression accepted, in bytes. The longest official R5 expression is about 3 KB.
pub const MAX_EXPRESSION_LEN: usize = 8 * 1024;

/// Deepest nesting accepted: parentheses, function arguments and operator trees.
pub const MAX_DEPTH: usize = 64;

/// Most items one evaluation may produce before it gives up; bounds `%resource` loops.
pub const MAX_EVAL_ITEMS: usize = 1 << 20;

/// A parsed expression, ready to evaluate against any number of resources.
#[derive(Debug, Clone)]
pub struct CompiledPath {
    source: String,
    /// `None` for the empty path, which selects nothing.
    expr: Option<Expr>,
}

/// Why an expression was rejected or could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at offset {position}")]
pub struct PathError {
    /// Byte offset into the expression.
    pub position: usize,
    pub kind: PathErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathErrorKind {
    #[error("expression is longer than {max} bytes")]
    TooLong { max: usize },
    #[error("expression is nested deeper than {max} levels")]
    TooDeep { max: usize },
    #[error("unexpected character {0:?}")]
    UnexpectedChar(char),
    #[error("unterminated string or quoted identifier")]
    Unterminated,
    #[error("invalid escape sequence")]
    BadEscape,
    #[error("expected {expected}, found {found}")]
    Expected { expected: &'static str, found: String },
    #[error("unsupported operator {0:?}")]
    UnsupportedOperator(String),
    #[error("unsupported function {0}()")]
    UnsupportedFunction(String),
    #[error("unsupported variable {0:?}")]
    UnsupportedVariable(String),
    #[error("unknown type {0:?}")]
    UnknownType(String),
    #[error("unsupported literal {0:?}")]
    UnsupportedLiteral(String),
    #[error("{function}() takes {expected}")]
    Arguments { function: String, expected: &'static str },
    #[error("expected a single item, found {0}")]
    NotSingleton(usize),
    #[error("evaluation produced more than {max} items")]
    TooManyItems { max: usize },
}

impl PathError {
    pub(crate) fn new(position: usize, kind: PathErrorKind) -> Self {
        PathError { position, kind }
    }
}

impl CompiledPath {
    /// Compile `source`. Never panics; input over the size or depth bounds is an error.
    pub fn parse(source: &str) -> Result<CompiledPath, PathError> {
        let expr = parse::parse(source)?;
        Ok(CompiledPath { source: source.to_owned(), expr: Some(expr) })
    }

    /// The path that selects nothing: what a shared parameter compiles to for a base type
    /// its expression has no branch for.
    pub fn empty() -> CompiledPath {
        CompiledPath { source: String::new(), expr: None }
    }

    /// The expression text this path was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// True for [`CompiledPath::empty`].
    pub fn is_empty(&self) -> bool {
        self.expr.is_none()
    }

    /// The items the expression selects in `resource`, in document order per branch.
    ///
    /// The resource's own type comes from its `resourceType`. Boolean results (such as
    /// `Patient.deceased.exists() and ...`) come back as JSON booleans; string and number
    /// literals and type-only results of `resolve()` are not part of the output.
    pub fn evaluate<'a>(&self, resource: &'a Value) -> Result<Vec<&'a Value>, PathError> {
        match &self.expr {
            Some(expr) => eval::evaluate(expr, resource),
            None => Ok(Vec::new()),
        }
    }
}

impl std::str::FromStr for CompiledPath {
    type Err = PathError;

    fn from_str(source: &str) -> Result<Self, Self::Err> {
        CompiledPath::parse(source)
    }
}

/// One node of the syntax tree. `depth` is the height of the subtree, kept so that the
/// recursive evaluator and `Drop` stay within [`MAX_DEPTH`] frames.
#[derive(Debug, Clone)]
struct Expr {
    kind: ExprKind,
    pos: usize,
    depth: usize,
}

#[derive(Debug, Clone)]
enum ExprKind {
    /// A term followed by `.member`, `.function(...)` and `[index]` steps.
    Path {
        start: Term,
        steps: Vec<Step>,
    },
    /// `a | b | c`, flattened.
    Union(Vec<Expr>),
    Equality {
        negated: bool,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    Logic {
        op: LogicOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    /// `x is T` and `x as T`.
    TypeOp {
        test_only: bool,
        operand: Box<Expr>,
        ty: TypeSpec,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogicOp {
    And,
    Or,
    Xor,
    Implies,
}

#[derive(Debug, Clone)]
enum Term {
    /// A leading identifier: an upper-case one names a type and filters the input by it
    /// (`Task.owner` on a Task); a lower-case one is a member of the input (`system`).
    Identifier(String),
    Call(Call),
    Paren(Box<Expr>),
    This,
    /// `%resource`, `%rootResource`, `%context`.
    Root,
    Str(String),
    Num(f64),
    Bool(bool),
    /// `{}`
    Empty,
}

#[derive(Debug, Clone)]
enum Step {
    Member(String),
    Call(Call),
    Index(usize),
}

#[derive(Debug, Clone)]
struct Call {
    func: Func,
    pos: usize,
}

#[derive(Debug, Clone)]
enum Func {
    Where(Box<Expr>),
    Select(Box<Expr>),
    Exists(Option<Box<Expr>>),
    Empty,
    First,
    Last,
    Not,
    HasValue,
    OfType(TypeSpec),
    As(TypeSpec),
    Is(TypeSpec),
    Resolve,
    Extension(String),
}

/// A type named in `is`, `as` or `ofType`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TypeSpec {
    /// A FHIR type or resource name, with or without the `FHIR.` prefix.
    Fhir(String),
    /// `System.Boolean`, `System.String`, `System.Integer`, `System.Decimal`.
    System(SystemType),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SystemType {
    Boolean,
    String,
    Integer,
    Decimal,
}

#[cfg(test)]
mod tests;
