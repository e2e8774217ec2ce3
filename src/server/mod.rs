//! Core layer (sans-IO, top): the server composition — the only module that names both the
//! connection table ([`Net`]) and the application core ([`Hub`]).
//!
//! Owns the read side of every connection ([`Proto`]: the HTTP head search, the WebSocket
//! receiver, unread partial input), answers HTTP requests through the one route table of
//! `router.rs` (health, metrics, the hub's REST calls, the `/ui/` pages in `ui.rs`, upgrades),
//! gathers the read-only views the `/metrics` and `/health` renderers take (`metrics.rs`,
//! `health.rs`), parses WebSocket frames in place and hands their messages to the hub, runs the heartbeat,
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

mod devices;
pub mod health;
mod lifecycle;
pub mod metrics;
pub mod router;
pub mod tts;
mod ui;

use crate::histogram::{self, Histogram};
use crate::http::client::{ResponseError, ResponseParser};
use crate::http::{parse_request, Request};
use crate::hub::{Hub, HubConfig};
use crate::net::{
    is_local, Conn, ConnId, Endpoint, HttpOutcome, Net, Outbox, OverCap, Peer, Phase, Target, Timer,
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
    /// Speech for `GET /api/tts` (syntheses run by the shell).
    pub tts: tts::Tts,
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
            tts: tts::Tts::new(tts::TtsConfig::default()),
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
    /// reserve of [`OVER_CAP_RESERVE`] connections (one reserve for the box's own peers, one for
    /// the network's) for at most [`OVER_CAP_DEADLINE`]: its one
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
            Some(why) if self.reserve_has_room(id) => {
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

    /// Whether the over-cap reserve of `id`'s side has room: the box's own peers (loopback, the
    /// Unix socket) and everyone else each have [`OVER_CAP_RESERVE`] places, so silent
    /// connections from the network cannot keep the operator's own checks out.
    fn reserve_has_room(&self, id: ConnId) -> bool {
        let local = self.net.get(id).is_some_and(|c| is_local(&c.peer));
        self.net.over_cap_count_of(local) < OVER_CAP_RESERVE
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

    /// What the shared store holds, read back by the shell (other processes' writes).
    pub fn handle_shared_state(&mut self, snapshot: Snapshot) {
        self.hub.merge_shared(snapshot);
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
    /// `now` (rendered by [`metrics::exposition`]).
    pub fn metrics(&self, now: Now) -> String {
        let speech = metrics::render(&self.tts.families());
        metrics::exposition(&metrics::View {
            now,
            started: self.started,
            net: &self.net,
            hub: &self.hub,
            turns: &self.turns,
            refusals: self.refusal_counts(),
            servers: self.hub.webhook_servers(now),
        }) + &speech
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

    /// The `/health` document at `now` (rendered by [`health::document`]).
    pub fn health(&self, now: Now) -> serde_json::Value {
        health::document(&health::View {
            now,
            started: self.started,
            listeners: self.listeners,
            stopping: self.stopping,
            store: &self.store,
            net: &self.net,
            hub: &self.hub,
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
                self.serve(id, &req, now);
                used
            }
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
        let authorization = req.header_str("authorization");
        let session_id = req.header_str("x-session-id");
        let pre = match self
            .hub
            .authorize_upgrade(endpoint, authorization, session_id, &peer, now)
        {
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
