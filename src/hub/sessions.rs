//! Core layer (sans-IO), part of the hub: the session table. Owns every session (one per
//! user: its glasses connection, grace deadline, app runs and their lifecycle states, settings,
//! rate limit, streams, screen, pending requests, the glasses' capabilities, the location tier
//! asked of them and the live stream's keep-alives), kept in a slab with generations, and the
//! index by user.
//!
//! Invariants:
//! - a [`SessKey`] finds its session only while that very session lives: a slot reused by a
//!   later session has another generation, so a stale key (in a timer, a link, a webhook)
//!   finds nothing;
//! - `by_user` and the slab agree: one session per user, each indexed under its own user
//!   string (shared, not a copy);
//! - sessions are made and forgotten here only ([`Sessions::insert`], [`Sessions::remove`]);
//!   what happens to their apps and connections around that is the hub's to wire.

use super::keepalive::KeepAlive;
use super::requests::Requests;
use super::screen::LazyScreen;
use super::streams::{Mic, Streams};
use super::vecmap::VecMap;
use crate::net::ConnId;
use crate::protocol::inbound::{LocationTier, ReleaseReason};
use crate::protocol::outbound as messages;
use crate::time::{Instant, Wall};
use serde_json::Value;
use slab::Slab;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A session's key: its slot in the table and the generation it was made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessKey {
    /// The slab slot (sessions are capped far below `u32::MAX` by `max_sessions`).
    pub(super) slot: u32,
    pub(super) gen: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AppState {
    /// Webhook sent; waiting for the app's connection. `retry_at`: next webhook attempt.
    Loading {
        until: Instant,
        retry_at: Option<Instant>,
    },
    Active,
    /// Dropped unexpectedly; waiting for the app's own reconnect.
    Reconnecting {
        until: Instant,
    },
    /// Waiting to restart it through the webhook.
    RestartWait {
        at: Instant,
    },
    /// Start or restart gave up; `AppRun::error` says why.
    Failed,
}

impl AppState {
    pub(super) fn name(self) -> &'static str {
        match self {
            AppState::Loading { .. } => "loading",
            AppState::Active => "active",
            AppState::Reconnecting { .. } => "reconnecting",
            AppState::RestartWait { .. } => "restarting",
            AppState::Failed => "failed",
        }
    }

    /// Started and not given up on.
    pub(super) fn is_live(self) -> bool {
        !matches!(self, AppState::Failed)
    }

    /// The one deadline this state waits for.
    pub(super) fn deadline(self) -> Option<Instant> {
        match self {
            AppState::Loading { until, retry_at } => Some(retry_at.unwrap_or(until)),
            AppState::Reconnecting { until } => Some(until),
            AppState::RestartWait { at } => Some(at),
            AppState::Active | AppState::Failed => None,
        }
    }
}

#[derive(Debug)]
pub(super) struct AppRun {
    pub(super) state: AppState,
    pub(super) conn: Option<ConnId>,
    pub(super) subs: Vec<String>,
    /// Which start this is (unique in the hub), so a late webhook outcome from an earlier start
    /// is never taken for the current one's.
    pub(super) start: u32,
    pub(super) attempt: u32,
    pub(super) restarts: u32,
    pub(super) active_since: Option<Instant>,
    pub(super) error: Option<&'static str>,
    /// The `data_stream` prefix for this app in this session, built once when it binds.
    pub(super) prefix: Box<[u8]>,
    /// Its start webhook waits in its app server's FIFO (so cancelling looks there only then).
    pub(super) waiting: bool,
    /// The app said goodbye on its current connection (`ownership_release`): that
    /// connection's close is not a drop (see [`super::release`]). Cleared when a connection
    /// binds and when the app starts again.
    pub(super) released: Option<ReleaseReason>,
    /// The `rate` of its location subscription (`None`: none given; see [`super::location`]).
    pub(super) location_rate: Option<LocationTier>,
}

#[derive(Debug)]
pub(super) struct Session {
    /// Given by [`Sessions::insert`]; only a key with this generation finds the session.
    gen: u32,
    pub(super) user: Arc<str>,
    pub(super) glasses: Option<ConnId>,
    pub(super) started: Wall,
    pub(super) grace_until: Option<Instant>,
    pub(super) apps: VecMap<AppRun>,
    /// The user's glasses settings; `None` until changed from the defaults (they cost nothing
    /// per idle session that way).
    pub(super) settings: Option<Box<Value>>,
    /// App start/stop requests allowed from now on.
    pub(super) lifecycle: RateLimit,
    /// Subscriptions and replay caches; `None` until the session has either.
    pub(super) streams: Option<Box<Streams>>,
    pub(super) mic: Mic,
    /// What the glasses show: the display manager and the dashboard.
    pub(super) screen: LazyScreen,
    /// App requests waiting for the glasses' reply.
    pub(super) requests: Requests,
    /// What the glasses can do, from the model they reported (`None` until they named one:
    /// the conservative profile then; see [`super::capabilities`]).
    pub(super) capabilities: Option<Box<Value>>,
    /// The location tier last asked of the glasses (`None`: never asked).
    pub(super) location_tier: Option<LocationTier>,
    /// Keep-alives of the session's live RTMP stream (see [`super::keepalive`]).
    pub(super) keepalive: Option<Box<KeepAlive>>,
}

impl Session {
    /// A new session of `user`, its glasses connected, no app started yet.
    pub(super) fn new(
        user: &str,
        glasses: ConnId,
        started: Wall,
        settings: Option<Box<Value>>,
        lifecycle: RateLimit,
        screen: LazyScreen,
    ) -> Session {
        Session {
            gen: 0,
            user: user.into(),
            glasses: Some(glasses),
            started,
            grace_until: None,
            apps: VecMap::default(),
            settings,
            lifecycle,
            streams: None,
            mic: Mic::default(),
            screen,
            requests: Requests::default(),
            capabilities: None,
            location_tier: None,
            keepalive: None,
        }
    }

    /// A session of `user` made at time zero, for unit tests of the hub's parts.
    #[cfg(test)]
    pub(super) fn for_test(user: &str) -> Session {
        let timings = Arc::new(super::display::DisplayTimings::default());
        let zero = Instant::from_micros(0);
        let glasses = ConnId { index: 0, gen: 0 };
        let limit = RateLimit::full(1, zero);
        let wall = Wall::from_micros(0);
        Session::new(user, glasses, wall, None, limit, LazyScreen::new(&timings))
    }

    /// The user's glasses settings (the defaults until one was changed).
    pub(super) fn settings(&self) -> Value {
        self.settings
            .as_deref()
            .cloned()
            .unwrap_or_else(messages::default_settings)
    }
}

/// A token bucket: `tokens` requests may be made now, one more each `refill`, at most `burst`.
#[derive(Debug, Clone, Copy)]
pub(super) struct RateLimit {
    tokens: u32,
    last: Instant,
}

impl RateLimit {
    pub(super) fn full(burst: u32, now: Instant) -> RateLimit {
        RateLimit {
            tokens: burst,
            last: now,
        }
    }

    /// Take one token if there is one.
    pub(super) fn take(&mut self, burst: u32, refill: Duration, now: Instant) -> bool {
        let per = refill.as_micros().max(1);
        let earned = now.saturating_since(self.last).as_micros() / per;
        if earned > 0 {
            let earned = earned.min(u128::from(burst)) as u32;
            self.tokens = burst.min(self.tokens + earned);
            self.last = if self.tokens == burst {
                now
            } else {
                self.last + refill * earned
            };
        }
        match self.tokens.checked_sub(1) {
            Some(t) => {
                self.tokens = t;
                true
            }
            None => false,
        }
    }
}

/// Every session, by key and by user.
#[derive(Debug, Default)]
pub(super) struct Sessions {
    slab: Slab<Session>,
    /// Keyed by the session's own user string (shared, not a copy).
    by_user: HashMap<Arc<str>, SessKey>,
    /// The generation of the latest session made.
    next_gen: u32,
    /// Moved by every change to what the sessions deliver to: a session made or forgotten, an
    /// app run changed ([`Sessions::run_mut`]), a session's apps or subscriptions changed
    /// ([`Sessions::routing_mut`]). What was derived from the routing at one epoch (a venue
    /// feed's delivery lists) holds while it is the same.
    epoch: u64,
}

impl Sessions {
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    #[inline]
    pub fn get(&self, sk: SessKey) -> Option<&Session> {
        self.slab.get(sk.slot as usize).filter(|s| s.gen == sk.gen)
    }

    #[inline]
    pub fn get_mut(&mut self, sk: SessKey) -> Option<&mut Session> {
        self.slab
            .get_mut(sk.slot as usize)
            .filter(|s| s.gen == sk.gen)
    }

    /// The run of `app` in the session (its state, connection, prefix or subscriptions may
    /// change: the epoch moves).
    #[inline]
    pub fn run_mut(&mut self, sk: SessKey, app: usize) -> Option<&mut AppRun> {
        self.epoch += 1;
        self.get_mut(sk)?.apps.get_mut(&app)
    }

    /// The session, to change its apps (a run made or removed) or its subscription index:
    /// the epoch moves. Everything else (screen, requests, caches) goes through `get_mut`.
    #[inline]
    pub fn routing_mut(&mut self, sk: SessKey) -> Option<&mut Session> {
        self.epoch += 1;
        self.get_mut(sk)
    }

    /// The run of `app` in the session.
    #[inline]
    pub fn run(&self, sk: SessKey, app: usize) -> Option<&AppRun> {
        self.get(sk)?.apps.get(&app)
    }

    /// The key of `user`'s session.
    #[inline]
    pub fn by_user(&self, user: &str) -> Option<SessKey> {
        self.by_user.get(user).copied()
    }

    /// Keep `session` (its user has none yet) under a new generation; its key.
    pub fn insert(&mut self, mut session: Session) -> SessKey {
        debug_assert!(!self.by_user.contains_key(&session.user));
        self.epoch += 1;
        self.next_gen = self.next_gen.wrapping_add(1);
        session.gen = self.next_gen;
        let user = session.user.clone();
        let sk = SessKey {
            slot: self.slab.insert(session) as u32,
            gen: self.next_gen,
        };
        self.by_user.insert(user, sk);
        sk
    }

    /// Forget the session (and its user's index entry); it, if `sk` still named it.
    pub fn remove(&mut self, sk: SessKey) -> Option<Session> {
        self.get(sk)?;
        self.epoch += 1;
        let s = self.slab.remove(sk.slot as usize);
        self.by_user.remove(&s.user);
        Some(s)
    }

    /// The routing's epoch: the same only while no session was made or forgotten and no app
    /// run, set of runs or subscription index changed.
    #[inline]
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Every session with its key, in slot order.
    pub fn iter(&self) -> Iter<'_> {
        self.slab.iter().map(keyed)
    }

    /// The first disagreement between the slab and the index by user, if any.
    #[cfg(any(test, feature = "sim"))]
    pub fn audit(&self) -> Result<(), String> {
        if self.by_user.len() != self.slab.len() {
            return Err(format!(
                "{} sessions but {} users indexed",
                self.slab.len(),
                self.by_user.len()
            ));
        }
        for (user, sk) in &self.by_user {
            let s = self
                .get(*sk)
                .ok_or_else(|| format!("{user}: indexed session is gone"))?;
            if &s.user != user {
                return Err(format!("{user}: indexed session belongs to {}", s.user));
            }
        }
        Ok(())
    }
}

/// The sessions with their keys, in slot order.
pub(super) type Iter<'a> =
    std::iter::Map<slab::Iter<'a, Session>, fn((usize, &'a Session)) -> (SessKey, &'a Session)>;

fn keyed((slot, s): (usize, &Session)) -> (SessKey, &Session) {
    let sk = SessKey {
        slot: slot as u32,
        gen: s.gen,
    };
    (sk, s)
}

impl<'a> IntoIterator for &'a Sessions {
    type Item = (SessKey, &'a Session);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(user: &str) -> Session {
        Session::for_test(user)
    }

    #[test]
    fn a_reused_slot_is_not_found_by_the_old_key() {
        let mut t = Sessions::default();
        let a = t.insert(session("a"));
        assert_eq!(t.remove(a).map(|s| s.user), Some("a".into()));
        let b = t.insert(session("b"));
        assert_eq!(a.slot, b.slot, "the slot is reused");
        assert_ne!(a.gen, b.gen);
        assert!(t.get(a).is_none(), "the old key finds nothing");
        assert!(t.remove(a).is_none(), "nor removes its successor");
        assert_eq!(t.get(b).map(|s| &*s.user), Some("b"));
        assert_eq!(t.len(), 1);
        assert!(t.audit().is_ok());
    }

    #[test]
    fn found_by_user_until_removed() {
        let mut t = Sessions::default();
        let a = t.insert(session("a"));
        let b = t.insert(session("b"));
        assert_eq!(t.by_user("a"), Some(a));
        assert_eq!(t.by_user("b"), Some(b));
        assert_eq!(t.by_user("c"), None);
        let keys: Vec<SessKey> = t.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, [a, b]);
        t.remove(a);
        assert_eq!(t.by_user("a"), None);
        assert_eq!(t.by_user("b"), Some(b));
        assert_eq!((&t).into_iter().count(), 1);
        assert!(t.audit().is_ok());
        t.remove(b);
        assert_eq!((t.len(), t.by_user("b")), (0, None));
    }

    #[test]
    fn a_run_is_found_through_its_live_session_only() {
        let run = |start| AppRun {
            state: AppState::Active,
            conn: None,
            subs: Vec::new(),
            start,
            attempt: 1,
            restarts: 0,
            active_since: None,
            error: None,
            prefix: Box::default(),
            waiting: false,
            released: None,
            location_rate: None,
        };
        let mut t = Sessions::default();
        let a = t.insert(session("a"));
        if let Some(s) = t.get_mut(a) {
            s.apps.get_or_insert(3, run(1));
        }
        assert_eq!(t.run(a, 3).map(|r| r.start), Some(1));
        assert!(t.run(a, 2).is_none());
        if let Some(r) = t.run_mut(a, 3) {
            r.restarts = 2;
        }
        assert_eq!(t.run(a, 3).map(|r| r.restarts), Some(2));
        t.remove(a);
        let b = t.insert(session("a"));
        assert!(
            t.run(b, 3).is_none(),
            "a new session of the same user starts empty"
        );
        if let Some(s) = t.get_mut(b) {
            s.apps.get_or_insert(3, run(2));
        }
        assert!(
            t.run(a, 3).is_none(),
            "the old key reaches no run of the new one"
        );
        assert!(t.run_mut(a, 3).is_none());
        assert_eq!(t.run(b, 3).map(|r| r.start), Some(2));
    }

    #[test]
    fn the_rate_limit_refills_one_per_interval_up_to_the_burst() {
        let t0 = Instant::from_micros(0);
        let s = Duration::from_secs(1);
        let mut r = RateLimit::full(3, t0);
        assert!((0..3).all(|_| r.take(3, s, t0)));
        assert!(!r.take(3, s, t0), "the burst is spent");
        assert!(r.take(3, s, t0 + s), "one more after an interval");
        assert!(!r.take(3, s, t0 + s));
        assert!(r.take(3, s, t0 + s * 3), "two earned, one taken");
        let later = t0 + s * 30;
        assert!((0..3).all(|_| r.take(3, s, later)));
        assert!(!r.take(3, s, later), "never more than the burst");
    }
}
