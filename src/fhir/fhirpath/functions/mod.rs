//! The function library, dispatched on the [`Func`] the parser resolved.
//!
//! - `collections`: existence, filtering, subsetting, combining, `repeat`, `aggregate`,
//!   `sort`, tree navigation, `iif`, `trace`, `defineVariable`.
//! - `strings`: string manipulation, regular expressions, encodings.
//! - `convert`: `toX`/`convertsToX` conversions and math.
//! - `fhir`: FHIR additions (`extension`, `resolve`, `hasValue`, boundaries, `conformsTo`),
//!   types, `not` and the clock.
//!
//! Two kinds of argument: "lambda" arguments are evaluated once per input item with `$this`
//! bound (`where`, `select`, `all`...); plain arguments are evaluated once against the
//! enclosing `$this`, as the spec's `substring(2, length() - 5)` test expects.

mod collections;
mod convert;
mod fhir;
mod strings;

pub(super) use convert::to_string as render;

use super::ast::{Expr, Func, TypeName};
use super::error::{ErrorKind, FhirPathError};
use super::eval::{Evaluator, Scope, Vars, R};
use super::ops::singleton;
use super::value::{Collection, Item};

pub(super) fn call<'a>(
    ev: &Evaluator<'a, '_>,
    func: Func,
    args: &[Expr],
    ty: Option<&TypeName>,
    input: Collection<'a>,
    scope: &Scope<'a>,
    pos: usize,
) -> R<(Collection<'a>, Vars<'a>)> {
    if func == Func::DefineVariable {
        return collections::define_variable(ev, args, input, scope, pos);
    }
    let cx = Call { ev, args, ty, scope, pos, func };
    let out = if let Some(out) = collections::call(&cx, &input)? {
        out
    } else if let Some(out) = strings::call(&cx, &input)? {
        out
    } else if let Some(out) = convert::call(&cx, &input)? {
        out
    } else if let Some(out) = fhir::call(&cx, &input)? {
        out
    } else {
        return Err(FhirPathError::semantic(pos, ErrorKind::UnknownFunction(func.name().to_owned())));
    };
    Ok((out, scope.vars.clone()))
}

/// One function invocation: what each implementation needs to read its arguments.
pub(super) struct Call<'c, 'a, 'e> {
    pub ev: &'c Evaluator<'a, 'e>,
    pub args: &'c [Expr],
    pub ty: Option<&'c TypeName>,
    pub scope: &'c Scope<'a>,
    pub pos: usize,
    pub func: Func,
}

impl<'a> Call<'_, 'a, '_> {
    /// Plain argument `i`, evaluated against the enclosing `$this`.
    pub(super) fn arg(&self, i: usize) -> R<Collection<'a>> {
        let Some(expr) = self.args.get(i) else {
            return Ok(Vec::new());
        };
        let focus: Collection<'a> = self.scope.this.clone().into_iter().collect();
        self.ev.eval(expr, &focus, self.scope)
    }

    /// Plain argument `i` as at most one System value.
    pub(super) fn arg_single(&self, i: usize) -> R<Option<Item<'a>>> {
        singleton(&self.arg(i)?, self.pos)
    }

    pub(super) fn arg_str(&self, i: usize) -> R<Option<std::rc::Rc<str>>> {
        match self.arg_single(i)? {
            None => Ok(None),
            Some(Item::Str(s)) => Ok(Some(s)),
            Some(_) => Err(self.error(&format!("{}() expects a String argument", self.func.name()))),
        }
    }

    pub(super) fn arg_int(&self, i: usize) -> R<Option<i64>> {
        match self.arg_single(i)? {
            None => Ok(None),
            Some(Item::Int(n) | Item::Long(n)) => Ok(Some(n)),
            Some(_) => Err(self.error(&format!("{}() expects an Integer argument", self.func.name()))),
        }
    }

    pub(super) fn error(&self, message: &str) -> FhirPathError {
        FhirPathError::execution(self.pos, ErrorKind::Invalid(message.to_owned()))
    }

    pub(super) fn semantic(&self, message: &str) -> FhirPathError {
        FhirPathError::semantic(self.pos, ErrorKind::Invalid(message.to_owned()))
    }

    /// The single input item as a System value, `None` for empty input, an error for more.
    pub(super) fn single(&self, input: &[Item<'a>]) -> R<Option<Item<'a>>> {
        singleton(input, self.pos)
    }
}
