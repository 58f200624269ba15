//! `-o yamlc`, as knack's `format_yaml_color`: `highlight(format_yaml(obj),
//! YamlLexer(), TerminalFormatter())`.
//!
//! Pygments' `YamlLexer` is an `ExtendedRegexLexer`: a stack of states, each
//! a list of (pattern, action, next state) rules tried in order at the
//! current position, with callbacks that track indentation. This is that
//! engine and that rule table (Pygments 2.x `lexers/data.py`), patterns
//! unchanged; they need look-ahead, hence fancy-regex. A position no rule
//! matches becomes an `Error` token (the ideographic space in `全角　`, for
//! one), and a newline there resets the stack to `root`, as in Pygments.

use std::collections::HashMap;
use std::sync::LazyLock;

use fancy_regex::Regex;

use super::OutputError;
use super::json::{Token, preprocess_lexer_input, terminal_format};
use super::value::Val;
use super::yaml::format_yaml;

/// What a rule does with its match.
#[derive(Clone, Copy)]
enum Action {
    Token(Token),
    /// `something`: no token for an empty match.
    Something(Token),
    ResetIndent(Token),
    SaveIndent(Token, bool),
    SetIndent(Token, bool),
    SetBlockScalarIndent(Token),
    BlockScalarEmptyLine,
    BlockScalarIndent,
    PlainScalarIndent,
    /// `bygroups`: one token per group; `SetIndent` where Pygments nests
    /// `set_indent(Punctuation, implicit=True)`.
    Groups(&'static [Action]),
}

/// The state transition after a rule.
#[derive(Clone, Copy)]
enum Next {
    Stay,
    Pop(usize),
    Push(&'static [&'static str]),
}

struct Rule {
    re: Regex,
    action: Action,
    next: Next,
}

/// Pygments' token types, by the colour the terminal formatter gives them.
const WS: Token = Token::Whitespace;
const COMMENT: Token = Token::Whitespace;
const PUNCT: Token = Token::Punctuation;
const TAG: Token = Token::NameTag;
const STRING: Token = Token::String;
const VARIABLE: Token = Token::Red;
const CONSTANT: Token = Token::Red;
const PLAIN: Token = Token::Plain;
const LABEL: Token = Token::Plain;
const KEYWORD_TYPE: Token = Token::Cyan;
const NAMESPACE: Token = Token::UnderlinedCyan;
const NUMBER: Token = Token::Number;

type RawRule = (&'static str, Action, Next);

const DESCRIPTORS: &[RawRule] = &[
    (
        r"!<[\w#;/?:@&=+$,.!~*'()\[\]%-]+>",
        Action::Token(KEYWORD_TYPE),
        Next::Stay,
    ),
    (
        r"!(?:[\w-]+!)?[\w#;/?:@&=+$,.!~*'()\[\]%-]*",
        Action::Token(KEYWORD_TYPE),
        Next::Stay,
    ),
    (r"&[\w-]+", Action::Token(LABEL), Next::Stay),
    (r"\*[\w-]+", Action::Token(VARIABLE), Next::Stay),
];

const BLOCK_NODES: &[RawRule] = &[
    (r":(?=[ ]|$)", Action::SetIndent(PUNCT, true), Next::Stay),
    (
        r"[|>]",
        Action::Token(PUNCT),
        Next::Push(&["block-scalar-content", "block-scalar-header"]),
    ),
];

const FLOW_NODES: &[RawRule] = &[
    (r"\[", Action::Token(PUNCT), Next::Push(&["flow-sequence"])),
    (r"\{", Action::Token(PUNCT), Next::Push(&["flow-mapping"])),
    (r"'", Action::Token(STRING), Next::Push(&["single-quoted-scalar"])),
    (r#"""#, Action::Token(STRING), Next::Push(&["double-quoted-scalar"])),
];

const FLOW_COLLECTION_HEAD: &[RawRule] = &[
    (r"[ ]+", Action::Token(WS), Next::Stay),
    (r"\n+", Action::Token(WS), Next::Stay),
    (r"#[^\n]*", Action::Token(COMMENT), Next::Stay),
    (r"[?:,]", Action::Token(PUNCT), Next::Stay),
];

const FLOW_PLAIN: &[RawRule] = &[(
    r#"(?=[^\s?:,\[\]{}#&*!|>'"%@`])"#,
    Action::Something(VARIABLE),
    Next::Push(&["plain-scalar-in-flow-context"]),
)];

const QUOTED_WHITESPACE: &[RawRule] = &[
    (r"^[ ]+", Action::Token(WS), Next::Stay),
    (r"[ ]+$", Action::Token(WS), Next::Stay),
    (r"\n+", Action::Token(WS), Next::Stay),
    (r"[ \xa0]+", Action::Token(VARIABLE), Next::Stay),
];

fn states() -> Vec<(&'static str, Vec<RawRule>)> {
    let cat = |parts: &[&[RawRule]]| parts.iter().flat_map(|p| p.iter().copied()).collect::<Vec<_>>();
    vec![
        (
            "root",
            vec![
                (r"[ ]+(?=#|$)", Action::Token(WS), Next::Stay),
                (r"\n+", Action::Token(WS), Next::Stay),
                (r"#[^\n]*", Action::Token(COMMENT), Next::Stay),
                (
                    r"^%YAML(?=[ ]|$)",
                    Action::ResetIndent(TAG),
                    Next::Push(&["yaml-directive"]),
                ),
                (
                    r"^%TAG(?=[ ]|$)",
                    Action::ResetIndent(TAG),
                    Next::Push(&["tag-directive"]),
                ),
                (
                    r"^(?:---|\.\.\.)(?=[ ]|$)",
                    Action::ResetIndent(NAMESPACE),
                    Next::Push(&["block-line"]),
                ),
                (
                    r"[ ]*(?!\s|$)",
                    Action::SaveIndent(WS, true),
                    Next::Push(&["block-line", "indentation"]),
                ),
            ],
        ),
        (
            "ignored-line",
            vec![
                (r"[ ]+(?=#|$)", Action::Token(WS), Next::Stay),
                (r"#[^\n]*", Action::Token(COMMENT), Next::Stay),
                (r"\n", Action::Token(WS), Next::Pop(2)),
            ],
        ),
        (
            "yaml-directive",
            vec![(
                r"([ ]+)([0-9]+\.[0-9]+)",
                Action::Groups(&[Action::Token(WS), Action::Token(NUMBER)]),
                Next::Push(&["ignored-line"]),
            )],
        ),
        (
            "tag-directive",
            vec![(
                r"([ ]+)(!|![\w-]*!)([ ]+)(!|!?[\w;/?:@&=+$,.!~*'()\[\]%-]+)",
                Action::Groups(&[
                    Action::Token(WS),
                    Action::Token(KEYWORD_TYPE),
                    Action::Token(WS),
                    Action::Token(KEYWORD_TYPE),
                ]),
                Next::Push(&["ignored-line"]),
            )],
        ),
        (
            "indentation",
            vec![
                (r"[ ]*$", Action::Something(WS), Next::Pop(2)),
                (r"[ ]+(?=[?:-](?:[ ]|$))", Action::SaveIndent(WS, false), Next::Stay),
                (r"[?:-](?=[ ]|$)", Action::SetIndent(PUNCT, false), Next::Stay),
                (r"[ ]*", Action::SaveIndent(WS, false), Next::Pop(1)),
            ],
        ),
        (
            "block-line",
            cat(&[
                &[
                    (r"[ ]*(?=#|$)", Action::Something(WS), Next::Pop(1)),
                    (r"[ ]+", Action::Token(WS), Next::Stay),
                    (
                        r#"([^#,?\[\]{}"'\n]+)(:)(?=[ ]|$)"#,
                        Action::Groups(&[Action::Token(TAG), Action::SetIndent(PUNCT, true)]),
                        Next::Stay,
                    ),
                ],
                DESCRIPTORS,
                BLOCK_NODES,
                FLOW_NODES,
                &[(
                    r#"(?=[^\s?:,\[\]{}#&*!|>'"%@`-]|[?:-]\S)"#,
                    Action::Something(VARIABLE),
                    Next::Push(&["plain-scalar-in-block-context"]),
                )],
            ]),
        ),
        (
            "flow-sequence",
            cat(&[
                FLOW_COLLECTION_HEAD,
                DESCRIPTORS,
                FLOW_NODES,
                FLOW_PLAIN,
                &[(r"\]", Action::Token(PUNCT), Next::Pop(1))],
            ]),
        ),
        (
            "flow-mapping",
            cat(&[
                &[(
                    r#"([^,:?\[\]{}"'\n]+)(:)(?=[ ]|$)"#,
                    Action::Groups(&[Action::Token(TAG), Action::Token(PUNCT)]),
                    Next::Stay,
                )],
                FLOW_COLLECTION_HEAD,
                DESCRIPTORS,
                FLOW_NODES,
                FLOW_PLAIN,
                &[(r"\}", Action::Token(PUNCT), Next::Pop(1))],
            ]),
        ),
        (
            "block-scalar-content",
            vec![
                (r"\n", Action::Token(WS), Next::Stay),
                (r"^[ ]+$", Action::BlockScalarEmptyLine, Next::Stay),
                (r"^[ ]*", Action::BlockScalarIndent, Next::Stay),
                (r"[\S\t ]+", Action::Token(CONSTANT), Next::Stay),
            ],
        ),
        (
            "block-scalar-header",
            vec![
                (
                    r"([1-9])?[+-]?(?=[ ]|$)",
                    Action::SetBlockScalarIndent(PUNCT),
                    Next::Push(&["ignored-line"]),
                ),
                (
                    r"[+-]?([1-9])?(?=[ ]|$)",
                    Action::SetBlockScalarIndent(PUNCT),
                    Next::Push(&["ignored-line"]),
                ),
            ],
        ),
        (
            "single-quoted-scalar",
            cat(&[
                QUOTED_WHITESPACE,
                &[
                    (r"''", Action::Token(STRING), Next::Stay),
                    (r"[^\s']+", Action::Token(STRING), Next::Stay),
                    (r"'", Action::Token(STRING), Next::Pop(1)),
                ],
            ]),
        ),
        (
            "double-quoted-scalar",
            cat(&[
                QUOTED_WHITESPACE,
                &[
                    (r#"\\[0abt\tn\nvfre "\\N_LP]"#, Action::Token(STRING), Next::Stay),
                    (
                        r"\\(?:x[0-9A-Fa-f]{2}|u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8})",
                        Action::Token(STRING),
                        Next::Stay,
                    ),
                    (r#"[^\s"\\]+"#, Action::Token(STRING), Next::Stay),
                    (r#"""#, Action::Token(STRING), Next::Pop(1)),
                ],
            ]),
        ),
        (
            "plain-scalar-in-block-context-new-line",
            vec![
                (r"^[ ]+$", Action::Token(WS), Next::Stay),
                (r"\n+", Action::Token(WS), Next::Stay),
                (r"^(?=---|\.\.\.)", Action::Something(NAMESPACE), Next::Pop(3)),
                (r"^[ ]*", Action::PlainScalarIndent, Next::Pop(1)),
            ],
        ),
        (
            "plain-scalar-in-block-context",
            vec![
                (r"[ ]*(?=:[ ]|:$)", Action::Something(WS), Next::Pop(1)),
                (r"[ ]+(?=#)", Action::Token(WS), Next::Pop(1)),
                (r"[ ]+$", Action::Token(WS), Next::Stay),
                (
                    r"\n+",
                    Action::Token(WS),
                    Next::Push(&["plain-scalar-in-block-context-new-line"]),
                ),
                (r"[ \xa0]+", Action::Token(PLAIN), Next::Stay),
                (r"(?::(?!\s)|[^\s:])+", Action::Token(PLAIN), Next::Stay),
            ],
        ),
        (
            "plain-scalar-in-flow-context",
            vec![
                (r"[ ]*(?=[,:?\[\]{}])", Action::Something(WS), Next::Pop(1)),
                (r"[ ]+(?=#)", Action::Token(WS), Next::Pop(1)),
                (r"^[ ]+", Action::Token(WS), Next::Stay),
                (r"[ ]+$", Action::Token(WS), Next::Stay),
                (r"\n+", Action::Token(WS), Next::Stay),
                (r"[ \xa0]+", Action::Token(VARIABLE), Next::Stay),
                (r"[^\s,:?\[\]{}]+", Action::Token(VARIABLE), Next::Stay),
            ],
        ),
    ]
}

/// The compiled rule table; Pygments compiles with `re.MULTILINE`.
static RULES: LazyLock<HashMap<&'static str, Vec<Rule>>> = LazyLock::new(|| {
    states()
        .into_iter()
        .map(|(name, rules)| {
            let compiled = rules
                .into_iter()
                .map(|(pattern, action, next)| Rule {
                    re: Regex::new(&format!("(?m){pattern}")).expect("a constant pattern compiles"),
                    action,
                    next,
                })
                .collect();
            (name, compiled)
        })
        .collect()
});

/// `YamlLexerContext`.
struct Context {
    stack: Vec<&'static str>,
    indent_stack: Vec<i64>,
    indent: i64,
    next_indent: i64,
    block_scalar_indent: Option<i64>,
    pos: usize,
}

fn len(s: &str) -> i64 {
    i64::try_from(s.chars().count()).unwrap_or(i64::MAX)
}

/// Byte offset of the `n`th character of `s` (`s[:n]` in Python).
fn char_offset(s: &str, n: i64) -> usize {
    let n = usize::try_from(n.max(0)).unwrap_or(0);
    s.char_indices().nth(n).map_or(s.len(), |(i, _)| i)
}

/// The text a match at `pos` may see: the rest of its line, the newlines
/// after it and one more line for look-ahead. No rule spans more, and
/// bounding the haystack keeps a failed search from scanning to the end.
fn window_end(text: &str, pos: usize) -> usize {
    let bytes = text.as_bytes();
    let line_end = |from: usize| {
        bytes[from..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(bytes.len(), |i| from + i)
    };
    let mut end = line_end(pos);
    while end < bytes.len() && bytes[end] == b'\n' {
        end += 1;
    }
    if end < bytes.len() {
        end = line_end(end);
        if end < bytes.len() {
            end += 1;
        }
    }
    end
}

/// `rexmatch(text, pos)`: a match that starts exactly at `pos`, with its groups.
fn match_at(re: &Regex, text: &str, pos: usize) -> Option<Vec<Option<(usize, usize)>>> {
    let hay = &text[..window_end(text, pos)];
    let caps = re.captures_from_pos(hay, pos).ok()??;
    let whole = caps.get(0)?;
    if whole.start() != pos {
        return None;
    }
    Some(
        (0..caps.len())
            .map(|i| caps.get(i).map(|m| (m.start(), m.end())))
            .collect(),
    )
}

/// Runs one action; returns the tokens and whether it replaced the stack
/// (a callback popping it), as Pygments re-reads the state after a callback.
fn run_action<'t>(
    action: Action,
    text: &'t str,
    groups: &[Option<(usize, usize)>],
    group: usize,
    ctx: &mut Context,
    out: &mut Vec<(Token, &'t str)>,
) {
    let Some((start, end)) = groups[group] else { return };
    let m = &text[start..end];
    match action {
        Action::Token(t) => {
            // Inside `bygroups` an empty group yields nothing; a whole-match
            // token is yielded even when empty (it never is here).
            if !m.is_empty() || group == 0 {
                out.push((t, m));
            }
            ctx.pos = end;
        }
        Action::Something(t) => {
            if m.is_empty() {
                return;
            }
            out.push((t, m));
            ctx.pos = end;
        }
        Action::ResetIndent(t) => {
            ctx.indent_stack.clear();
            ctx.indent = -1;
            ctx.next_indent = 0;
            ctx.block_scalar_indent = None;
            out.push((t, m));
            ctx.pos = end;
        }
        Action::SaveIndent(t, start_of_line) => {
            let mut token_text = m;
            let mut extra = "";
            if start_of_line {
                ctx.next_indent = len(m);
                if ctx.next_indent < ctx.indent {
                    while ctx.next_indent < ctx.indent {
                        ctx.indent = ctx.indent_stack.pop().unwrap_or(-1);
                    }
                    if ctx.next_indent > ctx.indent {
                        let split = char_offset(m, ctx.indent);
                        extra = &m[split..];
                        token_text = &m[..split];
                    }
                }
            } else {
                ctx.next_indent += len(m);
            }
            if !token_text.is_empty() {
                out.push((t, token_text));
            }
            if !extra.is_empty() {
                // `Whitespace.Error` is coloured as `Whitespace`.
                out.push((t, extra));
            }
            ctx.pos = end;
        }
        Action::SetIndent(t, implicit) => {
            if ctx.indent < ctx.next_indent {
                ctx.indent_stack.push(ctx.indent);
                ctx.indent = ctx.next_indent;
            }
            if !implicit {
                ctx.next_indent += len(m);
            }
            out.push((t, m));
            ctx.pos = end;
        }
        Action::SetBlockScalarIndent(t) => {
            ctx.block_scalar_indent = None;
            if m.is_empty() {
                return;
            }
            if let Some((s, e)) = groups.get(1).copied().flatten()
                && let Ok(increment) = text[s..e].parse::<i64>()
            {
                ctx.block_scalar_indent = Some(ctx.indent.max(0) + increment);
            }
            out.push((t, m));
            ctx.pos = end;
        }
        Action::BlockScalarEmptyLine => {
            match ctx.block_scalar_indent {
                Some(indent) if len(m) > indent => {
                    let split = char_offset(m, indent);
                    out.push((WS, &m[..split]));
                    out.push((CONSTANT, &m[split..]));
                }
                _ => {
                    if !m.is_empty() {
                        out.push((WS, m));
                    }
                }
            }
            ctx.pos = end;
        }
        Action::BlockScalarIndent => {
            let n = len(m);
            match ctx.block_scalar_indent {
                None => {
                    if n <= ctx.indent.max(0) {
                        ctx.stack.pop();
                        ctx.stack.pop();
                        return;
                    }
                    ctx.block_scalar_indent = Some(n);
                }
                Some(indent) if n < indent => {
                    ctx.stack.pop();
                    ctx.stack.pop();
                    return;
                }
                Some(_) => {}
            }
            if !m.is_empty() {
                out.push((WS, m));
                ctx.pos = end;
            }
        }
        Action::PlainScalarIndent => {
            if len(m) <= ctx.indent {
                ctx.stack.pop();
                ctx.stack.pop();
                return;
            }
            if !m.is_empty() {
                out.push((WS, m));
                ctx.pos = end;
            }
        }
        Action::Groups(actions) => {
            for (i, a) in actions.iter().enumerate() {
                if groups.get(i + 1).copied().flatten().is_some() {
                    ctx.pos = groups[i + 1].map_or(ctx.pos, |g| g.0);
                    run_action(*a, text, groups, i + 1, ctx, out);
                }
            }
            ctx.pos = end;
        }
    }
}

/// `ExtendedRegexLexer.get_tokens_unprocessed` with the YAML rules.
fn yaml_tokens(text: &str) -> Vec<(Token, &str)> {
    let mut out = Vec::new();
    let mut ctx = Context {
        stack: vec!["root"],
        indent_stack: Vec::new(),
        indent: -1,
        next_indent: 0,
        block_scalar_indent: None,
        pos: 0,
    };
    'outer: loop {
        let state = ctx.stack.last().copied().unwrap_or("root");
        let Some(rules) = RULES.get(state) else { break };
        for rule in rules {
            if let Some(groups) = match_at(&rule.re, text, ctx.pos) {
                run_action(rule.action, text, &groups, 0, &mut ctx, &mut out);
                match rule.next {
                    Next::Stay => {}
                    Next::Pop(n) => {
                        if n >= ctx.stack.len() {
                            ctx.stack.truncate(1);
                        } else {
                            ctx.stack.truncate(ctx.stack.len() - n);
                        }
                    }
                    Next::Push(states) => ctx.stack.extend_from_slice(states),
                }
                if ctx.stack.is_empty() {
                    ctx.stack.push("root");
                }
                continue 'outer;
            }
        }
        // No rule matched here.
        let Some(c) = text[ctx.pos..].chars().next() else { break };
        let next = ctx.pos + c.len_utf8();
        if c == '\n' {
            ctx.stack = vec!["root"];
            out.push((Token::Plain, &text[ctx.pos..next]));
        } else {
            out.push((Token::Error, &text[ctx.pos..next]));
        }
        ctx.pos = next;
    }
    out
}

/// `format_yaml_color`.
pub(crate) fn format_yaml_color(result: &Val) -> Result<String, OutputError> {
    let text = preprocess_lexer_input(&format_yaml(result)?);
    Ok(terminal_format(&yaml_tokens(&text)))
}
