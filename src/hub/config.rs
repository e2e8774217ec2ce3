//! Core layer (values), part of the hub: its configuration as values — the app registry,
//! the URLs handed to apps, the caps (sessions, apps per session, webhooks, layouts,
//! requests) and the timings of the lifecycle. Built by `crate::config` from the config file
//! (or by tests directly); the hub holds one and changes only its app registry (a reload).
//!
//! Owns no state. The defaults here are the documented ones (README, PROTOCOL §15).

use super::display::DisplayTimings;
use super::registry::AppSpec;
use super::requests::RequestTimings;
use std::time::Duration;

/// How long the box's own glasses tokens live by default: a day, a venue's day of lending.
pub const DEFAULT_TOKEN_LIFETIME_SECS: u64 = 24 * 3600;

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
    /// How long a start may wait for a free webhook slot at its app server before it fails
    /// `WEBHOOK_QUEUE_TIMEOUT` (the connect deadline counts from the send, not from here).
    pub webhook_queue_timeout: Duration,
    /// Restarts through the webhook after unexpected drops, and the first backoff (doubling).
    pub restart_attempts: u32,
    pub restart_backoff: Duration,
    /// An app that stayed up this long has its restart count reset.
    pub restart_reset_after: Duration,
    /// A glasses connection must send `connection_init` within this.
    pub glasses_init_timeout: Duration,
    /// An app connection must send `tpa_connection_init` within this.
    pub app_init_timeout: Duration,
    /// After a `microphone_state_change`, further changes wait this long (PROTOCOL §15).
    pub mic_debounce: Duration,
    /// The display manager's throttle, boot, lock and lifetime (PROTOCOL §15).
    pub display: DisplayTimings,
    /// How long app requests wait for the glasses' reply.
    pub requests: RequestTimings,
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
            webhook_queue_timeout: Duration::from_secs(60),
            restart_attempts: 3,
            restart_backoff: Duration::from_secs(1),
            restart_reset_after: Duration::from_secs(60),
            glasses_init_timeout: Duration::from_secs(10),
            app_init_timeout: Duration::from_secs(5),
            mic_debounce: Duration::from_secs(1),
            display: DisplayTimings::default(),
            requests: RequestTimings::default(),
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
    /// Webhooks in flight to one app server (host and port) at once.
    pub max_webhooks_per_server: usize,
    /// Webhooks waiting for a slot, all app servers together; one more is refused
    /// (`WEBHOOK_QUEUE_FULL`).
    pub max_queued_webhooks: usize,
    /// App start/stop requests per session: a burst of this many, then one per
    /// `lifecycle_refill`.
    pub lifecycle_burst: u32,
    pub lifecycle_refill: Duration,
    /// A `display_event` layout larger than this (JSON bytes) is refused (`LAYOUT_TOO_LARGE`).
    pub max_layout_bytes: usize,
    /// App requests to the glasses (photos, audio, LED, location, streams) pending per session.
    pub max_pending_requests: usize,
    /// Sessions held at once; a new user past it is refused (`TOO_MANY_SESSIONS`).
    pub max_sessions: usize,
    /// Apps started (and not given up on) in one session; one more is refused
    /// (`TOO_MANY_APPS`).
    pub max_apps_per_session: usize,
    /// How glasses tokens are checked beyond their signature (leeway, tokens without `exp`).
    pub tokens: crate::auth::jwt::TokenPolicy,
    /// How long the tokens the box issues live unless told otherwise (`token`, devices).
    pub token_lifetime: Duration,
    /// How upstream account logins are verified; `None`: the box takes none (501).
    pub account_login: Option<super::accounts::AccountLogin>,
    /// Venue feeds: `(feed name, package name of the app that publishes it)`, in config order;
    /// every session follows the first.
    pub venue_feeds: Vec<(String, String)>,
    /// Fetch each (non-system) app's `tpa_config.json` at its first start and on a reload
    /// ([`super::app_config`]); off by default here, on in the binary (`fetchAppConfig`).
    pub fetch_app_config: bool,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            public_ws_url: "ws://127.0.0.1:8002".into(),
            internal_ws_url: "ws://127.0.0.1:8002".into(),
            jwt_secret: Vec::new(),
            apps: Vec::new(),
            timings: Timings::default(),
            max_webhooks_per_server: 16,
            fetch_app_config: false,
            max_queued_webhooks: 10_000,
            lifecycle_burst: 10,
            lifecycle_refill: Duration::from_secs(1),
            max_layout_bytes: 32 * 1024,
            max_pending_requests: 16,
            max_sessions: 10_000,
            max_apps_per_session: 32,
            tokens: crate::auth::jwt::TokenPolicy::default(),
            token_lifetime: Duration::from_secs(DEFAULT_TOKEN_LIFETIME_SECS),
            account_login: None,
            venue_feeds: Vec::new(),
        }
    }
}
