//! TEMPORARY stand-in for `output.rs` (being written concurrently), with its
//! announced API; deleted when `output.rs` lands.

use std::str::FromStr;

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Json,
    Jsonc,
    Table,
    Tsv,
    Yaml,
    None,
}

#[derive(Debug, thiserror::Error)]
#[error("unknown output format {0:?}")]
pub struct FormatError(String);

impl FromStr for OutputFormat {
    type Err = FormatError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "json" => Self::Json,
            "jsonc" => Self::Jsonc,
            "table" => Self::Table,
            "tsv" => Self::Tsv,
            "yaml" | "yamlc" => Self::Yaml,
            "none" => Self::None,
            other => return Err(FormatError(other.to_owned())),
        })
    }
}

#[derive(Debug)]
pub struct Query(String);

#[derive(Debug, thiserror::Error)]
#[error("queries are not supported by the stand-in: {0}")]
pub struct QueryError(String);

impl Query {
    pub fn parse(text: &str) -> Result<Query, QueryError> {
        if text.trim().is_empty() {
            return Err(QueryError("empty".to_owned()));
        }
        Ok(Query(text.to_owned()))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("output failed")]
pub struct OutputError;

pub fn render(value: &Value, format: OutputFormat, query: Option<&Query>) -> Result<String, OutputError> {
    let value = match query {
        Some(query) => value.get(query.0.as_str()).cloned().unwrap_or(Value::Null),
        None => value.clone(),
    };
    Ok(match format {
        OutputFormat::None => String::new(),
        OutputFormat::Tsv => match &value {
            Value::String(s) => format!("{s}\n"),
            other => format!("{other}\n"),
        },
        _ => serde_json::to_string_pretty(&value).map_err(|_| OutputError)? + "\n",
    })
}
