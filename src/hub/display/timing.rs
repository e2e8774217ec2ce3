//! Core layer (sans-IO), part of the display manager ([`super`]): the clock rules — the
//! timings, how long a display stays worth showing, and how long a main-view lock holds.
//!
//! Owns [`DisplayTimings`] (PROTOCOL §15, shared by the sessions of a hub), [`Kept`] (a display
//! with when it was shown and when it expires) and [`Lock`] (a background app's hold on the
//! main view). Pure functions of `now`: nothing here reads a clock or changes a screen.
//!
//! Invariants: a display with `durationMs > 0` expires exactly `durationMs` after it was kept;
//! one without a duration stays valid for `min_lifetime` from `since`; `durationMs: 0` is
//! never valid again; a lock is valid strictly before both its end and `lock_inactive` after
//! its holder's last update, and [`Lock::deadline`] is the first instant it is not.

use std::sync::Arc;
use std::time::Duration;

use super::types::{AppId, Display};
use crate::time::Instant;

/// The timings of the display rules (PROTOCOL §15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayTimings {
    pub throttle: Duration,
    pub boot: Duration,
    pub lock: Duration,
    pub lock_inactive: Duration,
    pub min_lifetime: Duration,
}

impl Default for DisplayTimings {
    fn default() -> Self {
        DisplayTimings {
            throttle: Duration::from_millis(300),
            boot: Duration::from_millis(1500),
            lock: Duration::from_secs(10),
            lock_inactive: Duration::from_secs(2),
            min_lifetime: Duration::from_secs(1),
        }
    }
}

/// A display and when it was shown (or accepted, if never shown).
#[derive(Debug, Clone)]
pub(super) struct Kept {
    pub(super) disp: Arc<Display>,
    pub(super) since: Instant,
    pub(super) expires: Option<Instant>,
}

impl Kept {
    pub(super) fn new(disp: Arc<Display>, now: Instant) -> Kept {
        let expires = match disp.duration_ms {
            Some(d) if d > 0 => Some(now + Duration::from_millis(d)),
            _ => None,
        };
        Kept {
            disp,
            since: now,
            expires,
        }
    }

    /// Still worth showing again (PROTOCOL §16.6 `hasRemainingDuration`).
    pub(super) fn valid(&self, now: Instant, min_lifetime: Duration) -> bool {
        match (self.disp.duration_ms, self.expires) {
            (_, Some(at)) => now < at,
            (Some(0), None) => false,
            _ => now < self.since + min_lifetime,
        }
    }
}

/// A background app's hold on the main view.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lock {
    pub(super) app: AppId,
    /// `lock` after the grant.
    pub(super) until: Instant,
    /// The holder's last update.
    pub(super) last_active: Instant,
}

impl Lock {
    /// Still held at `now`.
    pub(super) fn valid(&self, now: Instant, inactive: Duration) -> bool {
        now < self.until && now < self.last_active + inactive
    }

    /// The first instant it is no longer valid.
    pub(super) fn deadline(&self, inactive: Duration) -> Instant {
        self.until.min(self.last_active + inactive)
    }
}

#[cfg(test)]
mod tests {
    use super::{Kept, Lock};
    use crate::hub::display::types::{Display, Layout, Owner, View};
    use crate::time::Instant;
    use std::sync::Arc;
    use std::time::Duration;

    fn ms(n: u64) -> Instant {
        Instant::from_micros(n * 1000)
    }

    fn kept(duration_ms: Option<u64>, at: u64) -> Kept {
        let d = Display {
            owner: Owner::App(1),
            view: View::Main,
            layout: Layout::Clear,
            duration_ms,
            force: false,
        };
        Kept::new(Arc::new(d), ms(at))
    }

    const MIN: Duration = Duration::from_secs(1);

    #[test]
    fn a_display_with_a_duration_is_valid_until_it_expires() {
        let k = kept(Some(500), 100);
        assert_eq!(k.expires, Some(ms(600)));
        assert!(k.valid(ms(599), MIN));
        assert!(!k.valid(ms(600), MIN));
    }

    #[test]
    fn a_display_without_a_duration_is_valid_for_the_minimum_lifetime_and_zero_never() {
        let k = kept(None, 100);
        assert_eq!(k.expires, None);
        assert!(k.valid(ms(1_099), MIN));
        assert!(!k.valid(ms(1_100), MIN));
        assert!(!kept(Some(0), 100).valid(ms(100), MIN));
    }

    #[test]
    fn a_lock_ends_at_its_end_or_after_inactivity_whichever_is_first() {
        let inactive = Duration::from_secs(2);
        let l = Lock {
            app: 2,
            until: ms(10_000),
            last_active: ms(1_000),
        };
        assert_eq!(l.deadline(inactive), ms(3_000));
        assert!(l.valid(ms(2_999), inactive) && !l.valid(ms(3_000), inactive));
        let busy = Lock {
            last_active: ms(9_500),
            ..l
        };
        assert_eq!(busy.deadline(inactive), ms(10_000));
        assert!(busy.valid(ms(9_999), inactive) && !busy.valid(ms(10_000), inactive));
    }
}
