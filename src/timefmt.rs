//! RFC 3339 time stamps in UTC, for the plugin's log lines and `ipamctl`'s
//! tables, formatted by `humantime`.
//!
//! RFC 3339 has four-digit years, and `humantime` refuses to format a time
//! outside 1970-01-01T00:00:00Z ..= 9999-12-31T23:59:59.999999999Z, so
//! times are clamped into that span first: a time before 1970 (a clock set
//! back) shows as the epoch, one after 9999 (a corrupt record) as the last
//! instant of 9999. Neither ever fails or panics.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The last instant `humantime` formats: 9999-12-31T23:59:59.999999999Z.
const LAST: Duration = Duration::new(253_402_300_799, 999_999_999);

/// `t` clamped into the span RFC 3339 can show.
fn clamp(t: SystemTime) -> SystemTime {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    UNIX_EPOCH + since.min(LAST)
}

/// `t` with milliseconds, e.g. `2026-12-02T06:54:08.123Z`.
pub(crate) fn rfc3339_millis(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(clamp(t)).to_string()
}

/// `secs` seconds since the Unix epoch, e.g. `2000-02-29T00:00:00Z`
/// (for `ipamctl`, hence only with the `cli` feature).
#[cfg(feature = "cli")]
pub(crate) fn rfc3339_secs(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs).min(LAST)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_times_with_milliseconds() {
        let at = |s: u64, ms: u64| UNIX_EPOCH + Duration::from_millis(s * 1000 + ms);
        for (t, want) in [
            (at(0, 0), "1970-01-01T00:00:00.000Z"),
            (at(951_782_400, 7), "2000-02-29T00:00:00.007Z"),
            (at(1_704_067_199, 999), "2023-12-31T23:59:59.999Z"),
            (at(4_107_542_400, 0), "2100-03-01T00:00:00.000Z"),
            (at(253_402_300_799, 0), "9999-12-31T23:59:59.000Z"),
            (
                UNIX_EPOCH - Duration::from_secs(5),
                "1970-01-01T00:00:00.000Z",
            ),
            (at(253_402_300_800, 0), "9999-12-31T23:59:59.999Z"),
        ] {
            assert_eq!(rfc3339_millis(t), want);
        }
    }

    #[test]
    #[cfg(feature = "cli")]
    fn known_times_in_seconds() {
        for (secs, want) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_704_067_199, "2023-12-31T23:59:59Z"),
            (4_107_542_400, "2100-03-01T00:00:00Z"),
            (253_402_300_799, "9999-12-31T23:59:59Z"),
            (253_402_300_800, "9999-12-31T23:59:59Z"),
            (u64::MAX, "9999-12-31T23:59:59Z"),
        ] {
            assert_eq!(rfc3339_secs(secs), want, "{secs}");
        }
    }
}
