//! Errors from compiling and evaluating FHIRPath, each with the byte offset it concerns.
//!
//! The class follows the FHIRPath test suite's `invalid` attribute: `syntax` (the text is not
//! FHIRPath), `semantic` (well-formed but meaningless: unknown function, wrong argument count,
//! an element the model does not have), `execution` (legal but failed on this data: a
//! collection where one item is required, incompatible operands). `Budget` is Herald's own: the
//! evaluation was stopped by its step, size or depth limit.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    Syntax,
    Semantic,
    Execution,
    Budget,
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorClass::Syntax => "syntax error",
            ErrorClass::Semantic => "semantic error",
            ErrorClass::Execution => "execution error",
            ErrorClass::Budget => "evaluation budget exceeded",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{class} at offset {position}: {kind}")]
pub struct FhirPathError {
    pub class: ErrorClass,
    /// Byte offset into the expression text.
    pub position: usize,
    pub kind: ErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("expression is longer than {max} bytes")]
    TooLong { max: usize },
    #[error("expression is nested deeper than {max} levels")]
    TooDeep { max: usize },
    #[error("unexpected character {0:?}")]
    UnexpectedChar(char),
    #[error("unterminated string, identifier or comment")]
    Unterminated,
    #[error("invalid escape sequence")]
    BadEscape,
    #[error("expected {expected}, found {found}")]
    Expected { expected: &'static str, found: String },
    #[error("invalid literal {0:?}")]
    BadLiteral(String),
    #[error("unknown function {0}()")]
    UnknownFunction(String),
    #[error("{function}() takes {expected}")]
    Arguments { function: String, expected: &'static str },
    #[error("unknown type {0:?}")]
    UnknownType(String),
    #[error("unknown variable %{0}")]
    UnknownVariable(String),
    #[error("variable %{0} is already defined")]
    Redefined(String),
    #[error("{type_name} has no element {element:?}")]
    UnknownElement { type_name: String, element: String },
    #[error("{0}")]
    Invalid(String),
    #[error("expected a single item, found {0}")]
    NotSingleton(usize),
    #[error("{operation} is not defined for {operands}")]
    Operands { operation: String, operands: String },
    #[error("evaluation took more than {max} steps")]
    Steps { max: u64 },
    #[error("evaluation produced a collection of more than {max} items")]
    TooManyItems { max: usize },
    #[error("evaluation nested deeper than {max} levels")]
    Recursion { max: usize },
    #[error("evaluation ran longer than {max_ms} ms")]
    Time { max_ms: u64 },
}

impl FhirPathError {
    pub(crate) fn syntax(position: usize, kind: ErrorKind) -> Self {
        FhirPathError { class: ErrorClass::Syntax, position, kind }
    }

    pub(crate) fn semantic(position: usize, kind: ErrorKind) -> Self {
        FhirPathError { class: ErrorClass::Semantic, position, kind }
    }

    pub(crate) fn execution(position: usize, kind: ErrorKind) -> Self {
        FhirPathError { class: ErrorClass::Execution, position, kind }
    }

    pub(crate) fn budget(position: usize, kind: ErrorKind) -> Self {
        FhirPathError { class: ErrorClass::Budget, position, kind }
    }
}
