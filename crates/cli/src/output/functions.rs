//! JMESPath's 26 built-in functions as jmespath.py 1.1.0 implements them
//! (`jmespath/functions.py`): its signatures, its type checks and their
//! messages, and Python's results (`ceil` gives an int, `avg` a float,
//! `to_string` is `json.dumps(x, separators=(',', ':'))` with ASCII escapes,
//! `merge` builds a plain dict).

use std::cmp::Ordering;
use std::rc::Rc;

use super::json;
use super::query::{EvalError, eval};
use super::value::{Dict, Num, Val, py_eq, py_isspace, py_str};

/// One parameter: the jmespath type names it accepts (`[]` is any).
type Param = &'static [&'static str];

struct Signature {
    params: &'static [Param],
    variadic: bool,
}

const fn sig(params: &'static [Param]) -> Signature {
    Signature {
        params,
        variadic: false,
    }
}

fn signature(name: &str) -> Option<Signature> {
    const ANY: Param = &[];
    Some(match name {
        "abs" | "ceil" | "floor" => sig(&[&["number"]]),
        "avg" | "sum" => sig(&[&["array-number"]]),
        "not_null" => Signature {
            params: &[ANY],
            variadic: true,
        },
        "to_array" | "to_string" | "to_number" | "type" => sig(&[ANY]),
        "contains" => sig(&[&["array", "string"], ANY]),
        "length" => sig(&[&["string", "array", "object"]]),
        "ends_with" | "starts_with" => sig(&[&["string"], &["string"]]),
        "reverse" => sig(&[&["array", "string"]]),
        "join" => sig(&[&["string"], &["array-string"]]),
        "map" => sig(&[&["expref"], &["array"]]),
        "max" | "min" => sig(&[&["array-number", "array-string"]]),
        "merge" => Signature {
            params: &[&["object"]],
            variadic: true,
        },
        "sort" => sig(&[&["array-string", "array-number"]]),
        "keys" | "values" => sig(&[&["object"]]),
        "sort_by" | "min_by" | "max_by" => sig(&[&["array"], &["expref"]]),
        _ => return None,
    })
}

/// Python type names a jmespath type name stands for (`REVERSE_TYPES_MAP`).
fn py_types(jmespath_type: &str) -> &'static [&'static str] {
    match jmespath_type {
        "boolean" => &["bool"],
        "array" => &["list"],
        "object" => &["dict", "OrderedDict"],
        "null" => &["NoneType"],
        "string" => &["str"],
        "number" => &["float", "int"],
        "expref" => &["_Expression"],
        _ => &[],
    }
}

/// jmespath.py's `TYPES_MAP`, used when a message names a Python type.
fn jmespath_name_of_py(py: &str) -> &'static str {
    match py {
        "bool" => "boolean",
        "list" => "array",
        "dict" | "OrderedDict" => "object",
        "NoneType" => "null",
        "str" => "string",
        "float" | "int" => "number",
        "_Expression" => "expref",
        _ => "unknown",
    }
}

/// Python's repr of a list of strings: `['number', 'string']`.
fn py_list_repr(items: &[&str]) -> String {
    let inner: Vec<String> = items.iter().map(|s| format!("'{s}'")).collect();
    format!("[{}]", inner.join(", "))
}

/// `JMESPathTypeError`'s text.
fn type_error(function: &str, value: &Val, actual: &str, expected: &[&str]) -> EvalError {
    EvalError::Jmespath(format!(
        "In function {function}(), invalid type for value: {}, expected one of: {}, received: \"{actual}\"",
        py_str(value),
        py_list_repr(expected)
    ))
}

fn check_arguments(name: &str, args: &[Val], signature: &Signature) -> Result<(), EvalError> {
    let expected = signature.params.len();
    let plural = |n: usize| if n == 1 { "argument" } else { "arguments" };
    if signature.variadic {
        if args.len() < expected {
            return Err(EvalError::Jmespath(format!(
                "Expected at least {expected} {} for function {name}(), received {}",
                plural(expected),
                args.len()
            )));
        }
    } else if args.len() != expected {
        return Err(EvalError::Jmespath(format!(
            "Expected {expected} {} for function {name}(), received {}",
            plural(expected),
            args.len()
        )));
    }
    // As jmespath.py's `_type_check`, only the declared positions are checked
    // (a variadic function's extra arguments are not).
    for (arg, types) in args.iter().zip(signature.params) {
        if !types.is_empty() {
            check_type(name, arg, types)?;
        }
    }
    Ok(())
}

/// jmespath.py's `_type_check_single` and `_subtype_check`.
fn check_type(name: &str, arg: &Val, types: &[&str]) -> Result<(), EvalError> {
    let mut allowed: Vec<&str> = Vec::new();
    let mut subtypes: Vec<&[&str]> = Vec::new();
    for t in types {
        match t.split_once('-') {
            Some((outer, inner)) => {
                allowed.extend(py_types(outer));
                subtypes.push(py_types(inner));
            }
            None => allowed.extend(py_types(t)),
        }
    }
    let actual = arg.py_type_name();
    if !allowed.contains(&actual) {
        return Err(type_error(name, arg, jmespath_name_of_py(actual), types));
    }
    let Val::List(items) = arg else { return Ok(()) };
    match subtypes.as_slice() {
        [] => {}
        [only] => {
            for item in items.iter() {
                let t = item.py_type_name();
                if !only.contains(&t) {
                    return Err(type_error(name, item, t, types));
                }
            }
        }
        several => {
            if let Some(first) = items.first() {
                let t = first.py_type_name();
                let Some(chosen) = several.iter().find(|s| s.contains(&t)) else {
                    return Err(type_error(name, first, t, types));
                };
                for item in items.iter() {
                    let t = item.py_type_name();
                    if !chosen.contains(&t) {
                        return Err(type_error(name, item, t, types));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Calls the built-in `name` on evaluated arguments.
pub(crate) fn call(name: &str, args: Vec<Val>, depth: usize) -> Result<Val, EvalError> {
    let Some(signature) = signature(name) else {
        return Err(EvalError::Jmespath(format!("Unknown function: {name}()")));
    };
    check_arguments(name, &args, &signature)?;
    let mut args = args.into_iter();
    Ok(match name {
        "abs" => match take(&mut args) {
            Val::Int(i) => Val::Int(i.abs()),
            Val::Float(f) => Val::Float(f.abs()),
            other => other,
        },
        "avg" => {
            let items = list(take(&mut args));
            if items.is_empty() {
                Val::Null
            } else {
                let sum = sum_numbers(&items);
                Val::Float(sum.to_f64() / items.len() as f64)
            }
        }
        "ceil" => round_to_int(take(&mut args), f64::ceil)?,
        "floor" => round_to_int(take(&mut args), f64::floor)?,
        "contains" => {
            let subject = take(&mut args);
            let search = take(&mut args);
            match subject {
                Val::List(items) => Val::Bool(items.iter().any(|i| i.same_object(&search) || py_eq(i, &search))),
                Val::Str(s) => match search {
                    Val::Str(needle) => Val::Bool(s.contains(&*needle)),
                    other => {
                        return Err(EvalError::Python(format!(
                            "'in <string>' requires string as left operand, not {}",
                            other.py_type_name()
                        )));
                    }
                },
                _ => Val::Bool(false),
            }
        }
        "ends_with" => {
            let (s, suffix) = (take(&mut args), take(&mut args));
            Val::Bool(as_str(&s).ends_with(as_str(&suffix)))
        }
        "starts_with" => {
            let (s, prefix) = (take(&mut args), take(&mut args));
            Val::Bool(as_str(&s).starts_with(as_str(&prefix)))
        }
        "join" => {
            let sep = take(&mut args);
            let items = list(take(&mut args));
            let parts: Vec<&str> = items.iter().map(as_str).collect();
            Val::str(&parts.join(as_str(&sep)))
        }
        "keys" => match take(&mut args) {
            Val::Dict(d) => Val::list(d.map.keys().map(|k| Val::str(k)).collect()),
            _ => Val::Null,
        },
        "values" => match take(&mut args) {
            Val::Dict(d) => Val::list(d.map.values().cloned().collect()),
            _ => Val::Null,
        },
        "length" => match take(&mut args) {
            Val::Str(s) => Val::Int(s.chars().count() as i128),
            Val::List(items) => Val::Int(items.len() as i128),
            Val::Dict(d) => Val::Int(d.map.len() as i128),
            _ => Val::Null,
        },
        "map" => {
            let expref = take(&mut args);
            let items = list(take(&mut args));
            let mut out = Vec::with_capacity(items.len());
            for item in items.iter() {
                out.push(apply(&expref, item, depth)?);
            }
            Val::list(out)
        }
        "max" | "min" => {
            let items = list(take(&mut args));
            let want = if name == "max" {
                Ordering::Greater
            } else {
                Ordering::Less
            };
            let mut best: Option<&Val> = None;
            for item in items.iter() {
                best = match best {
                    Some(b) if order(item, b, if want == Ordering::Greater { ">" } else { "<" })? != want => Some(b),
                    _ => Some(item),
                };
            }
            best.cloned().unwrap_or(Val::Null)
        }
        "max_by" | "min_by" => {
            let items = list(take(&mut args));
            let expref = take(&mut args);
            let want = if name == "max_by" {
                Ordering::Greater
            } else {
                Ordering::Less
            };
            let op = if want == Ordering::Greater { ">" } else { "<" };
            let mut best: Option<(&Val, Val)> = None;
            for item in items.iter() {
                let key = by_key(name, &expref, item, &["number", "string"], depth)?;
                best = match best {
                    Some((b, bk)) if order(&key, &bk, op)? != want => Some((b, bk)),
                    _ => Some((item, key)),
                };
            }
            best.map(|(b, _)| b.clone()).unwrap_or(Val::Null)
        }
        "merge" => {
            let mut merged = Dict::default();
            for arg in args {
                dict_update(&mut merged, &arg)?;
            }
            Val::Dict(Rc::new(merged))
        }
        "not_null" => args.find(|a| !a.is_null()).unwrap_or(Val::Null),
        "reverse" => match take(&mut args) {
            Val::Str(s) => Val::str(&s.chars().rev().collect::<String>()),
            Val::List(items) => Val::list(items.iter().rev().cloned().collect()),
            other => other,
        },
        "sort" => {
            let items = list(take(&mut args));
            let mut sorted: Vec<Val> = items.iter().cloned().collect();
            sort_stable(&mut sorted, |a, b| order(a, b, "<"))?;
            Val::list(sorted)
        }
        "sort_by" => {
            let array = take(&mut args);
            let expref = take(&mut args);
            let items = list(array.clone());
            let Some(first) = items.first() else { return Ok(array) };
            let required = apply(&expref, first, depth)?.jmespath_type();
            if required != "number" && required != "string" {
                return Err(type_error("sort_by", first, required, &["string", "number"]));
            }
            let mut keyed = Vec::with_capacity(items.len());
            for item in items.iter() {
                keyed.push((by_key("sort_by", &expref, item, &[required], depth)?, item.clone()));
            }
            sort_stable(&mut keyed, |a, b| order(&a.0, &b.0, "<"))?;
            Val::list(keyed.into_iter().map(|(_, v)| v).collect())
        }
        "sum" => sum_numbers(&list(take(&mut args))).into_val(),
        "to_array" => match take(&mut args) {
            l @ Val::List(_) => l,
            other => Val::list(vec![other]),
        },
        "to_string" => match take(&mut args) {
            s @ Val::Str(_) => s,
            other => Val::str(&json::dumps_compact(&other)?),
        },
        "to_number" => match take(&mut args) {
            n @ (Val::Int(_) | Val::Float(_)) => n,
            Val::Str(s) => parse_python_number(&s),
            Val::Expref(_) => {
                return Err(EvalError::Python(
                    "int() argument must be a string, a bytes-like object or a real number, not '_Expression'"
                        .to_owned(),
                ));
            }
            _ => Val::Null,
        },
        "type" => match take(&mut args) {
            // jmespath.py's `_func_type` has no branch for an expref: None.
            Val::Expref(_) => Val::Null,
            other => Val::str(other.jmespath_type()),
        },
        _ => return Err(EvalError::Jmespath(format!("Unknown function: {name}()"))),
    })
}

/// Python's `dict.update(arg)`, which `merge` calls on every argument though
/// only the first is type-checked: a dict adds its items; any other iterable
/// must yield `(key, value)` pairs (a two-key dict is such a pair: its keys).
fn dict_update(merged: &mut Dict, arg: &Val) -> Result<(), EvalError> {
    let items: Vec<Val> = match arg {
        Val::Dict(d) => {
            for (k, v) in &d.map {
                merged.map.insert(k.clone(), v.clone());
            }
            return Ok(());
        }
        Val::List(items) => items.iter().cloned().collect(),
        Val::Str(s) => s.chars().map(|c| Val::str(&c.to_string())).collect(),
        other => {
            return Err(EvalError::Python(format!(
                "'{}' object is not iterable",
                other.py_type_name()
            )));
        }
    };
    for (i, item) in items.iter().enumerate() {
        let pair: Vec<Val> = match item {
            Val::List(p) => p.iter().cloned().collect(),
            Val::Dict(d) => d.map.keys().map(|k| Val::str(k)).collect(),
            Val::Str(s) => s.chars().map(|c| Val::str(&c.to_string())).collect(),
            _ => {
                return Err(EvalError::Python(format!(
                    "cannot convert dictionary update sequence element #{i} to a sequence"
                )));
            }
        };
        if pair.len() != 2 {
            return Err(EvalError::Python(format!(
                "dictionary update sequence element #{i} has length {}; 2 is required",
                pair.len()
            )));
        }
        match &pair[0] {
            Val::Str(k) => {
                merged.map.insert(k.to_string(), pair[1].clone());
            }
            // A non-string key makes a dict JSON output cannot sort; rare
            // enough to refuse rather than imitate.
            other => {
                return Err(EvalError::Python(format!(
                    "merge() made a key of type '{}', which netwatch does not print",
                    other.py_type_name()
                )));
            }
        }
    }
    Ok(())
}

/// The next argument (arity is checked, so it is there).
fn take(args: &mut std::vec::IntoIter<Val>) -> Val {
    args.next().unwrap_or(Val::Null)
}

fn list(v: Val) -> Rc<Vec<Val>> {
    match v {
        Val::List(items) => items,
        _ => Rc::new(Vec::new()),
    }
}

fn as_str(v: &Val) -> &str {
    match v {
        Val::Str(s) => s,
        _ => "",
    }
}

/// Python's `sum(numbers)`: starts from the int 0, adds left to right
/// (Python 3.11; 3.12 compensates float sums).
fn sum_numbers(items: &[Val]) -> Num {
    items.iter().filter_map(Val::as_number).fold(Num::Int(0), Num::add)
}

/// `math.ceil`/`math.floor`: an int from a float.
fn round_to_int(v: Val, round: fn(f64) -> f64) -> Result<Val, EvalError> {
    Ok(match v {
        Val::Float(f) if f.is_nan() => {
            return Err(EvalError::Python("cannot convert float NaN to integer".to_owned()));
        }
        Val::Float(f) if f.is_infinite() => {
            return Err(EvalError::Python("cannot convert float infinity to integer".to_owned()));
        }
        Val::Float(f) => {
            let r = round(f);
            // Beyond i128 Python would print every digit of a big int; such a
            // float stays a float here (module doc of `value`).
            if r.abs() < 1.0e38 {
                #[allow(clippy::cast_possible_truncation, reason = "r is integral and within i128")]
                Val::Int(r as i128)
            } else {
                Val::Float(r)
            }
        }
        other => other,
    })
}

/// Evaluates an expref argument on one element.
fn apply(expref: &Val, item: &Val, depth: usize) -> Result<Val, EvalError> {
    match expref {
        Val::Expref(node) => eval(node, item, depth),
        _ => Ok(Val::Null),
    }
}

/// jmespath.py's `_create_key_func`: the key, checked against `allowed`.
fn by_key(name: &str, expref: &Val, item: &Val, allowed: &[&str], depth: usize) -> Result<Val, EvalError> {
    let key = apply(expref, item, depth)?;
    let t = key.jmespath_type();
    if !allowed.contains(&t) {
        return Err(type_error(name, &key, t, allowed));
    }
    Ok(key)
}

/// Python's comparison of two sort keys (numbers or strings); comparing a
/// number with a string is Python's TypeError, named after `op`.
fn order(a: &Val, b: &Val, op: &str) -> Result<Ordering, EvalError> {
    match (a, b) {
        (Val::Str(x), Val::Str(y)) => Ok(x.cmp(y)),
        _ => match (a.as_number(), b.as_number()) {
            (Some(x), Some(y)) => Ok(x.partial_cmp(y).unwrap_or(Ordering::Equal)),
            _ => Err(EvalError::Python(format!(
                "'{op}' not supported between instances of '{}' and '{}'",
                a.py_type_name(),
                b.py_type_name()
            ))),
        },
    }
}

/// A stable sort whose comparison may fail (Python's `sorted` is stable too).
fn sort_stable<T>(items: &mut [T], cmp: impl Fn(&T, &T) -> Result<Ordering, EvalError>) -> Result<(), EvalError> {
    let mut failure = None;
    items.sort_by(|a, b| match cmp(a, b) {
        Ok(o) => o,
        Err(e) => {
            failure.get_or_insert(e);
            Ordering::Equal
        }
    });
    failure.map_or(Ok(()), Err)
}

/// `to_number` on a string: Python's `int(s)`, else `float(s)`, else None.
fn parse_python_number(s: &str) -> Val {
    let t = s.trim_matches(py_isspace);
    // Underscores are allowed between digits only.
    let chars: Vec<char> = t.chars().collect();
    let underscores_ok = chars.iter().enumerate().all(|(i, c)| {
        *c != '_' || (i > 0 && chars[i - 1].is_ascii_digit() && chars.get(i + 1).is_some_and(char::is_ascii_digit))
    });
    if !underscores_ok {
        return Val::Null;
    }
    let t: String = t.chars().filter(|c| *c != '_').collect();
    let digits = t.strip_prefix(['+', '-']).unwrap_or(&t);
    if !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit())
        && let Ok(i) = t.parse::<i128>()
    {
        return Val::Int(i);
    }
    let lower = digits.to_ascii_lowercase();
    let word = matches!(lower.as_str(), "inf" | "infinity" | "nan");
    let numeric = !digits.is_empty()
        && digits
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
        && digits.chars().any(|c| c.is_ascii_digit());
    if (word || numeric)
        && let Ok(f) = t.parse::<f64>()
    {
        return Val::Float(f);
    }
    Val::Null
}
