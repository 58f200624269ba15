//! The Python object model az's formatters see, and Python's text for it.
//!
//! az formats Python objects, not JSON text, and three facts about those
//! objects change what it prints:
//! - a `dict` is either a plain `dict` (everything in a command's result) or
//!   an `OrderedDict` (what `--query`'s multi-select hash builds, knack
//!   `query.py` passing `jmespath.Options(collections.OrderedDict)`): `-o tsv`
//!   sorts the keys of the first and keeps the order of the second;
//! - an `int` and a `float` are different types: `1.0` prints as `1.0`;
//! - objects have identity: PyYAML writes an anchor (`&id001`) for a list or
//!   dict that appears twice, which a query like `[@, @]` produces.
//!
//! [`Val`] keeps all three (lists and dicts sit behind an `Rc`, so sharing one
//! is sharing the Python object). Numbers are `i128`/`f64`: serde_json gives
//! no integer beyond `u64`, so nothing larger ever comes in.

use std::fmt::Write as _;
use std::rc::Rc;

use indexmap::IndexMap;
use serde_json::Value;

use super::query::Node;

/// A Python value as az's formatters get it.
#[derive(Debug, Clone)]
pub(crate) enum Val {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(Rc<str>),
    List(Rc<Vec<Val>>),
    Dict(Rc<Dict>),
    /// jmespath's `_Expression`: what `&expr` evaluates to.
    Expref(Rc<Node>),
}

/// A Python `dict` (`ordered == false`) or `OrderedDict` (`ordered == true`);
/// both keep insertion order, as Python 3.7+ dicts do.
#[derive(Debug, Clone, Default)]
pub(crate) struct Dict {
    pub ordered: bool,
    pub map: IndexMap<String, Val>,
}

impl Val {
    /// What `json.loads` makes of this JSON: plain dicts, ints for integers.
    pub fn from_json(value: &Value) -> Val {
        match value {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Val::Int(i128::from(i))
                } else if let Some(u) = n.as_u64() {
                    Val::Int(i128::from(u))
                } else {
                    // serde_json has no NaN or infinity; an integer too big for
                    // u64 arrives here as its nearest f64 (see the module doc).
                    Val::Float(n.as_f64().unwrap_or(0.0))
                }
            }
            Value::String(s) => Val::Str(Rc::from(s.as_str())),
            Value::Array(items) => Val::List(Rc::new(items.iter().map(Val::from_json).collect())),
            Value::Object(map) => Val::Dict(Rc::new(Dict {
                ordered: false,
                map: map.iter().map(|(k, v)| (k.clone(), Val::from_json(v))).collect(),
            })),
        }
    }

    pub fn str(s: &str) -> Val {
        Val::Str(Rc::from(s))
    }

    pub fn list(items: Vec<Val>) -> Val {
        Val::List(Rc::new(items))
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Val::Null)
    }

    /// Python's `type(x).__name__`, which jmespath's type checks compare.
    pub fn py_type_name(&self) -> &'static str {
        match self {
            Val::Null => "NoneType",
            Val::Bool(_) => "bool",
            Val::Int(_) => "int",
            Val::Float(_) => "float",
            Val::Str(_) => "str",
            Val::List(_) => "list",
            Val::Dict(d) if d.ordered => "OrderedDict",
            Val::Dict(_) => "dict",
            Val::Expref(_) => "_Expression",
        }
    }

    /// jmespath's `TYPES_MAP` name of this value's type.
    pub fn jmespath_type(&self) -> &'static str {
        match self {
            Val::Null => "null",
            Val::Bool(_) => "boolean",
            Val::Int(_) | Val::Float(_) => "number",
            Val::Str(_) => "string",
            Val::List(_) => "array",
            Val::Dict(_) => "object",
            Val::Expref(_) => "expref",
        }
    }

    /// A number that is not a bool (jmespath's `_is_actual_number`).
    pub fn as_number(&self) -> Option<Num> {
        match self {
            Val::Int(i) => Some(Num::Int(*i)),
            Val::Float(f) => Some(Num::Float(*f)),
            _ => None,
        }
    }

    /// Whether two containers are the same Python object.
    pub fn same_object(&self, other: &Val) -> bool {
        match (self, other) {
            (Val::List(a), Val::List(b)) => Rc::ptr_eq(a, b),
            (Val::Dict(a), Val::Dict(b)) => Rc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Whether this value or anything in it is an `OrderedDict`.
    pub fn contains_ordered_dict(&self) -> bool {
        match self {
            Val::List(items) => items.iter().any(Val::contains_ordered_dict),
            Val::Dict(d) => d.ordered || d.map.values().any(Val::contains_ordered_dict),
            _ => false,
        }
    }
}

/// A Python number.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    pub fn to_f64(self) -> f64 {
        match self {
            // Precision loss above 2^53 matches Python's own int→float step in
            // mixed arithmetic.
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    pub fn into_val(self) -> Val {
        match self {
            Num::Int(i) => Val::Int(i),
            Num::Float(f) => Val::Float(f),
        }
    }

    /// Python's `a + b` for numbers.
    pub fn add(self, other: Num) -> Num {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => match a.checked_add(b) {
                Some(sum) => Num::Int(sum),
                None => Num::Float(a as f64 + b as f64),
            },
            (a, b) => Num::Float(a.to_f64() + b.to_f64()),
        }
    }

    /// Python's ordering of two numbers; `None` only when a NaN is involved.
    pub fn partial_cmp(self, other: Num) -> Option<std::cmp::Ordering> {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
            (a, b) => a.to_f64().partial_cmp(&b.to_f64()),
        }
    }
}

/// Python's `a == b` (not jmespath's `_equals`): `True == 1`, `1 == 1.0`,
/// dicts compare as sets of items unless both are `OrderedDict`s.
pub(crate) fn py_eq(a: &Val, b: &Val) -> bool {
    fn numeric(v: &Val) -> Option<Num> {
        match v {
            Val::Bool(b) => Some(Num::Int(i128::from(*b))),
            Val::Int(i) => Some(Num::Int(*i)),
            Val::Float(f) => Some(Num::Float(*f)),
            _ => None,
        }
    }
    if let (Some(x), Some(y)) = (numeric(a), numeric(b)) {
        return x.partial_cmp(y) == Some(std::cmp::Ordering::Equal);
    }
    match (a, b) {
        (Val::Null, Val::Null) => true,
        (Val::Str(x), Val::Str(y)) => x == y,
        (Val::List(x), Val::List(y)) => {
            Rc::ptr_eq(x, y) || (x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| py_eq(p, q)))
        }
        (Val::Dict(x), Val::Dict(y)) => {
            if x.map.len() != y.map.len() {
                return false;
            }
            if x.ordered && y.ordered {
                x.map
                    .iter()
                    .zip(y.map.iter())
                    .all(|((k1, v1), (k2, v2))| k1 == k2 && py_eq(v1, v2))
            } else {
                x.map.iter().all(|(k, v)| y.map.get(k).is_some_and(|w| py_eq(v, w)))
            }
        }
        (Val::Expref(x), Val::Expref(y)) => Rc::ptr_eq(x, y),
        _ => false,
    }
}

/// Python's `repr(float)`: the shortest digits that round-trip, in fixed
/// notation when the decimal exponent is in -4..16, else `d.ddde±XX`.
pub(crate) fn float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".to_owned();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.to_owned();
    }
    // Rust's `{:e}` prints the shortest round-tripping digits, as Python's
    // repr does (both are correctly rounded shortest representations).
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let decpt = exp + 1;
    let mut out = String::new();
    if x < 0.0 {
        out.push('-');
    }
    if -4 < decpt && decpt <= 16 {
        let len = i32::try_from(digits.len()).unwrap_or(i32::MAX);
        if decpt <= 0 {
            out.push_str("0.");
            for _ in 0..-decpt {
                out.push('0');
            }
            out.push_str(&digits);
        } else if decpt >= len {
            out.push_str(&digits);
            for _ in 0..decpt - len {
                out.push('0');
            }
            out.push_str(".0");
        } else {
            let split = usize::try_from(decpt).unwrap_or(0);
            out.push_str(&digits[..split]);
            out.push('.');
            out.push_str(&digits[split..]);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let e = decpt - 1;
        let _ = write!(out, "e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
    }
    out
}

/// Python's `str(x)`: strings as they are, everything else as `repr`.
pub(crate) fn py_str(v: &Val) -> String {
    match v {
        Val::Str(s) => s.to_string(),
        other => py_repr(other),
    }
}

/// Python's `repr(x)` (3.11: `OrderedDict([('k', v)])`).
pub(crate) fn py_repr(v: &Val) -> String {
    let mut out = String::new();
    write_repr(v, &mut out);
    out
}

fn write_repr(v: &Val, out: &mut String) {
    match v {
        Val::Null => out.push_str("None"),
        Val::Bool(true) => out.push_str("True"),
        Val::Bool(false) => out.push_str("False"),
        Val::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Val::Float(f) => out.push_str(&float_repr(*f)),
        Val::Str(s) => out.push_str(&py_repr_str(s)),
        Val::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(item, out);
            }
            out.push(']');
        }
        Val::Dict(d) if d.ordered => {
            if d.map.is_empty() {
                out.push_str("OrderedDict()");
                return;
            }
            out.push_str("OrderedDict([");
            for (i, (k, v)) in d.map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push('(');
                out.push_str(&py_repr_str(k));
                out.push_str(", ");
                write_repr(v, out);
                out.push(')');
            }
            out.push_str("])");
        }
        Val::Dict(d) => {
            out.push('{');
            for (i, (k, v)) in d.map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&py_repr_str(k));
                out.push_str(": ");
                write_repr(v, out);
            }
            out.push('}');
        }
        Val::Expref(_) => out.push_str("<jmespath.visitor._Expression object>"),
    }
}

/// Python's `repr(str)`: single quotes unless the text has a `'` and no `"`;
/// non-printable characters escaped.
pub(crate) fn py_repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if !py_isprintable(c) => {
                let code = u32::from(c);
                let _ = if code <= 0xff {
                    write!(out, "\\x{code:02x}")
                } else if code <= 0xffff {
                    write!(out, "\\u{code:04x}")
                } else {
                    write!(out, "\\U{code:08x}")
                };
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// An approximation of Python's `str.isprintable` for one character: control
/// characters, line/paragraph separators, non-space separators and the common
/// format characters are not printable. (Unassigned code points, which Python
/// also escapes, are printed as they are.)
fn py_isprintable(c: char) -> bool {
    let code = u32::from(c);
    !(code < 0x20
        || (0x7f..=0xa0).contains(&code)
        || code == 0xad
        || (0x2000..=0x200f).contains(&code)
        || (0x2028..=0x202f).contains(&code)
        || (0x205f..=0x206f).contains(&code)
        || code == 0x1680
        || code == 0x3000
        || code == 0xfeff
        || (0xd800..=0xf8ff).contains(&code)
        || (0xfff9..=0xfffb).contains(&code)
        || code >= 0xf0000)
}

/// Python's `str.isspace` for one character (`str.strip`'s set): Unicode
/// White_Space plus the four ASCII information separators.
pub(crate) fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()`.
pub(crate) fn py_strip(s: &str) -> &str {
    s.trim_matches(py_isspace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_repr_matches_python() {
        let cases = [
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5, "1.5"),
            (100.0, "100.0"),
            (-2.5e-7, "-2.5e-07"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (0.1, "0.1"),
            (1.0 / 3.0, "0.3333333333333333"),
            (1e300, "1e+300"),
            (-0.0, "-0.0"),
        ];
        for (x, want) in cases {
            assert_eq!(float_repr(x), want, "{x}");
        }
    }

    #[test]
    fn repr_str_picks_quotes_as_python() {
        assert_eq!(py_repr_str("a'b"), "\"a'b\"");
        assert_eq!(py_repr_str("a'b\""), "'a\\'b\"'");
        assert_eq!(py_repr_str("x\ny\u{1}"), "'x\\ny\\x01'");
    }
}
