//! Core layer (sans-IO), part of the display manager ([`super`]): [`DisplayManager`] itself —
//! what the glasses show on each view, and when, and every rule that decides it.
//!
//! Pure state machine in the quinn style: inputs are `request` (a display from an app or from
//! the box), `app_starting` / `app_connected` / `app_stopped` (the lifecycle), and
//! `handle_timeout`; outputs are polled: [`DisplayManager::poll_display`] (the next display to
//! send to the glasses) and [`DisplayManager::poll_timeout`] (the next deadline). Every input
//! takes the monotonic `now`; nothing here reads a clock, sends, or knows a connection. The hub
//! feeds it, sends what it polls, and arms its one timer slot with `poll_timeout`.
//!
//! What it owns: the display on the main view, the foreground app, the main-view throttle and
//! the displays coalesced in it, each app's latest main display (restorable), the background
//! lock, the output queue and the counters — and every decision about the main view. Its parts
//! hold data and answer questions: the boot ([`super::boot::Booting`]), the side views
//! ([`super::side::SideViews`], which keep their own per-app throttle), the clock rules
//! ([`super::timing`]), the lazily made lists ([`super::lists`]); it wires them and counts.
//!
//! Rules (PROTOCOL §15 and §16.6, with the defaults of [`DisplayTimings`]):
//! - throttle: at most one app display on the main view per `throttle`; requests inside the
//!   interval are coalesced latest-wins per app and the newest is sent when it ends; nothing is
//!   queued behind it; `forceDisplay` bypasses it. Displays of the box (boot card, clear) are not
//!   throttled and do not start an interval;
//! - boot: while apps start (from `app_starting` until `app_connected`, and at least `boot`) the
//!   main view shows `"Starting <names>"`; app displays meanwhile are held latest-wins per app;
//!   when the last app finished booting the foreground app's held display is shown, else the
//!   newest held one, else the previous display if still valid, else a clear. A failed or
//!   stopped app leaves the boot at once;
//! - priority: the foreground app (the last non-system app started) owns the main view; any
//!   other app needs the lock, granted when no valid lock exists, held at most `lock` from its
//!   grant, released after `lock_inactive` without an update from its holder, and when the
//!   holder stops. While a background holder shows, the foreground app's requests are refused
//!   (the display is kept and comes back when the lock ends, if still valid); other background
//!   apps are refused. Refusals are returned to the caller, never dropped silently;
//! - expiry: `durationMs > 0` ends the display then, and the next eligible display (the lock
//!   holder's, else the foreground app's, if still valid) or a clear is shown. A display without
//!   duration is valid (restorable) for `min_lifetime` after it was shown; `durationMs: 0` never;
//! - restore: an app that stops or drops loses its displays; if one was on screen the next
//!   eligible display or a clear is shown at once;
//! - the dashboard and always-on views are apart from the main view: never throttled by it,
//!   never booted or locked (their own rules are in [`super::side`]).
//!
//! Invariants: `poll_timeout` is a pure function of the state and every deadline it returns is
//! handled by `handle_timeout` at that instant (after which it moves on: no livelock);
//! `handle_timeout` is idempotent; at most one held, one throttled and one kept display per app.

use std::sync::Arc;

use super::lists::LazyLists;
use super::side::SideTake;
use super::timing::{DisplayTimings, Kept, Lock};
use super::types::{
    replace, Accepted, AppId, Display, DisplayStats, Layout, Refusal, ScreenInfo, View,
};
use crate::time::Instant;

/// The display manager of one session. See the module documentation for its rules.
#[derive(Debug)]
pub struct DisplayManager {
    /// Shared by the sessions of a hub.
    t: Arc<DisplayTimings>,
    foreground: Option<AppId>,
    /// On the main view (the other views' are in the lists).
    main: Option<Kept>,
    /// When an app display was last sent on the main view (the throttle interval's start).
    last_main: Option<Instant>,
    /// The lists, allocated only while one of them holds something (see [`super::lists::Lists`]).
    l: LazyLists,
    pub stats: DisplayStats,
}

impl DisplayManager {
    pub fn new(t: DisplayTimings) -> DisplayManager {
        DisplayManager::shared(Arc::new(t))
    }

    /// A manager on timings shared with others.
    pub fn shared(t: Arc<DisplayTimings>) -> DisplayManager {
        DisplayManager {
            t,
            foreground: None,
            main: None,
            last_main: None,
            l: LazyLists::default(),
            stats: DisplayStats::default(),
        }
    }

    // ---- getters -------------------------------------------------------------------------

    /// What `view` shows now.
    pub fn screen(&self, view: View) -> Option<ScreenInfo> {
        self.kept(view).map(|k| ScreenInfo {
            owner: k.disp.owner,
            layout_type: k.disp.layout.kind(),
            since: k.since,
        })
    }

    /// The display on `view` now (to send again to glasses that reconnect).
    pub fn current(&self, view: View) -> Option<&Arc<Display>> {
        self.kept(view).map(|k| &k.disp)
    }

    pub fn foreground(&self) -> Option<AppId> {
        self.foreground
    }

    /// The app holding the main-view lock (valid or not yet released).
    pub fn lock_holder(&self) -> Option<AppId> {
        self.l.lock.map(|l| l.app)
    }

    pub fn is_booting(&self) -> bool {
        !self.l.booting.is_empty()
    }

    // ---- outputs -------------------------------------------------------------------------

    /// The next display to send to the glasses.
    pub fn poll_display(&mut self) -> Option<Arc<Display>> {
        self.l.pop_out()
    }

    /// Give back the room the lists grew to beyond what they hold, and the lists themselves
    /// when all are empty (call when nothing is due, e.g. after a boot: an app that shows
    /// nothing then costs its session no list at all).
    pub fn release_spare(&mut self) {
        self.l.release_spare();
    }

    /// Bytes held by the lists beyond the entries in them: the box of empty lists, and their
    /// spare capacity (in entries).
    pub fn spare(&self) -> usize {
        self.l.spare()
    }

    /// The next instant `handle_timeout` has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut at = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some(l) = self.l.lock {
            at(l.deadline(self.t.lock_inactive));
        }
        for until in self.l.booting.deadlines() {
            at(until);
        }
        if let Some(e) = self.main.as_ref().and_then(|k| k.expires) {
            at(e);
        }
        if !self.l.pending.is_empty() && self.l.booting.is_empty() {
            at(self
                .last_main
                .map_or(Instant::ZERO, |t| t + self.t.throttle));
        }
        for t in self.l.side.deadlines(self.t.throttle) {
            at(t);
        }
        next
    }

    // ---- inputs --------------------------------------------------------------------------

    /// A display request. The caller has checked the layout (type and size).
    pub fn request(&mut self, now: Instant, d: Display) -> Result<Accepted, Refusal> {
        let d = Arc::new(d);
        let result = match d.view {
            View::Main => self.request_main(now, d),
            View::Dashboard | View::AlwaysOn => Ok(self.request_side(now, d)),
        };
        if result.is_err() {
            self.stats.refused += 1;
        }
        result
    }

    /// `app` is starting: the boot card shows until it connected and at least `boot` passed.
    /// `foreground`: it becomes the app that owns the main view.
    pub fn app_starting(&mut self, now: Instant, app: AppId, name: &str, foreground: bool) {
        if foreground {
            self.foreground = Some(app);
        }
        self.l.booting.start(app, name, now + self.t.boot);
        // Throttled displays now wait for the boot instead.
        for d in std::mem::take(&mut self.l.pending) {
            self.l.booting.hold(d);
        }
        self.show_boot_card(now);
    }

    /// `app` connected: its boot ends once `boot` has passed since it started.
    pub fn app_connected(&mut self, now: Instant, app: AppId) {
        self.l.booting.connected(app);
        self.handle_timeout(now);
    }

    /// `app` stopped, dropped or failed to start: its displays go; what it showed is replaced
    /// at once by the next eligible display or a clear.
    pub fn app_stopped(&mut self, now: Instant, app: AppId) {
        let boot_changed = self.l.booting.stop(app);
        self.l.pending.retain(|d| d.app() != Some(app));
        self.l.side.stop(app);
        self.l.latest.retain(|(a, _)| *a != app);
        if self.l.lock.is_some_and(|l| l.app == app) {
            self.l.lock = None;
        }
        if self.foreground == Some(app) {
            self.foreground = None;
        }
        let showing = self.showing(View::Main) == Some(app);
        if boot_changed && !self.l.booting.is_empty() {
            self.show_boot_card(now);
        } else if boot_changed {
            self.finish_boot(now);
        } else if showing {
            self.show_next(now);
        }
    }

    /// Do whatever is due at `now` (idempotent; spurious calls are harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        // Bounded: each pass retires at least one deadline or stops.
        for _ in 0..64 {
            if !self.step(now) {
                return;
            }
        }
    }

    // ---- internals -----------------------------------------------------------------------

    /// One due deadline handled; false when nothing was due.
    fn step(&mut self, now: Instant) -> bool {
        let inactive = self.t.lock_inactive;
        if let Some(l) = self.l.lock.filter(|l| !l.valid(now, inactive)) {
            self.l.lock = None;
            if self.l.booting.is_empty() && self.showing(View::Main) == Some(l.app) {
                // The view goes back to the foreground app if it has something to show; the
                // holder's display stays only while it is itself still valid.
                let min = self.t.min_lifetime;
                let fg = self
                    .foreground
                    .and_then(|f| self.latest_of(f))
                    .filter(|k| k.valid(now, min))
                    .cloned();
                let holder_valid = self.main.as_ref().is_some_and(|k| k.valid(now, min));
                match fg {
                    Some(k) => self.show_kept(now, k),
                    None if !holder_valid => self.show_next(now),
                    None => {}
                }
            }
            return true;
        }
        if self.l.booting.retire(now) {
            if self.l.booting.is_empty() {
                self.finish_boot(now);
            } else {
                self.show_boot_card(now);
            }
            return true;
        }
        if let Some(k) = self.main.as_mut() {
            if k.expires.is_some_and(|e| e <= now) {
                k.expires = None;
                self.stats.expired += 1;
                let app = k.disp.app();
                // Expired: no longer restorable.
                if let Some(a) = app {
                    self.l.latest.retain(|(x, _)| *x != a);
                }
                if self.l.booting.is_empty() {
                    self.show_next(now);
                }
                return true;
            }
        }
        if !self.l.pending.is_empty() && self.l.booting.is_empty() && self.throttle_open(now) {
            self.release_pending(now);
            return true;
        }
        if let Some(d) = self.l.side.pop_due(now, self.t.throttle) {
            self.show_side(now, d);
            return true;
        }
        false
    }

    fn request_main(&mut self, now: Instant, d: Arc<Display>) -> Result<Accepted, Refusal> {
        let Some(app) = d.app() else {
            self.show_main(now, d);
            return Ok(Accepted::Shown);
        };
        if !self.l.booting.is_empty() {
            self.l.booting.hold(d);
            return Ok(Accepted::HeldForBoot);
        }
        self.step_lock(now);
        self.admit(now, app).inspect_err(|e| {
            if matches!(e, Refusal::ForegroundLocked { .. }) {
                self.keep(app, Kept::new(d.clone(), now));
            }
        })?;
        self.keep(app, Kept::new(d.clone(), now));
        if !d.force && self.last_main.is_some_and(|t| now < t + self.t.throttle) {
            if replace(&mut self.l.pending, d) {
                self.stats.coalesced += 1;
            }
            return Ok(Accepted::Coalesced);
        }
        self.show_main(now, d);
        Ok(Accepted::Shown)
    }

    /// Release a lock that is no longer valid (without changing the screen: the caller is about
    /// to).
    fn step_lock(&mut self, now: Instant) {
        if self
            .l
            .lock
            .is_some_and(|l| !l.valid(now, self.t.lock_inactive))
        {
            self.l.lock = None;
        }
    }

    /// May `app` take the main view now? Grants or refreshes a background app's lock.
    fn admit(&mut self, now: Instant, app: AppId) -> Result<(), Refusal> {
        let lock = self.l.lock;
        if self.foreground == Some(app) {
            if let Some(l) = lock {
                if self.showing(View::Main) == Some(l.app) {
                    return Err(Refusal::ForegroundLocked { holder: l.app });
                }
                // The holder no longer shows: the foreground app takes the view back.
                self.l.lock = None;
            }
            return Ok(());
        }
        match lock {
            Some(l) if l.app != app => Err(Refusal::LockedByOther { holder: l.app }),
            Some(mut l) => {
                l.last_active = now;
                self.l.lock = Some(l);
                Ok(())
            }
            None => {
                self.l.lock = Some(Lock {
                    app,
                    until: now + self.t.lock,
                    last_active: now,
                });
                Ok(())
            }
        }
    }

    /// Whether `app` may show on the main view now without being granted anything new.
    fn eligible(&self, now: Instant, app: AppId) -> bool {
        let lock = self.l.lock.filter(|l| l.valid(now, self.t.lock_inactive));
        match lock {
            Some(l) => l.app == app || self.foreground == Some(app),
            None => true,
        }
    }

    fn release_pending(&mut self, now: Instant) {
        // The lock holder's first, then the foreground app's, then the oldest.
        let pick = |who: Option<AppId>, p: &[Arc<Display>]| {
            who.and_then(|w| p.iter().position(|d| d.app() == Some(w)))
        };
        let holder = self
            .l
            .lock
            .filter(|l| l.valid(now, self.t.lock_inactive))
            .map(|l| l.app);
        let i = pick(holder, &self.l.pending)
            .or_else(|| pick(self.foreground, &self.l.pending))
            .unwrap_or(0);
        let d = self.l.pending.remove(i);
        match d.app() {
            Some(a) if !self.eligible(now, a) => {
                // It lost the view while it waited (another app's lock): kept, not shown.
                self.stats.refused += 1;
            }
            _ => self.show_main(now, d),
        }
    }

    fn finish_boot(&mut self, now: Instant) {
        let held = self.l.booting.take_held();
        // Every held display becomes its app's latest; the foreground app's is shown, else
        // the newest from an app that may take the view, else whatever is next.
        let mut chosen: Option<Arc<Display>> = None;
        for d in &held {
            if let Some(a) = d.app() {
                self.keep(a, Kept::new(d.clone(), now));
            }
        }
        if let Some(fg) = self.foreground {
            chosen = held.iter().find(|d| d.app() == Some(fg)).cloned();
        }
        if chosen.is_none() {
            chosen = held
                .iter()
                .rev()
                .find(|d| d.app().is_some_and(|a| self.admit(now, a).is_ok()))
                .cloned();
        }
        match chosen {
            // The throttle interval of an app display sent before this boot still runs: this
            // one waits for its end like any other (the boot card stays until then).
            Some(d) if !d.force && !self.throttle_open(now) => {
                replace(&mut self.l.pending, d);
            }
            Some(d) => self.show_main(now, d),
            None => self.show_next(now),
        }
    }

    /// No app display was sent on the main view within the last `throttle`.
    fn throttle_open(&self, now: Instant) -> bool {
        self.last_main.is_none_or(|t| t + self.t.throttle <= now)
    }

    /// Show the next eligible display on the main view, or a clear.
    fn show_next(&mut self, now: Instant) {
        if !self.l.booting.is_empty() {
            return self.show_boot_card(now);
        }
        let min = self.t.min_lifetime;
        // A throttled display waits for the end of its interval, even when the view frees up.
        if let Some(i) = self
            .l
            .pending
            .iter()
            .position(|d| d.app().is_some_and(|a| self.eligible(now, a)))
            .filter(|_| self.throttle_open(now))
        {
            let d = self.l.pending.remove(i);
            return self.show_main(now, d);
        }
        let holder = self
            .l
            .lock
            .filter(|l| l.valid(now, self.t.lock_inactive))
            .map(|l| l.app);
        for who in [holder, self.foreground].into_iter().flatten() {
            if let Some(k) = self.latest_of(who).filter(|k| k.valid(now, min)).cloned() {
                return self.show_kept(now, k);
            }
        }
        let already_clear = self
            .main
            .as_ref()
            .is_some_and(|k| matches!(k.disp.layout, Layout::Clear));
        if !already_clear {
            self.show_main(now, Display::clear());
        }
    }

    fn show_boot_card(&mut self, now: Instant) {
        let d = self.l.booting.card();
        self.show_main(now, Arc::new(d));
    }

    /// Send `d` on the main view now.
    fn show_main(&mut self, now: Instant, d: Arc<Display>) {
        self.show_kept(now, Kept::new(d, now));
    }

    /// Send a kept display again (its expiry unchanged) or a new one.
    fn show_kept(&mut self, now: Instant, mut k: Kept) {
        k.since = now;
        if let Some(a) = k.disp.app() {
            self.last_main = Some(now);
            // Anything older from the same app would be stale after this.
            self.l.pending.retain(|p| p.app() != Some(a));
            self.keep(a, k.clone());
        }
        self.stats.sent += 1;
        self.l.out.push_back(k.disp.clone());
        self.main = Some(k);
    }

    fn request_side(&mut self, now: Instant, d: Arc<Display>) -> Accepted {
        match self.l.side.request(now, d, self.t.throttle) {
            SideTake::Now(d) => {
                self.show_side(now, d);
                Accepted::Shown
            }
            SideTake::Coalesced { replaced } => {
                if replaced {
                    self.stats.coalesced += 1;
                }
                Accepted::Coalesced
            }
        }
    }

    fn show_side(&mut self, now: Instant, d: Arc<Display>) {
        self.stats.sent += 1;
        self.l.out.push_back(d.clone());
        self.l.side.show(now, d);
    }

    /// What `view` shows.
    fn kept(&self, view: View) -> Option<&Kept> {
        match view {
            View::Main => self.main.as_ref(),
            v => self.l.side.kept(v),
        }
    }

    fn showing(&self, view: View) -> Option<AppId> {
        self.kept(view).and_then(|k| k.disp.app())
    }

    fn latest_of(&self, app: AppId) -> Option<&Kept> {
        self.l
            .latest
            .iter()
            .find(|(a, _)| *a == app)
            .map(|(_, k)| k)
    }

    fn keep(&mut self, app: AppId, k: Kept) {
        match self.l.latest.iter_mut().find(|(a, _)| *a == app) {
            Some(slot) => slot.1 = k,
            None => self.l.latest.push((app, k)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DisplayManager;
    use crate::hub::display::timing::DisplayTimings;
    use crate::hub::display::types::{Accepted, AppId, Display, Layout, Owner, Refusal, View};
    use crate::time::Instant;
    use serde_json::value::RawValue;

    const FG: AppId = 1;
    const BG: AppId = 2;
    const BG2: AppId = 3;

    fn ms(n: u64) -> Instant {
        Instant::from_micros(n * 1000)
    }

    fn text(app: AppId, view: View, s: &str, duration_ms: Option<u64>) -> Display {
        let json = RawValue::from_string(
            serde_json::json!({"layoutType": "text_wall", "text": s}).to_string(),
        )
        .unwrap();
        Display {
            owner: Owner::App(app),
            view,
            layout: Layout::Raw {
                json,
                kind: "text_wall",
            },
            duration_ms,
            force: false,
        }
    }

    /// What was sent, as short labels: the text of a text wall, `boot:<names>`, `clear`.
    fn label(d: &Display) -> String {
        match &d.layout {
            Layout::Raw { json, .. } => {
                let v: serde_json::Value = serde_json::from_str(json.get()).unwrap();
                v["text"].as_str().unwrap_or("?").to_string()
            }
            Layout::Boot { names, .. } => format!("boot:{names}"),
            Layout::Clear => "clear".into(),
        }
    }

    /// A virtual clock driving one manager, stepping deadline by deadline.
    struct Sim {
        m: DisplayManager,
        now: Instant,
        sent: Vec<(u64, String)>,
    }

    impl Sim {
        fn new() -> Sim {
            let mut m = DisplayManager::new(DisplayTimings::default());
            // FG is the foreground app, booted and connected long ago.
            m.app_starting(Instant::ZERO, FG, "Fg", true);
            m.app_connected(Instant::ZERO, FG);
            let mut s = Sim {
                m,
                now: Instant::ZERO,
                sent: Vec::new(),
            };
            s.advance_to(10_000);
            s.sent.clear();
            s
        }

        fn drain(&mut self) {
            while let Some(d) = self.m.poll_display() {
                self.sent.push((self.now.as_micros() / 1000, label(&d)));
            }
        }

        /// Move to `t` ms, waking at each deadline on the way.
        fn advance_to(&mut self, t: u64) {
            let until = ms(t);
            for _ in 0..10_000 {
                match self.m.poll_timeout() {
                    Some(at) if at <= until => {
                        assert!(at >= self.now, "a deadline in the past: {at:?}");
                        self.now = at;
                        self.m.handle_timeout(at);
                        self.drain();
                    }
                    _ => {
                        self.now = until;
                        self.drain();
                        return;
                    }
                }
            }
            panic!("livelock");
        }

        fn show(&mut self, app: AppId, s: &str, dur: Option<u64>) -> Result<Accepted, Refusal> {
            let r = self.m.request(self.now, text(app, View::Main, s, dur));
            self.drain();
            r
        }

        fn labels(&self) -> Vec<&str> {
            self.sent.iter().map(|(_, l)| l.as_str()).collect()
        }
    }

    #[test]
    fn throttle_sends_the_first_and_the_newest() {
        let mut s = Sim::new();
        for i in 0..10 {
            let t = 10_000 + i * 30;
            s.advance_to(t);
            s.show(FG, &format!("u{i}"), None).unwrap();
        }
        s.advance_to(11_000);
        assert_eq!(s.labels(), ["u0", "u9"]);
        assert_eq!(s.sent[1].0, 10_300, "the newest at the end of the interval");
        assert_eq!(s.m.stats.coalesced, 8);
    }

    #[test]
    fn force_display_bypasses_the_throttle() {
        let mut s = Sim::new();
        s.show(FG, "a", None).unwrap();
        let mut d = text(FG, View::Main, "b", None);
        d.force = true;
        assert_eq!(s.m.request(s.now, d), Ok(Accepted::Shown));
        s.drain();
        assert_eq!(s.labels(), ["a", "b"]);
    }

    #[test]
    fn boot_card_holds_displays_until_connected_and_boot_time() {
        let mut s = Sim::new();
        s.m.app_starting(s.now, 7, "Notes", true);
        s.drain();
        assert_eq!(s.labels(), ["boot:Notes"]);
        assert_eq!(s.show(7, "n1", None), Ok(Accepted::HeldForBoot));
        assert_eq!(s.show(7, "n2", None), Ok(Accepted::HeldForBoot));
        s.advance_to(12_000);
        assert_eq!(
            s.labels(),
            ["boot:Notes"],
            "not connected yet: still booting"
        );
        s.m.app_connected(s.now, 7);
        s.drain();
        assert_eq!(s.labels(), ["boot:Notes", "n2"]);
    }

    /// Found by the whole-core fuzz target: a boot that ended at once (the starting app
    /// stopped) showed the display held during it right after another app display, inside the
    /// throttle interval.
    #[test]
    fn a_display_held_for_a_boot_still_waits_for_the_throttle() {
        let mut s = Sim::new();
        s.show(FG, "a", None).unwrap();
        s.m.app_starting(s.now, 7, "Notes", false);
        s.drain();
        assert_eq!(s.show(FG, "b", None), Ok(Accepted::HeldForBoot));
        s.advance_to(10_010);
        s.m.app_stopped(s.now, 7);
        s.drain();
        s.advance_to(11_000);
        assert_eq!(s.labels(), ["a", "boot:Notes", "b"]);
        assert_eq!(s.sent[2].0, 10_300, "b at the end of a's interval");
    }

    #[test]
    fn boot_lasts_at_least_the_boot_duration() {
        let mut s = Sim::new();
        s.m.app_starting(s.now, 7, "Notes", true);
        s.m.app_connected(s.now, 7);
        s.advance_to(11_499);
        assert_eq!(s.labels(), ["boot:Notes"]);
        s.advance_to(11_500);
        // Nothing held, FG's old display long invalid: a clear.
        assert_eq!(s.labels(), ["boot:Notes", "clear"]);
    }

    #[test]
    fn failed_start_clears_the_boot_card() {
        let mut s = Sim::new();
        s.show(FG, "fg", Some(60_000)).unwrap();
        s.m.app_starting(s.now, 7, "Notes", false);
        s.advance_to(10_100);
        s.m.app_stopped(s.now, 7);
        s.drain();
        assert_eq!(s.labels(), ["fg", "boot:Notes", "fg"]);
    }

    #[test]
    fn background_lock_is_granted_refused_and_released_when_inactive() {
        let mut s = Sim::new();
        assert_eq!(s.show(BG, "bg", None), Ok(Accepted::Shown));
        assert_eq!(s.m.lock_holder(), Some(BG));
        s.advance_to(10_500);
        assert_eq!(
            s.show(BG2, "other", None),
            Err(Refusal::LockedByOther { holder: BG })
        );
        assert_eq!(
            s.show(FG, "fg", Some(5_000)),
            Err(Refusal::ForegroundLocked { holder: BG })
        );
        // No update from BG for 2 s: released, FG's kept display comes back.
        s.advance_to(11_999);
        assert_eq!(s.labels(), ["bg"]);
        s.advance_to(12_000);
        assert_eq!(s.m.lock_holder(), None);
        assert_eq!(s.labels(), ["bg", "fg"]);
    }

    /// When the view is given back (here by a boot that ended at once) while a background app
    /// holds the lock, the holder's display comes back, not the foreground app's, though both
    /// are still valid. The random scenarios never reached this order; a swap of it went unseen.
    #[test]
    fn a_view_given_back_goes_to_the_lock_holder_before_the_foreground_app() {
        let mut s = Sim::new();
        s.show(FG, "fg", Some(60_000)).unwrap();
        s.advance_to(10_400);
        assert_eq!(s.show(BG, "bg", Some(60_000)), Ok(Accepted::Shown));
        assert_eq!(s.m.lock_holder(), Some(BG));
        s.advance_to(10_500);
        s.m.app_starting(s.now, 7, "Sys", false);
        s.drain();
        s.advance_to(10_600);
        s.m.app_stopped(s.now, 7);
        s.drain();
        assert_eq!(s.labels(), ["fg", "bg", "boot:Sys", "bg"]);
    }

    #[test]
    fn background_lock_expires_after_its_lifetime() {
        let mut s = Sim::new();
        s.show(BG, "bg0", None).unwrap();
        for i in 1..=12 {
            s.advance_to(10_000 + i * 1_000);
            let _ = s.show(BG, &format!("bg{i}"), None);
        }
        // Granted at 10 s, so it ended at 20 s; at 21 s BG took a new one (no lock existed).
        let at_20 = s.sent.iter().position(|(t, _)| *t == 20_000).unwrap();
        assert_eq!(s.sent[at_20].1, "clear", "{:?}", s.sent);
        assert_eq!(s.m.lock_holder(), Some(BG));
    }

    #[test]
    fn duration_expiry_falls_back_to_the_foreground_display() {
        let mut s = Sim::new();
        s.show(FG, "fg", Some(60_000)).unwrap();
        s.advance_to(11_000);
        s.show(BG, "note", Some(1_500)).unwrap();
        s.advance_to(12_499);
        assert_eq!(s.labels(), ["fg", "note"]);
        s.advance_to(12_500);
        assert_eq!(s.labels(), ["fg", "note", "fg"]);
        assert_eq!(s.m.stats.expired, 1);
    }

    #[test]
    fn a_display_without_duration_is_restorable_only_for_the_minimum_lifetime() {
        let mut s = Sim::new();
        s.show(FG, "fg", None).unwrap();
        s.advance_to(10_500);
        s.show(BG, "note", Some(1_000)).unwrap();
        s.advance_to(12_000);
        assert_eq!(s.labels(), ["fg", "note", "clear"]);
    }

    #[test]
    fn app_stop_restores_the_previous_display_at_once() {
        let mut s = Sim::new();
        s.show(FG, "fg", Some(60_000)).unwrap();
        s.advance_to(10_400);
        s.show(BG, "bg", None).unwrap();
        s.advance_to(10_500);
        s.m.app_stopped(s.now, BG);
        s.drain();
        assert_eq!(s.sent.last().unwrap(), &(10_500, "fg".to_string()));
        assert_eq!(s.m.lock_holder(), None);
        s.m.app_stopped(s.now, FG);
        s.drain();
        assert_eq!(s.labels(), ["fg", "bg", "fg", "clear"]);
    }

    #[test]
    fn dashboard_is_not_throttled_by_the_main_view() {
        let mut s = Sim::new();
        s.show(FG, "m1", None).unwrap();
        s.show(FG, "m2", None).unwrap();
        let r = s.m.request(s.now, text(BG, View::Dashboard, "d1", None));
        assert_eq!(r, Ok(Accepted::Shown));
        s.drain();
        assert_eq!(s.labels(), ["m1", "d1"]);
        assert_eq!(
            s.m.screen(View::Dashboard).map(|i| i.owner),
            Some(Owner::App(BG))
        );
        assert_eq!(
            s.m.screen(View::Main).map(|i| i.owner),
            Some(Owner::App(FG))
        );
    }

    #[test]
    fn one_app_flooding_the_dashboard_does_not_crowd_out_another() {
        let mut s = Sim::new();
        for i in 0..50 {
            s.advance_to(10_000 + i * 10);
            let _ =
                s.m.request(s.now, text(BG, View::Dashboard, &format!("f{i}"), None));
            s.drain();
        }
        let r = s.m.request(s.now, text(BG2, View::Dashboard, "mine", None));
        assert_eq!(r, Ok(Accepted::Shown));
        s.drain();
        assert_eq!(s.sent.last().unwrap().1, "mine");
    }

    #[test]
    fn deadlines_never_lie_in_the_past_and_are_retired() {
        let mut s = Sim::new();
        s.show(FG, "a", Some(500)).unwrap();
        s.show(FG, "b", Some(500)).unwrap();
        s.show(BG, "c", None).unwrap();
        s.advance_to(30_000);
        assert_eq!(s.m.poll_timeout(), None, "{:?}", s.m);
    }
}
