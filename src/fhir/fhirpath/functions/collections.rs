//! Collection functions: existence, filtering and projection, subsetting, combining,
//! `repeat`, `aggregate`, `sort`, tree navigation, `iif`, `trace` and `defineVariable`.

use std::cmp::Ordering;
use std::rc::Rc;

use super::super::ast::{Expr, ExprKind, Func};
use super::super::error::{ErrorKind, FhirPathError};
use super::super::eval::{Evaluator, Scope, Vars, R};
use super::super::ops::{compare, item_equal, to_bool, union_into, Dedup};
use super::super::types;
use super::super::value::{Collection, Item};
use super::Call;

/// Names `defineVariable` may not take: the environment's own variables.
const RESERVED: [&str; 8] = ["context", "resource", "rootResource", "ucum", "sct", "loinc", "previous", "current"];

pub(super) fn call<'a>(cx: &Call<'_, 'a, '_>, input: &[Item<'a>]) -> R<Option<Collection<'a>>> {
    let ev = cx.ev;
    let pos = cx.pos;
    let out = match cx.func {
        Func::Empty => vec![Item::Bool(input.is_empty())],
        Func::Exists => match cx.args.first() {
            None => vec![Item::Bool(!input.is_empty())],
            Some(arg) => vec![Item::Bool(!filter(ev, arg, input, cx.scope, pos)?.is_empty())],
        },
        Func::All => {
            let mut all = true;
            ev.per_item(lambda(cx)?, input, cx.scope, |_, _, result| {
                all = to_bool(result, pos)? == Some(true);
                Ok(all)
            })?;
            vec![Item::Bool(all)]
        }
        Func::AllTrue | Func::AnyTrue | Func::AllFalse | Func::AnyFalse => {
            let mut bools = Vec::with_capacity(input.len());
            for item in input {
                match item.to_system() {
                    Item::Bool(b) => bools.push(b),
                    _ => return Err(cx.error(&format!("{}() needs Boolean items", cx.func.name()))),
                }
            }
            let result = match cx.func {
                Func::AllTrue => bools.iter().all(|b| *b),
                Func::AnyTrue => bools.iter().any(|b| *b),
                Func::AllFalse => bools.iter().all(|b| !*b),
                _ => bools.iter().any(|b| !*b),
            };
            vec![Item::Bool(result)]
        }
        Func::SubsetOf | Func::SupersetOf => {
            let other = cx.arg(0)?;
            let (small, big) = if cx.func == Func::SubsetOf { (input, other.as_slice()) } else { (other.as_slice(), input) };
            ev.tick((small.len() * big.len()) as u64, pos)?;
            vec![Item::Bool(small.iter().all(|s| big.iter().any(|b| item_equal(s, b) == Some(true))))]
        }
        Func::Count => vec![Item::Int(i64::try_from(input.len()).unwrap_or(i64::MAX))],
        Func::Distinct => distinct(ev, input.to_vec(), pos)?,
        Func::IsDistinct => vec![Item::Bool(distinct(ev, input.to_vec(), pos)?.len() == input.len())],
        Func::Where => filter(ev, lambda(cx)?, input, cx.scope, pos)?,
        Func::Select => {
            let mut out = Vec::new();
            ev.per_item(lambda(cx)?, input, cx.scope, |_, _, result| {
                out.extend(result);
                ev.check_size(out.len(), pos)?;
                Ok(true)
            })?;
            out
        }
        Func::Repeat | Func::RepeatAll => repeat(ev, lambda(cx)?, input, cx.scope, pos, cx.func == Func::Repeat)?,
        Func::OfType => match cx.ty {
            Some(ty) => input.iter().filter(|item| types::item_is(item, ty, true)).cloned().collect(),
            None => return Err(cx.semantic("ofType() needs a type")),
        },
        Func::Single => match input {
            [] => Vec::new(),
            [item] => vec![item.clone()],
            many => return Err(FhirPathError::execution(pos, ErrorKind::NotSingleton(many.len()))),
        },
        Func::First => input.first().cloned().into_iter().collect(),
        Func::Last => input.last().cloned().into_iter().collect(),
        Func::Tail => input.iter().skip(1).cloned().collect(),
        Func::Skip | Func::Take => {
            let Some(n) = cx.arg_int(0)? else {
                return Ok(Some(if cx.func == Func::Skip { input.to_vec() } else { Vec::new() }));
            };
            let n = usize::try_from(n.max(0)).unwrap_or(usize::MAX);
            if cx.func == Func::Skip {
                input.iter().skip(n).cloned().collect()
            } else {
                input.iter().take(n).cloned().collect()
            }
        }
        Func::Intersect => {
            let other = cx.arg(0)?;
            ev.tick((input.len() * other.len()) as u64, pos)?;
            let common = input.iter().filter(|i| other.iter().any(|o| item_equal(i, o) == Some(true))).cloned().collect();
            distinct(ev, common, pos)?
        }
        Func::Exclude => {
            let other = cx.arg(0)?;
            ev.tick((input.len() * other.len()) as u64, pos)?;
            input.iter().filter(|i| !other.iter().any(|o| item_equal(i, o) == Some(true))).cloned().collect()
        }
        Func::Union => {
            let mut out = Vec::new();
            union_into(ev, &mut out, input.to_vec(), pos)?;
            union_into(ev, &mut out, cx.arg(0)?, pos)?;
            out
        }
        Func::Combine => {
            let mut out = input.to_vec();
            out.extend(cx.arg(0)?);
            ev.check_size(out.len(), pos)?;
            out
        }
        Func::Iif => iif(cx, input)?,
        Func::Children | Func::Descendants => {
            let mut out = Vec::new();
            let mut frontier: Collection<'a> = input.to_vec();
            loop {
                let mut next = Vec::new();
                for item in &frontier {
                    if let Item::Node(node) = item {
                        types::children(node, &mut next);
                    }
                }
                ev.tick(next.len() as u64 + 1, pos)?;
                out.extend(next.iter().cloned());
                ev.check_size(out.len(), pos)?;
                if cx.func == Func::Children || next.is_empty() {
                    break;
                }
                frontier = next;
            }
            out
        }
        Func::Trace => input.to_vec(),
        Func::Aggregate => {
            let mut total = Rc::new(cx.arg(1)?);
            let expr = lambda(cx)?;
            for (i, item) in input.iter().enumerate() {
                let scope = Scope { this: Some(item.clone()), index: Some(i), total: Some(total.clone()), vars: cx.scope.vars.clone() };
                total = Rc::new(ev.eval(expr, std::slice::from_ref(item), &scope)?);
            }
            Rc::try_unwrap(total).unwrap_or_else(|rc| rc.as_ref().clone())
        }
        Func::Sort => sort(cx, input)?,
        _ => return Ok(None),
    };
    Ok(Some(out))
}

/// The argument of a function that evaluates it per item.
fn lambda<'c>(cx: &Call<'c, '_, '_>) -> R<&'c Expr> {
    cx.args.first().ok_or_else(|| cx.semantic(&format!("{}() needs an argument", cx.func.name())))
}

fn filter<'a>(ev: &Evaluator<'a, '_>, criteria: &Expr, input: &[Item<'a>], scope: &Scope<'a>, pos: usize) -> R<Collection<'a>> {
    let mut out = Vec::new();
    ev.per_item(criteria, input, scope, |_, item, result| {
        if to_bool(result, pos)? == Some(true) {
            out.push(item.clone());
        }
        Ok(true)
    })?;
    Ok(out)
}

fn distinct<'a>(ev: &Evaluator<'a, '_>, items: Collection<'a>, pos: usize) -> R<Collection<'a>> {
    let mut out = Vec::new();
    union_into(ev, &mut out, items, pos)?;
    Ok(out)
}

/// `repeat(projection)`: the projection applied to the input, then to each new item, until
/// nothing new appears. With `dedupe` (plain `repeat`), items already seen are not followed
/// again, which is what makes `repeat($this)` terminate; `repeatAll` relies on the budget.
fn repeat<'a>(
    ev: &Evaluator<'a, '_>,
    projection: &Expr,
    input: &[Item<'a>],
    scope: &Scope<'a>,
    pos: usize,
    dedupe: bool,
) -> R<Collection<'a>> {
    let mut out: Collection<'a> = Vec::new();
    let mut seen = Dedup::of(&out);
    let mut frontier: Collection<'a> = input.to_vec();
    while !frontier.is_empty() {
        let mut next = Vec::new();
        ev.per_item(projection, &frontier, scope, |_, _, result| {
            for item in result {
                if dedupe {
                    if seen.insert(ev, &mut out, item.clone(), pos)? {
                        next.push(item);
                    }
                } else {
                    ev.tick(1, pos)?;
                    out.push(item.clone());
                    next.push(item);
                }
            }
            ev.check_size(out.len(), pos)?;
            Ok(true)
        })?;
        frontier = next;
    }
    Ok(out)
}

fn iif<'a>(cx: &Call<'_, 'a, '_>, input: &[Item<'a>]) -> R<Collection<'a>> {
    // iif() applies to at most one item.
    if input.len() > 1 {
        return Err(FhirPathError::execution(cx.pos, ErrorKind::NotSingleton(input.len())));
    }
    let (focus, scope) = match input.first() {
        Some(item) if input.len() == 1 => (vec![item.clone()], Scope { this: Some(item.clone()), ..cx.scope.clone() }),
        _ => (cx.scope.this.clone().into_iter().collect(), cx.scope.clone()),
    };
    let eval = |i: usize| -> R<Collection<'a>> {
        match cx.args.get(i) {
            Some(e) => cx.ev.eval(e, &focus, &scope),
            None => Ok(Vec::new()),
        }
    };
    let criterion = eval(0)?;
    let truth = match criterion.as_slice() {
        [] => false,
        [item] => match item.to_system() {
            Item::Bool(b) => b,
            _ => return Err(cx.error("iif() criterion must be a Boolean")),
        },
        many => return Err(FhirPathError::semantic(cx.pos, ErrorKind::NotSingleton(many.len()))),
    };
    eval(if truth { 1 } else { 2 })
}

/// `sort()` by the items themselves, or `sort(key, ...)` with `-key` for descending.
fn sort<'a>(cx: &Call<'_, 'a, '_>, input: &[Item<'a>]) -> R<Collection<'a>> {
    let mut keyed: Vec<(Vec<Collection<'a>>, Item<'a>)> = Vec::with_capacity(input.len());
    let keys: Vec<(&Expr, bool)> = cx
        .args
        .iter()
        .map(|e| match &e.kind {
            ExprKind::Negate(inner) => (inner.as_ref(), true),
            _ => (e, false),
        })
        .collect();
    for (i, item) in input.iter().enumerate() {
        let scope = cx.scope.item(item, i);
        let mut values = Vec::with_capacity(keys.len());
        for (expr, _) in &keys {
            values.push(cx.ev.eval(expr, std::slice::from_ref(item), &scope)?);
        }
        keyed.push((values, item.clone()));
    }
    cx.ev.tick((input.len() as u64).saturating_mul(8), cx.pos)?;
    let order = |a: &Collection<'a>, b: &Collection<'a>| -> Ordering {
        match (a.first(), b.first()) {
            (None, None) => Ordering::Equal,
            // Items without a key sort last (and so first when descending).
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(x), Some(y)) => compare(x, y).ok().flatten().unwrap_or(Ordering::Equal),
        }
    };
    keyed.sort_by(|(ka, a), (kb, b)| {
        if keys.is_empty() {
            return compare(a, b).ok().flatten().unwrap_or(Ordering::Equal);
        }
        for ((x, y), (_, descending)) in ka.iter().zip(kb).zip(&keys) {
            let o = order(x, y);
            if o != Ordering::Equal {
                return if *descending { o.reverse() } else { o };
            }
        }
        Ordering::Equal
    });
    Ok(keyed.into_iter().map(|(_, item)| item).collect())
}

/// `defineVariable(name [, value])`: passes its input through and makes `%name` visible to
/// the rest of the invocation chain.
pub(super) fn define_variable<'a>(
    ev: &Evaluator<'a, '_>,
    args: &[Expr],
    input: Collection<'a>,
    scope: &Scope<'a>,
    pos: usize,
) -> R<(Collection<'a>, Vars<'a>)> {
    let focus: Collection<'a> = scope.this.clone().into_iter().collect();
    let name = match args.first().map(|e| ev.eval(e, &focus, scope)).transpose()?.as_deref() {
        Some([Item::Str(s)]) => s.to_string(),
        _ => return Err(FhirPathError::semantic(pos, ErrorKind::Invalid("defineVariable() needs a String name".into()))),
    };
    if RESERVED.contains(&name.as_str()) || ev.env.variables.iter().any(|(n, _)| *n == name) {
        return Err(FhirPathError::semantic(pos, ErrorKind::Redefined(name)));
    }
    if scope.vars.get(&name).is_some() {
        return Err(FhirPathError::semantic(pos, ErrorKind::Redefined(name)));
    }
    let value = match args.get(1) {
        Some(expr) => ev.eval(expr, &input, &Scope { this: input.first().cloned(), ..scope.clone() })?,
        None => input.clone(),
    };
    let vars = scope.vars.with(name, value);
    Ok((input, vars))
}
