//! The TLS transport over real sockets: a test CA made at test time, a reactor serving a TLS
//! listener on a thread, and a real rustls client doing the WebSocket upgrade (echo, glasses
//! init), TLS 1.2 and 1.3, ALPN, `/health` through curl, garbage and stalled handshakes refused
//! while an established session keeps working, and certificates re-read while running.

use augmentos_edge::auth::jwt;
use augmentos_edge::hub::HubConfig;
use augmentos_edge::reactor::{Clock, Reactor, StopHandle};
use augmentos_edge::server::{Server, ServerConfig};
use augmentos_edge_transports::{Listener, TlsCerts, TlsListener};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tungstenite::{Message, WebSocket};

const READ_TIMEOUT: Duration = Duration::from_secs(10);
const SECRET: &[u8] = b"tls-test-secret-0123456789";

/// A CA, and a server certificate for `localhost` and 127.0.0.1 signed by it, as PEM files.
struct Pki {
    dir: PathBuf,
    ca_pem: String,
    chain: PathBuf,
    key: PathBuf,
}

fn unique_dir(name: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "augmentos-edge-tls-{}-{name}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = unique_dir(name);
        let (ca_pem, chain_pem, key_pem) = issue("Edge Test CA");
        let (chain, key) = (dir.join("chain.pem"), dir.join("key.pem"));
        std::fs::write(&chain, chain_pem).expect("write chain");
        std::fs::write(&key, key_pem).expect("write key");
        std::fs::write(dir.join("ca.pem"), &ca_pem).expect("write CA");
        Pki {
            dir,
            ca_pem,
            chain,
            key,
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh CA and a leaf it signed: (CA PEM, leaf + CA chain PEM, leaf key PEM).
fn issue(ca_name: &str) -> (String, String, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
        .expect("CA certificate");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("leaf params")
        .signed_by(&leaf_key, &ca)
        .expect("leaf certificate");
    (
        ca.pem(),
        format!("{}{}", leaf.pem(), ca.pem()),
        leaf_key.serialize_pem(),
    )
}

struct TlsServer {
    addr: SocketAddr,
    certs: Arc<TlsCerts>,
    stop: StopHandle,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl TlsServer {
    fn start(pki: &Pki, handshake_timeout: Duration) -> TlsServer {
        TlsServer::start_with(
            pki,
            ServerConfig {
                echo: true,
                handshake_timeout,
                close_timeout: Duration::from_millis(300),
                ..Default::default()
            },
        )
    }

    fn start_with(pki: &Pki, cfg: ServerConfig) -> TlsServer {
        let certs = TlsCerts::load(&pki.chain, &pki.key).expect("load the certificates");
        let listener = TlsListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)), certs.clone())
            .expect("bind TLS");
        let addr = listener.local_addr().expect("local address");
        let hub = HubConfig {
            jwt_secret: SECRET.to_vec(),
            public_ws_url: format!("wss://localhost:{}", addr.port()),
            ..Default::default()
        };
        let clock = Clock::default();
        let server = Server::new(cfg, hub, clock.now());
        let listeners: Vec<Box<dyn Listener>> = vec![Box::new(listener)];
        let mut reactor = Reactor::new(server, clock, listeners).expect("reactor");
        let stop = reactor.stop_handle();
        let thread = std::thread::spawn(move || reactor.run());
        TlsServer {
            addr,
            certs,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let outcome = t.join();
            if !std::thread::panicking() {
                outcome.expect("reactor thread").expect("reactor run");
            }
        }
    }
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn client_config(
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("CA PEM")).expect("add the CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// A TLS client stream with the handshake done (the error if it failed).
fn tls_connect(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> io::Result<Tls> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(READ_TIMEOUT))?;
    let name = ServerName::try_from("localhost").expect("server name");
    let conn = rustls::ClientConnection::new(cfg, name).map_err(io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

fn default_client(pki: &Pki) -> Arc<rustls::ClientConfig> {
    client_config(
        &pki.ca_pem,
        &[&rustls::version::TLS13, &rustls::version::TLS12],
        &[b"http/1.1"],
    )
}

fn wss(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>, path: &str) -> WebSocket<Tls> {
    wss_with(addr, cfg, path, None)
}

fn wss_with(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    path: &str,
    bearer: Option<&str>,
) -> WebSocket<Tls> {
    use tungstenite::client::IntoClientRequest;
    let tls = tls_connect(addr, cfg).expect("TLS handshake");
    let mut req = format!("wss://localhost:{}{path}", addr.port())
        .into_client_request()
        .expect("request");
    if let Some(token) = bearer {
        req.headers_mut().insert(
            "Authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    let (ws, resp) = tungstenite::client(req, tls).expect("WebSocket upgrade over TLS");
    assert_eq!(resp.status(), 101);
    ws
}

fn echo_round(ws: &mut WebSocket<Tls>, text: &str) {
    ws.send(Message::text(text)).expect("send");
    loop {
        match ws.read().expect("read the echo") {
            Message::Text(t) => {
                assert_eq!(t.as_str(), text);
                return;
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected the echo of {text:?}, got {other:?}"),
        }
    }
}

#[test]
fn wss_echo_over_tls13_and_tls12_with_alpn() {
    let pki = Pki::new("echo");
    let server = TlsServer::start(&pki, Duration::from_secs(5));
    for (version, name) in [
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
    ] {
        let cfg = client_config(&pki.ca_pem, &[version], &[b"h2", b"http/1.1"]);
        let mut ws = wss(server.addr, cfg, "/echo");
        let conn = &ws.get_ref().conn;
        assert_eq!(conn.protocol_version(), Some(name));
        assert_eq!(conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        // A message larger than one TLS record, and many small ones in a row.
        let big = "x".repeat(40_000);
        echo_round(&mut ws, &big);
        for i in 0..50 {
            echo_round(&mut ws, &format!("message {i}"));
        }
        ws.close(None).expect("close");
    }
}

#[test]
fn a_client_that_offers_only_other_protocols_is_refused() {
    let pki = Pki::new("alpn");
    let server = TlsServer::start(&pki, Duration::from_secs(5));
    let cfg = client_config(&pki.ca_pem, &[&rustls::version::TLS13], &[b"h2"]);
    let Err(err) = tls_connect(server.addr, cfg) else {
        panic!("a client without http/1.1 in its ALPN list was accepted");
    };
    assert!(
        err.to_string().contains("NoApplicationProtocol"),
        "expected the no_application_protocol alert, got {err}"
    );
}

#[test]
fn glasses_connect_over_wss_and_get_their_session() {
    let pki = Pki::new("glasses");
    let server = TlsServer::start(&pki, Duration::from_secs(5));
    let token = jwt::glasses_token("tess@example.com", SECRET);
    let mut ws = wss_with(
        server.addr,
        default_client(&pki),
        "/glasses-ws",
        Some(&token),
    );
    ws.send(Message::text(r#"{"type":"connection_init"}"#))
        .expect("send init");
    let ack = loop {
        match ws.read().expect("read the ack") {
            Message::Text(t) => {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).expect("JSON");
                if v["type"] == "connection_ack" {
                    break v;
                }
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(ack["userSession"]["userId"], "tess@example.com", "{ack}");
}

#[test]
fn garbage_and_stalled_handshakes_are_refused_while_a_session_keeps_working() {
    let pki = Pki::new("garbage");
    let server = TlsServer::start(&pki, Duration::from_millis(500));
    let mut session = wss(server.addr, default_client(&pki), "/echo");
    echo_round(&mut session, "before");

    // Plain HTTP on the TLS port: a TLS alert at most, then the socket is closed.
    let mut plain = TcpStream::connect(server.addr).expect("connect");
    plain.set_read_timeout(Some(READ_TIMEOUT)).expect("timeout");
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let got = read_to_close(&mut plain);
    assert!(
        !got.windows(4).any(|w| w == b"HTTP"),
        "plaintext was answered in plaintext"
    );
    assert!(
        got.is_empty() || got[0] == 0x15,
        "expected nothing or a TLS alert record, got {got:?}"
    );

    // Random bytes shaped like a record header, then more garbage.
    let mut junk = TcpStream::connect(server.addr).expect("connect");
    junk.set_read_timeout(Some(READ_TIMEOUT)).expect("timeout");
    junk.write_all(&[0x16, 0x03, 0x01, 0x00, 0x10])
        .expect("write");
    junk.write_all(&[0xAB; 16]).expect("write");
    read_to_close(&mut junk);

    // A ClientHello cut short and never finished: closed by the handshake deadline.
    let mut stalled = TcpStream::connect(server.addr).expect("connect");
    stalled
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("timeout");
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .expect("write");
    read_to_close(&mut stalled);

    // A client that does not trust the server's CA aborts; the server drops it cleanly.
    let (other_ca, _, _) = issue("Someone Else");
    let untrusting = client_config(&other_ca, &[&rustls::version::TLS13], &[]);
    assert!(tls_connect(server.addr, untrusting).is_err());

    echo_round(&mut session, "after");
    let mut fresh = wss(server.addr, default_client(&pki), "/echo");
    echo_round(&mut fresh, "a new session too");
}

#[test]
fn a_large_message_after_idling_reaches_a_slow_reader_whole() {
    // Idle connections hold no buffers: what arrives later is read, decrypted, encrypted and
    // queued through buffers made for it. A message larger than any of them (the read buffer,
    // one record, one write's plaintext) must still arrive whole, in order, at a reader that
    // takes it slowly, with the others idle around it.
    const SIZE: usize = 700 * 1024;
    let pki = Pki::new("large");
    let mut cfg = ServerConfig {
        echo: true,
        close_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    cfg.ws = augmentos_edge::ws::Limits {
        max_frame: 1024 * 1024,
        max_message: 1024 * 1024,
    };
    let server = TlsServer::start_with(&pki, cfg);
    let mut idle: Vec<_> = (0..4)
        .map(|_| wss(server.addr, default_client(&pki), "/echo"))
        .collect();
    for (i, ws) in idle.iter_mut().enumerate() {
        echo_round(ws, &format!("warm {i}"));
    }
    std::thread::sleep(Duration::from_millis(200));

    let big: Vec<u8> = (0..SIZE).map(|i| (i * 7 + i / 251) as u8).collect();
    let ws = &mut idle[2];
    ws.send(Message::binary(big.clone()))
        .expect("send the large message");
    // A slow reader: small reads, with pauses, so the server's output backs up behind a
    // socket that will not take it.
    std::thread::sleep(Duration::from_millis(300));
    let tls = ws.get_mut();
    let mut wire = Vec::new();
    let mut buf = [0u8; 1500];
    let header = 10; // FIN|binary, 127, 8-byte length (server frames are not masked)
    for reads in 0.. {
        if wire.len() >= header + SIZE {
            break;
        }
        let n = tls.read(&mut buf).expect("read the echo");
        assert!(n > 0, "the server closed after {} bytes", wire.len());
        wire.extend_from_slice(&buf[..n]);
        if reads % 4 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    assert_eq!(wire.len(), header + SIZE, "nothing more than the echo");
    assert_eq!(&wire[..2], &[0x82, 127]);
    assert_eq!(
        u64::from_be_bytes(wire[2..10].try_into().expect("8 bytes")),
        SIZE as u64
    );
    assert!(
        wire[header..] == big[..],
        "the echo differs from what was sent"
    );
    for (i, ws) in idle.iter_mut().enumerate() {
        echo_round(ws, &format!("after {i}"));
    }
}

/// Read until the server closes (EOF or reset); a read timeout fails the test.
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return all,
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
    }
}

#[test]
fn certificates_are_re_read_for_new_connections_only() {
    let pki = Pki::new("reload");
    let server = TlsServer::start(&pki, Duration::from_secs(5));
    let mut old_session = wss(server.addr, default_client(&pki), "/echo");

    // A broken file is refused and the pair in use stays.
    std::fs::write(&pki.key, "not a key").expect("write");
    let err = server.certs.reload().expect_err("a bad key is refused");
    assert!(err.contains("key.pem"), "{err}");
    echo_round(
        &mut wss(server.addr, default_client(&pki), "/echo"),
        "still old",
    );

    let (new_ca, chain, key) = issue("Edge Test CA 2");
    std::fs::write(&pki.chain, chain).expect("write");
    std::fs::write(&pki.key, key).expect("write");
    server.certs.reload().expect("reload");

    let old_trust = default_client(&pki);
    assert!(
        tls_connect(server.addr, old_trust).is_err(),
        "a new connection must get the new certificate"
    );
    let new_trust = client_config(&new_ca, &[&rustls::version::TLS13], &[]);
    echo_round(&mut wss(server.addr, new_trust, "/echo"), "new");
    echo_round(&mut old_session, "the old session is undisturbed");
}

#[test]
fn curl_gets_health_over_https() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(!ci, "curl is required under CI=true (.ci/run installs it)");
        eprintln!("skipped: no curl");
        return;
    }
    let pki = Pki::new("curl");
    let server = TlsServer::start(&pki, Duration::from_secs(5));
    let port = server.addr.port();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(Path::new(&pki.dir).join("ca.pem"))
        .arg("--resolve")
        .arg(format!("localhost:{port}:127.0.0.1"))
        .arg(format!("https://localhost:{port}/health"))
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON body");
    assert_eq!(v["status"], "ok", "{v}");
}
