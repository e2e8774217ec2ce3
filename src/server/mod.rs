//! Core layer (sans-IO, top): the server composition — the only module that names both the
//! connection table ([`Net`]) and the application core ([`Hub`]).
//!
//! Runs the read side of every connection (kept in its slot of the connection table: the HTTP
//! head search, the WebSocket receiver, unread partial input), turns the table's backpressure
//! news into feeder holds (`settle_flow`), answers HTTP requests through the one route table of
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
//! `wants_close`), `poll_reading` until `None` (stop or resume reading those connections; the
//! shell never asks per read), `handle_closed` when a transport is gone; sleep until
//! `poll_timeout`.
//!
//! Invariants: memory per connection is bounded (input by one frame or request plus one read,
//! output by `max_output`); nothing reachable from peer bytes panics; a connection whose output
//! is above `read_pause` is not read (backpressure); the hub is handed the table as an
//! [`Outbox`] while a message borrowed from this connection's receiver is alive, which works
//! because the receiver is held out of its slot while its message is handled.

mod devices;
pub mod drain;
pub mod health;
mod lifecycle;
pub mod metrics;
pub mod router;
pub mod tts;
mod ui;

use crate::histogram::{self, Histogram};
use crate::http::client::{Response, ResponseError, ResponseParser};
use crate::http::{parse_request, Request};
use crate::hub::{Hub, HubConfig};
use crate::net::{
    flow, is_local, Conn, ConnId, Endpoint, HttpOutcome, Net, Outbox, OverCap, Peer, Phase, Read,
    Target, Timer,
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

pub struct Server {
    pub net: Net,
    pub hub: Hub,
    /// How the durable store is doing, as the shell last reported it.
    store: StoreStatus,
    started: Instant,
    /// Event-loop turn durations, as the shell measured them ([`histogram::TURN_US`]).
    turns: Histogram,
    /// Listeners open, as the shell last reported them (`None`: no shell reported any).
    listeners: Option<usize>,
    /// An orderly stop began.
    stopping: bool,
    /// Caption finals queued for apps at the stop, and those lost ([`drain`]).
    drain: drain::DrainWatch,
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
            started: now.mono,
            turns: Histogram::default(),
            listeners: None,
            stopping: false,
            drain: drain::DrainWatch::default(),
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
        self.net
            .get(id)
            .map_or((0, 0), |c| (c.input.len(), c.input.capacity()))
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
        if let Some(c) = self.net.get_mut(id) {
            c.input = Vec::new();
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
        let pending = (!c.input.is_empty()).then(|| std::mem::take(&mut c.input));
        self.net.stats.bytes_in[kind] += data.len() as u64;
        match pending {
            None => {
                let used = self.process(id, data, now);
                self.keep_rest(id, &data[used.min(data.len())..]);
            }
            Some(mut buf) => {
                buf.extend_from_slice(data);
                let used = self.process(id, &mut buf, now);
                buf.drain(..used.min(buf.len()));
                // An emptied buffer is dropped: an idle connection holds no capacity.
                if !buf.is_empty() && self.keeps_input(id) {
                    if let Some(c) = self.net.get_mut(id) {
                        c.input = buf;
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
        self.after(now, Some(id));
    }

    /// The peer closed its sending side.
    pub fn handle_eof(&mut self, id: ConnId, now: Now) {
        self.net.now = now.mono;
        let Some(c) = self.net.get_mut(id) else {
            return;
        };
        if let Phase::Client = c.phase {
            // A response delimited by the end of the stream ends here.
            let pending = std::mem::take(&mut c.input);
            let parser = response_parser(&mut c.read);
            let r = parser.finish_at_eof(&pending);
            let outcome = outcome(r, &pending, self.net.wants_body(id));
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
        self.after(now, None);
    }

    /// The TLS handshake of the outbound request `id` failed, for `reason` (a certificate the
    /// trust refused): that is its outcome. The shell then closes it as any other.
    pub fn handle_tls_failure(&mut self, id: ConnId, reason: &'static str, now: Now) {
        self.net.now = now.mono;
        self.net.complete_client(id, HttpOutcome::Tls(reason));
        self.after(now, None);
    }

    /// The transport for `id` is gone (closed by us or failed); forget the connection.
    pub fn handle_closed(&mut self, id: ConnId, now: Now) {
        self.net.now = now.mono;
        if let Some(c) = self.net.get(id) {
            self.drain.gone(id, c.consumed);
        }
        if self.net.remove(id).is_some() {
            self.hub.on_closed(&mut self.net, id, now);
        }
        self.after(now, None);
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
                    if let Some(c) = self.net.get_mut(id) {
                        c.input = Vec::new();
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
        self.after(now, None);
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

    /// Every lease claim and release since the last call: the shell hands them to the writer.
    pub fn take_leases(&mut self) -> Vec<crate::state::Lease> {
        self.hub.take_leases()
    }

    /// What the shared store said of this process's leases (see [`Hub::on_lease_news`]).
    pub fn handle_lease_news(&mut self, news: crate::state::LeaseNews, now: Now) {
        self.hub.on_lease_news(&mut self.net, news, now);
    }

    /// What the shared store holds, read back by the shell (other processes' writes): all of
    /// it, or what changed since the last read-back.
    pub fn handle_shared_state(&mut self, changed: crate::state::Changed, now: Now) {
        self.hub
            .merge_shared_users(changed.snapshot, changed.users.as_deref(), now);
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
        // Written down below its high-water mark, or the total back under its budget: held
        // feeders may be free.
        if was_over && !self.net.over_budget() || self.net.congestion_news() {
            self.settle_flow(false, None, false);
        }
    }

    /// Whether the shell may read `id` now: a look at its slot (not while its own output is
    /// backed up or it is done, nor while it is held as a feeder). The shell learns of every
    /// change from [`Server::poll_reading`] and need not ask.
    pub fn wants_read(&self, id: ConnId) -> bool {
        self.net.may_read(id)
    }

    /// A connection whose readability changed: `false`, stop reading it (its own output is
    /// backed up, it is done, or it feeds a session one of whose subscribers is backed up, or
    /// the output of all connections together is over its budget: the subscriber catches up
    /// first, TCP pushes back to the sender); `true`, read it again (bytes may be waiting in its
    /// socket that raise no new readiness event).
    pub fn poll_reading(&mut self) -> Option<(ConnId, bool)> {
        self.net.poll_reading()
    }

    /// Turn the table's news into feeder holds (pushed backpressure). A connection that became
    /// backed up holds the feeders of the session it subscribes to with something that may not
    /// be dropped; the total going over its budget (`entered`) holds every feeder; `touched`
    /// (whose input was just handled, so may have become a feeder or changed what it
    /// subscribes to) is looked at while anything is backed up or over the budget, and after a
    /// `reload` of the app registry every feeder is; held feeders no longer blocked are
    /// released. Costs nothing while nothing is backed up.
    fn settle_flow(&mut self, entered: bool, touched: Option<ConnId>, reload: bool) {
        let Server { net, hub, .. } = self;
        let over = net.over_budget();
        let why = if over { flow::BUDGET } else { flow::FEEDER };
        let mut held = 0;
        if entered && over {
            hub.each_feeder(|f| held += u64::from(net.hold_feeder(f, flow::BUDGET)));
        }
        while let Some((id, backed)) = net.poll_congestion() {
            if backed {
                hub.feeders_held_by(id, |f| held += u64::from(net.hold_feeder(f, why)));
            }
        }
        if let Some(t) = touched.filter(|_| over || net.any_backed_up()) {
            if over {
                if hub.is_feeder(t) {
                    held += u64::from(net.hold_feeder(t, why));
                }
            } else {
                if net.backed_up(t) {
                    hub.feeders_held_by(t, |f| held += u64::from(net.hold_feeder(f, why)));
                }
                if hub.feeder_blocked(net, t) {
                    held += u64::from(net.hold_feeder(t, why));
                }
            }
        }
        if reload && (over || net.any_backed_up()) {
            // The registry changed who publishes: any feeder may be new.
            hub.each_feeder(|f| {
                if over || hub.feeder_blocked(net, f) {
                    held += u64::from(net.hold_feeder(f, why));
                }
            });
        }
        match over {
            true => net.stats.budget_pauses += held,
            false => hub.counters.feeder_pauses += held,
        }
        if !over && net.feeders_held() {
            net.release_feeders(|net, f| hub.feeder_blocked(net, f));
        }
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
            drain_finals_lost: self.drain.lost,
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

    fn keep_rest(&mut self, id: ConnId, rest: &[u8]) {
        if rest.is_empty() || !self.keeps_input(id) {
            return;
        }
        if let Some(c) = self.net.get_mut(id) {
            c.input.extend_from_slice(rest);
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

    /// Hand finished outbound requests to the hub; turn backpressure news into feeder holds
    /// ([`Server::settle_flow`]; `touched`: the connection whose input was handled).
    fn after(&mut self, now: Now, touched: Option<ConnId>) {
        while let Some((id, outcome)) = self.net.poll_done() {
            self.hub.on_http_done(&mut self.net, id, outcome, now);
        }
        self.note_refusals(now);
        let entered = self.net.watch_over_budget();
        if entered || !self.net.flow_quiet() {
            self.settle_flow(entered, touched, false);
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
                Phase::Closing { failed } => {
                    let (used, close) = skim_for_close(failed, &buf[at..], max_frame);
                    if close {
                        self.net.finish(id);
                    }
                    used
                }
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
        let Some(c) = self.net.get_mut(id) else {
            return buf.len();
        };
        match response_parser(&mut c.read).feed(buf) {
            Ok(None) => 0,
            r => {
                let r = r.and_then(|r| r.ok_or(ResponseError::AlreadyComplete));
                let outcome = outcome(r, buf, self.net.wants_body(id));
                self.net.complete_client(id, outcome);
                buf.len()
            }
        }
    }

    fn process_http(&mut self, id: ConnId, buf: &[u8], now: Now) -> usize {
        let limits = self.net.cfg.http;
        let Some(Conn {
            read: Read::Http { scanned },
            ..
        }) = self.net.get_mut(id)
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
        if let Some(c) = self.net.get_mut(id) {
            c.read = Read::Ws(Receiver::new(Role::Server, limits));
            c.phase = Phase::Ws(endpoint);
            c.endpoint = Some(endpoint);
        }
        let heartbeat = self.net.cfg.ping_interval.map(|i| now.mono + i);
        self.net.set_deadline(id, heartbeat);
        self.net.stats.upgrades += 1;
        self.hub.on_open(&mut self.net, id, endpoint, pre, now);
    }

    fn process_ws(&mut self, id: ConnId, endpoint: Endpoint, buf: &mut [u8], now: Now) -> usize {
        let Server { net, hub, .. } = self;
        // The receiver is held out of its slot while its message is handled (the message may
        // borrow it), so the hub can write to any connection, this one included, meanwhile.
        let Some(c) = net.get_mut(id) else {
            return buf.len();
        };
        let kind = c.kind();
        let mut read = std::mem::take(&mut c.read);
        let Read::Ws(rx) = &mut read else {
            c.read = read;
            return buf.len();
        };
        let used = ws_message(net, hub, rx, id, endpoint, kind, buf, now);
        // The hub may have closed this connection: the rest of the input is not for us.
        match net.get_mut(id) {
            Some(c) => {
                c.read = read;
                if c.is_websocket() {
                    used
                } else {
                    buf.len()
                }
            }
            None => buf.len(),
        }
    }
}

/// Parse at most one message of WebSocket `id` from `buf` with its receiver `rx` and act on it:
/// control frames here, data to the hub (or echoed back). Returns the bytes used up.
#[allow(clippy::too_many_arguments)]
fn ws_message(
    net: &mut Net,
    hub: &mut Hub,
    rx: &mut Receiver,
    id: ConnId,
    endpoint: Endpoint,
    kind: usize,
    buf: &mut [u8],
    now: Now,
) -> usize {
    let step = match rx.next(buf) {
        Err(e) => {
            net.fail_websocket(id, e.close_code(), e.reason(), now.mono);
            return buf.len();
        }
        Ok(step) => step,
    };
    let used = step.consumed;
    if let Some(Message::Text(_) | Message::Binary(_)) = &step.message {
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
    used
}

/// The response parser of an outbound connection (its read side becomes one on first use).
fn response_parser(read: &mut Read) -> &mut ResponseParser {
    if !matches!(read, Read::Client(_)) {
        *read = Read::Client(Box::default());
    }
    match read {
        Read::Client(parser) => parser,
        _ => unreachable!("made a response parser just above"),
    }
}

/// The outcome of a response parsed from `buf`: with its body when `want_body`.
fn outcome(r: Result<Response, ResponseError>, buf: &[u8], want_body: bool) -> HttpOutcome {
    match r {
        Ok(r) if want_body => HttpOutcome::Body {
            status: r.status,
            body: r.body(buf).to_vec(),
        },
        Ok(r) => HttpOutcome::Status(r.status),
        Err(e) => HttpOutcome::Failed(e.message()),
    }
}

/// In `Closing`, look through complete frames for the peer's close; anything else is dropped.
/// After a failure nothing is parsed at all. Returns the bytes used up and whether the
/// connection is done (the peer's close came, or bytes that are no frame).
fn skim_for_close(failed: bool, buf: &[u8], max_frame: usize) -> (usize, bool) {
    if failed {
        return (buf.len(), false);
    }
    match parse_header(buf, Role::Server, max_frame) {
        Ok(Some(h)) if h.opcode == Opcode::Close && buf.len() >= h.frame_len() => (buf.len(), true),
        Ok(Some(h)) if buf.len() >= h.frame_len() => (h.frame_len(), false),
        Ok(_) => (0, false),
        Err(_) => (buf.len(), true),
    }
}
