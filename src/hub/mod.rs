//! Core layer (sans-IO): the application core — sessions, app authentication and the app
//! lifecycle, subscriptions, and the first, simple routing of events and displays.
//!
//! It reacts to inputs from the server core (`on_open`, `on_text`, `on_binary`, `on_closed`,
//! `on_rest`, `on_http_done`, `handle_timeout`) and acts only through the connection table it
//! is handed (an [`Outbox`]): frames out, closes, HTTP responses, outbound webhook requests.
//! [`Hub`] composes the parts below and is the one place that wires one part's output to
//! another's input; this file holds it, its timer heap and the dispatch of connection events.
//!
//! Invariants:
//! - an app connection is bound to at most one (session, app), and only after its key (and,
//!   for system apps, its address) was checked and that session started that app;
//! - each running app has at most one bound connection; a replaced connection is unlinked
//!   before it is closed, so its late close never touches its successor;
//! - apps stopped on purpose are unlinked before their close, so only unexpected drops reach
//!   the reconnect grace and the bounded, backed-off restart;
//! - messages from an app are routed by the connection they came on, never by the
//!   `sessionId` inside them;
//! - every timer is re-checked against the state when it fires (spurious fires are no-ops).
//!
//! Module map — who owns what:
//! - state, each part a struct with its own methods and tests:
//!   `sessions` (the session table: `Sessions` — slab, generations, index by user — and each
//!   session's app runs and their lifecycle states), `links` (the hub's view of each
//!   connection, kept in a `connmap`), `webhooks` (`Webhooks`: in flight, the one waiting
//!   per app, start ids; per-server FIFOs in `webhook_queue`), `timers` (what each deadline
//!   is for, and whether a fired one is still current), `display` and `dashboard` (one per
//!   session, behind `screen`), `requests` (app requests pending on the glasses), `routes`
//!   (a session's subscription index), `registry` (the apps this box may start), `venue`
//!   (venue feeds: each feed's publisher, last final line and counters, and the rules of
//!   fanning a feed out to every following session; each feed's flat delivery lists in
//!   `fanout`), `app_config` (each app's own
//!   `tpa_config.json`: fetched, cached, merged under the config's settings);
//! - values: `config` ([`HubConfig`], [`Timings`]), `errors` ([`JoinError`],
//!   [`LifecycleError`]), `counters` ([`HubCounters`]), `vecmap`, `connmap`;
//! - rules, as `impl Hub` by concern: `access` (upgrades and REST start/stop), `accounts`
//!   (an account service's login exchanged for a core token), `glasses`,
//!   `apps`, `lifecycle` (start, restart, stop, sending webhooks), `streams` (relay,
//!   publishing, microphone), `demand` (which translations are wanted, told to their
//!   publishers), `unserved` (the wanted translations no publisher serves, told to their
//!   subscribers), `screen`, `requests`, `rest` (storage, settings, TPA server
//!   registration), `capabilities` (what the glasses' model can do, told to the apps),
//!   `keepalive` (RTMP keep-alives of a live stream), `location` (the location tier the
//!   apps want, asked of the glasses), `release` (an app's goodbye: `ownership_release` and
//!   the close after it), `device` (device settings), `devices` (glasses tokens: the check
//!   every one goes through, provisioned devices and their revocation), `view` (what the
//!   glasses are told of the session), `operator` (the operator's view), `reload` (shutdown
//!   and app reload), `audit` (tests and `sim`: the structural invariants).

mod access;
pub mod accounts;
pub mod app_config;
mod apps;
#[cfg(any(test, feature = "sim"))]
mod audit;
mod capabilities;
mod config;
mod connmap;
mod counters;
pub mod dashboard;
mod demand;
mod device;
pub mod devices;
pub mod display;
mod errors;
mod fanout;
mod glasses;
mod keepalive;
mod lifecycle;
mod links;
mod location;
mod operator;
mod reload;
pub mod requests;
pub use reload::Reloaded;
pub mod registry;
mod release;
mod rest;
mod routes;
mod screen;
mod sessions;
mod streams;
mod timers;
mod unserved;
mod vecmap;
pub mod venue;
mod view;
mod webhook_queue;
mod webhooks;
pub use webhook_queue::ServerLoad;

pub use config::{HubConfig, Timings};
pub use counters::HubCounters;
pub use devices::DeviceError;
pub use errors::{JoinError, LifecycleError};
use links::Link;
pub use sessions::SessKey;
use sessions::{AppRun, AppState, RateLimit, Session, Sessions};
use timers::{is_current, TimerKey};
use webhooks::Webhooks;

pub use rest::{SettingsRequest, StorageMethod, StorageRequest, TpaServerAction};
#[cfg(any(test, feature = "sim"))]
pub use screen::DisplayInput;
pub use screen::ScreenView;

use crate::net::{ConnId, Endpoint, Outbox};
use crate::protocol::outbound as messages;
use crate::state::{Durable, Persist, Snapshot};
use crate::time::{Instant, Now, TimerHeap};
use serde_json::Value;

/// What the upgrade request already proved, carried into `on_open`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreAuth {
    None,
    Glasses { user: Option<String> },
    App { bound: Option<(SessKey, usize)> },
}

/// An upgrade refused over HTTP: status and JSON body.
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub body: Value,
}

pub struct Hub {
    cfg: HubConfig,
    sessions: Sessions,
    links: connmap::ConnMap<Link>,
    webhooks: Webhooks,
    /// The settings of the apps' own `tpa_config.json`.
    app_configs: app_config::AppConfigs,
    timers: TimerHeap<TimerKey>,
    /// What survives a restart, in memory; changes leave through `poll_persist`.
    durable: Durable,
    next_registration: u32,
    /// When expired registrations are next looked for (the slot of `TimerKey::Sweep`).
    sweep_at: Option<Instant>,
    pub counters: HubCounters,
    /// Scratch for relaying: the tail all deliveries of one event share (see `deliver`).
    delivery_tail: Vec<u8>,
    /// `cfg.timings.display`, shared by every session's display manager.
    display_timings: std::sync::Arc<display::DisplayTimings>,
    /// The venue feeds and their publishers.
    venue: venue::Venue,
}

impl Hub {
    pub fn new(cfg: HubConfig) -> Hub {
        Hub::with_state(cfg, Snapshot::default())
    }

    /// A hub starting from the durable state a store loaded.
    pub fn with_state(cfg: HubConfig, state: Snapshot) -> Hub {
        let feeds = cfg.venue_feeds.iter().filter_map(|(feed, pkg)| {
            let app = cfg.apps.iter().position(|a| a.package_name == *pkg)?;
            Some((feed.clone(), app))
        });
        Hub {
            venue: venue::Venue::new(feeds),
            display_timings: std::sync::Arc::new(cfg.timings.display.clone()),
            cfg,
            sessions: Sessions::default(),
            links: Default::default(),
            webhooks: Webhooks::default(),
            app_configs: Default::default(),
            timers: TimerHeap::default(),
            durable: Durable::from_snapshot(state),
            next_registration: 0,
            sweep_at: None,
            counters: HubCounters::default(),
            delivery_tail: Vec::new(),
        }
    }

    pub fn config(&self) -> &HubConfig {
        &self.cfg
    }

    /// Every durable change made since the last call, oldest first, for the writer.
    pub fn take_persist(&mut self) -> Vec<Persist> {
        self.durable.take_pending()
    }

    /// Every lease claim and release since the last call, oldest first, for the writer.
    pub fn take_leases(&mut self) -> Vec<crate::state::Lease> {
        self.durable.take_leases()
    }

    /// What a shared store holds (other processes' writes): taken for every user with no
    /// session here (see [`Durable::merge_shared`]), so a user who fails over to this process
    /// gets the apps they ran on the other one started.
    /// TPA server registrations made on other processes are taken too, and expire here by
    /// the same rule as local ones.
    pub fn merge_shared(&mut self, snapshot: crate::state::Snapshot, now: Now) {
        self.merge_shared_users(snapshot, None, now)
    }

    /// [`Hub::merge_shared`] for the users in `users` only (`None`: every user).
    pub fn merge_shared_users(
        &mut self,
        snapshot: crate::state::Snapshot,
        users: Option<&[String]>,
        now: Now,
    ) {
        let sessions = &self.sessions;
        self.durable
            .merge_shared_users(snapshot, users, |user| sessions.by_user(user).is_some());
        if self.durable.registrations().next().is_some() {
            self.arm_registration_sweep(now);
        }
    }

    /// The durable state as the hub holds it (for tests and reports).
    pub fn durable(&self) -> &Durable {
        &self.durable
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The app state name of `package` in `user`'s session ("loading", "active", ...).
    pub fn app_state(&self, user: &str, package: &str) -> Option<&'static str> {
        let s = self.session(self.sessions.by_user(user)?)?;
        let idx = self.app_index(package)?;
        s.apps.get(&idx).map(|r| r.state.name())
    }

    /// The subscriptions of `package` in `user`'s session.
    pub fn subscriptions(&self, user: &str, package: &str) -> Vec<String> {
        let idx = self.app_index(package);
        self.sessions
            .by_user(user)
            .and_then(|sk| self.session(sk))
            .and_then(|s| s.apps.get(&idx?))
            .map(|r| r.subs.clone())
            .unwrap_or_default()
    }

    /// The app registered as `package`, or a 404 `PACKAGE_NOT_FOUND` answer to `id`.
    fn app_or_404(&self, net: &mut impl Outbox, id: ConnId, package: &str) -> Option<usize> {
        let app = self.app_index(package);
        if app.is_none() {
            net.respond_error(
                id,
                404,
                "PACKAGE_NOT_FOUND",
                "no app with this packageName is registered",
                &[],
            );
        }
        app
    }

    fn app_index(&self, package: &str) -> Option<usize> {
        // A retired app (removed by a reload) has an empty name and matches nothing.
        (!package.is_empty())
            .then(|| self.cfg.apps.iter().position(|a| a.package_name == package))
            .flatten()
    }

    fn session(&self, sk: SessKey) -> Option<&Session> {
        self.sessions.get(sk)
    }

    fn session_mut(&mut self, sk: SessKey) -> Option<&mut Session> {
        self.sessions.get_mut(sk)
    }

    fn run_mut(&mut self, sk: SessKey, app: usize) -> Option<&mut AppRun> {
        self.sessions.run_mut(sk, app)
    }

    fn refused(&mut self, code: &'static str) {
        self.counters.refused(code);
    }

    // ---- timers --------------------------------------------------------------------------

    /// The earliest deadline still current; stale heap entries are dropped on the way, so the
    /// shell is never woken for nothing.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let Hub {
            timers,
            sessions,
            links,
            sweep_at,
            ..
        } = self;
        if timers.len() > 4 * (sessions.len() + links.len()) + 64 {
            timers.rebuild(|at, k| is_current(sessions, links, *sweep_at, at, k));
        }
        timers.peek(|at, k| is_current(sessions, links, *sweep_at, at, k))
    }

    pub fn handle_timeout(&mut self, net: &mut impl Outbox, now: Now) {
        while let Some((at, key)) = self.timers.pop_due(now.mono) {
            if !is_current(&self.sessions, &self.links, self.sweep_at, at, key) {
                continue;
            }
            match key {
                TimerKey::Session(sk) => self.session_tick(net, sk, now),
                TimerKey::App(sk, app) => self.app_tick(net, sk, app, now),
                TimerKey::Conn(id) => self.init_tick(net, id, now),
                TimerKey::Mic(sk) => self.mic_tick(net, sk, now),
                TimerKey::Sweep => self.sweep_tick(now),
                TimerKey::Display(sk) => self.screen_tick(net, sk, now),
                TimerKey::Requests(sk) => self.requests_tick(net, sk, now),
                TimerKey::KeepAlive(sk) => self.keepalive_tick(net, sk, now),
            }
        }
    }

    /// Arm the deadline of `key` (its slot must already hold `at`).
    fn arm(&mut self, at: Instant, key: TimerKey) {
        self.timers.push(at, key);
    }

    // ---- connections ---------------------------------------------------------------------

    pub fn on_open(
        &mut self,
        net: &mut impl Outbox,
        id: ConnId,
        endpoint: Endpoint,
        pre: PreAuth,
        now: Now,
    ) {
        match (endpoint, pre) {
            (Endpoint::Glasses, PreAuth::Glasses { user }) => {
                let at = now.mono + self.cfg.timings.glasses_init_timeout;
                self.links.insert(
                    id,
                    Link::Glasses {
                        bearer: user.is_some(),
                        user,
                        session: None,
                        init_deadline: Some(at),
                    },
                );
                self.arm(at, TimerKey::Conn(id));
            }
            (
                Endpoint::App,
                PreAuth::App {
                    bound: Some((sk, app)),
                },
            ) => {
                self.links.insert(
                    id,
                    Link::App {
                        bound: None,
                        init_deadline: None,
                    },
                );
                self.bind_app(net, id, sk, app, now);
            }
            (Endpoint::App, _) => {
                let at = now.mono + self.cfg.timings.app_init_timeout;
                self.links.insert(
                    id,
                    Link::App {
                        bound: None,
                        init_deadline: Some(at),
                    },
                );
                self.arm(at, TimerKey::Conn(id));
            }
            _ => {}
        }
    }

    pub fn on_closed(&mut self, net: &mut impl Outbox, id: ConnId, now: Now) {
        match self.links.remove(&id) {
            Some(Link::Glasses {
                session: Some(sk), ..
            }) => {
                let grace = now.mono + self.cfg.timings.grace_period;
                let Some(s) = self.session_mut(sk) else {
                    return;
                };
                if s.glasses == Some(id) {
                    s.glasses = None;
                    s.grace_until = Some(grace);
                    log::info!(
                        "event=glasses_disconnected session={:?} connection={id}",
                        s.user
                    );
                    self.arm(grace, TimerKey::Session(sk));
                }
            }
            Some(Link::App {
                bound: Some((sk, app)),
                ..
            }) => self.app_dropped(net, id, sk, app, now),
            Some(Link::Venue { feed }) => self.venue_closed(net, id, feed, now),
            _ => {}
        }
    }

    pub fn on_binary(&mut self, net: &mut impl Outbox, id: ConnId, data: &[u8], now: Now) {
        let sk = match self.links.get(&id) {
            Some(Link::Glasses {
                session: Some(sk), ..
            }) => *sk,
            Some(Link::App { bound: None, .. }) => {
                return self.refuse_app(net, id, JoinError::NotInitialized, now)
            }
            _ => return,
        };
        self.relay_audio(net, sk, data);
    }

    pub fn on_text(&mut self, net: &mut impl Outbox, id: ConnId, text: &str, now: Now) {
        match self.links.get(&id) {
            Some(Link::Glasses { .. }) => self.glasses_message(net, id, text, now),
            Some(Link::App { bound, .. }) => {
                let bound = *bound;
                self.app_message(net, id, bound, text, now)
            }
            Some(Link::Venue { feed }) => {
                let feed = *feed;
                self.venue_message(net, id, feed, text, now)
            }
            None => {}
        }
    }
}
