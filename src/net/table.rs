//! Core layer (sans-IO, bottom): the connection table.
//!
//! Owns every connection's state (a `slab` of [`Conn`] indexed by generation-checked
//! [`ConnId`]s: write side and read side in one slot), their deadlines, the pool of output
//! buffers ([`Pool`]), the running total of output waiting in all connections and its budget,
//! the list of connections with news for the shell, the backpressure lists of [`super::flow`]
//! (kept up to date wherever output is counted), outbound HTTP client connections waiting for a
//! socket, and finished outbound requests waiting for the hub. It writes bytes into connections and knows nothing of
//! sessions or apps: the hub drives it through `send_*`, `close_websocket`, `open_client`.
//!
//! Invariants: output per connection never exceeds `max_output` (past it the connection is
//! dropped, never grown); the running total is the sum of every connection's `counted`, which
//! is its pending output as of the last append or write (every `send_*`, `check_cap`,
//! `consume_output`, `finish`, `close_websocket` brings it in line: whoever writes through
//! [`Net::out`] ends with one of them, checked in debug builds when the output is handed to the
//! shell), so it costs one add and one subtract per append or write; a closed or reused
//! slot never receives bytes meant for its previous occupant (generation check on every
//! access); idle connections hold no buffer capacity; a finished connection's unread input is
//! dropped as it finishes.

use super::conn::{Conn, ConnId, OverCap, Peer, Phase, MAX_INDEX};
use super::flow::{self, Flow};
use super::pool::Pool;
use super::{Outbox, ServerConfig, Stats};
use crate::http::write_json_error;
use crate::time::Instant;
use crate::time::TimerHeap;
use crate::ws::frame::{write_close, write_frame, Opcode};
use slab::Slab;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

/// Where an outbound HTTP request goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// Over TLS (`https://`), with `host` as the server name; `None`: plain TCP.
    pub tls: Option<Tls>,
}

/// An outbound connection over TLS: what its server's certificate is verified against. The
/// shell makes the TLS client from it; the core only says which trust a target needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tls {
    /// A PEM file of the CAs to trust (a venue's private CA); `None`: the system's CAs.
    pub ca_file: Option<std::path::PathBuf>,
}

/// How an outbound HTTP request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpOutcome {
    /// A complete response with this status.
    Status(u16),
    /// A complete response with this status and body, for a request opened with
    /// [`Outbox::fetch`] (the body is bounded by the response parser's `max_body`; past it the
    /// outcome is `Failed`).
    Body { status: u16, body: Vec<u8> },
    /// No usable response: refused, reset, timed out, or malformed.
    Failed(&'static str),
    /// The TLS handshake failed (a certificate the trust does not accept, a server that does
    /// not speak TLS): why, for the log, the metrics and the operator page.
    Tls(&'static str),
}

pub struct Net {
    pub cfg: ServerConfig,
    pub(super) conns: Slab<Conn>,
    next_gen: u32,
    timers: TimerHeap<(ConnId, Timer)>,
    dirty: Vec<ConnId>,
    pool: Pool,
    budget: Budget,
    connects: VecDeque<(ConnId, Target)>,
    done: Vec<(ConnId, HttpOutcome)>,
    /// Outbound requests whose response body is wanted ([`Outbox::fetch`]; few at a time).
    fetches: Vec<ConnId>,
    /// When each connection may be read, and who must hear of changes ([`flow`]).
    pub(super) flow: Flow,
    /// Outbound requests held (their connections count here, not against `max_connections`).
    outbound: usize,
    /// Client connections held per IP address (only addresses with at least one); connections
    /// held over a cap are not counted here.
    per_address: HashMap<IpAddr, u32>,
    /// Client connections held over a cap (`Conn::over_cap`), counted apart from the others;
    /// of them, those from the box itself (loopback, the Unix socket, in-process).
    over_cap: usize,
    over_cap_local: usize,
    /// The `now` of the input being handled (set by the server at each `handle_*`), for
    /// deadlines armed by writes.
    pub now: Instant,
    pub stats: Stats,
}

impl Net {
    pub fn new(cfg: ServerConfig) -> Net {
        Net {
            cfg,
            conns: Slab::new(),
            next_gen: 0,
            timers: TimerHeap::default(),
            dirty: Vec::new(),
            pool: Pool::default(),
            budget: Budget::default(),
            connects: VecDeque::new(),
            done: Vec::new(),
            fetches: Vec::new(),
            flow: Flow::default(),
            outbound: 0,
            per_address: HashMap::new(),
            over_cap: 0,
            over_cap_local: 0,
            now: Instant::ZERO,
            stats: Stats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Client connections (everything but our own outbound requests).
    pub fn inbound_count(&self) -> usize {
        self.conns.len() - self.outbound
    }

    /// Client connections admitted: those held over a cap aside.
    pub fn admitted_count(&self) -> usize {
        self.inbound_count() - self.over_cap
    }

    /// Client connections held over a cap, waiting for their one request.
    pub fn over_cap_count(&self) -> usize {
        self.over_cap
    }

    /// Of [`Net::over_cap_count`], those held for `local` peers (see [`is_local`]) or for the
    /// others: each side has a reserve of its own.
    pub fn over_cap_count_of(&self, local: bool) -> usize {
        if local {
            self.over_cap_local
        } else {
            self.over_cap - self.over_cap_local
        }
    }

    /// Hold `id`, accepted past a cap, apart: it no longer counts towards its address or the
    /// admitted connections, only towards the reserve of over-cap connections.
    pub fn hold_over_cap(&mut self, id: ConnId, why: OverCap) {
        let Some(c) = self
            .get_mut(id)
            .filter(|c| c.over_cap.is_none() && !c.outbound)
        else {
            return;
        };
        c.over_cap = Some(why);
        let peer = c.peer.clone();
        self.over_cap += 1;
        self.over_cap_local += usize::from(is_local(&peer));
        self.uncount_address(&peer);
    }

    fn uncount_address(&mut self, peer: &Peer) {
        if let Some(a) = address_of(peer) {
            if let Some(n) = self.per_address.get_mut(&a) {
                *n -= 1;
                if *n == 0 {
                    self.per_address.remove(&a);
                }
            }
        }
    }

    /// Outbound requests held.
    pub fn outbound_count(&self) -> usize {
        self.outbound
    }

    /// Client connections held from `peer`'s IP address (0 for Unix and in-process peers,
    /// which no per-address limit applies to).
    pub fn address_count(&self, peer: &Peer) -> usize {
        address_of(peer).map_or(0, |a| {
            self.per_address.get(&a).copied().unwrap_or(0) as usize
        })
    }

    /// Whether `peer`'s address is in a network exempt from `max_per_address`.
    pub fn exempt_from_address_cap(&self, peer: &Peer) -> bool {
        address_of(peer).is_some_and(|a| self.cfg.per_address_exempt.iter().any(|n| n.contains(a)))
    }

    /// Distinct IP addresses with client connections.
    pub fn address_total(&self) -> usize {
        self.per_address.len()
    }

    /// Every connection, for aggregate views (`/metrics`).
    pub fn iter(&self) -> impl Iterator<Item = &Conn> {
        self.conns.iter().map(|(_, c)| c)
    }

    /// The id of every connection.
    pub fn ids(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.conns.iter().map(|(index, c)| ConnId {
            index: index as u32,
            gen: c.gen,
        })
    }

    /// Bytes of output waiting in all connections together (as of the last append or write).
    pub fn total_output(&self) -> usize {
        self.budget.total
    }

    /// Whether the total output passed `max_total_output` and is not yet back under half of it.
    pub fn over_budget(&self) -> bool {
        self.budget.over
    }

    /// Buffers kept in the pool, and their capacity in bytes.
    pub fn pooled(&self) -> (usize, usize) {
        self.pool.held()
    }

    pub fn websocket_count(&self) -> usize {
        self.conns.iter().filter(|(_, c)| c.is_websocket()).count()
    }

    pub fn get(&self, id: ConnId) -> Option<&Conn> {
        self.conns
            .get(id.index as usize)
            .filter(|c| c.gen == id.gen)
    }

    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns
            .get_mut(id.index as usize)
            .filter(|c| c.gen == id.gen)
    }

    pub fn at_token(&self, token: usize) -> Option<ConnId> {
        let index = ConnId::token_index(token);
        let c = self.conns.get(index)?;
        let id = ConnId {
            index: index as u32,
            gen: c.gen,
        };
        (id.to_token() == token).then_some(id)
    }

    /// Add a connection; `None` when no slot can be encoded in a token.
    pub fn insert(&mut self, peer: Peer, phase: Phase) -> Option<ConnId> {
        if self.conns.len() >= MAX_INDEX {
            return None;
        }
        self.next_gen = self.next_gen.wrapping_add(1);
        let gen = self.next_gen;
        let c = Conn::new(gen, peer, phase);
        self.outbound += usize::from(c.outbound);
        if let Some(a) = address_of(&c.peer).filter(|_| !c.outbound) {
            *self.per_address.entry(a).or_default() += 1;
        }
        let index = self.conns.insert(c);
        Some(ConnId {
            index: index as u32,
            gen,
        })
    }

    /// Forget a connection; returns it so the caller can see what it was.
    pub fn remove(&mut self, id: ConnId) -> Option<Conn> {
        self.get(id)?;
        let mut c = self.conns.remove(id.index as usize);
        self.flow.forget(&c);
        self.outbound -= usize::from(c.outbound);
        if c.over_cap.is_some() {
            self.over_cap -= 1;
            self.over_cap_local -= usize::from(is_local(&c.peer));
        } else if !c.outbound {
            self.uncount_address(&c.peer);
        }
        self.budget.total -= c.counted as usize;
        self.pool.give_back(std::mem::take(&mut c.out), self.now);
        self.fetches.retain(|&f| f != id);
        if let Phase::Client = c.phase {
            self.done.push((
                id,
                HttpOutcome::Failed("connection closed before a response"),
            ));
        }
        Some(c)
    }

    /// The output buffer of `id`, taken from the pool if it has none. Marks `id` dirty.
    pub fn out(&mut self, id: ConnId) -> Option<&mut Vec<u8>> {
        self.mark_dirty(id);
        let Net { conns, pool, .. } = self;
        let c = conns
            .get_mut(id.index as usize)
            .filter(|c| c.gen == id.gen)?;
        if c.out.capacity() == 0 {
            if let Some(b) = pool.take() {
                c.out = b;
            }
        }
        Some(&mut c.out)
    }

    pub fn output(&self, id: ConnId) -> &[u8] {
        self.get(id).map_or(&[], |c| &c.out[c.out_head..])
    }

    pub fn consume_output(&mut self, id: ConnId, n: usize) {
        let Net {
            conns,
            pool,
            budget,
            stats,
            cfg,
            now,
            flow,
            ..
        } = self;
        let Some(c) = conns.get_mut(id.index as usize).filter(|c| c.gen == id.gen) else {
            return;
        };
        let n = n.min(c.pending());
        c.consumed = c.consumed.wrapping_add(n as u32);
        stats.bytes_out[c.kind()] += n as u64;
        c.out_head += n;
        c.mid_frame = n > 0 || c.mid_frame;
        if c.out_head == c.out.len() {
            c.out_head = 0;
            c.mid_frame = false;
            pool.give_back(std::mem::take(&mut c.out), *now);
        } else if c.out_head >= c.out.len() / 2 {
            c.out.drain(..c.out_head);
            c.out_head = 0;
        }
        account(budget, stats, cfg.max_total_output, c);
        if c.flow & (flow::OWN | flow::BACKED) != 0 {
            relevel(c, flow, id, cfg.read_pause);
        }
        // Over the budget, any output left waiting is watched for progress.
        if c.pending() == 0 || c.pending() <= cfg.read_pause / 2 && !budget.over {
            c.stall_at = None;
        }
    }

    pub fn mark_dirty(&mut self, id: ConnId) {
        if let Some(c) = self.get_mut(id) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    /// The next connection with news for the shell. An outbound request whose socket the shell
    /// has not opened yet is not news: it is marked again when `poll_connect` hands it out.
    pub fn poll_dirty(&mut self) -> Option<ConnId> {
        while let Some(id) = self.dirty.pop() {
            if let Some(c) = self.get_mut(id) {
                debug_assert_eq!(
                    c.counted as usize,
                    c.pending().min(u32::MAX as usize),
                    "output of {id} written but not counted"
                );
                c.dirty = false;
                if !c.awaiting_connect {
                    return Some(id);
                }
            }
        }
        None
    }

    /// After output was queued: count it, enforce the cap, and start watching a WebSocket
    /// that just backed up for write progress.
    pub fn check_cap(&mut self, id: ConnId) {
        let Net {
            conns,
            budget,
            stats,
            cfg,
            ..
        } = self;
        let Some(c) = conns.get_mut(id.index as usize).filter(|c| c.gen == id.gen) else {
            return;
        };
        account(budget, stats, cfg.max_total_output, c);
        // `enforce_cap` acts only at or past one of its two limits, or over the budget.
        if c.pending() >= cfg.max_output.min(cfg.read_pause) || budget.over {
            self.enforce_cap(id);
        }
    }

    /// The rest of `check_cap`, for output already counted.
    fn enforce_cap(&mut self, id: ConnId) {
        let (max, high) = (self.cfg.max_output, self.cfg.read_pause);
        let at = self.now + self.cfg.stall_timeout;
        let Net {
            conns,
            budget,
            stats,
            cfg,
            flow,
            ..
        } = self;
        let Some(c) = conns.get_mut(id.index as usize).filter(|c| c.gen == id.gen) else {
            return;
        };
        // Past the mark with both bits set already (a backed-up subscriber's usual state),
        // nothing changes.
        if c.pending() <= high || c.flow & (flow::OWN | flow::BACKED) != flow::OWN | flow::BACKED {
            relevel(c, flow, id, high);
        }
        if c.pending() > max {
            c.out = Vec::new();
            c.out_head = 0;
            c.mid_frame = false;
            account(budget, stats, cfg.max_total_output, c);
            relevel(c, flow, id, high);
            let before = c.flow;
            finish(c);
            flow.note(id, c, before);
            self.stats.overflow_drops += 1;
            self.mark_dirty(id);
        } else if congested(c, high, budget.over) && c.stall_at.is_none() && c.is_websocket() {
            c.stall_at = Some(at);
            c.stall_mark = c.consumed;
            self.timers.push(at, (id, Timer::Stall));
        }
    }

    /// The total just went over its budget: every WebSocket with output waiting is now backed
    /// up, so each is watched for write progress (a stalled one is closed at its stall
    /// deadline, whatever its own backlog). True when it did (the core then holds the
    /// feeders).
    #[inline]
    pub fn watch_over_budget(&mut self) -> bool {
        self.budget.entered && self.watch_stalls_over_budget()
    }

    fn watch_stalls_over_budget(&mut self) -> bool {
        if !std::mem::take(&mut self.budget.entered) || !self.budget.over {
            return false;
        }
        let at = self.now + self.cfg.stall_timeout;
        for (index, c) in self.conns.iter_mut() {
            if c.pending() > 0 && c.stall_at.is_none() && c.is_websocket() {
                c.stall_at = Some(at);
                c.stall_mark = c.consumed;
                let id = ConnId {
                    index: index as u32,
                    gen: c.gen,
                };
                self.timers.push(at, (id, Timer::Stall));
            }
        }
        true
    }

    /// Bring the running total in line with `id`'s output.
    fn recount(&mut self, id: ConnId) {
        let Net {
            conns,
            budget,
            stats,
            cfg,
            flow,
            ..
        } = self;
        if let Some(c) = conns.get_mut(id.index as usize).filter(|c| c.gen == id.gen) {
            account(budget, stats, cfg.max_total_output, c);
            relevel(c, flow, id, cfg.read_pause);
        }
    }

    /// Nothing more will be read from `id`: close once its output is flushed.
    fn finish_conn(&mut self, id: ConnId) -> bool {
        let Net { conns, flow, .. } = self;
        let Some(c) = conns.get_mut(id.index as usize).filter(|c| c.gen == id.gen) else {
            return false;
        };
        let before = c.flow;
        finish(c);
        flow.note(id, c, before);
        true
    }

    /// A failed WebSocket: nothing more is parsed, its unread input is dropped.
    fn fail_reading(&mut self, id: ConnId) {
        if let Some(c) = self.get_mut(id) {
            c.phase = Phase::Closing { failed: true };
            c.input = Vec::new();
        }
    }

    /// A backed-up connection's stall deadline passed: close it if it wrote nothing since the
    /// deadline was armed, else watch it for another stall interval.
    pub fn check_stall(&mut self, id: ConnId, now: Instant) {
        let (high, over) = (self.cfg.read_pause, self.budget.over);
        let at = now + self.cfg.stall_timeout;
        let Some(c) = self.get_mut(id) else { return };
        if !congested(c, high, over) || !c.is_websocket() {
            return;
        }
        if c.consumed != c.stall_mark {
            c.stall_at = Some(at);
            c.stall_mark = c.consumed;
            self.timers.push(at, (id, Timer::Stall));
            return;
        }
        let mid_frame = c.mid_frame;
        self.stats.stall_closes += 1;
        if mid_frame {
            // Part of a frame is out: what follows can neither be cut nor will it be read.
            // Drop the connection without a close frame.
            self.abort(id);
            return;
        }
        // What is queued will never be read: drop it, say why, and close.
        if let Some(c) = self.get_mut(id) {
            c.out.clear();
            c.out_head = 0;
        }
        self.close_websocket(id, 1008, "stalled: no write progress", now);
        self.recount(id);
        self.fail_reading(id);
    }

    /// Fail a WebSocket: close frame out, nothing more read but the peer's close.
    pub fn fail_websocket(&mut self, id: ConnId, code: u16, reason: &str, now: Instant) {
        self.stats.protocol_errors += 1;
        self.close_websocket(id, code, reason, now);
        self.fail_reading(id);
    }

    /// Finish a connection: close once the queued output is written.
    pub fn finish(&mut self, id: ConnId) {
        self.finish_conn(id);
        // What was written through `out` last (a response, a close frame) is counted.
        self.recount(id);
        self.mark_dirty(id);
    }

    /// Drop a connection now, discarding its output.
    pub fn abort(&mut self, id: ConnId) {
        if let Some(c) = self.get_mut(id) {
            c.out.clear();
            c.out_head = 0;
            c.mid_frame = false;
        }
        self.finish_conn(id);
        self.recount(id);
        self.mark_dirty(id);
    }

    /// An outbound request the shell must open a socket for; its request is then flushed like
    /// any other output (the connection is marked dirty again).
    pub fn poll_connect(&mut self) -> Option<(ConnId, Target)> {
        while let Some((id, t)) = self.connects.pop_front() {
            if let Some(c) = self.get_mut(id) {
                c.awaiting_connect = false;
                self.mark_dirty(id);
                return Some((id, t));
            }
        }
        None
    }

    /// A finished outbound request, for the hub.
    pub fn poll_done(&mut self) -> Option<(ConnId, HttpOutcome)> {
        self.done.pop()
    }

    /// Whether the outbound request `id` wants its response body ([`Outbox::fetch`]).
    pub fn wants_body(&self, id: ConnId) -> bool {
        self.fetches.contains(&id)
    }

    /// Record the outcome of the client connection `id` and close it.
    pub fn complete_client(&mut self, id: ConnId, outcome: HttpOutcome) {
        let Some(c) = self.get_mut(id) else { return };
        if matches!(c.phase, Phase::Client) {
            self.fetches.retain(|&f| f != id);
            self.finish_conn(id);
            self.done.push((id, outcome));
            self.mark_dirty(id);
        }
    }

    pub fn set_deadline(&mut self, id: ConnId, at: Option<Instant>) {
        let Some(c) = self.get_mut(id) else { return };
        c.deadline = at;
        if let Some(at) = at {
            self.timers.push(at, (id, Timer::Main));
            if self.timers.len() > 3 * self.conns.len() + 64 {
                let conns = &self.conns;
                self.timers.rebuild(|at, key| is_current(conns, at, key));
            }
        }
    }

    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let conns = &self.conns;
        let next = self.timers.peek(|at, key| is_current(conns, at, key));
        match (next, self.pool.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When the pool next hands back buffers nobody took (one of the deadlines above).
    pub fn pool_deadline(&self) -> Option<Instant> {
        self.pool.deadline()
    }

    /// Free the pooled buffers nobody took for a while (at the pool's deadline).
    pub fn trim_pool(&mut self, now: Instant) {
        self.pool.trim(now);
    }

    /// The next connection whose deadline of kind `Timer` passed at `now` (that deadline is
    /// cleared).
    pub fn pop_expired(&mut self, now: Instant) -> Option<(ConnId, Timer)> {
        while let Some((at, key)) = self.timers.pop_due(now) {
            if !is_current(&self.conns, at, key) {
                continue;
            }
            let (id, kind) = key;
            if let Some(c) = self.get_mut(id) {
                match kind {
                    Timer::Main => c.deadline = None,
                    Timer::Stall => c.stall_at = None,
                }
                return Some(key);
            }
        }
        None
    }

    /// A pong arrived: the round trip of our last ping is known.
    pub fn record_pong(&mut self, id: ConnId, now: Instant) {
        if let Some(c) = self.get_mut(id) {
            if let Some(sent) = c.ping_sent.take() {
                let us = now.saturating_since(sent).as_micros().min(u32::MAX as u128) as u32;
                self.stats
                    .rtt
                    .observe(crate::histogram::RTT_US, u64::from(us));
            }
        }
    }
}

/// The deadlines a connection has: its phase's (handshake, heartbeat, close, response) and,
/// while backed up, the stall check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Timer {
    Main,
    Stall,
}

fn is_current(conns: &Slab<Conn>, at: Instant, (id, kind): (ConnId, Timer)) -> bool {
    conns.get(id.index as usize).is_some_and(|c| {
        c.gen == id.gen
            && match kind {
                Timer::Main => c.deadline == Some(at),
                Timer::Stall => c.stall_at == Some(at),
            }
    })
}

/// The address a per-address limit counts `peer` under: its IP (an IPv4-mapped IPv6 address
/// as the IPv4 address it is); none for Unix and in-process peers.
/// A peer on the box itself: a loopback address, the Unix socket or the in-process transport
/// (the operator's own health checks come from there).
pub fn is_local(peer: &Peer) -> bool {
    address_of(peer).is_none_or(|a| a.is_loopback())
}

fn address_of(peer: &Peer) -> Option<IpAddr> {
    match peer {
        Peer::Ip(a) => Some(match a.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        }),
        Peer::Unix | Peer::InProcess => None,
    }
}

/// Nothing more will be read (its unread input is dropped); close once the output is flushed.
fn finish(c: &mut Conn) {
    c.phase = Phase::Done;
    c.close_after_flush = true;
    c.deadline = None;
    c.flow |= flow::DONE;
    c.input = Vec::new();
}

/// The running total of output waiting in all connections, and its budget's state.
#[derive(Default)]
struct Budget {
    total: usize,
    /// Over `max_total_output`, until back under half of it.
    over: bool,
    /// It just went over: connections with output waiting are to be watched for stalls.
    entered: bool,
}

/// Bring `c`'s flow bits in line with its output level against `high` ([`flow::level`]); a
/// change is rare and noted out of line. Output that grew is levelled where it reaches the
/// mark (`enforce_cap`), output that shrank where a bit was set (`consume_output`), and any
/// other change of output in `recount`. Out of line: callers on the relay's path call it only
/// when a bit may change.
#[cold]
#[inline(never)]
fn relevel(c: &mut Conn, flow: &mut Flow, id: ConnId, high: usize) {
    let level = flow::level(c, c.pending(), high);
    if level != c.flow {
        let before = std::mem::replace(&mut c.flow, level);
        flow.note(id, c, before);
    }
}

/// Bring `budget` in line with `c`'s pending output (one add, one subtract) and update its
/// state: over past `limit`, back under at half of it.
#[inline]
fn account(budget: &mut Budget, stats: &mut Stats, limit: usize, c: &mut Conn) {
    let pending = c.pending().min(u32::MAX as usize);
    budget.total = budget.total - c.counted as usize + pending;
    c.counted = pending as u32;
    if budget.total > limit {
        if !budget.over {
            budget.over = true;
            budget.entered = true;
            stats.budget_exceeded += 1;
        }
    } else if budget.over && budget.total <= limit / 2 {
        budget.over = false;
    }
}

/// Whether `c` is backed up: past its own high water mark, or holding any output while the
/// total is over its budget.
fn congested(c: &Conn, high: usize, over: bool) -> bool {
    c.pending() > high || over && c.pending() > 0
}

impl Outbox for Net {
    fn send_frame(&mut self, id: ConnId, opcode: Opcode, parts: &[&[u8]]) -> bool {
        // The relay's per-delivery step: one look-up of the connection for everything.
        let Net {
            conns,
            pool,
            budget,
            dirty,
            stats,
            cfg,
            ..
        } = self;
        let Some(c) = conns
            .get_mut(id.index as usize)
            .filter(|c| c.gen == id.gen && c.is_websocket())
        else {
            return false;
        };
        if matches!(opcode, Opcode::Text | Opcode::Binary) {
            stats.messages_out[c.kind()] += 1;
        }
        if !c.dirty {
            c.dirty = true;
            dirty.push(id);
        }
        if c.out.capacity() == 0 {
            if let Some(b) = pool.take() {
                c.out = b;
            }
        }
        write_frame(&mut c.out, opcode, parts);
        account(budget, stats, cfg.max_total_output, c);
        // `enforce_cap` acts only at or past one of its two limits, or over the budget.
        if c.pending() >= cfg.max_output.min(cfg.read_pause) || budget.over {
            self.enforce_cap(id);
        }
        true
    }

    fn send_json<T: serde::Serialize + ?Sized>(&mut self, id: ConnId, msg: &T) -> bool {
        let Some(c) = self.get(id).filter(|c| c.is_websocket()) else {
            return false;
        };
        self.stats.messages_out[c.kind()] += 1;
        let written = self.out(id).is_some_and(|out| write_json_frame(out, msg));
        self.check_cap(id);
        written
    }

    fn close_websocket(&mut self, id: ConnId, code: u16, reason: &str, now: Instant) {
        if !self.get(id).is_some_and(Conn::is_websocket) {
            return;
        }
        if let Some(out) = self.out(id) {
            write_close(out, code, reason);
        }
        if let Some(c) = self.get_mut(id) {
            c.phase = Phase::Closing { failed: false };
        }
        self.recount(id);
        let at = now + self.cfg.close_timeout;
        self.set_deadline(id, Some(at));
    }

    fn respond_json<T: serde::Serialize + ?Sized>(
        &mut self,
        id: ConnId,
        status: u16,
        body: &T,
        extra: &[&str],
    ) {
        let body = serde_json::to_vec(body).unwrap_or_default();
        if let Some(out) = self.out(id) {
            crate::http::write_response(out, status, "application/json", extra, &body);
        }
        self.finish(id);
    }

    fn respond_error(
        &mut self,
        id: ConnId,
        status: u16,
        code: &str,
        message: &str,
        extra: &[&str],
    ) {
        if let Some(out) = self.out(id) {
            write_json_error(out, status, code, message, extra);
        }
        self.finish(id);
    }

    fn open_client(&mut self, target: Target, request: &[u8], deadline: Instant) -> Option<ConnId> {
        if self.outbound >= self.cfg.max_outbound {
            self.stats.outbound_refused += 1;
            return None;
        }
        let id = self.insert(Peer::InProcess, Phase::Client)?;
        if let Some(c) = self.get_mut(id) {
            c.awaiting_connect = true;
        }
        if let Some(out) = self.out(id) {
            out.extend_from_slice(request);
        }
        self.recount(id);
        self.set_deadline(id, Some(deadline));
        self.connects.push_back((id, target));
        Some(id)
    }

    fn fetch(&mut self, target: Target, request: &[u8], deadline: Instant) -> Option<ConnId> {
        let id = self.open_client(target, request, deadline)?;
        self.fetches.push(id);
        Some(id)
    }

    fn peer(&self, id: ConnId) -> Option<&Peer> {
        self.get(id).map(|c| &c.peer)
    }

    fn backed_up(&self, id: ConnId) -> bool {
        self.get(id)
            .is_some_and(|c| congested(c, self.cfg.read_pause, self.budget.over))
    }
}

/// Append one unmasked text frame holding `msg` as JSON, serialised in place: the payload is
/// written after a 4-byte header slot, then the header is fitted to the length (the payload
/// moves by at most a few bytes, once). False, with nothing appended, if `msg` cannot be
/// serialised.
pub fn write_json_frame<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, msg: &T) -> bool {
    let start = out.len();
    out.extend_from_slice(&[0x81, 126, 0, 0]);
    if serde_json::to_writer(&mut *out, msg).is_err() {
        out.truncate(start);
        return false;
    }
    let len = out.len() - start - 4;
    if len < 126 {
        out[start + 1] = len as u8;
        out.copy_within(start + 4.., start + 2);
        out.truncate(out.len() - 2);
    } else if let Ok(short) = u16::try_from(len) {
        out[start + 2..start + 4].copy_from_slice(&short.to_be_bytes());
    } else {
        out[start + 1] = 127;
        let mut header = [0u8; 8];
        header.copy_from_slice(&(len as u64).to_be_bytes());
        out.splice(start + 2..start + 4, header);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::parse_header;
    use crate::ws::Role;

    #[test]
    fn partial_writes_keep_the_rest_in_order_and_compact_lazily() {
        let mut net = Net::new(ServerConfig::default());
        let id = net.insert(Peer::InProcess, Phase::Http).unwrap();
        net.out(id).unwrap().extend_from_slice(b"0123456789");
        net.consume_output(id, 3);
        assert_eq!(net.output(id), b"3456789");
        // Less than half written: nothing moved yet.
        assert_eq!(net.get(id).unwrap().out_head, 3);
        net.out(id).unwrap().extend_from_slice(b"ab");
        net.consume_output(id, 4);
        // Seven of twelve written: the front is dropped.
        assert_eq!(net.get(id).unwrap().out_head, 0);
        assert_eq!(net.output(id), b"789ab");
        net.consume_output(id, 99);
        assert!(net.output(id).is_empty());
        assert_eq!(net.get(id).unwrap().out.capacity(), 0);
        assert_eq!(net.stats.bytes_out.iter().sum::<u64>(), 12);
    }

    #[test]
    fn a_stalled_connection_is_never_cut_inside_a_frame() {
        let mut net = Net::new(ServerConfig {
            read_pause: 4096,
            ..ServerConfig::default()
        });
        let id = net
            .insert(Peer::InProcess, Phase::Ws(crate::net::Endpoint::App))
            .unwrap();
        let big = vec![b'x'; 10_000];
        assert!(net.send_frame(id, Opcode::Text, &[&big]));
        // Three bytes of the frame are written, then nothing more.
        net.consume_output(id, 3);
        let at = net.get(id).unwrap().stall_at.unwrap();
        net.check_stall(id, at);
        // That was progress: watched again; this time nothing was written.
        let at = net.get(id).unwrap().stall_at.unwrap();
        net.check_stall(id, at);
        // No close frame after a cut frame: the connection is dropped as it stands.
        let c = net.get(id).unwrap();
        assert!(c.out.is_empty() && c.close_after_flush);
        assert_eq!(net.stats.stall_closes, 1);
    }

    #[test]
    fn json_frames_of_every_length_class_parse_back() {
        for len in [
            0usize, 1, 119, 120, 121, 200, 65_000, 65_535, 65_536, 70_000,
        ] {
            let text = "x".repeat(len);
            let mut out = b"prefix".to_vec();
            assert!(write_json_frame(&mut out, &text));
            let frame = &out[6..];
            let h = parse_header(frame, Role::Client, 1 << 20).unwrap().unwrap();
            assert_eq!(h.opcode, Opcode::Text);
            assert_eq!(h.frame_len(), frame.len(), "length {len}");
            let payload = &frame[frame.len() - (len + 2)..];
            assert_eq!(payload, serde_json::to_vec(&text).unwrap().as_slice());
        }
    }
}
