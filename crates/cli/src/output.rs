//! az's output formats and `--query`, byte for byte as az 2.91 (knack 0.14)
//! prints them: [`render`] returns exactly what az writes to standard output
//! for a command's result. It does not print errors; their texts are here
//! ([`QueryError`], [`OutputError`]) for the caller to print as az does
//! (`ERROR: <text>`, then [`QUERY_REFERENCE`] for query errors).
//!
//! The pipeline is knack's (`knack/cli.py`, `knack/query.py`,
//! `knack/output.py`): the query runs first (also for `-o none`), a null
//! result prints nothing, then the formatter runs. The formats differ in more
//! than syntax, so each module's doc lists the rules it keeps:
//! - `json`: keys always sorted, indent 2, non-ASCII as is, floats as Python's
//!   `repr`; `jsonc` colours that text as Pygments does.
//! - `yaml`: PyYAML `safe_dump`, keys sorted.
//! - `table`: scalar fields only, `id`/`type`/`etag` dropped, headers
//!   capitalised, keys sorted unless a query or table transformer is active.
//! - `tsv`: values only; sorted by key unless a query's `{…}` built the row.
//!
//! Python's object model matters to all of them (`value`): a result is
//! turned into Python-like values once, the query is evaluated over those
//! (`query`, `functions`), and the formatters print them.
//!
//! Known differences from az are listed on [`render`].

mod functions;
mod json;
mod query;
mod table;
mod tsv;
mod value;
mod yaml;
mod yamlc;

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

use self::query::{EvalError, Node};
use self::value::{Val, py_repr_str};

/// What az prints after a query error (azure-cli `util.QUERY_REFERENCE`).
pub const QUERY_REFERENCE: &str =
    "To learn more about --query, please visit: 'https://learn.microsoft.com/cli/azure/query-azure-cli'";

/// `--output`/`-o`: knack's `OutputProducer._FORMAT_DICT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// `json`, az's default.
    #[default]
    Json,
    /// `jsonc`: JSON coloured for a terminal.
    Jsonc,
    /// `table`.
    Table,
    /// `tsv`.
    Tsv,
    /// `yaml`.
    Yaml,
    /// `yamlc`: YAML coloured for a terminal.
    Yamlc,
    /// `none`: nothing is printed.
    None,
}

impl OutputFormat {
    /// Every value in az's order (its error message lists them so).
    pub const ALL: [OutputFormat; 7] = [
        OutputFormat::Json,
        OutputFormat::Jsonc,
        OutputFormat::Yaml,
        OutputFormat::Yamlc,
        OutputFormat::Table,
        OutputFormat::Tsv,
        OutputFormat::None,
    ];

    /// The name `--output` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::Json => "json",
            OutputFormat::Jsonc => "jsonc",
            OutputFormat::Table => "table",
            OutputFormat::Tsv => "tsv",
            OutputFormat::Yaml => "yaml",
            OutputFormat::Yamlc => "yamlc",
            OutputFormat::None => "none",
        }
    }

    /// The format az actually uses when colour is off: knack's
    /// `get_formatter` prints `jsonc` as `json` and `yamlc` as `yaml` unless
    /// standard output and standard error are both terminals and the
    /// `core.no_color` setting is not set.
    pub fn with_color(self, color: bool) -> OutputFormat {
        match self {
            OutputFormat::Jsonc if !color => OutputFormat::Json,
            OutputFormat::Yamlc if !color => OutputFormat::Yaml,
            other => other,
        }
    }
}

impl fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value `--output` does not take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{value}' is not a valid value for '--output'. Allowed values: json, jsonc, yaml, yamlc, table, tsv, none.")]
pub struct InvalidOutputFormat {
    /// The value, lower-cased as az lower-cases it before checking.
    pub value: String,
}

impl FromStr for OutputFormat {
    type Err = InvalidOutputFormat;

    /// az's `--output` is `type=str.lower`: `JSON` is `json`. The error's text
    /// is az's after the `az <command>: ` prefix the caller adds.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let value = s.to_lowercase();
        OutputFormat::ALL
            .into_iter()
            .find(|f| f.as_str() == value)
            .ok_or(InvalidOutputFormat { value })
    }
}

/// A compiled `--query` (JMESPath) expression.
#[derive(Debug, Clone)]
pub struct Query {
    text: String,
    ast: jpx_core::ast::Ast,
}

/// A `--query` that does not parse; its text is az's
/// (`argument --query: invalid jmespath_type value: '…'`, the expression as
/// Python's `repr` quotes it).
#[derive(Debug, Clone, thiserror::Error)]
#[error("argument --query: invalid jmespath_type value: {}", py_repr_str(.text))]
pub struct QueryError {
    /// The expression as given.
    pub text: String,
    /// The parser's complaint (az does not show it); `None` for an empty query.
    #[source]
    pub source: Option<jpx_core::JmespathError>,
}

impl Query {
    /// Compiles `text` as az's `--query` does (jmespath.py 1.1.0's grammar,
    /// including the legacy `` `text` `` string literal). Unknown functions
    /// and wrong argument counts are not errors here, as in az: they fail
    /// when the query runs.
    pub fn parse(text: &str) -> Result<Query, QueryError> {
        if text.is_empty() {
            return Err(QueryError {
                text: String::new(),
                source: None,
            });
        }
        let rewritten = query::rewrite_legacy_literals(text);
        match jpx_core::parse(rewritten.as_deref().unwrap_or(text)) {
            Ok(ast) => Ok(Query {
                text: text.to_owned(),
                ast,
            }),
            Err(source) => Err(QueryError {
                text: text.to_owned(),
                source: Some(source),
            }),
        }
    }

    /// The expression as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn search(&self, value: Val) -> Result<Val, EvalError> {
        // The tree is rebuilt per search because `Val` is not `Send`, and a
        // `Query` should be; one search per command makes that free.
        let node = Node::from_ast(&self.ast, 0)
            .ok_or_else(|| EvalError::Python("maximum recursion depth exceeded".to_owned()))?;
        query::eval(&node, &value, 0)
    }
}

/// Why a result could not be printed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutputError {
    /// The query failed while running (az exits 1 and prints
    /// [`QUERY_REFERENCE`] after this).
    #[error("Invalid jmespath query supplied for `--query`: {0}")]
    Query(String),
    /// The query raised a Python error that is not a JMESPath one (comparing a
    /// number with a string, a zero slice step); az reports it as an
    /// unexpected error with a traceback.
    #[error("{0}")]
    QueryFailed(String),
    /// `-o table` could not make a table of the result.
    #[error(
        "Table output unavailable. Use the --query option to specify an appropriate query. Use --debug for more info."
    )]
    TableUnavailable,
    /// The result holds something JSON cannot hold (an `&expr` reference).
    #[error("Object of type {0} is not JSON serializable")]
    NotSerializable(&'static str),
}

impl From<EvalError> for OutputError {
    fn from(e: EvalError) -> Self {
        match e {
            EvalError::Jmespath(m) => OutputError::Query(m),
            EvalError::Python(m) => OutputError::QueryFailed(m),
        }
    }
}

/// What az writes to standard output for `result` with `--output format`
/// and `--query query`, trailing newline included; `""` for a null result
/// and for `none`.
///
/// `Jsonc` and `Yamlc` are rendered coloured; pass
/// [`OutputFormat::with_color`] to print them as az does off a terminal.
///
/// Known differences from az: integers beyond 64 bits (serde_json has none
/// without `arbitrary_precision`); Python's `repr` of a non-printable
/// character that is unassigned in Unicode; an `&expr` left in a result; the
/// text of Python exceptions other than JMESPath errors. Python 3.11's
/// float `sum` and `OrderedDict` repr are what the tests compare with.
pub fn render(result: &Value, format: OutputFormat, query: Option<&Query>) -> Result<String, OutputError> {
    render_with(result, format, query, None)
}

/// [`render`] for a command that declares a JMESPath table transformer (as
/// az's `vm extension show` does): `-o table` without `--query` applies it
/// and keeps the columns in its order.
pub fn render_with(
    result: &Value,
    format: OutputFormat,
    query: Option<&Query>,
    table_transformer: Option<&Query>,
) -> Result<String, OutputError> {
    let mut value = Val::from_json(result);
    if let Some(q) = query {
        value = q.search(value)?;
    }
    if value.is_null() {
        return Ok(String::new());
    }
    match format {
        OutputFormat::Json => json::format_json(&value),
        OutputFormat::Jsonc => json::format_json_color(&value),
        OutputFormat::Yaml => yaml::format_yaml(&value),
        OutputFormat::Yamlc => yamlc::format_yaml_color(&value),
        OutputFormat::Tsv => Ok(tsv::format_tsv(&value)),
        OutputFormat::None => Ok(String::new()),
        OutputFormat::Table => {
            let sort_keys = query.is_none() && table_transformer.is_none();
            if let (Some(t), None) = (table_transformer, query) {
                // knack turns any failure in table output into this message.
                value = t.search(value).map_err(|_| OutputError::TableUnavailable)?;
            }
            table::format_table(&value, sort_keys)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_format_parses_as_az() {
        assert_eq!("JSON".parse::<OutputFormat>().unwrap(), OutputFormat::Json);
        assert_eq!("yamlc".parse::<OutputFormat>().unwrap(), OutputFormat::Yamlc);
        assert_eq!(
            "XML".parse::<OutputFormat>().unwrap_err().to_string(),
            "'xml' is not a valid value for '--output'. Allowed values: json, jsonc, yaml, yamlc, table, tsv, none."
        );
        assert_eq!(OutputFormat::default(), OutputFormat::Json);
        assert_eq!(OutputFormat::Jsonc.with_color(false), OutputFormat::Json);
    }

    #[test]
    fn query_errors_quote_as_python() {
        assert_eq!(
            Query::parse("[").unwrap_err().to_string(),
            "argument --query: invalid jmespath_type value: '['"
        );
        assert_eq!(
            Query::parse("[?a=='x'").unwrap_err().to_string(),
            "argument --query: invalid jmespath_type value: \"[?a=='x'\""
        );
        assert_eq!(
            Query::parse("").unwrap_err().to_string(),
            "argument --query: invalid jmespath_type value: ''"
        );
        assert!(
            Query::parse("foo(@)").is_ok(),
            "unknown functions fail at run time, as in az"
        );
    }

    #[test]
    fn runtime_errors_read_as_az() {
        let q = Query::parse("foo(@)").unwrap();
        assert_eq!(
            render(&serde_json::json!({}), OutputFormat::Json, Some(&q))
                .unwrap_err()
                .to_string(),
            "Invalid jmespath query supplied for `--query`: Unknown function: foo()"
        );
        let q = Query::parse("abs(`\"x\"`)").unwrap();
        assert_eq!(
            render(&serde_json::json!({}), OutputFormat::Json, Some(&q))
                .unwrap_err()
                .to_string(),
            "Invalid jmespath query supplied for `--query`: In function abs(), invalid type for value: x, expected one of: ['number'], received: \"string\""
        );
    }
}
