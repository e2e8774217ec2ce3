//! Core layer (sans-IO, top), part of the server composition: the `/ui/` pages — an operator
//! page and a glasses emulator — and the small JSON API behind them.
//!
//! Serves the routes under `/ui/` that the route table (`router.rs`) gives it: the static files (HTML, CSS and plain JavaScript compiled into
//! the binary, nothing fetched from elsewhere), the operator feed `GET /ui/api/state` (sessions,
//! their apps and screens, counters, the last refusals: rendered from the core's state on each
//! call, the page polls it), the operator actions `POST /ui/api/sessions/{user}/apps/{pkg}/start|stop` (the
//! hub's REST start/stop), the devices calls (`devices.rs`), and the development-user shortcut `POST /ui/dev/token` (a glasses
//! token for a typed user id, only while the public development secret signs tokens).
//!
//! Invariants: served only when the config gives an operator token; every `/ui/api/` call is
//! checked against it first (`Authorization: Bearer`, compared in constant time over SHA-256
//! digests, so neither content nor length leaks) and refused with a 401 JSON body
//! (`INVALID_OPERATOR_TOKEN`) otherwise, counted like every refusal; nothing under `/ui/` reads
//! a clock or a file; the recent-refusals list is bounded ([`RECENT`]) and costs one sum per
//! turn while the pages are served, nothing otherwise.

use super::router::{Operator, Page};
use super::Server;
use crate::auth::DEV_SECRET;
use crate::histogram;
use crate::net::{ConnId, Outbox, KINDS};
use crate::time::Now;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// An embedded file: its content type and content.
fn file(page: Page) -> (&'static str, &'static str) {
    match page {
        Page::Index => (HTML, include_str!("ui/index.html")),
        Page::Operator => (HTML, include_str!("ui/operator.html")),
        Page::Glasses => (HTML, include_str!("ui/glasses.html")),
        Page::Css => (CSS, include_str!("ui/ui.css")),
        Page::Render => (JS, include_str!("ui/render.js")),
        Page::OperatorScript => (JS, include_str!("ui/operator.js")),
        Page::GlassesScript => (JS, include_str!("ui/glasses.js")),
        Page::Favicon => (SVG, include_str!("ui/favicon.svg")),
    }
}

/// Headers of every page and script: nothing from another origin, no framing, no sniffing.
const PAGE_HEADERS: &[&str] = &[
    "Content-Security-Policy: default-src 'self'; img-src 'self' data:; media-src 'self' blob:; frame-ancestors 'none'",
    "X-Content-Type-Options: nosniff",
    "Referrer-Policy: no-referrer",
    "Cache-Control: no-cache",
];

const NO_STORE: &[&str] = &["Cache-Control: no-store"];

/// Recent refusals kept for the operator page.
const RECENT: usize = 40;

/// The last refusals, oldest first, each with the time it was noticed: refusal counters are
/// compared after each turn (only when their total moved) and what grew is noted.
#[derive(Debug, Default)]
pub(super) struct RecentRefusals {
    /// The refusal total when last looked at, and the counts by code then.
    seen: u64,
    counts: Vec<(&'static str, u64)>,
    recent: std::collections::VecDeque<(String, &'static str, u64)>,
}

impl Server {
    /// Whether the `/ui/` pages are served (the config gave an operator token).
    pub fn ui_enabled(&self) -> bool {
        self.net.cfg.operator_token.is_some()
    }

    /// `GET /ui/{file}`: one of the embedded files.
    pub(super) fn ui_page(&mut self, id: ConnId, page: Page) {
        let (content_type, body) = file(page);
        if let Some(out) = self.net.out(id) {
            crate::http::write_response(out, 200, content_type, PAGE_HEADERS, body.as_bytes());
        }
        self.net.finish(id);
    }

    /// `/ui/config.json`: whether the pages may offer development users.
    pub(super) fn ui_config(&mut self, id: ConnId) {
        let body = json!({ "devUsers": self.dev_secret() });
        self.net.respond_json(id, 200, &body, NO_STORE);
    }

    /// Note the refusals counted since the last call, with `now`'s wall time (only while the
    /// pages are served; a no-op unless the refusal total moved).
    pub(super) fn note_refusals(&mut self, now: Now) {
        if !self.ui_enabled() {
            return;
        }
        let st = &self.net.stats;
        let total = self.hub.counters.refusals_total
            + st.refused_at_capacity
            + st.refused_per_address
            + st.handshake_timeouts;
        if total == self.recent_refusals.seen {
            return;
        }
        let counts = self.refusal_counts();
        let r = &mut self.recent_refusals;
        let at = now.iso();
        for &(code, n) in &counts {
            let before = r.counts.iter().find(|(c, _)| *c == code).map_or(0, |x| x.1);
            if n > before {
                r.recent.push_back((at.to_string(), code, n - before));
            }
        }
        while r.recent.len() > RECENT {
            r.recent.pop_front();
        }
        r.counts = counts;
        r.seen = total;
    }

    /// Tokens are signed with the public development secret.
    fn dev_secret(&self) -> bool {
        self.hub.config().jwt_secret == DEV_SECRET.as_bytes()
    }

    /// Whether `given` (the request's bearer token) is the operator token.
    fn is_operator(&self, given: Option<&str>) -> bool {
        let Some(expected) = &self.net.cfg.operator_token else {
            return false;
        };
        let Some(given) = given else {
            return false;
        };
        let digest = |s: &str| Sha256::digest(s.trim().as_bytes());
        crate::auth::constant_time_eq(&digest(given), &digest(expected))
    }

    /// A call under `/ui/api/` with the request's bearer `token`: the operator token first,
    /// then the call.
    pub(super) fn ui_api(
        &mut self,
        id: ConnId,
        call: Operator,
        token: Option<&str>,
        body: &[u8],
        now: Now,
    ) {
        if !self.is_operator(token) {
            self.hub.counters.refused("INVALID_OPERATOR_TOKEN");
            return self.net.respond_error(
                id,
                401,
                "INVALID_OPERATOR_TOKEN",
                "Authorization: Bearer <operator token> required",
                &["WWW-Authenticate: Bearer"],
            );
        }
        match call {
            Operator::State => {
                let body = self.ui_state(now);
                self.net.respond_json(id, 200, &body, NO_STORE);
            }
            Operator::Action {
                user,
                package,
                start,
            } => {
                let action = if start { "start" } else { "stop" };
                log::info!("event=operator_{action} session={user:?} package={package}");
                self.hub
                    .start_or_stop(&mut self.net, id, &user, &package, start, now);
            }
            Operator::Devices => self.devices_list(id),
            Operator::AddDevices => self.devices_add(id, body, now),
            Operator::RevokeDevice(name) => self.devices_revoke(id, &name, now),
            Operator::DeviceToken(name) => self.devices_token(id, &name),
            Operator::Follow(feed) => {
                let user = serde_json::from_slice::<Value>(body)
                    .ok()
                    .and_then(|v| v["user"].as_str().map(str::to_string))
                    .filter(|u| !u.is_empty() && u.len() <= 256);
                let Some(user) = user else {
                    self.hub.counters.refused("BAD_REQUEST");
                    return self.net.respond_error(
                        id,
                        400,
                        "BAD_REQUEST",
                        r#"the body must be {"user": "<user id>"}"#,
                        &[],
                    );
                };
                self.hub.venue_follow(&mut self.net, id, &user, &feed, now);
            }
            Operator::Refuse(refusal) => refusal.respond(&mut self.net, id),
        }
    }

    /// `POST /ui/dev/token` `{"userId": …}`: a glasses token for that user, only while the
    /// public development secret signs tokens (anyone can make one then anyway).
    pub(super) fn dev_token(&mut self, id: ConnId, body: &[u8]) {
        if !self.dev_secret() {
            self.hub.counters.refused("DEV_USERS_DISABLED");
            return self.net.respond_error(
                id,
                403,
                "DEV_USERS_DISABLED",
                "development users exist only while the development secret is in use; paste a glasses token",
                &[],
            );
        }
        let user = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v["userId"].as_str().map(str::trim).map(str::to_string))
            .filter(|u| !u.is_empty() && u.len() <= 256 && !u.chars().any(char::is_control));
        let Some(user) = user else {
            return self.net.respond_error(
                id,
                400,
                "MALFORMED_BODY",
                "expected {\"userId\": \"a non-empty user id\"}",
                &[],
            );
        };
        let token = crate::auth::jwt::glasses_token(&user, DEV_SECRET.as_bytes());
        self.net.respond_json(
            id,
            200,
            &json!({ "success": true, "userId": user, "token": token }),
            NO_STORE,
        );
    }

    /// The operator feed: sessions with their apps and screens, the registered apps, and the
    /// counters (totals; the page turns them into rates between two polls).
    pub fn ui_state(&self, now: Now) -> Value {
        let st = &self.net.stats;
        let hc = &self.hub.counters;
        let mut conns = [0u64; KINDS.len()];
        for c in self.net.iter() {
            conns[c.kind()] += 1;
        }
        let by_kind = |v: &[u64; 5]| -> Value {
            KINDS
                .iter()
                .zip(v.iter())
                .map(|(k, n)| (k.to_string(), json!(n)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        let refusals: serde_json::Map<String, Value> = self
            .refusal_counts()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(code, n)| (code.to_string(), json!(n)))
            .collect();
        let lat = &hc.webhook_latency;
        let count = lat.count();
        let p90 = lat
            .cumulative(histogram::WEBHOOK_US)
            .find(|(_, acc)| count > 0 && *acc * 10 >= count * 9)
            .map(|(bound, _)| bound.map(|s| s * 1000.0));
        let display = self.hub.display_stats();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptimeSeconds": now.mono.saturating_since(self.started).as_secs(),
            "time": now.iso(),
            "sessions": self.hub.operator_sessions(now),
            "recentRefusals": self.recent_refusals.recent.iter().rev()
                .map(|(at, code, n)| json!({"at": at, "code": code, "count": n}))
                .collect::<Vec<_>>(),
            "apps": self.hub.operator_apps(),
            "feeds": self.hub.operator_feeds(),
            "webhookServers": self.hub.webhook_servers(now).into_iter()
                .map(|l| json!({
                    "server": l.server, "inFlight": l.in_flight, "waiting": l.waiting,
                    "oldestWaitMs": l.oldest.as_millis() as u64,
                }))
                .collect::<Vec<_>>(),
            "counters": {
                "connections": by_kind(&conns),
                "messagesIn": by_kind(&st.messages_in),
                "messagesOut": by_kind(&st.messages_out),
                "dropped": hc.dropped.values().sum::<u64>(),
                "refusals": refusals,
                "webhooks": {
                    "count": count,
                    "meanMs": (count > 0).then(|| lat.sum_seconds() * 1000.0 / count as f64),
                    "p90AtMostMs": p90.flatten(),
                    "failed": hc.webhooks_failed,
                    "queued": hc.webhooks_queued,
                },
                "displays": {
                    "sent": display.sent, "coalesced": display.coalesced,
                    "refused": display.refused, "expired": display.expired,
                },
            },
        })
    }
}
