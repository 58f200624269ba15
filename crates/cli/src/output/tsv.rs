//! `-o tsv`, as knack's `_TsvOutput`.
//!
//! A result that is not a list is one row. A row that is a dict prints its
//! values, sorted by key for a plain dict and in order for an `OrderedDict`
//! (what a `--query` multi-select hash builds); a row that is a list prints
//! its items. Inside a row a list prints its length, a dict nothing (so
//! columns still line up), anything else Python's `str()`: `True`, `None`,
//! `1e-05`. A row that is a bare bool prints `true`/`false`. Values are
//! separated by tabs, rows end in `\n`; nothing is escaped.

use super::value::{Val, py_str};

/// `format_tsv`.
pub(crate) fn format_tsv(result: &Val) -> String {
    let mut out = String::new();
    match result {
        Val::List(items) => items.iter().for_each(|row| dump_row(row, &mut out)),
        other => dump_row(other, &mut out),
    }
    out
}

/// `_TsvOutput._dump_row`.
fn dump_row(row: &Val, out: &mut String) {
    match row {
        Val::Dict(d) => {
            let mut values: Vec<(&String, &Val)> = d.map.iter().collect();
            if !d.ordered {
                values.sort_by(|a, b| a.0.cmp(b.0));
            }
            for (i, (_, v)) in values.into_iter().enumerate() {
                if i > 0 {
                    out.push('\t');
                }
                dump_obj(v, out);
            }
        }
        Val::List(items) => {
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push('\t');
                }
                dump_obj(v, out);
            }
        }
        Val::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        other => dump_obj(other, out),
    }
    out.push('\n');
}

/// `_TsvOutput._dump_obj`.
fn dump_obj(v: &Val, out: &mut String) {
    match v {
        Val::List(items) => out.push_str(&items.len().to_string()),
        Val::Dict(_) => {}
        other => out.push_str(&py_str(other)),
    }
}
