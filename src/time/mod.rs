//! Core layer: time as values. The sans-IO core never reads a clock; the shell (or a test's
//! virtual clock) reads two clocks once per event-loop turn and passes them in as a [`Now`]:
//! a monotonic [`Instant`] for every deadline, and a [`Wall`] time for timestamps and token
//! expiry. They are separate because a venue box without a real-time clock boots in 1970 and
//! learns the date later: the wall clock may jump, deadlines must not.
//!
//! Invariants: an `Instant` is microseconds since an origin the caller picked, only differences
//! between instants of one origin mean anything; a `Wall` is microseconds since the Unix epoch;
//! a `Now`'s ISO-8601 text is formatted once, when the `Now` is made.
//!
//! [`timers`] holds the min-heap of deadlines the layers above keep their timers in.

pub mod timers;

pub use timers::TimerHeap;

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

/// Wall-clock time: microseconds since the Unix epoch, as the box's real-time clock says now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Wall(u64);

impl Wall {
    pub const fn from_micros(us: u64) -> Wall {
        Wall(us)
    }

    pub fn as_micros(self) -> u64 {
        self.0
    }

    pub fn unix_secs(self) -> u64 {
        self.0 / 1_000_000
    }
}

/// Length of an ISO-8601 timestamp with milliseconds (`2025-05-21T12:00:00.000Z`).
const ISO_LEN: usize = 24;

/// The two clocks as one turn of the event loop saw them.
#[derive(Clone, Copy)]
pub struct Now {
    /// Monotonic: deadlines and durations.
    pub mono: Instant,
    /// Wall clock: timestamps in messages, token expiry.
    pub wall: Wall,
    iso: [u8; ISO_LEN],
}

impl Now {
    pub fn new(mono: Instant, wall: Wall) -> Now {
        let mut iso = [b'0'; ISO_LEN];
        write_iso8601(wall, &mut iso);
        Now { mono, wall, iso }
    }

    /// The wall clock as ISO-8601 UTC with milliseconds.
    pub fn iso(&self) -> &str {
        std::str::from_utf8(&self.iso).unwrap_or("1970-01-01T00:00:00.000Z")
    }

    /// [`Now::iso`] as bytes, without checking them again (the hot path writes it per event).
    pub fn iso_bytes(&self) -> &[u8] {
        &self.iso
    }
}

impl std::fmt::Debug for Now {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Now({:?}, {})", self.mono, self.iso())
    }
}

/// ISO-8601 UTC with milliseconds (`2025-05-21T12:00:00.000Z`). Years past 9999 are clamped to
/// the last millisecond of 9999, so the text always has the same length.
pub fn iso8601(t: Wall) -> String {
    let mut out = [0u8; ISO_LEN];
    write_iso8601(t, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// [`iso8601`] into a fixed buffer, without allocating.
fn write_iso8601(t: Wall, out: &mut [u8; ISO_LEN]) {
    let ms = t.0.min(253_402_300_799_999_000) / 1000;
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
    // Written digit by digit: this runs once per event-loop turn, on the hot path.
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year.clamp(0, 9999) as u64);
    put(5, 2, month as u64);
    put(8, 2, day as u64);
    put(11, 2, rem / 3600);
    put(14, 2, (rem % 3600) / 60);
    put(17, 2, rem % 60);
    put(20, 3, millis);
    for (i, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (23, b'Z'),
    ] {
        out[i] = c;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_known_dates() {
        assert_eq!(iso8601(Wall::from_micros(0)), "1970-01-01T00:00:00.000Z");
        let now = Now::new(Instant::ZERO, Wall::from_micros(1_747_828_801_250_000));
        assert_eq!(now.iso_bytes(), b"2025-05-21T12:00:01.250Z");
        assert_eq!(now.iso().as_bytes(), now.iso_bytes());
        // 2025-05-21T12:00:01.250Z
        assert_eq!(
            iso8601(Wall::from_micros(1_747_828_801_250_000)),
            "2025-05-21T12:00:01.250Z"
        );
        // A leap day.
        assert_eq!(
            iso8601(Wall::from_micros(951_782_400_000_000)),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            iso8601(Wall::from_micros(u64::MAX)),
            "9999-12-31T23:59:59.999Z"
        );
        // The digit writer agrees with a plain `format!` over the same civil-date arithmetic,
        // across leap years, month ends and every millisecond width.
        let reference = |us: u64| {
            let ms = us / 1000;
            let (secs, millis) = (ms / 1000, ms % 1000);
            let days = (secs / 86_400) as i64;
            let rem = secs % 86_400;
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
        };
        let mut us = 0u64;
        for _ in 0..20_000 {
            assert_eq!(iso8601(Wall::from_micros(us)), reference(us), "{us}");
            us = us
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407)
                % 4_102_444_800_000_000;
        }
    }

    #[test]
    fn now_keeps_both_clocks_apart() {
        let now = Now::new(
            Instant::from_micros(5),
            Wall::from_micros(1_747_828_801_250_000),
        );
        assert_eq!(now.mono, Instant::from_micros(5));
        assert_eq!(now.iso(), "2025-05-21T12:00:01.250Z");
        assert_eq!(now.wall.unix_secs(), 1_747_828_801);
    }
}
