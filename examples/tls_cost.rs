//! What TLS costs the box, measured (run in a release build):
//!
//! - `cargo run --release --example tls_cost -- handshakes [N]`: N full handshakes (TLS 1.3,
//!   then TLS 1.2; ECDSA P-256 certificate, the ring provider) between a rustls client and the
//!   server's own configuration in memory, timing only the server side's calls (thread CPU time);
//! - `cargo run --release --example tls_cost -- idle [N] [BIN]`: starts the server binary (default
//!   `target/release/augmentos-edge`) with a plain and a TLS listener, opens N idle WebSocket
//!   connections on each (upgrade done, then silent) and reports the server's RSS per connection.

use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::ServerName;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    match args.first().map(String::as_str) {
        Some("handshakes") => handshakes(n(1, 2000)),
        Some("idle") => idle(
            n(1, 1000),
            args.get(2)
                .map_or("target/release/augmentos-edge", String::as_str),
        ),
        _ => {
            eprintln!("usage: tls_cost handshakes [N] | idle [N] [BIN]");
            std::process::exit(2);
        }
    }
}

/// A certificate for localhost in PEM files in `dir`; returns the certificate PEM (the client's
/// trust anchor: it is self-signed).
fn make_cert(dir: &std::path::Path) -> String {
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    std::fs::write(dir.join("chain.pem"), cert.pem()).expect("write");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write");
    cert.pem()
}

fn client_config(
    ca_pem: &str,
    version: &'static rustls::SupportedProtocolVersion,
) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("PEM"))
        .expect("root");
    let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[version])
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    c.resumption = rustls::client::Resumption::disabled();
    Arc::new(c)
}

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    let mut ts = libc_timespec { sec: 0, nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the valid pointer we pass.
    unsafe {
        clock_gettime(3 /* CLOCK_THREAD_CPUTIME_ID */, &mut ts)
    };
    Duration::new(ts.sec as u64, ts.nsec as u32)
}

#[repr(C)]
struct libc_timespec {
    sec: i64,
    nsec: i64,
}
extern "C" {
    fn clock_gettime(clock: i32, ts: *mut libc_timespec) -> i32;
}

fn handshakes(n: usize) {
    let dir = std::env::temp_dir().join(format!("tls-cost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca = make_cert(&dir);
    let server_cfg =
        augmentos_edge_transports::server_config(&dir.join("chain.pem"), &dir.join("key.pem"))
            .expect("server config");
    for (name, version) in [
        ("TLS 1.3", &rustls::version::TLS13),
        ("TLS 1.2", &rustls::version::TLS12),
    ] {
        let client_cfg = client_config(&ca, version);
        let mut server_time = Duration::ZERO;
        let wall = std::time::Instant::now();
        for _ in 0..n {
            let mut client = rustls::ClientConnection::new(
                client_cfg.clone(),
                ServerName::try_from("localhost").expect("name"),
            )
            .expect("client");
            let t = thread_cpu();
            let mut server = rustls::ServerConnection::new(server_cfg.clone()).expect("server");
            server_time += thread_cpu() - t;
            let mut wire = Vec::new();
            while client.is_handshaking() || server.is_handshaking() || client.wants_write() {
                wire.clear();
                while client.wants_write() {
                    client.write_tls(&mut wire).expect("client write");
                }
                let t = thread_cpu();
                let mut rd = &wire[..];
                while !rd.is_empty() {
                    server.read_tls(&mut rd).expect("server read");
                    server.process_new_packets().expect("server handshake");
                }
                let mut back = Vec::new();
                while server.wants_write() {
                    server.write_tls(&mut back).expect("server write");
                }
                server_time += thread_cpu() - t;
                let mut rd = &back[..];
                while !rd.is_empty() {
                    client.read_tls(&mut rd).expect("client read");
                    client.process_new_packets().expect("client handshake");
                }
                if back.is_empty() && !client.wants_write() {
                    break;
                }
            }
            assert!(!server.is_handshaking(), "handshake did not finish");
        }
        println!(
            "{name}: {n} handshakes; server CPU {:.1} µs each (client + server wall {:.1} µs each)",
            server_time.as_secs_f64() * 1e6 / n as f64,
            wall.elapsed().as_secs_f64() * 1e6 / n as f64
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

fn idle(n: usize, bin: &str) {
    let dir = std::env::temp_dir().join(format!("tls-cost-idle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca = make_cert(&dir);
    let (plain, tls) = (free_port(), free_port());
    let config = format!(
        r#"{{"listen": ["127.0.0.1:{plain}", {{"address": "127.0.0.1:{tls}",
            "tls": {{"certificate": "{}", "key": "{}"}}}}],
            "echoRoute": true, "timings": {{"pingIntervalMs": 0, "idleTimeoutMs": 3600000}},
            "limits": {{"maxConnections": {}}}}}"#,
        dir.join("chain.pem").display(),
        dir.join("key.pem").display(),
        2 * n + 10
    );
    std::fs::write(dir.join("edge.json"), config).expect("config");
    let mut child = std::process::Command::new(bin)
        .args(["serve", "--config"])
        .arg(dir.join("edge.json"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the server");
    let pid = child.id();
    while TcpStream::connect(("127.0.0.1", tls)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let base = rss_kib(pid);
    let request = |port: u16| {
        format!(
            "GET /echo HTTP/1.1\r\nHost: localhost:{port}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        )
    };
    let mut plains = Vec::new();
    for _ in 0..n {
        let mut s = TcpStream::connect(("127.0.0.1", plain)).expect("connect");
        s.write_all(request(plain).as_bytes()).expect("write");
        read_head(&mut s);
        plains.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    let with_plain = rss_kib(pid);
    let cfg13 = client_config(&ca, &rustls::version::TLS13);
    let mut tlss = Vec::new();
    for _ in 0..n {
        let tcp = TcpStream::connect(("127.0.0.1", tls)).expect("connect");
        let conn = rustls::ClientConnection::new(
            cfg13.clone(),
            ServerName::try_from("localhost").expect("name"),
        )
        .expect("client");
        let mut s = rustls::StreamOwned::new(conn, tcp);
        s.write_all(request(tls).as_bytes()).expect("write");
        read_head(&mut s);
        tlss.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    let with_tls = rss_kib(pid);
    let per = |a: u64, b: u64| (b.saturating_sub(a)) as f64 * 1024.0 / n as f64;
    println!(
        "server RSS: base {base} KiB; +{n} idle plain WebSockets {with_plain} KiB ({:.0} B each); \
         +{n} idle TLS 1.3 WebSockets {with_tls} KiB ({:.0} B each)",
        per(base, with_plain),
        per(with_plain, with_tls)
    );
    let _ = child.kill();
    let _ = child.wait();
    drop((plains, tlss));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Read the 101 response head.
fn read_head(s: &mut impl Read) {
    let mut got = Vec::new();
    let mut b = [0u8; 512];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let k = s.read(&mut b).expect("read");
        assert!(k > 0, "closed before the upgrade");
        got.extend_from_slice(&b[..k]);
    }
    assert!(got.starts_with(b"HTTP/1.1 101"), "upgrade refused");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
