//! Transport layer: TLS over TCP, with rustls (the `ring` provider), so `wss://` and `https://`
//! are served by the box itself.
//!
//! Owns the TCP listener, the certificate store ([`TlsCerts`]: a chain and a key read from PEM
//! files, re-readable while running) and, per connection, a [`TlsStream`]: a
//! `mio::net::TcpStream` and a `rustls::ServerConnection`. rustls is sans-IO; the stream drives
//! it over the non-blocking socket from inside `read`/`write`, so the reactor sees plaintext and
//! nothing else changes for it. TLS 1.2 and 1.3; ALPN `http/1.1` (a client that offers ALPN
//! without it is refused).
//!
//! Invariants: nothing blocks — `read` returns `WouldBlock` only when the socket did; handshake
//! records the socket could not take stay in rustls, [`Stream::wants_write`] says so and the
//! reactor asks for WRITABLE until [`Write::flush`] got them out. Buffers are bounded: rustls'
//! outgoing buffer by [`SEND_LIMIT`] (a `write` takes no plaintext while encrypted bytes are still
//! waiting for the socket), its incoming buffer by one TLS record. A failed handshake or a
//! corrupt record makes `read` fail with `InvalidData` (after the alert is sent if the socket
//! takes it): the reactor closes that connection and no other. The handshake itself is bytes on
//! a connection the core already timed from accept, so it counts against the handshake deadline.

use super::{delegate_source, Listener, Remote, Stream};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Encrypted bytes rustls may hold for one connection (plaintext in, records out).
pub const SEND_LIMIT: usize = 32 * 1024;

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
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
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
        let mut tls =
            rustls::ServerConnection::new(self.certs.config()?).map_err(io::Error::other)?;
        tls.set_buffer_limit(Some(SEND_LIMIT));
        Ok((Box::new(TlsStream { tcp, tls }), Remote::Ip(addr)))
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
    tls: rustls::ServerConnection,
}

impl TlsStream {
    /// Move pending records to the socket until it would block.
    fn send(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.tcp) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(buf) {
                Ok(n) => return Ok(n), // 0: the peer's close_notify
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                // The socket ended without close_notify: an EOF like any other.
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            match self.tls.read_tls(&mut self.tcp) {
                Ok(0) => return Ok(0),
                Ok(_) => {
                    if let Err(e) = self.tls.process_new_packets() {
                        // Tell the peer why (best effort), then fail this connection only.
                        let _ = self.send();
                        return Err(io::Error::new(ErrorKind::InvalidData, e));
                    }
                    // Handshake replies (and key updates) leave at once.
                    self.send()?;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.send()?;
                    return Err(e);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send()?;
        if self.tls.wants_write() {
            // The socket has not taken the last records: take no more plaintext.
            return Err(ErrorKind::WouldBlock.into());
        }
        let n = self.tls.writer().write(buf)?;
        self.send()?;
        if n == 0 && !buf.is_empty() {
            return Err(ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

impl Stream for TlsStream {
    fn shutdown_write(&self) -> io::Result<()> {
        // close_notify needs `&mut`; the peer reads a plain EOF, which clients accept after
        // the WebSocket close handshake or an HTTP response with `Connection: close`.
        self.tcp.shutdown(std::net::Shutdown::Write)
    }

    fn wants_write(&self) -> bool {
        self.tls.wants_write()
    }
}

delegate_source!(TlsStream, tcp);
