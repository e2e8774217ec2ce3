//! Test layer: a deterministic world for the sans-IO core.
//!
//! Owns one [`Server`], any number of in-memory clients and two virtual clocks (monotonic and
//! wall). Nothing here touches a socket or the OS clock: [`World::step`] moves every pending
//! output to its client, and [`World::advance`] / [`World::jump_to_next_deadline`] move time,
//! so a 10-second handshake deadline is tested in microseconds, the same way every run.
//!
//! Invariants: the world behaves like the reactor: output is handed over once per step, a client
//! that closes is reported to the core with `handle_eof`, a connection the core wants closed is
//! closed (the client sees `closed == true`), and time moves the way the reactor wakes — from
//! one deadline to the next, each fired at its own instant, never many at once at a later one.
//! Clients keep every frame they receive, so a test that expects nothing can see anything.
//!
//! With [`World::faults`] set (seeded, see [`faults`]), the transport misbehaves the way real
//! ones do: reads and writes move any number of bytes down to one, a client may hold what it
//! sends (delayed delivery) or stop reading (a stall), and a connection may be reset or
//! half-closed; [`scenario`] drives random sessions through such a world and checks the
//! product's invariants after every step.

pub mod display_model;
pub mod faults;
pub mod scenario;

use crate::hub::HubConfig;
use crate::net::{ConnId, Peer, Target};
use crate::server::{Server, ServerConfig};
use crate::time::{Instant, Now, Wall};
use crate::ws::frame::{write_masked_frame, Opcode, Role};
use crate::ws::{Limits, Message, Receiver};
use std::time::Duration;

/// What a simulated client has received, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

pub struct SimClient {
    pub id: ConnId,
    /// Raw bytes from the server not yet decoded (the HTTP response, then frames).
    pub inbox: Vec<u8>,
    /// The server closed the connection.
    pub closed: bool,
    /// The client reads what the server sends; a stalled client does not, and its output waits
    /// in the server (see [`World::set_reading`]).
    pub reading: bool,
    /// Bytes the client sent that the server has not read yet: the server reads a connection
    /// only while `wants_read` says so, as the reactor does (TCP holds the rest).
    pub unsent: Vec<u8>,
    /// What the client sends is held back (delayed delivery) until released with
    /// [`World::hold`].
    pub held: bool,
    rx: Option<Receiver>,
    mask_seed: u32,
}

impl SimClient {
    /// Decode the HTTP response head in the inbox; returns the status and switches to frames on
    /// a 101.
    pub fn take_http_response(&mut self) -> Option<(u16, String)> {
        let end = self.inbox.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&self.inbox[..end]).to_string();
        let status: u16 = head.get(9..12)?.parse().ok()?;
        let len = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
            })
            .unwrap_or(0);
        if status == 101 {
            self.inbox.drain(..end);
            self.rx = Some(Receiver::new(
                Role::Client,
                Limits {
                    max_frame: 1 << 24,
                    max_message: 1 << 24,
                },
            ));
            return Some((status, String::new()));
        }
        if self.inbox.len() < end + len {
            return None;
        }
        let body = String::from_utf8_lossy(&self.inbox[end..end + len]).to_string();
        self.inbox.drain(..end + len);
        Some((status, body))
    }

    /// Decode every complete frame in the inbox.
    pub fn messages(&mut self) -> Vec<Received> {
        let mut out = Vec::new();
        let Some(rx) = self.rx.as_mut() else {
            return out;
        };
        let mut at = 0;
        while let Ok(step) = rx.next(&mut self.inbox[at..]) {
            if step.consumed == 0 {
                break;
            }
            at += step.consumed;
            if let Some(m) = step.message {
                out.push(match m {
                    Message::Text(t) => Received::Text(t.to_string()),
                    Message::Binary(b) => Received::Binary(b.to_vec()),
                    Message::Ping(p) => Received::Ping(p.to_vec()),
                    Message::Pong(p) => Received::Pong(p.to_vec()),
                    Message::Close(c) => Received::Close(c.map(|(c, r)| (c, r.to_string()))),
                });
            }
        }
        self.inbox.drain(..at);
        out
    }

    fn next_mask(&mut self) -> [u8; 4] {
        // xorshift: deterministic, varied masks.
        self.mask_seed ^= self.mask_seed << 13;
        self.mask_seed ^= self.mask_seed >> 17;
        self.mask_seed ^= self.mask_seed << 5;
        self.mask_seed.to_le_bytes()
    }
}

/// An outbound HTTP request the core made (a webhook), as the app server would see it.
pub struct Outbound {
    pub id: ConnId,
    pub target: Target,
    /// The raw request bytes written so far.
    pub request: Vec<u8>,
    /// The core closed or finished this request.
    pub closed: bool,
}

impl Outbound {
    /// The JSON body of the request, once complete.
    pub fn json(&self) -> Option<serde_json::Value> {
        let at = self.request.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        serde_json::from_slice(&self.request[at..]).ok()
    }

    /// The request line, e.g. `POST /webhook HTTP/1.1`.
    pub fn request_line(&self) -> String {
        let end = self.request.iter().position(|&b| b == b'\r').unwrap_or(0);
        String::from_utf8_lossy(&self.request[..end]).to_string()
    }
}

pub struct World {
    pub server: Server,
    /// The monotonic clock.
    pub now: Instant,
    /// The wall clock reads `wall_at_zero + now` (a test may set it anywhere, as NTP would).
    wall_at_zero: i128,
    pub clients: Vec<SimClient>,
    pub outbound: Vec<Outbound>,
    /// Every durable change the core made, in order (what a writer would have been handed).
    pub persisted: Vec<crate::state::Persist>,
    /// Short reads and writes, when set.
    pub faults: Option<faults::Faults>,
}

/// 2025-01-01T00:00:00Z: the virtual wall clock starts at a plausible time.
pub const SIM_EPOCH: Wall = Wall::from_micros(1_735_689_600_000_000);

/// Deadlines one `advance` may fire before the world calls it a livelock.
const MAX_WAKEUPS: usize = 1_000_000;

impl World {
    pub fn new(cfg: ServerConfig) -> World {
        World::with_hub(cfg, HubConfig::default())
    }

    pub fn with_hub(cfg: ServerConfig, hub: HubConfig) -> World {
        World::with_state(cfg, hub, crate::state::Snapshot::default())
    }

    /// A world whose core starts from durable state (as after a restart).
    pub fn with_state(cfg: ServerConfig, hub: HubConfig, state: crate::state::Snapshot) -> World {
        let now = Now::new(Instant::ZERO, SIM_EPOCH);
        let store = crate::state::StoreStatus::memory();
        World {
            server: Server::with_state(cfg, hub, state, store, now),
            now: Instant::ZERO,
            wall_at_zero: i128::from(SIM_EPOCH.as_micros()),
            clients: Vec::new(),
            outbound: Vec::new(),
            persisted: Vec::new(),
            faults: None,
        }
    }

    /// Both clocks as the core is handed them this turn.
    pub fn clock(&self) -> Now {
        let wall = (self.wall_at_zero + i128::from(self.now.as_micros())).clamp(0, u64::MAX.into());
        Now::new(self.now, Wall::from_micros(wall as u64))
    }

    /// Set the wall clock (a real-time clock corrected by NTP); the monotonic clock is untouched.
    pub fn set_wall(&mut self, wall: Wall) {
        self.wall_at_zero = i128::from(wall.as_micros()) - i128::from(self.now.as_micros());
    }

    /// Connect a new client from `peer`; returns its index in `clients`.
    pub fn connect_from(&mut self, peer: Peer) -> usize {
        let id = self
            .server
            .handle_accept(peer, self.clock())
            .expect("slot available");
        self.clients.push(SimClient {
            id,
            inbox: Vec::new(),
            closed: false,
            reading: true,
            unsent: Vec::new(),
            held: false,
            rx: None,
            mask_seed: 0x9E37_79B9 ^ id.index,
        });
        self.step();
        self.clients.len() - 1
    }

    /// Answer outbound request `i` with an HTTP status (the app server's reply).
    pub fn respond_http(&mut self, i: usize, status: u16) {
        let id = self.outbound[i].id;
        let body = "{\"status\":\"success\"}";
        let mut resp = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();
        self.server.handle_input(id, &mut resp, self.clock());
        self.step();
    }

    /// Answer outbound request `i` with these bytes (a whole response, or a part of one).
    pub fn respond_http_bytes(&mut self, i: usize, bytes: &[u8]) {
        let id = self.outbound[i].id;
        let mut resp = bytes.to_vec();
        self.server.handle_input(id, &mut resp, self.clock());
        self.step();
    }

    /// Outbound request `i` fails at the transport (refused or reset).
    pub fn fail_http(&mut self, i: usize) {
        let id = self.outbound[i].id;
        self.outbound[i].closed = true;
        self.server.handle_closed(id, self.clock());
        self.step();
    }

    /// Indices of outbound requests not yet answered or closed.
    pub fn open_outbound(&self) -> Vec<usize> {
        (0..self.outbound.len())
            .filter(|&i| !self.outbound[i].closed)
            .collect()
    }

    /// Connect a new client; returns its index in `clients`.
    pub fn connect(&mut self) -> usize {
        self.connect_from(Peer::InProcess)
    }

    /// Send raw bytes from client `c`.
    pub fn send_raw(&mut self, c: usize, bytes: &[u8]) {
        if self.clients[c].closed {
            return;
        }
        self.clients[c].unsent.extend_from_slice(bytes);
        self.pump(c);
        self.step();
    }

    /// Hand client `c`'s unsent bytes to the server while it wants to read them, one read's
    /// worth at a time (the reactor's 64 KiB read buffer), as the reactor would.
    fn pump(&mut self, c: usize) {
        const READ: usize = 64 * 1024;
        while !self.clients[c].unsent.is_empty() && !self.clients[c].closed {
            let id = self.clients[c].id;
            if self.clients[c].held || !self.server.wants_read(id) {
                return;
            }
            let mut n = self.clients[c].unsent.len().min(READ);
            if let Some(f) = self.faults.as_mut() {
                n = f.cut(n);
            }
            let mut buf: Vec<u8> = self.clients[c].unsent.drain(..n).collect();
            let now = self.clock();
            self.server.handle_input(id, &mut buf, now);
        }
    }

    /// Client `c` holds back what it sends (`true`), or releases it all (`false`).
    pub fn hold(&mut self, c: usize, held: bool) {
        self.clients[c].held = held;
        if !held {
            self.pump(c);
            self.step();
        }
    }

    /// Client `c`'s transport is reset: the server sees the connection gone at once.
    pub fn reset(&mut self, c: usize) {
        if self.clients[c].closed {
            return;
        }
        self.clients[c].closed = true;
        self.clients[c].unsent.clear();
        let now = self.clock();
        self.server.handle_closed(self.clients[c].id, now);
        self.step();
    }

    /// Client `c` stops (`false`) or resumes (`true`) reading what the server sends; resuming
    /// takes everything waiting at once.
    pub fn set_reading(&mut self, c: usize, reading: bool) {
        self.clients[c].reading = reading;
        if reading {
            let id = self.clients[c].id;
            let out = self.server.output(id).to_vec();
            self.server.consume_output(id, out.len());
            self.clients[c].inbox.extend_from_slice(&out);
            self.step();
        }
    }

    /// Send a masked frame from client `c`.
    pub fn send_frame(&mut self, c: usize, fin: bool, opcode: Opcode, payload: &[u8]) {
        let mask = self.clients[c].next_mask();
        let mut out = Vec::new();
        write_masked_frame(&mut out, fin, opcode, payload, mask);
        self.send_raw(c, &out);
    }

    /// A full upgrade request for `path`; returns the HTTP status the server answered.
    pub fn upgrade(&mut self, c: usize, path: &str) -> u16 {
        self.upgrade_with(c, path, &[]).0
    }

    /// An upgrade request with extra header lines (`"Name: value"`); returns the status and,
    /// for a refusal, the response body.
    pub fn upgrade_with(&mut self, c: usize, path: &str, headers: &[&str]) -> (u16, String) {
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: sim\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        );
        for h in headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        self.send_raw(c, req.as_bytes());
        self.clients[c]
            .take_http_response()
            .unwrap_or((0, String::new()))
    }

    /// Send a text message from client `c`.
    pub fn send_text(&mut self, c: usize, text: &str) {
        self.send_frame(c, true, Opcode::Text, text.as_bytes());
    }

    /// Every frame client `c` received, as JSON: a text message is its parsed value; anything
    /// else is kept too, as `{"unparsed": text}` (text that is not JSON), `{"binary": len}`,
    /// `{"ping": payload}`, `{"pong": payload}`, or `{"close": code, "reason": …}`; bytes that
    /// do not decode as frames at all become `{"garbage": len}`. Nothing is dropped, so a test
    /// that expects nothing sees whatever came.
    pub fn json_messages(&mut self, c: usize) -> Vec<serde_json::Value> {
        use serde_json::json;
        let client = &mut self.clients[c];
        let mut out: Vec<serde_json::Value> = client
            .messages()
            .into_iter()
            .map(|m| match m {
                Received::Text(t) => {
                    serde_json::from_str(&t).unwrap_or_else(|_| json!({ "unparsed": t }))
                }
                Received::Binary(b) => json!({ "binary": b.len() }),
                Received::Ping(p) => json!({ "ping": String::from_utf8_lossy(&p) }),
                Received::Pong(p) => json!({ "pong": String::from_utf8_lossy(&p) }),
                Received::Close(Some((code, reason))) => json!({"close": code, "reason": reason}),
                Received::Close(None) => json!({ "close": null }),
            })
            .collect();
        if client.rx.is_some() && client.closed && !client.inbox.is_empty() {
            out.push(json!({ "garbage": client.inbox.len() }));
            client.inbox.clear();
        }
        out
    }

    /// Client `c` closes its side.
    pub fn client_eof(&mut self, c: usize) {
        let now = self.clock();
        self.server.handle_eof(self.clients[c].id, now);
        self.step();
    }

    /// Hand every pending output to its client and close what the core wants closed.
    pub fn step(&mut self) {
        loop {
            let now = self.clock();
            self.server.handle_timeout(now);
            while let Some((id, target)) = self.server.poll_connect() {
                self.outbound.push(Outbound {
                    id,
                    target,
                    request: Vec::new(),
                    closed: false,
                });
            }
            let mut any = false;
            let mut short = Vec::new();
            while let Some(id) = self.server.poll_dirty().or_else(|| short.pop()) {
                any = true;
                let client = self.clients.iter().find(|c| c.id == id);
                if client.is_some_and(|c| c.closed) {
                    continue;
                }
                let reads = client.is_none_or(|c| c.reading);
                let mut out = if reads {
                    self.server.output(id).to_vec()
                } else {
                    Vec::new()
                };
                if let Some(f) = self.faults.as_mut() {
                    let n = f.cut(out.len());
                    if n < out.len() {
                        out.truncate(n);
                        short.push(id);
                    }
                }
                self.server.consume_output(id, out.len());
                let close = self.server.wants_close(id);
                if let Some(client) = self.clients.iter_mut().find(|c| c.id == id) {
                    client.inbox.extend_from_slice(&out);
                    client.closed |= close;
                } else if let Some(o) = self.outbound.iter_mut().find(|o| o.id == id && !o.closed) {
                    o.request.extend_from_slice(&out);
                    o.closed |= close;
                }
                if close {
                    self.server.handle_closed(id, now);
                }
            }
            self.persisted.extend(self.server.take_persist());
            // No shared store here: lease claims have no one to answer them.
            drop(self.server.take_leases());
            while let Some((id, may_read)) = self.server.poll_reading() {
                if let Some(c) = self.clients.iter().position(|c| c.id == id && may_read) {
                    any = true;
                    self.pump(c);
                }
            }
            if !any {
                return;
            }
        }
    }

    /// Let `d` pass as the reactor would live it: wake at each deadline on the way, in order,
    /// at that deadline's own instant, then at the end.
    pub fn advance(&mut self, d: Duration) {
        let until = self.now + d;
        for _ in 0..MAX_WAKEUPS {
            match self.server.poll_timeout() {
                Some(at) if at <= until => {
                    self.now = self.now.max(at);
                    self.step();
                }
                _ => {
                    self.now = until;
                    self.step();
                    return;
                }
            }
        }
        panic!("livelock: {MAX_WAKEUPS} wake-ups without reaching {until:?}");
    }

    /// Jump the clock to the core's next deadline and fire it; false if there is none.
    pub fn jump_to_next_deadline(&mut self) -> bool {
        match self.server.poll_timeout() {
            Some(at) => {
                self.now = self.now.max(at);
                self.step();
                true
            }
            None => false,
        }
    }
}
