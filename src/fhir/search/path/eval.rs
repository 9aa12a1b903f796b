//! Evaluator for compiled paths over `&serde_json::Value`.
//!
//! In: an [`Expr`] tree and a resource. Out: borrowed items of that resource (plus shared
//! `true`/`false` values for boolean results). Nothing is cloned from the resource. Work is
//! bounded by [`MAX_EVAL_ITEMS`]; recursion follows the tree, whose height the parser bounds.
//! Type knowledge is what JSON carries: the suffix of a choice key (`valueQuantity`), a
//! `resourceType`, a JSON boolean, or the type a reference names for `resolve()`.

use serde_json::Value;
use std::collections::HashSet;

use super::super::{reference, types};
use super::{Call, Expr, ExprKind, Func, LogicOp, PathError, PathErrorKind, Step, SystemType, Term, TypeSpec, MAX_EVAL_ITEMS};

static TRUE: Value = Value::Bool(true);
static FALSE: Value = Value::Bool(false);

/// One member of a FHIRPath collection. `'a` borrows the resource, `'p` the compiled path.
#[derive(Debug, Clone, Copy)]
enum Item<'a, 'p> {
    /// A JSON node of the resource, with its FHIR type when JSON alone does not say it.
    Node {
        value: &'a Value,
        ty: Option<&'a str>,
    },
    Bool(bool),
    Str(&'p str),
    Num(f64),
    /// What `resolve()` knows about a reference it cannot load: the target's type.
    Resolved(&'a str),
}

pub(super) fn evaluate<'a>(expr: &Expr, resource: &'a Value) -> Result<Vec<&'a Value>, PathError> {
    let mut evaluator = Evaluator { root: resource, produced: 0 };
    let root = evaluator.root_item();
    let items = evaluator.eval(expr, &[root], root)?;
    Ok(items
        .into_iter()
        .filter_map(|item| match item {
            Item::Node { value, .. } => Some(value),
            Item::Bool(true) => Some(&TRUE),
            Item::Bool(false) => Some(&FALSE),
            Item::Str(_) | Item::Num(_) | Item::Resolved(_) => None,
        })
        .collect())
}

struct Evaluator<'a> {
    root: &'a Value,
    produced: usize,
}

impl<'a> Evaluator<'a> {
    fn root_item<'p>(&self) -> Item<'a, 'p> {
        Item::Node { value: self.root, ty: resource_type(self.root) }
    }

    /// Count produced items against [`MAX_EVAL_ITEMS`].
    fn spend(&mut self, n: usize, pos: usize) -> Result<(), PathError> {
        self.produced = self.produced.saturating_add(n);
        if self.produced > MAX_EVAL_ITEMS {
            return Err(PathError::new(pos, PathErrorKind::TooManyItems { max: MAX_EVAL_ITEMS }));
        }
        Ok(())
    }

    fn eval<'p>(&mut self, expr: &'p Expr, input: &[Item<'a, 'p>], this: Item<'a, 'p>) -> Result<Vec<Item<'a, 'p>>, PathError> {
        let out = match &expr.kind {
            ExprKind::Path { start, steps } => {
                let mut items = self.term(start, input, this)?;
                for step in steps {
                    self.spend(items.len(), expr.pos)?;
                    items = match step {
                        Step::Member(name) => navigate(&items, name),
                        Step::Call(call) => self.call(call, items)?,
                        Step::Index(i) => items.get(*i).copied().into_iter().collect(),
                    };
                }
                items
            }
            ExprKind::Union(branches) => {
                let mut out = Vec::new();
                let mut seen = HashSet::new();
                for branch in branches {
                    for item in self.eval(branch, input, this)? {
                        let fresh = match item {
                            Item::Node { value, .. } => seen.insert(std::ptr::from_ref(value)),
                            _ => !out.iter().any(|o| equal(*o, item)),
                        };
                        if fresh {
                            out.push(item);
                        }
                    }
                }
                out
            }
            ExprKind::Equality { negated, lhs, rhs } => {
                let left = self.eval(lhs, input, this)?;
                let right = self.eval(rhs, input, this)?;
                if left.is_empty() || right.is_empty() {
                    Vec::new()
                } else {
                    let same = left.len() == right.len() && left.iter().zip(&right).all(|(l, r)| equal(*l, *r));
                    vec![Item::Bool(same != *negated)]
                }
            }
            ExprKind::Logic { op, lhs, rhs } => {
                let left = self.eval(lhs, input, this)?;
                let left = to_bool(&left, lhs.pos)?;
                let right = self.eval(rhs, input, this)?;
                let right = to_bool(&right, rhs.pos)?;
                logic(*op, left, right).map(Item::Bool).into_iter().collect()
            }
            ExprKind::TypeOp { test_only, operand, ty } => {
                let items = self.eval(operand, input, this)?;
                if *test_only {
                    singleton(&items, expr.pos)?.map(|item| Item::Bool(is_type(item, ty))).into_iter().collect()
                } else {
                    // Lenient `as`: R5 expressions such as `suspectEntity.instance as
                    // Reference` meet repeating elements, so filter instead of failing.
                    items.into_iter().filter(|item| is_type(*item, ty)).collect()
                }
            }
        };
        self.spend(out.len(), expr.pos)?;
        Ok(out)
    }

    fn term<'p>(&mut self, term: &'p Term, input: &[Item<'a, 'p>], this: Item<'a, 'p>) -> Result<Vec<Item<'a, 'p>>, PathError> {
        Ok(match term {
            Term::Identifier(name) if name.starts_with(|c: char| c.is_ascii_uppercase()) => {
                // FHIR element names are lower camel case, so this names a type: `Task.owner`
                // keeps the input only when it is a Task (or `Resource`, `DomainResource`).
                input.iter().copied().filter(|item| item_type(*item).is_some_and(|t| types::is_subtype(t, name))).collect()
            }
            Term::Identifier(name) => navigate(input, name),
            Term::Call(call) => self.call(call, input.to_vec())?,
            Term::Paren(inner) => self.eval(inner, input, this)?,
            Term::This => vec![this],
            Term::Root => vec![self.root_item()],
            Term::Str(text) => vec![Item::Str(text)],
            Term::Num(n) => vec![Item::Num(*n)],
            Term::Bool(b) => vec![Item::Bool(*b)],
            Term::Empty => Vec::new(),
        })
    }

    fn call<'p>(&mut self, call: &'p Call, items: Vec<Item<'a, 'p>>) -> Result<Vec<Item<'a, 'p>>, PathError> {
        let pos = call.pos;
        Ok(match &call.func {
            Func::Where(criteria) => {
                let mut out = Vec::new();
                for item in items {
                    if self.holds(criteria, item)? {
                        out.push(item);
                    }
                }
                out
            }
            Func::Select(projection) => {
                let mut out = Vec::new();
                for item in items {
                    out.extend(self.eval(projection, &[item], item)?);
                }
                out
            }
            Func::Exists(None) => vec![Item::Bool(!items.is_empty())],
            Func::Exists(Some(criteria)) => {
                let mut found = false;
                for item in items {
                    if self.holds(criteria, item)? {
                        found = true;
                        break;
                    }
                }
                vec![Item::Bool(found)]
            }
            Func::Empty => vec![Item::Bool(items.is_empty())],
            Func::First => items.first().copied().into_iter().collect(),
            Func::Last => items.last().copied().into_iter().collect(),
            Func::Not => to_bool(&items, pos)?.map(|b| Item::Bool(!b)).into_iter().collect(),
            Func::HasValue => {
                let primitive =
                    matches!(items.as_slice(), [Item::Node { value: Value::String(_) | Value::Number(_) | Value::Bool(_), .. }]);
                vec![Item::Bool(primitive)]
            }
            Func::OfType(ty) | Func::As(ty) => items.into_iter().filter(|item| is_type(*item, ty)).collect(),
            Func::Is(ty) => singleton(&items, pos)?.map(|item| Item::Bool(is_type(item, ty))).into_iter().collect(),
            Func::Resolve => items.into_iter().filter_map(|i| self.resolve(i)).collect(),
            Func::Extension(url) => extensions(&items, url),
        })
    }

    /// `criteria` evaluated with `item` as `$this` and input, as `where` and `exists` need.
    fn holds<'p>(&mut self, criteria: &'p Expr, item: Item<'a, 'p>) -> Result<bool, PathError> {
        let result = self.eval(criteria, &[item], item)?;
        Ok(to_bool(&result, criteria.pos)? == Some(true))
    }

    /// The target of a reference, as far as it can be known without a store: a contained
    /// resource (`#id`) is returned itself; otherwise only the target type, read from the
    /// reference string (`Type/id`, `.../Type/id`, `Type/id/_history/v`) or, failing that,
    /// from `Reference.type`. Unknown targets resolve to nothing.
    fn resolve<'p>(&self, item: Item<'a, 'p>) -> Option<Item<'a, 'p>> {
        let Item::Node { value, .. } = item else {
            return None;
        };
        match value {
            Value::Object(map) => {
                if let Some(text) = map.get("reference").and_then(Value::as_str) {
                    if let Some(local) = text.strip_prefix('#') {
                        return self.contained(local);
                    }
                    if let Some(literal) = reference::parse_literal(text) {
                        return Some(Item::Resolved(literal.ty));
                    }
                }
                let ty = map.get("type").and_then(Value::as_str)?;
                let ty = ty.strip_prefix("http://hl7.org/fhir/StructureDefinition/").unwrap_or(ty);
                types::is_resource_type(ty).then_some(Item::Resolved(ty))
            }
            Value::String(canonical) => {
                let url = canonical.split('|').next()?;
                reference::parse_literal(url).map(|literal| Item::Resolved(literal.ty))
            }
            _ => None,
        }
    }

    /// `#id` in a reference: a resource in the root's `contained`; `#` alone is the root.
    fn contained<'p>(&self, id: &str) -> Option<Item<'a, 'p>> {
        if id.is_empty() {
            return Some(self.root_item());
        }
        let contained = self.root.get("contained")?.as_array()?;
        contained
            .iter()
            .find(|r| r.get("id").and_then(Value::as_str) == Some(id))
            .map(|value| Item::Node { value, ty: resource_type(value) })
    }
}

fn resource_type(value: &Value) -> Option<&str> {
    value.get("resourceType").and_then(Value::as_str)
}

/// Member navigation: arrays flatten, JSON nulls (primitive-extension padding) are skipped,
/// and a missing member that is an R5 choice element is looked up by its typed keys.
fn navigate<'a, 'p>(items: &[Item<'a, 'p>], name: &str) -> Vec<Item<'a, 'p>> {
    let mut out = Vec::new();
    for item in items {
        let Item::Node { value: Value::Object(map), .. } = item else {
            continue;
        };
        if let Some(child) = map.get(name) {
            push_children(&mut out, child, None);
        } else if types::is_choice_name(name) {
            for (key, child) in map {
                if let Some(ty) = types::choice_type(name, key) {
                    push_children(&mut out, child, Some(ty));
                }
            }
        }
    }
    out
}

fn push_children<'a, 'p>(out: &mut Vec<Item<'a, 'p>>, value: &'a Value, ty: Option<&'a str>) {
    match value {
        Value::Array(values) => out.extend(values.iter().filter(|v| !v.is_null()).map(|value| Item::Node { value, ty })),
        Value::Null => {}
        _ => out.push(Item::Node { value, ty }),
    }
}

fn extensions<'a, 'p>(items: &[Item<'a, 'p>], url: &str) -> Vec<Item<'a, 'p>> {
    let mut out = Vec::new();
    for item in items {
        let Item::Node { value, .. } = item else {
            continue;
        };
        let Some(list) = value.get("extension").and_then(Value::as_array) else {
            continue;
        };
        out.extend(
            list.iter()
                .filter(|ext| ext.get("url").and_then(Value::as_str) == Some(url))
                .map(|value| Item::Node { value, ty: Some("Extension") }),
        );
    }
    out
}

/// The FHIR type of an item when it is known.
fn item_type<'a>(item: Item<'a, '_>) -> Option<&'a str> {
    match item {
        Item::Node { ty: Some(ty), .. } => Some(ty),
        Item::Node { value, ty: None } => match value {
            Value::Object(_) => resource_type(value),
            Value::Bool(_) => Some("boolean"),
            _ => None,
        },
        Item::Bool(_) => Some("boolean"),
        Item::Resolved(ty) => Some(ty),
        Item::Str(_) | Item::Num(_) => None,
    }
}

fn is_type(item: Item<'_, '_>, spec: &TypeSpec) -> bool {
    match spec {
        TypeSpec::Fhir(name) => item_type(item).is_some_and(|t| types::is_subtype(t, name)),
        TypeSpec::System(system) => match (system, item) {
            (SystemType::Boolean, Item::Bool(_)) => true,
            (SystemType::String, Item::Str(_)) => true,
            (SystemType::Decimal, Item::Num(_)) => true,
            (_, Item::Node { value, .. }) => match (system, value) {
                (SystemType::Boolean, Value::Bool(_)) => true,
                (SystemType::String, Value::String(_)) => true,
                (SystemType::Integer, Value::Number(n)) => n.is_i64() || n.is_u64(),
                (SystemType::Decimal, Value::Number(_)) => true,
                _ => false,
            },
            _ => false,
        },
    }
}

/// FHIRPath equality of two single items. JSON nodes compare structurally; a node against a
/// literal compares its primitive value. Items of different kinds are not equal.
fn equal(a: Item<'_, '_>, b: Item<'_, '_>) -> bool {
    match (a, b) {
        (Item::Node { value: x, .. }, Item::Node { value: y, .. }) => x == y,
        (Item::Node { value, .. }, other) | (other, Item::Node { value, .. }) => match (value, other) {
            (Value::String(s), Item::Str(t)) => s == t,
            (Value::Bool(x), Item::Bool(y)) => *x == y,
            (Value::Number(n), Item::Num(y)) => n.as_f64().and_then(|x| x.partial_cmp(&y)) == Some(std::cmp::Ordering::Equal),
            _ => false,
        },
        (Item::Bool(x), Item::Bool(y)) => x == y,
        (Item::Str(x), Item::Str(y)) => x == y,
        (Item::Num(x), Item::Num(y)) => x.partial_cmp(&y) == Some(std::cmp::Ordering::Equal),
        (Item::Resolved(x), Item::Resolved(y)) => x == y,
        _ => false,
    }
}

/// Singleton evaluation of a collection as a boolean: empty is unknown, one boolean is
/// itself, any other single item is true, and more than one item is an error.
fn to_bool(items: &[Item<'_, '_>], pos: usize) -> Result<Option<bool>, PathError> {
    Ok(singleton(items, pos)?.map(|item| match item {
        Item::Bool(b) => b,
        Item::Node { value: Value::Bool(b), .. } => *b,
        _ => true,
    }))
}

fn singleton<'a, 'p>(items: &[Item<'a, 'p>], pos: usize) -> Result<Option<Item<'a, 'p>>, PathError> {
    match items {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        many => Err(PathError::new(pos, PathErrorKind::NotSingleton(many.len()))),
    }
}

/// FHIRPath three-valued logic; `None` is the empty collection.
fn logic(op: LogicOp, left: Option<bool>, right: Option<bool>) -> Option<bool> {
    match op {
        LogicOp::And => match (left, right) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        LogicOp::Or => match (left, right) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        LogicOp::Xor => match (left, right) {
            (Some(a), Some(b)) => Some(a != b),
            _ => None,
        },
        LogicOp::Implies => match (left, right) {
            (Some(false), _) | (_, Some(true)) => Some(true),
            (Some(true), other) => other,
            (None, _) => None,
        },
    }
}
