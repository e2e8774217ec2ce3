//! Core layer (sans-IO): the connection core of the server.
//!
//! Owns every client connection's state (a `slab` of [`Conn`] indexed by [`ConnId`]), the
//! timers, the output buffer pool, and the routing of HTTP requests to endpoints and upgrades.
//! It never touches a socket or the clock: the shell calls the `handle_*` methods with bytes and
//! the current [`Instant`], then drains the `poll_*` methods for output, closes and the next
//! deadline (the quinn-proto pattern).
//!
//! Call order for one event-loop turn: `handle_accept` / `handle_input` / `handle_eof` for each
//! ready socket, `handle_timeout(now)`, then `poll_dirty` until `None`, writing `output` and
//! reporting it with `consume_output`, and closing where `wants_close`; `handle_closed` when a
//! transport is gone; finally sleep until `poll_timeout`.
//!
//! Invariants: memory per connection is bounded (input by one frame or request plus one read,
//! output by `max_output`, past which the connection is dropped); nothing reachable from peer
//! bytes panics; a connection whose output is above `read_pause` is not read (backpressure).

pub mod conn;
pub mod timers;

use crate::http::{parse_request, write_json_error, write_response, Request, RequestLimits};
use crate::time::Instant;
use crate::ws::frame::{parse_header, write_close, write_frame, Opcode};
use crate::ws::handshake::{validate_upgrade, write_accept};
use crate::ws::{Limits, Message, Receiver, Role};
pub use conn::{Conn, ConnId, Endpoint, Peer, Phase};
use slab::Slab;
use std::time::Duration;
use timers::TimerHeap;

/// Everything the connection core can be tuned by.
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
        }
    }
}

/// Counters the core keeps for `/health` and later `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub accepted: u64,
    pub upgrades: u64,
    pub protocol_errors: u64,
    pub handshake_timeouts: u64,
    pub overflow_drops: u64,
    pub refused_at_capacity: u64,
}

/// Pool of emptied output buffers: at most this many, each at most `POOL_BUF_MAX` bytes.
const POOL_MAX: usize = 16;
const POOL_BUF_MAX: usize = 16 * 1024;

pub struct Server {
    cfg: ServerConfig,
    conns: Slab<Conn>,
    next_gen: u32,
    timers: TimerHeap<ConnId>,
    dirty: Vec<ConnId>,
    pool: Vec<Vec<u8>>,
    started: Instant,
    pub stats: Stats,
}

impl Server {
    pub fn new(cfg: ServerConfig, now: Instant) -> Server {
        Server {
            cfg,
            conns: Slab::new(),
            next_gen: 0,
            timers: TimerHeap::default(),
            dirty: Vec::new(),
            pool: Vec::new(),
            started: now,
            stats: Stats::default(),
        }
    }

    pub fn config(&self) -> &ServerConfig {
        &self.cfg
    }

    // ---- getters -------------------------------------------------------------------------

    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    pub fn websocket_count(&self) -> usize {
        self.conns.iter().filter(|(_, c)| c.is_websocket()).count()
    }

    fn conn(&self, id: ConnId) -> Option<&Conn> {
        self.conns
            .get(id.index as usize)
            .filter(|c| c.gen == id.gen)
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns
            .get_mut(id.index as usize)
            .filter(|c| c.gen == id.gen)
    }

    /// The live connection at a poller token, if the token's generation still matches.
    pub fn conn_at_token(&self, token: usize) -> Option<ConnId> {
        let index = ConnId::token_index(token);
        let c = self.conns.get(index)?;
        let id = ConnId {
            index: index as u32,
            gen: c.gen,
        };
        (id.to_token() == token).then_some(id)
    }

    // ---- inputs --------------------------------------------------------------------------

    /// A transport accepted a connection. Returns `None` only when no slot can be encoded (the
    /// shell then drops the stream); over `max_connections` the connection is answered 503.
    pub fn handle_accept(&mut self, peer: Peer, now: Instant) -> Option<ConnId> {
        if self.conns.len() >= conn::MAX_INDEX {
            return None;
        }
        self.next_gen = self.next_gen.wrapping_add(1);
        let gen = self.next_gen;
        let index = self.conns.insert(Conn::new(gen, peer));
        let id = ConnId {
            index: index as u32,
            gen,
        };
        self.stats.accepted += 1;
        if self.conns.len() > self.cfg.max_connections {
            self.stats.refused_at_capacity += 1;
            let c = &mut self.conns[index];
            take_pooled(&mut self.pool, &mut c.out);
            write_json_error(
                &mut c.out,
                503,
                "AT_CAPACITY",
                "server at connection capacity",
                &[],
            );
            finish(c);
            self.mark_dirty(id);
        } else {
            self.set_deadline(id, Some(now + self.cfg.handshake_timeout));
        }
        Some(id)
    }

    /// Bytes arrived on `id`. `data` may be modified (unmasked in place).
    pub fn handle_input(&mut self, id: ConnId, data: &mut [u8], now: Instant) {
        let Some(c) = self.conn_mut(id) else { return };
        if c.pending_in.is_empty() {
            let used = self.process(id, data, now);
            let rest = &data[used.min(data.len())..];
            if !rest.is_empty() {
                if let Some(c) = self.conn_mut(id) {
                    if accepts_input(&c.phase) {
                        c.pending_in.extend_from_slice(rest);
                    }
                }
            }
        } else {
            let mut buf = std::mem::take(&mut c.pending_in);
            buf.extend_from_slice(data);
            let used = self.process(id, &mut buf, now);
            buf.drain(..used.min(buf.len()));
            if let Some(c) = self.conn_mut(id) {
                if !buf.is_empty() && accepts_input(&c.phase) {
                    c.pending_in = buf;
                }
            }
        }
        self.after_output(id);
    }

    /// The peer closed its sending side.
    pub fn handle_eof(&mut self, id: ConnId, _now: Instant) {
        let Some(c) = self.conn_mut(id) else { return };
        c.pending_in = Vec::new();
        finish(c);
        self.mark_dirty(id);
    }

    /// The transport for `id` is gone (closed by us or failed); forget the connection.
    pub fn handle_closed(&mut self, id: ConnId) {
        if self.conn(id).is_some() {
            let c = self.conns.remove(id.index as usize);
            give_back(&mut self.pool, c.out);
        }
    }

    /// Fire every deadline at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, id)) = self.timers.pop_due(now) {
            let Some(c) = self.conn_mut(id) else { continue };
            if c.deadline != Some(at) {
                continue;
            }
            c.deadline = None;
            match c.phase {
                Phase::Http { .. } => {
                    self.stats.handshake_timeouts += 1;
                    let c = self.conn_mut(id).expect("checked above");
                    c.pending_in = Vec::new();
                    write_json_error(
                        &mut c.out,
                        408,
                        "HANDSHAKE_TIMEOUT",
                        "request not complete within the handshake deadline",
                        &[],
                    );
                    finish(c);
                }
                Phase::Closing | Phase::Done => {
                    c.out.clear();
                    finish(c);
                }
                Phase::Ws { .. } => {}
            }
            self.mark_dirty(id);
        }
    }

    // ---- outputs -------------------------------------------------------------------------

    /// When the shell must next call `handle_timeout`.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let conns = &self.conns;
        self.timers.peek(|at, id| {
            conns
                .get(id.index as usize)
                .is_some_and(|c| c.gen == id.gen && c.deadline == Some(at))
        })
    }

    /// The next connection with output to write or a state change to act on.
    pub fn poll_dirty(&mut self) -> Option<ConnId> {
        while let Some(id) = self.dirty.pop() {
            if let Some(c) = self.conn_mut(id) {
                c.dirty = false;
                return Some(id);
            }
        }
        None
    }

    /// The bytes waiting to be written to `id`.
    pub fn output(&self, id: ConnId) -> &[u8] {
        self.conn(id).map_or(&[], |c| &c.out)
    }

    /// The shell wrote `n` bytes of `output(id)`.
    pub fn consume_output(&mut self, id: ConnId, n: usize) {
        let Server { conns, pool, .. } = self;
        let Some(c) = conns.get_mut(id.index as usize).filter(|c| c.gen == id.gen) else {
            return;
        };
        let n = n.min(c.out.len());
        if n == c.out.len() {
            give_back(pool, std::mem::take(&mut c.out));
        } else {
            c.out.drain(..n);
        }
    }

    /// Whether the shell should read from `id` now.
    pub fn wants_read(&self, id: ConnId) -> bool {
        self.conn(id)
            .is_some_and(|c| !matches!(c.phase, Phase::Done) && c.out.len() < self.cfg.read_pause)
    }

    /// Whether the shell should close `id` now (its last output is flushed).
    pub fn wants_close(&self, id: ConnId) -> bool {
        self.conn(id)
            .is_none_or(|c| c.close_after_flush && c.out.is_empty())
    }

    /// Queue a server frame for `id` with the payload assembled from `parts`.
    pub fn send_frame(&mut self, id: ConnId, opcode: Opcode, parts: &[&[u8]]) {
        let Server { conns, pool, .. } = self;
        let Some(c) = conns.get_mut(id.index as usize).filter(|c| c.gen == id.gen) else {
            return;
        };
        if !c.is_websocket() {
            return;
        }
        take_pooled(pool, &mut c.out);
        write_frame(&mut c.out, opcode, parts);
        self.after_output(id);
    }

    /// Start a clean close of a WebSocket: close frame out, wait for the peer's.
    pub fn close_websocket(&mut self, id: ConnId, code: u16, reason: &str, now: Instant) {
        let Server { conns, pool, .. } = self;
        let Some(c) = conns.get_mut(id.index as usize).filter(|c| c.gen == id.gen) else {
            return;
        };
        if !c.is_websocket() {
            return;
        }
        take_pooled(pool, &mut c.out);
        write_close(&mut c.out, code, reason);
        c.phase = Phase::Closing;
        let deadline = now + self.cfg.close_timeout;
        self.set_deadline(id, Some(deadline));
        self.after_output(id);
    }

    // ---- internals -----------------------------------------------------------------------

    fn mark_dirty(&mut self, id: ConnId) {
        if let Some(c) = self.conn_mut(id) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    /// After output was queued: enforce the cap, and put the connection on the dirty list.
    fn after_output(&mut self, id: ConnId) {
        let max = self.cfg.max_output;
        let Some(c) = self.conn_mut(id) else { return };
        if c.out.len() > max {
            c.out = Vec::new();
            c.pending_in = Vec::new();
            finish(c);
            self.stats.overflow_drops += 1;
        }
        let Some(c) = self.conn(id) else { return };
        if !c.out.is_empty() || c.close_after_flush {
            self.mark_dirty(id);
        }
    }

    fn set_deadline(&mut self, id: ConnId, at: Option<Instant>) {
        let Some(c) = self.conn_mut(id) else { return };
        c.deadline = at;
        if let Some(at) = at {
            self.timers.push(at, id);
            if self.timers.len() > 2 * self.conns.len() + 64 {
                let conns = &self.conns;
                self.timers.rebuild(|at, id| {
                    conns
                        .get(id.index as usize)
                        .is_some_and(|c| c.gen == id.gen && c.deadline == Some(at))
                });
            }
        }
    }

    /// Run the connection's protocol over `buf`; returns the bytes used up. Bytes not used up
    /// are an incomplete frame or request (or, in a finished phase, irrelevant).
    fn process(&mut self, id: ConnId, buf: &mut [u8], now: Instant) -> usize {
        let mut at = 0;
        loop {
            let Some(c) = self.conn_mut(id) else {
                return buf.len();
            };
            let used = match c.phase {
                Phase::Http { .. } => self.process_http(id, &buf[at..], now),
                Phase::Ws { .. } => self.process_ws(id, &mut buf[at..], now),
                Phase::Closing => skim_for_close(c, &buf[at..]),
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

    fn process_http(&mut self, id: ConnId, buf: &[u8], now: Instant) -> usize {
        let limits = self.cfg.http;
        let Server { conns, pool, .. } = self;
        let c = &mut conns[id.index as usize];
        let Phase::Http { scanned } = &mut c.phase else {
            return 0;
        };
        match parse_request(buf, scanned, &limits) {
            Ok(None) => 0,
            Err(e) => {
                take_pooled(pool, &mut c.out);
                write_json_error(&mut c.out, e.status(), e.code(), e.message(), &[]);
                finish(c);
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
        let endpoint = match req.path {
            "/echo" if self.cfg.echo => Some(Endpoint::Echo),
            _ => None,
        };
        let uptime = now.saturating_since(self.started).as_secs();
        let (total, ws) = (self.connection_count(), self.websocket_count());
        let ws_limits = self.cfg.ws;
        let Server {
            conns, pool, stats, ..
        } = self;
        let c = &mut conns[id.index as usize];
        take_pooled(pool, &mut c.out);
        match (endpoint, req.method, req.path) {
            (Some(endpoint), _, _) => match validate_upgrade(req) {
                Ok(key) => {
                    write_accept(&mut c.out, key);
                    c.phase = Phase::Ws {
                        rx: Receiver::new(Role::Server, ws_limits),
                        endpoint,
                    };
                    stats.upgrades += 1;
                    self.set_deadline(id, None);
                    return;
                }
                Err(e) => write_json_error(
                    &mut c.out,
                    e.status(),
                    e.code(),
                    e.message(),
                    e.extra_headers(),
                ),
            },
            (None, "GET" | "HEAD", "/health") => {
                let body = serde_json::json!({
                    "status": "ok",
                    "version": env!("CARGO_PKG_VERSION"),
                    "uptimeSeconds": uptime,
                    "connections": { "total": total, "websocket": ws },
                });
                write_response(
                    &mut c.out,
                    200,
                    "application/json",
                    &[],
                    body.to_string().as_bytes(),
                );
            }
            (None, _, "/health") => write_json_error(
                &mut c.out,
                405,
                "METHOD_NOT_ALLOWED",
                "use GET",
                &["Allow: GET"],
            ),
            (None, _, _) => write_json_error(&mut c.out, 404, "NOT_FOUND", "no such endpoint", &[]),
        }
        finish(c);
    }

    fn process_ws(&mut self, id: ConnId, buf: &mut [u8], now: Instant) -> usize {
        let Server {
            conns, pool, stats, ..
        } = self;
        let c = &mut conns[id.index as usize];
        let Conn { phase, out, .. } = c;
        let Phase::Ws { rx, endpoint } = phase else {
            return 0;
        };
        let endpoint = *endpoint;
        let step = match rx.next(buf) {
            Ok(step) => step,
            Err(e) => {
                stats.protocol_errors += 1;
                take_pooled(pool, out);
                write_close(out, e.close_code(), e.reason());
                c.phase = Phase::Closing;
                c.pending_in = Vec::new();
                let deadline = now + self.cfg.close_timeout;
                self.set_deadline(id, Some(deadline));
                return buf.len();
            }
        };
        let used = step.consumed;
        let Some(msg) = step.message else { return used };
        take_pooled(pool, out);
        match msg {
            Message::Ping(p) => write_frame(out, Opcode::Pong, &[p]),
            Message::Pong(_) => {}
            Message::Close(code) => {
                match code {
                    Some((code, _)) => write_close(out, code, ""),
                    None => write_frame(out, Opcode::Close, &[]),
                }
                finish(c);
                return buf.len();
            }
            Message::Text(t) => match endpoint {
                Endpoint::Echo => write_frame(out, Opcode::Text, &[t.as_bytes()]),
            },
            Message::Binary(b) => match endpoint {
                Endpoint::Echo => write_frame(out, Opcode::Binary, &[b]),
            },
        }
        used
    }
}

/// Whether leftover bytes are still worth keeping for this phase.
fn accepts_input(phase: &Phase) -> bool {
    !matches!(phase, Phase::Done)
}

/// Nothing more will be read; close once the output is flushed.
fn finish(c: &mut Conn) {
    c.phase = Phase::Done;
    c.close_after_flush = true;
    c.deadline = None;
}

/// In `Closing`, look through complete frames for the peer's close; anything else is dropped.
fn skim_for_close(c: &mut Conn, buf: &[u8]) -> usize {
    match parse_header(buf, Role::Server, usize::MAX >> 1) {
        Ok(Some(h)) if h.opcode == Opcode::Close && buf.len() >= h.frame_len() => {
            finish(c);
            buf.len()
        }
        Ok(Some(h)) if buf.len() >= h.frame_len() => h.frame_len(),
        Ok(_) => 0,
        Err(_) => {
            finish(c);
            buf.len()
        }
    }
}

fn take_pooled(pool: &mut Vec<Vec<u8>>, out: &mut Vec<u8>) {
    if out.capacity() == 0 {
        if let Some(b) = pool.pop() {
            *out = b;
        }
    }
}

fn give_back(pool: &mut Vec<Vec<u8>>, mut buf: Vec<u8>) {
    if buf.capacity() > 0 && buf.capacity() <= POOL_BUF_MAX && pool.len() < POOL_MAX {
        buf.clear();
        pool.push(buf);
    }
}
