//! Transport layer: the client side of TLS, for the box's own outbound requests to `https://`
//! app servers (webhooks).
//!
//! Owns, per outbound connection, a [`TlsClientStream`]: a `mio::net::TcpStream` and rustls'
//! buffered `ClientConnection`, driven from inside `read`/`write` so the reactor sees plaintext
//! and nothing else changes for it; and the trust a connection verifies against
//! ([`client_config`]): the system's CA bundle, or one CA file an operator names for an app.
//! Outbound connections are few and short (one request, one response), so the simple buffered
//! API is used here, not the server side's record layer of its own.
//!
//! Invariants: nothing blocks — `read` returns `WouldBlock` only when the socket did; records
//! the socket could not take stay with the connection, [`Stream::wants_write`] says so and the
//! reactor asks for WRITABLE until [`Write::flush`] got them out. A certificate the trust does
//! not accept fails the connection with `InvalidData` whose reason [`failure_reason`] names
//! (`unknown issuer`, `expired`, `not valid for the name`...). The server name sent (SNI) and
//! verified is the URL's host. No peer input panics.

use super::{delegate_source, Stream};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConnection};
use std::io::{self, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the system's CA bundle is looked for when `SSL_CERT_FILE` does not name one (Debian
/// and Ubuntu, Fedora and RHEL, Alpine and the BSDs).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The system's CA bundle: `SSL_CERT_FILE` if set, else the first of [`SYSTEM_BUNDLES`] there.
pub fn system_bundle() -> Option<PathBuf> {
    if let Some(f) = std::env::var_os("SSL_CERT_FILE").filter(|f| !f.is_empty()) {
        return Some(PathBuf::from(f));
    }
    SYSTEM_BUNDLES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// The rustls client configuration trusting the CAs of `ca_file` (PEM), or the system's bundle
/// when `None`. The error names the file and what is wrong with it.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let file = match ca_file {
        Some(f) => f.to_path_buf(),
        None => system_bundle().ok_or_else(|| {
            format!(
                "no system CA bundle (SSL_CERT_FILE unset, none of {})",
                SYSTEM_BUNDLES.join(", ")
            )
        })?,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&file)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("CA file {}: {e}", file.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    // A system bundle may hold a certificate webpki cannot use; the others still count.
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!(
            "CA file {}: no usable CERTIFICATE in the file",
            file.display()
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// One outbound TLS connection: plaintext through `Read`/`Write`, records over the socket.
pub struct TlsClientStream {
    tcp: mio::net::TcpStream,
    conn: ClientConnection,
}

impl TlsClientStream {
    /// Start the handshake with `host` (its name is sent as SNI and the certificate checked
    /// against it; an IP address is checked against the certificate's IP addresses).
    pub fn new(
        tcp: mio::net::TcpStream,
        config: Arc<rustls::ClientConfig>,
        host: &str,
    ) -> io::Result<TlsClientStream> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(ErrorKind::InvalidInput, e))?;
        let conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
        Ok(TlsClientStream { tcp, conn })
    }

    /// Send what rustls has for the socket, until it has nothing or the socket is full.
    fn send_pending(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.tcp) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Read for TlsClientStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                // A peer that closed without close_notify: the response parser decides whether
                // what came is complete (a Content-Length or chunked body cut short is refused).
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if self.conn.read_tls(&mut self.tcp)? == 0 {
                return Ok(0);
            }
            if let Err(e) = self.conn.process_new_packets() {
                // Our alert goes out if the socket takes it.
                let _ = self.send_pending();
                return Err(io::Error::new(ErrorKind::InvalidData, e));
            }
            // The handshake's next flight, or our request once the handshake is done.
            self.send_pending()?;
        }
    }
}

impl Write for TlsClientStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Plaintext is held by rustls until the handshake is done (bounded by its buffer limit).
        let n = self.conn.writer().write(buf)?;
        self.send_pending()?;
        if n == 0 && !buf.is_empty() {
            return Err(ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_pending()
    }
}

impl Stream for TlsClientStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.tcp.shutdown(std::net::Shutdown::Write)
    }

    fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }
}

delegate_source!(TlsClientStream, tcp);

/// Why a TLS client connection failed, for the log, the metrics and the operator page: `None`
/// when `err` is no TLS failure (a reset, a refused connection).
pub fn failure_reason(err: &io::Error) -> Option<&'static str> {
    let e = err.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => "TLS: certificate signed by an unknown issuer",
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "TLS: certificate expired"
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "TLS: certificate not valid yet"
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "TLS: certificate not valid for the host name"
            }
            CertificateError::Revoked => "TLS: certificate revoked",
            _ => "TLS: bad certificate",
        },
        rustls::Error::AlertReceived(_) => "TLS: handshake refused by the server",
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            "TLS: the server does not speak TLS"
        }
        _ => "TLS: handshake failed",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_named_and_other_errors_are_not_tls() {
        let tls = |e: rustls::Error| failure_reason(&io::Error::new(ErrorKind::InvalidData, e));
        assert_eq!(
            tls(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            )),
            Some("TLS: certificate signed by an unknown issuer")
        );
        assert_eq!(
            tls(rustls::Error::InvalidCertificate(CertificateError::Expired)),
            Some("TLS: certificate expired")
        );
        assert_eq!(
            tls(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName
            )),
            Some("TLS: certificate not valid for the host name")
        );
        assert_eq!(
            tls(rustls::Error::DecryptError),
            Some("TLS: handshake failed")
        );
        assert_eq!(
            failure_reason(&io::Error::from(ErrorKind::ConnectionReset)),
            None
        );
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_naming_it() {
        let dir = std::env::temp_dir().join(format!("tls-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        let err = client_config(Some(&empty)).unwrap_err();
        assert!(
            err.contains("empty.pem") && err.contains("no usable CERTIFICATE"),
            "{err}"
        );
        let err = client_config(Some(&dir.join("missing.pem"))).unwrap_err();
        assert!(err.contains("missing.pem"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
