//! Blob paths: where a file is inside a storage account, checked once
//! ([`BlobPath::parse`]) so that no backend can be led outside its root, and
//! the path Azure gives capture files ([`capture_blob_path`]).
//!
//! The rule (ours; Azure's blob names are laxer, but every name Azure writes
//! for captures passes): relative, segments joined by `/`, none empty, `.` or
//! `..`, no NUL, backslash or other control character, at most
//! [`MAX_BLOB_PATH_BYTES`] bytes (Azure's limit on a blob name) and
//! [`MAX_SEGMENT_BYTES`] per segment (a file name's limit, so every path fits
//! the local backend too), no segment starting with `.netwatch-tmp-` (the local
//! backend's uploads in progress).
//! Paths are case-sensitive, as blob names are.

use std::fmt;

/// The container Azure writes packet captures into (api-contract.md §6).
pub const CAPTURE_CONTAINER: &str = "network-watcher-logs";

/// Longest blob path in bytes: Azure's limit on a blob name (1024 characters).
pub const MAX_BLOB_PATH_BYTES: usize = 1024;

/// Longest segment in bytes: Linux's `NAME_MAX` for a file name.
pub const MAX_SEGMENT_BYTES: usize = 255;

/// Names starting with this are the local backend's files being written; no
/// blob may have one, so no download can read a partial upload.
pub(crate) const TEMP_PREFIX: &str = ".netwatch-tmp-";

/// The rule, as messages state it.
const RULE: &str = "blob paths are relative, /-separated names without empty, \".\" or \"..\" segments, \
                    NUL, backslashes or control characters";

/// A checked path of a blob inside a storage account (module doc for the rule).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobPath(String);

impl BlobPath {
    /// Checks `text` as a blob path.
    pub fn parse(text: &str) -> Result<Self, BlobPathError> {
        let bad = |problem| BlobPathError {
            path: text.to_owned(),
            problem,
        };
        if text.is_empty() {
            return Err(bad(Problem::Empty));
        }
        if text.len() > MAX_BLOB_PATH_BYTES {
            return Err(bad(Problem::TooLong(text.len())));
        }
        if let Some(found) = text.chars().find(|&c| c == '\\' || c.is_control()) {
            return Err(bad(Problem::Character(found)));
        }
        if text.starts_with('/') {
            return Err(bad(Problem::Absolute));
        }
        for segment in text.split('/') {
            match segment {
                "" => return Err(bad(Problem::EmptySegment)),
                "." | ".." => return Err(bad(Problem::DotSegment(segment.to_owned()))),
                _ if segment.starts_with(TEMP_PREFIX) => return Err(bad(Problem::Reserved(segment.to_owned()))),
                _ if segment.len() > MAX_SEGMENT_BYTES => return Err(bad(Problem::LongSegment(segment.len()))),
                _ => {}
            }
        }
        Ok(Self(text.to_owned()))
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its segments, outermost first; never empty.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The last segment: the file's own name.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for BlobPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for BlobPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A path that is not a [`BlobPath`]: what it is and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("blob path {path:?} {problem}; {RULE}")]
pub struct BlobPathError {
    /// The path as given.
    pub path: String,
    problem: Problem,
}

/// What breaks the rule, as a verb phrase.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Problem {
    #[error("is empty")]
    Empty,
    #[error("is {0} bytes long, more than {MAX_BLOB_PATH_BYTES}")]
    TooLong(usize),
    #[error("has the character {0:?}")]
    Character(char),
    #[error("starts with /")]
    Absolute,
    #[error("has an empty segment")]
    EmptySegment,
    #[error("has the segment {0:?}")]
    DotSegment(String),
    #[error("has a segment of {0} bytes, more than {MAX_SEGMENT_BYTES}")]
    LongSegment(usize),
    #[error("has the segment {0:?}, a name reserved for uploads in progress")]
    Reserved(String),
}

/// Where Azure puts the capture of VM `vm` started at `created_ms` (ms since
/// the epoch, UTC), inside the account (api-contract.md §6, DESIGN §3):
/// `network-watcher-logs/subscriptions/{sub}/resourcegroups/{rg}/providers/microsoft.compute/virtualmachines/{vm}/{yyyy}/{mm}/{dd}/packetcapture_{HH}_{MM}_{SS}_{mmm}.cap`,
/// all in lower case as Azure writes it.
///
/// The names are ARM names (a GUID, a resource group, a VM name), which hold
/// no `/` or control character, so the result is a valid [`BlobPath`].
pub fn capture_blob_path(subscription: &str, resource_group: &str, vm: &str, created_ms: i64) -> String {
    capture_blob_path_of(
        subscription,
        resource_group,
        &format!("microsoft.compute/virtualmachines/{vm}"),
        created_ms,
    )
}

/// [`capture_blob_path`] for any target below its provider: `resource` is
/// `{namespace}/{type}/{name}[/{type}/{name}…]`, e.g.
/// `microsoft.compute/virtualmachinescalesets/web/virtualmachines/3` for a
/// scale set's instance, Azure's path for one instance's file.
pub fn capture_blob_path_of(subscription: &str, resource_group: &str, resource: &str, created_ms: i64) -> String {
    let (year, month, day) = civil_from_days(created_ms.div_euclid(86_400_000));
    let ms_of_day = created_ms.rem_euclid(86_400_000);
    let (hours, minutes) = (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60);
    let (seconds, millis) = (ms_of_day / 1000 % 60, ms_of_day % 1000);
    format!(
        "{CAPTURE_CONTAINER}/subscriptions/{}/resourcegroups/{}/providers/{}/\
         {year:04}/{month:02}/{day:02}/packetcapture_{hours:02}_{minutes:02}_{seconds:02}_{millis:03}.cap",
        subscription.to_lowercase(),
        resource_group.to_lowercase(),
        resource.to_lowercase(),
    )
}

/// The (year, month, day) of day `days` since 1970-01-01, proleptic
/// Gregorian: Howard Hinnant's `civil_from_days`
/// (<http://howardhinnant.github.io/date_algorithms.html>). Public so that
/// the controller's RFC 3339 times and capture paths share one calendar.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_paths_parse() {
        for good in [
            "a",
            "a/b/c.cap",
            "network-watcher-logs/subscriptions/x/2025/01/31/packetcapture_16_39_41_077.cap",
            ".hidden/..dots/x..y",
            "Mixed Case/with space",
        ] {
            let path = BlobPath::parse(good).unwrap();
            assert_eq!(path.as_str(), good);
            assert_eq!(path.segments().collect::<Vec<_>>().join("/"), good);
        }
        assert_eq!(BlobPath::parse("a/b/c.cap").unwrap().file_name(), "c.cap");
        assert_eq!(BlobPath::parse("c.cap").unwrap().file_name(), "c.cap");
    }

    #[test]
    fn bad_paths_are_refused_with_the_reason() {
        let long = "a/".repeat(MAX_BLOB_PATH_BYTES / 2) + "a";
        let long_segment = format!("a/{}", "b".repeat(MAX_SEGMENT_BYTES + 1));
        let rows = [
            ("", "is empty"),
            ("/a/b", "starts with /"),
            ("a//b", "has an empty segment"),
            ("a/b/", "has an empty segment"),
            ("./a", "has the segment \".\""),
            ("a/../../etc/passwd", "has the segment \"..\""),
            ("..", "has the segment \"..\""),
            ("a\\b", "has the character '\\\\'"),
            ("a\0b", "has the character '\\0'"),
            ("a\nb", "has the character '\\n'"),
            (
                "a/.netwatch-tmp-1-2",
                "has the segment \".netwatch-tmp-1-2\", a name reserved for uploads in progress",
            ),
            (long.as_str(), "is 1025 bytes long, more than 1024"),
            (long_segment.as_str(), "has a segment of 256 bytes, more than 255"),
        ];
        for (bad, problem) in rows {
            let err = BlobPath::parse(bad).unwrap_err();
            assert_eq!(err.path, bad);
            assert_eq!(
                err.to_string(),
                format!("blob path {bad:?} {problem}; {RULE}"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn capture_paths_are_azures() {
        // 2025-01-31T16:39:41.077Z, the docs' example (api-contract.md §6).
        let path = capture_blob_path(
            "00000000-0000-0000-0000-00000000ABCD",
            "MyRG",
            "MyVM",
            1_738_341_581_077,
        );
        assert_eq!(
            path,
            "network-watcher-logs/subscriptions/00000000-0000-0000-0000-00000000abcd/resourcegroups/myrg/\
             providers/microsoft.compute/virtualmachines/myvm/2025/01/31/packetcapture_16_39_41_077.cap"
        );
        assert!(BlobPath::parse(&path).is_ok());
        let rows = [
            (0, "1970/01/01/packetcapture_00_00_00_000.cap"),
            (951_782_400_999, "2000/02/29/packetcapture_00_00_00_999.cap"),
            (1_495_729_354_630, "2017/05/25/packetcapture_16_22_34_630.cap"),
            (1_704_067_199_999, "2023/12/31/packetcapture_23_59_59_999.cap"),
            (-1, "1969/12/31/packetcapture_23_59_59_999.cap"),
        ];
        for (ms, tail) in rows {
            let path = capture_blob_path("s", "g", "v", ms);
            assert!(path.ends_with(&format!("/virtualmachines/v/{tail}")), "{ms}: {path}");
        }
    }
}
