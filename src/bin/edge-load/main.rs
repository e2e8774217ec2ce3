//! Measurement layer: the load generator. Drives a real server process over loopback and reports
//! what it measured; it never asserts a number.
//!
//! `edge-load idle [--conns N] [--sessions] [--server CMD…]`: starts the server (by default the
//! `augmentos-edge` binary next to this one, on a scratch config with the echo route), reads its
//! RSS from /proc, opens N WebSocket connections that complete the handshake and then stay idle,
//! reads the RSS again and reports the base RSS and the RSS per idle connection. With
//! `--sessions` each connection is a pair of glasses of its own user that sends
//! `connection_init` and waits for its `connection_ack`, so each holds a session; with
//! `--apps M` too, each session starts M apps through their webhook, which connect and
//! subscribe, and the RSS is read again after `--settle S` seconds idle ([`idle`](mod@idle)). `--server`
//! runs any other server instead (a peer for comparison), which must serve a WebSocket at
//! `--url`. `--tls` then does the same again over TLS, on a fresh server whose only listener is
//! TLS with a scratch certificate ([`tls`]), and reports both figures, one line each.
//!
//! `edge-load route …`: glasses → apps routing under load against the real server ([`route`]):
//! delivered msgs/s, losses and order, latency, server RSS and server CPU per delivered message.
//! `edge-load venue --transcriber …`: the real transcriber as the venue feed ([`venue_cpu`]):
//! the box's CPU (recogniser and server) per second of audio against the number of wearers.
//!
//! `edge-load floor`: the kernel's cost of the venue fan-out's writes with no server ([`floor`]).
//!
//! Modules, each importing only those before it (no circle): [`stats`] and [`tls`] (leaves),
//! [`wsc`] (the client codec), [`peer`], [`driver`] (the mio loop and the run's [`driver::Shared`]
//! state), [`report`] (words a run's results), [`route`] (the run, phase by phase: box, setup,
//! drive, account, report), [`idle`](mod@idle) and [`venue_cpu`] (on [`route`]); [`soak`] and
//! [`floor`] stand apart on [`stats`].

mod driver;
mod floor;
mod idle;
mod peer;
mod report;
mod route;
mod soak;
mod stats;
mod tls;
mod venue_cpu;
mod wsc;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn usage() -> ! {
    eprintln!(
        "usage:
  edge-load idle [--conns N] [--port P] [--url PATH] [--sessions [--apps M] [--settle S]]
                 [--tls | --server CMD ARGS…]
      open N idle WebSocket connections and report the server's RSS per connection
      (--tls: then the same over TLS, on a fresh server with a scratch certificate); with
      --apps, N glasses sessions each start M apps through the webhook (connected, subscribed),
      then stay idle S seconds (default 5): RSS after setup and after the settle, per session
{}
{}
{}
{}",
        route::USAGE,
        venue_cpu::USAGE,
        soak::USAGE,
        floor::USAGE
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("idle") => idle(&args[1..]),
        Some("route") => route::run(&args[1..]),
        Some("venue") if args.iter().any(|a| a == "--transcriber") => venue_cpu::run(&args[1..]),
        Some("venue") => {
            let mut a = vec!["--venue".to_string()];
            a.extend_from_slice(&args[1..]);
            route::run(&a)
        }
        Some("soak") => soak::run(&args[1..]),
        Some("floor") => floor::run(&args[1..]),
        _ => usage(),
    }
}

fn rss_kib(pid: u32) -> u64 {
    stats::status_kib(&pid.to_string(), "VmRSS")
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start the box (the `augmentos-edge` beside this binary) on `cfg`, its log to `log`.
fn start_box(cfg: &std::path::Path, log: &std::path::Path) -> Result<Server, String> {
    let bin = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .with_file_name("augmentos-edge");
    let logf = std::fs::File::create(log).map_err(|e| e.to_string())?;
    let child = Command::new(&bin)
        .args(["serve", "--config"])
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(logf)
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start {} (build it: cargo build --release --bins): {e}",
                bin.display()
            )
        })?;
    Ok(Server(child))
}

fn wait_for_port(port: u16) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > Duration::from_secs(20) {
            eprintln!("edge-load: server did not start listening on port {port}");
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The glasses-token secret of the scratch config.
const SECRET: &str = "edge-load-scratch-secret";

/// Read until `needle` has been seen (or the read times out).
fn read_until(s: &mut impl Read, needle: &[u8]) -> bool {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(needle.len()).any(|w| w == needle) {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(k) => got.extend_from_slice(&buf[..k]),
        }
    }
    true
}

/// One idle client connection: plain TCP or TLS over it.
enum Conn {
    Tcp(TcpStream),
    Tls(Box<tls::TlsSock>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// What one `idle` run opens.
struct IdleRun<'a> {
    conns: usize,
    port: u16,
    path: &'a str,
    sessions: bool,
    server_cmd: &'a [String],
    /// Connect over TLS, trusting this configuration's certificate (the scratch one).
    tls: Option<(
        &'a std::path::Path,
        std::sync::Arc<tls::rustls::ClientConfig>,
    )>,
}

fn idle(args: &[String]) {
    let mut conns = 10_000usize;
    let mut port = 18_102u16;
    let mut path = "/echo".to_string();
    let mut server_cmd: Vec<String> = Vec::new();
    let mut sessions = false;
    let mut with_tls = false;
    let mut apps = 0usize;
    let mut settle = 5u64;
    let mut port_given = false;
    let mut i = 0;
    while i < args.len() {
        let val = || args.get(i + 1).cloned().unwrap_or_else(|| usage());
        match args[i].as_str() {
            "--sessions" | "--tls" => {
                sessions |= args[i] == "--sessions";
                with_tls |= args[i] == "--tls";
                if sessions {
                    path = "/glasses-ws".into();
                }
                i += 1;
                continue;
            }
            "--conns" => conns = val().parse().unwrap_or_else(|_| usage()),
            "--apps" => apps = val().parse().unwrap_or_else(|_| usage()),
            "--settle" => settle = val().parse().unwrap_or_else(|_| usage()),
            "--port" => {
                port = val().parse().unwrap_or_else(|_| usage());
                port_given = true;
            }
            "--url" => path = val(),
            "--server" => {
                server_cmd = args[i + 1..].to_vec();
                break;
            }
            _ => usage(),
        }
        i += 2;
    }
    if apps > 0 {
        if !sessions || !server_cmd.is_empty() || with_tls || conns == 0 {
            usage()
        }
        return idle::run(&idle::Opts {
            sessions: conns,
            apps,
            // Else a free one: other runs may share the machine.
            port: port_given.then_some(port),
            settle: Duration::from_secs(settle),
        });
    }
    if with_tls && !server_cmd.is_empty() {
        eprintln!("edge-load idle: --tls measures our own server only (no --server)");
        std::process::exit(2);
    }
    let run = IdleRun {
        conns,
        port,
        path: &path,
        sessions,
        server_cmd: &server_cmd,
        tls: None,
    };
    idle_run(&run);
    if !with_tls {
        return;
    }
    // The same again over TLS, on a fresh server: beside the plain figure, so the difference
    // is what TLS costs per connection.
    let cert = std::env::temp_dir().join(format!("edge-load-{}.crt", std::process::id()));
    let key = cert.with_extension("key");
    let config = tls::make_certificate(&cert, &key).and_then(|()| tls::client_config(&cert));
    let config = config.unwrap_or_else(|e| {
        eprintln!("edge-load idle: {e}");
        std::process::exit(1)
    });
    idle_run(&IdleRun {
        tls: Some((&cert, config)),
        ..run
    });
    let _ = std::fs::remove_file(&cert);
    let _ = std::fs::remove_file(&key);
}

fn idle_run(run: &IdleRun) {
    let IdleRun {
        conns,
        port,
        path,
        sessions,
        server_cmd,
        ..
    } = *run;
    let cfg = std::env::temp_dir().join(format!("edge-load-{}.json", std::process::id()));
    let child = if server_cmd.is_empty() {
        let exe = std::env::current_exe().expect("own path");
        let bin = exe.with_file_name("augmentos-edge");
        let max = conns + 100;
        let listen = match &run.tls {
            Some((cert, _)) => format!(
                r#"{{"address":"127.0.0.1:{port}","tls":{{"certificate":{:?},"key":{:?}}}}}"#,
                cert.display().to_string(),
                cert.with_extension("key").display().to_string()
            ),
            None => format!(r#""127.0.0.1:{port}""#),
        };
        std::fs::write(
            &cfg,
            format!(
                r#"{{"listen":[{listen}],"echoRoute":true,"jwtSecret":"{SECRET}","limits":{{"maxConnections":{max},"maxConnectionsPerAddress":{max},"maxSessions":{max}}},"timings":{{"pingIntervalMs":0}}}}"#
            ),
        )
        .expect("write scratch config");
        Command::new(bin)
            .args(["serve", "--config"])
            .arg(&cfg)
            .stderr(Stdio::null())
            .spawn()
            .expect("start augmentos-edge (build it first: cargo build --release)")
    } else {
        Command::new(&server_cmd[0])
            .args(&server_cmd[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the server command")
    };
    let server = Server(child);
    let pid = server.0.id();
    wait_for_port(port);
    let _ = std::fs::remove_file(&cfg);
    std::thread::sleep(Duration::from_millis(300));
    let base = rss_kib(pid);
    let request = |n: usize| {
        let auth = if sessions {
            let token = augmentos_edge::auth::jwt::glasses_token(
                &format!("user{n}@load.test"),
                SECRET.as_bytes(),
            );
            format!("Authorization: Bearer {token}\r\n")
        } else {
            String::new()
        };
        format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n"
        )
    };
    let mut open = Vec::with_capacity(conns);
    let started = Instant::now();
    let mut buf = [0u8; 512];
    for n in 0..conns {
        let tcp = match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("\nedge-load: connect #{n} failed: {e}");
                break;
            }
        };
        tcp.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let mut s = match &run.tls {
            None => Conn::Tcp(tcp),
            Some((_, config)) => match tls::TlsSock::connect(tcp, config) {
                Ok(t) => Conn::Tls(Box::new(t)),
                Err(e) => {
                    eprintln!("\nedge-load: TLS #{n} failed: {e}");
                    break;
                }
            },
        };
        if s.write_all(request(n).as_bytes()).is_err() {
            eprintln!("\nedge-load: write #{n} failed");
            break;
        }
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => got.extend_from_slice(&buf[..k]),
            }
        }
        if !got.starts_with(b"HTTP/1.1 101") {
            let first = String::from_utf8_lossy(&got)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            eprintln!("\nedge-load: handshake #{n} refused: {first}");
            break;
        }
        if sessions {
            let mut init = Vec::new();
            augmentos_edge::ws::frame::write_masked_frame(
                &mut init,
                true,
                augmentos_edge::ws::Opcode::Text,
                br#"{"type":"connection_init"}"#,
                [1, 2, 3, 4],
            );
            let acked = s.write_all(&init).is_ok() && read_until(&mut s, b"connection_ack");
            if !acked {
                eprintln!("\nedge-load: session #{n} got no connection_ack");
                break;
            }
        }
        open.push(s);
        if n % 1000 == 999 {
            eprint!(
                "\ropened {:>6}/{conns}  server RSS {:>7} KiB",
                n + 1,
                rss_kib(pid)
            );
        }
    }
    eprintln!();
    std::thread::sleep(Duration::from_millis(500));
    let loaded = rss_kib(pid);
    let n = open.len().max(1) as f64;
    println!(
        "idle {}{}: {} in {:.1} s; server base RSS {} KiB; with them {} KiB; {:.0} bytes each",
        if sessions {
            "glasses sessions"
        } else {
            "connections"
        },
        if run.tls.is_some() { " over TLS" } else { "" },
        open.len(),
        started.elapsed().as_secs_f64(),
        base,
        loaded,
        (loaded.saturating_sub(base) as f64 * 1024.0) / n
    );
    drop(open);
    drop(server);
}
