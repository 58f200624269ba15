//! TEMPORARY stand-in for `output.rs` (written concurrently), with its API:
//! JSON output only, no `--query`. Deleted when `output.rs` lands.

use std::str::FromStr;

use serde_json::Value;

/// What az prints after a query error.
pub const QUERY_REFERENCE: &str =
    "To learn more about --query, please visit: 'https://learn.microsoft.com/cli/azure/query-azure-cli'";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Json,
    Jsonc,
    Table,
    Tsv,
    Yaml,
    None,
}

impl OutputFormat {
    pub fn with_color(self, _color: bool) -> OutputFormat {
        self
    }
}

#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not a valid value for '--output'. Allowed values: json, jsonc, yaml, yamlc, table, tsv, none.")]
pub struct InvalidOutputFormat(String);

impl FromStr for OutputFormat {
    type Err = InvalidOutputFormat;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "json" => Self::Json,
            "jsonc" => Self::Jsonc,
            "table" => Self::Table,
            "tsv" => Self::Tsv,
            "yaml" | "yamlc" => Self::Yaml,
            "none" => Self::None,
            other => return Err(InvalidOutputFormat(other.to_owned())),
        })
    }
}

#[derive(Debug)]
pub struct Query;

#[derive(Debug, thiserror::Error)]
#[error("argument --query: invalid jmespath_type value: '{0}'")]
pub struct QueryError(String);

impl Query {
    pub fn parse(text: &str) -> Result<Query, QueryError> {
        Err(QueryError(text.to_owned()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("Invalid jmespath query supplied for `--query`: {0}")]
    Query(String),
}

pub fn render(value: &Value, format: OutputFormat, query: Option<&Query>) -> Result<String, OutputError> {
    render_with(value, format, query, None)
}

pub fn render_with(
    value: &Value,
    format: OutputFormat,
    _query: Option<&Query>,
    _table_transformer: Option<&Query>,
) -> Result<String, OutputError> {
    Ok(match format {
        OutputFormat::None => String::new(),
        _ => serde_json::to_string_pretty(value).map_err(|err| OutputError::Query(err.to_string()))? + "\n",
    })
}
