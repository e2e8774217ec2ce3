//! Test layer (`sim` feature and unit tests): a reference model of the main-view display rules
//! (DESIGN §5, PROTOCOL §16.6 as the display manager's module comment states them), run beside
//! the real manager in the simulation suite.
//!
//! Owns, per session, a plain record of the rules' state: the foreground app, the apps booting,
//! each app's latest display, the displays held for the boot or waiting for the throttle, the
//! lock, and what the main view shows. It is fed the very inputs the hub feeds the manager
//! (the hub records them as [`DisplayInput`]s in each session's display trace — request, app
//! starting / connected / gone, each with its instant — and this model reads them as its own
//! [`Input`]s: the hub names no observer) and moves time itself, deadline by deadline;
//! [`Model::expected`] is then what the glasses must show.
//! It shares no code with the manager: every rule is written here again, naively, from the
//! text (lists searched linearly, one rule per branch).
//!
//! Invariants: deadlines are handled in time order, each before any input at the same instant
//! (as the hub's timer fires before the next input); at most one entry per app in each list.

use crate::hub::display::{Display, Layout, Owner};
use crate::hub::DisplayInput;
use crate::time::Instant;
use std::time::Duration;

type AppId = usize;

const THROTTLE: Duration = Duration::from_millis(300);
const BOOT: Duration = Duration::from_millis(1500);
const LOCK: Duration = Duration::from_secs(10);
const LOCK_INACTIVE: Duration = Duration::from_secs(2);
const MIN_LIFETIME: Duration = Duration::from_secs(1);

/// One input to a session's display manager (main view only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A user app starts (or restarts): it boots and becomes the foreground app.
    Starting(AppId),
    /// An app connected (ends its boot once the boot time passed).
    Connected(AppId),
    /// An app stopped, dropped or failed.
    Gone(AppId),
    /// An app's main-view display request (`text`: its layout's `text`).
    Request {
        app: AppId,
        text: String,
        duration_ms: Option<u64>,
        force: bool,
    },
}

impl From<DisplayInput> for Input {
    /// The model's reading of one input the hub recorded in a session's display trace.
    fn from(i: DisplayInput) -> Input {
        match i {
            DisplayInput::Starting(app) => Input::Starting(app),
            DisplayInput::Connected(app) => Input::Connected(app),
            DisplayInput::Gone(app) => Input::Gone(app),
            DisplayInput::Request { app, display } => Input::request(&display, app),
        }
    }
}

impl Input {
    pub fn request(d: &Display, app: AppId) -> Input {
        let text = match &d.layout {
            Layout::Raw { json, .. } => serde_json::from_str::<serde_json::Value>(json.get())
                .ok()
                .and_then(|v| v["text"].as_str().map(String::from))
                .unwrap_or_default(),
            _ => String::new(),
        };
        let app = match d.owner {
            Owner::App(a) => a,
            Owner::System => app,
        };
        Input::Request {
            app,
            text,
            duration_ms: d.duration_ms,
            force: d.force,
        }
    }
}

/// What the main view must show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    Nothing,
    Boot,
    Clear,
    App { app: AppId, text: String },
}

/// A display: what was asked, and since when it is on screen (or was accepted).
#[derive(Debug, Clone)]
struct Disp {
    app: AppId,
    text: String,
    duration_ms: Option<u64>,
    force: bool,
    since: Instant,
    expires: Option<Instant>,
}

impl Disp {
    /// "hasRemainingDuration": until its expiry; `durationMs: 0` never; else for the minimum
    /// lifetime after it was shown.
    fn valid(&self, now: Instant) -> bool {
        match (self.duration_ms, self.expires) {
            (_, Some(e)) => now < e,
            (Some(0), None) => false,
            _ => now < self.since + MIN_LIFETIME,
        }
    }

    fn fresh(mut self, now: Instant) -> Disp {
        self.since = now;
        self.expires = self
            .duration_ms
            .filter(|&d| d > 0)
            .map(|d| now + Duration::from_millis(d));
        self
    }
}

#[derive(Debug, Clone, Copy)]
struct Lock {
    app: AppId,
    until: Instant,
    last: Instant,
}

impl Lock {
    fn end(&self) -> Instant {
        self.until.min(self.last + LOCK_INACTIVE)
    }
}

#[derive(Debug, Clone)]
enum Shows {
    Nothing,
    Boot,
    Clear,
    App(Disp),
}

/// The rules' state of one session.
#[derive(Debug, Clone)]
pub struct Model {
    now: Instant,
    foreground: Option<AppId>,
    /// (app, not before, connected)
    booting: Vec<(AppId, Instant, bool)>,
    held: Vec<Disp>,
    pending: Vec<Disp>,
    latest: Vec<Disp>,
    lock: Option<Lock>,
    last_app_shown: Option<Instant>,
    shows: Shows,
}

impl Default for Model {
    fn default() -> Self {
        Model {
            now: Instant::ZERO,
            foreground: None,
            booting: Vec::new(),
            held: Vec::new(),
            pending: Vec::new(),
            latest: Vec::new(),
            lock: None,
            last_app_shown: None,
            shows: Shows::Nothing,
        }
    }
}

/// Put `d` in `list` as its app's only entry, at the end.
fn put(list: &mut Vec<Disp>, d: Disp) {
    list.retain(|x| x.app != d.app);
    list.push(d);
}

fn find(list: &[Disp], app: AppId) -> Option<&Disp> {
    list.iter().find(|d| d.app == app)
}

impl Model {
    /// What the main view must show at `now`.
    pub fn expected(&mut self, now: Instant) -> Expected {
        self.advance(now);
        match &self.shows {
            Shows::Nothing => Expected::Nothing,
            Shows::Boot => Expected::Boot,
            Shows::Clear => Expected::Clear,
            Shows::App(d) => Expected::App {
                app: d.app,
                text: d.text.clone(),
            },
        }
    }

    /// Feed one input the manager got at `at`.
    pub fn feed(&mut self, at: Instant, input: Input) {
        self.advance(at);
        let now = at;
        match input {
            Input::Starting(app) => {
                self.foreground = Some(app);
                self.booting.retain(|b| b.0 != app);
                self.booting.push((app, now + BOOT, false));
                for d in std::mem::take(&mut self.pending) {
                    put(&mut self.held, d);
                }
                self.shows = Shows::Boot;
            }
            Input::Connected(app) => {
                for b in self.booting.iter_mut().filter(|b| b.0 == app) {
                    b.2 = true;
                }
                self.advance(now);
            }
            Input::Gone(app) => self.gone(now, app),
            Input::Request {
                app,
                text,
                duration_ms,
                force,
            } => {
                let d = Disp {
                    app,
                    text,
                    duration_ms,
                    force,
                    since: now,
                    expires: None,
                }
                .fresh(now);
                self.request(now, d);
            }
        }
    }

    fn request(&mut self, now: Instant, d: Disp) {
        if !self.booting.is_empty() {
            return put(&mut self.held, d);
        }
        if self.lock.is_some_and(|l| now >= l.end()) {
            self.lock = None;
        }
        if !self.admit(now, d.app) {
            // The foreground app's refused display is still its latest (restorable).
            if self.foreground == Some(d.app) {
                put(&mut self.latest, d);
            }
            return;
        }
        put(&mut self.latest, d.clone());
        let throttled = self.last_app_shown.is_some_and(|t| now < t + THROTTLE);
        if throttled && !d.force {
            return put(&mut self.pending, d);
        }
        self.show(now, d.fresh(now));
    }

    /// Priority: the foreground app may show unless a background lock holder is on screen;
    /// another app needs the lock (granted if free, refreshed if its own).
    fn admit(&mut self, now: Instant, app: AppId) -> bool {
        if self.foreground == Some(app) {
            if let Some(l) = self.lock {
                if self.showing() == Some(l.app) {
                    return false;
                }
                self.lock = None;
            }
            return true;
        }
        match self.lock {
            Some(l) if l.app != app => false,
            Some(ref mut l) => {
                l.last = now;
                true
            }
            None => {
                self.lock = Some(Lock {
                    app,
                    until: now + LOCK,
                    last: now,
                });
                true
            }
        }
    }

    fn valid_lock(&self, now: Instant) -> Option<Lock> {
        self.lock.filter(|l| now < l.end())
    }

    fn eligible(&self, now: Instant, app: AppId) -> bool {
        match self.valid_lock(now) {
            Some(l) => l.app == app || self.foreground == Some(app),
            None => true,
        }
    }

    fn showing(&self) -> Option<AppId> {
        match &self.shows {
            Shows::App(d) => Some(d.app),
            _ => None,
        }
    }

    fn throttle_open(&self, now: Instant) -> bool {
        self.last_app_shown.is_none_or(|t| now >= t + THROTTLE)
    }

    /// Put an app display on screen (a new one, or a kept one again with its expiry).
    fn show(&mut self, now: Instant, mut d: Disp) {
        d.since = now;
        self.last_app_shown = Some(now);
        self.pending.retain(|p| p.app != d.app);
        put(&mut self.latest, d.clone());
        self.shows = Shows::App(d);
    }

    /// The next eligible display: a throttled one whose time came, the lock holder's latest,
    /// the foreground app's latest, else a clear.
    fn show_next(&mut self, now: Instant) {
        if !self.booting.is_empty() {
            self.shows = Shows::Boot;
            return;
        }
        if self.throttle_open(now) {
            if let Some(i) =
                (0..self.pending.len()).find(|&i| self.eligible(now, self.pending[i].app))
            {
                let d = self.pending.remove(i);
                return self.show(now, d.fresh(now));
            }
        }
        let holder = self.valid_lock(now).map(|l| l.app);
        for who in [holder, self.foreground].into_iter().flatten() {
            if let Some(d) = find(&self.latest, who).filter(|d| d.valid(now)).cloned() {
                return self.show(now, d);
            }
        }
        self.shows = Shows::Clear;
    }

    fn gone(&mut self, now: Instant, app: AppId) {
        let was = self.booting.len();
        self.booting.retain(|b| b.0 != app);
        let boot_changed = self.booting.len() != was;
        self.held.retain(|d| d.app != app);
        self.pending.retain(|d| d.app != app);
        self.latest.retain(|d| d.app != app);
        if self.lock.is_some_and(|l| l.app == app) {
            self.lock = None;
        }
        if self.foreground == Some(app) {
            self.foreground = None;
        }
        if boot_changed && !self.booting.is_empty() {
            self.shows = Shows::Boot;
        } else if boot_changed {
            self.finish_boot(now);
        } else if self.showing() == Some(app) {
            self.show_next(now);
        }
    }

    /// The boot ended: held displays become their apps' latest; the foreground app's is
    /// shown, else the newest one whose app may take the view, else the next eligible.
    fn finish_boot(&mut self, now: Instant) {
        let held = std::mem::take(&mut self.held);
        for d in &held {
            put(&mut self.latest, d.clone().fresh(now));
        }
        let mut chosen = self.foreground.and_then(|f| find(&held, f)).cloned();
        if chosen.is_none() {
            for d in held.iter().rev() {
                if self.admit(now, d.app) {
                    chosen = Some(d.clone());
                    break;
                }
            }
        }
        match chosen {
            Some(d) if !d.force && !self.throttle_open(now) => put(&mut self.pending, d),
            Some(d) => self.show(now, d.fresh(now)),
            None => self.show_next(now),
        }
    }

    /// The earliest deadline, if any.
    fn next_deadline(&self) -> Option<Instant> {
        let mut all: Vec<Instant> = Vec::new();
        if let Some(l) = self.lock {
            all.push(l.end());
        }
        all.extend(self.booting.iter().filter(|b| b.2).map(|b| b.1));
        if let Shows::App(d) = &self.shows {
            all.extend(d.expires);
        }
        if !self.pending.is_empty() && self.booting.is_empty() {
            all.push(self.last_app_shown.map_or(Instant::ZERO, |t| t + THROTTLE));
        }
        all.into_iter().min()
    }

    /// Handle every deadline up to `to`, in time order.
    fn advance(&mut self, to: Instant) {
        while let Some(at) = self.next_deadline().filter(|&t| t <= to) {
            let at = at.max(self.now);
            self.now = at;
            self.due(at);
        }
        self.now = self.now.max(to);
    }

    /// One due deadline at `now`, in the order: lock end, boot end, expiry, throttle.
    fn due(&mut self, now: Instant) {
        if let Some(l) = self.lock.filter(|l| now >= l.end()) {
            self.lock = None;
            if self.booting.is_empty() && self.showing() == Some(l.app) {
                let fg = self
                    .foreground
                    .and_then(|f| find(&self.latest, f))
                    .filter(|d| d.valid(now))
                    .cloned();
                let holder_valid = matches!(&self.shows, Shows::App(d) if d.valid(now));
                match fg {
                    Some(d) => self.show(now, d),
                    None if !holder_valid => self.show_next(now),
                    None => {}
                }
            }
            return;
        }
        let was = self.booting.len();
        self.booting.retain(|b| !(b.2 && b.1 <= now));
        if self.booting.len() != was {
            if self.booting.is_empty() {
                self.finish_boot(now);
            } else {
                self.shows = Shows::Boot;
            }
            return;
        }
        if let Shows::App(d) = &mut self.shows {
            if d.expires.is_some_and(|e| e <= now) {
                d.expires = None;
                let app = d.app;
                self.latest.retain(|x| x.app != app);
                if self.booting.is_empty() {
                    self.show_next(now);
                }
                return;
            }
        }
        if !self.pending.is_empty() && self.booting.is_empty() && self.throttle_open(now) {
            let holder = self.valid_lock(now).map(|l| l.app);
            let pick = |who: Option<AppId>, p: &[Disp]| {
                who.and_then(|w| p.iter().position(|d| d.app == w))
            };
            let i = pick(holder, &self.pending)
                .or_else(|| pick(self.foreground, &self.pending))
                .unwrap_or(0);
            let d = self.pending.remove(i);
            if self.eligible(now, d.app) {
                self.show(now, d.fresh(now));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Instant {
        Instant::from_micros(n * 1000)
    }

    fn req(app: AppId, text: &str, duration_ms: Option<u64>) -> Input {
        Input::Request {
            app,
            text: text.into(),
            duration_ms,
            force: false,
        }
    }

    fn app(app: AppId, text: &str) -> Expected {
        Expected::App {
            app,
            text: text.into(),
        }
    }

    #[test]
    fn boot_then_the_foreground_apps_held_display() {
        let mut m = Model::default();
        m.feed(ms(0), Input::Starting(1));
        m.feed(ms(10), req(1, "a", None));
        m.feed(ms(200), Input::Connected(1));
        assert_eq!(m.expected(ms(1499)), Expected::Boot);
        assert_eq!(m.expected(ms(1500)), app(1, "a"));
        // No duration: still shown, but restorable only for the minimum lifetime.
        assert_eq!(m.expected(ms(9000)), app(1, "a"));
    }

    #[test]
    fn a_background_lock_holder_keeps_the_view_then_gives_it_back() {
        let mut m = Model::default();
        m.feed(ms(0), Input::Starting(1));
        m.feed(ms(0), Input::Connected(1));
        m.feed(ms(2000), req(1, "fg", Some(20_000)));
        m.feed(ms(2500), req(2, "bg", None));
        assert_eq!(m.expected(ms(2500)), app(2, "bg"));
        // The foreground app is refused while the holder shows; its display is kept.
        m.feed(ms(2900), req(1, "fg2", Some(20_000)));
        m.feed(ms(3000), req(3, "other", None));
        assert_eq!(m.expected(ms(3000)), app(2, "bg"));
        // The lock lapses 2 s after the holder's last display: the foreground's comes back.
        assert_eq!(m.expected(ms(4499)), app(2, "bg"));
        assert_eq!(m.expected(ms(4500)), app(1, "fg2"));
    }

    #[test]
    fn throttle_coalesces_latest_wins_and_expiry_restores_or_clears() {
        let mut m = Model::default();
        m.feed(ms(0), Input::Starting(1));
        m.feed(ms(0), Input::Connected(1));
        m.feed(ms(2000), req(1, "a", Some(5000)));
        m.feed(ms(2100), req(1, "b", Some(500)));
        m.feed(ms(2200), req(1, "c", Some(500)));
        assert_eq!(m.expected(ms(2299)), app(1, "a"));
        assert_eq!(m.expected(ms(2300)), app(1, "c"));
        // "c" expires at 2800; nothing else is eligible: a clear.
        assert_eq!(m.expected(ms(2800)), Expected::Clear);
        m.feed(ms(3000), Input::Gone(1));
        assert_eq!(m.expected(ms(3000)), Expected::Clear);
    }

    #[test]
    fn duration_zero_stays_until_replaced_and_is_never_restored() {
        let mut m = Model::default();
        m.feed(ms(0), Input::Starting(1));
        m.feed(ms(0), Input::Connected(1));
        m.feed(ms(2000), req(1, "zero", Some(0)));
        assert_eq!(m.expected(ms(2000)), app(1, "zero"));
        assert_eq!(m.expected(ms(600_000)), app(1, "zero"));
        m.feed(ms(600_000), req(2, "bg", Some(1000)));
        assert_eq!(m.expected(ms(600_999)), app(2, "bg"));
        assert_eq!(m.expected(ms(601_000)), Expected::Clear);
    }

    #[test]
    fn a_stopped_app_gives_way_to_the_previous_one() {
        let mut m = Model::default();
        m.feed(ms(0), Input::Starting(1));
        m.feed(ms(0), Input::Connected(1));
        m.feed(ms(2000), req(1, "fg", Some(20_000)));
        m.feed(ms(2500), req(2, "bg", Some(20_000)));
        assert_eq!(m.expected(ms(2500)), app(2, "bg"));
        m.feed(ms(3000), Input::Gone(2));
        assert_eq!(m.expected(ms(3000)), app(1, "fg"));
    }
}
