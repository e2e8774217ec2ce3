//! Test support for integration tests over real sockets (shared by the files in `tests/`).
//!
//! Owns a running server: [`TestServer::start`] runs a [`Reactor`] on a background thread with
//! three listeners (TCP on 127.0.0.1:0, a Unix socket in a fresh temporary directory, and the
//! in-process transport) and hands back where to reach each. Dropping the [`TestServer`] stops the
//! reactor, joins its thread (surfacing a reactor error or panic as a test failure) and removes
//! the temporary directory.
//!
//! Also owns the client side: [`Sock`] (one blocking stream type over every transport, so one
//! client works everywhere), a raw WebSocket client [`RawWs`] that can send malformed bytes and
//! reads server frames with its own parser (nothing shared with the server's codec but the masked
//! frame writer), and a raw HTTP exchange that reads until the server closes.
//!
//! Invariants: every client read has a generous timeout ([`READ_TIMEOUT`]), so a server that
//! hangs fails a test instead of hanging it; no helper asserts anything about elapsed time.

// Not every integration test file uses every helper.
#![allow(dead_code)]

use augmentos_edge::hub::HubConfig;
use augmentos_edge::reactor::{Clock, Reactor, StopHandle};
use augmentos_edge::server::{Server, ServerConfig};
use augmentos_edge::ws::frame::write_masked_frame;
use augmentos_edge::ws::Opcode;
use augmentos_edge_transports::{
    InProcessConnector, InProcessListener, Listener, TcpListener, UnixListener,
};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tungstenite::WebSocket;

pub mod prom;
pub mod webhooks;

/// How long a client waits for any single read before the test fails. Generous on purpose: the
/// server answers in microseconds, but a noisy 2-core machine can stall a thread for a while.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The echo route with short deadlines (the close deadline bounds how long a rejected client
/// that never answers our close frame keeps its connection).
pub fn echo_config() -> ServerConfig {
    ServerConfig {
        echo: true,
        handshake_timeout: Duration::from_secs(5),
        close_timeout: Duration::from_millis(300),
        ..Default::default()
    }
}

/// Which listener a client connects through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Unix,
    InProcess,
}

/// A reactor serving on all three transports from a background thread.
pub struct TestServer {
    pub tcp: SocketAddr,
    pub unix: PathBuf,
    pub connector: InProcessConnector,
    dir: PathBuf,
    stop: StopHandle,
    thread: Option<JoinHandle<io::Result<()>>>,
}

/// A directory name no other test (in this process or another) is using.
fn unique_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::env::temp_dir().join(format!(
        "augmentos-edge-test-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

impl TestServer {
    pub fn start(cfg: ServerConfig) -> TestServer {
        TestServer::start_with(cfg, HubConfig::default())
    }

    /// A server with this hub configuration (apps, secret, limits).
    pub fn start_with(cfg: ServerConfig, hub: HubConfig) -> TestServer {
        let dir = unique_dir();
        std::fs::create_dir(&dir).expect("create the socket directory");
        let unix = dir.join("edge.sock");
        let tcp_listener =
            TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind TCP");
        let tcp = tcp_listener.local_addr().expect("TCP local address");
        let unix_listener = UnixListener::bind(&unix).expect("bind the Unix socket");
        let (in_process, connector) = InProcessListener::new().expect("in-process listener");
        let listeners: Vec<Box<dyn Listener>> = vec![
            Box::new(tcp_listener),
            Box::new(unix_listener),
            Box::new(in_process),
        ];
        let clock = Clock::default();
        let server = Server::new(cfg, hub, clock.now());
        let mut reactor = Reactor::new(server, clock, listeners).expect("reactor");
        let stop = reactor.stop_handle();
        let thread = std::thread::Builder::new()
            .name("edge-reactor".into())
            .spawn(move || reactor.run())
            .expect("spawn the reactor thread");
        TestServer {
            tcp,
            unix,
            connector,
            dir,
            stop,
            thread: Some(thread),
        }
    }

    /// A blocking client stream to the server through `t`, with the read timeout set.
    pub fn connect(&self, t: Transport) -> Sock {
        let sock = match t {
            Transport::Tcp => {
                let s = TcpStream::connect(self.tcp).expect("TCP connect");
                s.set_nodelay(true).expect("nodelay");
                Sock::Tcp(s)
            }
            Transport::Unix => Sock::Unix(UnixStream::connect(&self.unix).expect("Unix connect")),
            Transport::InProcess => Sock::Unix(self.connector.connect().expect("in-process")),
        };
        sock.set_read_timeout(Some(READ_TIMEOUT))
            .expect("read timeout");
        sock
    }

    /// A tungstenite client on `/echo`, handshake done.
    pub fn ws(&self, t: Transport) -> WebSocket<Sock> {
        ws_over(self.connect(t))
    }

    /// A raw WebSocket client on `/echo`, handshake done.
    pub fn raw_ws(&self, t: Transport) -> RawWs {
        RawWs::handshake(self.connect(t))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.stop();
        let outcome = self.thread.take().map(JoinHandle::join);
        let _ = std::fs::remove_dir_all(&self.dir);
        if std::thread::panicking() {
            return;
        }
        match outcome {
            Some(Ok(Err(e))) => panic!("the reactor failed: {e}"),
            Some(Err(_)) => panic!("the reactor thread panicked"),
            _ => {}
        }
    }
}

/// Run tungstenite's client handshake for `/echo` over an already connected stream.
pub fn ws_over(sock: Sock) -> WebSocket<Sock> {
    match tungstenite::client::client("ws://localhost/echo", sock) {
        Ok((ws, resp)) => {
            assert_eq!(resp.status().as_u16(), 101);
            ws
        }
        Err(e) => panic!("WebSocket handshake failed: {e}"),
    }
}

/// One blocking client stream type over every transport.
pub enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Sock {
    pub fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.set_read_timeout(d),
            Sock::Unix(s) => s.set_read_timeout(d),
        }
    }

    /// Write all of `bytes`, tolerating the server dropping the connection part-way: a server
    /// may close as soon as it has rejected what it already read. Returns whether all went out.
    pub fn write_tolerant(&mut self, bytes: &[u8]) -> bool {
        match self.write_all(bytes) {
            Ok(()) => true,
            Err(e) if is_reset(&e) => false,
            Err(e) => panic!("write failed: {e}"),
        }
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(buf),
            Sock::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.write(buf),
            Sock::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.flush(),
            Sock::Unix(s) => s.flush(),
        }
    }
}

/// The peer dropped the connection (with unread data on its side, the kernel resets instead of
/// sending EOF; for our purposes both mean "closed").
fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted
    )
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Read one chunk; `Ok(None)` when the peer closed (EOF or reset). A read timeout fails the test.
fn read_some(r: &mut impl Read, buf: &mut [u8], waiting_for: &str) -> Option<usize> {
    loop {
        match r.read(buf) {
            Ok(0) => return None,
            Ok(n) => return Some(n),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if is_reset(&e) => return None,
            Err(e) if is_timeout(&e) => {
                panic!("timed out after {READ_TIMEOUT:?} waiting for {waiting_for}")
            }
            Err(e) => panic!("read failed waiting for {waiting_for}: {e}"),
        }
    }
}

/// Read until the server closes the connection; returns everything read.
pub fn read_until_closed(r: &mut impl Read) -> Vec<u8> {
    let mut all = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    while let Some(n) = read_some(r, &mut chunk, "the server to close the connection") {
        all.extend_from_slice(&chunk[..n]);
    }
    all
}

/// Assert the server closes the connection without sending anything more.
pub fn expect_closed(r: &mut impl Read, context: &str) {
    let extra = read_until_closed(r);
    assert!(
        extra.is_empty(),
        "{context}: {} unexpected bytes before the close: {:?}",
        extra.len(),
        &extra[..extra.len().min(64)]
    );
}

// ---- raw HTTP -------------------------------------------------------------------------------

/// A complete HTTP response, parsed by `httparse` (not by the server's own code).
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (fails the test if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Parse a response head; returns the response (without body) and the head's length.
fn parse_head(bytes: &[u8]) -> (HttpResponse, usize) {
    let mut raw = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut raw);
    let head_len = match resp.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!(
            "not a complete HTTP response head ({other:?}): {}",
            String::from_utf8_lossy(bytes)
        ),
    };
    let headers = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let r = HttpResponse {
        status: resp.code.expect("status code"),
        headers,
        body: Vec::new(),
    };
    (r, head_len)
}

/// Parse one whole response (head and `Content-Length` body, nothing after it).
pub fn parse_response(bytes: &[u8]) -> HttpResponse {
    let (mut r, head_len) = parse_head(bytes);
    r.body = bytes[head_len..].to_vec();
    let declared: usize = r
        .header("content-length")
        .expect("every response has Content-Length")
        .parse()
        .expect("numeric Content-Length");
    assert_eq!(declared, r.body.len(), "Content-Length vs bytes received");
    r
}

/// Send `request` (tolerating an early close by the server), read until the server closes the
/// connection, and parse the one response it sent. Not returning means the connection closed.
pub fn http_exchange(mut sock: Sock, request: &[u8]) -> HttpResponse {
    sock.write_tolerant(request);
    parse_response(&read_until_closed(&mut sock))
}

// ---- raw WebSocket client -------------------------------------------------------------------

/// The key of every raw handshake (RFC 6455's example nonce).
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// A well-formed upgrade request for `/echo`.
pub fn upgrade_request() -> String {
    format!(
        "GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// One frame as the server sent it.
#[derive(Debug)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// A WebSocket client that writes whatever bytes a test wants and reads server frames with its
/// own parser. Bytes read past the handshake or a frame are kept in `buf`.
pub struct RawWs {
    pub sock: Sock,
    buf: Vec<u8>,
    next_mask: u8,
}

impl RawWs {
    /// Send the upgrade request on `sock` and check the 101 answer.
    pub fn handshake(mut sock: Sock) -> RawWs {
        sock.write_all(upgrade_request().as_bytes())
            .expect("send upgrade");
        RawWs::after_request(sock)
    }

    /// The upgrade request was already sent on `sock` (say, byte by byte); check the 101.
    pub fn after_request(sock: Sock) -> RawWs {
        let mut ws = RawWs {
            sock,
            buf: Vec::new(),
            next_mask: 0x11,
        };
        let head_end = loop {
            if let Some(i) = ws.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            ws.fill("the 101 response");
        };
        let (resp, _) = parse_head(&ws.buf[..head_end]);
        assert_eq!(resp.status, 101, "upgrade refused: {resp:?}");
        let want = tungstenite::handshake::derive_accept_key(KEY.as_bytes());
        assert_eq!(resp.header("sec-websocket-accept"), Some(want.as_str()));
        ws.buf.drain(..head_end);
        ws
    }

    fn fill(&mut self, waiting_for: &str) {
        let mut chunk = [0u8; 16 * 1024];
        match read_some(&mut self.sock, &mut chunk, waiting_for) {
            Some(n) => self.buf.extend_from_slice(&chunk[..n]),
            None => panic!(
                "connection closed while waiting for {waiting_for} ({} bytes buffered)",
                self.buf.len()
            ),
        }
    }

    fn mask(&mut self) -> [u8; 4] {
        let m = self.next_mask;
        self.next_mask = self.next_mask.wrapping_mul(31).wrapping_add(7);
        [m, m ^ 0xA5, m.wrapping_add(0x3C), !m]
    }

    /// The masked encoding of one client frame (with a fresh mask).
    pub fn encode(&mut self, fin: bool, opcode: Opcode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() + 14);
        let mask = self.mask();
        write_masked_frame(&mut out, fin, opcode, payload, mask);
        out
    }

    /// Send one masked frame.
    pub fn send(&mut self, fin: bool, opcode: Opcode, payload: &[u8]) {
        let bytes = self.encode(fin, opcode, payload);
        self.sock.write_all(&bytes).expect("send frame");
    }

    /// Read the next whole frame the server sent. Server frames must not be masked.
    pub fn read_frame(&mut self) -> Frame {
        while self.buf.len() < 2 {
            self.fill("a frame header");
        }
        let (b0, b1) = (self.buf[0], self.buf[1]);
        assert_eq!(b1 & 0x80, 0, "server frames must not be masked");
        assert_eq!(b0 & 0x70, 0, "server frames must not set reserved bits");
        let (len, header) = match b1 & 0x7F {
            126 => {
                while self.buf.len() < 4 {
                    self.fill("a 16-bit frame length");
                }
                (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
            }
            127 => {
                while self.buf.len() < 10 {
                    self.fill("a 64-bit frame length");
                }
                let mut w = [0u8; 8];
                w.copy_from_slice(&self.buf[2..10]);
                (u64::from_be_bytes(w) as usize, 10)
            }
            n => (n as usize, 2),
        };
        while self.buf.len() < header + len {
            self.fill("a frame payload");
        }
        let payload = self.buf[header..header + len].to_vec();
        self.buf.drain(..header + len);
        Frame {
            fin: b0 & 0x80 != 0,
            opcode: b0 & 0x0F,
            payload,
        }
    }

    /// The next frame must be a close frame with `code` (and a UTF-8 reason).
    pub fn expect_close(&mut self, code: u16, context: &str) {
        let f = self.read_frame();
        assert_eq!(
            f.opcode, 0x8,
            "{context}: expected a close frame, got {f:?}"
        );
        assert!(f.fin, "{context}: close frames are never fragmented");
        assert!(
            f.payload.len() >= 2,
            "{context}: close without a code: {f:?}"
        );
        let got = u16::from_be_bytes([f.payload[0], f.payload[1]]);
        assert!(
            std::str::from_utf8(&f.payload[2..]).is_ok(),
            "{context}: close reason is not UTF-8"
        );
        assert_eq!(got, code, "{context}: close code");
    }

    /// The server closes the connection with nothing more sent.
    pub fn expect_closed(&mut self, context: &str) {
        assert!(
            self.buf.is_empty(),
            "{context}: unexpected bytes after the last frame: {:?}",
            self.buf
        );
        expect_closed(&mut self.sock, context);
    }
}
