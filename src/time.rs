//! Core layer: time as a value. The sans-IO core never reads a clock; the shell (or a test's
//! virtual clock) converts its own clock into an [`Instant`] and passes it in.
//!
//! Invariant: an `Instant` is a count of microseconds since an origin the caller picked; only
//! differences and comparisons between instants from one origin mean anything.

use std::time::Duration;

/// A point in time, in microseconds since the caller's origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    pub const ZERO: Instant = Instant(0);

    pub const fn from_micros(us: u64) -> Instant {
        Instant(us)
    }

    pub fn as_micros(self) -> u64 {
        self.0
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl std::ops::Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        Instant(
            self.0
                .saturating_add(d.as_micros().min(u64::MAX as u128) as u64),
        )
    }
}

/// ISO-8601 UTC with milliseconds (`2025-05-21T12:00:00.000Z`), reading the instant as
/// microseconds since the Unix epoch (the shell's clock is anchored there).
pub fn iso8601(t: Instant) -> String {
    let ms = t.0 / 1000;
    let (secs, millis) = (ms / 1000, ms % 1000);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_known_dates() {
        assert_eq!(iso8601(Instant::ZERO), "1970-01-01T00:00:00.000Z");
        // 2025-05-21T12:00:01.250Z
        assert_eq!(
            iso8601(Instant::from_micros(1_747_828_801_250_000)),
            "2025-05-21T12:00:01.250Z"
        );
        // A leap day.
        assert_eq!(
            iso8601(Instant::from_micros(951_782_400_000_000)),
            "2000-02-29T00:00:00.000Z"
        );
    }
}
