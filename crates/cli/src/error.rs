//! [`CliError`]: every way a command fails, with the exit code az gives it
//! and the text az prints for it on standard error.
//!
//! - A usage error (a bad flag, bad `--filters` JSON, a missing setting) is
//!   found before any request is sent: exit 2 (STYLE 11).
//! - An ARM error answer prints as az prints azure-core's `HttpResponseError`
//!   (azure-core `exceptions.py`, `ODataV4Format.__str__`), after az's `ERROR: `:
//!   ```text
//!   ERROR: (ResourceNotFound) packet capture "pc1" was not found: …
//!   Code: ResourceNotFound
//!   Message: packet capture "pc1" was not found: …
//!   Target: properties.target
//!   ```
//!   exit 3 for a 404 (az's `ResourceNotFoundError`), 1 otherwise
//!   (azure-cli `util.py`, `handle_exception`).
//! - Everything else (az's own checks after a request, such as `network
//!   watcher is not enabled for region X.`, connection and TLS failures,
//!   local files): exit 1.

use std::path::PathBuf;

use netwatch_api::error::error_chain;
use serde_json::Value;

/// Exit code of a usage or configuration error.
pub const EXIT_USAGE: u8 = 2;
/// Exit code of a resource that does not exist (az's `ResourceNotFoundError`).
pub const EXIT_NOT_FOUND: u8 = 3;
/// Exit code of every other failure.
pub const EXIT_FAILURE: u8 = 1;

/// A failed command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input, found before any request was sent.
    #[error("{0}")]
    Usage(String),
    /// One of az's own checks failed after a request (az's `ValidationError`).
    #[error("{0}")]
    Validation(String),
    /// The server answered with an error.
    #[error("{}", arm_message(*status, reason, body))]
    Arm {
        /// HTTP status of the answer.
        status: u16,
        /// The status line's reason (`Not Found`), for bodies that are not ARM's.
        reason: String,
        /// The answer's body, parsed when it is JSON (`Value::String` otherwise).
        body: Value,
    },
    /// A long-running operation ended Failed or Canceled: its monitor's `error`.
    #[error("{}", operation_message(status, error))]
    OperationFailed {
        /// The monitor's `status`.
        status: String,
        /// The monitor's `error` object, if any.
        error: Option<Value>,
    },
    /// The server could not be reached, or the exchange broke off.
    #[error("{what}: {}", error_chain(source))]
    Connection {
        /// What was being done, e.g. `GET https://…/networkWatchers`.
        what: String,
        #[source]
        source: reqwest::Error,
    },
    /// The CA file or TLS setup is unusable.
    #[error("{0}")]
    Tls(String),
    /// A local file could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    File {
        /// What was being done, e.g. `write the capture to`.
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The server answered something that is not what the API promises.
    #[error("{0}")]
    Unexpected(String),
    /// A long-running operation did not finish in time.
    #[error("{0}")]
    Timeout(String),
    /// The result could not be printed (`--query` failed while running, `-o table`).
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
}

impl CliError {
    /// The process exit code az gives this failure (module doc).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => EXIT_USAGE,
            Self::Arm { status: 404, .. } => EXIT_NOT_FOUND,
            _ => EXIT_FAILURE,
        }
    }

    /// Whether the server said the resource does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Arm { status: 404, .. })
    }

    /// What to print on standard error: `ERROR: ` and the message, as az
    /// prints it (one prefix; later lines as they are).
    pub fn render(&self) -> String {
        match self {
            // az adds its pointer to the --query documentation.
            Self::Output(crate::output::OutputError::Query(_)) => {
                format!("ERROR: {self}\n{}", crate::output::QUERY_REFERENCE)
            }
            _ => format!("ERROR: {self}"),
        }
    }
}

/// azure-core's `HttpResponseError` message: the ODataV4 text when the body
/// is ARM's error shape, else `Operation returned an invalid status '…'`.
fn arm_message(status: u16, reason: &str, body: &Value) -> String {
    match odata_error(body) {
        Some(error) => odata_text(error),
        None => {
            let mut text = format!("Operation returned an invalid status '{reason}'");
            match body {
                Value::Null => {}
                Value::String(s) if s.trim().is_empty() => {}
                Value::String(s) => text.push_str(&format!("\nContent: {s}")),
                other => text.push_str(&format!("\nContent: {other}")),
            }
            if reason.is_empty() {
                text = text.replace("''", &format!("'{status}'"));
            }
            text
        }
    }
}

fn operation_message(status: &str, error: &Option<Value>) -> String {
    match error.as_ref().and_then(odata_error) {
        Some(error) => odata_text(error),
        None => format!("the operation ended {status} without saying why"),
    }
}

/// The error object of an ARM error body (`{"error": {...}}` or the object
/// itself), when it has a code or a message, as `ODataV4Format` requires.
fn odata_error(body: &Value) -> Option<&Value> {
    let error = body.get("error").filter(|e| e.is_object()).unwrap_or(body);
    let has = |key: &str| error.get(key).is_some_and(|v| !v.is_null());
    (error.is_object() && (has("code") || has("message"))).then_some(error)
}

/// `ODataV4Format.__str__`: `(code) message` and the detail lines. Python's
/// `None` shows as `None`; nested details are appended exactly as azure-core
/// does (a tab before each line, and no line break before the first).
fn odata_text(error: &Value) -> String {
    let text = |key: &str| match error.get(key) {
        None | Some(Value::Null) => "None".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let (code, message) = (text("code"), text("message"));
    let mut details = format!("Code: {code}\nMessage: {message}");
    if let Some(target) = error.get("target").and_then(Value::as_str).filter(|t| !t.is_empty()) {
        details.push_str(&format!("\nTarget: {target}"));
    }
    let nested: Vec<&Value> = error
        .get("details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|detail| odata_error(detail).is_some())
        .collect();
    if !nested.is_empty() {
        details.push_str("\nException Details:");
        for detail in nested {
            let lines: Vec<String> = odata_text(detail).lines().map(|line| format!("\t{line}")).collect();
            details.push_str(&lines.join("\n"));
        }
    }
    if let Some(inner) = error
        .get("innererror")
        .filter(|v| v.as_object().is_some_and(|o| !o.is_empty()))
    {
        details.push_str(&format!("\nInner error: {}", python_indent4(inner)));
    }
    format!("({code}) {message}\n{details}")
}

/// `json.dumps(value, indent=4)`.
fn python_indent4(value: &Value) -> String {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    match serde::Serialize::serialize(value, &mut serializer) {
        Ok(()) => String::from_utf8(out).unwrap_or_default(),
        Err(_) => value.to_string(),
    }
}

/// Test helper: each of `cases` (arguments, a fragment of the message) fails
/// in `run` as a usage error (exit code 2) whose message holds the fragment.
#[cfg(test)]
pub(crate) fn assert_usage_errors<T: std::fmt::Debug>(
    cases: &[(Vec<&str>, &str)],
    run: impl Fn(&[&str]) -> Result<T, CliError>,
) {
    for (args, expected) in cases {
        let err = run(args).expect_err(&format!("{args:?} should fail"));
        assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        assert!(
            err.to_string().contains(expected),
            "{args:?}:\n  got      {err}\n  expected {expected}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn arm(status: u16, body: Value) -> CliError {
        CliError::Arm {
            status,
            reason: "Bad Request".to_owned(),
            body,
        }
    }

    #[test]
    fn not_found_prints_as_az_and_exits_3() {
        let err = arm(
            404,
            json!({"error": {"code": "ResourceNotFound", "message": "packet capture \"pc1\" was not found", "details": []}}),
        );
        assert_eq!(
            err.render(),
            "ERROR: (ResourceNotFound) packet capture \"pc1\" was not found\n\
             Code: ResourceNotFound\nMessage: packet capture \"pc1\" was not found"
        );
        assert_eq!(err.exit_code(), 3);
        assert!(err.is_not_found());
    }

    #[test]
    fn a_target_gets_its_line_and_exit_1() {
        let err = arm(
            400,
            json!({"error": {"code": "InvalidRequestFormat", "message": "m", "target": "properties.filters[0].localPort"}}),
        );
        assert_eq!(
            err.render(),
            "ERROR: (InvalidRequestFormat) m\nCode: InvalidRequestFormat\nMessage: m\nTarget: properties.filters[0].localPort"
        );
        assert_eq!(err.exit_code(), 1);
    }

    #[test]
    fn details_are_appended_as_azure_core_does() {
        let err = arm(
            400,
            json!({"error": {"code": "A", "message": "a", "details": [
                {"code": "B", "message": "b"}, {"code": "C", "message": "c", "target": "t"}]}}),
        );
        assert_eq!(
            err.to_string(),
            "(A) a\nCode: A\nMessage: a\nException Details:\t(B) b\n\tCode: B\n\tMessage: b\t(C) c\n\tCode: C\n\tMessage: c\n\tTarget: t"
        );
    }

    #[test]
    fn a_body_that_is_not_arm_s_shows_the_status() {
        let err = CliError::Arm {
            status: 502,
            reason: "Bad Gateway".to_owned(),
            body: Value::String("upstream down".to_owned()),
        };
        assert_eq!(
            err.to_string(),
            "Operation returned an invalid status 'Bad Gateway'\nContent: upstream down"
        );
        assert_eq!(err.exit_code(), 1);
    }

    #[test]
    fn usage_errors_exit_2() {
        let err = CliError::Usage("argument --time-limit: 18001 is greater than 18000".to_owned());
        assert_eq!(err.exit_code(), 2);
        assert_eq!(
            err.render(),
            "ERROR: argument --time-limit: 18001 is greater than 18000"
        );
    }

    #[test]
    fn a_failed_operation_shows_its_error() {
        let err = CliError::OperationFailed {
            status: "Failed".to_owned(),
            error: Some(json!({"code": "AgentStopped", "message": "the agent did not start it"})),
        };
        assert_eq!(
            err.to_string(),
            "(AgentStopped) the agent did not start it\nCode: AgentStopped\nMessage: the agent did not start it"
        );
    }
}
