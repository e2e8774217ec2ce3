//! `edge-load soak`: many sessions over real sockets for a bounded time, with churn, checked
//! from the outside; not part of the test run (see the README for the command).
//!
//! Setup: the server binary on a scratch config with a state directory, two apps: a publishing
//! system app (`system.soak.stt`, started with every session) and `com.soak.captions`, which
//! each glasses start once (the store remembers it). The webhook listener in this process
//! answers every `session_request` 200 and hands it to the worker owning that session, which
//! connects the app WebSocket the way the SDK does (`tpa_connection_init`, then the captions
//! app subscribes to `transcription:en-US`).
//!
//! Load: each session's system app publishes numbered final transcripts (`s<i>#<seq>`) at
//! `--rate` per second; the captions app checks them. Churn, while it runs: glasses drop and
//! reconnect, the captions app crashes and reconnects (within the server's reconnect grace, or
//! later, when the server restarts it through its webhook), and halfway the server is stopped
//! and started again on the same state (every glasses reconnects; the server must start the
//! apps the store says were running).
//!
//! Checked from the outside: on one captions connection the finals arrive in order, none twice,
//! none skipped (a gap on a live connection is a lost message); after the restart every
//! session's captions app is started again; at the end, with the churn stopped, every session
//! publishes `--final` more finals and each must arrive. Reported every 5 s and at the end:
//! server RSS and CPU, connections, published / delivered / lost / duplicated.
//!
//! Workers: a few threads, each polling its sessions' non-blocking sockets in turn (no thread
//! per connection, so ten thousand sessions fit).

use crate::stats;
use augmentos_edge::auth::{self, jwt};
use augmentos_edge::ws::frame::{write_masked_frame, Opcode};
use augmentos_edge::ws::{Limits, Message, Receiver, Role};
use serde_json::{json, Value};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{channel, Receiver as Rx, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const USAGE: &str =
    "  edge-load soak [--sessions N] [--seconds D] [--rate R] [--workers W] [--port P]
      N sessions over TCP for D seconds with churn (glasses reconnects, app crashes and
      restarts, one server restart on the same state); R finals/s per session; reports server
      RSS and CPU over time and messages lost (raise `ulimit -n` to 4 N + 1000 first)";

const SECRET: &str = "edge-load-soak-secret-0123";
const STT: &str = "system.soak.stt";
const CAPTIONS: &str = "com.soak.captions";

fn key(package: &str) -> String {
    format!("{package}-soak-key")
}

fn user(i: usize) -> String {
    format!("soak{i}@load.example")
}

struct Opts {
    sessions: usize,
    seconds: u64,
    rate: f64,
    workers: usize,
    port: u16,
    finals: u64,
}

fn parse(args: &[String]) -> Opts {
    let mut o = Opts {
        sessions: 1000,
        seconds: 60,
        rate: 1.0,
        workers: 4,
        port: 18_300,
        finals: 3,
    };
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        let bad = || -> ! {
            eprintln!("edge-load soak: bad value for {}\n{USAGE}", args[i]);
            std::process::exit(2)
        };
        match args[i].as_str() {
            "--sessions" => o.sessions = v.parse().unwrap_or_else(|_| bad()),
            "--seconds" => o.seconds = v.parse().unwrap_or_else(|_| bad()),
            "--rate" => o.rate = v.parse().unwrap_or_else(|_| bad()),
            "--workers" => o.workers = v.parse().unwrap_or_else(|_| bad()),
            "--port" => o.port = v.parse().unwrap_or_else(|_| bad()),
            "--final" => o.finals = v.parse().unwrap_or_else(|_| bad()),
            _ => bad(),
        }
        i += 2;
    }
    o.workers = o.workers.max(1);
    o
}

/// Totals, shared by the workers.
#[derive(Default)]
struct Counts {
    published: AtomicU64,
    delivered: AtomicU64,
    lost: AtomicU64,
    duplicated: AtomicU64,
    glasses_reconnects: AtomicU64,
    app_crashes: AtomicU64,
    webhooks: AtomicU64,
    connect_errors: AtomicU64,
    /// Captions starts asked by the server after the restart (one per session expected).
    restarted_apps: AtomicU64,
}

/// A WebSocket client over a non-blocking socket.
struct Ws {
    s: TcpStream,
    rx: Receiver,
    inbox: Vec<u8>,
    mask: u32,
    dead: bool,
}

impl Ws {
    fn connect(port: u16, path: &str, headers: &str) -> Option<Ws> {
        let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
        );
        s.write_all(req.as_bytes()).ok()?;
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut b).ok()? == 0 {
                return None;
            }
            head.push(b[0]);
        }
        if !head.starts_with(b"HTTP/1.1 101") {
            return None;
        }
        s.set_nonblocking(true).ok()?;
        let _ = s.set_nodelay(true);
        let limits = Limits {
            max_frame: 1 << 20,
            max_message: 1 << 20,
        };
        Some(Ws {
            s,
            rx: Receiver::new(Role::Client, limits),
            inbox: Vec::new(),
            mask: 0x1234_5678,
            dead: false,
        })
    }

    fn send(&mut self, text: &str) {
        self.mask = self.mask.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let mut out = Vec::new();
        write_masked_frame(
            &mut out,
            true,
            Opcode::Text,
            text.as_bytes(),
            self.mask.to_le_bytes(),
        );
        let mut at = 0;
        let start = Instant::now();
        while at < out.len() && !self.dead {
            match self.s.write(&out[at..]) {
                Ok(0) => self.dead = true,
                Ok(n) => at += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if start.elapsed() > Duration::from_secs(5) {
                        self.dead = true;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => self.dead = true,
            }
        }
    }

    /// Every text message waiting; marks the connection dead at EOF, error or close.
    fn texts(&mut self) -> Vec<Value> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.s.read(&mut buf) {
                Ok(0) => {
                    self.dead = true;
                    break;
                }
                Ok(n) => self.inbox.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.dead = true;
                    break;
                }
            }
        }
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            match self.rx.next(&mut self.inbox[at..]) {
                Ok(step) if step.consumed > 0 => {
                    at += step.consumed;
                    match step.message {
                        Some(Message::Text(t)) => {
                            out.push(serde_json::from_str(t).unwrap_or(Value::Null))
                        }
                        Some(Message::Close(_)) => self.dead = true,
                        _ => {}
                    }
                }
                Ok(_) => break,
                Err(_) => {
                    self.dead = true;
                    break;
                }
            }
        }
        self.inbox.drain(..at);
        out
    }
}

/// One session as its peers see it.
struct Session {
    i: usize,
    glasses: Option<Ws>,
    /// The glasses asked for the captions app once (the store keeps it running after that).
    started: bool,
    stt: Option<Ws>,
    stt_acked: bool,
    captions: Option<Ws>,
    /// The captions app crashed: reconnect at this time.
    reconnect_at: Option<Instant>,
    next_seq: u64,
    /// The last final the current captions connection received.
    last: Option<u64>,
    /// The server asked for the captions app again after its restart.
    restored: bool,
}

struct Ctx {
    port: u16,
    counts: Arc<Counts>,
    churn: Arc<AtomicBool>,
    restarted: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    publish: Arc<AtomicBool>,
}

fn app_init(package: &str, session_id: &str) -> String {
    json!({"type": "tpa_connection_init", "packageName": package, "sessionId": session_id,
        "apiKey": key(package)})
    .to_string()
}

fn connect_app(port: u16, package: &str, i: usize) -> Option<Ws> {
    let mut ws = Ws::connect(port, "/app-ws", "")?;
    ws.send(&app_init(package, &format!("{}-{package}", user(i))));
    if package == CAPTIONS {
        ws.send(
            &json!({"type": "subscription_update", "packageName": CAPTIONS,
                "subscriptions": ["transcription:en-US"]})
            .to_string(),
        );
    }
    Some(ws)
}

/// splitmix64 for the churn decisions.
fn rnd(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn worker(mut sessions: Vec<Session>, hooks: Rx<(usize, String)>, ctx: Ctx, rate: f64) {
    let c = &ctx.counts;
    let tick = Duration::from_millis(50);
    let per_tick = rate * tick.as_secs_f64();
    let mut credit = 0.0;
    let mut seed = sessions.first().map_or(1, |s| s.i as u64 + 1);
    let index = |i: usize, sessions: &[Session]| sessions.iter().position(|s| s.i == i);
    while !ctx.stop.load(Relaxed) {
        let turn = Instant::now();
        while let Ok((i, package)) = hooks.try_recv() {
            let Some(k) = index(i, &sessions) else {
                continue;
            };
            let ws = connect_app(ctx.port, &package, i);
            if ws.is_none() {
                c.connect_errors.fetch_add(1, Relaxed);
            }
            let s = &mut sessions[k];
            if package == STT {
                s.stt = ws;
                s.stt_acked = false;
            } else {
                if ctx.restarted.load(Relaxed) && !s.restored {
                    s.restored = true;
                    c.restarted_apps.fetch_add(1, Relaxed);
                }
                s.captions = ws;
                s.last = None;
                s.reconnect_at = None;
            }
        }
        credit += per_tick;
        let publish_now = credit >= 1.0 && ctx.publish.load(Relaxed);
        if credit >= 1.0 {
            credit -= 1.0;
        }
        let churn = ctx.churn.load(Relaxed);
        for s in &mut sessions {
            // Glasses.
            if s.glasses.as_ref().is_none_or(|g| g.dead) {
                let bearer = format!(
                    "Authorization: Bearer {}\r\n",
                    jwt::glasses_token(&user(s.i), SECRET.as_bytes())
                );
                s.glasses = Ws::connect(ctx.port, "/glasses-ws", &bearer);
                if let Some(g) = s.glasses.as_mut() {
                    g.send(r#"{"type":"connection_init"}"#);
                    if !s.started {
                        g.send(&json!({"type": "start_app", "packageName": CAPTIONS}).to_string());
                        s.started = true;
                    }
                }
            }
            if let Some(g) = s.glasses.as_mut() {
                g.texts();
            }
            // The publisher.
            if let Some(p) = s.stt.as_mut() {
                for m in p.texts() {
                    if m["type"] == "tpa_connection_ack" {
                        s.stt_acked = true;
                    }
                }
                if p.dead {
                    s.stt = None;
                    s.stt_acked = false;
                }
            }
            if publish_now && s.stt_acked {
                if let Some(p) = s.stt.as_mut() {
                    let data = json!({"type": "transcription", "isFinal": true,
                        "text": format!("s{}#{}", s.i, s.next_seq), "transcribeLanguage": "en-US",
                        "startTime": 0, "endTime": 1});
                    p.send(
                        &json!({"type": "data_stream", "streamType": "transcription", "data": data})
                            .to_string(),
                    );
                    if !p.dead {
                        s.next_seq += 1;
                        c.published.fetch_add(1, Relaxed);
                    }
                }
            }
            // The subscriber.
            if let Some(a) = s.captions.as_mut() {
                for m in a.texts() {
                    if m["type"] != "data_stream" {
                        continue;
                    }
                    let text = m["data"]["text"].as_str().unwrap_or("");
                    let Some((who, n)) = text.split_once('#') else {
                        continue;
                    };
                    let seq: u64 = n.parse().unwrap_or(u64::MAX);
                    if who != format!("s{}", s.i) {
                        c.lost.fetch_add(1, Relaxed); // another session's: counted as wrong
                        continue;
                    }
                    match s.last {
                        Some(l) if seq <= l => {
                            c.duplicated.fetch_add(1, Relaxed);
                        }
                        Some(l) => {
                            c.lost.fetch_add(seq - l - 1, Relaxed);
                            c.delivered.fetch_add(1, Relaxed);
                            s.last = Some(seq);
                        }
                        None => {
                            c.delivered.fetch_add(1, Relaxed);
                            s.last = Some(seq);
                        }
                    }
                }
                if a.dead {
                    s.captions = None;
                    s.last = None;
                }
            }
            if s.reconnect_at.is_some_and(|t| t <= Instant::now()) {
                s.reconnect_at = None;
                // As the SDK does after a drop: the same session, on its own.
                s.captions = connect_app(ctx.port, CAPTIONS, s.i);
                s.last = None;
            }
            if churn {
                match rnd(&mut seed) % 4000 {
                    0 => {
                        if let Some(g) = s.glasses.take() {
                            let _ = g.s.shutdown(Shutdown::Both);
                            c.glasses_reconnects.fetch_add(1, Relaxed);
                        }
                    }
                    1 => {
                        if let Some(a) = s.captions.take() {
                            let _ = a.s.shutdown(Shutdown::Both);
                            c.app_crashes.fetch_add(1, Relaxed);
                            // Back within the reconnect grace (5 s), or not (the server then
                            // restarts it through the webhook).
                            let after = Duration::from_millis(500 + rnd(&mut seed) % 9000);
                            s.reconnect_at = Some(Instant::now() + after);
                        }
                    }
                    _ => {}
                }
            }
        }
        if let Some(rest) = tick.checked_sub(turn.elapsed()) {
            std::thread::sleep(rest);
        }
    }
}

/// The app servers' webhook endpoint: answer 200 at once, hand the start to its worker.
fn webhooks(l: TcpListener, to: Vec<Sender<(usize, String)>>, counts: Arc<Counts>) {
    for conn in l.incoming() {
        let Ok(mut c) = conn else { continue };
        let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
        let mut req = Vec::new();
        let mut buf = [0u8; 8192];
        let body = loop {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break None,
                Ok(n) => req.extend_from_slice(&buf[..n]),
            }
            let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&req[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if req.len() >= end + 4 + len {
                break serde_json::from_slice::<Value>(&req[end + 4..end + 4 + len]).ok();
            }
        };
        let ok = "{\"status\":\"success\"}";
        let _ = c.write_all(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{ok}",
                ok.len()
            )
            .as_bytes(),
        );
        let Some(v) = body.filter(|v| v["type"] == "session_request") else {
            continue;
        };
        counts.webhooks.fetch_add(1, Relaxed);
        let sid = v["sessionId"].as_str().unwrap_or("");
        let Some((u, package)) = sid.split_once("@load.example-") else {
            continue;
        };
        let Some(i) = u.strip_prefix("soak").and_then(|n| n.parse::<usize>().ok()) else {
            continue;
        };
        let _ = to[i % to.len()].send((i, package.to_string()));
    }
}

struct Server {
    child: Child,
}

impl Server {
    fn start(config: &std::path::Path, port: u16) -> Server {
        let exe = std::env::current_exe().expect("own path");
        let bin = exe.with_file_name("augmentos-edge");
        let child = Command::new(bin)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the server");
        crate::wait_for_port(port);
        Server { child }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// SIGTERM, then wait for it to finish (the store is written on the way out).
    fn stop(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.pid()).status();
        let _ = self.child.wait();
    }
}

pub fn run(args: &[String]) {
    let o = parse(args);
    let dir = std::env::temp_dir().join(format!("edge-soak-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let hooks = TcpListener::bind(("127.0.0.1", 0)).expect("webhook listener");
    let hook_port = hooks.local_addr().expect("webhook port").port();
    let conns = 4 * o.sessions + 256;
    let app = |p: &str, system: bool| {
        let mut a = json!({"packageName": p, "name": p,
            "publicUrl": format!("http://127.0.0.1:{hook_port}"),
            "hashedApiKey": auth::hash_api_key(&key(p)), "permissions": ["MICROPHONE"]});
        if system {
            a["isSystemApp"] = json!(true);
            a["allowedAddresses"] = json!(["127.0.0.1"]);
            a["publishes"] = json!(["transcription"]);
        }
        a
    };
    let cfg = json!({
        "listen": [format!("127.0.0.1:{}", o.port)],
        "publicWsUrl": format!("ws://127.0.0.1:{}", o.port),
        "internalWsUrl": format!("ws://127.0.0.1:{}", o.port),
        "jwtSecret": SECRET,
        "stateDir": dir,
        "apps": [app(STT, true), app(CAPTIONS, false)],
        "limits": {"maxConnections": conns, "maxConnectionsPerAddress": conns,
            "maxSessions": o.sessions + 16, "maxOutbound": (2 * o.sessions + 16).min(65_536),
            "maxWebhooksPerServer": (2 * o.sessions + 16).min(65_536),
            "lifecycleBurst": 100},
        "timings": {"pingIntervalMs": 0},
    });
    let config = dir.join("soak.json");
    std::fs::write(&config, cfg.to_string()).expect("write the config");
    let mut server = Some(Server::start(&config, o.port));

    let counts = Arc::new(Counts::default());
    let churn = Arc::new(AtomicBool::new(true));
    let restarted = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let publish = Arc::new(AtomicBool::new(true));
    let mut senders = Vec::new();
    let mut threads = Vec::new();
    for w in 0..o.workers {
        let (tx, rx) = channel();
        senders.push(tx);
        let sessions: Vec<Session> = (0..o.sessions)
            .filter(|i| i % o.workers == w)
            .map(|i| Session {
                i,
                glasses: None,
                started: false,
                stt: None,
                stt_acked: false,
                captions: None,
                reconnect_at: None,
                next_seq: 0,
                last: None,
                restored: false,
            })
            .collect();
        let ctx = Ctx {
            port: o.port,
            counts: counts.clone(),
            churn: churn.clone(),
            restarted: restarted.clone(),
            stop: stop.clone(),
            publish: publish.clone(),
        };
        let rate = o.rate;
        threads.push(std::thread::spawn(move || worker(sessions, rx, ctx, rate)));
    }
    {
        let counts = counts.clone();
        std::thread::spawn(move || webhooks(hooks, senders, counts));
    }

    let ticks = stats::clock_ticks().max(1);
    let start = Instant::now();
    let report = |label: &str, pid: &str| {
        let rss = stats::status_kib(pid, "VmRSS");
        let cpu = stats::cpu_ticks(pid).unwrap_or(0) as f64 / ticks as f64;
        let c = &counts;
        println!(
            "{label} t={:>4}s rss={rss} KiB cpu={cpu:.1}s published={} delivered={} lost={} dup={} webhooks={} glasses_reconnects={} app_crashes={} connect_errors={}",
            start.elapsed().as_secs(),
            c.published.load(Relaxed),
            c.delivered.load(Relaxed),
            c.lost.load(Relaxed),
            c.duplicated.load(Relaxed),
            c.webhooks.load(Relaxed),
            c.glasses_reconnects.load(Relaxed),
            c.app_crashes.load(Relaxed),
            c.connect_errors.load(Relaxed),
        );
        rss
    };
    let mut rss_start = None;
    let mut restarted_once = false;
    let total = Duration::from_secs(o.seconds);
    while start.elapsed() < total {
        std::thread::sleep(Duration::from_secs(5));
        let pid = server.as_ref().map(Server::pid).unwrap_or_default();
        let rss = report("soak", &pid);
        rss_start.get_or_insert(rss);
        if !restarted_once && start.elapsed() >= total / 2 {
            restarted_once = true;
            println!("soak: restarting the server on the same state");
            if let Some(s) = server.take() {
                s.stop();
            }
            restarted.store(true, Relaxed);
            server = Some(Server::start(&config, o.port));
        }
    }
    // Quiet: no churn; let crashed apps come back, then every session publishes its last
    // finals, which must all arrive.
    churn.store(false, Relaxed);
    publish.store(false, Relaxed);
    std::thread::sleep(Duration::from_secs(12));
    let before = (
        counts.published.load(Relaxed),
        counts.delivered.load(Relaxed),
    );
    publish.store(true, Relaxed);
    let mut waited = 0;
    let end_published;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        waited += 1;
        let p = counts.published.load(Relaxed) - before.0;
        if p >= o.finals * o.sessions as u64 || waited > 30 {
            publish.store(false, Relaxed);
            std::thread::sleep(Duration::from_secs(3));
            end_published = counts.published.load(Relaxed) - before.0;
            break;
        }
    }
    let end_delivered = counts.delivered.load(Relaxed) - before.1;
    let pid = server.as_ref().map(Server::pid).unwrap_or_default();
    let rss_end = report("soak end", &pid);
    stop.store(true, Relaxed);
    for t in threads {
        let _ = t.join();
    }
    if let Some(s) = server.take() {
        s.stop();
    }
    println!(
        "soak summary: sessions={} duration={}s rss_start={} KiB rss_end={rss_end} KiB \
         apps_restarted_after_restart={} (of {} sessions) quiet_phase_published={end_published} \
         quiet_phase_delivered={end_delivered} lost={} duplicated={}",
        o.sessions,
        start.elapsed().as_secs(),
        rss_start.unwrap_or(0),
        counts.restarted_apps.load(Relaxed),
        o.sessions,
        counts.lost.load(Relaxed) + end_published.saturating_sub(end_delivered),
        counts.duplicated.load(Relaxed),
    );
    let _ = std::fs::remove_dir_all(&dir);
}
