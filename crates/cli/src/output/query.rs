//! `--query`: JMESPath parsed by jpx-core, evaluated as az's jmespath 1.1.0
//! (`jmespath/visitor.py`, `TreeInterpreter`) evaluates it.
//!
//! jpx-core's parser (which passes the JMESPath compliance suite) builds the
//! tree; this module walks it over [`Val`] instead of running jpx-core's own
//! interpreter, because az's output depends on things a `serde_json::Value`
//! cannot carry: which objects the multi-select hash built (`OrderedDict`,
//! key order kept by `-o tsv`), which are shared (PyYAML anchors), int versus
//! float (`ceil(`1.5`)` is the int `2`), and Python's own rules where
//! jmespath.py leaves the spec (string ordering with `<`, `!0` is false,
//! `to_string` escaping non-ASCII, its error texts).
//!
//! Python also accepts the JEP-12 "legacy" literal `` `westus` `` (text that is
//! not JSON becomes a string); [`rewrite_legacy_literals`] turns those into
//! JSON string literals before jpx-core, which rejects them, sees the text.

use std::rc::Rc;

use jpx_core::ast::{Ast, Comparator};

use super::functions;
use super::value::{Dict, Val, py_eq};

/// How deep evaluation may nest before it fails, as Python's recursion limit
/// makes jmespath.py fail; keeps a long `a.a.a…` chain off the end of the stack.
const MAX_DEPTH: usize = 400;

/// The tree evaluated: jpx-core's, with literals turned into [`Val`]s once so
/// that, as in Python, every visit of a literal yields the same object.
#[derive(Debug)]
pub(crate) enum Node {
    Identity,
    Field(String),
    Index(i32),
    Literal(Val),
    Subexpr(Box<Node>, Box<Node>),
    Projection(Box<Node>, Box<Node>),
    ObjectValues(Box<Node>),
    Flatten(Box<Node>),
    Condition(Box<Node>, Box<Node>),
    Comparison(Comparator, Box<Node>, Box<Node>),
    Not(Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    MultiList(Vec<Node>),
    MultiHash(Vec<(String, Node)>),
    Function(String, Vec<Node>),
    Expref(Rc<Node>),
    Slice(Option<i32>, Option<i32>, i32),
}

/// Why evaluating a query failed, split as az splits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EvalError {
    /// A `JMESPathError` (unknown function, arity, argument type): az prints
    /// "Invalid jmespath query supplied for `--query`: <this>".
    Jmespath(String),
    /// Any other Python exception jmespath.py lets escape (`'<' not
    /// supported between instances of 'int' and 'str'`); az reports it as an
    /// unexpected error.
    Python(String),
}

impl Node {
    /// Converts jpx-core's tree; `None` when it nests deeper than
    /// [`MAX_DEPTH`] (evaluation would fail with a recursion error).
    pub fn from_ast(ast: &Ast, depth: usize) -> Option<Node> {
        if depth > MAX_DEPTH {
            return None;
        }
        let sub = |a: &Ast| Node::from_ast(a, depth + 1).map(Box::new);
        Some(match ast {
            Ast::Identity { .. } => Node::Identity,
            Ast::Field { name, .. } => Node::Field(name.clone()),
            Ast::Index { idx, .. } => Node::Index(*idx),
            Ast::Literal { value, .. } => Node::Literal(Val::from_json(value)),
            Ast::Subexpr { lhs, rhs, .. } => Node::Subexpr(sub(lhs)?, sub(rhs)?),
            Ast::Projection { lhs, rhs, .. } => Node::Projection(sub(lhs)?, sub(rhs)?),
            Ast::ObjectValues { node, .. } => Node::ObjectValues(sub(node)?),
            Ast::Flatten { node, .. } => Node::Flatten(sub(node)?),
            Ast::Condition { predicate, then, .. } => Node::Condition(sub(predicate)?, sub(then)?),
            Ast::Comparison {
                comparator, lhs, rhs, ..
            } => Node::Comparison(comparator.clone(), sub(lhs)?, sub(rhs)?),
            Ast::Not { node, .. } => Node::Not(sub(node)?),
            Ast::And { lhs, rhs, .. } => Node::And(sub(lhs)?, sub(rhs)?),
            Ast::Or { lhs, rhs, .. } => Node::Or(sub(lhs)?, sub(rhs)?),
            Ast::MultiList { elements, .. } => Node::MultiList(
                elements
                    .iter()
                    .map(|e| Node::from_ast(e, depth + 1))
                    .collect::<Option<_>>()?,
            ),
            Ast::MultiHash { elements, .. } => Node::MultiHash(
                elements
                    .iter()
                    .map(|kv| Node::from_ast(&kv.value, depth + 1).map(|n| (kv.key.clone(), n)))
                    .collect::<Option<_>>()?,
            ),
            Ast::Function { name, args, .. } => Node::Function(
                name.clone(),
                args.iter()
                    .map(|a| Node::from_ast(a, depth + 1))
                    .collect::<Option<_>>()?,
            ),
            Ast::Expref { ast, .. } => Node::Expref(Rc::new(Node::from_ast(ast, depth + 1)?)),
            Ast::Slice { start, stop, step, .. } => Node::Slice(*start, *stop, *step),
        })
    }
}

/// Evaluates `node` against `value` as jmespath.py's `TreeInterpreter` with
/// `Options(dict_cls=OrderedDict)` does.
pub(crate) fn eval(node: &Node, value: &Val, depth: usize) -> Result<Val, EvalError> {
    if depth > MAX_DEPTH {
        return Err(EvalError::Python("maximum recursion depth exceeded".to_owned()));
    }
    let d = depth + 1;
    Ok(match node {
        Node::Identity => value.clone(),
        Node::Literal(v) => v.clone(),
        Node::Field(name) => match value {
            Val::Dict(dict) => dict.map.get(name).cloned().unwrap_or(Val::Null),
            _ => Val::Null,
        },
        Node::Subexpr(lhs, rhs) => {
            let left = eval(lhs, value, d)?;
            eval(rhs, &left, d)?
        }
        Node::Index(idx) => match value {
            Val::List(items) => py_index(items.len(), i64::from(*idx))
                .and_then(|i| items.get(i).cloned())
                .unwrap_or(Val::Null),
            _ => Val::Null,
        },
        Node::Slice(start, stop, step) => match value {
            Val::List(items) => {
                if *step == 0 {
                    return Err(EvalError::Python("slice step cannot be zero".to_owned()));
                }
                Val::list(py_slice(items, *start, *stop, *step))
            }
            _ => Val::Null,
        },
        Node::Projection(lhs, rhs) => match eval(lhs, value, d)? {
            Val::List(items) => {
                let mut collected = Vec::new();
                for item in items.iter() {
                    let current = eval(rhs, item, d)?;
                    if !current.is_null() {
                        collected.push(current);
                    }
                }
                Val::list(collected)
            }
            _ => Val::Null,
        },
        Node::ObjectValues(inner) => match eval(inner, value, d)? {
            Val::Dict(dict) => Val::list(dict.map.values().cloned().collect()),
            _ => Val::Null,
        },
        Node::Flatten(inner) => match eval(inner, value, d)? {
            Val::List(items) => {
                let mut merged = Vec::new();
                for item in items.iter() {
                    match item {
                        Val::List(inner) => merged.extend(inner.iter().cloned()),
                        other => merged.push(other.clone()),
                    }
                }
                Val::list(merged)
            }
            _ => Val::Null,
        },
        Node::Condition(predicate, then) => {
            if is_true(&eval(predicate, value, d)?) {
                eval(then, value, d)?
            } else {
                Val::Null
            }
        }
        Node::Comparison(cmp, lhs, rhs) => {
            let left = eval(lhs, value, d)?;
            let right = eval(rhs, value, d)?;
            compare(cmp, &left, &right)?
        }
        Node::Not(inner) => {
            let v = eval(inner, value, d)?;
            // `!0` is false: jmespath.py special-cases numbers before Python's `not`.
            Val::Bool(match v {
                Val::Int(_) | Val::Float(_) => false,
                other => is_false(&other),
            })
        }
        Node::Or(lhs, rhs) => {
            let left = eval(lhs, value, d)?;
            if is_false(&left) { eval(rhs, value, d)? } else { left }
        }
        Node::And(lhs, rhs) => {
            let left = eval(lhs, value, d)?;
            if is_false(&left) { left } else { eval(rhs, value, d)? }
        }
        Node::MultiList(elements) => {
            if value.is_null() {
                return Ok(Val::Null);
            }
            let mut collected = Vec::with_capacity(elements.len());
            for e in elements {
                collected.push(eval(e, value, d)?);
            }
            Val::list(collected)
        }
        Node::MultiHash(elements) => {
            if value.is_null() {
                return Ok(Val::Null);
            }
            let mut dict = Dict {
                ordered: true,
                ..Dict::default()
            };
            for (key, e) in elements {
                let v = eval(e, value, d)?;
                dict.map.insert(key.clone(), v);
            }
            Val::Dict(Rc::new(dict))
        }
        Node::Function(name, args) => {
            let mut resolved = Vec::with_capacity(args.len());
            for a in args {
                resolved.push(eval(a, value, d)?);
            }
            functions::call(name, resolved, d)?
        }
        Node::Expref(inner) => Val::Expref(Rc::clone(inner)),
    })
}

/// jmespath.py's `_is_false`: `''`, `[]`, `{}`, `None` and `False` (not `0`).
pub(crate) fn is_false(v: &Val) -> bool {
    match v {
        Val::Null | Val::Bool(false) => true,
        Val::Str(s) => s.is_empty(),
        Val::List(items) => items.is_empty(),
        Val::Dict(d) => d.map.is_empty(),
        _ => false,
    }
}

fn is_true(v: &Val) -> bool {
    !is_false(v)
}

/// jmespath.py's `_equals`: Python `==`, except that 0 and 1 never equal a bool.
fn equals(a: &Val, b: &Val) -> bool {
    let special = |x: &Val, y: &Val| {
        x.as_number().is_some_and(|n| {
            let f = n.to_f64();
            f == 0.0 || f == 1.0
        }) && matches!(y, Val::Bool(_))
    };
    if special(a, b) || special(b, a) {
        return false;
    }
    py_eq(a, b)
}

fn compare(cmp: &Comparator, left: &Val, right: &Val) -> Result<Val, EvalError> {
    use std::cmp::Ordering;
    let op = match cmp {
        Comparator::Equal => return Ok(Val::Bool(equals(left, right))),
        Comparator::NotEqual => return Ok(Val::Bool(!equals(left, right))),
        Comparator::LessThan => "<",
        Comparator::LessThanEqual => "<=",
        Comparator::GreaterThan => ">",
        Comparator::GreaterThanEqual => ">=",
    };
    // Ordering is defined for numbers and, in jmespath.py, strings.
    let ordering = match (left, right) {
        (Val::Str(a), Val::Str(b)) => Some(a.cmp(b)),
        _ => match (left.as_number(), right.as_number()) {
            (Some(a), Some(b)) => a.partial_cmp(b),
            _ => {
                let comparable = |v: &Val| v.as_number().is_some() || matches!(v, Val::Str(_));
                if comparable(left) && comparable(right) {
                    return Err(EvalError::Python(format!(
                        "'{op}' not supported between instances of '{}' and '{}'",
                        left.py_type_name(),
                        right.py_type_name()
                    )));
                }
                return Ok(Val::Null);
            }
        },
    };
    let result = match ordering {
        // A NaN compares false every way, as in Python.
        None => false,
        Some(o) => match cmp {
            Comparator::LessThan => o == Ordering::Less,
            Comparator::LessThanEqual => o != Ordering::Greater,
            Comparator::GreaterThan => o == Ordering::Greater,
            _ => o != Ordering::Less,
        },
    };
    Ok(Val::Bool(result))
}

/// Python's `list[idx]` position, `None` for an IndexError.
fn py_index(len: usize, idx: i64) -> Option<usize> {
    let len = i64::try_from(len).ok()?;
    let i = if idx < 0 { idx + len } else { idx };
    if (0..len).contains(&i) {
        usize::try_from(i).ok()
    } else {
        None
    }
}

/// Python's `list[start:stop:step]` (`slice.indices`); `step` is not 0.
fn py_slice(items: &[Val], start: Option<i32>, stop: Option<i32>, step: i32) -> Vec<Val> {
    let len = i64::try_from(items.len()).unwrap_or(i64::MAX);
    let step = i64::from(step);
    let (lower, upper) = if step < 0 { (-1, len - 1) } else { (0, len) };
    let clamp = |bound: Option<i32>, default: i64| match bound {
        None => default,
        Some(b) => {
            let mut b = i64::from(b);
            if b < 0 {
                b += len;
                if b < lower {
                    b = lower;
                }
            } else if b > upper {
                b = upper;
            }
            b
        }
    };
    let start = clamp(start, if step < 0 { upper } else { lower });
    let stop = clamp(stop, if step < 0 { lower } else { upper });
    let mut out = Vec::new();
    let mut i = start;
    while (step > 0 && i < stop) || (step < 0 && i > stop) {
        if let Some(item) = usize::try_from(i).ok().and_then(|i| items.get(i)) {
            out.push(item.clone());
        }
        i += step;
    }
    out
}

/// Rewrites JEP-12 legacy literals (`` `westus` ``: backtick text that is not
/// JSON) into JSON string literals, as jmespath.py's lexer reads them
/// (`json.loads('"%s"' % lexeme.lstrip())`). Text inside `'…'` and `"…"` is
/// skipped with the lexer's own escape rule (a backslash takes the next
/// character). Returns `None` when nothing needed rewriting.
pub(crate) fn rewrite_legacy_literals(text: &str) -> Option<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '\'' && c != '"' && c != '`' {
            out.push(c);
            i += 1;
            continue;
        }
        // Find the closing delimiter, a backslash escaping the next character.
        let mut j = i + 1;
        let mut raw = String::new();
        while j < chars.len() && chars[j] != c {
            if chars[j] == '\\' {
                raw.push('\\');
                j += 1;
                if j >= chars.len() {
                    break;
                }
            }
            raw.push(chars[j]);
            j += 1;
        }
        if j >= chars.len() {
            // Unclosed: leave it to the parser to reject.
            out.extend(&chars[i..]);
            break;
        }
        if c == '`' {
            let lexeme = raw.replace("\\`", "`");
            if serde_json::from_str::<serde_json::Value>(&lexeme).is_err() {
                let quoted = format!("\"{}\"", lexeme.trim_start_matches(super::value::py_isspace));
                if let Ok(serde_json::Value::String(s)) = serde_json::from_str::<serde_json::Value>(&quoted) {
                    let json = serde_json::Value::String(s).to_string();
                    out.push('`');
                    out.push_str(&json.replace('`', "\\`"));
                    out.push('`');
                    changed = true;
                    i = j + 1;
                    continue;
                }
            }
        }
        out.extend(&chars[i..=j]);
        i = j + 1;
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_literals_become_json_strings() {
        assert_eq!(
            rewrite_legacy_literals("[?location==`westus`]").as_deref(),
            Some("[?location==`\"westus\"`]")
        );
        assert_eq!(rewrite_legacy_literals("[?a==`1`]"), None);
        assert_eq!(rewrite_legacy_literals("[?a=='`x`']"), None);
        assert_eq!(rewrite_legacy_literals("`\"a\"`"), None);
    }

    #[test]
    fn slices_follow_python() {
        let items: Vec<Val> = (0..5).map(Val::Int).collect();
        let ints = |v: Vec<Val>| {
            v.into_iter()
                .map(|x| match x {
                    Val::Int(i) => i,
                    _ => -99,
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(ints(py_slice(&items, None, None, -1)), vec![4, 3, 2, 1, 0]);
        assert_eq!(ints(py_slice(&items, Some(-2), None, 1)), vec![3, 4]);
        assert_eq!(ints(py_slice(&items, Some(10), None, -2)), vec![4, 2, 0]);
        assert_eq!(ints(py_slice(&items, Some(1), Some(100), 2)), vec![1, 3]);
    }
}
