//! Fuzzes the sans-IO server core, `augmentos_edge::server::Server` (the connection table and
//! the hub behind it), with sequences of operations a shell and its peers could produce:
//! accept, bytes in (canned HTTP requests and upgrades to `/echo`, `/glasses-ws`, `/app-ws`,
//! canned hub messages, masked frames wrapping fuzz bytes, bursts of frames, raw bytes), canned
//! webhook responses on outbound connections, EOF, transport failure, virtual time passing with
//! or without `handle_timeout`, output drained through `poll_dirty` or flushed per connection
//! in partial writes, and calls on stale ids. Outbound connections (`poll_connect`) are opened
//! by the modelled shell and then take part like any other connection.
//!
//! Two modes, by bit 7 of byte 0.
//!
//! Scenario mode (bit 7 set): the rest of the input is the choices of one
//! `augmentos_edge::sim::scenario::Scenario` — every product operation (glasses connect, drop,
//! half-close and re-init; app start and stop; webhooks answered, late, refused or failed; app
//! init with the right or a wrong key; crashes and reconnects; subscriptions; transcripts from
//! a publishing system app; display requests; device requests and replies; settings and
//! storage writes; time passing; stalls, held-back sends, resets, half-closes; restart from the
//! store), with bit 6 turning on short reads and writes. After every step the scenario checks
//! the hub's structural audit (one glasses connection per session; every app of a session's
//! active set has exactly one live connection or a pending deadline), output within its cap,
//! streams only to subscribed and permitted apps of the same session, replies only to the app
//! that asked, every final transcript to a healthy subscribed app exactly once and in order,
//! the glasses' screen against the display manager and the display rules, the durable state
//! against a reference store, and the running apps across a restart (see that module).
//!
//! Connection mode (bit 7 clear), below.
//!
//! Input layout: byte 0 picks the configuration (connection cap, output cap, read pause, total
//! output budget, and whether the shell honours `wants_read`); then each operation is an opcode
//! byte followed by its arguments. Connections are named by index into the model's live list
//! (mod its length).
//!
//! Invariants checked after every operation:
//! - no panic; `connection_count` equals the model's live connections, `websocket_count` is
//!   within it, `stats().accepted` equals the accepts; every live id round-trips through its
//!   poller token, and `poll_dirty` / `poll_connect` only yield live ids (an outbound request
//!   reaches `poll_dirty` only after `poll_connect` handed it out);
//! - each connection's output stays within `max_output` plus one frame; its unread input within
//!   one request (Http), one frame (WebSocket, clean close, done) or nothing (failed close), and
//!   holds no capacity when empty;
//! - a connection with pending output never `wants_close`; a stale id has no output, wants
//!   close, is not read, and calls on it change nothing;
//! - `poll_timeout` never returns a time at or before the last `handle_timeout` `now`;
//! - the hub's structural audit holds (`Hub::audit`);
//! - what an inbound client reads is well-formed: one HTTP response head with its body, or after
//!   a `101` a frame stream a client-role `Receiver` accepts, with nothing after a close frame.
//!
//! At the end, liveness: an EOF on every connection closes all of them through `poll_dirty`
//! alone; then, with no peer activity and every outbound connect refused, virtual time alone
//! ends every connection and session and leaves no deadline behind.

#![no_main]

use augmentos_edge::auth;
use augmentos_edge::http::RequestLimits;
use augmentos_edge::hub::registry::AppSpec;
use augmentos_edge::hub::HubConfig;
use augmentos_edge::net::{ConnId, Peer, Phase, Target};
use augmentos_edge::server::{Server, ServerConfig};
use augmentos_edge::sim::scenario::run_bytes;
use augmentos_edge::time::{Instant, Now, Wall};
use augmentos_edge::ws::frame::{write_masked_frame, Opcode};
use augmentos_edge::ws::{Limits, Message, Receiver, Role};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use std::time::Duration;

/// Cap on live connections the fuzzer opens (keeps each run short).
const MAX_LIVE: usize = 32;
/// Stale ids kept to poke at.
const MAX_STALE: usize = 8;
/// Largest single read the harness hands to `handle_input`.
const MAX_READ: usize = 64 * 131;

const SECRET: &[u8] = b"fuzz-jwt-secret-0123456789";
const USER: &str = "fuzz@example.com";
const PACKAGE: &str = "com.fuzz.app";
const API_KEY: &str = "fuzz-api-key";
/// Largest outbound HTTP response the core buffers before failing it (`process_client`).
const MAX_CLIENT_RESPONSE: usize = 64 * 1024;

/// Canned inputs, built once (they carry signed tokens).
struct Canned {
    /// Requests a peer may send first; the first two are valid upgrades to `/echo`.
    requests: Vec<Vec<u8>>,
    /// Text messages for the hub (glasses and app protocol).
    texts: Vec<String>,
    /// Responses a webhook server may send.
    responses: Vec<&'static [u8]>,
}

fn canned() -> &'static Canned {
    static CANNED: OnceLock<Canned> = OnceLock::new();
    CANNED.get_or_init(|| {
        let glasses = auth::jwt::glasses_token(USER, SECRET);
        let app = auth::jwt::app_token(PACKAGE, &auth::hash_api_key(API_KEY), SECRET);
        let upgrade = |path: &str, extra: &str| {
            format!(
                "GET {path} HTTP/1.1\r\nHost: edge\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
            )
            .into_bytes()
        };
        let session = format!("{USER}-{PACKAGE}");
        let requests = vec![
            upgrade("/echo", ""),
            b"GET /echo?user=a HTTP/1.1\r\nHost: edge\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n\r\n".to_vec(),
            upgrade("/glasses-ws", &format!("Authorization: Bearer {glasses}\r\n")),
            upgrade("/glasses-ws", ""),
            upgrade("/glasses-ws", "Authorization: Bearer not.a.token\r\n"),
            upgrade("/app-ws", ""),
            upgrade(
                "/app-ws",
                &format!("Authorization: Bearer {app}\r\nX-Session-Id: {session}\r\n"),
            ),
            format!(
                "POST /apps/{PACKAGE}/start HTTP/1.1\r\nAuthorization: Bearer {glasses}\r\nContent-Length: 0\r\n\r\n"
            )
            .into_bytes(),
            format!(
                "POST /apps/{PACKAGE}/stop HTTP/1.1\r\nAuthorization: Bearer {glasses}\r\nContent-Length: 0\r\n\r\n"
            )
            .into_bytes(),
            b"GET /health HTTP/1.1\r\nHost: edge\r\n\r\n".to_vec(),
            b"GET /metrics HTTP/1.1\r\n\r\n".to_vec(),
            b"POST /health HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
            b"GET /nope HTTP/1.1\r\nUpgrade: websocket\r\n\r\n".to_vec(),
            b"GET /echo HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n".to_vec(),
            b"GET /echo HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".to_vec(),
            b"GET /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
            b"GET /ui/api/state HTTP/1.1\r\nAuthorization: Bearer fuzz-operator-token\r\n\r\n"
                .to_vec(),
            format!(
                "POST /ui/api/sessions/{USER}/apps/{PACKAGE}/stop HTTP/1.1\r\nAuthorization: Bearer fuzz-operator-token\r\n\r\n"
            )
            .into_bytes(),
            b"GET /ui/api/state HTTP/1.1\r\nAuthorization: Bearer wrong\r\n\r\n".to_vec(),
            b"POST /ui/dev/token HTTP/1.1\r\nContent-Length: 14\r\n\r\n{\"userId\":\"a\"}".to_vec(),
            b"GET /ui/glasses HTTP/1.1\r\n\r\n".to_vec(),
        ];
        let texts = vec![
            r#"{"type":"connection_init"}"#.to_string(),
            format!(r#"{{"type":"connection_init","coreToken":"{glasses}"}}"#),
            format!(r#"{{"type":"start_app","packageName":"{PACKAGE}"}}"#),
            format!(r#"{{"type":"stop_app","packageName":"{PACKAGE}"}}"#),
            r#"{"type":"request_settings"}"#.to_string(),
            r#"{"type":"head_position","position":"up"}"#.to_string(),
            format!(
                r#"{{"type":"tpa_connection_init","packageName":"{PACKAGE}","sessionId":"{session}","apiKey":"{API_KEY}"}}"#
            ),
            format!(
                r#"{{"type":"subscription_update","packageName":"{PACKAGE}","sessionId":"{session}","subscriptions":["*","head_position","audio_chunk"]}}"#
            ),
            format!(
                r#"{{"type":"display_event","packageName":"{PACKAGE}","sessionId":"{session}","view":"main","layout":{{"layoutType":"text_wall","text":"hi"}}}}"#
            ),
            r#"{"type":42}"#.to_string(),
        ];
        let responses: Vec<&'static [u8]> = vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"ok\":true}",
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 2\r\n\r\nno",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 200",
        ];
        Canned {
            requests,
            texts,
            responses,
        }
    })
}

/// A cursor over the fuzz input; past the end it yields zeros / empty slices.
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }

    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = (start + n).min(self.data.len());
        self.pos = start + n;
        &self.data[start..end]
    }
}

/// The far side of one connection, as the model sees it.
struct Client {
    id: ConnId,
    /// An outbound connection of the core (a webhook): its output is a request, not checked.
    outbound: bool,
    inbox: Vec<u8>,
    /// The HTTP status, once the response head has arrived.
    status: Option<u16>,
    /// Bytes the non-101 response still owes (its body), once the head has arrived.
    body_left: usize,
    /// Frame decoder, after a 101.
    rx: Option<Receiver>,
    saw_close: bool,
    mask: u32,
}

impl Client {
    fn new(id: ConnId, outbound: bool) -> Client {
        Client {
            id,
            outbound,
            inbox: Vec::new(),
            status: None,
            body_left: 0,
            rx: None,
            saw_close: false,
            mask: 0x9E37_79B9 ^ id.index ^ id.gen.rotate_left(16),
        }
    }

    fn next_mask(&mut self) -> [u8; 4] {
        self.mask ^= self.mask << 13;
        self.mask ^= self.mask >> 17;
        self.mask ^= self.mask << 5;
        self.mask.to_le_bytes()
    }

    /// The client read `bytes` from the connection: check they are well-formed.
    fn receive(&mut self, bytes: &[u8]) {
        if bytes.is_empty() || self.outbound {
            return;
        }
        assert!(
            !self.saw_close,
            "server sent {} bytes after its close frame",
            bytes.len()
        );
        self.inbox.extend_from_slice(bytes);
        if self.status.is_none() {
            let Some(end) = self.inbox.windows(4).position(|w| w == b"\r\n\r\n") else {
                assert!(self.inbox.len() < 4096, "response head never ends");
                return;
            };
            let head = std::str::from_utf8(&self.inbox[..end]).expect("response head is UTF-8");
            assert!(head.starts_with("HTTP/1.1 "), "bad status line: {head:?}");
            let status: u16 = head
                .get(9..12)
                .and_then(|s| s.parse().ok())
                .expect("three-digit status");
            self.status = Some(status);
            if status == 101 {
                assert!(head.contains("Sec-WebSocket-Accept: "));
                self.rx = Some(Receiver::new(
                    Role::Client,
                    Limits {
                        max_frame: 1 << 20,
                        max_message: 1 << 20,
                    },
                ));
            } else {
                self.body_left = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().expect("numeric Content-Length"))
                    })
                    .expect("every response has a Content-Length");
            }
            self.inbox.drain(..end + 4);
        }
        match &mut self.rx {
            None => {
                // A plain response: its body, then nothing (the server closes after it).
                assert!(
                    self.inbox.len() <= self.body_left,
                    "{} bytes after a {}-byte response body",
                    self.inbox.len(),
                    self.body_left
                );
                self.body_left -= self.inbox.len();
                self.inbox.clear();
            }
            Some(rx) => {
                let mut at = 0;
                loop {
                    let step = match rx.next(&mut self.inbox[at..]) {
                        Ok(step) => step,
                        Err(e) => panic!("server sent a malformed frame stream: {e:?}"),
                    };
                    if step.consumed == 0 {
                        break;
                    }
                    at += step.consumed;
                    if let Some(Message::Close(_)) = step.message {
                        self.saw_close = true;
                        assert_eq!(at, self.inbox.len(), "bytes after the server's close frame");
                        break;
                    }
                }
                self.inbox.drain(..at);
            }
        }
    }
}

struct Harness {
    server: Server,
    cfg: ServerConfig,
    now: Instant,
    last_timeout: Option<Instant>,
    live: Vec<Client>,
    stale: Vec<ConnId>,
    accepted: u64,
    honour_wants_read: bool,
}

/// Both clocks for the core: the wall clock runs beside the monotonic one from 2025.
fn clock(mono: Instant) -> Now {
    Now::new(
        mono,
        Wall::from_micros(1_735_689_600_000_000 + mono.as_micros()),
    )
}

impl Harness {
    fn new(selector: u8) -> Harness {
        let max_output = [512, 2048, 8192, 65536][(selector >> 2 & 3) as usize];
        let cfg = ServerConfig {
            echo: true,
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(2),
            ws: Limits {
                max_frame: 1024,
                max_message: 2048,
            },
            http: RequestLimits {
                max_head: 1024,
                max_body: 256,
            },
            max_output,
            read_pause: [max_output / 4, max_output][(selector >> 4 & 1) as usize],
            // A total budget a few connections reach together, or one never reached.
            max_total_output: [2 * max_output, 1 << 24][(selector >> 6 & 1) as usize],
            max_connections: [2, 4, 8, 64][(selector & 3) as usize],
            max_outbound: [1, 4][(selector >> 5 & 1) as usize],
            stall_timeout: Duration::from_secs(2),
            max_per_address: 1024,
            per_address_exempt: Vec::new(),
            ping_interval: Some(Duration::from_secs(15)),
            idle_timeout: Duration::from_secs(45),
            operator_token: Some("fuzz-operator-token".into()),
        };
        let hub = HubConfig {
            jwt_secret: SECRET.to_vec(),
            apps: vec![AppSpec {
                package_name: PACKAGE.into(),
                name: "Fuzz".into(),
                public_url: "http://127.0.0.1:9".into(),
                webhook_target: Target {
                    host: "127.0.0.1".into(),
                    port: 9,
                    tls: None,
                },
                webhook_path: "/webhook".into(),
                hashed_api_key: auth::hash_api_key(API_KEY),
                is_system_app: false,
                permissions: vec!["ALL".into()],
                allowed_addresses: Vec::new(),
                publishes: Vec::new(),
                settings: Vec::new(),
            }],
            ..HubConfig::default()
        };
        Harness {
            server: Server::new(cfg.clone(), hub, clock(Instant::ZERO)),
            cfg,
            now: Instant::ZERO,
            last_timeout: None,
            live: Vec::new(),
            stale: Vec::new(),
            accepted: 0,
            honour_wants_read: selector & 0x20 == 0,
        }
    }

    fn pick(&self, b: u8) -> Option<usize> {
        (!self.live.is_empty()).then(|| b as usize % self.live.len())
    }

    fn position(&self, id: ConnId) -> Option<usize> {
        self.live.iter().position(|c| c.id == id)
    }

    fn accept(&mut self) {
        if self.live.len() >= MAX_LIVE {
            return;
        }
        let id = self
            .server
            .handle_accept(Peer::InProcess, clock(self.now))
            .expect("a slot is always available this far below the index limit");
        self.accepted += 1;
        self.adopt(id, false);
    }

    fn adopt(&mut self, id: ConnId, outbound: bool) {
        assert!(self.position(id).is_none(), "a live id handed out twice");
        assert!(!self.stale.contains(&id), "a stale id handed out again");
        self.live.push(Client::new(id, outbound));
    }

    /// The shell opens every outbound connection the core asks for (`refuse`: the connect
    /// fails at once and the shell reports the connection closed).
    fn connect_outbound(&mut self, refuse: bool) {
        while let Some((id, _target)) = self.server.poll_connect() {
            assert!(
                self.server.net.get(id).is_some(),
                "poll_connect yielded a dead id"
            );
            self.adopt(id, true);
            if refuse {
                let k = self.live.len() - 1;
                self.close(k);
            }
        }
    }

    /// Bytes from the peer of connection `k`, as the shell would pass them on.
    fn send(&mut self, k: usize, bytes: &[u8]) {
        let id = self.live[k].id;
        if self.honour_wants_read && !self.server.wants_read(id) {
            return;
        }
        for chunk in bytes.chunks(MAX_READ) {
            let mut buf = chunk.to_vec();
            self.server.handle_input(id, &mut buf, clock(self.now));
        }
    }

    /// Send in two reads, cut at `cut` (mod the length).
    fn send_split(&mut self, k: usize, bytes: &[u8], cut: u8) {
        let cut = if bytes.is_empty() {
            0
        } else {
            cut as usize % bytes.len()
        };
        self.send(k, &bytes[..cut]);
        self.send(k, &bytes[cut..]);
    }

    fn send_text(&mut self, k: usize, text: &[u8]) {
        let mask = self.live[k].next_mask();
        let mut bytes = Vec::new();
        write_masked_frame(&mut bytes, true, Opcode::Text, text, mask);
        self.send(k, &bytes);
    }

    /// The transport of live connection `k` is gone.
    fn close(&mut self, k: usize) {
        self.server.handle_closed(self.live[k].id, clock(self.now));
        let c = self.live.swap_remove(k);
        if self.stale.len() >= MAX_STALE {
            self.stale.remove(0);
        }
        self.stale.push(c.id);
    }

    /// The shell wrote up to `budget` bytes of `id`'s output (`None`: all of it); closes the
    /// connection if the core wants it closed.
    fn flush(&mut self, id: ConnId, budget: Option<usize>) {
        let Some(k) = self.position(id) else {
            panic!("output for an id the shell does not hold: {id:?}");
        };
        let out = self.server.output(id);
        let n = budget.map_or(out.len(), |b| b.min(out.len()));
        let written = out[..n].to_vec();
        self.live[k].receive(&written);
        self.server.consume_output(id, n);
        if self.server.wants_close(id) {
            assert!(self.server.output(id).is_empty());
            self.close(k);
        }
    }

    fn flush_all(&mut self) {
        let ids: Vec<ConnId> = self.live.iter().map(|c| c.id).collect();
        for id in ids {
            if self.position(id).is_some() {
                self.flush(id, None);
            }
        }
    }

    /// One event-loop turn's output stage: every dirty connection, written up to `budget`.
    fn drain_dirty(&mut self, budget: Option<usize>) {
        let mut turns = 0;
        while let Some(id) = self.server.poll_dirty() {
            turns += 1;
            assert!(turns <= 10_000, "poll_dirty does not run dry");
            assert!(
                self.position(id).is_some(),
                "poll_dirty yielded an id the shell does not hold: {id:?}"
            );
            self.flush(id, budget);
        }
    }

    fn timeout(&mut self) {
        self.server.handle_timeout(clock(self.now));
        self.last_timeout = Some(self.now);
        if let Some(t) = self.server.poll_timeout() {
            assert!(
                t > self.now,
                "poll_timeout {t:?} not after handle_timeout({:?})",
                self.now
            );
        }
    }

    fn frame(&mut self, input: &mut Input<'_>) {
        let k = input.byte();
        let hdr = input.byte();
        let Some(k) = self.pick(k) else { return };
        let opcode = [
            Opcode::Text,
            Opcode::Binary,
            Opcode::Continuation,
            Opcode::Ping,
            Opcode::Pong,
            Opcode::Close,
        ][hdr as usize % 6];
        let fin = opcode.is_control() || hdr & 0x40 == 0;
        let len = match input.byte() {
            n @ 0..=249 => n as usize,
            _ => input.u16() as usize % 2200,
        };
        let mut payload = input.take(len).to_vec();
        if hdr & 0x80 != 0 {
            // Printable ASCII, so text frames reach the echo and the hub.
            for b in &mut payload {
                *b = b' ' + (*b % 95);
            }
            if opcode == Opcode::Close && payload.len() >= 2 {
                payload[..2].copy_from_slice(&1000u16.to_be_bytes());
            }
        }
        let mask = self.live[k].next_mask();
        let mut bytes = Vec::new();
        write_masked_frame(&mut bytes, fin, opcode, &payload, mask);
        if hdr & 0x20 != 0 {
            let cut = input.byte();
            self.send_split(k, &bytes, cut);
        } else {
            self.send(k, &bytes);
        }
    }

    /// Many small frames in one read: output produced within one `handle_input`.
    fn burst(&mut self, input: &mut Input<'_>) {
        let k = input.byte();
        let spec = input.byte();
        let Some(k) = self.pick(k) else { return };
        let count = 1 + (spec & 0x3f) as usize;
        let opcode = if spec & 0x40 != 0 {
            Opcode::Ping
        } else {
            Opcode::Text
        };
        let size = if spec & 0x80 != 0 { 125 } else { 8 };
        let payload = vec![b'x'; size];
        let mut bytes = Vec::new();
        for _ in 0..count {
            let mask = self.live[k].next_mask();
            write_masked_frame(&mut bytes, true, opcode, &payload, mask);
        }
        self.send(k, &bytes);
    }

    fn poke_stale(&mut self, b: u8) {
        if self.stale.is_empty() {
            return;
        }
        let id = self.stale[b as usize % self.stale.len()];
        let count = self.server.connection_count();
        let mut bytes = canned().requests[0].clone();
        self.server.handle_input(id, &mut bytes, clock(self.now));
        self.server.handle_eof(id, clock(self.now));
        self.server.consume_output(id, 7);
        self.server.handle_closed(id, clock(self.now));
        assert_eq!(
            self.server.connection_count(),
            count,
            "a stale id changed the count"
        );
    }

    fn check(&mut self) {
        let s = &self.server;
        assert_eq!(s.connection_count(), self.live.len(), "connection count");
        assert!(s.websocket_count() <= s.connection_count());
        assert_eq!(s.stats().accepted, self.accepted);
        assert!(s.stats().upgrades <= s.stats().accepted);
        let frame_max = 14 + self.cfg.ws.max_message.max(self.cfg.ws.max_frame);
        let http = self.cfg.http.max_head + self.cfg.http.max_body;
        let one_frame = 14 + self.cfg.ws.max_frame;
        for c in &self.live {
            let out = s.output(c.id).len();
            assert!(
                out <= self.cfg.max_output + frame_max,
                "{out} bytes of output, cap {}",
                self.cfg.max_output
            );
            assert_eq!(s.conn_at_token(c.id.to_token()), Some(c.id));
            if out > 0 {
                assert!(!s.wants_close(c.id), "wants close with output pending");
            }
            let conn = s.net.get(c.id).expect("a live id is in the table");
            let (bound, phase) = match conn.phase {
                Phase::Http => (http, "http"),
                Phase::Ws(_) => (one_frame, "websocket"),
                Phase::Closing { failed: false } => (one_frame, "closing"),
                Phase::Closing { failed: true } => (0, "failed"),
                Phase::Client => (MAX_CLIENT_RESPONSE, "outbound"),
                // Nothing more is read, but what was left unread may wait for the close.
                Phase::Done => (http.max(one_frame), "done"),
            };
            let (pending, capacity) = s.pending_input(c.id);
            assert!(
                pending <= bound,
                "{pending} unread input bytes held in phase {phase} (bound {bound})"
            );
            assert!(
                pending != 0 || capacity == 0,
                "empty unread input holds {capacity} bytes of capacity"
            );
        }
        for &id in &self.stale {
            assert!(s.output(id).is_empty());
            assert!(s.wants_close(id));
            assert_ne!(s.conn_at_token(id.to_token()), Some(id));
        }
        for id in self.stale.clone() {
            assert!(!self.server.wants_read(id));
        }
        let net = &self.server.net;
        if let Err(e) = self.server.hub.audit(|id| net.get(id).is_some()) {
            panic!("hub audit: {e}");
        }
        if let (Some(last), Some(t)) = (self.last_timeout, self.server.poll_timeout()) {
            assert!(
                t > last,
                "poll_timeout {t:?} at or before the last handle_timeout {last:?}"
            );
        }
    }

    /// Liveness at the end (see the module comment).
    fn finish(&mut self) {
        self.connect_outbound(false);
        self.drain_dirty(None);
        self.flush_all();
        self.check();

        let known: Vec<ConnId> = self.live.iter().map(|c| c.id).collect();
        for &id in &known {
            self.server.handle_eof(id, clock(self.now));
        }
        self.drain_dirty(None);
        for id in known {
            assert!(
                self.server.net.get(id).is_none(),
                "{id:?} still open after EOF and draining poll_dirty"
            );
        }
        // A webhook that waited for one of those to finish may have been sent meanwhile.
        self.connect_outbound(false);
        self.check();

        // Nobody talks any more and every webhook connect fails: time alone must wind down the
        // sessions and apps (grace periods, bounded retries and restarts).
        for _ in 0..60 {
            self.now = self.now + Duration::from_secs(20);
            self.timeout();
            self.connect_outbound(true);
            self.drain_dirty(None);
            self.flush_all();
            self.check();
        }
        assert_eq!(
            self.server.connection_count(),
            0,
            "connections outlived 20 idle minutes"
        );
        assert_eq!(
            self.server.hub.session_count(),
            0,
            "sessions outlived 20 idle minutes"
        );
        assert_eq!(
            self.server.poll_timeout(),
            None,
            "a deadline outlived 20 idle minutes"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    if data.first().is_some_and(|b| b & 0x80 != 0) {
        return run_bytes(data, 400);
    }
    let canned = canned();
    let mut input = Input { data, pos: 0 };
    let mut h = Harness::new(input.byte());
    let mut ops = 0;
    while !input.done() && ops < 512 {
        ops += 1;
        match input.byte() % 14 {
            0 => h.accept(),
            1 => {
                let (k, which, cut) = (input.byte(), input.byte(), input.byte());
                if let Some(k) = h.pick(k) {
                    let req = &canned.requests[(which & 0x7f) as usize % canned.requests.len()];
                    if which & 0x80 != 0 {
                        h.send_split(k, req, cut);
                    } else {
                        h.send(k, req);
                    }
                }
            }
            2 => h.frame(&mut input),
            3 => {
                let (k, len) = (input.byte(), input.byte());
                let bytes = input.take(len as usize);
                if let Some(k) = h.pick(k) {
                    h.send(k, bytes);
                }
            }
            4 => {
                if let Some(k) = h.pick(input.byte()) {
                    h.server.handle_eof(h.live[k].id, clock(h.now));
                }
            }
            5 => {
                let b = input.byte();
                let ms = [0u64, 1, 10, 100, 1000, 2000, 5000, 15_000][(b & 7) as usize]
                    + u64::from(b >> 4);
                h.now = h.now + Duration::from_millis(ms);
                // Bit 3: the shell woke late and has not called handle_timeout yet.
                if b & 8 == 0 {
                    h.timeout();
                }
            }
            6 => {
                let b = input.byte();
                let budget = (b != 0).then_some(b as usize * 16);
                h.drain_dirty(budget);
            }
            7 => {
                let (k, b) = (input.byte(), input.byte());
                if let Some(k) = h.pick(k) {
                    let id = h.live[k].id;
                    h.flush(id, (b != 0).then_some(b as usize * 8));
                }
            }
            8 => {
                if let Some(k) = h.pick(input.byte()) {
                    h.close(k);
                }
            }
            9 => h.poke_stale(input.byte()),
            10 => h.burst(&mut input),
            11 => {
                let (k, which) = (input.byte(), input.byte());
                if let Some(k) = h.pick(k) {
                    let text = &canned.texts[which as usize % canned.texts.len()];
                    h.send_text(k, text.as_bytes());
                }
            }
            12 => {
                // A webhook server answers (on any connection; meant for outbound ones).
                let (k, which) = (input.byte(), input.byte());
                if let Some(k) = h.pick(k) {
                    let resp = canned.responses[which as usize % canned.responses.len()];
                    h.send(k, resp);
                }
            }
            _ => h.timeout(),
        }
        h.connect_outbound(false);
        h.check();
    }
    h.finish();
});
