//! `-o table`, as knack's `format_table`: `_TableOutput` picks the columns,
//! tabulate 0.10 (`tablefmt="simple"`, `disable_numparse=True`, no wcwidth
//! installed) lays them out.
//!
//! knack's rules, in order:
//! - a result that is not a list becomes a one-row list;
//! - each row that is a dict keeps its keys except `id`, `type` and `etag`
//!   whose value is not None, a list or a dict, and capitalises the first
//!   letter of the header (`resourceGroup` → `ResourceGroup`); the keys are
//!   sorted unless `--query` or a table transformer is active, else they keep
//!   their order;
//! - a row that is a list becomes `Column1`, `Column2`, …; any other row
//!   becomes `Result`;
//! - the columns are the union of the rows' keys in order of appearance.
//!
//! tabulate then prints each cell as Python's `str()`, stripped of
//! surrounding whitespace, left-aligned (number parsing is off, so nothing is
//! right-aligned) and padded to the widest cell or the header plus two; a
//! dashed line under the header; two spaces between columns; trailing spaces
//! removed. A cell with a line break makes tabulate's multi-line layout.

use std::sync::LazyLock;

use indexmap::IndexMap;
use regex::Regex;

use super::OutputError;
use super::value::{Val, py_isspace, py_str, py_strip};

/// `_TableOutput.SKIP_KEYS`.
const SKIP_KEYS: [&str; 3] = ["id", "type", "etag"];

/// tabulate's `MIN_PADDING`: a column is at least its header plus this.
const MIN_PADDING: usize = 2;

/// tabulate's `_ansi_codes`: CSI sequences and OSC 8 hyperlinks (the link
/// text, group 4, is what stays visible).
static ANSI_CODES: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(\x1b\[[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]|\x1b\]8;(\w+=\w+:?)*;([^\x1b]+)\x1b\\([^\x1b]+)\x1b\]8;;\x1b\\)",
    )
    .expect("a constant pattern compiles")
});

/// `format_table` on an already queried (and transformed) result.
pub(crate) fn format_table(result: &Val, sort_keys: bool) -> Result<String, OutputError> {
    let rows: Vec<IndexMap<String, Val>> = match result {
        Val::List(items) => items.iter().map(|i| auto_table_item(i, sort_keys)).collect(),
        other => vec![auto_table_item(other, sort_keys)],
    };
    let table = if rows.is_empty() {
        String::new()
    } else {
        tabulate(&rows)
    };
    if table == "\n" {
        // knack's `ValueError('Unable to extract fields for table.')`.
        return Err(OutputError::TableUnavailable);
    }
    Ok(table + "\n")
}

/// `_TableOutput._auto_table_item`.
fn auto_table_item(item: &Val, sort_keys: bool) -> IndexMap<String, Val> {
    let mut entry = IndexMap::new();
    match item {
        Val::Dict(d) => {
            let mut keys: Vec<&String> = d.map.keys().collect();
            if sort_keys {
                keys.sort();
            }
            for k in keys {
                if SKIP_KEYS.contains(&k.as_str()) {
                    continue;
                }
                let v = &d.map[k];
                if !matches!(v, Val::Null | Val::List(_) | Val::Dict(_)) {
                    entry.insert(capitalize_first_char(k), v.clone());
                }
            }
        }
        Val::List(items) => {
            for (i, v) in items.iter().enumerate() {
                entry.insert(format!("Column{}", i + 1), v.clone());
            }
        }
        other => {
            entry.insert("Result".to_owned(), other.clone());
        }
    }
    entry
}

/// `x[0].upper() + x[1:]`.
fn capitalize_first_char(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Python's `str.splitlines()` without the line ends.
fn splitlines(s: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut iter = s.char_indices().peekable();
    while let Some((i, c)) = iter.next() {
        let skip = match c {
            '\r' => match iter.peek() {
                Some((_, '\n')) => {
                    iter.next();
                    2
                }
                _ => 1,
            },
            '\n' | '\u{b}' | '\u{c}' | '\u{1c}' | '\u{1d}' | '\u{1e}' | '\u{85}' | '\u{2028}' | '\u{2029}' => {
                c.len_utf8()
            }
            _ => continue,
        };
        lines.push(&s[start..i]);
        start = i + skip;
    }
    if start < s.len() {
        lines.push(&s[start..]);
    }
    lines
}

/// Characters Python counts with `len()`, after tabulate strips invisible
/// ANSI codes when the table has any.
fn width(s: &str, has_invisible: bool) -> usize {
    if has_invisible {
        ANSI_CODES.replace_all(s, "$4").chars().count()
    } else {
        s.chars().count()
    }
}

/// The width of a cell in multi-line mode: its widest line, split on `\r`
/// and `\n` only (tabulate's `re.split("[\r\n]", …)`).
fn multiline_width(s: &str, has_invisible: bool) -> usize {
    s.split(['\r', '\n'])
        .map(|l| width(l, has_invisible))
        .max()
        .unwrap_or(0)
}

/// `"{0:<N}".format(s)` corrected for invisible codes.
fn pad_right(s: &str, target: usize, has_invisible: bool) -> String {
    let visible = width(s, has_invisible);
    let mut out = s.to_owned();
    for _ in visible..target {
        out.push(' ');
    }
    out
}

/// `tabulate(rows, headers="keys", tablefmt="simple", disable_numparse=True)`.
fn tabulate(rows: &[IndexMap<String, Val>]) -> String {
    let mut headers: Vec<&str> = Vec::new();
    for row in rows {
        for k in row.keys() {
            if !headers.contains(&k.as_str()) {
                headers.push(k);
            }
        }
    }
    // `_format`: None (a missing key) is '', everything else `str(value)`.
    let cols: Vec<Vec<String>> = headers
        .iter()
        .map(|h| {
            rows.iter()
                .map(|r| match r.get(*h) {
                    None | Some(Val::Null) => String::new(),
                    Some(v) => py_str(v),
                })
                .collect()
        })
        .collect();
    if headers.is_empty() && cols.is_empty() {
        // tabulate's "completely empty table".
        return String::new();
    }
    let plain: String = headers
        .iter()
        .map(|h| h.to_string())
        .chain(cols.iter().flatten().cloned())
        .collect::<Vec<_>>()
        .join("\t");
    let has_invisible = ANSI_CODES.is_match(&plain);
    let multiline = plain.contains(['\r', '\n']);

    // `_align_column` for "left": strip, then pad to the widest cell or the
    // header's minimum width.
    let mut widths = Vec::with_capacity(cols.len());
    let mut padded_cols = Vec::with_capacity(cols.len());
    for (h, col) in headers.iter().zip(&cols) {
        let minwidth = if multiline {
            multiline_width(h, has_invisible)
        } else {
            width(h, has_invisible)
        } + MIN_PADDING;
        let stripped: Vec<&str> = col.iter().map(|s| py_strip(s)).collect();
        let widest = stripped
            .iter()
            .map(|s| {
                if multiline {
                    multiline_width(s, has_invisible)
                } else {
                    width(s, has_invisible)
                }
            })
            .max()
            .unwrap_or(0);
        let w = widest.max(minwidth);
        let padded: Vec<String> = if multiline {
            stripped
                .iter()
                .map(|s| {
                    splitlines(s)
                        .iter()
                        .map(|l| pad_right(l, w, has_invisible))
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .collect()
        } else {
            stripped.iter().map(|s| pad_right(s, w, has_invisible)).collect()
        };
        widths.push(w);
        padded_cols.push(padded);
    }

    let mut lines: Vec<String> = Vec::new();
    let header_cells: Vec<String> = if multiline {
        headers
            .iter()
            .zip(&widths)
            .map(|(h, w)| {
                h.split(['\r', '\n'])
                    .map(|l| pad_right(l, *w, has_invisible))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .collect()
    } else {
        headers
            .iter()
            .zip(&widths)
            .map(|(h, w)| pad_right(h, *w, has_invisible))
            .collect()
    };
    let push_row = |lines: &mut Vec<String>, cells: &[String]| {
        if multiline {
            let cell_lines: Vec<Vec<&str>> = cells.iter().map(|c| splitlines(c)).collect();
            let n = cell_lines.iter().map(Vec::len).max().unwrap_or(0);
            for i in 0..n {
                let parts: Vec<String> = cell_lines
                    .iter()
                    .zip(&widths)
                    .map(|(cl, w)| cl.get(i).map_or_else(|| " ".repeat(*w), |s| (*s).to_owned()))
                    .collect();
                lines.push(rstrip(&parts.join("  ")));
            }
        } else {
            lines.push(rstrip(&cells.join("  ")));
        }
    };
    push_row(&mut lines, &header_cells);
    let dashes: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    lines.push(rstrip(&dashes.join("  ")));
    for i in 0..rows.len() {
        let cells: Vec<String> = padded_cols.iter().map(|c| c[i].clone()).collect();
        push_row(&mut lines, &cells);
    }
    lines.join("\n")
}

/// Python's `str.rstrip()`.
fn rstrip(s: &str) -> String {
    s.trim_end_matches(py_isspace).to_owned()
}
