//! Core layer (sans-IO, bottom): the connection table and the narrow interface the layers above
//! act through.
//!
//! Owns every connection's identity, output buffer, write-side phase, deadline and read-side
//! state ([`table::Net`], one slot per connection), the pool of emptied output buffers ([`pool`]), the connection layer's
//! deadlines (kept in a [`crate::time::TimerHeap`]), and the [`Outbox`] trait: what the
//! application core may do to connections (send a frame, send a JSON message, close, answer
//! HTTP, open an outbound request, ask a connection's peer). The table implements it; the hub
//! is generic over it and never sees the table.
//!
//! Invariants: nothing here knows sessions or apps, reads a clock, or names the shell; client
//! connections and outbound requests are counted apart, so outbound requests never count
//! against (or crowd out) client connections; connections held past a client cap (to answer
//! `/health` or `/metrics` only) are counted apart too, against neither cap.

pub mod cidr;
pub mod conn;
pub mod flow;
pub mod pool;
pub mod table;

pub use cidr::Cidr;
pub use conn::{Conn, ConnId, Endpoint, OverCap, Peer, Phase, Read, KINDS, MAX_INDEX, TRANSPORTS};
pub use table::{is_local, HttpOutcome, Net, Target, Timer, Tls};

use crate::http::RequestLimits;
use crate::time::Instant;
use crate::ws::{Limits, Opcode};
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
    /// Output past this many bytes stops reading from the connection until it drains (its high
    /// water mark); a connection this far behind is "backed up": lossy streams to it are dropped
    /// and the connections feeding it are paused until it is back under half of it.
    pub read_pause: usize,
    /// Output waiting in all connections together past which every connection with output
    /// waiting counts as backed up: feeders are paused until the total is back under half of
    /// it, lossy streams to connections with output waiting are dropped, and those that write
    /// nothing for `stall_timeout` are closed. Bounds memory in total, as `read_pause` and
    /// `max_output` bound it per connection.
    pub max_total_output: usize,
    /// A backed-up WebSocket that writes nothing for this long is closed (1008) as stalled.
    pub stall_timeout: Duration,
    /// Client connections (glasses, apps, REST callers) held at once.
    pub max_connections: usize,
    /// Client connections held at once from one IP address (Unix-socket and in-process
    /// connections are exempt).
    pub max_per_address: usize,
    /// Addresses and networks not held to `max_per_address`: a venue's NAT gateway, from whose
    /// one address every guest arrives. They still count towards `max_connections`.
    pub per_address_exempt: Vec<Cidr>,
    /// Outbound requests (webhooks) in flight at once, counted apart from client connections.
    pub max_outbound: usize,
    /// Ping open WebSockets this often (none: never).
    pub ping_interval: Option<Duration>,
    /// A WebSocket silent this long (no byte, not even a pong) is closed with 4000.
    pub idle_timeout: Duration,
    /// Serve the `/ui/` pages, their API protected by this operator token (`None`: not served).
    pub operator_token: Option<String>,
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
            max_total_output: 16 * 1024 * 1024,
            stall_timeout: Duration::from_secs(2),
            max_connections: 20_000,
            max_per_address: 1_024,
            per_address_exempt: Vec::new(),
            max_outbound: 256,
            ping_interval: Some(Duration::from_secs(15)),
            idle_timeout: Duration::from_secs(45),
            operator_token: None,
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
    /// Connections refused because their address held `max_per_address` already.
    pub refused_per_address: u64,
    pub idle_closes: u64,
    /// Outbound requests not opened because too many were in flight.
    pub outbound_refused: u64,
    /// Backed-up WebSockets closed for making no write progress.
    pub stall_closes: u64,
    /// Times the output of all connections together passed `max_total_output`.
    pub budget_exceeded: u64,
    /// Feeders not read because the total output was over `max_total_output`.
    pub budget_pauses: u64,
    /// WebSocket messages (data frames queued or complete messages read) and bytes (read, or
    /// written by the shell) per connection kind ([`KINDS`]).
    pub messages_in: [u64; 5],
    pub messages_out: [u64; 5],
    pub bytes_in: [u64; 5],
    pub bytes_out: [u64; 5],
    /// Heartbeat round trips ([`crate::histogram::RTT_US`]).
    pub rtt: crate::histogram::Histogram,
}

/// What the application core may do to connections. Every method is a no-op (or returns
/// `false`/`None`) for a connection that is gone or in the wrong phase, so a handler never has
/// to check first.
pub trait Outbox {
    /// Queue a server frame whose payload is assembled from `parts`; false when `id` is not an
    /// open WebSocket.
    fn send_frame(&mut self, id: ConnId, opcode: Opcode, parts: &[&[u8]]) -> bool;

    /// Queue a text frame holding `msg` serialised as JSON, written straight into the output
    /// buffer.
    fn send_json<T: serde::Serialize + ?Sized>(&mut self, id: ConnId, msg: &T) -> bool;

    fn send_text(&mut self, id: ConnId, text: &str) -> bool {
        self.send_frame(id, Opcode::Text, &[text.as_bytes()])
    }

    /// Start a clean close: our close frame out, then wait for the peer's (or the deadline).
    fn close_websocket(&mut self, id: ConnId, code: u16, reason: &str, now: Instant);

    /// Answer an HTTP request with a JSON body and close after it is written.
    fn respond_json<T: serde::Serialize + ?Sized>(
        &mut self,
        id: ConnId,
        status: u16,
        body: &T,
        extra: &[&str],
    );

    /// Answer with the standard JSON error body (`{"success":false,"code","message"}`), close.
    fn respond_error(&mut self, id: ConnId, status: u16, code: &str, message: &str, extra: &[&str]);

    /// Open an outbound HTTP/1.1 request; `None` when too many are in flight.
    fn open_client(&mut self, target: Target, request: &[u8], deadline: Instant) -> Option<ConnId>;

    /// Open an outbound request whose response body is wanted: its outcome is
    /// [`HttpOutcome::Body`] (a body past the response parser's limit is `Failed`).
    fn fetch(&mut self, target: Target, request: &[u8], deadline: Instant) -> Option<ConnId>;

    fn peer(&self, id: ConnId) -> Option<&Peer>;

    /// Whether `id` is backed up: more output waiting than its high water mark, or any output
    /// waiting while the total is over its budget.
    fn backed_up(&self, id: ConnId) -> bool;
}
