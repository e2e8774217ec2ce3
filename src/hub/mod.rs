//! Core layer (sans-IO): the application core — sessions, app authentication and the app
//! lifecycle, subscriptions, and the first, simple routing of events and displays.
//!
//! Owns the sessions (one per user, in a slab with generations), the hub's view of every
//! glasses and app connection ([`Link`]), the in-flight webhooks, and the hub's timers. It
//! reacts to inputs from the server core (`on_open`, `on_text`, `on_binary`, `on_closed`,
//! `on_rest`, `on_http_done`, `handle_timeout`) and acts only through the connection table it
//! is handed ([`Net`]): frames out, closes, HTTP responses, outbound webhook requests.
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

pub mod messages;
pub mod registry;
pub mod running;

use crate::auth;
use crate::http::Request;
use crate::server::timers::TimerHeap;
use crate::server::{ConnId, Endpoint, HttpOutcome, Net, Peer, Target};
use crate::time::{iso8601, Instant};
use crate::ws::frame::Opcode;
use registry::{check_subscription, AppSpec, SubCheck};
use running::{MemoryRunningApps, RunningApps};
use serde_json::{json, Value};
use slab::Slab;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Timings of the app lifecycle (defaults from PROTOCOL §15).
#[derive(Debug, Clone)]
pub struct Timings {
    /// Glasses gone: how long the session and its apps live on.
    pub grace_period: Duration,
    /// From a `session_request` until the app must have connected and initialised.
    pub app_connect_timeout: Duration,
    /// An app dropped unexpectedly: how long it may take to reconnect by itself.
    pub app_reconnect_grace: Duration,
    pub webhook_timeout: Duration,
    pub webhook_attempts: u32,
    pub webhook_backoff: Duration,
    /// Restarts through the webhook after unexpected drops, and the first backoff (doubling).
    pub restart_attempts: u32,
    pub restart_backoff: Duration,
    /// An app that stayed up this long has its restart count reset.
    pub restart_reset_after: Duration,
    /// A glasses connection must send `connection_init` within this.
    pub glasses_init_timeout: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            grace_period: Duration::from_secs(60),
            app_connect_timeout: Duration::from_secs(5),
            app_reconnect_grace: Duration::from_secs(5),
            webhook_timeout: Duration::from_secs(10),
            webhook_attempts: 2,
            webhook_backoff: Duration::from_secs(1),
            restart_attempts: 3,
            restart_backoff: Duration::from_secs(1),
            restart_reset_after: Duration::from_secs(60),
            glasses_init_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Base WebSocket URL handed to apps (`/app-ws` is appended).
    pub public_ws_url: String,
    /// Base WebSocket URL handed to system apps.
    pub internal_ws_url: String,
    pub jwt_secret: Vec<u8>,
    pub apps: Vec<AppSpec>,
    pub timings: Timings,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            public_ws_url: "ws://127.0.0.1:8002".into(),
            internal_ws_url: "ws://127.0.0.1:8002".into(),
            jwt_secret: Vec::new(),
            apps: Vec::new(),
            timings: Timings::default(),
        }
    }
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessKey {
    slot: usize,
    gen: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKey {
    Session(SessKey),
    App(SessKey, usize),
    Conn(ConnId),
}

/// The hub's view of a connection.
#[derive(Debug)]
enum Link {
    Glasses {
        user: Option<String>,
        session: Option<SessKey>,
        init_deadline: Option<Instant>,
    },
    App {
        bound: Option<(SessKey, usize)>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AppState {
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
    fn name(self) -> &'static str {
        match self {
            AppState::Loading { .. } => "loading",
            AppState::Active => "active",
            AppState::Reconnecting { .. } => "reconnecting",
            AppState::RestartWait { .. } => "restarting",
            AppState::Failed => "failed",
        }
    }

    /// Started and not given up on.
    fn is_live(self) -> bool {
        !matches!(self, AppState::Failed)
    }
}

#[derive(Debug)]
struct AppRun {
    state: AppState,
    conn: Option<ConnId>,
    subs: Vec<String>,
    /// Which start this is (unique in the hub), so a late webhook outcome from an earlier start
    /// is never taken for the current one's.
    start: u32,
    attempt: u32,
    restarts: u32,
    active_since: Option<Instant>,
    error: Option<&'static str>,
}

#[derive(Debug)]
struct Session {
    gen: u32,
    user: String,
    glasses: Option<ConnId>,
    started: Instant,
    grace_until: Option<Instant>,
    apps: BTreeMap<usize, AppRun>,
    /// The user's glasses settings; `None` until changed from the defaults (they cost nothing
    /// per idle session that way).
    settings: Option<Box<Value>>,
}

impl Session {
    fn settings(&self) -> Value {
        self.settings
            .as_deref()
            .cloned()
            .unwrap_or_else(messages::default_settings)
    }
}

#[derive(Debug, Clone, Copy)]
enum WebhookKind {
    Start { start: u32, attempt: u32 },
    Stop,
}

#[derive(Debug)]
struct Webhook {
    sess: SessKey,
    app: usize,
    kind: WebhookKind,
}

/// Why an app may not join a session; each is a distinct `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinError {
    Malformed,
    NotInitialized,
    PackageNotFound,
    InvalidApiKey,
    InvalidAppToken,
    MissingHeaders,
    SessionNotFound,
    AppNotStarted,
    AddressNotAllowed,
    AlreadyInitialized,
}

impl JoinError {
    pub fn code(self) -> &'static str {
        match self {
            JoinError::Malformed => "MALFORMED_MESSAGE",
            JoinError::NotInitialized => "NOT_INITIALIZED",
            JoinError::PackageNotFound => "PACKAGE_NOT_FOUND",
            JoinError::InvalidApiKey => "INVALID_API_KEY",
            JoinError::InvalidAppToken => "INVALID_APP_TOKEN",
            JoinError::MissingHeaders => "MISSING_HEADERS",
            JoinError::SessionNotFound => "SESSION_NOT_FOUND",
            JoinError::AppNotStarted => "APP_NOT_STARTED",
            JoinError::AddressNotAllowed => "ADDRESS_NOT_ALLOWED",
            JoinError::AlreadyInitialized => "ALREADY_INITIALIZED",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            JoinError::Malformed => "expected a JSON object with packageName, sessionId and apiKey",
            JoinError::NotInitialized => "send tpa_connection_init first",
            JoinError::PackageNotFound => "no app with this packageName is registered",
            JoinError::InvalidApiKey => "the API key does not match this app",
            JoinError::InvalidAppToken => "the app token is invalid or was issued for another key",
            JoinError::MissingHeaders => {
                "header auth needs Authorization: Bearer <app token> and X-Session-Id"
            }
            JoinError::SessionNotFound => {
                "no such session; sessionId must be <userId>-<packageName>"
            }
            JoinError::AppNotStarted => "this app was not started for this session",
            JoinError::AddressNotAllowed => "this system app may not connect from this address",
            JoinError::AlreadyInitialized => {
                "this connection is already initialised for another app"
            }
        }
    }

    /// The HTTP status when refused at the upgrade.
    pub fn status(self) -> u16 {
        match self {
            JoinError::InvalidApiKey | JoinError::InvalidAppToken | JoinError::MissingHeaders => {
                401
            }
            JoinError::AppNotStarted | JoinError::AddressNotAllowed => 403,
            JoinError::PackageNotFound | JoinError::SessionNotFound => 404,
            _ => 400,
        }
    }

    /// A short close reason.
    pub fn reason(self) -> &'static str {
        match self {
            JoinError::InvalidApiKey | JoinError::InvalidAppToken => "Invalid API key",
            JoinError::SessionNotFound => "No active session",
            JoinError::AppNotStarted => "App not started for this session",
            JoinError::PackageNotFound => "Unknown package",
            JoinError::AddressNotAllowed => "Address not allowed",
            _ => "Refused",
        }
    }
}

/// Counters the hub keeps for `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct HubCounters {
    /// Refusals by code (app and glasses).
    pub refusals: BTreeMap<&'static str, u64>,
    pub webhooks_sent: u64,
    pub webhooks_failed: u64,
    pub app_restarts: u64,
    pub sessions_ended: u64,
}

pub struct Hub {
    cfg: HubConfig,
    sessions: Slab<Session>,
    by_user: HashMap<String, SessKey>,
    links: HashMap<ConnId, Link>,
    webhooks: HashMap<ConnId, Webhook>,
    timers: TimerHeap<TimerKey>,
    running: Box<dyn RunningApps>,
    next_gen: u32,
    next_start: u32,
    pub counters: HubCounters,
}

impl Hub {
    pub fn new(cfg: HubConfig) -> Hub {
        Hub::with_running_apps(cfg, Box::new(MemoryRunningApps::default()))
    }

    pub fn with_running_apps(cfg: HubConfig, running: Box<dyn RunningApps>) -> Hub {
        Hub {
            cfg,
            sessions: Slab::new(),
            by_user: HashMap::new(),
            links: HashMap::new(),
            webhooks: HashMap::new(),
            timers: TimerHeap::default(),
            running,
            next_gen: 0,
            next_start: 0,
            counters: HubCounters::default(),
        }
    }

    pub fn config(&self) -> &HubConfig {
        &self.cfg
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The app state name of `package` in `user`'s session ("loading", "active", ...).
    pub fn app_state(&self, user: &str, package: &str) -> Option<&'static str> {
        let s = self.session(*self.by_user.get(user)?)?;
        let idx = self.app_index(package)?;
        s.apps.get(&idx).map(|r| r.state.name())
    }

    /// The subscriptions of `package` in `user`'s session.
    pub fn subscriptions(&self, user: &str, package: &str) -> Vec<String> {
        let idx = self.app_index(package);
        self.by_user
            .get(user)
            .and_then(|sk| self.session(*sk))
            .and_then(|s| s.apps.get(&idx?))
            .map(|r| r.subs.clone())
            .unwrap_or_default()
    }

    /// Every glasses and app connection bound to a session, labelled for `/metrics`:
    /// `(connection, kind, user, package)`.
    pub fn bound_connections(&self) -> Vec<(ConnId, &'static str, &str, Option<&str>)> {
        let mut out = Vec::new();
        for (id, link) in &self.links {
            match link {
                Link::Glasses {
                    session: Some(sk), ..
                } => {
                    if let Some(s) = self.session(*sk) {
                        out.push((*id, "glasses", s.user.as_str(), None));
                    }
                }
                Link::App {
                    bound: Some((sk, app)),
                } => {
                    if let Some(s) = self.session(*sk) {
                        out.push((
                            *id,
                            "app",
                            s.user.as_str(),
                            Some(self.cfg.apps[*app].package_name.as_str()),
                        ));
                    }
                }
                _ => {}
            }
        }
        out.sort_by_key(|(id, ..)| *id);
        out
    }

    fn app_index(&self, package: &str) -> Option<usize> {
        self.cfg.apps.iter().position(|a| a.package_name == package)
    }

    fn session(&self, sk: SessKey) -> Option<&Session> {
        self.sessions.get(sk.slot).filter(|s| s.gen == sk.gen)
    }

    fn session_mut(&mut self, sk: SessKey) -> Option<&mut Session> {
        self.sessions.get_mut(sk.slot).filter(|s| s.gen == sk.gen)
    }

    fn run_mut(&mut self, sk: SessKey, app: usize) -> Option<&mut AppRun> {
        self.session_mut(sk)?.apps.get_mut(&app)
    }

    fn refused(&mut self, code: &'static str) {
        *self.counters.refusals.entry(code).or_default() += 1;
    }

    // ---- timers --------------------------------------------------------------------------

    pub fn poll_timeout(&mut self) -> Option<Instant> {
        // Entries are checked when they fire, so every entry counts as current here; stale
        // ones fire as no-ops. The heap is rebuilt when it grows past its bound.
        if self.timers.len() > 4 * (self.sessions.len() + self.links.len()) + 64 {
            let Hub {
                timers,
                sessions,
                links,
                ..
            } = self;
            timers.rebuild(|_, k| match k {
                TimerKey::Session(sk) | TimerKey::App(sk, _) => {
                    sessions.get(sk.slot).is_some_and(|s| s.gen == sk.gen)
                }
                TimerKey::Conn(id) => links.contains_key(&id),
            });
        }
        self.timers.peek(|_, _| true)
    }

    pub fn handle_timeout(&mut self, net: &mut Net, now: Instant) {
        while let Some((_, key)) = self.timers.pop_due(now) {
            match key {
                TimerKey::Session(sk) => self.session_tick(net, sk, now),
                TimerKey::App(sk, app) => self.app_tick(net, sk, app, now),
                TimerKey::Conn(id) => self.glasses_init_tick(net, id, now),
            }
        }
    }

    // ---- upgrades and REST ---------------------------------------------------------------

    /// Decide an upgrade from its headers, before any socket is opened.
    pub fn authorize_upgrade(
        &mut self,
        endpoint: Endpoint,
        req: &Request<'_>,
        peer: &Peer,
        now: Instant,
    ) -> Result<PreAuth, Refusal> {
        let ts = iso8601(now);
        let bearer = req.header_str("authorization").map(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .unwrap_or(v)
                .trim()
        });
        match endpoint {
            Endpoint::Echo => Ok(PreAuth::None),
            Endpoint::Glasses => match bearer {
                None => Ok(PreAuth::Glasses { user: None }),
                Some(token) => match auth::jwt::glasses_user(
                    token,
                    &self.cfg.jwt_secret,
                    now.as_micros() / 1_000_000,
                ) {
                    Ok(user) => Ok(PreAuth::Glasses { user: Some(user) }),
                    Err(e) => {
                        self.refused(e.code());
                        Err(Refusal {
                            status: 401,
                            body: messages::connection_error(e.code(), e.message(), &ts),
                        })
                    }
                },
            },
            Endpoint::App => {
                let Some(token) = bearer else {
                    return Ok(PreAuth::App { bound: None });
                };
                let result = self.header_join(token, req.header_str("x-session-id"), peer, now);
                match result {
                    Ok(bound) => Ok(PreAuth::App { bound: Some(bound) }),
                    Err(e) => {
                        self.refused(e.code());
                        Err(Refusal {
                            status: e.status(),
                            body: messages::tpa_error(e.code(), e.message(), json!({}), &ts),
                        })
                    }
                }
            }
        }
    }

    fn header_join(
        &self,
        token: &str,
        session_id: Option<&str>,
        peer: &Peer,
        now: Instant,
    ) -> Result<(SessKey, usize), JoinError> {
        let (package, binding) =
            auth::jwt::verify_app_token(token, &self.cfg.jwt_secret, now.as_micros() / 1_000_000)
                .map_err(|_| JoinError::InvalidAppToken)?;
        let app = self.app_index(&package).ok_or(JoinError::PackageNotFound)?;
        if auth::jwt::app_key_binding(&self.cfg.apps[app].hashed_api_key) != binding {
            return Err(JoinError::InvalidAppToken);
        }
        let session_id = session_id.ok_or(JoinError::MissingHeaders)?;
        self.check_join(app, session_id, peer)
    }

    /// The checks shared by both ways to join: address, session, started.
    fn check_join(
        &self,
        app: usize,
        session_id: &str,
        peer: &Peer,
    ) -> Result<(SessKey, usize), JoinError> {
        let spec = &self.cfg.apps[app];
        if !spec.address_allowed(peer) {
            return Err(JoinError::AddressNotAllowed);
        }
        let user = session_id
            .strip_suffix(spec.package_name.as_str())
            .and_then(|u| u.strip_suffix('-'))
            .filter(|u| !u.is_empty())
            .ok_or(JoinError::SessionNotFound)?;
        let sk = *self.by_user.get(user).ok_or(JoinError::SessionNotFound)?;
        let started = self
            .session(sk)
            .and_then(|s| s.apps.get(&app))
            .is_some_and(|r| r.state.is_live());
        if !started {
            return Err(JoinError::AppNotStarted);
        }
        Ok((sk, app))
    }

    /// `POST /apps/{packageName}/start|stop` with the glasses bearer token.
    pub fn on_rest(&mut self, net: &mut Net, id: ConnId, req: &Request<'_>, now: Instant) {
        let rest = req.path.strip_prefix("/apps/").unwrap_or("");
        let (package, action) = match rest.rsplit_once('/') {
            Some((p, a @ ("start" | "stop"))) if !p.is_empty() => (p, a),
            _ => {
                return net.respond_error(
                    id,
                    404,
                    "NOT_FOUND",
                    "use /apps/{packageName}/start or /stop",
                    &[],
                )
            }
        };
        if req.method != "POST" {
            return net.respond_error(id, 405, "METHOD_NOT_ALLOWED", "use POST", &["Allow: POST"]);
        }
        let token = req.header_str("authorization").and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
        let Some(token) = token else {
            self.refused("MISSING_TOKEN");
            return net.respond_error(
                id,
                401,
                "MISSING_TOKEN",
                "Authorization: Bearer <glasses token> required",
                &[],
            );
        };
        let user = match auth::jwt::glasses_user(
            token.trim(),
            &self.cfg.jwt_secret,
            now.as_micros() / 1_000_000,
        ) {
            Ok(u) => u,
            Err(e) => {
                self.refused(e.code());
                return net.respond_error(id, 401, e.code(), e.message(), &[]);
            }
        };
        let Some(app) = self.app_index(package) else {
            return net.respond_error(
                id,
                404,
                "PACKAGE_NOT_FOUND",
                "no app with this packageName is registered",
                &[],
            );
        };
        let Some(&sk) = self.by_user.get(&user) else {
            return net.respond_error(
                id,
                404,
                "SESSION_NOT_FOUND",
                "no session for this user; connect the glasses first",
                &[],
            );
        };
        let status = if action == "start" {
            self.start_app(net, sk, app, now, false);
            "started"
        } else {
            self.stop_app(net, sk, app, "user_disabled", "App stopped", now);
            "stopped"
        };
        self.running_changed(sk, app, action == "start");
        self.send_app_state(net, sk, now);
        let app_state = self.app_state_json(sk, app);
        let body = json!({ "success": true, "data": { "status": status, "packageName": package, "appState": app_state } });
        net.respond(id, 200, &body, &[]);
    }

    fn running_changed(&mut self, sk: SessKey, app: usize, running: bool) {
        let Some(user) = self.session(sk).map(|s| s.user.clone()) else {
            return;
        };
        let pkg = &self.cfg.apps[app].package_name;
        if running {
            self.running.add(&user, pkg);
        } else {
            self.running.remove(&user, pkg);
        }
    }

    // ---- connections ---------------------------------------------------------------------

    pub fn on_open(
        &mut self,
        net: &mut Net,
        id: ConnId,
        endpoint: Endpoint,
        pre: PreAuth,
        now: Instant,
    ) {
        match (endpoint, pre) {
            (Endpoint::Glasses, PreAuth::Glasses { user }) => {
                let at = now + self.cfg.timings.glasses_init_timeout;
                self.links.insert(
                    id,
                    Link::Glasses {
                        user,
                        session: None,
                        init_deadline: Some(at),
                    },
                );
                self.timers.push(at, TimerKey::Conn(id));
            }
            (
                Endpoint::App,
                PreAuth::App {
                    bound: Some((sk, app)),
                },
            ) => {
                self.links.insert(id, Link::App { bound: None });
                self.bind_app(net, id, sk, app, now);
            }
            (Endpoint::App, _) => {
                self.links.insert(id, Link::App { bound: None });
            }
            _ => {}
        }
    }

    pub fn on_closed(&mut self, net: &mut Net, id: ConnId, now: Instant) {
        match self.links.remove(&id) {
            Some(Link::Glasses {
                session: Some(sk), ..
            }) => {
                let grace = now + self.cfg.timings.grace_period;
                let Some(s) = self.session_mut(sk) else {
                    return;
                };
                if s.glasses == Some(id) {
                    s.glasses = None;
                    s.grace_until = Some(grace);
                    log::info!(
                        "glasses of {} disconnected; session kept for the grace period",
                        s.user
                    );
                    self.timers.push(grace, TimerKey::Session(sk));
                }
            }
            Some(Link::App {
                bound: Some((sk, app)),
            }) => self.app_dropped(net, id, sk, app, now),
            _ => {}
        }
    }

    pub fn on_binary(&mut self, net: &mut Net, id: ConnId, data: &[u8], _now: Instant) {
        let Some(Link::Glasses {
            session: Some(sk), ..
        }) = self.links.get(&id)
        else {
            return;
        };
        let Some(s) = self.session(*sk) else { return };
        for run in s.apps.values() {
            if let (AppState::Active, Some(conn)) = (run.state, run.conn) {
                if run
                    .subs
                    .iter()
                    .any(|s| s == "audio_chunk" || s == "all" || s == "*")
                {
                    net.send_frame(conn, Opcode::Binary, &[data]);
                }
            }
        }
    }

    pub fn on_text(&mut self, net: &mut Net, id: ConnId, text: &str, now: Instant) {
        match self.links.get(&id) {
            Some(Link::Glasses { .. }) => self.glasses_message(net, id, text, now),
            Some(Link::App { bound }) => {
                let bound = *bound;
                self.app_message(net, id, bound, text, now)
            }
            None => {}
        }
    }

    // ---- glasses -------------------------------------------------------------------------

    fn glasses_error(
        &mut self,
        net: &mut Net,
        id: ConnId,
        code: &'static str,
        message: &str,
        close: bool,
        now: Instant,
    ) {
        self.refused(code);
        net.send_text(
            id,
            &messages::connection_error(code, message, &iso8601(now)).to_string(),
        );
        if close {
            // Unlink as a closed connection would be: a bound session starts its grace period
            // (removing the link alone would leave the session on this dead connection forever).
            self.on_closed(net, id, now);
            net.close_websocket(id, 1008, message, now);
        }
    }

    fn glasses_message(&mut self, net: &mut Net, id: ConnId, text: &str, now: Instant) {
        let v: Value = match serde_json::from_str(text) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return self.glasses_error(
                    net,
                    id,
                    "MALFORMED_MESSAGE",
                    "expected a JSON object",
                    false,
                    now,
                )
            }
        };
        let Some(ty) = v.get("type").and_then(Value::as_str) else {
            return self.glasses_error(
                net,
                id,
                "MALFORMED_MESSAGE",
                "message has no string 'type'",
                false,
                now,
            );
        };
        let Some(Link::Glasses { user, session, .. }) = self.links.get(&id) else {
            return;
        };
        let session = *session;
        if ty == "connection_init" {
            let user = match user.clone() {
                Some(u) => u,
                None => match v.get("coreToken").and_then(Value::as_str) {
                    None => {
                        return self.glasses_error(
                            net,
                            id,
                            "MISSING_TOKEN",
                            "no token: send Authorization: Bearer or coreToken",
                            true,
                            now,
                        )
                    }
                    Some(t) => match auth::jwt::glasses_user(
                        t,
                        &self.cfg.jwt_secret,
                        now.as_micros() / 1_000_000,
                    ) {
                        Ok(u) => u,
                        Err(e) => {
                            return self.glasses_error(net, id, e.code(), e.message(), true, now)
                        }
                    },
                },
            };
            return self.attach_glasses(net, id, &user, now);
        }
        let Some(sk) = session else {
            return self.glasses_error(
                net,
                id,
                "NOT_INITIALIZED",
                "send connection_init first",
                false,
                now,
            );
        };
        match ty {
            "start_app" | "stop_app" => {
                let Some(pkg) = v.get("packageName").and_then(Value::as_str) else {
                    return self.glasses_error(
                        net,
                        id,
                        "MALFORMED_MESSAGE",
                        "packageName missing",
                        false,
                        now,
                    );
                };
                let Some(app) = self.app_index(pkg) else {
                    return self.glasses_error(
                        net,
                        id,
                        "PACKAGE_NOT_FOUND",
                        "no app with this packageName is registered",
                        false,
                        now,
                    );
                };
                if ty == "start_app" {
                    self.start_app(net, sk, app, now, false);
                } else {
                    self.stop_app(net, sk, app, "user_disabled", "App stopped", now);
                }
                self.running_changed(sk, app, ty == "start_app");
                self.send_app_state(net, sk, now);
            }
            "request_settings" | "settings_update_request" => {
                let Some(s) = self.session(sk) else { return };
                let msg = json!({
                    "type": "settings_update",
                    "sessionId": s.user,
                    "success": true,
                    "message": "Current settings retrieved successfully",
                    "settings": s.settings(),
                    "timestamp": iso8601(now),
                });
                net.send_text(id, &msg.to_string());
            }
            _ => self.relay(net, sk, ty, text, now),
        }
    }

    /// Deliver a glasses event to every app subscribed to its type, as `data_stream` with the
    /// original message as `data` (written from the input bytes, not re-encoded).
    fn relay(&mut self, net: &mut Net, sk: SessKey, ty: &str, text: &str, now: Instant) {
        let Some(s) = self.session(sk) else { return };
        let ts = iso8601(now);
        let ty_json = Value::from(ty).to_string();
        for (&app, run) in &s.apps {
            let (AppState::Active, Some(conn)) = (run.state, run.conn) else {
                continue;
            };
            if !run.subs.iter().any(|x| x == ty || x == "all" || x == "*") {
                continue;
            }
            let sid =
                Value::from(format!("{}-{}", s.user, self.cfg.apps[app].package_name)).to_string();
            net.send_frame(
                conn,
                Opcode::Text,
                &[
                    b"{\"type\":\"data_stream\",\"sessionId\":",
                    sid.as_bytes(),
                    b",\"streamType\":",
                    ty_json.as_bytes(),
                    b",\"data\":",
                    text.as_bytes(),
                    b",\"timestamp\":\"",
                    ts.as_bytes(),
                    b"\"}",
                ],
            );
        }
    }

    fn attach_glasses(&mut self, net: &mut Net, id: ConnId, user: &str, now: Instant) {
        let sk = match self.by_user.get(user) {
            Some(&sk) => {
                let old = self.session_mut(sk).and_then(|s| {
                    s.grace_until = None;
                    s.glasses.replace(id)
                });
                if let Some(old) = old.filter(|o| *o != id) {
                    self.links.remove(&old);
                    net.close_websocket(old, 1000, "Replaced by a newer connection", now);
                }
                log::info!("session of {user} resumed");
                sk
            }
            None => {
                self.next_gen = self.next_gen.wrapping_add(1);
                let gen = self.next_gen;
                let slot = self.sessions.insert(Session {
                    gen,
                    user: user.to_string(),
                    glasses: Some(id),
                    started: now,
                    grace_until: None,
                    apps: BTreeMap::new(),
                    settings: None,
                });
                let sk = SessKey { slot, gen };
                self.by_user.insert(user.to_string(), sk);
                log::info!("session of {user} created");
                sk
            }
        };
        if let Some(Link::Glasses {
            session,
            init_deadline,
            ..
        }) = self.links.get_mut(&id)
        {
            *session = Some(sk);
            *init_deadline = None;
        }
        let ack = json!({
            "type": "connection_ack",
            "sessionId": user,
            "userSession": self.user_session_json(sk),
            "timestamp": iso8601(now),
        });
        net.send_text(id, &ack.to_string());
        // System apps and the user's running apps (those not already alive).
        let mut wanted: Vec<usize> = (0..self.cfg.apps.len())
            .filter(|&i| self.cfg.apps[i].is_system_app)
            .collect();
        for pkg in self.running.apps(user) {
            if let Some(i) = self.app_index(&pkg) {
                wanted.push(i);
            }
        }
        wanted.sort_unstable();
        wanted.dedup();
        for app in wanted {
            self.start_app(net, sk, app, now, false);
        }
        self.send_app_state(net, sk, now);
    }

    fn glasses_init_tick(&mut self, net: &mut Net, id: ConnId, now: Instant) {
        let expired = matches!(
            self.links.get(&id),
            Some(Link::Glasses { session: None, init_deadline: Some(at), .. }) if *at <= now
        );
        if expired {
            self.glasses_error(
                net,
                id,
                "INIT_TIMEOUT",
                "no connection_init in time",
                true,
                now,
            );
        }
    }

    fn session_tick(&mut self, net: &mut Net, sk: SessKey, now: Instant) {
        let due = self
            .session(sk)
            .is_some_and(|s| s.glasses.is_none() && s.grace_until.is_some_and(|g| g <= now));
        if due {
            self.end_session(net, sk, now);
        }
    }

    /// The grace period ran out: stop every app (they stay in the user's running list, so they
    /// come back when the glasses do) and forget the session.
    fn end_session(&mut self, net: &mut Net, sk: SessKey, now: Instant) {
        let apps: Vec<usize> = self
            .session(sk)
            .map(|s| s.apps.keys().copied().collect())
            .unwrap_or_default();
        for app in apps {
            self.stop_app(net, sk, app, "system_stop", "User session ended", now);
        }
        if self.session(sk).is_some() {
            let s = self.sessions.remove(sk.slot);
            self.by_user.remove(&s.user);
            self.counters.sessions_ended += 1;
            log::info!("session of {} ended after the grace period", s.user);
        }
    }

    // ---- app lifecycle -------------------------------------------------------------------

    /// Start `app` in the session (no-op if it is already loading, active or reconnecting).
    fn start_app(&mut self, net: &mut Net, sk: SessKey, app: usize, now: Instant, restart: bool) {
        let until = now + self.cfg.timings.app_connect_timeout;
        let start = self.next_start.wrapping_add(1);
        let Some(s) = self.session_mut(sk) else {
            return;
        };
        let run = s.apps.entry(app).or_insert(AppRun {
            state: AppState::Failed,
            conn: None,
            subs: Vec::new(),
            start,
            attempt: 0,
            restarts: 0,
            active_since: None,
            error: None,
        });
        match run.state {
            AppState::Loading { .. } | AppState::Active | AppState::Reconnecting { .. } => return,
            AppState::RestartWait { .. } if restart => {}
            AppState::RestartWait { .. } | AppState::Failed => {
                if !restart {
                    run.restarts = 0;
                }
            }
        }
        run.state = AppState::Loading {
            until,
            retry_at: None,
        };
        run.error = None;
        run.start = start;
        run.attempt = 1;
        self.next_start = start;
        self.timers.push(until, TimerKey::App(sk, app));
        self.send_session_request(net, sk, app, 1, now);
    }

    fn send_session_request(
        &mut self,
        net: &mut Net,
        sk: SessKey,
        app: usize,
        attempt: u32,
        now: Instant,
    ) {
        let Some(s) = self.session(sk) else { return };
        let Some(start) = s.apps.get(&app).map(|r| r.start) else {
            return;
        };
        let spec = &self.cfg.apps[app];
        let base = if spec.is_system_app {
            &self.cfg.internal_ws_url
        } else {
            &self.cfg.public_ws_url
        };
        let ws_url = format!("{}/app-ws", base.trim_end_matches('/'));
        let session_id = format!("{}-{}", s.user, spec.package_name);
        let body = messages::session_request(&session_id, &s.user, &ws_url, &iso8601(now));
        self.post_webhook(
            net,
            sk,
            app,
            WebhookKind::Start { start, attempt },
            &body,
            now,
        );
    }

    fn post_webhook(
        &mut self,
        net: &mut Net,
        sk: SessKey,
        app: usize,
        kind: WebhookKind,
        body: &Value,
        now: Instant,
    ) {
        let spec = &self.cfg.apps[app];
        let Target { host, port } = &spec.webhook_target;
        let request =
            messages::http_post(host, *port, &format!("{}/webhook", spec.webhook_path), body);
        let target = spec.webhook_target.clone();
        self.counters.webhooks_sent += 1;
        match net.open_client(target, &request, now + self.cfg.timings.webhook_timeout) {
            Some(conn) => {
                self.webhooks.insert(
                    conn,
                    Webhook {
                        sess: sk,
                        app,
                        kind,
                    },
                );
            }
            None => {
                // No slot for the request: the same as a failed attempt.
                self.webhook_failed(
                    net,
                    Webhook {
                        sess: sk,
                        app,
                        kind,
                    },
                    now,
                );
            }
        }
    }

    pub fn on_http_done(&mut self, net: &mut Net, id: ConnId, outcome: HttpOutcome, now: Instant) {
        let Some(w) = self.webhooks.remove(&id) else {
            return;
        };
        let ok = matches!(outcome, HttpOutcome::Status(s) if (200..300).contains(&s));
        if !ok {
            log::warn!(
                "webhook to {} failed: {outcome:?}",
                self.cfg.apps[w.app].package_name
            );
            self.webhook_failed(net, w, now);
        }
    }

    fn webhook_failed(&mut self, net: &mut Net, w: Webhook, now: Instant) {
        self.counters.webhooks_failed += 1;
        let WebhookKind::Start { start, attempt } = w.kind else {
            return;
        };
        let max = self.cfg.timings.webhook_attempts;
        let retry_at = now + self.cfg.timings.webhook_backoff;
        let Some(run) = self.run_mut(w.sess, w.app) else {
            return;
        };
        let AppState::Loading { until, .. } = run.state else {
            return;
        };
        if run.start != start || run.attempt != attempt {
            return;
        }
        if attempt < max {
            run.state = AppState::Loading {
                until,
                retry_at: Some(retry_at),
            };
            self.timers.push(retry_at, TimerKey::App(w.sess, w.app));
        } else {
            self.start_failed(net, w.sess, w.app, "WEBHOOK_FAILED", now);
        }
    }

    fn app_tick(&mut self, net: &mut Net, sk: SessKey, app: usize, now: Instant) {
        let t = self.cfg.timings.clone();
        let Some(run) = self.run_mut(sk, app) else {
            return;
        };
        match run.state {
            AppState::Loading {
                retry_at: Some(at), ..
            } if at <= now => {
                run.attempt += 1;
                let attempt = run.attempt;
                let until = now + t.app_connect_timeout;
                run.state = AppState::Loading {
                    until,
                    retry_at: None,
                };
                self.timers.push(until, TimerKey::App(sk, app));
                self.send_session_request(net, sk, app, attempt, now);
            }
            AppState::Loading {
                until,
                retry_at: None,
            } if until <= now => {
                self.start_failed(net, sk, app, "APP_CONNECT_TIMEOUT", now);
            }
            AppState::Reconnecting { until } if until <= now => {
                self.schedule_restart(net, sk, app, "APP_DISCONNECTED", now);
            }
            AppState::RestartWait { at } if at <= now => {
                self.counters.app_restarts += 1;
                log::info!(
                    "restarting {} through its webhook",
                    self.cfg.apps[app].package_name
                );
                self.start_app(net, sk, app, now, true);
                self.send_app_state(net, sk, now);
            }
            _ => {}
        }
    }

    /// A start or restart attempt failed. A restart in progress tries again (backed off) while
    /// attempts remain; otherwise the app is marked failed and the glasses are told.
    fn start_failed(
        &mut self,
        net: &mut Net,
        sk: SessKey,
        app: usize,
        error: &'static str,
        now: Instant,
    ) {
        let restarting = self.run_mut(sk, app).is_some_and(|r| r.restarts > 0);
        if restarting {
            return self.schedule_restart(net, sk, app, error, now);
        }
        self.give_up(net, sk, app, error, now);
    }

    fn schedule_restart(
        &mut self,
        net: &mut Net,
        sk: SessKey,
        app: usize,
        error: &'static str,
        now: Instant,
    ) {
        let t = &self.cfg.timings;
        let (max, base) = (t.restart_attempts, t.restart_backoff);
        let Some(run) = self.run_mut(sk, app) else {
            return;
        };
        if run.restarts >= max {
            return self.give_up(net, sk, app, "RESTART_LIMIT_REACHED", now);
        }
        run.restarts += 1;
        run.error = Some(error);
        let at = now + base * 2u32.saturating_pow(run.restarts - 1);
        run.state = AppState::RestartWait { at };
        self.timers.push(at, TimerKey::App(sk, app));
        self.send_app_state(net, sk, now);
    }

    fn give_up(
        &mut self,
        net: &mut Net,
        sk: SessKey,
        app: usize,
        error: &'static str,
        now: Instant,
    ) {
        let Some(run) = self.run_mut(sk, app) else {
            return;
        };
        run.state = AppState::Failed;
        run.error = Some(error);
        run.subs.clear();
        log::warn!("{} gave up: {error}", self.cfg.apps[app].package_name);
        self.send_to_glasses(
            net,
            sk,
            &json!({
                "type": "app_stopped",
                "packageName": self.cfg.apps[app].package_name,
                "error": error,
                "timestamp": iso8601(now),
            }),
        );
        self.send_app_state(net, sk, now);
    }

    /// Stop `app` on purpose: the app is told, closed with 1000, sent `stop_request`, and the
    /// glasses are told.
    fn stop_app(
        &mut self,
        net: &mut Net,
        sk: SessKey,
        app: usize,
        reason: &str,
        close_reason: &str,
        now: Instant,
    ) {
        let Some(s) = self.session_mut(sk) else {
            return;
        };
        let Some(run) = s.apps.remove(&app) else {
            return;
        };
        let user = s.user.clone();
        if let Some(conn) = run.conn {
            self.links.remove(&conn);
            let msg = json!({ "type": "app_stopped", "reason": reason, "timestamp": iso8601(now) });
            net.send_text(conn, &msg.to_string());
            net.close_websocket(conn, 1000, close_reason, now);
        }
        if run.state.is_live() {
            let session_id = format!("{user}-{}", self.cfg.apps[app].package_name);
            let body = messages::stop_request(&session_id, &user, reason, &iso8601(now));
            self.post_webhook(net, sk, app, WebhookKind::Stop, &body, now);
        }
        self.send_to_glasses(
            net,
            sk,
            &json!({
                "type": "app_stopped",
                "packageName": self.cfg.apps[app].package_name,
                "timestamp": iso8601(now),
            }),
        );
    }

    fn app_dropped(&mut self, net: &mut Net, id: ConnId, sk: SessKey, app: usize, now: Instant) {
        let t = self.cfg.timings.clone();
        let Some(run) = self.run_mut(sk, app) else {
            return;
        };
        if run.conn != Some(id) {
            return; // a replaced connection: its successor is untouched
        }
        run.conn = None;
        run.subs.clear();
        if run
            .active_since
            .is_some_and(|a| now.saturating_since(a) >= t.restart_reset_after)
        {
            run.restarts = 0;
        }
        let until = now + t.app_reconnect_grace;
        run.state = AppState::Reconnecting { until };
        self.timers.push(until, TimerKey::App(sk, app));
        log::info!(
            "{} dropped unexpectedly; waiting for it to reconnect",
            self.cfg.apps[app].package_name
        );
        self.send_app_state(net, sk, now);
    }

    // ---- apps ----------------------------------------------------------------------------

    fn refuse_app(&mut self, net: &mut Net, id: ConnId, e: JoinError, now: Instant) {
        self.refused(e.code());
        let msg = messages::tpa_error(e.code(), e.message(), json!({}), &iso8601(now));
        net.send_text(id, &msg.to_string());
        let bound = match self.links.remove(&id) {
            Some(Link::App { bound }) => bound,
            _ => None,
        };
        net.close_websocket(id, 1008, e.reason(), now);
        // A bound connection refused (a second init for another app) was its app's only
        // connection: handle it as a drop, or the app stays "active" on a closed socket.
        if let Some((sk, app)) = bound {
            self.app_dropped(net, id, sk, app, now);
        }
    }

    fn app_message(
        &mut self,
        net: &mut Net,
        id: ConnId,
        bound: Option<(SessKey, usize)>,
        text: &str,
        now: Instant,
    ) {
        let v: Value = match serde_json::from_str(text) {
            Ok(v @ Value::Object(_)) => v,
            _ if bound.is_none() => return self.refuse_app(net, id, JoinError::Malformed, now),
            _ => {
                return self.app_error(
                    net,
                    id,
                    "MALFORMED_MESSAGE",
                    "expected a JSON object with a 'type'",
                    now,
                )
            }
        };
        let ty = v.get("type").and_then(Value::as_str).unwrap_or("");
        match (ty, bound) {
            ("tpa_connection_init", None) => self.app_init(net, id, &v, now),
            ("tpa_connection_init", Some((sk, app))) => {
                // Same app again: acknowledge again. Another app on this socket: refused.
                if v.get("packageName").and_then(Value::as_str)
                    == Some(&self.cfg.apps[app].package_name)
                {
                    self.send_ack(net, id, sk, app, now);
                } else {
                    self.refuse_app(net, id, JoinError::AlreadyInitialized, now);
                }
            }
            (_, None) => self.refuse_app(net, id, JoinError::NotInitialized, now),
            ("subscription_update", Some((sk, app))) => {
                self.subscription_update(net, id, sk, app, &v, now)
            }
            ("display_event", Some((sk, app))) => {
                let mut v = v;
                if let Some(o) = v.as_object_mut() {
                    o.insert(
                        "packageName".into(),
                        Value::from(self.cfg.apps[app].package_name.as_str()),
                    );
                    o.remove("sessionId");
                }
                self.send_to_glasses(net, sk, &v);
            }
            _ => log::debug!("ignored app message of type {ty:?}"),
        }
    }

    fn app_error(
        &mut self,
        net: &mut Net,
        id: ConnId,
        code: &'static str,
        message: &str,
        now: Instant,
    ) {
        self.refused(code);
        net.send_text(
            id,
            &messages::tpa_error(code, message, json!({}), &iso8601(now)).to_string(),
        );
    }

    fn app_init(&mut self, net: &mut Net, id: ConnId, v: &Value, now: Instant) {
        let field = |k: &str| v.get(k).and_then(Value::as_str);
        let (Some(pkg), Some(session_id)) = (field("packageName"), field("sessionId")) else {
            return self.refuse_app(net, id, JoinError::Malformed, now);
        };
        let Some(app) = self.app_index(pkg) else {
            return self.refuse_app(net, id, JoinError::PackageNotFound, now);
        };
        if !field("apiKey")
            .is_some_and(|k| auth::verify_api_key(k, &self.cfg.apps[app].hashed_api_key))
        {
            return self.refuse_app(net, id, JoinError::InvalidApiKey, now);
        }
        let peer = net.peer(id).cloned().unwrap_or(Peer::InProcess);
        match self.check_join(app, session_id, &peer) {
            Ok((sk, app)) => self.bind_app(net, id, sk, app, now),
            Err(e) => self.refuse_app(net, id, e, now),
        }
    }

    fn bind_app(&mut self, net: &mut Net, id: ConnId, sk: SessKey, app: usize, now: Instant) {
        let Some(run) = self.run_mut(sk, app) else {
            return;
        };
        let old = run.conn.replace(id);
        let was_loading = !matches!(run.state, AppState::Active);
        run.state = AppState::Active;
        run.active_since = Some(now);
        run.error = None;
        if let Some(old) = old.filter(|o| *o != id) {
            self.links.remove(&old);
            net.close_websocket(old, 1008, "Replaced by a newer connection", now);
        }
        self.links.insert(
            id,
            Link::App {
                bound: Some((sk, app)),
            },
        );
        self.send_ack(net, id, sk, app, now);
        if was_loading {
            self.send_to_glasses(
                net,
                sk,
                &json!({
                    "type": "app_started",
                    "packageName": self.cfg.apps[app].package_name,
                    "timestamp": iso8601(now),
                }),
            );
        }
        self.send_app_state(net, sk, now);
    }

    fn send_ack(&mut self, net: &mut Net, id: ConnId, sk: SessKey, app: usize, now: Instant) {
        let Some(s) = self.session(sk) else { return };
        let ack = json!({
            "type": "tpa_connection_ack",
            "sessionId": format!("{}-{}", s.user, self.cfg.apps[app].package_name),
            "settings": [],
            "mentraosSettings": s.settings(),
            "capabilities": messages::capabilities(),
            "timestamp": iso8601(now),
        });
        net.send_text(id, &ack.to_string());
    }

    /// Replace the app's subscriptions with the valid, permitted entries; report the rest
    /// (unknown entries as `tpa_connection_error`, forbidden ones as `permission_error`).
    fn subscription_update(
        &mut self,
        net: &mut Net,
        id: ConnId,
        sk: SessKey,
        app: usize,
        v: &Value,
        now: Instant,
    ) {
        let Some(list) = v.get("subscriptions").and_then(Value::as_array) else {
            return self.app_error(
                net,
                id,
                "MALFORMED_MESSAGE",
                "subscriptions must be an array",
                now,
            );
        };
        let spec = &self.cfg.apps[app];
        let mut subs = Vec::new();
        let mut unknown = Vec::new();
        let mut denied = Vec::new();
        for entry in list {
            let name = match entry {
                Value::String(s) => s.as_str(),
                Value::Object(o) => o.get("stream").and_then(Value::as_str).unwrap_or(""),
                _ => "",
            };
            // A bare `transcription` means English, as the cloud has always read it.
            let name = if name == "transcription" {
                "transcription:en-US"
            } else {
                name
            };
            match check_subscription(spec, name) {
                SubCheck::Ok => {
                    if !subs.iter().any(|s| s == name) {
                        subs.push(name.to_string());
                    }
                }
                SubCheck::Unknown => unknown.push(entry.to_string()),
                SubCheck::NeedsPermission(p) => denied.push(json!({
                    "stream": name,
                    "requiredPermission": p,
                    "message": format!("{name} needs the {p} permission"),
                })),
            }
        }
        if !unknown.is_empty() {
            let msg = messages::tpa_error(
                "INVALID_SUBSCRIPTION",
                "unknown stream types were ignored; the rest were applied",
                json!({ "invalid": unknown }),
                &iso8601(now),
            );
            self.refused("INVALID_SUBSCRIPTION");
            net.send_text(id, &msg.to_string());
        }
        if !denied.is_empty() {
            self.refused("PERMISSION_DENIED");
            let msg = json!({
                "type": "permission_error",
                "message": "some subscriptions need permissions this app does not have",
                "details": denied,
                "timestamp": iso8601(now),
            });
            net.send_text(id, &msg.to_string());
        }
        if let Some(run) = self.run_mut(sk, app) {
            run.subs = subs;
        }
        self.send_app_state(net, sk, now);
    }

    // ---- what the glasses see ------------------------------------------------------------

    fn send_to_glasses(&self, net: &mut Net, sk: SessKey, msg: &Value) {
        if let Some(g) = self.session(sk).and_then(|s| s.glasses) {
            net.send_text(g, &msg.to_string());
        }
    }

    fn send_app_state(&self, net: &mut Net, sk: SessKey, now: Instant) {
        let Some(s) = self.session(sk) else { return };
        let msg = json!({
            "type": "app_state_change",
            "sessionId": s.user,
            "userSession": self.user_session_json(sk),
            "timestamp": iso8601(now),
        });
        self.send_to_glasses(net, sk, &msg);
    }

    fn app_state_json(&self, sk: SessKey, app: usize) -> Value {
        match self.session(sk).and_then(|s| s.apps.get(&app)) {
            Some(r) => json!({
                "state": r.state.name(),
                "error": r.error,
                "restarts": r.restarts,
                "subscriptions": r.subs,
            }),
            None => json!({ "state": "stopped" }),
        }
    }

    fn user_session_json(&self, sk: SessKey) -> Value {
        let Some(s) = self.session(sk) else {
            return Value::Null;
        };
        let pkg = |i: &usize| self.cfg.apps[*i].package_name.clone();
        let active: Vec<String> = s
            .apps
            .iter()
            .filter(|(_, r)| matches!(r.state, AppState::Active | AppState::Reconnecting { .. }))
            .map(|(i, _)| pkg(i))
            .collect();
        let loading: Vec<String> = s
            .apps
            .iter()
            .filter(|(_, r)| {
                matches!(
                    r.state,
                    AppState::Loading { .. } | AppState::RestartWait { .. }
                )
            })
            .map(|(i, _)| pkg(i))
            .collect();
        let mut subs = serde_json::Map::new();
        let mut what = Vec::<String>::new();
        let mut states = serde_json::Map::new();
        for (i, r) in &s.apps {
            subs.insert(pkg(i), json!(r.subs));
            for x in &r.subs {
                if !what.contains(x) {
                    what.push(x.clone());
                }
            }
            states.insert(pkg(i), self.app_state_json(sk, *i));
        }
        let installed: Vec<Value> = self
            .cfg
            .apps
            .iter()
            .map(|a| {
                json!({
                    "packageName": a.package_name,
                    "name": a.name,
                    "publicUrl": a.public_url,
                    "isSystemApp": a.is_system_app,
                })
            })
            .collect();
        json!({
            "sessionId": s.user,
            "userId": s.user,
            "startTime": iso8601(s.started),
            "installedApps": installed,
            "appSubscriptions": subs,
            "activeAppPackageNames": active,
            "loadingApps": loading,
            "whatToStream": what,
            "appStates": states,
        })
    }
}
