//! Transport layer: TLS over TCP, with rustls (the `ring` provider), so `wss://` and `https://`
//! are served by the box itself.
//!
//! Owns the TCP listener, the certificate store ([`TlsCerts`]: a chain and a key read from PEM
//! files, re-readable while running) and, per connection, a [`TlsStream`]: a
//! `mio::net::TcpStream` driven from inside `read`/`write`, so the reactor sees plaintext and
//! nothing else changes for it. TLS 1.2 and 1.3; ALPN `http/1.1` (a client that offers ALPN
//! without it is refused).
//!
//! Memory is what an idle connection costs, so a stream holds buffers only while bytes are in
//! flight. The handshake runs on rustls' unbuffered connection over our own buffers; once it is
//! done (and rustls has nothing left to send) the connection is handed to rustls' kernel API
//! (`dangerous_into_kernel_connection`, made for kTLS): we keep the two traffic keys as bytes
//! with their sequence numbers, and rustls keeps only the TLS 1.3 key schedule, for key updates.
//! Records are then protected by rustls' own record encrypters and decrypters
//! (`MessageEncrypter`/`MessageDecrypter` of the negotiated suite), made from the key bytes for
//! one `read` or `write` and dropped after it. AES-128-GCM keys cannot be rebuilt from bytes
//! through rustls' API, so for that suite the two are made once and kept (about 1.1 KiB more per
//! connection); the server therefore prefers AES-256-GCM and ChaCha20-Poly1305 to it.
//! Ciphertext is read into the caller's buffer and decrypted there in place; what stays with the
//! connection between calls is only a partial record, plaintext the caller had no room for, and
//! records the socket has not taken.
//!
//! After the handshake the stream is its own record layer: application data both ways, the
//! peer's close_notify (EOF), user_canceled (ignored), TLS 1.3 KeyUpdate (when asked, ours goes
//! before our next application data, one for any number of requests; and before a key reaches
//! its confidentiality limit). Anything else — another
//! alert, a handshake message split over records, renegotiation, an oversized record, a record
//! that fails to decrypt — fails the connection.
//!
//! Invariants: nothing blocks — `read` returns `WouldBlock` only when the socket did; records
//! the socket could not take stay with the stream, [`Stream::wants_write`] says so and the
//! reactor asks for WRITABLE until [`Write::flush`] got them out. Buffers are bounded: a `write`
//! takes at most [`SEND_LIMIT`] bytes of plaintext and none while records are still waiting for
//! the socket; incoming, one record (a handshake flight: 64 KiB). A failed handshake or a corrupt
//! record makes `read` fail with `InvalidData` (after the handshake's alert is sent if the socket
//! takes it): the reactor closes that connection and no other. No peer input panics. The
//! handshake itself is bytes on a connection the core already timed from accept, so it counts
//! against the handshake deadline.

use super::{delegate_source, Listener, Remote, Stream};
use rustls::crypto::cipher::{
    AeadKey, InboundOpaqueMessage, Iv, MessageDecrypter, MessageEncrypter, OutboundChunks,
    OutboundPlainMessage,
};
use rustls::kernel::KernelConnection;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError};
use rustls::{ConnectionTrafficSecrets, ContentType, ProtocolVersion, SupportedCipherSuite};
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Plaintext one `write` takes (records out, kept until the socket takes them).
pub const SEND_LIMIT: usize = 32 * 1024;

/// The largest plaintext in one record.
const MAX_FRAGMENT: usize = 16 * 1024;
/// The largest record on the wire: header and ciphertext (TLS 1.2 allows 2 KiB of expansion).
const MAX_RECORD: usize = 5 + MAX_FRAGMENT + 2048;
/// Handshake bytes held while the handshake needs more (rustls takes messages up to 64 KiB).
const MAX_HANDSHAKE_BUFFER: usize = 0xffff + 4 * MAX_RECORD;

/// The ALPN protocol offered to clients.
const ALPN: &[u8] = b"http/1.1";

/// A certificate chain and its key, read from PEM files; [`TlsCerts::reload`] re-reads them and
/// new connections use the new pair (established ones keep theirs).
pub struct TlsCerts {
    certificate: PathBuf,
    key: PathBuf,
    current: Mutex<Arc<rustls::ServerConfig>>,
}

impl TlsCerts {
    /// Read both files; the error names the file and what is wrong with it.
    pub fn load(certificate: &Path, key: &Path) -> Result<Arc<TlsCerts>, String> {
        let config = server_config(certificate, key)?;
        Ok(Arc::new(TlsCerts {
            certificate: certificate.to_path_buf(),
            key: key.to_path_buf(),
            current: Mutex::new(config),
        }))
    }

    /// Re-read both files. On an error the pair in use stays in use.
    pub fn reload(&self) -> Result<(), String> {
        let config = server_config(&self.certificate, &self.key)?;
        *self
            .current
            .lock()
            .map_err(|_| "certificate store poisoned")? = config;
        Ok(())
    }

    /// The certificate file, for logs.
    pub fn certificate_path(&self) -> &Path {
        &self.certificate
    }

    fn config(&self) -> io::Result<Arc<rustls::ServerConfig>> {
        self.current
            .lock()
            .map(|c| c.clone())
            .map_err(|_| io::Error::other("certificate store poisoned"))
    }
}

/// The rustls server configuration for a chain and key in PEM files.
pub fn server_config(certificate: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certificate)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("certificate {}: {e}", certificate.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "certificate {}: no CERTIFICATE in the file",
            certificate.display()
        ));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("key {}: {e}", key.display()))?;
    let mut provider = rustls::crypto::ring::default_provider();
    // AES-128-GCM last: its keys are the ones an idle connection cannot keep as bytes
    // ([`TlsStream`]); with `ignore_client_order` below, clients get another suite they offer.
    provider.cipher_suites.sort_by_key(|s| {
        use rustls::CipherSuite as C;
        matches!(
            s.suite(),
            C::TLS13_AES_128_GCM_SHA256
                | C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            format!(
                "certificate {} with key {}: {e}",
                certificate.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    // After the handshake the stream protects records itself (see the module comment).
    config.enable_secret_extraction = true;
    // Our order of suites, not the client's (see above).
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// TLS on an IPv4 or IPv6 address.
pub struct TlsListener {
    inner: mio::net::TcpListener,
    certs: Arc<TlsCerts>,
}

impl TlsListener {
    pub fn bind(addr: SocketAddr, certs: Arc<TlsCerts>) -> io::Result<TlsListener> {
        Ok(TlsListener {
            inner: mio::net::TcpListener::bind(addr)?,
            certs,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl Listener for TlsListener {
    fn accept(&self) -> io::Result<(Box<dyn Stream>, Remote)> {
        let (tcp, addr) = self.inner.accept()?;
        tcp.set_nodelay(true)?;
        let stream = TlsStream::new(tcp, self.certs.config()?)?;
        Ok((Box::new(stream), Remote::Ip(addr)))
    }

    fn describe(&self) -> String {
        match self.inner.local_addr() {
            Ok(a) => format!("tls://{a}"),
            Err(_) => "tls://?".into(),
        }
    }
}

delegate_source!(TlsListener, inner);

/// One TLS connection: plaintext through `Read`/`Write`, records over the socket.
pub struct TlsStream {
    tcp: mio::net::TcpStream,
    phase: Phase,
    /// Bytes read and not yet processed: the start of a record, or of a handshake flight.
    incoming: Vec<u8>,
    /// Records for the socket, sent up to `sent`.
    outgoing: Vec<u8>,
    sent: usize,
    /// Plaintext decrypted and not yet read (read from `taken`).
    plaintext: Vec<u8>,
    /// Plaintext written before the handshake was done (sealed once it is).
    early: Vec<u8>,
    taken: usize,
    /// The peer's close_notify arrived: EOF once `plaintext` is read.
    peer_closed: bool,
}

enum Phase {
    Handshake(Box<UnbufferedServerConnection>),
    Traffic(Box<Traffic>),
    Failed,
}

/// The connection once the handshake is done.
struct Traffic {
    suite: SupportedCipherSuite,
    /// rustls' TLS 1.3 key schedule, for key updates (none for TLS 1.2).
    schedule: Option<KernelConnection<ServerConnectionData>>,
    tx: Direction<dyn MessageEncrypter>,
    rx: Direction<dyn MessageDecrypter>,
    /// The peer asked for a key update: ours is sent before our next application data, once
    /// for any number of requests (RFC 8446 4.6.3; rustls and BoringSSL refuse more than 32
    /// KeyUpdates between application data records).
    update_owed: bool,
}

/// One direction's key: its bytes and its record sequence number, and rustls' record protection
/// made from them while in use.
struct Direction<T: ?Sized> {
    seq: u64,
    /// None for a key rustls' API cannot rebuild from bytes (AES-128): then `live` is kept.
    bytes: Option<KeyBytes>,
    live: Option<Box<T>>,
}

/// A 32-byte traffic key and its IV, wiped when dropped.
struct KeyBytes {
    key: [u8; 32],
    iv: [u8; 12],
}

impl Drop for KeyBytes {
    fn drop(&mut self) {
        self.key.fill(0);
        self.iv.fill(0);
        // Keep the wipe: the bytes are observed after it.
        std::hint::black_box(&self.key);
        std::hint::black_box(&self.iv);
    }
}

fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, e)
}

/// A key and IV out of rustls' extracted secrets.
fn key_and_iv(secrets: ConnectionTrafficSecrets) -> Result<(AeadKey, Iv), rustls::Error> {
    match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv }
        | ConnectionTrafficSecrets::Aes256Gcm { key, iv }
        | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => Ok((key, iv)),
        _ => Err(rustls::Error::General("unsupported cipher suite".into())),
    }
}

/// How the suite makes a record encrypter or decrypter from a key and IV (TLS 1.2 splits the
/// IV into its fixed part and the explicit nonce, as rustls extracted them).
trait Protection {
    fn make(suite: SupportedCipherSuite, key: AeadKey, iv: &[u8; 12]) -> Box<Self>;
}

impl Protection for dyn MessageEncrypter {
    fn make(suite: SupportedCipherSuite, key: AeadKey, iv: &[u8; 12]) -> Box<Self> {
        match suite {
            SupportedCipherSuite::Tls13(s) => s.aead_alg.encrypter(key, Iv::new(*iv)),
            SupportedCipherSuite::Tls12(s) => {
                let fixed = s.aead_alg.key_block_shape().fixed_iv_len.min(iv.len());
                let (fixed, explicit) = iv.split_at(fixed);
                s.aead_alg.encrypter(key, fixed, explicit)
            }
        }
    }
}

impl Protection for dyn MessageDecrypter {
    fn make(suite: SupportedCipherSuite, key: AeadKey, iv: &[u8; 12]) -> Box<Self> {
        match suite {
            SupportedCipherSuite::Tls13(s) => s.aead_alg.decrypter(key, Iv::new(*iv)),
            SupportedCipherSuite::Tls12(s) => {
                let fixed = s.aead_alg.key_block_shape().fixed_iv_len.min(iv.len());
                s.aead_alg.decrypter(key, &iv[..fixed])
            }
        }
    }
}

impl<T: ?Sized + Protection> Direction<T> {
    fn new(
        suite: SupportedCipherSuite,
        (seq, secrets): (u64, ConnectionTrafficSecrets),
    ) -> Result<Self, rustls::Error> {
        let (key, iv) = key_and_iv(secrets)?;
        let mut iv_bytes = [0u8; 12];
        iv_bytes.copy_from_slice(iv.as_ref());
        Ok(match <[u8; 32]>::try_from(key.as_ref()) {
            Ok(k) => Direction {
                seq,
                bytes: Some(KeyBytes {
                    key: k,
                    iv: iv_bytes,
                }),
                live: None,
            },
            Err(_) => Direction {
                seq,
                bytes: None,
                live: Some(T::make(suite, key, &iv_bytes)),
            },
        })
    }

    /// rustls' record protection for this key, made from the bytes if it is not live.
    fn live(&mut self, suite: SupportedCipherSuite) -> Result<&mut T, rustls::Error> {
        if let (None, Some(b)) = (&self.live, &self.bytes) {
            self.live = Some(T::make(suite, AeadKey::from(b.key), &b.iv));
        }
        self.live
            .as_deref_mut()
            .ok_or(rustls::Error::General("no traffic key".into()))
    }

    /// Drop the record protection if it can be made again.
    fn release(&mut self) {
        if self.bytes.is_some() {
            self.live = None;
        }
    }

    /// Bytes of record protection held that `release` would free.
    fn releasable(&self) -> usize {
        match (&self.bytes, &self.live) {
            (Some(_), Some(l)) => std::mem::size_of_val(&**l),
            _ => 0,
        }
    }
}

/// TLS 1.3 KeyUpdate (handshake type 24), update not requested.
const KEY_UPDATE: [u8; 5] = [24, 0, 0, 1, 0];

impl Traffic {
    fn new(conn: UnbufferedServerConnection) -> Result<Traffic, rustls::Error> {
        let (secrets, kernel) = conn.dangerous_into_kernel_connection()?;
        let suite = kernel.negotiated_cipher_suite();
        let tls13 = kernel.protocol_version() == ProtocolVersion::TLSv1_3;
        Ok(Traffic {
            suite,
            schedule: tls13.then_some(kernel),
            tx: Direction::new(suite, secrets.tx)?,
            rx: Direction::new(suite, secrets.rx)?,
            update_owed: false,
        })
    }

    fn confidentiality_limit(&self) -> u64 {
        match self.suite {
            SupportedCipherSuite::Tls13(s) => s.common.confidentiality_limit,
            SupportedCipherSuite::Tls12(s) => s.common.confidentiality_limit,
        }
    }

    /// Encrypt `plain` as records of type `typ` onto `out`.
    fn seal(
        &mut self,
        typ: ContentType,
        plain: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), rustls::Error> {
        for chunk in plain.chunks(MAX_FRAGMENT) {
            if self.update_owed || self.tx.seq.saturating_add(2) >= self.confidentiality_limit() {
                self.update_tx(out)?;
            }
            self.seal_one(typ, chunk, out)?;
        }
        Ok(())
    }

    fn seal_one(
        &mut self,
        typ: ContentType,
        chunk: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), rustls::Error> {
        let msg = OutboundPlainMessage {
            typ,
            version: ProtocolVersion::TLSv1_2,
            payload: OutboundChunks::Single(chunk),
        };
        let seq = self.tx.seq;
        let record = self.tx.live(self.suite)?.encrypt(msg, seq)?.encode();
        self.tx.seq += 1;
        if out.is_empty() {
            *out = record;
        } else {
            out.extend_from_slice(&record);
        }
        Ok(())
    }

    /// Tell the peer our key changes (under the old key), then change it.
    fn update_tx(&mut self, out: &mut Vec<u8>) -> Result<(), rustls::Error> {
        let Some(schedule) = &mut self.schedule else {
            return Err(rustls::Error::EncryptError);
        };
        let next = schedule.update_tx_secret()?;
        self.seal_one(ContentType::Handshake, &KEY_UPDATE, out)?;
        self.tx = Direction::new(self.suite, next)?;
        self.update_owed = false;
        Ok(())
    }

    /// A handshake record after the handshake: a TLS 1.3 KeyUpdate, alone in its record (a
    /// new key starts with the next record); anything else fails the connection.
    fn handshake_message(&mut self, msg: &[u8]) -> io::Result<()> {
        let (request, Some(schedule)) = (msg, &mut self.schedule) else {
            return Err(invalid("handshake message after a TLS 1.2 handshake"));
        };
        let request = match request {
            [24, 0, 0, 1, r @ (0 | 1)] => *r == 1,
            _ => return Err(invalid("unexpected handshake message after the handshake")),
        };
        let next = schedule.update_rx_secret().map_err(invalid)?;
        self.rx = Direction::new(self.suite, next).map_err(invalid)?;
        self.update_owed |= request;
        Ok(())
    }

    /// Decrypt one whole record in place: its type and where its plaintext now is in it.
    fn open(&mut self, record: &mut [u8]) -> io::Result<(ContentType, std::ops::Range<usize>)> {
        let typ = ContentType::from(record[0]);
        if self.schedule.is_some() && typ != ContentType::ApplicationData {
            return Err(invalid("TLS 1.3 record not of type application data"));
        }
        let version = ProtocolVersion::from(u16::from_be_bytes([record[1], record[2]]));
        let base = record.as_ptr() as usize;
        let seq = self.rx.seq;
        let opener = self.rx.live(self.suite).map_err(invalid)?;
        let plain = opener
            .decrypt(
                InboundOpaqueMessage::new(typ, version, &mut record[5..]),
                seq,
            )
            .map_err(invalid)?;
        self.rx.seq += 1;
        if plain.payload.len() > MAX_FRAGMENT {
            return Err(invalid("record too large"));
        }
        // Decrypted in place: the plaintext lies inside the record.
        let start = (plain.payload.as_ptr() as usize)
            .checked_sub(base)
            .ok_or_else(|| invalid("plaintext outside its record"))?;
        Ok((plain.typ, start..start + plain.payload.len()))
    }
}

/// The length of the whole record at the start of `bytes`, if it is all there.
fn whole_record(bytes: &[u8]) -> io::Result<Option<usize>> {
    let Some(h) = bytes.get(..5) else {
        return Ok(None);
    };
    let len = 5 + usize::from(u16::from_be_bytes([h[3], h[4]]));
    if len > MAX_RECORD {
        return Err(invalid("record too large"));
    }
    Ok((bytes.len() >= len).then_some(len))
}

impl TlsStream {
    /// A server connection over an accepted socket (public for the fuzz target, which drives
    /// it over an in-memory socket; [`TlsListener`] makes them).
    #[doc(hidden)]
    pub fn new(
        tcp: mio::net::TcpStream,
        config: Arc<rustls::ServerConfig>,
    ) -> io::Result<TlsStream> {
        let conn = UnbufferedServerConnection::new(config).map_err(io::Error::other)?;
        Ok(TlsStream {
            tcp,
            phase: Phase::Handshake(Box::new(conn)),
            incoming: Vec::new(),
            outgoing: Vec::new(),
            sent: 0,
            plaintext: Vec::new(),
            early: Vec::new(),
            taken: 0,
            peer_closed: false,
        })
    }

    /// Bytes the stream holds that an idle connection does not need: its buffers, record
    /// protection made for the last call, rustls' whole connection while the handshake lasts.
    /// Zero once the handshake is done, its records sent and the plaintext read.
    pub fn held_bytes(&self) -> usize {
        let phase = match &self.phase {
            Phase::Handshake(c) => std::mem::size_of_val(&**c),
            Phase::Traffic(t) => t.tx.releasable() + t.rx.releasable(),
            Phase::Failed => 0,
        };
        phase
            + self.incoming.capacity()
            + self.outgoing.capacity()
            + self.plaintext.capacity()
            + self.early.capacity()
    }

    /// Move pending records to the socket until it would block.
    fn send(&mut self) -> io::Result<()> {
        while self.sent < self.outgoing.len() {
            match self.tcp.write(&self.outgoing[self.sent..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Give back what an idle connection does not need (after every call).
    fn release(&mut self) {
        if self.sent >= self.outgoing.len() {
            self.outgoing = Vec::new();
            self.sent = 0;
        }
        if self.taken >= self.plaintext.len() {
            self.plaintext = Vec::new();
            self.taken = 0;
        }
        if self.incoming.is_empty() {
            self.incoming = Vec::new();
        }
        if let Phase::Traffic(t) = &mut self.phase {
            t.tx.release();
            t.rx.release();
        }
    }

    /// Read more handshake bytes from the socket.
    fn read_handshake(&mut self) -> io::Result<usize> {
        if self.incoming.len() >= MAX_HANDSHAKE_BUFFER {
            return Err(invalid("handshake too large"));
        }
        let start = self.incoming.len();
        self.incoming.resize(start + 8192, 0);
        let read = self.tcp.read(&mut self.incoming[start..]);
        self.incoming.truncate(start + *read.as_ref().unwrap_or(&0));
        read
    }

    /// Let rustls take the handshake bytes that arrived; what it answers goes to `outgoing`.
    /// True once the handshake is done (the stream then protects records itself), false when
    /// it needs more bytes.
    fn handshake(&mut self) -> io::Result<bool> {
        let TlsStream {
            phase,
            incoming,
            outgoing,
            plaintext,
            peer_closed,
            ..
        } = self;
        let Phase::Handshake(conn) = phase else {
            return Ok(true);
        };
        let done = loop {
            let status = conn.process_tls_records(incoming);
            let discard = status.discard;
            let step = match status.state {
                Ok(ConnectionState::EncodeTlsData(mut e)) => encode(outgoing, |b| e.encode(b)),
                Ok(ConnectionState::TransmitTlsData(t)) => {
                    // Sent from `outgoing` as the socket takes it.
                    t.done();
                    Ok(None)
                }
                Ok(ConnectionState::ReadTraffic(mut r)) => {
                    let mut step = Ok(None);
                    while let Some(record) = r.next_record() {
                        match record {
                            Ok(record) => plaintext.extend_from_slice(record.payload),
                            Err(e) => {
                                step = Err(e);
                                break;
                            }
                        }
                    }
                    step
                }
                Ok(ConnectionState::BlockedHandshake) => Ok(Some(false)),
                Ok(ConnectionState::WriteTraffic(_)) => Ok(Some(!conn.is_handshaking())),
                Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => {
                    *peer_closed = true;
                    Ok(Some(false))
                }
                // No early data is accepted; nothing else is expected.
                Ok(_) => Err(rustls::Error::General("unexpected handshake state".into())),
                Err(e) => Err(e),
            };
            incoming.drain(..discard.min(incoming.len()));
            match step {
                Ok(None) => {}
                Ok(Some(done)) => break done,
                Err(e) => {
                    // rustls queued an alert saying why (after any records of the flight):
                    // each call hands out one queued record before it looks at the bytes again,
                    // so call only while some are queued. Sent if the socket takes them.
                    while conn.wants_write() {
                        let Ok(ConnectionState::EncodeTlsData(mut a)) =
                            conn.process_tls_records(incoming).state
                        else {
                            break;
                        };
                        if encode(outgoing, |b| a.encode(b)).is_err() {
                            break;
                        }
                    }
                    self.phase = Phase::Failed;
                    let _ = self.send();
                    return Err(invalid(e));
                }
            }
        };
        if !done || *peer_closed {
            return Ok(false);
        }
        let Phase::Handshake(conn) = std::mem::replace(&mut self.phase, Phase::Failed) else {
            return Ok(true);
        };
        let mut traffic = Box::new(Traffic::new(*conn).map_err(invalid)?);
        let early = std::mem::take(&mut self.early);
        traffic
            .seal(ContentType::ApplicationData, &early, &mut self.outgoing)
            .map_err(invalid)?;
        self.phase = Phase::Traffic(traffic);
        Ok(true)
    }

    /// Read and decrypt records into `buf` (at least one record long): the plaintext's length.
    fn read_records(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Phase::Traffic(t) = &mut self.phase else {
            return Err(invalid("connection failed"));
        };
        let mut have = self.incoming.len();
        if have > buf.len() {
            return Err(invalid("record too large"));
        }
        buf[..have].copy_from_slice(&self.incoming);
        self.incoming = Vec::new();
        let (mut start, mut out) = (0, 0);
        let stop = loop {
            while let Some(len) = whole_record(&buf[start..have])? {
                let (typ, plain) = t.open(&mut buf[start..start + len])?;
                let plain = start + plain.start..start + plain.end;
                start += len;
                match typ {
                    ContentType::ApplicationData => {
                        buf.copy_within(plain.clone(), out);
                        out += plain.len();
                    }
                    ContentType::Alert => match buf[plain] {
                        [_, 0] => {
                            self.peer_closed = true;
                            break;
                        }
                        [_, 90] => {} // user_canceled: close_notify follows
                        _ => return Err(invalid("TLS alert from the peer")),
                    },
                    ContentType::Handshake => t.handshake_message(&buf[plain])?,
                    _ => return Err(invalid("unexpected record after the handshake")),
                }
            }
            if out > 0 || self.peer_closed {
                break Ok(out);
            }
            buf.copy_within(start..have, 0);
            (have, start) = (have - start, 0);
            if have == buf.len() {
                return Err(invalid("record too large"));
            }
            match self.tcp.read(&mut buf[have..]) {
                // The socket ended (a partial record is dropped): EOF.
                Ok(0) => return Ok(0),
                Ok(n) => have += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        if start < have {
            self.incoming = buf[start..have].to_vec();
        }
        // The handshake's last records (and data written during it) leave at once.
        self.send()?;
        stop
    }

    fn read_inner(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.taken < self.plaintext.len() {
                let n = buf.len().min(self.plaintext.len() - self.taken);
                buf[..n].copy_from_slice(&self.plaintext[self.taken..self.taken + n]);
                self.taken += n;
                return Ok(n);
            }
            if self.peer_closed {
                return Ok(0);
            }
            match &self.phase {
                Phase::Failed => return Err(invalid("connection failed")),
                Phase::Traffic(_) if buf.len() >= MAX_RECORD => return self.read_records(buf),
                Phase::Traffic(_) => {
                    // A buffer too small for a record: decrypt into one, keep the rest.
                    let mut record = vec![0; MAX_RECORD];
                    let n = self.read_records(&mut record)?;
                    record.truncate(n);
                    self.plaintext = record;
                    self.taken = 0;
                    if n == 0 {
                        return Ok(0);
                    }
                }
                Phase::Handshake(_) => {
                    if self.handshake()? {
                        continue;
                    }
                    // Handshake replies leave at once.
                    self.send()?;
                    if self.taken < self.plaintext.len() || self.peer_closed {
                        continue;
                    }
                    match self.read_handshake() {
                        Ok(0) => return Ok(0),
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }

    fn write_inner(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send()?;
        if self.wants_write() {
            // The socket has not taken the last records: take no more plaintext.
            return Err(ErrorKind::WouldBlock.into());
        }
        let t = match &mut self.phase {
            Phase::Traffic(t) => t,
            // Kept until the handshake is done (a refusal the core sends at once, unless the
            // connection is closed first).
            Phase::Handshake(_) => {
                let n = buf.len().min(SEND_LIMIT.saturating_sub(self.early.len()));
                if n == 0 && !buf.is_empty() {
                    return Err(ErrorKind::WouldBlock.into());
                }
                self.early.extend_from_slice(&buf[..n]);
                return Ok(n);
            }
            Phase::Failed => return Err(invalid("connection failed")),
        };
        let n = buf.len().min(SEND_LIMIT);
        t.seal(ContentType::ApplicationData, &buf[..n], &mut self.outgoing)
            .map_err(invalid)?;
        self.send()?;
        Ok(n)
    }
}

/// Append what `f` encodes to `out`, growing it to the size rustls asks for.
fn encode(
    out: &mut Vec<u8>,
    mut f: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) -> Result<Option<bool>, rustls::Error> {
    let start = out.len();
    let mut need = 0;
    for _ in 0..2 {
        out.resize(start + need, 0);
        match f(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(None);
            }
            Err(EncodeError::InsufficientSize(s)) => need = s.required_size,
            Err(e) => {
                out.truncate(start);
                return Err(rustls::Error::General(e.to_string()));
            }
        }
    }
    out.truncate(start);
    Err(rustls::Error::General(
        "handshake record not encoded".into(),
    ))
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.read_inner(buf);
        if matches!(&read, Err(e) if e.kind() != ErrorKind::WouldBlock) {
            self.phase = Phase::Failed;
        }
        self.release();
        read
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.write_inner(buf);
        self.release();
        written
    }

    fn flush(&mut self) -> io::Result<()> {
        let sent = self.send();
        self.release();
        sent
    }
}

impl Stream for TlsStream {
    fn shutdown_write(&self) -> io::Result<()> {
        // The peer reads a plain EOF, which clients accept after the WebSocket close handshake
        // or an HTTP response with `Connection: close`.
        self.tcp.shutdown(std::net::Shutdown::Write)
    }

    fn wants_write(&self) -> bool {
        self.sent < self.outgoing.len()
    }
}

delegate_source!(TlsStream, tcp);

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use std::net::TcpStream as StdTcp;

    /// A server configuration (ours, from PEM files) and a client that trusts its certificate,
    /// offering `suite` only when given.
    fn configs(
        suite: Option<SupportedCipherSuite>,
    ) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        let dir = std::env::temp_dir().join(format!(
            "edge-tls-unit-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("c.pem"), cert.pem()).expect("write");
        std::fs::write(dir.join("k.pem"), key.serialize_pem()).expect("write");
        let server = server_config(&dir.join("c.pem"), &dir.join("k.pem")).expect("config");
        let _ = std::fs::remove_dir_all(&dir);
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).expect("root");
        let mut provider = rustls::crypto::ring::default_provider();
        if let Some(s) = suite {
            provider.cipher_suites = vec![s];
        }
        let versions: &[&rustls::SupportedProtocolVersion] = match suite {
            Some(SupportedCipherSuite::Tls12(_)) => &[&rustls::version::TLS12],
            _ => &[&rustls::version::TLS13],
        };
        let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(versions)
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![ALPN.to_vec()];
        (server, Arc::new(client))
    }

    /// A rustls client over a non-blocking socket, and our stream at the other end; both are
    /// stepped by hand from this one thread.
    struct Pair {
        client: rustls::ClientConnection,
        sock: StdTcp,
        server: TlsStream,
        /// Plaintext the server read.
        at_server: Vec<u8>,
        /// Plaintext the client read.
        at_client: Vec<u8>,
    }

    impl Pair {
        fn new(suite: Option<SupportedCipherSuite>) -> Pair {
            let (server_config, client_config) = configs(suite);
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let sock = StdTcp::connect(listener.local_addr().expect("addr")).expect("connect");
            sock.set_nonblocking(true).expect("non-blocking");
            let (accepted, _) = listener.accept().expect("accept");
            accepted.set_nonblocking(true).expect("non-blocking");
            let tcp = mio::net::TcpStream::from_std(accepted);
            let name = ServerName::try_from("localhost").expect("name");
            let mut pair = Pair {
                client: rustls::ClientConnection::new(client_config, name).expect("client"),
                sock,
                server: TlsStream::new(tcp, server_config).expect("server"),
                at_server: Vec::new(),
                at_client: Vec::new(),
            };
            pair.until("the handshake", |p| {
                !p.client.is_handshaking() && matches!(p.server.phase, Phase::Traffic(_))
            });
            pair
        }

        /// One step: the client sends what it has and reads what came; the server reads until
        /// the socket would block.
        fn step(&mut self) {
            while self.client.wants_write() {
                match self.client.write_tls(&mut self.sock) {
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("client write: {e}"),
                }
            }
            loop {
                match self.client.read_tls(&mut self.sock) {
                    Ok(0) => break,
                    Ok(_) => {
                        self.client.process_new_packets().expect("client records");
                        let mut r = self.client.reader();
                        let _ = r.read_to_end(&mut self.at_client);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("client read: {e}"),
                }
            }
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match self.server.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => self.at_server.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("server read: {e}"),
                }
            }
            self.server.flush().expect("server flush");
            std::thread::sleep(std::time::Duration::from_micros(200));
        }

        fn until(&mut self, what: &str, mut done: impl FnMut(&mut Pair) -> bool) {
            for _ in 0..20_000 {
                if done(self) {
                    return;
                }
                self.step();
            }
            panic!("{what} did not happen");
        }

        /// The server writes all of `data` as the socket takes it, the client reading it.
        fn server_sends(&mut self, data: &[u8]) {
            let (mut at, want) = (0, self.at_client.len() + data.len());
            self.until("the server's data arriving", |p| {
                while at < data.len() {
                    match p.server.write(&data[at..]) {
                        Ok(n) => at += n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => panic!("server write: {e}"),
                    }
                }
                p.at_client.len() >= want
            });
        }

        /// The client writes all of `data`, the server reading it.
        fn client_sends(&mut self, data: &[u8]) {
            let (mut at, want) = (0, self.at_server.len() + data.len());
            self.until("the client's data arriving", |p| {
                // rustls takes what its buffer limit allows; the rest on later steps.
                at += p.client.writer().write(&data[at..]).expect("client write");
                p.at_server.len() >= want
            });
        }
    }

    fn pattern(n: usize, salt: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 + i / 977 + salt) as u8).collect()
    }

    #[test]
    fn an_idle_connection_holds_no_buffers_and_no_expanded_keys() {
        let mut p = Pair::new(None);
        p.client_sends(b"GET / HTTP/1.1\r\n\r\n");
        p.server_sends(b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
        p.step();
        assert_eq!(p.at_server, b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(p.at_client, b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
        assert!(!p.server.wants_write());
        assert_eq!(p.server.held_bytes(), 0, "an idle connection holds buffers");
    }

    #[test]
    fn data_larger_than_any_buffer_crosses_both_ways_with_a_slow_reader() {
        let mut p = Pair::new(None);
        let up = pattern(300 * 1024 + 17, 1);
        p.client_sends(&up);
        assert!(
            p.at_server == up,
            "the server read other bytes than were sent"
        );
        assert_eq!(p.server.held_bytes(), 0);
        // The client does not read for a while: the server's writes stop at WouldBlock with
        // records kept, and go on once it reads again.
        let down = pattern(24 * 1024 * 1024 + 5, 2);
        let mut at = 0;
        while at < down.len() {
            match p.server.write(&down[at..]) {
                Ok(n) => at += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("server write: {e}"),
            }
        }
        assert!(at < down.len(), "the socket took 24 MiB without a reader");
        assert!(
            p.server.wants_write(),
            "records the socket did not take are kept"
        );
        p.until("the rest arriving", |p| {
            while at < down.len() {
                match p.server.write(&down[at..]) {
                    Ok(n) => at += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("server write: {e}"),
                }
            }
            p.at_client.len() >= down.len()
        });
        assert!(
            p.at_client == down,
            "the client read other bytes than were sent"
        );
        p.step();
        assert_eq!(p.server.held_bytes(), 0, "buffers kept after the burst");
    }

    #[test]
    fn key_updates_asked_by_the_client_are_answered_and_data_flows_on() {
        let mut p = Pair::new(None);
        for round in 0..3 {
            // rustls asks for the peer's update too: our answer changes our key.
            p.client.refresh_traffic_keys().expect("key update");
            let up = pattern(40_000, round);
            p.client_sends(&up);
            let down = pattern(50_000, round + 10);
            p.server_sends(&down);
            assert!(
                p.at_client.ends_with(&down),
                "round {round}: wrong bytes after the update"
            );
        }
        let Phase::Traffic(t) = &p.server.phase else {
            panic!("not in traffic");
        };
        // Each update restarts the sequence numbers: few records since the last one.
        assert!(t.rx.seq < 10 && t.tx.seq < 10, "keys were not updated");
        assert_eq!(p.server.held_bytes(), 0);
    }

    #[test]
    fn many_key_update_requests_while_silent_get_one_answer() {
        // rustls, like BoringSSL, refuses more than 32 KeyUpdates between application data
        // records: answering each request at once broke the connection (found by fuzzing).
        let mut p = Pair::new(None);
        for _ in 0..40 {
            p.client.refresh_traffic_keys().expect("key update");
        }
        p.client_sends(b"after the updates");
        p.server_sends(b"the answer");
        assert_eq!(p.at_server, b"after the updates");
        assert_eq!(p.at_client, b"the answer");
        let Phase::Traffic(t) = &p.server.phase else {
            panic!("not in traffic");
        };
        assert!(
            t.tx.seq < 3,
            "one update before the answer, not one per request"
        );
    }

    #[test]
    fn every_suite_of_tls_1_2_and_1_3_carries_data_both_ways() {
        for suite in rustls::crypto::ring::default_provider().cipher_suites {
            if format!("{:?}", suite.suite()).contains("_RSA_") {
                continue; // the test certificate is ECDSA
            }
            let mut p = Pair::new(Some(suite));
            p.client_sends(&pattern(20_000, 3));
            p.server_sends(&pattern(20_000, 4));
            assert_eq!(p.client.negotiated_cipher_suite(), Some(suite));
            assert!(p.at_client == pattern(20_000, 4), "{suite:?}");
            assert!(p.at_server == pattern(20_000, 3), "{suite:?}");
            assert_eq!(p.server.held_bytes(), 0, "{suite:?}");
        }
    }

    #[test]
    fn a_tampered_record_fails_the_connection_and_close_notify_ends_it() {
        let mut p = Pair::new(None);
        p.client_sends(b"before");
        p.client.send_close_notify();
        p.until("EOF at the server", |p| {
            let mut b = [0u8; MAX_RECORD];
            matches!(p.server.read(&mut b), Ok(0))
        });
        let mut q = Pair::new(None);
        q.client.writer().write_all(b"x").expect("write");
        let mut wire = Vec::new();
        while q.client.wants_write() {
            q.client.write_tls(&mut wire).expect("records");
        }
        let last = wire.len() - 1;
        wire[last] ^= 1;
        q.sock.write_all(&wire).expect("send");
        let mut b = [0u8; MAX_RECORD];
        for _ in 0..2000 {
            match q.server.read(&mut b) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::InvalidData, "{e}");
                    return;
                }
                Ok(n) => panic!("a tampered record was read as {n} bytes"),
            }
        }
        panic!("the tampered record was never refused");
    }

    /// Read at the server until it fails, ends, or `want` bytes came: Err(kind) or the bytes.
    fn server_outcome(p: &mut Pair, want: usize, case: usize) -> Result<Vec<u8>, ErrorKind> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        for _ in 0..2000 {
            match p.server.read(&mut buf) {
                Ok(0) => return Ok(got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if got.len() >= want {
                        return Ok(got);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => return Err(e.kind()),
            }
        }
        panic!("case {case}: the server neither read, failed nor ended");
    }

    #[test]
    fn garbage_after_the_handshake_fails_the_connection_and_never_panics() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let suites = [
            None,
            rustls::crypto::ring::default_provider()
                .cipher_suites
                .into_iter()
                .find(|s| matches!(s, SupportedCipherSuite::Tls12(_))),
        ];
        for case in 0..48 {
            let mut p = Pair::new(suites[case % 2]);
            // A real record of 600 bytes of plaintext, to damage.
            let sent = pattern(600, case);
            p.client.writer().write_all(&sent).expect("write");
            let mut record = Vec::new();
            while p.client.wants_write() {
                p.client.write_tls(&mut record).expect("records");
            }
            let r = next() as usize;
            let wire: Vec<u8> = match case % 6 {
                // Random bytes.
                0 => (0..1 + r % 3000).map(|_| next() as u8).collect(),
                // A plausible header with any length, then random bytes.
                1 => {
                    let mut w = vec![23, 3, 3, (r >> 8) as u8, r as u8];
                    w.extend((0..r % 20_000).map(|_| next() as u8));
                    w
                }
                // The real record with one bit flipped anywhere.
                2 | 3 => {
                    let at = r % record.len();
                    record[at] ^= 1 << (next() % 8);
                    record
                }
                // Plaintext alert and change_cipher_spec records.
                4 => vec![21, 3, 3, 0, 2, 2, 40, 20, 3, 3, 0, 1, 1],
                // The real record cut short, then the socket ends.
                _ => {
                    record.truncate(r % record.len());
                    record
                }
            };
            p.sock.write_all(&wire).expect("send");
            // Bytes that may be the start of a record the server must wait for: then the end.
            let ends = matches!(case % 6, 0 | 1 | 5);
            if ends {
                p.sock
                    .shutdown(std::net::Shutdown::Write)
                    .expect("shutdown");
            }
            match server_outcome(&mut p, sent.len(), case) {
                Err(kind) => assert_eq!(kind, ErrorKind::InvalidData, "case {case}"),
                // Only what was sent may come out: a flipped bit the record layer ignores (the
                // TLS 1.3 legacy version field), or nothing before the end of the stream.
                Ok(got) => assert!(
                    got == sent || (got.is_empty() && ends),
                    "case {case}: read {} bytes that were not sent",
                    got.len()
                ),
            }
        }
    }
}
