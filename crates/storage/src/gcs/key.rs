//! A GCS account's configuration checked before any request: the bucket's
//! name against GCS's naming rule, and the service account's JSON key (from
//! `credentials`, a file, or `service_account_key`, the key itself) as far as
//! it can be without Google: JSON, a service account's, its fields there, its
//! private key a PEM PKCS#8 RSA key (parsed with aws-lc-rs, the crypto
//! object_store signs with).
//!
//! No message quotes the key: serde_json's syntax errors name a line and
//! column only, and the key's fields are read from a `serde_json::Value` by
//! hand, so no "invalid type: string …" ever echoes a value.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject as _;
use serde_json::Value;

use crate::{Endpoint, EndpointError, Secret};

/// Longest bucket name without dots; also the longest part between dots.
const MAX_BUCKET_LEN: usize = 63;
/// Longest bucket name with dots.
const MAX_DOTTED_BUCKET_LEN: usize = 222;

/// A service account's key, checked.
pub(crate) struct LoadedKey {
    /// The whole JSON, as object_store's builder takes it.
    pub(crate) json: Secret,
    /// The key's `gcs_base_url` (fake-gcs-server's convention, which
    /// object_store follows too), when it has one.
    pub(crate) base_url: Option<Endpoint>,
}

/// Where a key came from, as messages name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `credentials`: a file.
    File(PathBuf),
    /// `service_account_key`: the key itself.
    Inline,
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "credentials file {:?}", path.display().to_string()),
            Self::Inline => f.write_str("service_account_key"),
        }
    }
}

/// What is wrong with a `gcs` account's bucket or key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GcsConfigProblem {
    #[error(
        "bucket {bucket:?} {reason}: GCS bucket names are 3-63 characters (up to 222 with dots, \
         63 between dots) of lower-case letters, digits, -, _ and ., start and end with a letter \
         or digit, are not IP addresses, and neither start with \"goog\" nor contain \"google\""
    )]
    BadBucket { bucket: String, reason: String },
    #[error(
        "both credentials and service_account_key are set: keep one (credentials, the path of \
         a service account's JSON key file, or service_account_key, the key itself)"
    )]
    BothKeys,
    #[error(
        "credentials file {:?} cannot be read ({error}): give the path of a service account's \
         JSON key file that netwatch can read, or set service_account_key instead",
        path.display().to_string()
    )]
    Unreadable { path: PathBuf, error: String },
    #[error(
        "{origin} is not JSON ({detail}): give a service account's key as Google Cloud's console \
         downloads it (IAM & Admin > Service accounts > Keys > Add key > JSON)"
    )]
    NotJson { origin: KeySource, detail: String },
    #[error(
        "{origin} {found}: a service account's JSON key says \"type\": \"service_account\"; \
         create one in IAM & Admin > Service accounts > Keys (user credentials of gcloud do not do)"
    )]
    NotServiceAccount { origin: KeySource, found: String },
    #[error(
        "\"{field}\" of {origin} {problem}: give a service account's whole JSON key, as Google \
         Cloud's console downloads it"
    )]
    Field {
        origin: KeySource,
        field: &'static str,
        problem: &'static str,
    },
    #[error(
        "the private_key of {origin} {problem}: a service account's JSON key holds a PEM PKCS#8 \
         RSA key (-----BEGIN PRIVATE KEY-----); download a new key"
    )]
    BadPrivateKey { origin: KeySource, problem: &'static str },
    #[error("gcs_base_url of {origin}: {error}")]
    BadBaseUrl { origin: KeySource, error: EndpointError },
}

/// Checks `bucket` against GCS's naming rule
/// (cloud.google.com/storage/docs/buckets#naming).
pub(crate) fn check_bucket(bucket: &str) -> Result<(), GcsConfigProblem> {
    let bad = |reason: String| {
        Err(GcsConfigProblem::BadBucket {
            bucket: bucket.to_owned(),
            reason,
        })
    };
    if bucket.is_empty() {
        return bad("is empty".to_owned());
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.');
    if let Some(found) = bucket.chars().find(|&c| !allowed(c)) {
        return bad(format!("has the character {found:?}"));
    }
    let len = bucket.len();
    let max = if bucket.contains('.') {
        MAX_DOTTED_BUCKET_LEN
    } else {
        MAX_BUCKET_LEN
    };
    if !(3..=max).contains(&len) {
        return bad(format!("is {len} characters long"));
    }
    if let Some(part) = bucket.split('.').find(|part| part.len() > MAX_BUCKET_LEN) {
        return bad(format!("has {} characters between dots", part.len()));
    }
    let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    for (end, c) in [("starts", bucket.chars().next()), ("ends", bucket.chars().last())] {
        if let Some(c) = c.filter(|&c| !alphanumeric(c)) {
            return bad(format!("{end} with {c:?}"));
        }
    }
    if bucket.parse::<Ipv4Addr>().is_ok() {
        return bad("is an IP address".to_owned());
    }
    if bucket.starts_with("goog") {
        return bad("starts with \"goog\"".to_owned());
    }
    if bucket.contains("google") || bucket.contains("g00gle") {
        return bad("contains \"google\"".to_owned());
    }
    Ok(())
}

/// The account's key: from the file `credentials`, or `key` itself, checked;
/// `None` with neither (the machine's identity).
pub(crate) fn load(credentials: Option<&Path>, key: Option<&Secret>) -> Result<Option<LoadedKey>, GcsConfigProblem> {
    let (source, json) = match (credentials, key) {
        (Some(_), Some(_)) => return Err(GcsConfigProblem::BothKeys),
        (None, None) => return Ok(None),
        (Some(path), None) => {
            let text = std::fs::read_to_string(path).map_err(|err| GcsConfigProblem::Unreadable {
                path: path.to_owned(),
                error: err.to_string(),
            })?;
            (KeySource::File(path.to_owned()), Secret::new(text))
        }
        (None, Some(key)) => (KeySource::Inline, key.clone()),
    };
    let base_url = check_key(&source, json.expose())?;
    Ok(Some(LoadedKey { json, base_url }))
}

/// Checks a service account's JSON key; its `gcs_base_url`, if any.
fn check_key(source: &KeySource, json: &str) -> Result<Option<Endpoint>, GcsConfigProblem> {
    let value: Value = serde_json::from_str(json).map_err(|err| GcsConfigProblem::NotJson {
        origin: source.clone(),
        detail: err.to_string(),
    })?;
    let Value::Object(fields) = value else {
        return Err(GcsConfigProblem::NotJson {
            origin: source.clone(),
            detail: "not a JSON object".to_owned(),
        });
    };
    match fields.get("type") {
        Some(Value::String(kind)) if kind == "service_account" => {}
        found => {
            let found = match found {
                // Key types are short words (`authorized_user`,
                // `external_account`); anything else is not shown.
                Some(Value::String(kind))
                    if kind.len() <= 40 && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
                {
                    format!("is a key of type {kind:?}, not a service account's")
                }
                Some(_) => "has a \"type\" that is not a service account's".to_owned(),
                None => "has no \"type\"".to_owned(),
            };
            return Err(GcsConfigProblem::NotServiceAccount {
                origin: source.clone(),
                found,
            });
        }
    }
    let field = |field: &'static str, problem: &'static str| GcsConfigProblem::Field {
        origin: source.clone(),
        field,
        problem,
    };
    let mut private_key = "";
    for name in ["client_email", "private_key_id", "private_key"] {
        match fields.get(name) {
            Some(Value::String(text)) if !text.is_empty() => {
                if name == "private_key" {
                    private_key = text.as_str();
                }
            }
            Some(Value::String(_)) => return Err(field(name, "is empty")),
            Some(_) => return Err(field(name, "is not a string")),
            None => return Err(field(name, "is missing")),
        }
    }
    if fields.get("disable_oauth").is_some_and(|value| !value.is_boolean()) {
        return Err(field("disable_oauth", "is not true or false"));
    }
    let base_url = match fields.get("gcs_base_url") {
        None | Some(Value::Null) => None,
        Some(Value::String(url)) => Some(Endpoint::parse(url).map_err(|error| GcsConfigProblem::BadBaseUrl {
            origin: source.clone(),
            error,
        })?),
        Some(_) => return Err(field("gcs_base_url", "is not a string")),
    };
    check_private_key(private_key).map_err(|problem| GcsConfigProblem::BadPrivateKey {
        origin: source.clone(),
        problem,
    })?;
    Ok(base_url)
}

/// Checks that `pem` is a PKCS#8 RSA private key aws-lc-rs can sign with.
fn check_private_key(pem: &str) -> Result<(), &'static str> {
    match PrivateKeyDer::from_pem_slice(pem.as_bytes()) {
        Ok(PrivateKeyDer::Pkcs8(der)) => aws_lc_rs::signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
            .map(drop)
            .map_err(|_| "is not an RSA key of 2048 bits or more, or is damaged"),
        Ok(PrivateKeyDer::Pkcs1(_)) => Err("is a PKCS#1 key (-----BEGIN RSA PRIVATE KEY-----), not PKCS#8"),
        Ok(PrivateKeyDer::Sec1(_)) => Err("is an elliptic-curve key, not RSA"),
        Ok(_) => Err("is not an RSA key"),
        Err(_) => Err("is not a PEM private key"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_gcs_rule() {
        let long_part = "a".repeat(64);
        let dotted = format!("{}.{}", "a".repeat(63), "b".repeat(63));
        for good in [
            "abc",
            "my-bucket_1",
            "a.b.c",
            "0bucket9",
            dotted.as_str(),
            &"a".repeat(63),
        ] {
            assert_eq!(check_bucket(good), Ok(()), "{good}");
        }
        let rows = [
            ("", "is empty"),
            ("ab", "is 2 characters long"),
            (long_part.as_str(), "is 64 characters long"),
            (&format!("a.{long_part}"), "has 64 characters between dots"),
            ("Captures", "has the character 'C'"),
            ("my bucket", "has the character ' '"),
            ("-abc", "starts with '-'"),
            ("abc.", "ends with '.'"),
            ("192.168.5.4", "is an IP address"),
            ("goog-captures", "starts with \"goog\""),
            ("my-google-bucket", "contains \"google\""),
            ("my-g00gle-bucket", "contains \"google\""),
        ];
        for (bad, reason) in rows {
            let err = check_bucket(bad).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("bucket {bad:?} {reason}: GCS bucket names are 3-63")),
                "{bad}: {err}"
            );
        }
    }
}
