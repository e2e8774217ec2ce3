//! Core layer (sans-IO): the server core — the connection table ([`net::Net`]) joined to the
//! application core ([`crate::hub::Hub`]).
//!
//! Owns the protocol step of every connection: HTTP requests are parsed and routed (health,
//! REST, upgrades), WebSocket frames are parsed in place and their messages handed to the hub
//! (or echoed on the echo route), outbound HTTP responses are parsed and reported to the hub.
//! It never touches a socket or the clock: the shell calls `handle_*` with bytes and the current
//! [`Instant`], then drains the `poll_*` methods (the quinn-proto pattern).
//!
//! Call order for one event-loop turn: `handle_accept` / `handle_input` / `handle_eof` for each
//! ready socket, `handle_timeout(now)`, then `poll_connect` until `None` (open those sockets),
//! `poll_dirty` until `None` (write `output`, report it with `consume_output`, close where
//! `wants_close`), `handle_closed` when a transport is gone; sleep until `poll_timeout`.
//!
//! Invariants: memory per connection is bounded (input by one frame or request plus one read,
//! output by `max_output`); nothing reachable from peer bytes panics; a connection whose output
//! is above `read_pause` is not read (backpressure).

pub mod conn;
pub mod net;
pub mod timers;

use crate::http::{parse_request, Request, RequestLimits};
use crate::hub::{Hub, HubConfig};
use crate::time::Instant;
use crate::ws::frame::{parse_header, write_frame, Opcode};
use crate::ws::handshake::{validate_upgrade, write_accept};
use crate::ws::{Limits, Message, Receiver, Role};
pub use conn::{Conn, ConnId, Endpoint, Peer, Phase};
pub use net::{HttpOutcome, Net, Target};
use std::time::Duration;

/// Everything the connection layer can be tuned by.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Serve the echo WebSocket route at `/echo`.
    pub echo: bool,
    /// From accept until a complete request (or the upgrade) has arrived.
    pub handshake_timeout: Duration,
    /// How long to wait for the peer's close frame after ours.
    pub close_timeout: Duration,
    pub ws: Limits,
    pub http: RequestLimits,
    /// Output past this many bytes drops the connection (a reader that does not keep up).
    pub max_output: usize,
    /// Output past this many bytes stops reading from the connection until it drains.
    pub read_pause: usize,
    pub max_connections: usize,
    /// Ping open WebSockets this often (none: never).
    pub ping_interval: Option<Duration>,
    /// A WebSocket silent this long (no byte, not even a pong) is closed with 4000.
    pub idle_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            echo: false,
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(2),
            ws: Limits::default(),
            http: RequestLimits::default(),
            max_output: 1024 * 1024,
            read_pause: 64 * 1024,
            max_connections: 20_000,
            ping_interval: Some(Duration::from_secs(15)),
            idle_timeout: Duration::from_secs(45),
        }
    }
}

/// Counters of the connection layer, for `/health` and `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub accepted: u64,
    pub upgrades: u64,
    pub protocol_errors: u64,
    pub handshake_timeouts: u64,
    pub overflow_drops: u64,
    pub refused_at_capacity: u64,
    pub idle_closes: u64,
}

pub struct Server {
    pub net: Net,
    pub hub: Hub,
    started: Instant,
    /// The latest `now` handed in (for reports that are not inputs, such as `/metrics`).
    last_now: Instant,
}

impl Server {
    pub fn new(cfg: ServerConfig, hub: HubConfig, now: Instant) -> Server {
        Server {
            net: Net::new(cfg),
            hub: Hub::new(hub),
            started: now,
            last_now: now,
        }
    }

    pub fn config(&self) -> &ServerConfig {
        &self.net.cfg
    }

    pub fn connection_count(&self) -> usize {
        self.net.len()
    }

    pub fn websocket_count(&self) -> usize {
        self.net.websocket_count()
    }

    pub fn stats(&self) -> &Stats {
        &self.net.stats
    }

    pub fn conn_at_token(&self, token: usize) -> Option<ConnId> {
        self.net.at_token(token)
    }

    // ---- inputs --------------------------------------------------------------------------

    /// A transport accepted a connection. `None` only when no slot can be encoded (the shell
    /// drops the stream); over `max_connections` the connection is answered 503.
    pub fn handle_accept(&mut self, peer: Peer, now: Instant) -> Option<ConnId> {
        let id = self.net.insert(peer, Phase::Http { scanned: 0 })?;
        self.net.stats.accepted += 1;
        if self.net.len() > self.net.cfg.max_connections {
            self.net.stats.refused_at_capacity += 1;
            self.net
                .respond_error(id, 503, "AT_CAPACITY", "server at connection capacity", &[]);
        } else {
            let at = now + self.net.cfg.handshake_timeout;
            self.net.set_deadline(id, Some(at));
        }
        Some(id)
    }

    /// Bytes arrived on `id`. `data` may be modified (unmasked in place).
    pub fn handle_input(&mut self, id: ConnId, data: &mut [u8], now: Instant) {
        let Some(c) = self.net.get_mut(id) else {
            return;
        };
        c.last_rx = now;
        if c.pending_in.is_empty() {
            let used = self.process(id, data, now);
            let rest = &data[used.min(data.len())..];
            if let Some(c) = self.net.get_mut(id) {
                if !rest.is_empty() && accepts_input(&c.phase) {
                    c.pending_in.extend_from_slice(rest);
                }
            }
        } else {
            let mut buf = std::mem::take(&mut c.pending_in);
            buf.extend_from_slice(data);
            let used = self.process(id, &mut buf, now);
            buf.drain(..used.min(buf.len()));
            if let Some(c) = self.net.get_mut(id) {
                if !buf.is_empty() && accepts_input(&c.phase) {
                    c.pending_in = buf;
                }
            }
        }
        self.net.check_cap(id);
        if self
            .net
            .get(id)
            .is_some_and(|c| c.close_after_flush || !c.out.is_empty())
        {
            self.net.mark_dirty(id);
        }
        self.after(now);
    }

    /// The peer closed its sending side.
    pub fn handle_eof(&mut self, id: ConnId, now: Instant) {
        let Some(c) = self.net.get_mut(id) else {
            return;
        };
        let pending = std::mem::take(&mut c.pending_in);
        if let Phase::Client { .. } = c.phase {
            // A response without Content-Length ends at EOF.
            let outcome = match parse_response_head(&pending) {
                Some((status, _)) => HttpOutcome::Status(status),
                None => HttpOutcome::Failed("connection closed before a response"),
            };
            self.net.complete_client(id, outcome);
        } else {
            self.net.finish(id);
        }
        self.after(now);
    }

    /// The transport for `id` is gone (closed by us or failed); forget the connection.
    pub fn handle_closed(&mut self, id: ConnId, now: Instant) {
        if self.net.remove(id).is_some() {
            self.hub.on_closed(&mut self.net, id, now);
        }
        self.after(now);
    }

    /// Fire every deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(id) = self.net.pop_expired(now) {
            let Some(c) = self.net.get_mut(id) else {
                continue;
            };
            match c.phase {
                Phase::Http { .. } => {
                    c.pending_in = Vec::new();
                    self.net.stats.handshake_timeouts += 1;
                    self.net.respond_error(
                        id,
                        408,
                        "HANDSHAKE_TIMEOUT",
                        "request not complete within the handshake deadline",
                        &[],
                    );
                }
                Phase::Client { .. } => self
                    .net
                    .complete_client(id, HttpOutcome::Failed("timed out")),
                Phase::Closing { .. } | Phase::Done => self.net.abort(id),
                Phase::Ws { .. } => self.heartbeat(id, now),
            }
        }
        self.hub.handle_timeout(&mut self.net, now);
        self.after(now);
    }

    // ---- outputs -------------------------------------------------------------------------

    /// When the shell must next call `handle_timeout`.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        match (self.net.poll_timeout(), self.hub.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// An outbound connection the shell must open (then treat like any other connection).
    pub fn poll_connect(&mut self) -> Option<(ConnId, Target)> {
        self.net.poll_connect()
    }

    pub fn poll_dirty(&mut self) -> Option<ConnId> {
        self.net.poll_dirty()
    }

    pub fn output(&self, id: ConnId) -> &[u8] {
        self.net.output(id)
    }

    pub fn consume_output(&mut self, id: ConnId, n: usize) {
        self.net.consume_output(id, n)
    }

    pub fn wants_read(&self, id: ConnId) -> bool {
        self.net.get(id).is_some_and(|c| {
            !matches!(c.phase, Phase::Done) && c.out.len() < self.net.cfg.read_pause
        })
    }

    pub fn wants_close(&self, id: ConnId) -> bool {
        self.net
            .get(id)
            .is_none_or(|c| c.close_after_flush && c.out.is_empty())
    }

    /// The Prometheus text exposition of the server's counters and gauges.
    pub fn metrics(&self) -> String {
        use std::fmt::Write;
        let st = &self.net.stats;
        let hc = &self.hub.counters;
        let mut m = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(
                m,
                "# HELP augmentos_{name} {help}\n# TYPE augmentos_{name} {kind}"
            );
            for (labels, v) in samples {
                let _ = writeln!(m, "augmentos_{name}{labels} {v}");
            }
        };
        let total = self.net.len() as u64;
        let ws = self.net.websocket_count() as u64;
        metric(
            "connections",
            "gauge",
            "Open connections.",
            &[("{kind=\"all\"}", total), ("{kind=\"websocket\"}", ws)],
        );
        metric(
            "sessions",
            "gauge",
            "User sessions.",
            &[("", self.hub.session_count() as u64)],
        );
        metric(
            "accepted_total",
            "counter",
            "Connections accepted.",
            &[("", st.accepted)],
        );
        metric(
            "upgrades_total",
            "counter",
            "WebSocket upgrades.",
            &[("", st.upgrades)],
        );
        metric(
            "protocol_errors_total",
            "counter",
            "WebSocket protocol violations.",
            &[("", st.protocol_errors)],
        );
        metric(
            "handshake_timeouts_total",
            "counter",
            "Requests not complete in time.",
            &[("", st.handshake_timeouts)],
        );
        metric(
            "overflow_drops_total",
            "counter",
            "Connections dropped for not reading.",
            &[("", st.overflow_drops)],
        );
        metric(
            "refused_at_capacity_total",
            "counter",
            "Connections refused at capacity.",
            &[("", st.refused_at_capacity)],
        );
        metric(
            "webhooks_sent_total",
            "counter",
            "Webhook requests sent.",
            &[("", hc.webhooks_sent)],
        );
        metric(
            "webhooks_failed_total",
            "counter",
            "Webhook requests failed.",
            &[("", hc.webhooks_failed)],
        );
        metric(
            "app_restarts_total",
            "counter",
            "Apps restarted after a drop.",
            &[("", hc.app_restarts)],
        );
        metric(
            "sessions_ended_total",
            "counter",
            "Sessions ended after the grace period.",
            &[("", hc.sessions_ended)],
        );
        let labels: Vec<(String, u64)> = hc
            .refusals
            .iter()
            .map(|(k, v)| (format!("{{code=\"{k}\"}}"), *v))
            .collect();
        let refs: Vec<(&str, u64)> = labels.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        metric(
            "refusals_total",
            "counter",
            "Refused requests and messages, by code.",
            &refs,
        );
        // Per bound connection: round trip of the last ping and seconds since the last byte.
        let escape = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
        let now = self.last_now;
        let _ = writeln!(m, "# HELP augmentos_connection_rtt_microseconds Round trip of the last ping.\n# TYPE augmentos_connection_rtt_microseconds gauge");
        let bound = self.hub.bound_connections();
        let label = |kind: &str, user: &str, pkg: Option<&str>| match pkg {
            Some(p) => format!(
                "{{kind=\"{kind}\",user=\"{}\",package=\"{}\"}}",
                escape(user),
                escape(p)
            ),
            None => format!("{{kind=\"{kind}\",user=\"{}\"}}", escape(user)),
        };
        for (id, kind, user, pkg) in &bound {
            if let Some(rtt) = self.net.get(*id).and_then(|c| c.rtt_us) {
                let _ = writeln!(
                    m,
                    "augmentos_connection_rtt_microseconds{} {rtt}",
                    label(kind, user, *pkg)
                );
            }
        }
        let _ = writeln!(m, "# HELP augmentos_connection_idle_seconds Seconds since the last byte arrived.\n# TYPE augmentos_connection_idle_seconds gauge");
        for (id, kind, user, pkg) in &bound {
            if let Some(c) = self.net.get(*id) {
                let idle = now.saturating_since(c.last_rx).as_secs_f64();
                let _ = writeln!(
                    m,
                    "augmentos_connection_idle_seconds{} {idle:.3}",
                    label(kind, user, *pkg)
                );
            }
        }
        m
    }

    // ---- internals -----------------------------------------------------------------------

    /// A WebSocket's heartbeat deadline: close it if it has been silent too long, otherwise
    /// ping it (the round trip is timed from `ping_sent`).
    fn heartbeat(&mut self, id: ConnId, now: Instant) {
        let (Some(interval), idle) = (self.net.cfg.ping_interval, self.net.cfg.idle_timeout) else {
            return;
        };
        let Some(c) = self.net.get_mut(id) else {
            return;
        };
        if now.saturating_since(c.last_rx) >= idle {
            self.net.stats.idle_closes += 1;
            self.net.fail_websocket(id, 4000, "no pong responses", now);
            return;
        }
        c.ping_sent = Some(now);
        self.net.send_frame(id, Opcode::Ping, &[b"edge"]);
        self.net.set_deadline(id, Some(now + interval));
    }

    /// Hand finished outbound requests to the hub.
    fn after(&mut self, now: Instant) {
        while let Some((id, outcome)) = self.net.poll_done() {
            self.hub.on_http_done(&mut self.net, id, outcome, now);
        }
    }

    /// Run the connection's protocol over `buf`; returns the bytes used up.
    fn process(&mut self, id: ConnId, buf: &mut [u8], now: Instant) -> usize {
        let max_frame = self.net.cfg.ws.max_frame;
        let mut at = 0;
        loop {
            let Some(c) = self.net.get_mut(id) else {
                return buf.len();
            };
            let used = match c.phase {
                Phase::Http { .. } => self.process_http(id, &buf[at..], now),
                Phase::Ws { .. } => self.process_ws(id, &mut buf[at..], now),
                Phase::Closing { failed } => skim_for_close(c, failed, &buf[at..], max_frame),
                Phase::Client { .. } => self.process_client(id, &buf[at..]),
                Phase::Done => buf.len() - at,
            };
            if used == 0 {
                return at;
            }
            at += used;
            if at >= buf.len() {
                return at;
            }
        }
    }

    fn process_client(&mut self, id: ConnId, buf: &[u8]) -> usize {
        match parse_response_head(buf) {
            Some((status, Some(total))) if buf.len() >= total => {
                self.net.complete_client(id, HttpOutcome::Status(status));
                buf.len()
            }
            _ if buf.len() > 64 * 1024 => {
                self.net
                    .complete_client(id, HttpOutcome::Failed("response too large"));
                buf.len()
            }
            _ => 0,
        }
    }

    fn process_http(&mut self, id: ConnId, buf: &[u8], now: Instant) -> usize {
        let limits = self.net.cfg.http;
        let Some(c) = self.net.get_mut(id) else {
            return buf.len();
        };
        let Phase::Http { scanned } = &mut c.phase else {
            return 0;
        };
        match parse_request(buf, scanned, &limits) {
            Ok(None) => 0,
            Err(e) => {
                self.net
                    .respond_error(id, e.status(), e.code(), e.message(), &[]);
                buf.len()
            }
            Ok(Some(req)) => {
                let used = req.len;
                self.route(id, &req, now);
                used
            }
        }
    }

    fn route(&mut self, id: ConnId, req: &Request<'_>, now: Instant) {
        self.last_now = now;
        let endpoint = match req.path {
            "/echo" if self.net.cfg.echo => Some(Endpoint::Echo),
            "/glasses-ws" => Some(Endpoint::Glasses),
            "/app-ws" | "/tpa-ws" => Some(Endpoint::App),
            _ => None,
        };
        if let Some(endpoint) = endpoint {
            let key = match validate_upgrade(req) {
                Ok(key) => key,
                Err(e) => {
                    return self.net.respond_error(
                        id,
                        e.status(),
                        e.code(),
                        e.message(),
                        e.extra_headers(),
                    );
                }
            };
            let peer = self.net.peer(id).cloned().unwrap_or(Peer::InProcess);
            let pre = match self.hub.authorize_upgrade(endpoint, req, &peer, now) {
                Ok(pre) => pre,
                Err(refusal) => return self.net.respond(id, refusal.status, &refusal.body, &[]),
            };
            if let Some(out) = self.net.out(id) {
                write_accept(out, key);
            }
            let limits = self.net.cfg.ws;
            if let Some(c) = self.net.get_mut(id) {
                c.phase = Phase::Ws {
                    rx: Receiver::new(Role::Server, limits),
                    endpoint,
                };
            }
            let heartbeat = self.net.cfg.ping_interval.map(|i| now + i);
            self.net.set_deadline(id, heartbeat);
            self.net.stats.upgrades += 1;
            self.hub.on_open(&mut self.net, id, endpoint, pre, now);
            return;
        }
        match (req.method, req.path) {
            ("GET" | "HEAD", "/health") => {
                let body = serde_json::json!({
                    "status": "ok",
                    "version": env!("CARGO_PKG_VERSION"),
                    "uptimeSeconds": now.saturating_since(self.started).as_secs(),
                    "connections": { "total": self.net.len(), "websocket": self.net.websocket_count() },
                    "sessions": self.hub.session_count(),
                });
                self.net.respond(id, 200, &body, &[]);
            }
            ("GET" | "HEAD", "/metrics") => {
                let text = self.metrics();
                if let Some(out) = self.net.out(id) {
                    crate::http::write_response(
                        out,
                        200,
                        "text/plain; version=0.0.4",
                        &[],
                        text.as_bytes(),
                    );
                }
                self.net.finish(id);
            }
            (_, "/health" | "/metrics") => {
                self.net
                    .respond_error(id, 405, "METHOD_NOT_ALLOWED", "use GET", &["Allow: GET"])
            }
            (_, path) if path.starts_with("/apps/") => {
                self.hub.on_rest(&mut self.net, id, req, now)
            }
            _ => self
                .net
                .respond_error(id, 404, "NOT_FOUND", "no such endpoint", &[]),
        }
    }

    fn process_ws(&mut self, id: ConnId, buf: &mut [u8], now: Instant) -> usize {
        let limits = self.net.cfg.ws;
        let Some(c) = self.net.get_mut(id) else {
            return buf.len();
        };
        let Phase::Ws { rx, endpoint } = &mut c.phase else {
            return 0;
        };
        let endpoint = *endpoint;
        // The receiver leaves the table while its message is handled, so the hub can write to
        // any connection (this one included) while the message borrows the receiver.
        let mut rx = std::mem::replace(rx, Receiver::new(Role::Server, limits));
        let used = match rx.next(buf) {
            Err(e) => {
                self.net.fail_websocket(id, e.close_code(), e.reason(), now);
                return buf.len();
            }
            Ok(step) => {
                let used = step.consumed;
                match step.message {
                    None => {}
                    Some(Message::Ping(p)) => {
                        self.net.send_frame(id, Opcode::Pong, &[p]);
                    }
                    Some(Message::Pong(_)) => self.net.record_pong(id, now),
                    Some(Message::Close(code)) => {
                        if let Some(out) = self.net.out(id) {
                            match code {
                                Some((code, _)) => crate::ws::frame::write_close(out, code, ""),
                                None => write_frame(out, Opcode::Close, &[]),
                            }
                        }
                        self.net.finish(id);
                        return buf.len();
                    }
                    Some(Message::Text(t)) => match endpoint {
                        Endpoint::Echo => {
                            self.net.send_frame(id, Opcode::Text, &[t.as_bytes()]);
                        }
                        _ => self.hub.on_text(&mut self.net, id, t, now),
                    },
                    Some(Message::Binary(b)) => match endpoint {
                        Endpoint::Echo => {
                            self.net.send_frame(id, Opcode::Binary, &[b]);
                        }
                        _ => self.hub.on_binary(&mut self.net, id, b, now),
                    },
                }
                used
            }
        };
        match self.net.get_mut(id) {
            Some(Conn {
                phase: Phase::Ws { rx: slot, .. },
                ..
            }) => *slot = rx,
            // The hub closed this connection: the rest of the input is not for us.
            _ => return buf.len(),
        }
        used
    }
}

/// Whether leftover bytes are still worth keeping for this phase.
fn accepts_input(phase: &Phase) -> bool {
    !matches!(phase, Phase::Done)
}

/// In `Closing`, look through complete frames for the peer's close; anything else is dropped.
/// After a failure nothing is parsed at all.
fn skim_for_close(c: &mut Conn, failed: bool, buf: &[u8], max_frame: usize) -> usize {
    if failed {
        return buf.len();
    }
    match parse_header(buf, Role::Server, max_frame) {
        Ok(Some(h)) if h.opcode == Opcode::Close && buf.len() >= h.frame_len() => {
            net::finish(c);
            buf.len()
        }
        Ok(Some(h)) if buf.len() >= h.frame_len() => h.frame_len(),
        Ok(_) => 0,
        Err(_) => {
            net::finish(c);
            buf.len()
        }
    }
}

/// Parse an HTTP response head: its status and, with a `Content-Length`, the total length.
fn parse_response_head(buf: &[u8]) -> Option<(u16, Option<usize>)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return None,
    };
    let status = resp.code?;
    let len = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    Some((status, len.map(|l| head + l)))
}
