//! Measurement layer: the load generator's TLS client side (`edge-load route --tls`).
//!
//! Owns the scratch certificate the generated config's TLS listener serves, the rustls client
//! configuration (the `ring` provider, as the server's) that trusts exactly that certificate,
//! and [`TlsSock`], a rustls client connection over a TCP socket that reads and writes like the
//! socket itself, blocking during setup and non-blocking in the driver's mio loop.
//!
//! Invariants: a non-blocking read returns `WouldBlock` only after the socket did (the driver
//! is edge-triggered); records rustls could not send stay in it, and `flush` (and the next
//! `write`) push them first, returning `WouldBlock` while the socket is full.
//!
//! The certificate is written by the `openssl` command at run time, so neither the server nor
//! this binary links a certificate generator; a run without `openssl` says so and stops.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};
use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

pub use augmentos_edge_transports::rustls;

/// Write a self-signed P-256 certificate for `localhost` and its key (PEM) with `openssl`.
pub fn make_certificate(cert: &Path, key: &Path) -> Result<(), String> {
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ])
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| {
            format!("--tls needs the openssl command to write a scratch certificate: {e}")
        })?;
    if !out.status.success() {
        return Err(format!(
            "openssl could not write a certificate: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// A client configuration that accepts exactly the certificate in `cert` (PEM).
pub fn client_config(cert: &Path) -> Result<Arc<ClientConfig>, String> {
    let pinned = CertificateDer::from_pem_file(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .into_owned();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { pinned, provider }))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Trusts one certificate, byte for byte (a scratch self-signed one has no CA to chain to);
/// the handshake signatures are still checked against it.
#[derive(Debug)]
struct Pinned {
    pinned: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.pinned.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "not the scratch certificate of this run".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A rustls client connection over TCP.
pub struct TlsSock {
    pub tcp: TcpStream,
    conn: ClientConnection,
}

impl TlsSock {
    /// Connect and complete the handshake (blocking).
    pub fn connect(tcp: TcpStream, config: &Arc<ClientConfig>) -> Result<TlsSock, String> {
        let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
        let conn = ClientConnection::new(config.clone(), name).map_err(|e| e.to_string())?;
        let mut s = TlsSock { tcp, conn };
        while s.conn.is_handshaking() {
            s.conn
                .complete_io(&mut s.tcp)
                .map_err(|e| format!("TLS handshake: {e}"))?;
        }
        Ok(s)
    }

    /// Push the records rustls holds; `WouldBlock` if the socket cannot take them all.
    fn send(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.tcp) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Read for TlsSock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                // Closed without close_notify: the end of the stream, as for TCP.
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            match self.conn.read_tls(&mut self.tcp) {
                Ok(0) => return Ok(0),
                Ok(_) => {
                    self.conn
                        .process_new_packets()
                        .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
                    // Anything the records call for (alerts, key updates) goes out when it can.
                    match self.send() {
                        Err(e) if e.kind() != ErrorKind::WouldBlock => return Err(e),
                        _ => {}
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Write for TlsSock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Earlier records first: while they wait, take nothing new.
        self.send()?;
        let n = self.conn.writer().write(&buf[..buf.len().min(64 << 10)])?;
        match self.send() {
            Err(e) if e.kind() != ErrorKind::WouldBlock => Err(e),
            _ => Ok(n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::ServerConnection;

    /// Run a handshake in memory between a client pinning `pinned` and a server serving `served`.
    fn handshake(pinned: &Path, served: (&Path, &Path)) -> Result<(), String> {
        let server_config = augmentos_edge_transports::server_config(served.0, served.1)?;
        let mut server = ServerConnection::new(server_config).map_err(|e| e.to_string())?;
        let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
        let mut client =
            ClientConnection::new(client_config(pinned)?, name).map_err(|e| e.to_string())?;
        for _ in 0..10 {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).map_err(|e| e.to_string())?;
            }
            let mut r = &wire[..];
            while !r.is_empty() {
                server.read_tls(&mut r).map_err(|e| e.to_string())?;
            }
            server.process_new_packets().map_err(|e| e.to_string())?;
            let mut wire = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut wire).map_err(|e| e.to_string())?;
            }
            let mut r = &wire[..];
            while !r.is_empty() {
                client.read_tls(&mut r).map_err(|e| e.to_string())?;
            }
            client.process_new_packets().map_err(|e| e.to_string())?;
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
        }
        Err("handshake did not finish".into())
    }

    #[test]
    fn the_client_trusts_the_runs_certificate_and_no_other() {
        if Command::new("openssl").arg("version").output().is_err() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "no openssl under CI=true"
            );
            eprintln!("skipped: no openssl command");
            return;
        }
        let dir = std::env::temp_dir().join(format!("edge-load-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.crt"), dir.join("b.crt"));
        make_certificate(&a, &dir.join("a.key")).unwrap();
        make_certificate(&b, &dir.join("b.key")).unwrap();
        let ours = handshake(&a, (&a, &dir.join("a.key")));
        let theirs = handshake(&a, (&b, &dir.join("b.key")));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(ours, Ok(()));
        let e = theirs.unwrap_err();
        assert!(e.contains("not the scratch certificate of this run"), "{e}");
    }
}
