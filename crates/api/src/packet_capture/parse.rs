//! [`parse_packet_capture`]: a PUT body's bytes into a [`PacketCapture`], every
//! failure a 400 `InvalidRequestFormat` at the JSON path of the bad value.
//!
//! Two passes, as `filter::parse_wire_filters_json` does. First the text is read
//! as a `serde_json::Value` and walked against [`BODY`], a table of every
//! field's name and JSON shape, for messages that say how to fix things
//! (`properties.timeLimitInSeconds must be a whole number 0-18000 (seconds),
//! not a string ("60")`, `… has an unknown field "filepath" (did you mean
//! "filePath"?)`). Then serde reads the text again into the typed struct (the
//! `Value` has dropped repeated keys); it meets only repeated keys, reported
//! at the repeated key's path (serde_path_to_error locates the object that
//! holds it). Ranges and cross-field rules are [`PacketCapture::validate`]'s.
//!
//! `null` is accepted for every field and means unset; a required field that
//! is missing or `null` is reported here. A UTF-8 byte-order mark is skipped
//! (PowerShell's `Out-File` writes one).

use serde_json::Value;

use super::{
    BYTES_TO_CAPTURE_PER_PACKET, FILE_COUNT, FILE_SIZE_IN_BYTES, Limit, PacketCapture, SECONDS_AFTER, SECONDS_BEFORE,
    SESSION_TIME_LIMIT_IN_SECONDS, STORAGE_LOCATION_HINT, TIME_LIMIT_IN_SECONDS, TOTAL_BYTES_PER_SESSION,
};
use crate::error::ApiError;

/// What a well-formed body looks like, for messages.
const BODY_EXAMPLE: &str = r#"{"properties":{"target":…,"storageLocation":{…}}}"#;
/// Hint for a missing `properties`.
const PROPERTIES_HINT: &str =
    r#"the parameters go inside "properties", as in {"properties":{"target":…,"storageLocation":{…}}}"#;

/// The JSON shape a field takes (`null` is always accepted for a field).
#[derive(Debug, Clone, Copy)]
enum Shape {
    Text,
    Integer(&'static Limit),
    Boolean,
    Object(&'static [Field]),
    /// An array of strings; the example is shown in messages.
    Texts(&'static str),
    /// An array of objects; the example is shown in messages.
    Objects(&'static [Field], &'static str),
    /// An object of any names, each with a string; the example is shown in messages.
    TextMap(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presence {
    Optional,
    /// Must be there and not `null`; the hint says what it is.
    Required(&'static str),
    /// Output only: accepted (a GET body can be PUT back), ignored, not listed.
    ReadOnly,
}

#[derive(Debug)]
struct Field {
    name: &'static str,
    /// A second accepted spelling.
    alias: Option<&'static str>,
    shape: Shape,
    presence: Presence,
}

const fn optional(name: &'static str, shape: Shape) -> Field {
    Field {
        name,
        alias: None,
        shape,
        presence: Presence::Optional,
    }
}

const fn required(name: &'static str, shape: Shape, hint: &'static str) -> Field {
    Field {
        name,
        alias: None,
        shape,
        presence: Presence::Required(hint),
    }
}

const fn read_only(name: &'static str) -> Field {
    Field {
        name,
        alias: None,
        shape: Shape::Text,
        presence: Presence::ReadOnly,
    }
}

/// `filter::PacketCaptureFilter`'s fields, with the aliases it accepts
/// (`filter_fields_match_serde` keeps them in step).
const FILTER: [Field; 11] = [
    optional("protocol", Shape::Text),
    Field {
        alias: Some("localIpAddress"),
        ..optional("localIPAddress", Shape::Text)
    },
    Field {
        alias: Some("remoteIpAddress"),
        ..optional("remoteIPAddress", Shape::Text)
    },
    optional("localPort", Shape::Text),
    optional("remotePort", Shape::Text),
    // netwatch's extensions (filter.rs).
    optional("icmpType", Shape::Text),
    optional("icmpCode", Shape::Text),
    optional("tcpFlags", Shape::Text),
    optional("direction", Shape::Text),
    optional("bpfExpression", Shape::Text),
    // Filled in by the controller from bpfExpression (what a client sends is replaced).
    read_only("bpfProgram"),
];

const SCOPE: [Field; 2] = [
    optional("include", Shape::Texts(r#"["0","1"]"#)),
    optional("exclude", Shape::Texts(r#"["0","1"]"#)),
];

const TARGETS: [Field; 2] = [
    optional("vms", Shape::Texts(r#"["/subscriptions/…/virtualMachines/web-1"]"#)),
    optional("tags", Shape::TextMap(r#"{"role":"web"}"#)),
];

const ALERT: [Field; 6] = [
    optional("firedDateTime", Shape::Text),
    optional("secondsBefore", Shape::Integer(&SECONDS_BEFORE)),
    optional("secondsAfter", Shape::Integer(&SECONDS_AFTER)),
    optional("trigger", Shape::Text),
    optional("alertId", Shape::Text),
    optional("alertRule", Shape::Text),
];

const NETWATCH: [Field; 2] = [
    optional("targets", Shape::Object(&TARGETS)),
    optional("alert", Shape::Object(&ALERT)),
];

const STORAGE_LOCATION: [Field; 4] = [
    optional("storageId", Shape::Text),
    optional("storagePath", Shape::Text),
    optional("filePath", Shape::Text),
    optional("localPath", Shape::Text),
];

const CAPTURE_SETTINGS: [Field; 3] = [
    optional("fileCount", Shape::Integer(&FILE_COUNT)),
    optional("fileSizeInBytes", Shape::Integer(&FILE_SIZE_IN_BYTES)),
    optional(
        "sessionTimeLimitInSeconds",
        Shape::Integer(&SESSION_TIME_LIMIT_IN_SECONDS),
    ),
];

/// `PacketCaptureParameters`, in Azure's order (api-contract.md §2.2), then
/// netwatch's own. `target` is required unless `netwatch.targets` is given
/// (`PacketCaptureParameters::validate` says so).
const PARAMETERS: [Field; 12] = [
    optional("target", Shape::Text),
    optional("targetType", Shape::Text),
    optional("scope", Shape::Object(&SCOPE)),
    optional("bytesToCapturePerPacket", Shape::Integer(&BYTES_TO_CAPTURE_PER_PACKET)),
    optional("totalBytesPerSession", Shape::Integer(&TOTAL_BYTES_PER_SESSION)),
    optional("timeLimitInSeconds", Shape::Integer(&TIME_LIMIT_IN_SECONDS)),
    required(
        "storageLocation",
        Shape::Object(&STORAGE_LOCATION),
        STORAGE_LOCATION_HINT,
    ),
    optional(
        "filters",
        Shape::Objects(&FILTER, r#"[{"protocol":"TCP","localPort":"80"}]"#),
    ),
    optional("continuousCapture", Shape::Boolean),
    optional("captureSettings", Shape::Object(&CAPTURE_SETTINGS)),
    optional("netwatch", Shape::Object(&NETWATCH)),
    read_only("provisioningState"),
];

/// The body: `PacketCapture`, plus the read-only members of `PacketCaptureResult`.
const BODY: [Field; 4] = [
    required("properties", Shape::Object(&PARAMETERS), PROPERTIES_HINT),
    read_only("id"),
    read_only("name"),
    read_only("etag"),
];

/// Parses a PUT body; see the module doc. The result still needs
/// [`PacketCapture::validate`].
pub fn parse_packet_capture(body: &[u8]) -> Result<PacketCapture, ApiError> {
    const BOM: &[u8] = b"\xEF\xBB\xBF";
    let body = body.strip_prefix(BOM).unwrap_or(body);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_body(format!(
            "the request body is empty: create a packet capture with a JSON body such as {BODY_EXAMPLE}"
        )));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|err| ApiError::bad_body(format!("the request body is not valid JSON: {err}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_body(format!(
            "the request body must be a JSON object such as {{\"properties\":{{…}}}}, not {}",
            describe(&value)
        )));
    }
    check_object(&value, &BODY, "")?;
    let mut reader = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut reader).map_err(|err| {
        let path = match err.path().to_string().as_str() {
            "." | "?" => String::new(),
            path => path.to_owned(),
        };
        let inner = err.into_inner();
        // serde names the repeated key but locates the object holding it.
        if let Some(key) = repeated_key(&inner.to_string()) {
            let target = join(&path, key);
            return ApiError::bad_request(
                &*target,
                format!("{target} is given more than once: give each field once"),
            );
        }
        if path.is_empty() {
            ApiError::bad_body(format!("the request body: {inner}"))
        } else {
            ApiError::bad_request(&*path, format!("{path}: {inner}"))
        }
    })
}

/// The key of serde's ``duplicate field `timeLimitInSeconds` at line 1 column 9``.
fn repeated_key(message: &str) -> Option<&str> {
    message.strip_prefix("duplicate field `")?.split('`').next()
}

/// `path.key`, or `key` at the top.
fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn check_object(value: &Value, fields: &[Field], path: &str) -> Result<(), ApiError> {
    let Some(object) = value.as_object() else {
        return Err(type_error(path, "a JSON object", value));
    };
    // In the order written, so the first error is the first in the text.
    for (key, value) in object {
        let field = fields
            .iter()
            .find(|field| field.name == key || field.alias == Some(key.as_str()))
            .ok_or_else(|| unknown_field(path, key, fields))?;
        check_value(value, field.shape, &join(path, key))?;
    }
    for field in fields {
        if let Presence::Required(hint) = field.presence {
            let value = object.get(field.name).filter(|value| !value.is_null());
            if value.is_none() {
                let target = join(path, field.name);
                return Err(ApiError::bad_request(&*target, format!("{target} is required: {hint}")));
            }
        }
    }
    Ok(())
}

fn check_value(value: &Value, shape: Shape, path: &str) -> Result<(), ApiError> {
    match (shape, value) {
        (_, Value::Null) | (Shape::Text, Value::String(_)) | (Shape::Boolean, Value::Bool(_)) => Ok(()),
        // A port or an address written as a number: say how to write it.
        (Shape::Text, Value::Number(number)) => Err(ApiError::bad_request(
            path,
            format!("{path} must be a string, not the number {number}: quote it, as in \"{number}\""),
        )),
        (Shape::Text, _) => Err(type_error(path, "a string", value)),
        (Shape::Boolean, _) => Err(type_error(path, "true, false or null", value)),
        (Shape::Integer(limit), _) => check_integer(value, limit, path),
        (Shape::Object(fields), _) => check_object(value, fields, path),
        (Shape::Texts(example), Value::Array(items)) => {
            for (index, item) in items.iter().enumerate() {
                if !item.is_string() {
                    let first = example.trim_start_matches('[').split(',').next().unwrap_or_default();
                    return Err(type_error(
                        &format!("{path}[{index}]"),
                        &format!("a string such as {first}"),
                        item,
                    ));
                }
            }
            Ok(())
        }
        (Shape::Texts(example), _) => Err(type_error(
            path,
            &format!("an array of strings such as {example}"),
            value,
        )),
        (Shape::TextMap(_), Value::Object(members)) => {
            for (name, item) in members {
                if !item.is_string() {
                    return Err(type_error(&join(path, name), "a string", item));
                }
            }
            Ok(())
        }
        (Shape::TextMap(example), _) => Err(type_error(
            path,
            &format!("an object of strings such as {example}"),
            value,
        )),
        (Shape::Objects(fields, _), Value::Array(items)) => items
            .iter()
            .enumerate()
            .try_for_each(|(index, item)| check_object(item, fields, &format!("{path}[{index}]"))),
        (Shape::Objects(_, example), _) => Err(type_error(
            path,
            &format!("an array of filter objects such as {example}"),
            value,
        )),
    }
}

/// Any integer that fits `i64` passes (validation checks its range); a larger
/// one is out of range; a fraction or any other type is a type error.
fn check_integer(value: &Value, limit: &Limit, path: &str) -> Result<(), ApiError> {
    let Value::Number(number) = value else {
        return Err(type_error(path, &limit.expected(), value));
    };
    if number.is_i64() {
        return Ok(());
    }
    if number.is_u64() {
        return Err(limit.out_of_range(&number.to_string()));
    }
    // A float: whole but huge (1e30, or an integer past u64) is out of range.
    let float = number.as_f64().unwrap_or(f64::NAN);
    if float.fract() == 0.0 && float.abs() > f64::from(limit.max) {
        return Err(limit.out_of_range(&number.to_string()));
    }
    Err(type_error(path, &limit.expected(), value))
}

fn type_error(path: &str, expected: &str, value: &Value) -> ApiError {
    ApiError::bad_request(path, format!("{path} must be {expected}, not {}", describe(value)))
}

/// `a string ("60")`, `1.5`, `an array`: what a value is, for messages.
fn describe(value: &Value) -> String {
    const PREVIEW: usize = 40;
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.chars().count() > PREVIEW => {
            let preview: String = s.chars().take(PREVIEW).collect();
            format!("a string ({preview:?}…)")
        }
        Value::String(s) => format!("a string ({s:?})"),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// The error for `key`, unknown in the object at `path`: a guess when it is
/// a case or `_` slip or a prefix of one field; at the top, a pointer to
/// `properties` when `key` is a parameter (the Python SDK sends a plain dict
/// verbatim, clients.md §4).
fn unknown_field(path: &str, key: &str, fields: &[Field]) -> ApiError {
    let target = join(path, key);
    if path.is_empty()
        && let Some(parameter) = guess(key, &PARAMETERS)
    {
        let message = format!(
            "the request body has an unknown field {key:?}: the parameters go inside \"properties\", \
             as in {{\"properties\":{{\"{parameter}\":…}}}}"
        );
        return ApiError::bad_request(target, message);
    }
    let owner = if path.is_empty() { "the request body" } else { path };
    let hint = guess(key, fields)
        .map(|name| format!(" (did you mean {name:?}?)"))
        .unwrap_or_default();
    let valid: Vec<&str> = fields
        .iter()
        .filter(|field| field.presence != Presence::ReadOnly)
        .map(|field| field.name)
        .collect();
    ApiError::bad_request(
        target,
        format!(
            "{owner} has an unknown field {key:?}{hint}: valid fields are {}",
            valid.join(", ")
        ),
    )
}

/// The one writable field `key` likely means: equal ignoring case, `_` and
/// `-`, or (4 characters or more) the start of exactly one name.
fn guess(key: &str, fields: &[Field]) -> Option<&'static str> {
    let normal = |s: &str| -> String {
        s.chars()
            .filter(|c| !matches!(c, '_' | '-'))
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    let key = normal(key);
    let writable = || fields.iter().filter(|field| field.presence != Presence::ReadOnly);
    if let Some(field) = writable().find(|field| normal(field.name) == key) {
        return Some(field.name);
    }
    let mut prefixed = writable().filter(|field| key.len() >= 4 && normal(field.name).starts_with(&key));
    match (prefixed.next(), prefixed.next()) {
        (Some(field), None) => Some(field.name),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::filter::PacketCaptureFilter;

    fn fails(body: &str) -> ApiError {
        parse_packet_capture(body.as_bytes()).expect_err(body)
    }

    #[test]
    fn filter_fields_match_serde() {
        let full = PacketCaptureFilter {
            protocol: Some("TCP".into()),
            local_ip_address: Some("a".into()),
            remote_ip_address: Some("a".into()),
            local_port: Some("1".into()),
            remote_port: Some("1".into()),
            icmp_type: Some("1".into()),
            icmp_code: Some("1".into()),
            tcp_flags: Some("SYN".into()),
            direction: Some("inbound".into()),
            bpf_expression: Some("tcp".into()),
            bpf_program: Some("1,6 0 0 1".into()),
        };
        let json = serde_json::to_value(full).unwrap();
        let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        let names: Vec<&str> = FILTER.iter().map(|field| field.name).collect();
        assert_eq!(keys, names);
        for alias in FILTER.iter().filter_map(|field| field.alias) {
            let parsed: PacketCaptureFilter = serde_json::from_str(&format!(r#"{{"{alias}":"10.0.0.1"}}"#)).unwrap();
            assert_ne!(parsed, PacketCaptureFilter::default(), "{alias}");
        }
    }

    #[test]
    fn read_only_fields_are_accepted_and_ignored() {
        let body = r#"{"id":"/x","name":"pc1","etag":"W/\"1\"","properties":{"provisioningState":"Succeeded","target":"t","storageLocation":{}}}"#;
        let parsed = parse_packet_capture(body.as_bytes()).unwrap();
        assert_eq!(parsed.properties.target, "t");
        // …but they must still be strings.
        let err = fails(r#"{"name":5,"properties":{"target":"t","storageLocation":{}}}"#);
        assert_eq!(
            (err.target(), err.message()),
            (
                Some("name"),
                r#"name must be a string, not the number 5: quote it, as in "5""#
            )
        );
    }

    #[test]
    fn repeated_keys_and_numbers_for_strings_are_located() {
        let props = |rest: &str| format!(r#"{{"properties":{{"target":"t","storageLocation":{{}}{rest}}}}}"#);
        let rows = [
            (
                props(r#","timeLimitInSeconds":1,"timeLimitInSeconds":2"#),
                "properties.timeLimitInSeconds",
                "properties.timeLimitInSeconds is given more than once: give each field once",
            ),
            (
                r#"{"properties":{"target":"t","storageLocation":{}},"properties":{"target":"t","storageLocation":{}}}"#
                    .to_owned(),
                "properties",
                "properties is given more than once: give each field once",
            ),
            (
                props(r#","filters":[{},{"localIPAddress":"10.0.0.1","localIpAddress":"10.0.0.2"}]"#),
                "properties.filters[1].localIPAddress",
                "properties.filters[1].localIPAddress is given more than once: give each field once",
            ),
            (
                props(r#","filters":[{"localPort":80}]"#),
                "properties.filters[0].localPort",
                r#"properties.filters[0].localPort must be a string, not the number 80: quote it, as in "80""#,
            ),
            (
                r#"{"properties":{"target":"t","storageLocation":{"filePath":1.5}}}"#.to_owned(),
                "properties.storageLocation.filePath",
                r#"properties.storageLocation.filePath must be a string, not the number 1.5: quote it, as in "1.5""#,
            ),
        ];
        for (body, target, message) in rows {
            let err = fails(&body);
            assert_eq!(
                (err.code(), err.target(), err.message()),
                (ErrorCode::InvalidRequestFormat, Some(target), message),
                "{body}"
            );
        }
    }

    #[test]
    fn odd_bytes_are_bad_json() {
        let err = parse_packet_capture(b"\xff\xfe{}").unwrap_err();
        assert_eq!(
            (err.status(), err.code(), err.target()),
            (400, ErrorCode::InvalidRequestFormat, None)
        );
        assert!(
            err.message().starts_with("the request body is not valid JSON: "),
            "{err}"
        );
        // A byte-order mark is skipped.
        let body = b"\xEF\xBB\xBF{\"properties\":{\"target\":\"t\",\"storageLocation\":{}}}";
        assert_eq!(parse_packet_capture(body).unwrap().properties.target, "t");
        let err = parse_packet_capture(b"\xEF\xBB\xBF").unwrap_err();
        assert!(err.message().starts_with("the request body is empty"), "{err}");
    }

    #[test]
    fn long_strings_are_shortened_in_messages() {
        let long = "x".repeat(100);
        let err = fails(&format!(
            r#"{{"properties":{{"target":"t","storageLocation":{{}},"timeLimitInSeconds":"{long}"}}}}"#
        ));
        assert_eq!(
            err.message(),
            format!(
                "properties.timeLimitInSeconds must be a whole number 0-18000 (seconds), not a string ({:?}…)",
                "x".repeat(40)
            )
        );
    }

    #[test]
    fn guesses() {
        let rows = [
            ("timelimitinseconds", Some("timeLimitInSeconds")),
            ("time_limit_in_seconds", Some("timeLimitInSeconds")),
            ("storage", Some("storageLocation")),
            ("filter", Some("filters")),
            ("capture", Some("captureSettings")),
            ("tar", None),               // too short to guess from
            ("provisioningState", None), // read-only: never suggested
            ("x", None),
        ];
        for (key, expected) in rows {
            assert_eq!(guess(key, &PARAMETERS), expected, "{key}");
        }
        // Two fields start with "file": no guess.
        assert_eq!(guess("file", &CAPTURE_SETTINGS), None);
        assert_eq!(guess("FILE_COUNT", &CAPTURE_SETTINGS), Some("fileCount"));
    }
}
