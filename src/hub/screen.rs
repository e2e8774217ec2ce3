//! Core layer (sans-IO), part of the hub: the glue between a session and its screens — the
//! display manager ([`super::display`]) and the dashboard ([`super::dashboard`]).
//!
//! Owns each session's [`Screen`] and the hub side of it: app `display_event`s and dashboard
//! messages are checked (layout type, size, who may change the dashboard) and fed to the
//! manager; lifecycle events (start, connected, failed, stopped, dropped) feed it too; what it
//! polls is sent to the glasses as `display_event`; its deadline is the session's one
//! `TimerKey::Display` slot. In test and `sim` builds each screen also keeps a trace of the
//! main-view inputs as hub-owned [`DisplayInput`] values, for an observer to take
//! ([`Hub::take_display_trace`]); the hub never names who reads them.
//!
//! Invariants: every input to the manager is followed by [`Hub::screen_flush`], which sends
//! all it polled and re-arms the slot if the deadline moved, so no output waits and no
//! deadline is lost; a request the manager refuses is answered to the app with a
//! `tpa_connection_error` (`DISPLAY_REFUSED`, `LAYOUT_TOO_LARGE`, `INVALID_LAYOUT`) and
//! counted in `counters.refusals`, never dropped silently.

use super::apps::AppCtx;
use super::dashboard::{Dashboard, Mode, SECTIONS};
use super::display::{
    Accepted, Display, DisplayManager, DisplayStats, DisplayTimings, Layout, Owner, View,
    LAYOUT_TYPES,
};
use super::{registry, AppState, Hub, SessKey, Session, TimerKey};
use crate::net::{ConnId, Outbox};
use crate::protocol::inbound::{
    self, DashboardAlwaysOnChange, DashboardContentUpdate, DashboardModeChange,
    DashboardSystemUpdate, DisplayRequest,
};
use crate::protocol::message::DashboardMsg;
use crate::protocol::outbound as messages;
use crate::protocol::outbound::{DashboardAlwaysOn, DashboardMode, DisplayEvent, LayoutOut};
use crate::time::{Instant, Now};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::sync::Arc;

/// The package the box's own displays carry (boot card, clear, composed dashboard), as the
/// cloud's dashboard app does.
pub const SYSTEM_PACKAGE: &str = "system.augmentos.dashboard";

/// Boot card title (PROTOCOL §16.6).
const BOOT_TITLE: [&str; 2] = [
    "// AugmentOS - Starting App",
    "// AugmentOS - Starting Apps",
];

/// One session's screens.
#[derive(Debug)]
pub(super) struct Screen {
    pub display: DisplayManager,
    /// Made when something changes it (most sessions never do): read through
    /// [`Screen::dashboard`], written through [`Screen::dashboard_mut`].
    dashboard: Option<Box<Dashboard>>,
    /// The deadline last pushed to the hub's timer heap for this session.
    armed: Option<Instant>,
    /// Every main-view input fed to the manager, for an observer that checks the rules
    /// (the simulation's reference model takes them with [`Hub::take_display_trace`]).
    #[cfg(any(test, feature = "sim"))]
    pub trace: Vec<(Instant, DisplayInput)>,
}

/// One main-view input fed to a session's display manager, as recorded in its trace (test
/// and `sim` builds only). The hub names no observer: whoever checks the display rules takes
/// these values and reads them its own way.
#[cfg(any(test, feature = "sim"))]
#[derive(Debug, Clone)]
pub enum DisplayInput {
    /// A user app starts (or restarts).
    Starting(usize),
    /// An app connected.
    Connected(usize),
    /// An app stopped, dropped or failed.
    Gone(usize),
    /// A main-view display request from app `app`, as the manager was given it.
    Request { app: usize, display: Display },
}

/// A session's screens, made the first time something is shown or changed: an idle session
/// (glasses connected, no app) holds only the timings to make them with. Reading an unmade
/// one reads an empty screen.
#[derive(Debug)]
pub(super) struct LazyScreen {
    /// The hub's timings, shared by every session (not a copy each).
    timings: Arc<DisplayTimings>,
    inner: Option<Box<Screen>>,
}

impl LazyScreen {
    pub fn new(t: &Arc<DisplayTimings>) -> LazyScreen {
        LazyScreen {
            timings: t.clone(),
            inner: None,
        }
    }

    pub fn is_made(&self) -> bool {
        self.inner.is_some()
    }
}

impl std::ops::Deref for LazyScreen {
    type Target = Screen;
    fn deref(&self) -> &Screen {
        static EMPTY: std::sync::OnceLock<Screen> = std::sync::OnceLock::new();
        match &self.inner {
            Some(s) => s,
            None => EMPTY.get_or_init(|| Screen::new(&Arc::default())),
        }
    }
}

impl std::ops::DerefMut for LazyScreen {
    fn deref_mut(&mut self) -> &mut Screen {
        let t = &self.timings;
        self.inner.get_or_insert_with(|| Box::new(Screen::new(t)))
    }
}

impl Screen {
    pub fn new(t: &Arc<DisplayTimings>) -> Screen {
        Screen {
            display: DisplayManager::shared(t.clone()),
            dashboard: None,
            armed: None,
            #[cfg(any(test, feature = "sim"))]
            trace: Vec::new(),
        }
    }

    pub fn dashboard(&self) -> &Dashboard {
        static DEFAULT: std::sync::OnceLock<Dashboard> = std::sync::OnceLock::new();
        match &self.dashboard {
            Some(d) => d,
            None => DEFAULT.get_or_init(Dashboard::default),
        }
    }

    pub fn dashboard_mut(&mut self) -> &mut Dashboard {
        self.dashboard.get_or_insert_with(Box::default)
    }

    /// The authoritative deadline of the session's `TimerKey::Display` slot.
    pub fn deadline(&self) -> Option<Instant> {
        self.display.poll_timeout()
    }
}

/// What one view of a session shows, for operators (the `/ui/` feed).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScreenView {
    pub view: &'static str,
    pub layout_type: &'static str,
    pub package_name: String,
    /// Milliseconds it has been on screen.
    pub for_ms: u64,
    /// The layout object the glasses were sent.
    pub layout: Value,
}

impl Hub {
    /// Display counters summed over every session, ended ones included, for `/metrics`.
    pub fn display_stats(&self) -> DisplayStats {
        let mut t = self.counters.display_retired;
        for (_, s) in &self.sessions {
            let st = s.screen.display.stats;
            t.sent += st.sent;
            t.coalesced += st.coalesced;
            t.refused += st.refused;
            t.expired += st.expired;
        }
        t
    }

    /// Keep the display counters of a session that is about to end.
    pub(super) fn retire_display_stats(&mut self, sk: SessKey) {
        let Some(st) = self.session(sk).map(|s| s.screen.display.stats) else {
            return;
        };
        let t = &mut self.counters.display_retired;
        t.sent += st.sent;
        t.coalesced += st.coalesced;
        t.refused += st.refused;
        t.expired += st.expired;
    }

    /// What each view of `user`'s session shows now.
    pub fn screens(&self, user: &str, now: Instant) -> Vec<ScreenView> {
        let Some(s) = self.sessions.by_user(user).and_then(|sk| self.session(sk)) else {
            return Vec::new();
        };
        View::ALL
            .iter()
            .filter_map(|&v| {
                let i = s.screen.display.screen(v)?;
                let layout = s.screen.display.current(v).map(|d| layout_out(d));
                Some(ScreenView {
                    view: v.as_str(),
                    layout_type: i.layout_type,
                    package_name: self.owner_package(i.owner).to_string(),
                    for_ms: now.saturating_since(i.since).as_millis() as u64,
                    layout: serde_json::to_value(layout).unwrap_or(Value::Null),
                })
            })
            .collect()
    }

    /// The main-view inputs fed to `user`'s display manager since the last call (`None`: no
    /// session), for the simulation's reference model.
    #[cfg(any(test, feature = "sim"))]
    pub fn take_display_trace(&mut self, user: &str) -> Option<Vec<(Instant, DisplayInput)>> {
        let sk = self.sessions.by_user(user)?;
        let s = self.session_mut(sk)?;
        if !s.screen.is_made() {
            return Some(Vec::new());
        }
        Some(std::mem::take(&mut s.screen.trace))
    }

    fn owner_package(&self, owner: Owner) -> &str {
        match owner {
            Owner::App(a) => &self.cfg.apps[a].package_name,
            Owner::System => SYSTEM_PACKAGE,
        }
    }

    /// An app's `display_event`: checked, then handed to the session's display manager.
    pub(super) fn app_display(&mut self, net: &mut impl Outbox, cx: AppCtx, text: &str) {
        let AppCtx { id, sk, app, now } = cx;
        let Some(req) = inbound::decode::<DisplayRequest<'_>>(text) else {
            return self.display_refused(
                net,
                id,
                "INVALID_LAYOUT",
                "display_event needs a layout object",
                json!({}),
                now,
            );
        };
        let max = self.cfg.max_layout_bytes;
        let size = req.layout.get().len();
        if size > max {
            return self.display_refused(
                net,
                id,
                "LAYOUT_TOO_LARGE",
                "the layout is larger than this box accepts",
                json!({ "size": size, "maxBytes": max }),
                now,
            );
        }
        let kind = req
            .layout_type()
            .and_then(|t| LAYOUT_TYPES.iter().copied().find(|k| *k == t));
        let Some(kind) = kind else {
            let got = req.layout_type().map(|t| t.into_owned());
            return self.display_refused(
                net,
                id,
                "INVALID_LAYOUT",
                "unknown or missing layoutType",
                json!({ "layoutType": got, "known": LAYOUT_TYPES }),
                now,
            );
        };
        let view = View::parse(req.view.as_deref().unwrap_or("main"));
        let d = Display {
            owner: Owner::App(app),
            view,
            layout: Layout::Raw {
                json: req.layout.to_owned(),
                kind,
            },
            duration_ms: req.duration_ms(),
            force: req.force(),
        };
        let Some(s) = self.session_mut(sk) else {
            return;
        };
        #[cfg(any(test, feature = "sim"))]
        if view == View::Main {
            s.screen.trace.push((
                now.mono,
                DisplayInput::Request {
                    app,
                    display: d.clone(),
                },
            ));
        }
        match s.screen.display.request(now.mono, d) {
            Ok(Accepted::Shown | Accepted::Coalesced | Accepted::HeldForBoot) => {}
            Err(r) => {
                let holder = self.cfg.apps[r.holder()].package_name.clone();
                self.display_refused(
                    net,
                    id,
                    "DISPLAY_REFUSED",
                    r.message(),
                    json!({ "reason": r.reason(), "view": view.as_str(), "holder": holder }),
                    now,
                );
            }
        }
        self.screen_flush(net, sk, now);
    }

    fn display_refused(
        &mut self,
        net: &mut impl Outbox,
        id: ConnId,
        code: &'static str,
        message: &str,
        details: Value,
        now: Now,
    ) {
        self.refused(code);
        net.send_json(id, &messages::tpa_error(code, message, details, now.iso()));
    }

    /// `dashboard_content_update`, `dashboard_mode_change`, `dashboard_system_update` and
    /// `dashboard_always_on_change`. The last three only from system apps.
    pub(super) fn app_dashboard(
        &mut self,
        net: &mut impl Outbox,
        cx: AppCtx,
        msg: DashboardMsg,
        text: &str,
    ) {
        let AppCtx { id, sk, app, now } = cx;
        let system = self.cfg.apps[app].is_system_app;
        if msg != DashboardMsg::ContentUpdate && !system {
            return self.display_refused(
                net,
                id,
                "DASHBOARD_REFUSED",
                "only system apps may change the dashboard's mode or system sections",
                json!({ "type": msg.name() }),
                now,
            );
        }
        let malformed = |hub: &mut Hub, net: &mut _| {
            hub.app_error(net, id, "MALFORMED_MESSAGE", "missing or bad fields", now)
        };
        let Some(s) = self.session_mut(sk) else {
            return;
        };
        let dash = s.screen.dashboard_mut();
        let (mut recompose, mut mode_changed, mut always_on_changed) = (false, false, false);
        match msg {
            DashboardMsg::ContentUpdate => {
                let Some(m) = inbound::decode::<DashboardContentUpdate<'_>>(text) else {
                    return malformed(self, net);
                };
                let mut modes: Vec<Mode> = m.modes.iter().filter_map(|x| Mode::parse(x)).collect();
                if m.modes.is_empty() {
                    modes.push(Mode::Main);
                }
                dash.content_update(app, &m.content, &modes);
                recompose = true;
            }
            DashboardMsg::ModeChange => {
                let Some(mode) = inbound::decode::<DashboardModeChange<'_>>(text)
                    .and_then(|m| Mode::parse(&m.mode))
                else {
                    return malformed(self, net);
                };
                mode_changed = dash.set_mode(mode);
                recompose = mode_changed;
            }
            DashboardMsg::SystemUpdate => {
                let Some(m) = inbound::decode::<DashboardSystemUpdate<'_>>(text) else {
                    return malformed(self, net);
                };
                if !dash.system_update(&m.section, &m.content) {
                    return self.display_refused(
                        net,
                        id,
                        "INVALID_SECTION",
                        "unknown dashboard section",
                        json!({ "known": SECTIONS }),
                        now,
                    );
                }
                recompose = true;
            }
            DashboardMsg::AlwaysOnChange => {
                let Some(m) = inbound::decode::<DashboardAlwaysOnChange>(text) else {
                    return malformed(self, net);
                };
                always_on_changed = dash.set_always_on(m.enabled);
            }
        }
        if recompose {
            self.dashboard_show(sk, now);
        }
        if always_on_changed
            || recompose
                && self
                    .session(sk)
                    .is_some_and(|s| s.screen.dashboard().always_on())
        {
            self.always_on_show(sk, now);
        }
        if mode_changed {
            self.dashboard_broadcast(net, sk, true, now);
        }
        if always_on_changed {
            self.dashboard_broadcast(net, sk, false, now);
        }
        self.screen_flush(net, sk, now);
    }

    /// Hand the composed dashboard to the manager's dashboard view.
    fn dashboard_show(&mut self, sk: SessKey, now: Now) {
        let Some(s) = self.session_mut(sk) else {
            return;
        };
        let layout = s.screen.dashboard().compose();
        let kind = match s.screen.dashboard().mode() {
            Mode::Main => "double_text_wall",
            Mode::Expanded => "text_wall",
        };
        system_display(s, View::Dashboard, layout, kind, None, now.mono);
    }

    fn always_on_show(&mut self, sk: SessKey, now: Now) {
        let Some(s) = self.session_mut(sk) else {
            return;
        };
        let layout = s.screen.dashboard().compose_always_on();
        let dur = (!s.screen.dashboard().always_on()).then_some(0);
        system_display(s, View::AlwaysOn, layout, "dashboard_card", dur, now.mono);
    }

    /// A line of the box on the main view, shown at once; `None` clears the box's line if it
    /// is still what the main view shows (an app's display since then stays).
    pub(super) fn screen_system_line(
        &mut self,
        net: &mut impl Outbox,
        sk: SessKey,
        text: Option<&str>,
        now: Now,
    ) {
        let Some(s) = self.session_mut(sk) else {
            return;
        };
        let ours = s.screen.display.current(View::Main).map(|d| d.owner) == Some(Owner::System);
        if text.is_none() && !ours {
            return;
        }
        let layout = json!({"layoutType": "text_wall", "text": text.unwrap_or("")}).to_string();
        let dur = text.is_none().then_some(0);
        system_display(s, View::Main, layout, "text_wall", dur, now.mono);
        self.screen_flush(net, sk, now);
    }

    /// Tell every connected app of the session (and the glasses) the new mode or always-on flag.
    fn dashboard_broadcast(&mut self, net: &mut impl Outbox, sk: SessKey, mode: bool, now: Now) {
        let Some(s) = self.session(sk) else { return };
        let dash = s.screen.dashboard();
        for (&app, run) in &s.apps {
            let (AppState::Active, Some(conn)) = (run.state, run.conn) else {
                continue;
            };
            let sid = format!("{}-{}", s.user, self.cfg.apps[app].package_name);
            if mode {
                net.send_json(
                    conn,
                    &DashboardMode {
                        kind: "dashboard_mode_changed",
                        mode: dash.mode().as_str(),
                        session_id: Some(&sid),
                        timestamp: now.iso(),
                    },
                );
            } else {
                net.send_json(
                    conn,
                    &DashboardAlwaysOn {
                        kind: "dashboard_always_on_changed",
                        enabled: dash.always_on(),
                        session_id: Some(&sid),
                        timestamp: now.iso(),
                    },
                );
            }
        }
        if let Some(g) = s.glasses {
            if mode {
                net.send_json(
                    g,
                    &DashboardMode {
                        kind: "dashboard_mode_change",
                        mode: dash.mode().as_str(),
                        session_id: None,
                        timestamp: now.iso(),
                    },
                );
            } else {
                net.send_json(
                    g,
                    &DashboardAlwaysOn {
                        kind: "dashboard_always_on_change",
                        enabled: dash.always_on(),
                        session_id: None,
                        timestamp: now.iso(),
                    },
                );
            }
        }
    }

    // ---- lifecycle -----------------------------------------------------------------------

    /// An app (re)starts: a boot card for apps the user runs (system apps start unseen).
    pub(super) fn screen_app_starting(
        &mut self,
        net: &mut impl Outbox,
        sk: SessKey,
        app: usize,
        now: Now,
    ) {
        let spec = &self.cfg.apps[app];
        if spec.is_system_app {
            return;
        }
        let name = spec.name.clone();
        if let Some(s) = self.session_mut(sk) {
            #[cfg(any(test, feature = "sim"))]
            s.screen.trace.push((now.mono, DisplayInput::Starting(app)));
            s.screen.display.app_starting(now.mono, app, &name, true);
        }
        self.screen_flush(net, sk, now);
    }

    pub(super) fn screen_app_connected(
        &mut self,
        net: &mut impl Outbox,
        sk: SessKey,
        app: usize,
        now: Now,
    ) {
        if let Some(s) = self.session_mut(sk) {
            #[cfg(any(test, feature = "sim"))]
            s.screen
                .trace
                .push((now.mono, DisplayInput::Connected(app)));
            s.screen.display.app_connected(now.mono, app);
        }
        self.screen_flush(net, sk, now);
    }

    /// An app stopped, dropped or failed: its displays and its dashboard content go.
    pub(super) fn screen_app_gone(
        &mut self,
        net: &mut impl Outbox,
        sk: SessKey,
        app: usize,
        now: Now,
    ) {
        let Some(s) = self.session_mut(sk) else {
            return;
        };
        let dash_was_its =
            s.screen.display.screen(View::Dashboard).map(|i| i.owner) == Some(Owner::App(app));
        #[cfg(any(test, feature = "sim"))]
        s.screen.trace.push((now.mono, DisplayInput::Gone(app)));
        s.screen.display.app_stopped(now.mono, app);
        let had_content = s
            .screen
            .dashboard
            .as_mut()
            .is_some_and(|d| d.remove_app(app));
        if had_content || dash_was_its {
            self.dashboard_show(sk, now);
            if self
                .session(sk)
                .is_some_and(|s| s.screen.dashboard().always_on())
            {
                self.always_on_show(sk, now);
            }
        }
        self.screen_flush(net, sk, now);
    }

    /// Glasses (re)attached: show them what each view shows now.
    pub(super) fn screen_resend(&mut self, net: &mut impl Outbox, sk: SessKey, now: Now) {
        let Some(s) = self.session(sk) else { return };
        let Some(g) = s.glasses else { return };
        for v in View::ALL {
            if let Some(d) = s.screen.display.current(v) {
                self.send_display(net, g, d, now);
            }
        }
    }

    /// The session's display deadline came.
    pub(super) fn screen_tick(&mut self, net: &mut impl Outbox, sk: SessKey, now: Now) {
        let mut booted = false;
        if let Some(s) = self.session_mut(sk) {
            s.screen.armed = None;
            let booting = s.screen.display.is_booting();
            s.screen.display.handle_timeout(now.mono);
            booted = booting && !s.screen.display.is_booting();
        }
        self.screen_flush(net, sk, now);
        if booted {
            // The end of a boot shows what was held, or a clear: a venue notice comes back.
            self.venue_notice_after_boot(net, sk, now);
        }
    }

    /// Send everything the manager has for the glasses, and keep the timer slot current.
    pub(super) fn screen_flush(&mut self, net: &mut impl Outbox, sk: SessKey, now: Now) {
        let Hub { sessions, cfg, .. } = self;
        let Some(s) = sessions.get_mut(sk) else {
            return;
        };
        if !s.screen.is_made() {
            return;
        }
        let glasses = s.glasses;
        while let Some(d) = s.screen.display.poll_display() {
            if let Some(g) = glasses {
                send_display(&cfg.apps, net, g, &d, now);
            }
        }
        let deadline = s.screen.deadline();
        if deadline.is_none() {
            // At rest: what a burst (boot cards, throttled displays) grew goes back.
            s.screen.display.release_spare();
        }
        let moved = deadline != s.screen.armed;
        s.screen.armed = deadline;
        if let Some(at) = deadline.filter(|_| moved) {
            self.arm(at, TimerKey::Display(sk));
        }
    }

    fn send_display(&self, net: &mut impl Outbox, to: ConnId, d: &Display, now: Now) {
        send_display(&self.cfg.apps, net, to, d, now);
    }
}

/// A display of the box on `view`.
fn system_display(
    s: &mut Session,
    view: View,
    layout: String,
    kind: &'static str,
    duration_ms: Option<u64>,
    now: Instant,
) {
    let Ok(json) = RawValue::from_string(layout) else {
        return;
    };
    let d = Display {
        owner: Owner::System,
        view,
        layout: Layout::Raw { json, kind },
        duration_ms,
        force: true,
    };
    let _ = s.screen.display.request(now, d);
}

fn send_display(
    apps: &[registry::AppSpec],
    net: &mut impl Outbox,
    to: ConnId,
    d: &Display,
    now: Now,
) {
    let package_name = match d.owner {
        Owner::App(a) => apps[a].package_name.as_str(),
        Owner::System => SYSTEM_PACKAGE,
    };
    let layout = layout_out(d);
    net.send_json(
        to,
        &DisplayEvent {
            kind: "display_event",
            package_name,
            view: d.view.as_str(),
            layout,
            duration_ms: d.duration_ms,
            timestamp: now.iso(),
        },
    );
}

/// The layout object of a display as the glasses are sent it.
fn layout_out(d: &Display) -> LayoutOut<'_> {
    match &d.layout {
        Layout::Raw { json, .. } => LayoutOut::Raw(json),
        Layout::Boot { names, several } => LayoutOut::ReferenceCard {
            layout_type: "reference_card",
            title: BOOT_TITLE[usize::from(*several)],
            text: names,
        },
        Layout::Clear => LayoutOut::TextWall {
            layout_type: "text_wall",
            text: "",
        },
    }
}
