//! Fuzzes the TLS transport's server stream, `augmentos_edge_transports::TlsStream`: its
//! handshake on rustls' unbuffered connection and, above all, its own record layer after the
//! handshake (sequence numbers, record types, close_notify, TLS 1.3 KeyUpdate).
//!
//! Each input gets a fresh stream over an in-memory socket: one end of a Unix socket pair,
//! handed to the stream as the `mio::net::TcpStream` it takes (the stream only reads, writes and
//! shuts the socket down, which an AF_UNIX stream socket answers as TCP does; bytes written are
//! readable at once, so runs are deterministic). The certificate is a fixed P-256 one
//! (`fuzz/tls/`), loaded through the product's own `server_config`. The client, when there is
//! one, is a real rustls client (no resumption, any certificate accepted) whose records the
//! target carries to the socket itself, so it can damage them on the way.
//!
//! Input layout: byte 0: bits 0-1 the mode, bits 2-7 the client's suites (all, or one of the
//! ECDSA suites of TLS 1.3 and 1.2). Then:
//! - mode 0 (raw handshake): byte 1 chunk size, byte 2 bit 0 EOF at the end, then bytes sent as
//!   the client's handshake, chunk by chunk, the server reading after each;
//! - mode 1 (raw records): a real handshake, then the same layout as mode 0, the bytes sent as
//!   records after it;
//! - mode 2 (operations): a real handshake, then operations, one byte each plus arguments:
//!   client writes of fuzz-chosen sizes, key updates, close_notify, the socket's end, pushes of
//!   all or part of the client's records with the server reading into a buffer of a chosen
//!   size, bit flips, truncations, replays and garbage in the records not yet pushed, plaintext
//!   records, server writes the client reads;
//! - mode 3: as mode 2, but bit flips chosen by the first bytes damage the client's handshake
//!   flights too (a damaged handshake fails or, for bits outside the transcript, completes).
//!
//! Invariants checked:
//! - no panic, no hang (every loop is bounded);
//! - the plaintext the server reads is a prefix of what the client wrote (up to its
//!   close_notify or the socket's end); with no damaged byte it is all of it, with no error;
//! - after an error `read` gives no more plaintext; an error is `InvalidData`; after the
//!   socket's end `read` never says `WouldBlock`, and after close_notify it says EOF;
//! - without a real client (modes 0 and 1) the server never reads plaintext;
//! - the real handshake completes and leaves an idle stream holding nothing (`held_bytes`);
//! - the client accepts everything the server sends, and reads exactly what the server wrote.

#![no_main]

use augmentos_edge_transports::rustls;
use augmentos_edge_transports::{server_config, Stream, TlsStream};
use libfuzzer_sys::fuzz_target;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, OnceLock};

/// The largest record the stream takes (header, 16 KiB, 2 KiB of expansion).
const MAX_RECORD: usize = 5 + 16 * 1024 + 2048;
/// Server read buffer sizes: below and at one record, and larger.
const READ_SIZES: [usize; 7] = [1, 5, 100, 4096, MAX_RECORD - 1, MAX_RECORD, 64 * 1024];
/// Plaintext each side writes in one input, at most.
const BUDGET: usize = 256 * 1024;
/// Rounds of reading before a step is declared stuck.
const ROUNDS: usize = 64;

struct Fixture {
    server: Arc<rustls::ServerConfig>,
    /// All suites first, then one client per ECDSA suite.
    clients: Vec<Arc<ClientConfig>>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("edge-tls-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, include_bytes!("../tls/cert.pem")).expect("write");
        std::fs::write(&key, include_bytes!("../tls/key.pem")).expect("write");
        let server = server_config(&cert, &key).expect("server config");
        let _ = std::fs::remove_dir_all(&dir);
        let mut clients = vec![client(None)];
        for s in rustls::crypto::ring::default_provider().cipher_suites {
            if !format!("{:?}", s.suite()).contains("_RSA_") {
                clients.push(client(Some(s)));
            }
        }
        Fixture { server, clients }
    })
}

/// Accepts any certificate: the server is under test, not the client's checks.
#[derive(Debug)]
struct AnyCertificate;

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::ECDSA_NISTP384_SHA384,
            SignatureScheme::ED25519,
        ]
    }
}

fn client(suite: Option<rustls::SupportedCipherSuite>) -> Arc<ClientConfig> {
    let mut provider = rustls::crypto::ring::default_provider();
    let versions: &[&rustls::SupportedProtocolVersion] = match suite {
        Some(rustls::SupportedCipherSuite::Tls12(_)) => &[&rustls::version::TLS12],
        Some(_) => &[&rustls::version::TLS13],
        None => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    if let Some(s) = suite {
        provider.cipher_suites = vec![s];
    }
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Every input starts from a full handshake.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// The bytes written at stream offset `at` onwards: distinct by position, so a reordered,
/// replayed or dropped piece shows as a mismatch.
fn pattern(at: usize, n: usize, salt: u8) -> Vec<u8> {
    (at..at + n)
        .map(|i| (i.wrapping_mul(7) ^ (i >> 8)) as u8 ^ salt)
        .collect()
}

/// The fuzzer's bytes, read front to back (zero once exhausted).
struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn more(&self) -> bool {
        !self.data.is_empty()
    }
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.data.split_first() else {
            return 0;
        };
        self.data = rest;
        b
    }
    fn u16(&mut self) -> usize {
        usize::from(self.byte()) << 8 | usize::from(self.byte())
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }
}

/// The server stream, the client's socket end and (with a real client) the client.
struct Pair {
    server: TlsStream,
    sock: UnixStream,
    client: Option<ClientConnection>,
    /// Client records not yet given to the socket.
    wire: Vec<u8>,
    /// Plaintext the client wrote, and how much of it the server may read (close_notify or the
    /// socket's end).
    sent: Vec<u8>,
    limit: Option<usize>,
    /// Plaintext the server read; whether a read failed, ended (`Ok(0)`).
    at_server: Vec<u8>,
    failed: bool,
    ended: bool,
    /// A byte of the client's records was changed, dropped or added.
    damaged: bool,
    /// The client's write side of the socket is shut.
    eof: bool,
    /// Plaintext the server's writes took, and what the client read.
    server_sent: Vec<u8>,
    at_client: Vec<u8>,
}

impl Pair {
    fn new(client: Option<Arc<ClientConfig>>) -> Pair {
        let (sock, server_end) = UnixStream::pair().expect("socket pair");
        sock.set_nonblocking(true).expect("non-blocking");
        server_end.set_nonblocking(true).expect("non-blocking");
        // SAFETY: the descriptor is an open socket moved out of `server_end`; the TcpStream owns
        // it from here and closes it once. The stream only reads, writes and shuts it down.
        let tcp = unsafe { mio::net::TcpStream::from_raw_fd(server_end.into_raw_fd()) };
        let server = TlsStream::new(tcp, fixture().server.clone()).expect("server stream");
        let client = client.map(|c| {
            ClientConnection::new(c, ServerName::try_from("localhost").expect("name"))
                .expect("client")
        });
        Pair {
            server,
            sock,
            client,
            wire: Vec::new(),
            sent: Vec::new(),
            limit: None,
            at_server: Vec::new(),
            failed: false,
            ended: false,
            damaged: false,
            eof: false,
            server_sent: Vec::new(),
            at_client: Vec::new(),
        }
    }

    /// The client's pending records onto `wire`.
    fn client_records(&mut self) {
        let Some(c) = &mut self.client else { return };
        while c.wants_write() {
            c.write_tls(&mut self.wire).expect("client records");
        }
    }

    /// Give the first `n` bytes of `wire` to the socket, the server reading when it is full.
    fn push(&mut self, n: usize, size: usize) {
        let n = n.min(self.wire.len());
        let mut at = 0;
        for _ in 0..ROUNDS {
            if at == n || self.eof {
                break;
            }
            match self.sock.write(&self.wire[at..n]) {
                Ok(k) => at += k,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if self.failed || self.ended {
                        // The server reads no more: the rest is never read either.
                        break;
                    }
                    self.server_reads(size);
                }
                Err(e) => panic!("socket write: {e}"),
            }
        }
        if at < n && !self.failed && !self.ended && !self.eof {
            panic!("the server stopped reading a live connection");
        }
        self.wire.drain(..n);
    }

    /// The server reads into a buffer of `size` until it would block, fails or ends.
    fn server_reads(&mut self, size: usize) {
        let mut buf = vec![0u8; size];
        for _ in 0..4 * BUDGET {
            match self.server.read(&mut buf) {
                Ok(0) => {
                    self.ended = true;
                    break;
                }
                Ok(n) => {
                    assert!(!self.failed, "{n} bytes of plaintext after an error");
                    assert!(!self.ended, "{n} bytes of plaintext after EOF");
                    self.at_server.extend_from_slice(&buf[..n]);
                    let allowed = &self.sent[..self.limit.unwrap_or(self.sent.len())];
                    assert!(
                        allowed.starts_with(&self.at_server),
                        "the server read {} bytes that are not a prefix of the {} the client \
                         sent",
                        self.at_server.len(),
                        allowed.len()
                    );
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    assert!(!self.eof, "WouldBlock after the socket ended");
                    break;
                }
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::InvalidData, "{e}");
                    self.failed = true;
                    break;
                }
            }
        }
        let _ = self.server.flush();
    }

    /// The client reads what the server sent, and must accept all of it.
    fn client_reads(&mut self) {
        let mut buf = vec![0u8; 32 * 1024];
        for _ in 0..ROUNDS {
            let n = match self.sock.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => panic!("socket read: {e}"),
            };
            let Some(c) = &mut self.client else { continue };
            let mut rest = &buf[..n];
            while !rest.is_empty() {
                c.read_tls(&mut rest).expect("client takes records");
                if let Err(e) = c.process_new_packets() {
                    // A damaged handshake: the server's alert is expected.
                    assert!(self.damaged, "the client refused the server's records: {e}");
                    self.client = None;
                    return;
                }
                let _ = c.reader().read_to_end(&mut self.at_client);
            }
        }
    }

    /// One round: records out, the server reads and answers, the client reads.
    fn round(&mut self, size: usize) {
        self.client_records();
        self.push(self.wire.len(), size);
        self.server_reads(size);
        self.client_reads();
    }

    /// A real handshake; `damage` may flip bits in the client's flights. True if it completed.
    fn handshake(&mut self, mut damage: Option<&mut Input>) -> bool {
        for _ in 0..16 {
            let Some(c) = &self.client else { return false };
            if !c.is_handshaking() {
                // The client's last flight to the server, then the server is idle.
                self.round(MAX_RECORD);
                if self.damaged {
                    return !self.failed;
                }
                assert!(!self.failed && !self.ended, "the handshake failed");
                assert_eq!(self.server.held_bytes(), 0, "not idle after the handshake");
                return true;
            }
            self.client_records();
            if let Some(input) = damage.as_deref_mut() {
                if input.byte() & 1 == 1 && !self.wire.is_empty() {
                    let at = input.u16() % self.wire.len();
                    self.wire[at] ^= 1 << (input.byte() % 8);
                    self.damaged = true;
                }
            }
            self.round(MAX_RECORD);
            assert!(self.at_server.is_empty(), "plaintext during the handshake");
        }
        assert!(self.damaged, "the handshake did not complete");
        false
    }

    /// The server writes `data` as the socket takes it; the client reads.
    fn server_writes(&mut self, data: &[u8]) {
        let mut at = 0;
        for _ in 0..ROUNDS {
            if at == data.len() {
                break;
            }
            match self.server.write(&data[at..]) {
                Ok(n) => {
                    self.server_sent.extend_from_slice(&data[at..at + n]);
                    at += n;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
            let _ = self.server.flush();
            self.client_reads();
        }
    }

    /// The last round, then the invariants over the whole run.
    fn finish(&mut self) {
        for _ in 0..4 {
            self.round(READ_SIZES[6]);
        }
        let allowed = &self.sent[..self.limit.unwrap_or(self.sent.len())];
        assert!(allowed.starts_with(&self.at_server));
        // EOF only from close_notify or the socket's end (garbage cannot forge close_notify).
        assert!(!self.ended || self.limit.is_some(), "EOF from nothing");
        if !self.damaged && self.client.is_some() {
            assert!(!self.failed, "an undamaged connection failed");
            assert!(
                self.at_server == allowed,
                "the server read {} of {} bytes",
                self.at_server.len(),
                allowed.len()
            );
        }
        if self.eof || (self.limit.is_some() && !self.damaged) {
            assert!(self.ended || self.failed, "no EOF after the end");
        }
        if self.client.is_some() && !self.server.wants_write() {
            assert!(
                self.at_client == self.server_sent,
                "the client read {} of the {} bytes the server wrote",
                self.at_client.len(),
                self.server_sent.len()
            );
        }
    }
}

/// Modes 0 and 1: the input's bytes as the client's, in chunks.
fn raw(pair: &mut Pair, mut input: Input) {
    let chunk = 1 + usize::from(input.byte()) * 16;
    let eof = input.byte() & 1 == 1;
    let size = READ_SIZES[usize::from(input.byte()) % READ_SIZES.len()];
    while input.more() {
        let bytes = input.bytes(chunk).to_vec();
        pair.wire.extend_from_slice(&bytes);
        pair.push(bytes.len(), size);
        pair.server_reads(size);
        pair.client_reads();
    }
    if eof {
        pair.sock
            .shutdown(std::net::Shutdown::Write)
            .expect("shutdown");
        pair.eof = true;
        pair.server_reads(size);
    }
    assert!(pair.at_server.is_empty(), "plaintext from no client");
}

/// Modes 2 and 3: operations on the connection.
fn operations(pair: &mut Pair, mut input: Input) {
    let mut salt = 0u8;
    while input.more() {
        let op = input.byte();
        salt = salt.wrapping_add(1);
        match op % 12 {
            // The client writes (rustls takes what its buffer allows).
            0 => {
                let n = input.u16().min(BUDGET.saturating_sub(pair.sent.len()));
                let data = pattern(pair.sent.len(), n, 0);
                let Some(c) = &mut pair.client else { continue };
                // After close_notify rustls may refuse: then nothing was sent.
                let taken = c.writer().write(&data).unwrap_or(0);
                pair.sent.extend_from_slice(&data[..taken]);
                pair.client_records();
            }
            1 => {
                if let Some(c) = &mut pair.client {
                    // TLS 1.2 has no key update: then an error, and nothing sent.
                    let _ = c.refresh_traffic_keys();
                }
                pair.client_records();
            }
            2 => {
                let size = READ_SIZES[usize::from(input.byte()) % READ_SIZES.len()];
                pair.round(size);
            }
            // Part of the records only: the server holds a partial record.
            3 => {
                let n = input.u16();
                let size = READ_SIZES[usize::from(input.byte()) % READ_SIZES.len()];
                pair.push(n, size);
                pair.server_reads(size);
            }
            4 => {
                let (at, bit) = (input.u16(), input.byte() % 8);
                if !pair.wire.is_empty() {
                    let at = at % pair.wire.len();
                    pair.wire[at] ^= 1 << bit;
                    pair.damaged = true;
                }
            }
            5 => {
                let n = usize::from(input.byte());
                let garbage = input.bytes(n).to_vec();
                pair.damaged |= !garbage.is_empty();
                pair.wire.extend_from_slice(&garbage);
            }
            // A plaintext record of any type (alert, change_cipher_spec, handshake, ...).
            6 => {
                let typ = input.byte();
                let n = usize::from(input.byte() % 64);
                let body = input.bytes(n).to_vec();
                pair.wire
                    .extend_from_slice(&[typ, 3, 3, 0, body.len() as u8]);
                pair.wire.extend_from_slice(&body);
                pair.damaged = true;
            }
            7 => {
                let at = input.u16();
                if at < pair.wire.len() {
                    pair.wire.truncate(at);
                    pair.damaged = true;
                }
            }
            // Replay the records not yet pushed.
            8 => {
                if !pair.wire.is_empty() && pair.wire.len() <= 64 * 1024 {
                    pair.wire.extend_from_within(..);
                    pair.damaged = true;
                }
            }
            9 => {
                let n = input
                    .u16()
                    .min(BUDGET.saturating_sub(pair.server_sent.len()));
                let data = pattern(pair.server_sent.len(), n, 0x5a);
                pair.server_writes(&data);
            }
            10 => {
                if let Some(c) = &mut pair.client {
                    c.send_close_notify();
                }
                pair.client_records();
                pair.limit.get_or_insert(pair.sent.len());
            }
            _ => {
                pair.client_records();
                pair.push(pair.wire.len(), MAX_RECORD);
                if !pair.eof {
                    pair.sock
                        .shutdown(std::net::Shutdown::Write)
                        .expect("shutdown");
                    pair.eof = true;
                    pair.limit.get_or_insert(pair.sent.len());
                }
                pair.server_reads(MAX_RECORD);
            }
        }
        if pair.eof {
            // Nothing reaches the server any more.
            pair.wire.clear();
        }
    }
    pair.finish();
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input { data };
    let head = input.byte();
    let clients = &fixture().clients;
    let client = clients[usize::from(head >> 2) % clients.len()].clone();
    match head & 3 {
        0 => raw(&mut Pair::new(None), input),
        1 => {
            let mut pair = Pair::new(Some(client));
            if pair.handshake(None) {
                pair.client = None;
                raw(&mut pair, input);
            }
        }
        2 => {
            let mut pair = Pair::new(Some(client));
            if pair.handshake(None) {
                operations(&mut pair, input);
            }
        }
        _ => {
            let mut pair = Pair::new(Some(client));
            let handshake = pair.handshake(Some(&mut input));
            if handshake {
                operations(&mut pair, input);
            } else {
                assert!(pair.at_server.is_empty(), "plaintext without a handshake");
            }
        }
    }
});
