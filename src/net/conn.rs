//! Core layer (bottom): one connection's identity and output side, as the connection table
//! holds it.
//!
//! Owns the connection's id, peer, write-side phase, pending output and heartbeat bookkeeping,
//! and its read side as state ([`Read`]: the HTTP head search, the WebSocket receiver, the
//! response parser of an outbound request; `input`: unread partial input), so one look-up and
//! one generation check find everything a connection is. The server runs the read side; while
//! the hub handles a message borrowed from a receiver, the server holds that receiver out of
//! the slot, so the hub can write to any connection meanwhile. Invariants: `out` is bounded by
//! the output cap, `input` by one frame or request plus one read, and neither has capacity
//! while the connection is idle, so an idle connection costs only this struct.

use crate::http::ResponseParser;
use crate::time::Instant;
use crate::ws::Receiver;
use std::net::SocketAddr;

/// A connection's identity: its slab index and a generation, so a reused slot is never
/// mistaken for its previous occupant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId {
    pub index: u32,
    pub gen: u32,
}

/// Bits of a token that carry the slab index; the rest carry the generation.
const INDEX_BITS: u32 = 20;
/// The most connections one core can hold (the token encoding's limit).
pub const MAX_INDEX: usize = (1 << INDEX_BITS) - 1;

/// `index.generation`, as log lines name a connection.
impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.index, self.gen)
    }
}

impl ConnId {
    /// Encode as a `usize` token for the poller: index in the low bits, generation above.
    pub fn to_token(self) -> usize {
        let gen_bits = usize::BITS - INDEX_BITS;
        let gen = (self.gen as usize) & ((1usize << gen_bits) - 1);
        (gen << INDEX_BITS) | self.index as usize
    }

    /// The slab index of a token.
    pub fn token_index(token: usize) -> usize {
        token & MAX_INDEX
    }
}

/// Connection kinds for `/metrics`: glasses and app WebSockets, HTTP exchanges (REST, health,
/// metrics, and upgrades not done yet), the echo route, our own outbound webhook requests.
pub const KINDS: [&str; 5] = ["glasses", "app", "http", "echo", "webhook"];
/// Transports for `/metrics` (`tcp` includes TLS over TCP).
pub const TRANSPORTS: [&str; 3] = ["tcp", "unix", "in_process"];

/// Where a connection arrived from. A core type: the shell maps each transport's notion of an
/// address onto it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    Ip(SocketAddr),
    Unix,
    InProcess,
}

/// The WebSocket routes the core serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Echo, for protocol conformance tests (off unless configured).
    Echo,
    /// Smart glasses (or the phone relaying for them): `/glasses-ws`.
    Glasses,
    /// A third-party app: `/app-ws` or `/tpa-ws`.
    App,
}

/// Where a connection is in its life, as far as writing to it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for a complete HTTP request.
    Http,
    /// An open WebSocket.
    Ws(Endpoint),
    /// We sent a close frame and wait for the peer's close frame, its EOF or the deadline.
    /// After a clean close, input is skimmed for the peer's close frame; after a protocol
    /// failure (`failed`), input is discarded unread (RFC 6455 §7.1.7).
    Closing { failed: bool },
    /// Nothing more to read or write but what is in `out`; close once flushed.
    Done,
    /// An outbound HTTP request of ours: `out` holds the request, input is the response.
    Client,
}

/// What the bytes of a connection are parsed as.
pub enum Read {
    /// An inbound HTTP request; `scanned` is how far the head search got.
    Http { scanned: usize },
    /// An upgraded WebSocket.
    Ws(Receiver),
    /// The response to an outbound request of ours (boxed: few connections are outbound).
    Client(Box<ResponseParser>),
}

impl Default for Read {
    fn default() -> Self {
        Read::Http { scanned: 0 }
    }
}

pub struct Conn {
    pub gen: u32,
    pub peer: Peer,
    pub phase: Phase,
    /// The read side's parser state.
    pub read: Read,
    /// Bytes that do not yet make a complete frame, request or response.
    pub input: Vec<u8>,
    /// Output: `out[out_head..]` is still to be written (the written front is dropped lazily,
    /// once it is at least half the buffer, so a partial write costs no copy of the rest).
    pub out: Vec<u8>,
    pub out_head: usize,
    /// `pending()` as last added to the table's running total of output (see
    /// [`super::Net::total_output`]); brought in line wherever output is queued or written.
    pub counted: u32,
    /// The unwritten output may begin inside a frame (part of a frame was written and the
    /// buffer has not run dry since): it can then only be written on, never cut.
    pub mid_frame: bool,
    pub deadline: Option<Instant>,
    /// Already on the core's list of connections with new output or a new state.
    pub dirty: bool,
    /// The transport must close this connection as soon as `out` is flushed.
    pub close_after_flush: bool,
    /// When bytes last arrived.
    pub last_rx: Instant,
    /// When our last unanswered ping left (its round trip goes to the RTT histogram).
    pub ping_sent: Option<Instant>,
    /// An outbound request of ours (counted apart from client connections).
    pub outbound: bool,
    /// An outbound request whose socket the shell has not been asked to open yet.
    pub awaiting_connect: bool,
    /// Bytes of output the shell has written so far (wrapping; only compared for progress).
    pub consumed: u32,
    /// Backed up: when to check for write progress, and `consumed` when the check was armed.
    pub stall_at: Option<Instant>,
    pub stall_mark: u32,
    /// The WebSocket route it was upgraded to (kept through its close, for `/metrics`).
    pub endpoint: Option<Endpoint>,
    /// When it may be read: the reasons it is held and its place on the lists of
    /// [`super::flow`] (bits defined there).
    pub flow: u8,
    /// Accepted past a client cap, into the small reserve that reads one request only to
    /// answer `/health` or `/metrics` (anything else is refused with the cap's code).
    pub over_cap: Option<OverCap>,
}

/// Which client cap a connection arrived past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverCap {
    /// `max_connections` client connections were held.
    Total,
    /// `max_per_address` connections were held from its IP address.
    Address,
}

impl OverCap {
    pub fn code(self) -> &'static str {
        match self {
            OverCap::Total => "AT_CAPACITY",
            OverCap::Address => "TOO_MANY_FROM_ADDRESS",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            OverCap::Total => "server at connection capacity",
            OverCap::Address => "too many connections from this address",
        }
    }
}

impl Conn {
    pub fn new(gen: u32, peer: Peer, phase: Phase) -> Conn {
        Conn {
            gen,
            peer,
            phase,
            read: Read::default(),
            input: Vec::new(),
            out: Vec::new(),
            out_head: 0,
            counted: 0,
            mid_frame: false,
            deadline: None,
            dirty: false,
            close_after_flush: false,
            last_rx: Instant::ZERO,
            ping_sent: None,
            outbound: matches!(phase, Phase::Client),
            awaiting_connect: false,
            consumed: 0,
            stall_at: None,
            stall_mark: 0,
            endpoint: None,
            flow: 0,
            over_cap: None,
        }
    }

    /// Bytes of output still to be written.
    pub fn pending(&self) -> usize {
        self.out.len() - self.out_head
    }

    pub fn is_websocket(&self) -> bool {
        matches!(self.phase, Phase::Ws(_))
    }

    /// What kind of connection this is, as an index into [`KINDS`].
    pub fn kind(&self) -> usize {
        match (self.outbound, self.endpoint) {
            (true, _) => 4,
            (false, Some(Endpoint::Glasses)) => 0,
            (false, Some(Endpoint::App)) => 1,
            (false, None) => 2,
            (false, Some(Endpoint::Echo)) => 3,
        }
    }

    /// The transport it came over, as an index into [`TRANSPORTS`].
    pub fn transport(&self) -> usize {
        match self.peer {
            Peer::Ip(_) => 0,
            Peer::Unix => 1,
            Peer::InProcess => 2,
        }
    }
}
