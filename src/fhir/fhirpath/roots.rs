//! Which top-level elements of a resource an expression can select anything from, so that an
//! evaluation that would certainly select nothing can be skipped.
//!
//! An expression qualifies when it is a union of paths that start at the resource
//! (`Task.owner`, `Resource.meta.lastUpdated`, a bare `owner`) and continue through
//! navigation, indexers, `as` and functions that give nothing, and raise nothing, for no
//! input (`where`, `select`, `ofType`, `first`, `resolve`, ...). Such an expression evaluated
//! on a resource with none of the starting elements navigates from the resource once per path,
//! finds nothing, and stops there. `exists()`, `count()`, operators and the like compute a
//! value from no input, so expressions with them do not qualify.
//!
//! At evaluation (`Expression::selects_nothing_from`), the starting element must also be one
//! the model knows for the resource's type: the engine refuses an unknown one with an error,
//! which skipping would hide.

use serde_json::{Map, Value};

use super::ast::{Expr, ExprKind, Func, Literal};
use super::types;

/// A path's first step into the resource.
#[derive(Debug, Clone)]
pub(super) struct Root {
    /// The leading type name (`Task` in `Task.owner`), if the path has one.
    type_name: Option<String>,
    element: String,
}

/// The roots of `expr`, or `None` when it does not qualify (see the module doc).
pub(super) fn roots(expr: &Expr) -> Option<Vec<Root>> {
    let mut out = Vec::new();
    collect(expr, &mut out).then_some(out)
}

fn is_type_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_uppercase())
}

fn collect(expr: &Expr, out: &mut Vec<Root>) -> bool {
    match &expr.kind {
        ExprKind::Union(items) => items.iter().all(|item| collect(item, out)),
        // A bare type name selects the resource itself: no element to look for.
        ExprKind::Member { target: None, name } => {
            if is_type_name(name) {
                return false;
            }
            out.push(Root { type_name: None, element: name.clone() });
            true
        }
        ExprKind::Member { target: Some(target), name } => match type_root(target) {
            Some(type_name) => {
                out.push(Root { type_name: Some(type_name.to_owned()), element: name.clone() });
                true
            }
            None => collect(target, out),
        },
        // `Type.extension('url')`: the resource's own extensions.
        ExprKind::Call { target: Some(target), func: Func::Extension, args, .. } => {
            if !matches!(args.as_slice(), [Expr { kind: ExprKind::Literal(Literal::Str(_)), .. }]) {
                return false;
            }
            match type_root(target) {
                Some(type_name) => {
                    out.push(Root { type_name: Some(type_name.to_owned()), element: "extension".to_owned() });
                    true
                }
                None => collect(target, out),
            }
        }
        ExprKind::Call { target: Some(target), func, ty, .. } => {
            let empty_for_empty = match func {
                Func::Where | Func::Select | Func::First | Func::Last | Func::Single | Func::Tail | Func::Resolve => true,
                // Without a resolved type these raise an error even for no input.
                Func::OfType | Func::As => ty.is_some(),
                _ => false,
            };
            empty_for_empty && type_root(target).is_none() && collect(target, out)
        }
        ExprKind::Indexer { target, .. } => type_root(target).is_none() && collect(target, out),
        ExprKind::As { operand, .. } => type_root(operand).is_none() && collect(operand, out),
        _ => false,
    }
}

/// `Some(name)` when `expr` is a bare leading type name (`Task` in `Task.owner`).
fn type_root(expr: &Expr) -> Option<&str> {
    match &expr.kind {
        ExprKind::Member { target: None, name } if is_type_name(name) => Some(name),
        _ => None,
    }
}

/// Whether an expression with these roots certainly selects nothing from `resource`, and
/// raises no error, without evaluating it.
pub(super) fn selects_nothing(roots: &[Root], resource: &Value) -> bool {
    let Some(obj) = resource.as_object() else { return false };
    let Some(ty) = obj.get("resourceType").and_then(Value::as_str) else { return false };
    let Ok(model) = crate::fhir::model::Model::current() else { return false };
    roots.iter().all(|root| {
        if let Some(type_name) = &root.type_name {
            if !types::is_fhir_type(type_name) {
                return false;
            }
            if !types::is_fhir_subtype(ty, type_name) {
                // The type filter keeps nothing of a resource of another type.
                return true;
            }
        }
        match model.element(ty, &root.element) {
            Some(element) => !has_element(obj, &root.element, element.choice),
            // Unknown to the model: the engine answers (an error, usually).
            None => false,
        }
    })
}

/// Whether `obj` has the element `name` (its value or its `_name` shadow; for a choice
/// element, any key starting with `name`, which is never less than the engine reads).
fn has_element(obj: &Map<String, Value>, name: &str, choice: bool) -> bool {
    obj.keys().any(|key| {
        let plain = key.strip_prefix('_').unwrap_or(key);
        if choice {
            plain.starts_with(name)
        } else {
            plain == name
        }
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::fhir::fhirpath::Expression;

    fn skips(expression: &str, resource: &serde_json::Value) -> bool {
        Expression::parse(expression).unwrap().selects_nothing_from(resource)
    }

    #[test]
    fn paths_from_absent_elements_are_skipped_and_anything_else_is_evaluated() {
        let task = json!({ "resourceType": "Task", "status": "draft", "_intent": { "extension": [] }, "focus": { "reference": "ServiceRequest/1" } });
        assert!(skips("Task.owner", &task));
        assert!(skips("Task.owner | Task.requester.reference", &task));
        assert!(skips("Task.for.where(resolve() is Patient)", &task));
        assert!(skips("(Task.authoredOn as dateTime)", &task));
        assert!(skips("Patient.name", &task), "another type's path selects nothing");
        assert!(skips("Resource.meta.lastUpdated", &task));
        // Present, or computed from no input, or unknown to the model: evaluate.
        assert!(!skips("Task.status", &task));
        assert!(!skips("Task.intent", &task), "only the `_intent` shadow is present");
        assert!(!skips("Task.owner | Task.focus", &task));
        assert!(!skips("Task.owner.exists()", &task));
        assert!(!skips("Task.owner = Task.requester", &task));
        assert!(!skips("Task.nonsense", &task));
        assert!(!skips("Task", &task));
        let observation = json!({ "resourceType": "Observation", "valueQuantity": { "value": 1 } });
        assert!(!skips("Observation.value", &observation), "a choice element is found by its prefix");
        assert!(skips("Observation.effective", &observation));
    }
}
