//! The tree-walking evaluator: paths, variables, indexers, unions and the dispatch of
//! operators (`ops`) and functions (`functions`).
//!
//! Every node visited and every item produced is charged to the evaluation's budget, and
//! recursion follows the tree, whose height the parser bounded; so a hostile expression ends
//! in a `Budget` error, never a hang or a stack overflow. Variables from `defineVariable`
//! flow left to right along an invocation chain and into its arguments, and nowhere else.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use super::ast::{Expr, ExprKind, Literal};
use super::error::{ErrorKind, FhirPathError};
use super::value::{Collection, Item, Node};
use super::{ops, types, Env};

/// Variables defined with `defineVariable`, innermost first.
#[derive(Clone, Default)]
pub(super) struct Vars<'a>(Option<Rc<VarNode<'a>>>);

struct VarNode<'a> {
    name: String,
    value: Collection<'a>,
    next: Vars<'a>,
}

impl<'a> Vars<'a> {
    pub(super) fn get(&self, name: &str) -> Option<&Collection<'a>> {
        let mut at = self.0.as_ref();
        while let Some(node) = at {
            if node.name == name {
                return Some(&node.value);
            }
            at = node.next.0.as_ref();
        }
        None
    }

    pub(super) fn with(&self, name: String, value: Collection<'a>) -> Vars<'a> {
        Vars(Some(Rc::new(VarNode { name, value, next: self.clone() })))
    }
}

/// What `$this`, `$index` and `$total` mean where an expression is evaluated.
#[derive(Clone)]
pub(super) struct Scope<'a> {
    pub this: Option<Item<'a>>,
    pub index: Option<usize>,
    pub total: Option<Rc<Collection<'a>>>,
    pub vars: Vars<'a>,
}

impl<'a> Scope<'a> {
    /// The scope for evaluating an argument against one input item.
    pub(super) fn item(&self, item: &Item<'a>, index: usize) -> Scope<'a> {
        Scope { this: Some(item.clone()), index: Some(index), total: self.total.clone(), vars: self.vars.clone() }
    }
}

pub(super) struct Evaluator<'a, 'e> {
    pub env: &'e Env<'a>,
    steps: Cell<u64>,
    depth: Cell<usize>,
    started: Instant,
}

pub(super) type R<T> = Result<T, FhirPathError>;

impl<'a, 'e> Evaluator<'a, 'e> {
    pub(super) fn new(env: &'e Env<'a>) -> Self {
        Evaluator { env, steps: Cell::new(0), depth: Cell::new(0), started: Instant::now() }
    }

    /// Charge `n` steps; fail once the budget is spent. The clock is read every 4096 steps.
    pub(super) fn tick(&self, n: u64, pos: usize) -> R<()> {
        let before = self.steps.get();
        let steps = before.saturating_add(n);
        self.steps.set(steps);
        let limits = &self.env.limits;
        if steps > limits.max_steps {
            return Err(FhirPathError::budget(pos, ErrorKind::Steps { max: limits.max_steps }));
        }
        if before >> 12 != steps >> 12 {
            if let Some(max) = limits.max_time {
                if self.started.elapsed() > max {
                    return Err(FhirPathError::budget(pos, ErrorKind::Time { max_ms: u64::try_from(max.as_millis()).unwrap_or(u64::MAX) }));
                }
            }
        }
        Ok(())
    }

    /// Fail if a collection grew past the item limit.
    pub(super) fn check_size(&self, len: usize, pos: usize) -> R<()> {
        if len > self.env.limits.max_items {
            return Err(FhirPathError::budget(pos, ErrorKind::TooManyItems { max: self.env.limits.max_items }));
        }
        self.tick(len as u64 / 8, pos)
    }

    pub(super) fn eval(&self, expr: &Expr, focus: &[Item<'a>], scope: &Scope<'a>) -> R<Collection<'a>> {
        self.eval_scoped(expr, focus, scope).map(|(items, _)| items)
    }

    /// Evaluate `expr`, also returning the variables its invocation chain defined.
    pub(super) fn eval_scoped(&self, expr: &Expr, focus: &[Item<'a>], scope: &Scope<'a>) -> R<(Collection<'a>, Vars<'a>)> {
        let depth = self.depth.get() + 1;
        if depth > self.env.limits.max_depth {
            return Err(FhirPathError::budget(expr.pos, ErrorKind::Recursion { max: self.env.limits.max_depth }));
        }
        self.depth.set(depth);
        let result = self.step(expr, focus, scope);
        self.depth.set(depth - 1);
        let (items, vars) = result?;
        self.check_size(items.len(), expr.pos)?;
        Ok((items, vars))
    }

    fn step(&self, expr: &Expr, focus: &[Item<'a>], scope: &Scope<'a>) -> R<(Collection<'a>, Vars<'a>)> {
        self.tick(1, expr.pos)?;
        let plain = |items: Collection<'a>| Ok((items, scope.vars.clone()));
        match &expr.kind {
            ExprKind::Literal(lit) => plain(literal(lit)),
            ExprKind::This => plain(scope.this.clone().into_iter().collect()),
            ExprKind::Index => plain(scope.index.map(|i| Item::Int(i as i64)).into_iter().collect()),
            ExprKind::Total => plain(scope.total.as_ref().map(|t| t.as_ref().clone()).unwrap_or_default()),
            ExprKind::Var(name) => plain(self.variable(name, expr.pos, scope)?),
            ExprKind::Member { target, name } => self.member_step(target.as_deref(), name, focus, scope, expr.pos),
            ExprKind::Call { target, func, args, ty } => {
                let (input, vars) = match target {
                    Some(t) => self.eval_scoped(t, focus, scope)?,
                    None => (focus.to_vec(), scope.vars.clone()),
                };
                let scope = Scope { vars, ..scope.clone() };
                super::functions::call(self, *func, args, ty.as_ref(), input, &scope, expr.pos)
            }
            ExprKind::Indexer { target, index } => self.indexer(target, index, focus, scope, expr.pos),
            ExprKind::Negate(operand) => plain(ops::negate(self, self.eval(operand, focus, scope)?, expr.pos)?),
            ExprKind::Binary { op, lhs, rhs } => plain(ops::binary(self, *op, lhs, rhs, focus, scope, expr.pos)?),
            ExprKind::Union(items) => {
                let mut out: Collection<'a> = Vec::new();
                for e in items {
                    let part = self.eval(e, focus, scope)?;
                    ops::union_into(self, &mut out, part, expr.pos)?;
                }
                plain(out)
            }
            ExprKind::Is { operand, ty } => {
                let items = self.eval(operand, focus, scope)?;
                plain(match items.as_slice() {
                    [] => Vec::new(),
                    [item] => vec![Item::Bool(types::item_is(item, ty, false))],
                    many => return Err(FhirPathError::execution(expr.pos, ErrorKind::NotSingleton(many.len()))),
                })
            }
            ExprKind::As { operand, ty } => {
                let items = self.eval(operand, focus, scope)?;
                plain(match items.as_slice() {
                    [] => Vec::new(),
                    [item] => items.iter().filter(|_| types::item_is(item, ty, true)).cloned().collect(),
                    many => return Err(FhirPathError::execution(expr.pos, ErrorKind::NotSingleton(many.len()))),
                })
            }
        }
    }

    // The arms of `step` live in their own functions so that each recursion level keeps a
    // small stack frame, even in debug builds.

    #[inline(never)]
    fn member_step(
        &self,
        target: Option<&Expr>,
        name: &str,
        focus: &[Item<'a>],
        scope: &Scope<'a>,
        pos: usize,
    ) -> R<(Collection<'a>, Vars<'a>)> {
        let (input, vars) = match target {
            Some(t) => self.eval_scoped(t, focus, scope)?,
            None => {
                if let Some(items) = self.type_filter(name, focus) {
                    return Ok((items, scope.vars.clone()));
                }
                (focus.to_vec(), scope.vars.clone())
            }
        };
        let mut out = Vec::new();
        for item in &input {
            self.member(item, name, pos, &mut out)?;
        }
        Ok((out, vars))
    }

    #[inline(never)]
    fn indexer(&self, target: &Expr, index: &Expr, focus: &[Item<'a>], scope: &Scope<'a>, pos: usize) -> R<(Collection<'a>, Vars<'a>)> {
        let (input, vars) = self.eval_scoped(target, focus, scope)?;
        let idx = self.eval(index, focus, scope)?;
        let at = match idx.as_slice() {
            [] => return Ok((Vec::new(), vars)),
            [item] => match item.to_system() {
                Item::Int(i) => i,
                _ => return Err(self.invalid(pos, "an index must be an Integer")),
            },
            many => return Err(FhirPathError::execution(pos, ErrorKind::NotSingleton(many.len()))),
        };
        let picked = usize::try_from(at).ok().and_then(|i| input.get(i)).cloned();
        Ok((picked.into_iter().collect(), vars))
    }

    /// A leading upper-case identifier naming the type of the focus (`Patient.name` on a
    /// Patient) selects the focus items of that type.
    fn type_filter(&self, name: &str, focus: &[Item<'a>]) -> Option<Collection<'a>> {
        if !name.starts_with(|c: char| c.is_ascii_uppercase()) || !types::is_fhir_type(name) {
            return None;
        }
        Some(
            focus
                .iter()
                .filter(|item| matches!(item, Item::Node(Node { ty: Some(t), .. }) if types::is_fhir_subtype(t, name)))
                .cloned()
                .collect(),
        )
    }

    fn member(&self, item: &Item<'a>, name: &str, pos: usize, out: &mut Collection<'a>) -> R<()> {
        match item {
            Item::Node(node) => types::navigate(node, name, out).map_err(|kind| FhirPathError::semantic(pos, kind)),
            Item::Type { namespace, name: type_name } => {
                match name {
                    "namespace" => out.push(Item::str(namespace)),
                    "name" => out.push(Item::Str(type_name.clone())),
                    _ => {}
                }
                Ok(())
            }
            // System values have no children.
            _ => Ok(()),
        }
    }

    fn variable(&self, name: &str, pos: usize, scope: &Scope<'a>) -> R<Collection<'a>> {
        if let Some(value) = scope.vars.get(name) {
            return Ok(value.clone());
        }
        let env = self.env;
        let node = |v: Option<&'a serde_json::Value>| v.map(|v| Item::Node(Node::resource(v))).into_iter().collect();
        Ok(match name {
            "resource" => node(env.resource),
            "rootResource" => node(env.root_resource.or(env.resource)),
            "context" => match &env.context {
                Some(items) => items.clone(),
                None => node(env.resource),
            },
            "ucum" => vec![Item::str("http://unitsofmeasure.org")],
            "sct" => vec![Item::str("http://snomed.info/sct")],
            "loinc" => vec![Item::str("http://loinc.org")],
            _ => match env.variables.iter().find(|(n, _)| n == name) {
                Some((_, value)) => value.iter().map(|v| Item::Node(Node::resource(v))).collect(),
                None => {
                    if let Some(vs) = name.strip_prefix("vs-") {
                        vec![Item::Str(Rc::from(format!("http://hl7.org/fhir/ValueSet/{vs}")))]
                    } else if let Some(ext) = name.strip_prefix("ext-") {
                        vec![Item::Str(Rc::from(format!("http://hl7.org/fhir/StructureDefinition/{ext}")))]
                    } else {
                        return Err(FhirPathError::semantic(pos, ErrorKind::UnknownVariable(name.to_owned())));
                    }
                }
            },
        })
    }

    pub(super) fn invalid(&self, pos: usize, message: &str) -> FhirPathError {
        FhirPathError::execution(pos, ErrorKind::Invalid(message.to_owned()))
    }

    /// Evaluate `arg` once per input item with `$this`/`$index` bound, calling `each` with
    /// the item and the argument's result.
    pub(super) fn per_item<F>(&self, arg: &Expr, input: &[Item<'a>], scope: &Scope<'a>, mut each: F) -> R<()>
    where
        F: FnMut(usize, &Item<'a>, Collection<'a>) -> R<bool>,
    {
        for (i, item) in input.iter().enumerate() {
            let inner = scope.item(item, i);
            let result = self.eval(arg, std::slice::from_ref(item), &inner)?;
            if !each(i, item, result)? {
                break;
            }
        }
        Ok(())
    }
}

fn literal<'a>(lit: &Literal) -> Collection<'a> {
    let item = match lit {
        Literal::Empty => return Vec::new(),
        Literal::Bool(b) => Item::Bool(*b),
        Literal::Str(s) => Item::str(s),
        Literal::Int(i) => Item::Int(*i),
        Literal::Long(i) => Item::Long(*i),
        Literal::Dec(d) => Item::Dec(*d),
        Literal::Date(d) => Item::Date(d.clone()),
        Literal::DateTime(d) => Item::DateTime(d.clone()),
        Literal::Time(t) => Item::Time(t.clone()),
        Literal::Quantity(q) => Item::Quantity(q.clone()),
    };
    vec![item]
}
