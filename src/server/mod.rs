//! Core layer (sans-IO, top): the server composition — the only module that names both the
//! connection table ([`Net`]) and the application core ([`Hub`]).
//!
//! Owns the read side of every connection ([`Proto`]: the HTTP head search, the WebSocket
//! receiver, unread partial input), routes HTTP requests (health, metrics, REST, the `/ui/`
//! pages in `ui.rs`, upgrades),
//! parses WebSocket frames in place and hands their messages to the hub, runs the heartbeat,
//! and reports finished outbound requests to the hub. It never touches a socket or a clock: the
//! shell calls `handle_*` with bytes and the turn's [`Now`], then drains the `poll_*` methods
//! (the quinn-proto pattern).
//!
//! Call order for one event-loop turn: `handle_accept` / `handle_input` / `handle_eof` for each
//! ready socket, `handle_timeout(now)`, then `poll_connect` until `None` (open those sockets),
//! `poll_dirty` until `None` (write `output`, report it with `consume_output`, close where
//! `wants_close`), `handle_closed` when a transport is gone; sleep until `poll_timeout`.
//!
//! Invariants: memory per connection is bounded (input by one frame or request plus one read,
//! output by `max_output`); nothing reachable from peer bytes panics; a connection whose output
//! is above `read_pause` is not read (backpressure); the hub is handed the table as an
//! [`Outbox`] while a message borrowed from this connection's receiver is alive, which works
//! because read side and write side live in different tables.

mod lifecycle;
pub mod metrics;
mod ui;

use crate::histogram::{self, Histogram};
use crate::http::client::{ResponseError, ResponseParser};
use crate::http::{parse_request, Request};
use crate::hub::{Hub, HubConfig};
use crate::net::{
    Conn, ConnId, Endpoint, HttpOutcome, Net, Outbox, OverCap, Peer, Phase, Target, Timer,
};
pub use crate::net::{ServerConfig, Stats};
use crate::state::{Persist, Snapshot, StoreStatus};
use crate::time::{Instant, Now};
use crate::ws::frame::{parse_header, write_frame, Opcode};
use crate::ws::handshake::{validate_upgrade, write_accept};
use crate::ws::{Message, Receiver, Role};
use std::time::Duration;

/// Connections accepted past a client cap and held to read their one request (so `/health`
/// and `/metrics` are answered even when the box is full): at most this many at once.
pub const OVER_CAP_RESERVE: usize = 8;
/// How long such a connection may take to send its request (at most the handshake deadline).
pub const OVER_CAP_DEADLINE: Duration = Duration::from_secs(2);

/// The read side of one connection.
struct Proto {
    gen: u32,
    read: Read,
    /// Bytes that do not yet make a complete frame, request or response.
    pending: Vec<u8>,
}

/// What the bytes of a connection are parsed as.
enum Read {
    /// An inbound HTTP request; `scanned` is how far the head search got.
    Http { scanned: usize },
    /// An upgraded WebSocket.
    Ws(Receiver),
    /// The response to an outbound request of ours (boxed: few connections are outbound).
    Client(Box<ResponseParser>),
}

pub struct Server {
    pub net: Net,
    pub hub: Hub,
    /// How the durable store is doing, as the shell last reported it.
    store: StoreStatus,
    proto: Vec<Option<Proto>>,
    started: Instant,
    /// Feeders not read because a subscriber of theirs is backed up, and those free again.
    paused: Vec<ConnId>,
    resumed: Vec<ConnId>,
    /// Event-loop turn durations, as the shell measured them ([`histogram::TURN_US`]).
    turns: Histogram,
    /// Listeners open, as the shell last reported them (`None`: no shell reported any).
    listeners: Option<usize>,
    /// An orderly stop began.
    stopping: bool,
    /// The last refusals, for the `/ui/` feed.
    recent_refusals: ui::RecentRefusals,
}

impl Server {
    pub fn new(cfg: ServerConfig, hub: HubConfig, now: Now) -> Server {
        Server::with_state(cfg, hub, Snapshot::default(), StoreStatus::memory(), now)
    }

    /// A server starting from the durable state a store loaded.
    pub fn with_state(
        cfg: ServerConfig,
        hub: HubConfig,
        state: Snapshot,
        store: StoreStatus,
        now: Now,
    ) -> Server {
        Server {
            net: Net::new(cfg),
            hub: Hub::with_state(hub, state),
            store,
            proto: Vec::new(),
            started: now.mono,
            paused: Vec::new(),
            resumed: Vec::new(),
            turns: Histogram::default(),
            listeners: None,
            stopping: false,
            recent_refusals: ui::RecentRefusals::default(),
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

    /// Unread input held for `id`: its length and capacity (for invariant checks).
    pub fn pending_input(&self, id: ConnId) -> (usize, usize) {
        self.proto
            .get(id.index as usize)
            .and_then(Option::as_ref)
            .filter(|p| p.gen == id.gen)
            .map_or((0, 0), |p| (p.pending.len(), p.pending.capacity()))
    }

    // ---- inputs --------------------------------------------------------------------------

    /// A transport accepted a connection. `None` only when no slot can be encoded (the shell
    /// drops the stream). Over `max_connections` admitted client connections, or over
    /// `max_per_address` from its IP address (unless the address is exempt), it is held in the
    /// reserve of [`OVER_CAP_RESERVE`] connections for at most [`OVER_CAP_DEADLINE`]: its one
    /// request is read, `GET /health` and `GET /metrics` are answered (they are how the operator
    /// sees the box is full), anything else, or nothing by the deadline, gets HTTP 503 with a
    /// JSON body (`AT_CAPACITY`, `TOO_MANY_FROM_ADDRESS`). With the reserve full it gets that
    /// 503 at once, before anything is read. The reserve is no way around the caps: it never
    /// holds more than a few connections, briefly, and never upgrades one.
    pub fn handle_accept(&mut self, peer: Peer, now: Now) -> Option<ConnId> {
        self.net.now = now.mono;
        let id = self.net.insert(peer, Phase::Http)?;
        self.net.stats.accepted += 1;
        let over = if self.net.admitted_count() > self.net.cfg.max_connections {
            Some(OverCap::Total)
        } else {
            self.net
                .get(id)
                .filter(|c| self.net.address_count(&c.peer) > self.net.cfg.max_per_address)
                .filter(|c| !self.net.exempt_from_address_cap(&c.peer))
                .map(|_| OverCap::Address)
        };
        let mut deadline = self.net.cfg.handshake_timeout;
        match over {
            None => {}
            Some(why) if self.net.over_cap_count() < OVER_CAP_RESERVE => {
                self.net.hold_over_cap(id, why);
                deadline = deadline.min(OVER_CAP_DEADLINE);
            }
            Some(why) => {
                self.refuse_over_cap(id, why);
                return Some(id);
            }
        }
        self.net.set_deadline(id, Some(now.mono + deadline));
        Some(id)
    }

    /// Answer a connection accepted past a cap: HTTP 503 with the cap's code.
    fn refuse_over_cap(&mut self, id: ConnId, why: OverCap) {
        match why {
            OverCap::Total => self.net.stats.refused_at_capacity += 1,
            OverCap::Address => self.net.stats.refused_per_address += 1,
        }
        log::debug!(
            "event=connection_refused connection={id} code={}",
            why.code()
        );
        if let Some(p) = proto_entry(&mut self.proto, id) {
            p.pending = Vec::new();
        }
        self.net
            .respond_error(id, 503, why.code(), why.message(), &[]);
    }

    /// Bytes arrived on `id`. `data` may be modified (unmasked in place).
    pub fn handle_input(&mut self, id: ConnId, data: &mut [u8], now: Now) {
        self.net.now = now.mono;
        let Some(c) = self.net.get_mut(id) else {
            return;
        };
        c.last_rx = now.mono;
        let kind = c.kind();
        self.net.stats.bytes_in[kind] += data.len() as u64;
        let gen = id.gen;
        let pending = match proto_entry(&mut self.proto, id) {
            Some(p) if !p.pending.is_empty() => Some(std::mem::take(&mut p.pending)),
            Some(_) => None,
            None => return,
        };
        match pending {
            None => {
                let used = self.process(id, data, now);
                self.keep_rest(id, gen, &data[used.min(data.len())..]);
            }
            Some(mut buf) => {
                buf.extend_from_slice(data);
                let used = self.process(id, &mut buf, now);
                buf.drain(..used.min(buf.len()));
                // An emptied buffer is dropped: an idle connection holds no capacity.
                if !buf.is_empty() && self.keeps_input(id) {
                    if let Some(p) = proto_entry(&mut self.proto, id) {
                        p.pending = buf;
                    }
                }
            }
        }
        self.net.check_cap(id);
        if self
            .net
            .get(id)
            .is_some_and(|c| c.close_after_flush || c.pending() > 0)
        {
            self.net.mark_dirty(id);
        }
        self.after(now);
    }

    /// The peer closed its sending side.
    pub fn handle_eof(&mut self, id: ConnId, now: Now) {
        self.net.now = now.mono;
        let Some(c) = self.net.get(id) else {
            return;
        };
        if let Phase::Client = c.phase {
            // A response delimited by the end of the stream ends here.
            let outcome = match proto_entry(&mut self.proto, id) {
                Some(p) => {
                    let pending = std::mem::take(&mut p.pending);
                    match response_parser(p) {
                        Some(parser) => outcome(parser.finish_at_eof(&pending).map(|r| r.status)),
                        None => HttpOutcome::Failed("connection closed before a response"),
                    }
                }
                None => HttpOutcome::Failed("connection closed before a response"),
            };
            self.net.complete_client(id, outcome);
        } else {
            self.net.finish(id);
            // A peer that closed its side may never read what is left: it gets the close
            // deadline to take it, then the connection is dropped (and the hub told).
            if self.net.get(id).is_some_and(|c| c.pending() > 0) {
                let at = now.mono + self.net.cfg.close_timeout;
                self.net.set_deadline(id, Some(at));
            }
        }
        self.after(now);
    }

    /// The transport for `id` is gone (closed by us or failed); forget the connection.
    pub fn handle_closed(&mut self, id: ConnId, now: Now) {
        self.net.now = now.mono;
        if self.net.remove(id).is_some() {
            if let Some(slot) = self.proto.get_mut(id.index as usize) {
                *slot = None;
            }
            self.hub.on_closed(&mut self.net, id, now);
        }
        self.after(now);
    }

    /// Fire every deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Now) {
        self.net.now = now.mono;
        self.net.trim_pool(now.mono);
        while let Some((id, timer)) = self.net.pop_expired(now.mono) {
            if timer == Timer::Stall {
                self.net.check_stall(id, now.mono);
                continue;
            }
            let Some(c) = self.net.get(id) else {
                continue;
            };
            match c.phase {
                // Past a cap and no request by the reserve's deadline: the cap's refusal.
                Phase::Http if c.over_cap.is_some() => {
                    if let Some(why) = c.over_cap {
                        self.refuse_over_cap(id, why);
                    }
                }
                Phase::Http => {
                    if let Some(p) = proto_entry(&mut self.proto, id) {
                        p.pending = Vec::new();
                    }
                    self.net.stats.handshake_timeouts += 1;
                    self.net.respond_error(
                        id,
                        408,
                        "HANDSHAKE_TIMEOUT",
                        "request not complete within the handshake deadline",
                        &[],
                    );
                }
                Phase::Client => self
                    .net
                    .complete_client(id, HttpOutcome::Failed("timed out")),
                Phase::Closing { .. } | Phase::Done => self.net.abort(id),
                Phase::Ws(_) => self.heartbeat(id, now),
            }
        }
        self.hub.handle_timeout(&mut self.net, now);
        self.after(now);
    }

    /// The shell's measure of one event-loop turn (from the poll's return until every ready
    /// connection was read and flushed): a value, never a clock read by the core.
    pub fn handle_turn_time(&mut self, took: std::time::Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.turns.observe(histogram::TURN_US, us);
    }

    // ---- outputs -------------------------------------------------------------------------

    /// When the shell must next call `handle_timeout` (a monotonic instant).
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

    /// Every durable change since the last call, oldest first: the shell hands them to the
    /// writer (or, with no store, drops them).
    pub fn take_persist(&mut self) -> Vec<Persist> {
        self.hub.take_persist()
    }

    /// The shell's report of how many listeners it has open (at start; 0 once stopping).
    pub fn handle_listeners(&mut self, open: usize) {
        self.listeners = Some(open);
    }

    /// The shell's report of the store (after writes, or at start).
    pub fn handle_store_status(&mut self, status: StoreStatus) {
        self.store = status;
    }

    pub fn poll_dirty(&mut self) -> Option<ConnId> {
        self.net.poll_dirty()
    }

    pub fn output(&self, id: ConnId) -> &[u8] {
        self.net.output(id)
    }

    pub fn consume_output(&mut self, id: ConnId, n: usize) {
        let was_over = self.net.over_budget();
        self.net.consume_output(id, n);
        let under_again = was_over && !self.net.over_budget();
        if !self.paused.is_empty() && (under_again || !self.net.backed_up(id)) {
            self.resume_feeders();
        }
    }

    /// Whether the shell should read from `id` now. Not while its own output is backed up, nor
    /// while it feeds a session one of whose subscribers is (the subscriber catches up first:
    /// TCP pushes back to the sender), nor, if it is a feeder, while the output of all
    /// connections together is over its budget (`max_total_output`). A connection refused for
    /// the second or third reason is handed back by [`Server::poll_resumed`] once it may be read
    /// again.
    pub fn wants_read(&mut self, id: ConnId) -> bool {
        let own = self.net.get(id).is_some_and(|c| {
            !matches!(c.phase, Phase::Done) && c.pending() < self.net.cfg.read_pause
        });
        if !own {
            return false;
        }
        if self.net.over_budget() && self.hub.is_feeder(id) {
            if !self.paused.contains(&id) {
                self.paused.push(id);
                self.net.stats.budget_pauses += 1;
            }
            return false;
        }
        if self.hub.feeder_blocked(&self.net, id) {
            if !self.paused.contains(&id) {
                self.paused.push(id);
                self.hub.counters.feeder_pauses += 1;
            }
            return false;
        }
        true
    }

    /// A connection paused by [`Server::wants_read`] that may be read again: the shell reads it
    /// (the bytes waiting in its socket raise no new readiness event).
    pub fn poll_resumed(&mut self) -> Option<ConnId> {
        self.resumed.pop()
    }

    fn resume_feeders(&mut self) {
        if self.net.over_budget() {
            // Every paused connection is a feeder: none may be read yet.
            return;
        }
        let Server {
            paused,
            resumed,
            hub,
            net,
            ..
        } = self;
        paused.retain(|&id| {
            if net.get(id).is_none() {
                return false;
            }
            if hub.feeder_blocked(net, id) {
                return true;
            }
            resumed.push(id);
            false
        });
    }

    pub fn wants_close(&self, id: ConnId) -> bool {
        self.net
            .get(id)
            .is_none_or(|c| c.close_after_flush && c.pending() == 0)
    }

    /// The Prometheus text exposition of the server's counters, gauges and histograms at
    /// `now`. Aggregates only: no series per connection, session or user.
    pub fn metrics(&self, now: Now) -> String {
        use crate::net::{KINDS, TRANSPORTS};
        use metrics::Family;
        let st = &self.net.stats;
        let hc = &self.hub.counters;
        let n = |v: u64| v as f64;
        // Connections by kind and transport, output waiting, and the longest silence per kind.
        let mut conns = [[0u64; 3]; 5];
        let mut idle_max = [0f64; 5];
        for c in self.net.iter() {
            conns[c.kind()][c.transport()] += 1;
            if c.is_websocket() {
                let idle = now.mono.saturating_since(c.last_rx).as_secs_f64();
                idle_max[c.kind()] = idle_max[c.kind()].max(idle);
            }
        }
        let mut by_conn = Vec::new();
        for (k, row) in conns.iter().enumerate() {
            for (t, v) in row.iter().enumerate() {
                if *v > 0 || k < 3 && t == 0 {
                    by_conn.push((
                        vec![("kind", KINDS[k]), ("transport", TRANSPORTS[t])],
                        n(*v),
                    ));
                }
            }
        }
        let traffic = |a: &[u64; 5], b: &[u64; 5]| {
            let mut rows = Vec::new();
            for (dir, vals) in [("in", a), ("out", b)] {
                for (k, v) in vals.iter().enumerate() {
                    rows.push((vec![("direction", dir), ("kind", KINDS[k])], n(*v)));
                }
            }
            rows
        };
        let messages = traffic(&st.messages_in, &st.messages_out);
        let bytes = traffic(&st.bytes_in, &st.bytes_out);
        let refusals = self
            .refusal_counts()
            .into_iter()
            .map(|(code, v)| (vec![("code", code)], n(v)))
            .collect();
        let dropped = hc
            .dropped
            .iter()
            .map(|(stream, v)| {
                (
                    vec![("stream", *stream), ("reason", "subscriber_backlog")],
                    n(*v),
                )
            })
            .collect();
        let closed = [
            ("protocol_error", st.protocol_errors),
            ("handshake_timeout", st.handshake_timeouts),
            ("output_overflow", st.overflow_drops),
            ("stalled", st.stall_closes),
            ("idle", st.idle_closes),
        ]
        .into_iter()
        .map(|(r, v)| (vec![("reason", r)], n(v)))
        .collect();
        let mut outcomes: Vec<(metrics::Labels<'_>, f64)> =
            ["ok", "http_error", "failed", "not_sent", "queue_timeout"]
                .into_iter()
                .map(|o| {
                    let v = hc.webhook_outcomes.get(o).copied().unwrap_or(0);
                    (vec![("outcome", o)], n(v))
                })
                .collect();
        outcomes.push((vec![("outcome", "coalesced")], n(hc.webhooks_coalesced)));
        // Per app server (bounded by the config's apps): in flight, waiting, oldest wait.
        let servers = self.hub.webhook_servers(now);
        let per_server = |f: &dyn Fn(&crate::hub::ServerLoad) -> f64| {
            servers
                .iter()
                .map(|l| (vec![("server", l.server.as_str())], f(l)))
                .collect::<Vec<_>>()
        };
        let in_flight = per_server(&|l| l.in_flight as f64);
        let queue_len = per_server(&|l| l.waiting as f64);
        let queue_age = per_server(&|l| l.oldest.as_secs_f64());
        let apps = self
            .hub
            .app_state_counts()
            .into_iter()
            .map(|(state, v)| (vec![("state", state)], n(v)))
            .collect();
        let d = self.hub.display_stats();
        let display = [
            ("sent", d.sent),
            ("coalesced", d.coalesced),
            ("refused", d.refused),
            ("expired", d.expired),
        ]
        .into_iter()
        .map(|(o, v)| (vec![("outcome", o)], n(v)))
        .collect();
        let idle = idle_max
            .iter()
            .enumerate()
            .filter(|(k, _)| *k != 2 && *k != 4)
            .map(|(k, v)| (vec![("kind", KINDS[k])], *v))
            .collect();
        let families = [
            Family::one(
                "uptime_seconds",
                "gauge",
                "Seconds since the server started.",
                now.mono.saturating_since(self.started).as_secs_f64(),
            ),
            Family::labelled(
                "connections",
                "gauge",
                "Open connections by kind (glasses, app, http, echo, webhook) and transport.",
                by_conn,
            ),
            Family::one(
                "connection_addresses",
                "gauge",
                "Distinct IP addresses with open client connections.",
                n(self.net.address_total() as u64),
            ),
            Family::one(
                "connections_accepted_total",
                "counter",
                "Client connections accepted (refused ones included).",
                n(st.accepted),
            ),
            Family::one(
                "websocket_upgrades_total",
                "counter",
                "WebSocket upgrades completed.",
                n(st.upgrades),
            ),
            Family::labelled(
                "connections_closed_total",
                "counter",
                "Connections closed by the server, by reason.",
                closed,
            ),
            Family::labelled(
                "refusals_total",
                "counter",
                "Refused connections, requests and messages, by code.",
                refusals,
            ),
            Family::one(
                "sessions",
                "gauge",
                "User sessions held (glasses connected or in their grace period).",
                n(self.hub.session_count() as u64),
            ),
            Family::one(
                "sessions_ended_total",
                "counter",
                "Sessions ended after the grace period.",
                n(hc.sessions_ended),
            ),
            Family::labelled(
                "apps",
                "gauge",
                "Apps in sessions by lifecycle state.",
                apps,
            ),
            Family::one(
                "app_restarts_total",
                "counter",
                "Apps restarted through their webhook after a drop.",
                n(hc.app_restarts),
            ),
            Family::labelled(
                "messages_total",
                "counter",
                "WebSocket data messages by direction and connection kind.",
                messages,
            ),
            Family::labelled(
                "bytes_total",
                "counter",
                "Bytes read from and written to sockets by direction and connection kind.",
                bytes,
            ),
            Family::labelled(
                "dropped_messages_total",
                "counter",
                "Lossy messages not delivered to a backed-up subscriber, by stream and reason.",
                dropped,
            ),
            Family::labelled(
                "read_pauses_total",
                "counter",
                "Feeders (glasses, publishers) not read for a while, by reason.",
                vec![
                    (vec![("reason", "subscriber_backlog")], n(hc.feeder_pauses)),
                    (vec![("reason", "total_output_budget")], n(st.budget_pauses)),
                ],
            ),
            Family::one(
                "output_buffer_bytes",
                "gauge",
                "Bytes waiting in connections' output buffers.",
                n(self.net.total_output() as u64),
            ),
            Family::one(
                "output_budget_bytes",
                "gauge",
                "The budget of output waiting in all connections together (maxTotalOutputBytes).",
                n(self.net.cfg.max_total_output as u64),
            ),
            Family::one(
                "output_budget_exceeded_total",
                "counter",
                "Times the output waiting in all connections together passed its budget.",
                n(st.budget_exceeded),
            ),
            Family::one(
                "output_buffer_pool_bytes",
                "gauge",
                "Capacity of emptied output buffers kept for reuse.",
                n(self.net.pooled().1 as u64),
            ),
            Family::labelled(
                "webhooks_total",
                "counter",
                "Webhook requests by outcome.",
                outcomes,
            ),
            Family::labelled(
                "webhooks_in_flight",
                "gauge",
                "Webhooks in flight, by app server (host:port).",
                in_flight,
            ),
            Family::labelled(
                "webhook_queue_length",
                "gauge",
                "Webhooks waiting for a slot at their app server (maxWebhooksPerServer), by app server.",
                queue_len,
            ),
            Family::labelled(
                "webhook_queue_age_seconds",
                "gauge",
                "How long the oldest webhook waiting for its app server has waited, by app server.",
                queue_age,
            ),
            Family::one(
                "webhooks_queued_total",
                "counter",
                "Webhooks that waited for a slot at their app server.",
                n(hc.webhooks_queued),
            ),
            Family::one(
                "outbound_refused_total",
                "counter",
                "Outbound requests not opened: too many in flight.",
                n(st.outbound_refused),
            ),
            Family::histogram(
                "webhook_duration_seconds",
                "Time from sending a webhook to its response (or failure).",
                &hc.webhook_latency,
                histogram::WEBHOOK_US,
            ),
            Family::labelled(
                "display_events_total",
                "counter",
                "Display requests by outcome (sent to the glasses, coalesced, refused, expired).",
                display,
            ),
            Family::histogram(
                "heartbeat_rtt_seconds",
                "Round trip of heartbeat pings to WebSockets.",
                &st.rtt,
                histogram::RTT_US,
            ),
            Family::labelled(
                "websocket_idle_max_seconds",
                "gauge",
                "The longest time since bytes last arrived on an open WebSocket, by kind.",
                idle,
            ),
            Family::histogram(
                "event_loop_turn_seconds",
                "Time the event loop spent on one turn (reading, processing, flushing).",
                &self.turns,
                histogram::TURN_US,
            ),
        ];
        metrics::render(&families)
    }

    /// Refusals by code, the hub's and the connection layer's, sorted by code.
    fn refusal_counts(&self) -> Vec<(&'static str, u64)> {
        let (st, hc) = (&self.net.stats, &self.hub.counters);
        let mut refusals: Vec<(&str, u64)> = hc.refusals.iter().map(|(k, v)| (*k, *v)).collect();
        refusals.push(("AT_CAPACITY", st.refused_at_capacity));
        refusals.push(("TOO_MANY_FROM_ADDRESS", st.refused_per_address));
        refusals.push(("HANDSHAKE_TIMEOUT", st.handshake_timeouts));
        refusals.sort_unstable();
        refusals
    }

    /// The `/health` document: per component (listeners, store, sessions, connections) a
    /// `state`, and `ready`: whether the box takes new connections and sessions now (listeners
    /// open, not stopping, below its connection and session limits). A failing store leaves
    /// it ready (sessions run; what they change is not remembered) and makes it `degraded`.
    pub fn health(&self, now: Now) -> serde_json::Value {
        let listeners = match (self.stopping, self.listeners) {
            (true, _) => "stopped",
            (false, Some(0)) => "none",
            (false, Some(_)) => "ok",
            (false, None) => "unknown",
        };
        let store = if self.store.error.is_some() {
            "failing"
        } else {
            "ok"
        };
        let (sessions, max_sessions) = (self.hub.session_count(), self.hub.config().max_sessions);
        let sessions_state = if sessions >= max_sessions {
            "full"
        } else {
            "ok"
        };
        // Admitted connections: those held past a cap to read one request (this check, when
        // the box is full) are not among them.
        let (conns, max_conns) = (self.net.admitted_count(), self.net.cfg.max_connections);
        let conns_state = if conns >= max_conns { "full" } else { "ok" };
        let ready =
            matches!(listeners, "ok" | "unknown") && sessions_state == "ok" && conns_state == "ok";
        let status = match (self.stopping, ready && store == "ok") {
            (true, _) => "stopping",
            (false, true) => "ok",
            (false, false) => "degraded",
        };
        serde_json::json!({
            "status": status,
            "ready": ready,
            "version": env!("CARGO_PKG_VERSION"),
            "uptimeSeconds": now.mono.saturating_since(self.started).as_secs(),
            "components": {
                "listeners": {"state": listeners, "open": self.listeners},
                "store": {"state": store, "kind": self.store.kind},
                "sessions": {"state": sessions_state, "count": sessions, "limit": max_sessions},
                "connections": {"state": conns_state, "count": conns, "limit": max_conns,
                    "overCap": self.net.over_cap_count()},
            },
            "connections": {
                "total": conns,
                "websocket": self.net.websocket_count(),
                "outbound": self.net.outbound_count(),
            },
            "sessions": sessions,
            "store": {
                "kind": self.store.kind,
                "path": self.store.path,
                "state": store,
                "error": self.store.error,
                "recovered": self.store.recovered,
                "batchesWritten": self.store.batches,
                "changesWritten": self.store.changes,
            },
        })
    }

    // ---- internals -----------------------------------------------------------------------

    /// Whether leftover input of `id` is still worth keeping.
    fn keeps_input(&self, id: ConnId) -> bool {
        self.net
            .get(id)
            .is_some_and(|c| !matches!(c.phase, Phase::Done | Phase::Closing { failed: true }))
    }

    fn keep_rest(&mut self, id: ConnId, gen: u32, rest: &[u8]) {
        if rest.is_empty() || !self.keeps_input(id) {
            return;
        }
        if let Some(p) = proto_entry(&mut self.proto, id).filter(|p| p.gen == gen) {
            p.pending.extend_from_slice(rest);
        }
    }

    /// A WebSocket's heartbeat deadline: close it if it has been silent too long, otherwise
    /// ping it (the round trip is timed from `ping_sent`).
    fn heartbeat(&mut self, id: ConnId, now: Now) {
        let (Some(interval), idle) = (self.net.cfg.ping_interval, self.net.cfg.idle_timeout) else {
            return;
        };
        let Some(c) = self.net.get_mut(id) else {
            return;
        };
        if now.mono.saturating_since(c.last_rx) >= idle {
            self.net.stats.idle_closes += 1;
            self.net
                .fail_websocket(id, 4000, "no pong responses", now.mono);
            return;
        }
        c.ping_sent = Some(now.mono);
        self.net.send_frame(id, Opcode::Ping, &[b"edge"]);
        self.net.set_deadline(id, Some(now.mono + interval));
    }

    /// Hand finished outbound requests to the hub; drop the unread input of connections that
    /// stopped reading, whoever stopped them.
    fn after(&mut self, now: Now) {
        while let Some((id, outcome)) = self.net.poll_done() {
            self.hub.on_http_done(&mut self.net, id, outcome, now);
        }
        self.note_refusals(now);
        self.net.watch_over_budget();
        if !self.paused.is_empty() {
            self.resume_feeders();
        }
        while let Some(id) = self.net.poll_stopped_reading() {
            if let Some(p) = self
                .proto
                .get_mut(id.index as usize)
                .and_then(Option::as_mut)
                .filter(|p| p.gen == id.gen)
            {
                p.pending = Vec::new();
            }
        }
    }

    /// Run the connection's protocol over `buf`; returns the bytes used up.
    fn process(&mut self, id: ConnId, buf: &mut [u8], now: Now) -> usize {
        let max_frame = self.net.cfg.ws.max_frame;
        let mut at = 0;
        loop {
            let Some(c) = self.net.get_mut(id) else {
                return buf.len();
            };
            let used = match c.phase {
                Phase::Http => self.process_http(id, &buf[at..], now),
                Phase::Ws(endpoint) => self.process_ws(id, endpoint, &mut buf[at..], now),
                Phase::Closing { failed } => skim_for_close(c, failed, &buf[at..], max_frame),
                Phase::Client => self.process_client(id, &buf[at..]),
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
        let Some(p) = proto_entry(&mut self.proto, id) else {
            return buf.len();
        };
        let Some(parser) = response_parser(p) else {
            return buf.len();
        };
        match parser.feed(buf) {
            Ok(None) => 0,
            Ok(Some(r)) => {
                self.net.complete_client(id, HttpOutcome::Status(r.status));
                buf.len()
            }
            Err(e) => {
                self.net
                    .complete_client(id, HttpOutcome::Failed(e.message()));
                buf.len()
            }
        }
    }

    fn process_http(&mut self, id: ConnId, buf: &[u8], now: Now) -> usize {
        let limits = self.net.cfg.http;
        let Some(Proto {
            read: Read::Http { scanned },
            ..
        }) = proto_entry(&mut self.proto, id)
        else {
            return buf.len();
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

    fn route(&mut self, id: ConnId, req: &Request<'_>, now: Now) {
        if let Some(why) = self.net.get(id).and_then(|c| c.over_cap) {
            let health = matches!(
                (req.method, req.path),
                ("GET" | "HEAD", "/health" | "/metrics")
            );
            if !health {
                return self.refuse_over_cap(id, why);
            }
        }
        let endpoint = match req.path {
            "/echo" if self.net.cfg.echo => Some(Endpoint::Echo),
            "/glasses-ws" => Some(Endpoint::Glasses),
            "/app-ws" | "/tpa-ws" => Some(Endpoint::App),
            _ => None,
        };
        if let Some(endpoint) = endpoint {
            return self.upgrade(id, endpoint, req, now);
        }
        match (req.method, req.path) {
            ("GET" | "HEAD", "/health") => {
                let body = self.health(now);
                self.net.respond_json(id, 200, &body, &[]);
            }
            ("GET" | "HEAD", "/metrics") => {
                let text = self.metrics(now);
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
            (_, path) if self.ui_enabled() && (path == "/ui" || path.starts_with("/ui/")) => {
                self.route_ui(id, req, now)
            }
            (_, path) if path.starts_with("/apps/") => {
                self.hub.on_rest(&mut self.net, id, req, now)
            }
            (_, path) if path.starts_with("/api/sdk/simple-storage/") => {
                self.hub.on_storage(&mut self.net, id, req)
            }
            (_, path)
                if path.starts_with("/appsettings/user/")
                    || path.starts_with("/tpasettings/user/") =>
            {
                self.hub.on_settings_read(&mut self.net, id, req)
            }
            (_, path) if path.starts_with("/api/settings/") => {
                self.hub.on_settings_write(&mut self.net, id, req, now)
            }
            (_, path) if path.starts_with("/api/tpa-server/") => {
                self.hub.on_tpa_server(&mut self.net, id, req, now)
            }
            _ => self
                .net
                .respond_error(id, 404, "NOT_FOUND", "no such endpoint", &[]),
        }
    }

    fn upgrade(&mut self, id: ConnId, endpoint: Endpoint, req: &Request<'_>, now: Now) {
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
            Err(refusal) => {
                return self
                    .net
                    .respond_json(id, refusal.status, &refusal.body, &[])
            }
        };
        if let Some(out) = self.net.out(id) {
            write_accept(out, key);
        }
        let limits = self.net.cfg.ws;
        if let Some(p) = proto_entry(&mut self.proto, id) {
            p.read = Read::Ws(Receiver::new(Role::Server, limits));
        }
        if let Some(c) = self.net.get_mut(id) {
            c.phase = Phase::Ws(endpoint);
            c.endpoint = Some(endpoint);
        }
        let heartbeat = self.net.cfg.ping_interval.map(|i| now.mono + i);
        self.net.set_deadline(id, heartbeat);
        self.net.stats.upgrades += 1;
        self.hub.on_open(&mut self.net, id, endpoint, pre, now);
    }

    fn process_ws(&mut self, id: ConnId, endpoint: Endpoint, buf: &mut [u8], now: Now) -> usize {
        let Server {
            net, hub, proto, ..
        } = self;
        let Some(Proto {
            read: Read::Ws(rx), ..
        }) = proto_entry(proto, id)
        else {
            return buf.len();
        };
        let step = match rx.next(buf) {
            Err(e) => {
                net.fail_websocket(id, e.close_code(), e.reason(), now.mono);
                return buf.len();
            }
            Ok(step) => step,
        };
        let used = step.consumed;
        if let (Some(Message::Text(_) | Message::Binary(_)), Some(c)) = (&step.message, net.get(id))
        {
            let kind = c.kind();
            net.stats.messages_in[kind] += 1;
        }
        match step.message {
            None => {}
            Some(Message::Ping(p)) => {
                net.send_frame(id, Opcode::Pong, &[p]);
            }
            Some(Message::Pong(_)) => net.record_pong(id, now.mono),
            Some(Message::Close(code)) => {
                if let Some(out) = net.out(id) {
                    match code {
                        Some((code, _)) => crate::ws::frame::write_close(out, code, ""),
                        None => write_frame(out, Opcode::Close, &[]),
                    }
                }
                net.finish(id);
                return buf.len();
            }
            Some(Message::Text(t)) => match endpoint {
                Endpoint::Echo => {
                    net.send_frame(id, Opcode::Text, &[t.as_bytes()]);
                }
                _ => hub.on_text(net, id, t, now),
            },
            Some(Message::Binary(b)) => match endpoint {
                Endpoint::Echo => {
                    net.send_frame(id, Opcode::Binary, &[b]);
                }
                _ => hub.on_binary(net, id, b, now),
            },
        }
        // The hub may have closed this connection: the rest of the input is not for us.
        if net.get(id).is_some_and(Conn::is_websocket) {
            used
        } else {
            buf.len()
        }
    }
}

/// The read side of `id`, made fresh the first time a connection (or a reused slot) is seen.
fn proto_entry(proto: &mut Vec<Option<Proto>>, id: ConnId) -> Option<&mut Proto> {
    let idx = id.index as usize;
    if proto.len() <= idx {
        proto.resize_with(idx + 1, || None);
    }
    let slot = proto.get_mut(idx)?;
    if slot.as_ref().is_none_or(|p| p.gen != id.gen) {
        *slot = Some(Proto {
            gen: id.gen,
            read: Read::Http { scanned: 0 },
            pending: Vec::new(),
        });
    }
    slot.as_mut()
}

/// The response parser of an outbound connection (its read side starts as one on first use).
fn response_parser(p: &mut Proto) -> Option<&mut ResponseParser> {
    if !matches!(p.read, Read::Client(_)) {
        p.read = Read::Client(Box::default());
    }
    match &mut p.read {
        Read::Client(parser) => Some(parser),
        _ => None,
    }
}

fn outcome(r: Result<u16, ResponseError>) -> HttpOutcome {
    match r {
        Ok(status) => HttpOutcome::Status(status),
        Err(e) => HttpOutcome::Failed(e.message()),
    }
}

/// In `Closing`, look through complete frames for the peer's close; anything else is dropped.
/// After a failure nothing is parsed at all.
fn skim_for_close(c: &mut Conn, failed: bool, buf: &[u8], max_frame: usize) -> usize {
    if failed {
        return buf.len();
    }
    match parse_header(buf, Role::Server, max_frame) {
        Ok(Some(h)) if h.opcode == Opcode::Close && buf.len() >= h.frame_len() => {
            crate::net::table::finish(c);
            buf.len()
        }
        Ok(Some(h)) if buf.len() >= h.frame_len() => h.frame_len(),
        Ok(_) => 0,
        Err(_) => {
            crate::net::table::finish(c);
            buf.len()
        }
    }
}
