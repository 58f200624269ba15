//! The controller's clock: milliseconds since the epoch, as the store keeps
//! times, and Azure's form of a time, as the API returns them.

use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

/// Azure's form of a time, which every time the API returns takes: RFC 3339
/// UTC with seven fractional digits, as .NET prints a `DateTime`
/// (`2016-12-06T17:20:01.5671279Z` in Azure's packet capture guide), from
/// `ms` since the epoch (`….5670000Z`: times are kept in milliseconds).
/// Always seven digits: `time`'s `Rfc3339` would drop trailing zeros.
pub(crate) fn rfc3339(ms: i64) -> String {
    const AZURE: &[BorrowedFormatItem<'_>] =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z");
    // Years 1 to 9999, which four digits print: no time the controller
    // keeps is outside them, a damaged row prints as the nearest end.
    const FIRST_MS: i64 = -62_135_596_800_000;
    const LAST_MS: i64 = 253_402_300_799_999;
    let nanos = i128::from(ms.clamp(FIRST_MS, LAST_MS)) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|time| time.format(AZURE).ok())
        .expect("years 1-9999 are in range and print with four digits")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12: times were whole seconds; Azure's have seven fractional digits.
    #[test]
    fn issue_12_times_have_azures_seven_fractional_digits() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.0000000Z");
        assert_eq!(rfc3339(1_473_251_724_000), "2016-09-07T12:35:24.0000000Z");
        assert_eq!(rfc3339(951_782_400_999), "2000-02-29T00:00:00.9990000Z");
        // The guide's example, to the millisecond the store keeps.
        assert_eq!(rfc3339(1_481_044_801_567), "2016-12-06T17:20:01.5670000Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.9990000Z");
        assert_eq!(rfc3339(i64::MIN), "0001-01-01T00:00:00.0000000Z");
        assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59.9990000Z");
        let parsed = OffsetDateTime::parse(
            &rfc3339(1_481_044_801_567),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        assert_eq!(parsed.unix_timestamp_nanos(), 1_481_044_801_567_000_000);
    }
}
