//! The `api-version` query parameter every ARM request carries.
//!
//! netwatch serves one superset schema whatever the version, so any version is
//! accepted (DESIGN.md §4; clients.md §5.2 lists the many az and the SDK send,
//! 2022-01-01 to 2026-04-01, newer than the newest spec). A version must still
//! *be* one: a real date `YYYY-MM-DD`, optionally with a suffix such as
//! `-preview` (ARM's preview versions; the contract is silent on them). A
//! missing version is ARM's `MissingApiVersionParameter`, a garbled one
//! `InvalidApiVersionParameter`, both 400 with target `api-version`.

use std::fmt;

use crate::error::{ApiError, ErrorCode};

/// The query parameter's name.
pub const API_VERSION: &str = "api-version";

/// A version to show in messages.
const EXAMPLE: &str = "2024-05-01";

/// A valid `api-version`: a date and an optional suffix.
///
/// Ordered by date, then suffix (no suffix first).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApiVersion {
    year: u16,
    month: u8,
    day: u8,
    /// What follows the date's `-`, e.g. `preview`.
    suffix: Option<String>,
}

impl ApiVersion {
    /// Checks the query's `api-version` value (`None` when absent; an empty
    /// value counts as absent).
    pub fn parse(value: Option<&str>) -> Result<Self, ApiError> {
        let Some(text) = value.filter(|text| !text.is_empty()) else {
            let message = format!("the {API_VERSION} query parameter is required, as in ?{API_VERSION}={EXAMPLE}");
            return Err(ApiError::new(ErrorCode::MissingApiVersionParameter, message).with_target(API_VERSION));
        };
        parse_version(text).map_err(|problem| {
            let message = format!(
                "{API_VERSION} {text:?} is not valid: {problem}; use a date such as {EXAMPLE} \
                 (a suffix such as -preview is allowed)"
            );
            ApiError::new(ErrorCode::InvalidApiVersionParameter, message).with_target(API_VERSION)
        })
    }

    /// The date: year, month (1-12), day (1-31).
    pub fn date(&self) -> (u16, u8, u8) {
        (self.year, self.month, self.day)
    }

    /// The suffix after the date, e.g. `preview`.
    pub fn suffix(&self) -> Option<&str> {
        self.suffix.as_deref()
    }
}

/// `2024-05-01`, `2024-05-01-preview`.
impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)?;
        if let Some(suffix) = &self.suffix {
            write!(f, "-{suffix}")?;
        }
        Ok(())
    }
}

fn parse_version(text: &str) -> Result<ApiVersion, String> {
    const SHAPE: &str = "it is not of the form YYYY-MM-DD";
    let mut parts = text.splitn(4, '-');
    let mut number = |digits: usize| {
        parts
            .next()
            .filter(|part| part.len() == digits && part.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|part| part.parse::<u16>().ok())
            .ok_or_else(|| SHAPE.to_owned())
    };
    let year = number(4)?;
    let month = u8::try_from(number(2)?).map_err(|_| SHAPE.to_owned())?;
    let day = u8::try_from(number(2)?).map_err(|_| SHAPE.to_owned())?;
    let suffix = match parts.next() {
        None => None,
        Some(suffix) if !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_alphanumeric()) => {
            Some(suffix.to_owned())
        }
        Some(suffix) => return Err(format!("{suffix:?} after the date is not a suffix such as preview")),
    };
    if !(1..=12).contains(&month) {
        return Err(format!("there is no month {month}"));
    }
    let days = days_in_month(year, month);
    if !(1..=days).contains(&day) {
        return Err(format!("month {month} of {year} has {days} days"));
    }
    Ok(ApiVersion {
        year,
        month,
        day,
        suffix,
    })
}

/// Days in `month` (1-12) of `year`, Gregorian.
fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_clients_send_are_accepted() {
        // clients.md §5.2, plus a preview and a leap day.
        for text in [
            "2016-09-01",
            "2022-01-01",
            "2022-07-01",
            "2022-09-01",
            "2022-12-01",
            "2024-05-01",
            "2024-11-01",
            "2025-08-01",
            "2026-01-01",
            "2026-03-01",
            "2026-04-01",
            "2024-02-29",
            "2023-11-01-preview",
            "2021-04-01-privatepreview",
        ] {
            let version = ApiVersion::parse(Some(text)).unwrap();
            assert_eq!(version.to_string(), text);
        }
        let version = ApiVersion::parse(Some("2023-11-01-preview")).unwrap();
        assert_eq!((version.date(), version.suffix()), ((2023, 11, 1), Some("preview")));
        let older = ApiVersion::parse(Some("2022-01-01")).unwrap();
        assert!(older < version);
        assert!(ApiVersion::parse(Some("2023-11-01")).unwrap() < version);
    }

    #[test]
    fn missing_and_garbled_versions_are_arms_errors() {
        for value in [None, Some("")] {
            let err = ApiVersion::parse(value).unwrap_err();
            assert_eq!((err.status(), err.code()), (400, ErrorCode::MissingApiVersionParameter));
            assert_eq!(err.target(), Some("api-version"));
            assert_eq!(
                err.message(),
                "the api-version query parameter is required, as in ?api-version=2024-05-01"
            );
        }
        #[rustfmt::skip]
        let rows = [
            ("latest", "it is not of the form YYYY-MM-DD"),
            ("2024-5-1", "it is not of the form YYYY-MM-DD"),
            ("24-05-01", "it is not of the form YYYY-MM-DD"),
            ("2024/05/01", "it is not of the form YYYY-MM-DD"),
            ("2024-05", "it is not of the form YYYY-MM-DD"),
            (" 2024-05-01", "it is not of the form YYYY-MM-DD"),
            ("+024-05-01", "it is not of the form YYYY-MM-DD"),
            ("2024-13-01", "there is no month 13"),
            ("2024-00-10", "there is no month 0"),
            ("2023-02-29", "month 2 of 2023 has 28 days"),
            ("2100-02-29", "month 2 of 2100 has 28 days"),
            ("2024-04-31", "month 4 of 2024 has 30 days"),
            ("2024-05-00", "month 5 of 2024 has 31 days"),
            ("2024-05-01-", r#""" after the date is not a suffix such as preview"#),
            ("2024-05-01-pre view", r#""pre view" after the date is not a suffix such as preview"#),
            ("2024-05-01-preview-2", r#""preview-2" after the date is not a suffix such as preview"#),
        ];
        for (text, problem) in rows {
            let err = ApiVersion::parse(Some(text)).unwrap_err();
            assert_eq!(
                (err.status(), err.code()),
                (400, ErrorCode::InvalidApiVersionParameter),
                "{text}"
            );
            assert_eq!(err.target(), Some("api-version"));
            assert_eq!(
                err.message(),
                format!(
                    "api-version {text:?} is not valid: {problem}; use a date such as 2024-05-01 (a suffix such as -preview is allowed)"
                )
            );
        }
    }
}
