//! `-o yaml`, as knack's `format_yaml`: `yaml.safe_dump(result,
//! default_flow_style=False, allow_unicode=True)` from PyYAML 6.
//!
//! This ports the parts of PyYAML that run: `SafeRepresenter` (keys sorted;
//! floats as `repr().lower()` with `.0` put before a bare exponent; `.nan`,
//! `.inf`), `Serializer` (an anchor `&id001` for a list or dict that appears
//! twice, then `*id001`), `Resolver` (a string that would read back as
//! another type is quoted) and `Emitter` (block style, sequences inside a
//! mapping not indented, empty collections as `[]`/`{}`, plain scalars
//! preferred then single then double quotes, lines folded at 80 columns, a
//! top-level plain scalar closed by `...`). When the result holds an
//! `OrderedDict` (a query's multi-select hash) `safe_dump` raises and knack
//! retries on `json.loads(json.dumps(result))`: plain dicts, no shared objects.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;

use super::OutputError;
use super::value::{Val, float_repr};

const TAG_STR: &str = "tag:yaml.org,2002:str";
const TAG_INT: &str = "tag:yaml.org,2002:int";
const TAG_FLOAT: &str = "tag:yaml.org,2002:float";
const TAG_BOOL: &str = "tag:yaml.org,2002:bool";
const TAG_NULL: &str = "tag:yaml.org,2002:null";

/// PyYAML's `Emitter.best_width`.
const BEST_WIDTH: usize = 80;
/// PyYAML's `Emitter.best_indent`.
const BEST_INDENT: usize = 2;

/// `Resolver`'s implicit resolvers: (tag, first characters, pattern). Python's
/// `$` also matches before a final newline, hence `\n?\z`.
static RESOLVERS: LazyLock<Vec<(&'static str, &'static str, Regex)>> = LazyLock::new(|| {
    let r = |p: &str| Regex::new(&format!(r"\A(?:{p})\n?\z")).expect("a constant pattern compiles");
    vec![
        (
            TAG_BOOL,
            "yYnNtTfFoO",
            r("yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF"),
        ),
        (
            TAG_FLOAT,
            "-+0123456789.",
            r(
                r"[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)",
            ),
        ),
        (
            TAG_INT,
            "-+0123456789",
            r(
                r"[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+",
            ),
        ),
        ("tag:yaml.org,2002:merge", "<", r("<<")),
        (TAG_NULL, "~nN", r("~|null|Null|NULL|")),
        (
            "tag:yaml.org,2002:timestamp",
            "0123456789",
            r(
                r"[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]|[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?(?:[Tt]|[ \t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9](?:\.[0-9]*)?(?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?",
            ),
        ),
        ("tag:yaml.org,2002:value", "=", r("=")),
        ("tag:yaml.org,2002:yaml", "!&*", r(r"!|&|\*")),
    ]
});

/// `Resolver.resolve(ScalarNode, value, (True, False))`.
fn resolve(value: &str) -> &'static str {
    let first = value.chars().next();
    for (tag, firsts, re) in RESOLVERS.iter() {
        let applies = match first {
            // The empty string is registered for the null resolver only.
            None => *tag == TAG_NULL,
            Some(c) => firsts.contains(c),
        };
        if applies && re.is_match(value) {
            return tag;
        }
    }
    TAG_STR
}

/// A representation node; collections refer to other nodes by index, so a
/// shared Python object is one node reached twice.
enum YNode {
    Scalar { tag: &'static str, value: String },
    Seq(Vec<usize>),
    Map(Vec<(usize, usize)>),
}

struct Representer {
    nodes: Vec<YNode>,
    /// Python object identity (the `Rc` address) → node, for aliases.
    represented: HashMap<usize, usize>,
    aliases: bool,
}

impl Representer {
    fn scalar(&mut self, tag: &'static str, value: String) -> usize {
        self.nodes.push(YNode::Scalar { tag, value });
        self.nodes.len() - 1
    }

    fn represent(&mut self, v: &Val) -> Result<usize, OutputError> {
        let identity = match v {
            Val::List(items) if self.aliases => Some(std::rc::Rc::as_ptr(items) as usize),
            Val::Dict(d) if self.aliases => Some(std::rc::Rc::as_ptr(d) as usize),
            _ => None,
        };
        if let Some(node) = identity.and_then(|id| self.represented.get(&id)) {
            return Ok(*node);
        }
        Ok(match v {
            Val::Null => self.scalar(TAG_NULL, "null".to_owned()),
            Val::Bool(b) => self.scalar(TAG_BOOL, b.to_string()),
            Val::Int(i) => self.scalar(TAG_INT, i.to_string()),
            Val::Float(f) => self.scalar(TAG_FLOAT, represent_float(*f)),
            Val::Str(s) => self.scalar(TAG_STR, s.to_string()),
            Val::List(items) => {
                let id = self.nodes.len();
                self.nodes.push(YNode::Seq(Vec::new()));
                if let Some(key) = identity {
                    self.represented.insert(key, id);
                }
                let mut children = Vec::with_capacity(items.len());
                for item in items.iter() {
                    children.push(self.represent(item)?);
                }
                self.nodes[id] = YNode::Seq(children);
                id
            }
            Val::Dict(d) => {
                let id = self.nodes.len();
                self.nodes.push(YNode::Map(Vec::new()));
                if let Some(key) = identity {
                    self.represented.insert(key, id);
                }
                let mut entries: Vec<(&String, &Val)> = d.map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                let mut pairs = Vec::with_capacity(entries.len());
                for (k, item) in entries {
                    let key = self.scalar(TAG_STR, k.clone());
                    pairs.push((key, self.represent(item)?));
                }
                self.nodes[id] = YNode::Map(pairs);
                id
            }
            Val::Expref(_) => return Err(OutputError::NotSerializable("_Expression")),
        })
    }
}

/// `SafeRepresenter.represent_float`.
fn represent_float(f: f64) -> String {
    if f.is_nan() {
        return ".nan".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { ".inf" } else { "-.inf" }.to_owned();
    }
    let value = float_repr(f).to_lowercase();
    if !value.contains('.') && value.contains('e') {
        value.replacen('e', ".0e", 1)
    } else {
        value
    }
}

/// `format_yaml`.
pub(crate) fn format_yaml(result: &Val) -> Result<String, OutputError> {
    let mut rep = Representer {
        nodes: Vec::new(),
        represented: HashMap::new(),
        aliases: !result.contains_ordered_dict(),
    };
    let root = rep.represent(result)?;
    let mut anchors: Vec<Option<String>> = vec![None; rep.nodes.len()];
    let mut seen = vec![false; rep.nodes.len()];
    let mut last_anchor = 0;
    anchor_node(&rep.nodes, root, &mut seen, &mut anchors, &mut last_anchor);
    let mut emitter = Emitter::new(&rep.nodes, anchors);
    emitter.emit_document(root);
    Ok(emitter.out)
}

/// `Serializer.anchor_node`: a node reached a second time gets the next anchor.
fn anchor_node(nodes: &[YNode], id: usize, seen: &mut [bool], anchors: &mut [Option<String>], last: &mut usize) {
    if seen[id] {
        if anchors[id].is_none() {
            *last += 1;
            anchors[id] = Some(format!("id{:03}", *last));
        }
        return;
    }
    seen[id] = true;
    match &nodes[id] {
        YNode::Scalar { .. } => {}
        YNode::Seq(items) => {
            for item in items {
                anchor_node(nodes, *item, seen, anchors, last);
            }
        }
        YNode::Map(pairs) => {
            for (k, v) in pairs {
                anchor_node(nodes, *k, seen, anchors, last);
                anchor_node(nodes, *v, seen, anchors, last);
            }
        }
    }
}

/// `Emitter.analyze_scalar`'s verdict.
struct Analysis {
    empty: bool,
    multiline: bool,
    allow_flow_plain: bool,
    allow_block_plain: bool,
    allow_single_quoted: bool,
}

fn is_break(c: char) -> bool {
    matches!(c, '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

fn is_space_or_break(c: char) -> bool {
    matches!(c, '\0' | ' ' | '\t' | '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// `Emitter.analyze_scalar` with `allow_unicode=True`.
fn analyze_scalar(s: &[char]) -> Analysis {
    if s.is_empty() {
        return Analysis {
            empty: true,
            multiline: false,
            allow_flow_plain: false,
            allow_block_plain: true,
            allow_single_quoted: true,
        };
    }
    let mut block_indicators = false;
    let mut flow_indicators = false;
    let mut line_breaks = false;
    let mut special_characters = false;
    let (mut leading_space, mut leading_break, mut trailing_space, mut trailing_break) = (false, false, false, false);
    let (mut break_space, mut space_break) = (false, false);
    if s.starts_with(&['-', '-', '-']) || s.starts_with(&['.', '.', '.']) {
        block_indicators = true;
        flow_indicators = true;
    }
    let mut preceded_by_whitespace = true;
    let mut followed_by_whitespace = s.len() == 1 || is_space_or_break(s[1]);
    let (mut previous_space, mut previous_break) = (false, false);
    for (index, &ch) in s.iter().enumerate() {
        if index == 0 {
            if "#,[]{}&*!|>'\"%@`".contains(ch) {
                flow_indicators = true;
                block_indicators = true;
            }
            if ch == '?' || ch == ':' {
                flow_indicators = true;
                if followed_by_whitespace {
                    block_indicators = true;
                }
            }
            if ch == '-' && followed_by_whitespace {
                flow_indicators = true;
                block_indicators = true;
            }
        } else {
            if ",?[]{}".contains(ch) {
                flow_indicators = true;
            }
            if ch == ':' {
                flow_indicators = true;
                if followed_by_whitespace {
                    block_indicators = true;
                }
            }
            if ch == '#' && preceded_by_whitespace {
                flow_indicators = true;
                block_indicators = true;
            }
        }
        if is_break(ch) {
            line_breaks = true;
        }
        if !(ch == '\n' || (' '..='~').contains(&ch)) {
            let printable_unicode = (ch == '\u{85}'
                || ('\u{a0}'..='\u{d7ff}').contains(&ch)
                || ('\u{e000}'..='\u{fffd}').contains(&ch)
                || ('\u{10000}'..'\u{10ffff}').contains(&ch))
                && ch != '\u{feff}';
            if !printable_unicode {
                special_characters = true;
            }
        }
        if ch == ' ' {
            if index == 0 {
                leading_space = true;
            }
            if index == s.len() - 1 {
                trailing_space = true;
            }
            if previous_break {
                break_space = true;
            }
            previous_space = true;
            previous_break = false;
        } else if is_break(ch) {
            if index == 0 {
                leading_break = true;
            }
            if index == s.len() - 1 {
                trailing_break = true;
            }
            if previous_space {
                space_break = true;
            }
            previous_space = false;
            previous_break = true;
        } else {
            previous_space = false;
            previous_break = false;
        }
        preceded_by_whitespace = is_space_or_break(ch);
        followed_by_whitespace = index + 2 >= s.len() || is_space_or_break(s[index + 2]);
    }
    let mut allow_flow_plain = true;
    let mut allow_block_plain = true;
    let mut allow_single_quoted = true;
    if leading_space || leading_break || trailing_space || trailing_break {
        allow_flow_plain = false;
        allow_block_plain = false;
    }
    if break_space {
        allow_flow_plain = false;
        allow_block_plain = false;
        allow_single_quoted = false;
    }
    if space_break || special_characters {
        allow_flow_plain = false;
        allow_block_plain = false;
        allow_single_quoted = false;
    }
    if line_breaks {
        allow_flow_plain = false;
        allow_block_plain = false;
    }
    if flow_indicators {
        allow_flow_plain = false;
    }
    if block_indicators {
        allow_block_plain = false;
    }
    Analysis {
        empty: false,
        multiline: line_breaks,
        allow_flow_plain,
        allow_block_plain,
        allow_single_quoted,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    Plain,
    Single,
    Double,
}

/// PyYAML's `Emitter`, driven by the node tree instead of an event queue
/// (the events are those `Serializer.serialize_node` would send).
struct Emitter<'a> {
    nodes: &'a [YNode],
    anchors: Vec<Option<String>>,
    serialized: Vec<bool>,
    out: String,
    indents: Vec<Option<usize>>,
    indent: Option<usize>,
    flow_level: usize,
    root_context: bool,
    mapping_context: bool,
    simple_key_context: bool,
    column: usize,
    whitespace: bool,
    indention: bool,
    open_ended: bool,
}

impl<'a> Emitter<'a> {
    fn new(nodes: &'a [YNode], anchors: Vec<Option<String>>) -> Self {
        Emitter {
            nodes,
            serialized: vec![false; anchors.len()],
            anchors,
            out: String::new(),
            indents: Vec::new(),
            indent: None,
            flow_level: 0,
            root_context: false,
            mapping_context: false,
            simple_key_context: false,
            column: 0,
            whitespace: true,
            indention: true,
            open_ended: false,
        }
    }

    fn emit_document(&mut self, root: usize) {
        // The document start is implicit: nothing is written.
        self.expect_node(root, true, false, false);
        // DocumentEnd (not explicit), then StreamEnd.
        self.write_indent();
        if self.open_ended {
            self.write_indicator("...", true, false, false);
            self.write_indent();
        }
    }

    fn increase_indent(&mut self, flow: bool, indentless: bool) {
        self.indents.push(self.indent);
        match self.indent {
            None => self.indent = Some(if flow { BEST_INDENT } else { 0 }),
            Some(i) if !indentless => self.indent = Some(i + BEST_INDENT),
            Some(_) => {}
        }
    }

    fn pop_indent(&mut self) {
        self.indent = self.indents.pop().flatten();
    }

    /// `expect_node`: an alias if this node was already written.
    fn expect_node(&mut self, id: usize, root: bool, mapping: bool, simple_key: bool) {
        self.root_context = root;
        self.mapping_context = mapping;
        self.simple_key_context = simple_key;
        if self.serialized[id] {
            if let Some(anchor) = self.anchors[id].clone() {
                self.write_indicator(&format!("*{anchor}"), true, false, false);
            }
            return;
        }
        self.serialized[id] = true;
        if let Some(anchor) = self.anchors[id].clone() {
            self.write_indicator(&format!("&{anchor}"), true, false, false);
        }
        match &self.nodes[id] {
            YNode::Scalar { tag, value } => {
                let chars: Vec<char> = value.chars().collect();
                let analysis = analyze_scalar(&chars);
                let implicit_plain = resolve(value) == *tag;
                let implicit_quoted = *tag == TAG_STR;
                let style = self.choose_scalar_style(&analysis, implicit_plain);
                // `process_tag`: a tag only when the chosen style would not
                // read back as this type.
                if !((style == Style::Plain && implicit_plain) || (style != Style::Plain && implicit_quoted)) {
                    let suffix = tag.strip_prefix("tag:yaml.org,2002:").unwrap_or(tag);
                    self.write_indicator(&format!("!!{suffix}"), true, false, false);
                }
                self.increase_indent(true, false);
                let split = !self.simple_key_context;
                match style {
                    Style::Plain => self.write_plain(&chars, split),
                    Style::Single => self.write_single_quoted(&chars, split),
                    Style::Double => self.write_double_quoted(&chars, split),
                }
                self.pop_indent();
            }
            YNode::Seq(items) => {
                let items = items.clone();
                if self.flow_level > 0 || items.is_empty() {
                    self.write_indicator("[", true, true, false);
                    self.flow_level += 1;
                    self.increase_indent(true, false);
                    self.pop_indent();
                    self.flow_level -= 1;
                    self.write_indicator("]", false, false, false);
                } else {
                    let indentless = self.mapping_context && !self.indention;
                    self.increase_indent(false, indentless);
                    for item in items {
                        self.write_indent();
                        self.write_indicator("-", true, false, true);
                        self.expect_node(item, false, false, false);
                    }
                    self.pop_indent();
                }
            }
            YNode::Map(pairs) => {
                let pairs = pairs.clone();
                if self.flow_level > 0 || pairs.is_empty() {
                    self.write_indicator("{", true, true, false);
                    self.flow_level += 1;
                    self.increase_indent(true, false);
                    self.pop_indent();
                    self.flow_level -= 1;
                    self.write_indicator("}", false, false, false);
                } else {
                    self.increase_indent(false, false);
                    for (k, v) in pairs {
                        self.write_indent();
                        if self.check_simple_key(k) {
                            self.expect_node(k, false, true, true);
                            self.write_indicator(":", false, false, false);
                            self.expect_node(v, false, true, false);
                        } else {
                            self.write_indicator("?", true, false, true);
                            self.expect_node(k, false, true, false);
                            self.write_indent();
                            self.write_indicator(":", true, false, true);
                            self.expect_node(v, false, true, false);
                        }
                    }
                    self.pop_indent();
                }
            }
        }
    }

    /// `check_simple_key` for a mapping key (always a fresh string scalar).
    fn check_simple_key(&self, id: usize) -> bool {
        match &self.nodes[id] {
            YNode::Scalar { value, .. } => {
                let chars: Vec<char> = value.chars().collect();
                let analysis = analyze_scalar(&chars);
                // PyYAML counts the prepared tag (`!!str`, 5 characters)
                // though it does not write it.
                chars.len() + "!!str".len() < 128 && !analysis.empty && !analysis.multiline
            }
            _ => false,
        }
    }

    fn choose_scalar_style(&self, a: &Analysis, implicit_plain: bool) -> Style {
        if implicit_plain
            && !(self.simple_key_context && (a.empty || a.multiline))
            && ((self.flow_level > 0 && a.allow_flow_plain) || (self.flow_level == 0 && a.allow_block_plain))
        {
            return Style::Plain;
        }
        if a.allow_single_quoted && !(self.simple_key_context && a.multiline) {
            return Style::Single;
        }
        Style::Double
    }

    fn write(&mut self, data: &str) {
        self.out.push_str(data);
    }

    fn write_indicator(&mut self, indicator: &str, need_whitespace: bool, whitespace: bool, indention: bool) {
        let data = if self.whitespace || !need_whitespace {
            indicator.to_owned()
        } else {
            format!(" {indicator}")
        };
        self.whitespace = whitespace;
        self.indention = self.indention && indention;
        self.column += data.chars().count();
        self.open_ended = false;
        self.write(&data);
    }

    fn write_indent(&mut self) {
        let indent = self.indent.unwrap_or(0);
        if !self.indention || self.column > indent || (self.column == indent && !self.whitespace) {
            self.write_line_break(None);
        }
        if self.column < indent {
            self.whitespace = true;
            let pad = " ".repeat(indent - self.column);
            self.column = indent;
            self.write(&pad);
        }
    }

    fn write_line_break(&mut self, data: Option<char>) {
        self.whitespace = true;
        self.indention = true;
        self.column = 0;
        self.out.push(data.unwrap_or('\n'));
    }

    fn write_chars(&mut self, chars: &[char]) {
        self.column += chars.len();
        self.out.extend(chars);
    }

    fn write_plain(&mut self, text: &[char], split: bool) {
        if self.root_context {
            self.open_ended = true;
        }
        if text.is_empty() {
            return;
        }
        if !self.whitespace {
            self.write_chars(&[' ']);
        }
        self.whitespace = false;
        self.indention = false;
        let (mut spaces, mut breaks) = (false, false);
        let (mut start, mut end) = (0usize, 0usize);
        while end <= text.len() {
            let ch = text.get(end).copied();
            if spaces {
                if ch != Some(' ') {
                    if start + 1 == end && self.column > BEST_WIDTH && split {
                        self.write_indent();
                        self.whitespace = false;
                        self.indention = false;
                    } else {
                        self.write_chars(&text[start..end]);
                    }
                    start = end;
                }
            } else if breaks {
                if !ch.is_some_and(is_break) {
                    if text[start] == '\n' {
                        self.write_line_break(None);
                    }
                    for &br in &text[start..end] {
                        self.write_line_break(Some(br));
                    }
                    self.write_indent();
                    self.whitespace = false;
                    self.indention = false;
                    start = end;
                }
            } else if ch.is_none_or(|c| c == ' ' || is_break(c)) {
                self.write_chars(&text[start..end]);
                start = end;
            }
            if let Some(c) = ch {
                spaces = c == ' ';
                breaks = is_break(c);
            }
            end += 1;
        }
    }

    fn write_single_quoted(&mut self, text: &[char], split: bool) {
        self.write_indicator("'", true, false, false);
        let (mut spaces, mut breaks) = (false, false);
        let (mut start, mut end) = (0usize, 0usize);
        while end <= text.len() {
            let ch = text.get(end).copied();
            if spaces {
                if ch != Some(' ') {
                    if start + 1 == end && self.column > BEST_WIDTH && split && start != 0 && end != text.len() {
                        self.write_indent();
                    } else {
                        self.write_chars(&text[start..end]);
                    }
                    start = end;
                }
            } else if breaks {
                if !ch.is_some_and(is_break) {
                    if text[start] == '\n' {
                        self.write_line_break(None);
                    }
                    for &br in &text[start..end] {
                        self.write_line_break(Some(br));
                    }
                    self.write_indent();
                    start = end;
                }
            } else if ch.is_none_or(|c| c == ' ' || is_break(c) || c == '\'') && start < end {
                self.write_chars(&text[start..end]);
                start = end;
            }
            if ch == Some('\'') {
                self.write_chars(&['\'', '\'']);
                start = end + 1;
            }
            if let Some(c) = ch {
                spaces = c == ' ';
                breaks = is_break(c);
            }
            end += 1;
        }
        self.write_indicator("'", false, false, false);
    }

    fn write_double_quoted(&mut self, text: &[char], split: bool) {
        self.write_indicator("\"", true, false, false);
        let (mut start, mut end) = (0usize, 0usize);
        while end <= text.len() {
            let ch = text.get(end).copied();
            let needs_escape = ch.is_none_or(|c| {
                "\"\\\u{85}\u{2028}\u{2029}\u{feff}".contains(c)
                    || !((' '..='~').contains(&c)
                        || ('\u{a0}'..='\u{d7ff}').contains(&c)
                        || ('\u{e000}'..='\u{fffd}').contains(&c))
            });
            if needs_escape {
                if start < end {
                    self.write_chars(&text[start..end]);
                    start = end;
                }
                if let Some(c) = ch {
                    let data = match c {
                        '\0' => "\\0".to_owned(),
                        '\u{7}' => "\\a".to_owned(),
                        '\u{8}' => "\\b".to_owned(),
                        '\t' => "\\t".to_owned(),
                        '\n' => "\\n".to_owned(),
                        '\u{b}' => "\\v".to_owned(),
                        '\u{c}' => "\\f".to_owned(),
                        '\r' => "\\r".to_owned(),
                        '\u{1b}' => "\\e".to_owned(),
                        '"' => "\\\"".to_owned(),
                        '\\' => "\\\\".to_owned(),
                        '\u{85}' => "\\N".to_owned(),
                        '\u{a0}' => "\\_".to_owned(),
                        '\u{2028}' => "\\L".to_owned(),
                        '\u{2029}' => "\\P".to_owned(),
                        c if u32::from(c) <= 0xff => format!("\\x{:02X}", u32::from(c)),
                        c if u32::from(c) <= 0xffff => format!("\\u{:04X}", u32::from(c)),
                        c => format!("\\U{:08X}", u32::from(c)),
                    };
                    self.column += data.chars().count();
                    self.write(&data);
                    start = end + 1;
                }
            }
            if 0 < end
                && end + 1 < text.len()
                && (ch == Some(' ') || start >= end)
                && (self.column as isize) + (end as isize - start as isize) > BEST_WIDTH as isize
                && split
            {
                let mut data: Vec<char> = if start < end {
                    text[start..end].to_vec()
                } else {
                    Vec::new()
                };
                data.push('\\');
                if start < end {
                    start = end;
                }
                self.write_chars(&data);
                self.write_indent();
                self.whitespace = false;
                self.indention = false;
                if text[start] == ' ' {
                    self.write_chars(&['\\']);
                }
            }
            end += 1;
        }
        self.write_indicator("\"", false, false, false);
    }
}
