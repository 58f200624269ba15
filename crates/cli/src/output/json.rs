//! `-o json` and `-o jsonc`, as knack's `format_json` and `format_json_color`.
//!
//! `format_json` is `json.dumps(result, ensure_ascii=False, indent=2,
//! sort_keys=True, separators=(',', ': ')) + '\n'`: keys are always sorted,
//! even those a query put in order, and floats print as Python's `repr`.
//! `jsonc` passes that text through Pygments' `JsonLexer` and
//! `TerminalFormatter` (light background), ported below token for token.

use std::fmt::Write as _;

use super::OutputError;
use super::query::EvalError;
use super::value::{Val, float_repr};

/// `format_json`.
pub(crate) fn format_json(v: &Val) -> Result<String, OutputError> {
    let mut out = String::new();
    write_pretty(v, 0, &mut out)?;
    out.push('\n');
    Ok(out)
}

fn write_pretty(v: &Val, level: usize, out: &mut String) -> Result<(), OutputError> {
    match v {
        Val::List(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(level + 1, out);
                write_pretty(item, level + 1, out)?;
            }
            newline(level, out);
            out.push(']');
        }
        Val::Dict(d) if !d.map.is_empty() => {
            let mut entries: Vec<(&String, &Val)> = d.map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(level + 1, out);
                write_str(k, false, out);
                out.push_str(": ");
                write_pretty(item, level + 1, out)?;
            }
            newline(level, out);
            out.push('}');
        }
        other => write_scalar(other, false, out).map_err(|_| OutputError::NotSerializable("_Expression"))?,
    }
    Ok(())
}

fn newline(level: usize, out: &mut String) {
    out.push('\n');
    for _ in 0..level {
        out.push_str("  ");
    }
}

/// Scalars and empty containers; `Err` for an expref.
fn write_scalar(v: &Val, ascii: bool, out: &mut String) -> Result<(), ()> {
    match v {
        Val::Null => out.push_str("null"),
        Val::Bool(true) => out.push_str("true"),
        Val::Bool(false) => out.push_str("false"),
        Val::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Val::Float(f) if f.is_nan() => out.push_str("NaN"),
        Val::Float(f) if f.is_infinite() => out.push_str(if *f > 0.0 { "Infinity" } else { "-Infinity" }),
        Val::Float(f) => out.push_str(&float_repr(*f)),
        Val::Str(s) => write_str(s, ascii, out),
        Val::List(_) => out.push_str("[]"),
        Val::Dict(_) => out.push_str("{}"),
        Val::Expref(_) => return Err(()),
    }
    Ok(())
}

/// A JSON string as Python's encoder writes it: `ensure_ascii=False` escapes
/// only `"`, `\` and C0 controls; `ensure_ascii=True` also escapes everything
/// outside printable ASCII as `\uXXXX` (lower-case hex, surrogate pairs).
fn write_str(s: &str, ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c if ascii && !(' '..='~').contains(&c) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `json.dumps(x, separators=(',', ':'))`: jmespath's `to_string`; keys in
/// their order, non-ASCII escaped.
pub(crate) fn dumps_compact(v: &Val) -> Result<String, EvalError> {
    let mut out = String::new();
    write_compact(v, &mut out)?;
    Ok(out)
}

fn write_compact(v: &Val, out: &mut String) -> Result<(), EvalError> {
    match v {
        Val::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_compact(item, out)?;
            }
            out.push(']');
        }
        Val::Dict(d) => {
            out.push('{');
            for (i, (k, item)) in d.map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(k, true, out);
                out.push(':');
                write_compact(item, out)?;
            }
            out.push('}');
        }
        // `default=str` turns an expref into the text of its repr.
        Val::Expref(_) => write_str("<jmespath.visitor._Expression object>", true, out),
        other => {
            let _ = write_scalar(other, true, out);
        }
    }
    Ok(())
}

/// Pygments token types that reach the terminal formatter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Token {
    Whitespace,
    NameTag,
    String,
    Number,
    Keyword,
    Punctuation,
    Error,
    /// `Name.Variable`, `Name.Constant`.
    Red,
    /// `Keyword.Type`.
    Cyan,
    /// `Name.Namespace`.
    UnderlinedCyan,
    /// Text with no colour of its own (`Token`, `Literal.Scalar.Plain`, …).
    Plain,
}

/// `TerminalFormatter`'s colour for a token type (its `TERMINAL_COLORS`,
/// light background) as the ANSI sequence `ansiformat` opens with.
fn color_code(t: Token) -> Option<&'static str> {
    match t {
        Token::Whitespace => Some("\x1b[37m"),
        Token::NameTag => Some("\x1b[94m"),
        Token::String => Some("\x1b[33m"),
        Token::Number | Token::Keyword => Some("\x1b[34m"),
        Token::Error => Some("\x1b[04m\x1b[91m"),
        Token::Red => Some("\x1b[31m"),
        Token::Cyan => Some("\x1b[36m"),
        Token::UnderlinedCyan => Some("\x1b[04m\x1b[36m"),
        Token::Punctuation | Token::Plain => None,
    }
}

const RESET: &str = "\x1b[39;49;00m";

/// Python's `str.splitlines(keepends=True)`.
fn splitlines_keepends(s: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut iter = s.char_indices().peekable();
    while let Some((i, c)) = iter.next() {
        let end = match c {
            '\r' => match iter.peek() {
                Some((_, '\n')) => {
                    iter.next();
                    i + 2
                }
                _ => i + 1,
            },
            '\n' | '\u{b}' | '\u{c}' | '\u{1c}' | '\u{1d}' | '\u{1e}' | '\u{85}' | '\u{2028}' | '\u{2029}' => {
                i + c.len_utf8()
            }
            _ => continue,
        };
        lines.push(&s[start..end]);
        start = end;
    }
    if start < s.len() {
        lines.push(&s[start..]);
    }
    lines
}

/// `TerminalFormatter.format_unencoded` over `(token, text)` pairs.
pub(crate) fn terminal_format(tokens: &[(Token, &str)]) -> String {
    let mut out = String::new();
    for (t, text) in tokens {
        let color = color_code(*t);
        for line in splitlines_keepends(text) {
            let body = line.trim_end_matches('\n');
            match color {
                Some(code) => {
                    out.push_str(code);
                    out.push_str(body);
                    out.push_str(RESET);
                }
                None => out.push_str(body),
            }
            if line.ends_with('\n') {
                out.push('\n');
            }
        }
    }
    out
}

/// Pygments' `_preprocess_lexer_input` with the defaults `highlight` uses:
/// newlines stripped from both ends, one newline added.
pub(crate) fn preprocess_lexer_input(text: &str) -> String {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut text = text.trim_matches('\n').to_owned();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// `format_json_color`: `highlight(format_json(obj), JsonLexer(), TerminalFormatter())`.
pub(crate) fn format_json_color(v: &Val) -> Result<String, OutputError> {
    let text = preprocess_lexer_input(&format_json(v)?);
    Ok(terminal_format(&json_tokens(&text)))
}

/// Pygments 2.x `JsonLexer.get_tokens_unprocessed`, a character state
/// machine; a string followed by `:` becomes `Name.Tag`. Comments cannot
/// occur in json.dumps output, so `/` is lexed as the error it would be there.
fn json_tokens(text: &str) -> Vec<(Token, &str)> {
    const INTEGERS: &str = "-0123456789";
    const FLOATS: &str = ".eE+";
    const CONSTANTS: &str = "truefalsenull";
    const HEX: &str = "0123456789abcdefABCDEF";
    const PUNCTUATION: &str = "{}[],";
    let is_ws = |c: char| matches!(c, ' ' | '\n' | '\r' | '\t');

    let mut tokens: Vec<(Token, &str)> = Vec::new();
    let mut queue: Vec<(Token, &str)> = Vec::new();
    let (mut in_string, mut in_escape, mut in_unicode_escape) = (false, false, 0u8);
    let (mut in_whitespace, mut in_constant, mut in_number, mut in_float, mut in_punctuation) =
        (false, false, false, false, false);
    let mut start = 0usize;

    for (stop, ch) in text.char_indices() {
        if in_string {
            if in_unicode_escape > 0 {
                if HEX.contains(ch) {
                    in_unicode_escape -= 1;
                    if in_unicode_escape == 0 {
                        in_escape = false;
                    }
                } else {
                    in_unicode_escape = 0;
                    in_escape = false;
                }
            } else if in_escape {
                if ch == 'u' {
                    in_unicode_escape = 4;
                } else {
                    in_escape = false;
                }
            } else if ch == '\\' {
                in_escape = true;
            } else if ch == '"' {
                queue.push((Token::String, &text[start..stop + 1]));
                in_string = false;
                in_escape = false;
                in_unicode_escape = 0;
            }
            continue;
        } else if in_whitespace {
            if is_ws(ch) {
                continue;
            }
            if queue.is_empty() {
                tokens.push((Token::Whitespace, &text[start..stop]));
            } else {
                queue.push((Token::Whitespace, &text[start..stop]));
            }
            in_whitespace = false;
        } else if in_constant {
            if CONSTANTS.contains(ch) {
                continue;
            }
            tokens.push((Token::Keyword, &text[start..stop]));
            in_constant = false;
        } else if in_number {
            if INTEGERS.contains(ch) {
                continue;
            } else if FLOATS.contains(ch) {
                in_float = true;
                continue;
            }
            tokens.push((Token::Number, &text[start..stop]));
            in_number = false;
            in_float = false;
        } else if in_punctuation {
            if PUNCTUATION.contains(ch) {
                continue;
            }
            tokens.push((Token::Punctuation, &text[start..stop]));
            in_punctuation = false;
        }

        start = stop;
        if ch == '"' {
            in_string = true;
        } else if is_ws(ch) {
            in_whitespace = true;
        } else if matches!(ch, 'f' | 'n' | 't') {
            tokens.append(&mut queue);
            in_constant = true;
        } else if INTEGERS.contains(ch) {
            tokens.append(&mut queue);
            in_number = true;
        } else if ch == ':' {
            for (t, s) in queue.drain(..) {
                tokens.push((if t == Token::String { Token::NameTag } else { t }, s));
            }
            in_punctuation = true;
        } else if PUNCTUATION.contains(ch) {
            tokens.append(&mut queue);
            in_punctuation = true;
        } else {
            tokens.append(&mut queue);
            tokens.push((Token::Error, &text[stop..stop + ch.len_utf8()]));
        }
    }
    tokens.append(&mut queue);
    let rest = &text[start..];
    if in_string {
        tokens.push((Token::Error, rest));
    } else if in_float || in_number {
        tokens.push((Token::Number, rest));
    } else if in_constant {
        tokens.push((Token::Keyword, rest));
    } else if in_whitespace {
        tokens.push((Token::Whitespace, rest));
    } else if in_punctuation {
        tokens.push((Token::Punctuation, rest));
    }
    tokens
}
