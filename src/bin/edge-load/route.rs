//! `edge-load route`: glasses → apps routing under load, against the real server binary.
//!
//! Setup, as a venue would see it: N glasses sessions (upgrade with a bearer token,
//! `connection_init`, `connection_ack`), each starting M apps with `start_app`. The server POSTs
//! a `session_request` to the webhook listener inside this process, which answers it the way
//! SDK 2.1.29 does: it connects the app WebSocket to `mentraOSWebsocketUrl`, sends
//! `tpa_connection_init`, waits for `tpa_connection_ack`, subscribes to `button_press`, and only
//! then answers the webhook 200.
//!
//! Load: one mio loop ([`crate::driver`]) drives every connection. Each glasses sends masked
//! `button_press` frames carrying a sequence number and the send time (µs), many frames per
//! `write`, flat out or paced (`--rate`); each app is read in large chunks, `"seq":` and `"t":`
//! found by byte search, counted, checked to be its session's sequence 0, 1, 2, … and timed.
//!
//! Variants: `--audio` (binary chunks instead of events), `--unix` (glasses over the Unix
//! socket), `--tls` (glasses and apps over the TLS listener, see [`crate::tls`]), and
//! `--transcripts`: the config adds a publishing system app the server starts in every session;
//! its connection, not the glasses', is then the session's writer, sending interim and final
//! `transcription` data that the apps receive as `transcription:en-US`. `--venue` (also
//! `edge-load venue`): one venue feed instead — the publisher connects once with
//! `sessionId: "venue"` and its transcripts reach the apps of every session; every app must get
//! every final the one publisher sent.
//!
//! Measured window: from the first frame sent until every sent message was delivered to every
//! app (or delivery stopped making progress). Server CPU is utime + stime from
//! `/proc/<pid>/stat` over that window; it is divided by the deliveries.
//!
//! The run goes in phases, one function each: `start_box` (find or start the server),
//! `setup`, `drive` (load, drain, stop), `account` (results into a [`Report`]) and `publish`;
//! what one phase hands the next travels in `Subject`, `Setup` and `Drove`.

use crate::driver::{Driver, GlassesLive, Load, Shared};
use crate::peer::{self, Proto};
use crate::report::{Interims, Report, Rush};
use crate::stats::{self, Histogram};
use crate::tls;
use crate::tls::rustls::ClientConfig;
use crate::wsc::{self, Ws};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const USAGE: &str =
    "  edge-load route [--sessions N] [--apps M] [--seconds D] [--rate R] [--batch B] [--window W] [--display-rate D]
                  [--audio BYTES | --transcripts | --venue [--spread]] [--unix SOCKET | --tls] [--rush]
                  [--port P] [--webhook-port W] [--pin-server CPU] [--pin-load CPU] [--json FILE]
                  [--server-pid PID --config FILE] [--write-config FILE]
                  [--peer PORT | --raw PORT] (with --server-pid PID: a comparison peer)
      N glasses sessions, each with M apps subscribed to button_press, driven flat out (or at R
      messages/s per glasses) for D seconds; reports delivered msgs/s, losses, latency, server
      RSS and server CPU time per delivered message. --peer/--raw drive a peer of
      benches/peers/ instead (apps connected directly, no webhooks). --tls: glasses and apps over
      TLS (a listener with a scratch self-signed certificate written with openssl).
      --transcripts: a publishing system app per session sends transcription data (3 interims,
      then a final: R is finals/s) to the M apps, subscribed to transcription:en-US; finals are
      checked like events, interims the server dropped for a slow app are counted apart.
      --venue (or `edge-load venue …`): one venue feed publisher (sessionId \"venue\") sends
      the transcripts (R finals/s, default 4, 3 interims before each) to the M apps of every
      session; each app must get every final, in order; publish → app latency.
      --spread (with --transcripts or --venue): each interim and final leaves at its own time,
      evenly spaced (4R messages/s), as speech comes in, instead of a unit's 4 in one write.
      --rush: curtain-up. Every session starts its apps at once (no pacing), and the scratch
      config keeps maxWebhooksPerServer and the app connect and webhook timeouts at their
      defaults; reports the time from the first start until the last app is active, the apps
      that failed, and the most webhooks the app server saw in flight at once";

struct Opts {
    sessions: usize,
    apps: usize,
    seconds: f64,
    rate: Option<f64>,
    batch: usize,
    window: u64,
    display_rate: Option<f64>,
    audio: Option<usize>,
    /// The glasses connect over this Unix socket of the server (the apps over TCP).
    unix: Option<String>,
    /// Glasses and apps connect over the server's TLS listener.
    tls: bool,
    /// A publishing system app per session sends transcripts.
    transcripts: bool,
    /// One venue feed publisher sends transcripts to every session (implies `transcripts`).
    venue: bool,
    /// All starts at once, the box's webhook cap and lifecycle timings at their defaults.
    rush: bool,
    /// `--spread`: transcripts each at its own time (see [`Load::spread`]).
    spread: bool,
    port: Option<u16>,
    webhook_port: Option<u16>,
    pin_server: Option<String>,
    pin_load: Option<String>,
    json: Option<PathBuf>,
    server_pid: Option<u32>,
    config: Option<PathBuf>,
    write_config: Option<PathBuf>,
    peer: Option<(Proto, u16)>,
    /// The venue feed is published from outside, over this Unix socket of the box
    /// ([`outside_venue`]): no publisher of ours connects.
    feed_socket: Option<String>,
}

fn parse(args: &[String]) -> Opts {
    let mut o = Opts {
        sessions: 4,
        apps: 4,
        seconds: 10.0,
        rate: None,
        batch: 256,
        window: 4096,
        display_rate: None,
        audio: None,
        unix: None,
        tls: false,
        transcripts: false,
        venue: false,
        rush: false,
        spread: false,
        port: None,
        webhook_port: None,
        pin_server: None,
        pin_load: None,
        json: None,
        server_pid: None,
        config: None,
        write_config: None,
        peer: None,
        feed_socket: None,
    };
    let mut i = 0;
    while i < args.len() {
        if matches!(
            args[i].as_str(),
            "--tls" | "--transcripts" | "--rush" | "--venue" | "--spread"
        ) {
            o.spread |= args[i] == "--spread";
            o.tls |= args[i] == "--tls";
            o.venue |= args[i] == "--venue";
            o.transcripts |= args[i] == "--transcripts" || args[i] == "--venue";
            o.rush |= args[i] == "--rush";
            i += 1;
            continue;
        }
        let v = args.get(i + 1).cloned().unwrap_or_else(|| crate::usage());
        fn num<T: std::str::FromStr>(v: &str) -> T {
            v.parse().unwrap_or_else(|_| crate::usage())
        }
        match args[i].as_str() {
            "--sessions" => o.sessions = num(&v),
            "--apps" => o.apps = num(&v),
            "--seconds" => o.seconds = num(&v),
            "--rate" => o.rate = Some(num(&v)),
            "--batch" => o.batch = num::<usize>(&v).max(1),
            "--window" => o.window = num(&v),
            // 16 kHz, 16-bit mono: 3200 bytes is 100 ms.
            "--unix" => o.unix = Some(v),
            "--audio" => o.audio = Some(num::<usize>(&v).clamp(16, 1 << 20)),
            "--display-rate" => o.display_rate = Some(num(&v)).filter(|r| *r > 0.0),
            "--port" => o.port = Some(num(&v)),
            "--webhook-port" => o.webhook_port = Some(num(&v)),
            "--pin-server" => o.pin_server = Some(v),
            "--pin-load" => o.pin_load = Some(v),
            "--json" => o.json = Some(v.into()),
            "--server-pid" => o.server_pid = Some(num(&v)),
            "--config" => o.config = Some(v.into()),
            "--write-config" => o.write_config = Some(v.into()),
            "--peer" => o.peer = Some((Proto::Ws, num(&v))),
            "--raw" => o.peer = Some((Proto::Raw, num(&v))),
            _ => crate::usage(),
        }
        i += 2;
    }
    let tls_clash = o.tls && (o.unix.is_some() || o.peer.is_some())
        || o.transcripts && (o.audio.is_some() || o.peer.is_some());
    if o.sessions == 0 || o.apps == 0 || o.rate.is_some_and(|r| r <= 0.0) || tls_clash {
        crate::usage()
    }
    if o.venue {
        // A speaking rate, and no window: the one publisher is never held back by the apps.
        o.rate = o.rate.or(Some(4.0));
        o.window = 0;
    }
    o
}

pub fn run(args: &[String]) {
    let o = parse(args);
    if let Err(e) = route(&o) {
        eprintln!("edge-load route: {e}");
        std::process::exit(1);
    }
}

// ---- the scratch config ---------------------------------------------------------------------

/// The box under test: where it listens, how its tokens are signed, its apps.
pub struct Target {
    pub port: u16,
    pub webhook_port: u16,
    pub secret: String,
    pub packages: Vec<String>,
    /// The TLS listener: its port and certificate (PEM).
    pub tls: Option<(u16, PathBuf)>,
    /// The config lists the publishing system app [`PUBLISHER`].
    pub publisher: bool,
}

/// The system app that publishes transcripts into every session (`--transcripts`).
const PUBLISHER: &str = "com.edgeload.transcriber";
/// The venue feed's publisher (`--venue`): connects once, for every session.
const VENUE: &str = "com.edgeload.venue";

pub fn package(j: usize) -> String {
    format!("com.edgeload.app{j}")
}

/// Each app's API key, derived from the secret so a config written earlier still works.
fn api_key(secret: &str, package: &str) -> String {
    augmentos_edge::auth::hash_api_key(&format!("{secret}/{package}"))
}

/// The key file that goes with a scratch certificate.
fn key_path(cert: &std::path::Path) -> PathBuf {
    cert.with_extension("key")
}

/// `rush`: the box's webhook cap and lifecycle timings stay at their defaults (a venue's box),
/// rather than raised for a generator that sets thousands of sessions up.
pub fn scratch_config(t: &Target, sessions: usize, unix: Option<&str>, rush: bool) -> String {
    let app = |p: &str| {
        json!({
            "packageName": p,
            "name": format!("edge-load {p}"),
            "publicUrl": format!("http://127.0.0.1:{}/{p}", t.webhook_port),
            "hashedApiKey": augmentos_edge::auth::hash_api_key(&api_key(&t.secret, p)),
            "permissions": ["MICROPHONE"],
        })
    };
    let mut apps: Vec<Value> = t.packages.iter().map(|p| app(p)).collect();
    if t.publisher {
        // Started by the server in every session; it connects back from loopback.
        let mut p = app(PUBLISHER);
        p["isSystemApp"] = json!(true);
        p["publishes"] = json!(["transcription"]);
        p["allowedAddresses"] = json!(["127.0.0.1"]);
        apps.push(p);
    }
    // The venue feed (`--venue`): never started per session, so listed always.
    let mut v = app(VENUE);
    v["isSystemApp"] = json!(true);
    v["publishes"] = json!(["transcription"]);
    // Over the Unix socket too: `edge-load venue --transcriber` connects the real one there.
    v["allowedAddresses"] = json!(["127.0.0.1", "unix"]);
    v["venueFeed"] = json!("main");
    apps.push(v);
    // Every app start, the publishers' too, holds a webhook and then a connection.
    let starts = sessions * (t.packages.len() + usize::from(t.publisher));
    let mut cfg = json!({
        "listen": std::iter::once(json!(format!("127.0.0.1:{}", t.port)))
            .chain(unix.map(|p| json!(format!("unix:{p}"))))
            .chain(t.tls.as_ref().map(|(port, cert)| json!({
                "address": format!("127.0.0.1:{port}"),
                "tls": {"certificate": cert, "key": key_path(cert)},
            })))
            .collect::<Vec<_>>(),
        // The apps come back over TLS too when there is a TLS listener.
        "publicWsUrl": match &t.tls {
            Some((port, _)) => format!("wss://localhost:{port}"),
            None => format!("ws://127.0.0.1:{}", t.port),
        },
        "jwtSecret": t.secret,
        "limits": {
            "maxConnections": (starts + sessions + 64).max(1024),
            // Every load connection comes from 127.0.0.1.
            "maxConnectionsPerAddress": (starts + sessions + 64).max(1024),
            "maxSessions": (sessions + 16).max(10_000),
            "maxOutbound": (starts + 16).clamp(256, 65_536),
            "maxWebhooksPerServer": (starts + 16).min(65_536),
            "lifecycleBurst": (t.packages.len() + 10).min(10_000),
        },
        // Setting up thousands of sessions takes the generator longer than a phone would.
        "timings": {
            "appConnectTimeoutMs": 120_000,
            "webhookTimeoutMs": 120_000,
            "appInitTimeoutMs": 120_000,
            "glassesInitTimeoutMs": 120_000,
            "handshakeTimeoutMs": 120_000,
            // The glasses are not read until the load starts, so no pings to answer meanwhile.
            "pingIntervalMs": 0,
            // Displays go straight through, so --display-rate measures routing, not throttling.
            "displayThrottleMs": 0,
            "displayBootMs": 0,
            "displayMinLifetimeMs": 0,
        },
        "apps": apps,
    });
    if rush {
        cfg["limits"]
            .as_object_mut()
            .map(|l| l.remove("maxWebhooksPerServer"));
        if let Some(t) = cfg["timings"].as_object_mut() {
            t.remove("appConnectTimeoutMs");
            t.remove("webhookTimeoutMs");
        }
    }
    serde_json::to_string_pretty(&cfg).unwrap_or_default()
}

/// Read back a config written by `--write-config`.
fn read_config(path: &PathBuf, port: Option<u16>, apps: usize) -> Result<Target, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let port_of = |s: &str| s.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
    let listen: Vec<&Value> = v["listen"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let port = port
        .or_else(|| listen.iter().find_map(|l| l.as_str().and_then(port_of)))
        .ok_or("no TCP port: give --port")?;
    let tls = listen.iter().find_map(|l| {
        let port = l["address"].as_str().and_then(port_of)?;
        Some((port, PathBuf::from(l["tls"]["certificate"].as_str()?)))
    });
    let secret = v["jwtSecret"]
        .as_str()
        .ok_or("the config has no jwtSecret (write one with --write-config)")?
        .to_string();
    let listed: Vec<&Value> = v["apps"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let packages: Vec<String> = (0..apps).map(package).collect();
    let mut webhook_port = None;
    for p in &packages {
        let app = listed
            .iter()
            .find(|a| a["packageName"] == p.as_str())
            .ok_or_else(|| {
                format!("the config has no app {p} (write one with --write-config --apps {apps})")
            })?;
        let url = app["publicUrl"].as_str().unwrap_or("");
        let wp = url
            .strip_prefix("http://127.0.0.1:")
            .and_then(|r| r.split('/').next())
            .and_then(|p| p.parse::<u16>().ok())
            .ok_or_else(|| format!("{p}: publicUrl {url} is not http://127.0.0.1:PORT/…"))?;
        webhook_port = Some(wp);
    }
    Ok(Target {
        port,
        webhook_port: webhook_port.unwrap_or(0),
        secret,
        packages,
        tls,
        publisher: listed.iter().any(|a| a["packageName"] == PUBLISHER),
    })
}

/// A loopback port that was free a moment ago and that this run has not handed out before (the
/// kernel can give a just-released port out again at once).
pub fn free_port() -> Result<u16, String> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..64 {
        let port = TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| format!("no free loopback port: {e}"))?;
        if !given.contains(&port) {
            given.push(port);
            return Ok(port);
        }
    }
    Err("no fresh loopback port after 64 tries".into())
}

/// `taskset` a process (all its threads) onto `cpu`.
fn pin(what: &str, pid: u32, cpu: &str) {
    let ok = Command::new("taskset")
        .args(["-a", "-p", "-c", cpu, &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success());
    match ok {
        Ok(true) => eprintln!("pinned {what} (pid {pid}) to CPU {cpu}"),
        Ok(false) => eprintln!("pinning {what} to CPU {cpu} failed (taskset refused); not pinned"),
        Err(_) => eprintln!("pinning unavailable (no taskset); {what} not pinned"),
    }
}

// ---- the webhook listener and the apps -----------------------------------------------------

pub fn webhook_listener(l: TcpListener, sh: Arc<Shared>) {
    for c in l.incoming().flatten() {
        let sh = sh.clone();
        // Open from its accept until just before its answer is written: within the span the
        // box counts it in flight (from before its connect until it has read the answer).
        let open = sh.webhooks_open.fetch_add(1, Relaxed) + 1;
        sh.webhooks_peak.fetch_max(open, Relaxed);
        thread::spawn(move || webhook(c, &sh));
    }
}

/// Read one HTTP request: (path, body).
fn read_request(c: &mut TcpStream) -> Result<(String, Vec<u8>), String> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..at]).into_owned();
            let len = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= at + 4 + len {
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                return Ok((path, buf[at + 4..at + 4 + len].to_vec()));
            }
        }
        match c.read(&mut tmp) {
            Ok(0) if buf.is_empty() => return Err(String::new()),
            Ok(0) => return Err("webhook request cut short".into()),
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) => return Err(format!("webhook request: {e}")),
        }
    }
}

/// A webhook connection counted open at the app server until it is answered (or dropped).
struct Open<'a>(&'a AtomicUsize, bool);

impl Open<'_> {
    fn close(&mut self) {
        if !std::mem::replace(&mut self.1, true) {
            self.0.fetch_sub(1, Relaxed);
        }
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.close();
    }
}

fn respond(c: &mut TcpStream, open: &mut Open<'_>, status: &str, body: &str) {
    open.close();
    let _ = c.write_all(
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
}

fn webhook(mut c: TcpStream, sh: &Shared) {
    let open = &mut Open(&sh.webhooks_open, false);
    c.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let (path, body) = match read_request(&mut c) {
        Ok(r) => r,
        // Closed before a byte was sent: counted, not an error (the server gave up on it).
        Err(e) if e.is_empty() => {
            match sh.server_stopped.load(Relaxed) {
                true => sh.empty_after_stop.fetch_add(1, Relaxed),
                false => sh.empty_webhooks.fetch_add(1, Relaxed),
            };
            return;
        }
        Err(e) => return sh.error(e),
    };
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if v["type"] != "session_request" {
        return respond(&mut c, open, "200 OK", r#"{"status":"success"}"#);
    }
    let package = path
        .trim_start_matches('/')
        .strip_suffix("/webhook")
        .unwrap_or("")
        .to_string();
    let user = v["userId"].as_str().unwrap_or("");
    if !sh.users.iter().any(|u| u == user) {
        // A session of an earlier run on the same server (its apps being restarted).
        sh.ignored.fetch_add(1, Relaxed);
        return respond(
            &mut c,
            open,
            "500 Internal Server Error",
            r#"{"status":"error","message":"Failed to connect"}"#,
        );
    }
    // The publisher subscribes to nothing: it only sends.
    let streams = match package == PUBLISHER {
        true => &[][..],
        false => &sh.streams[..],
    };
    match connect_app(sh, &package, &v, streams) {
        Ok((ws, session)) if package == PUBLISHER => {
            respond(&mut c, open, "200 OK", r#"{"status":"success"}"#);
            if let Some(slot) = sh.publishers.lock().unwrap().get_mut(session) {
                *slot = Some(ws);
                sh.publishers_ready.fetch_add(1, Relaxed);
            }
        }
        Ok((ws, session)) => {
            // As the SDK: the webhook is answered only once the app is connected.
            respond(&mut c, open, "200 OK", r#"{"status":"success"}"#);
            drop(c);
            sh.ready.fetch_add(1, Relaxed);
            if let Some(apps) = sh.apps.get() {
                apps.add(ws, session, package);
            }
        }
        Err(e) => {
            respond(
                &mut c,
                open,
                "500 Internal Server Error",
                r#"{"status":"error","message":"Failed to connect"}"#,
            );
            sh.error(format!("app {package}: {e}"));
        }
    }
}

/// Connect, authenticate and subscribe one app for the session of a `session_request`.
fn connect_app(
    sh: &Shared,
    package: &str,
    v: &Value,
    streams: &[&str],
) -> Result<(Ws, usize), String> {
    let session_id = v["sessionId"].as_str().ok_or("no sessionId")?;
    let user = v["userId"].as_str().ok_or("no userId")?;
    let session = sh
        .users
        .iter()
        .position(|u| u == user)
        .ok_or_else(|| format!("session_request for unknown user {user}"))?;
    let url = v["mentraOSWebsocketUrl"]
        .as_str()
        .ok_or("no mentraOSWebsocketUrl")?;
    let (rest, tls) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
        (Some(rest), _) => (rest, None),
        (None, Some(rest)) => (
            rest,
            Some(
                sh.tls
                    .as_ref()
                    .ok_or("a wss:// app URL, but not run with --tls")?,
            ),
        ),
        _ => return Err(format!("mentraOSWebsocketUrl {url} is not ws:// or wss://")),
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let port = host
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .ok_or_else(|| format!("no port in {url}"))?;
    let mut ws = match tls {
        Some(config) => Ws::connect_tls(port, &format!("/{path}"), "", 64 << 10, config)?,
        None => Ws::connect(port, &format!("/{path}"), "", 64 << 10)?,
    };
    let key = api_key(&sh.secret, package);
    peer::init_app(&mut ws, session_id, package, &key, streams)?;
    Ok((ws, session))
}

// ---- the glasses ---------------------------------------------------------------------------

/// The event sent before the numbered ones, until every app has received one.
pub const PROBE: &[u8] = br#"{"type":"button_press","buttonId":"probe","pressType":"short"}"#;

/// Glasses of `user`, over TCP to `port`, the Unix socket `unix`, or TLS (`tls`).
pub fn open_glasses(
    port: u16,
    unix: Option<&str>,
    tls: Option<(u16, &Arc<ClientConfig>)>,
    user: &str,
    secret: &str,
) -> Result<Ws, String> {
    let token = augmentos_edge::auth::jwt::glasses_token(user, secret.as_bytes());
    let auth = format!("Authorization: Bearer {token}\r\n");
    let mut ws = match (unix, tls) {
        (Some(path), _) => Ws::connect_unix(path, "/glasses-ws", &auth, 64 << 10)?,
        (None, Some((port, config))) => {
            Ws::connect_tls(port, "/glasses-ws", &auth, 64 << 10, config)?
        }
        (None, None) => Ws::connect(port, "/glasses-ws", &auth, 64 << 10)?,
    };
    ws.send(wsc::TEXT, br#"{"type":"connection_init"}"#)
        .map_err(|e| e.to_string())?;
    ws.wait_for_text("connection_ack", "connection_error")
        .map_err(|e| format!("glasses {user}: no connection_ack: {e}"))?;
    Ok(ws)
}

// ---- the run -------------------------------------------------------------------------------

/// A server sample: CPU ticks and RSS.
#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    /// Busy ticks of the whole machine (all CPUs).
    busy_ticks: u64,
    server_ticks: u64,
    /// The server's system time (in the kernel, for it), part of `server_ticks`.
    server_sys_ticks: u64,
    self_ticks: u64,
    delivered: u64,
}

impl Sample {
    /// Now: the machine's and both processes' CPU ticks, and the deliveries so far.
    fn take(pid_s: &str, sh: &Shared) -> Sample {
        Sample {
            at: Instant::now(),
            busy_ticks: stats::machine_busy_ticks(),
            server_ticks: stats::cpu_ticks(pid_s).unwrap_or(0),
            server_sys_ticks: stats::cpu_split(pid_s).map_or(0, |(_, sys)| sys),
            self_ticks: stats::cpu_ticks("self").unwrap_or(0),
            delivered: sh.delivered.load(Relaxed),
        }
    }
}

/// The box under load, found or started: what [`route`]'s phases hand on about it.
struct Subject {
    target: Target,
    /// The server this run started (killed when dropped), `None` for one already running.
    server: Option<crate::Server>,
    pid: u32,
    pid_s: String,
    /// Where its config and log are, for the report.
    config_note: String,
    /// The scratch files of a server this run started, removed after a clean run.
    scratch: Option<Vec<PathBuf>>,
}

/// What the setup leaves for the load and the accounting (with the [`Driver`] and the
/// glasses, which the load takes): every connection made, every app subscribed.
struct Setup {
    sh: Arc<Shared>,
    /// Apps in all: sessions × apps.
    want: usize,
    setup_secs: f64,
    rush: Option<Rush>,
}

/// What the load and the drain measured, for the accounting.
struct Drove {
    lives: Vec<Arc<GlassesLive>>,
    /// Clock ticks per second.
    tck: f64,
    first: Sample,
    end: Sample,
    sent_total: u64,
    expected: u64,
    drive_secs: f64,
    /// Server RSS (KiB) at the start, at most while sampled, its high-water mark, at the end.
    rss: [u64; 4],
    server_alive: bool,
    counters: Vec<String>,
}

/// One `edge-load route` run, phase by phase: the box, the setup, the load, the accounting,
/// the report.
fn route(o: &Opts) -> Result<(), String> {
    if let Some(cpu) = &o.pin_load {
        // Before any thread starts: they all inherit it.
        pin("the load generator", std::process::id(), cpu);
    }
    stats::now_us();
    if let Some(path) = &o.write_config {
        return write_config(o, path);
    }
    let mut subject = start_box(o)?;
    let (ready, driver, glasses) = setup(o, &subject)?;
    let drove = drive(o, &mut subject, &ready, driver, glasses);
    let report = account(o, &subject, ready, drove);
    publish(o, subject, report)
}

/// The box and its sessions as a venue feed published from outside sees them
/// ([`outside_venue`]).
pub struct VenueBox<'a> {
    pub pid: u32,
    /// The feed's package and API key.
    pub package: &'static str,
    pub key: String,
    /// Apps subscribed to the feed's transcripts, in all.
    pub apps: usize,
    pub sh: &'a Shared,
}

/// A venue run whose feed someone else publishes (`edge-load venue --transcriber`): the box
/// (with a Unix listener at `socket`) and every session's apps set up as for `--venue`, then
/// `feed` runs the publisher and returns once what it published was delivered; then the run
/// stops and every app's results come back. `args` are `route`'s.
pub fn outside_venue<T>(
    args: &[String],
    socket: &str,
    feed: impl FnOnce(&VenueBox) -> T,
) -> Result<(T, Vec<crate::driver::AppResult>), String> {
    let mut o = parse(args);
    (o.venue, o.transcripts, o.feed_socket) = (true, true, Some(socket.to_string()));
    if o.peer.is_some() || o.server_pid.is_some() || o.unix.is_some() || o.tls {
        return Err(
            "--transcriber starts its own box: no --peer, --server-pid, --unix or --tls".into(),
        );
    }
    let mut subject = start_box(&o)?;
    let (ready, driver, glasses) = setup(&o, &subject)?;
    let out = feed(&VenueBox {
        pid: subject.pid,
        package: VENUE,
        key: api_key(&ready.sh.secret, VENUE),
        apps: ready.want,
        sh: &ready.sh,
    });
    stop(&mut subject, &ready.sh, driver);
    drop(glasses);
    for f in subject.scratch.iter().flatten() {
        let _ = std::fs::remove_file(f);
    }
    let results = std::mem::take(&mut *ready.sh.results.lock().unwrap());
    Ok((out, results))
}

/// `--write-config`: write a config for a server started by hand, say how to run it.
fn write_config(o: &Opts, path: &PathBuf) -> Result<(), String> {
    let port = o.port.unwrap_or(18_110);
    let t = Target {
        port,
        webhook_port: o.webhook_port.unwrap_or(18_111),
        secret: stats::random_hex(24),
        packages: (0..o.apps).map(package).collect(),
        tls: o.tls.then(|| (port + 2, path.with_extension("crt"))),
        publisher: o.transcripts && !o.venue,
    };
    if let Some((_, cert)) = &t.tls {
        tls::make_certificate(cert, &key_path(cert))?;
    }
    std::fs::write(
        path,
        scratch_config(&t, o.sessions, o.unix.as_deref(), o.rush),
    )
    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!(
        "wrote {}; run: augmentos-edge serve --config {0}\nthen: edge-load route --server-pid PID --config {0} --apps {}{}{}",
        path.display(),
        o.apps,
        if o.tls { " --tls" } else { "" },
        if o.transcripts { " --transcripts" } else { "" },
    );
    Ok(())
}

/// The box: one we start on a scratch config, or one already running (a peer, or a server
/// on a config written by `--write-config`); pinned if asked.
fn start_box(o: &Opts) -> Result<Subject, String> {
    let (target, server, pid, config_note, scratch) = match (o.peer, o.server_pid) {
        (Some((proto, port)), pid) => {
            let pid = pid.ok_or("--peer/--raw need --server-pid PID: the peer's process")?;
            let t = Target {
                port,
                webhook_port: 0,
                secret: String::new(),
                packages: (0..o.apps).map(package).collect(),
                tls: None,
                publisher: false,
            };
            (t, None, pid, format!("{proto:?} peer on port {port}"), None)
        }
        (None, Some(pid)) => {
            let cfg = o.config.as_ref().ok_or(
                "--server-pid needs --config FILE: the config that server runs on, written by --write-config",
            )?;
            let t = read_config(cfg, o.port, o.apps)?;
            (
                t,
                None,
                pid,
                format!("running server, config {}", cfg.display()),
                None,
            )
        }
        (None, None) => {
            let port = match o.port {
                Some(p) => p,
                None => free_port()?,
            };
            let webhook_port = match o.webhook_port {
                Some(p) => p,
                None => free_port()?,
            };
            let base = std::env::temp_dir().join(format!("edge-load-route-{}", std::process::id()));
            let cfg = base.with_extension("json");
            let log = base.with_extension("log");
            let mut files = vec![cfg.clone(), log.clone()];
            let tls = match o.tls {
                true => {
                    let cert = base.with_extension("crt");
                    tls::make_certificate(&cert, &key_path(&cert))?;
                    files.extend([key_path(&cert), cert.clone()]);
                    Some((free_port()?, cert))
                }
                false => None,
            };
            let t = Target {
                port,
                webhook_port,
                secret: stats::random_hex(24),
                packages: (0..o.apps).map(package).collect(),
                tls,
                publisher: o.transcripts && !o.venue,
            };
            let unix = o.unix.as_deref().or(o.feed_socket.as_deref());
            std::fs::write(&cfg, scratch_config(&t, o.sessions, unix, o.rush))
                .map_err(|e| format!("cannot write {}: {e}", cfg.display()))?;
            let server = crate::start_box(&cfg, &log)?;
            let pid = server.0.id();
            (
                t,
                Some(server),
                pid,
                format!("config {}, log {}", cfg.display(), log.display()),
                Some(files),
            )
        }
    };
    let pid_s = pid.to_string();
    if stats::cpu_ticks(&pid_s).is_none() {
        return Err(format!("no process {pid} (/proc/{pid}/stat unreadable)"));
    }
    if let Some(cpu) = &o.pin_server {
        pin("the server", pid, cpu);
    }
    Ok(Subject {
        target,
        server,
        pid,
        pid_s,
        config_note,
        scratch,
    })
}

/// Setup: the webhook listener and the driver, then the glasses, then every app of every
/// session, until each is subscribed and has received a probe event.
fn setup(o: &Opts, b: &Subject) -> Result<(Setup, Driver, Vec<Ws>), String> {
    let target = &b.target;
    let listener = match o.peer {
        Some(_) => None,
        None => Some(
            TcpListener::bind(("127.0.0.1", target.webhook_port)).map_err(|e| {
                format!("webhook listener on 127.0.0.1:{}: {e}", target.webhook_port)
            })?,
        ),
    };
    crate::wait_for_port(target.port);
    let tls_config = match (&target.tls, o.tls) {
        (Some((port, cert)), true) => {
            crate::wait_for_port(*port);
            Some(tls::client_config(cert)?)
        }
        (None, true) => return Err("--tls: the config has no TLS listener".into()),
        (_, false) => None,
    };

    // Users of this run only, so a run never joins the sessions of an earlier one.
    let users = (0..o.sessions)
        .map(|i| format!("load{i}.{}@edgeload.test", std::process::id()))
        .collect();
    let streams = match (o.audio, o.transcripts) {
        (_, true) => vec!["button_press", "transcription:en-US"],
        (Some(_), false) => vec!["button_press", "audio_chunk"],
        (None, false) => vec!["button_press"],
    };
    let sh = Arc::new(Shared::new(
        target.secret.clone(),
        users,
        streams,
        tls_config.clone(),
    ));
    let driver = Driver::start(sh.clone()).map_err(|e| format!("driver: {e}"))?;
    let _ = sh.apps.set(driver.app_sink());
    if let Some(listener) = listener {
        let sh = sh.clone();
        thread::spawn(move || webhook_listener(listener, sh));
    }

    let want = o.sessions * o.apps;
    // Setup: glasses, then every app of every session.
    let setup_start = Instant::now();
    let mut glasses = Vec::with_capacity(o.sessions);
    for user in &sh.users {
        glasses.push(match o.peer {
            Some((proto, port)) => peer::open_glasses(proto, port, user)?,
            None => open_glasses(
                target.port,
                o.unix.as_deref(),
                target.tls.as_ref().map(|t| t.0).zip(tls_config.as_ref()),
                user,
                &target.secret,
            )?,
        });
    }
    let starts_at = start_apps(o, target, &sh, &mut glasses)?.unwrap_or(setup_start);
    let rush = wait_ready(o, b, &sh, want, starts_at)?;
    if o.venue && o.feed_socket.is_none() {
        let mut ws = Ws::connect(target.port, "/app-ws", "", 64 << 10)?;
        peer::init_app(&mut ws, "venue", VENUE, &api_key(&sh.secret, VENUE), &[])
            .map_err(|e| format!("venue publisher: {e}"))?;
        sh.publishers.lock().unwrap()[0] = Some(ws);
    }
    // Probe until every app got an event, so no subscription is still on its way when the
    // numbered messages start.
    let warm_limit = 10 + want as u64 / 500;
    let warm_deadline = Instant::now() + Duration::from_secs(warm_limit);
    while sh.warm.load(Relaxed) < want {
        if Instant::now() > warm_deadline {
            return Err(format!(
                "setup failed: only {} of {want} subscribed apps received a probe event within {warm_limit} s",
                sh.warm.load(Relaxed)
            ));
        }
        for g in &mut glasses {
            g.send(wsc::TEXT, PROBE)
                .map_err(|e| format!("probe: {e}"))?;
        }
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(50));
    let setup_secs = setup_start.elapsed().as_secs_f64();
    eprintln!(
        "setup: {} glasses sessions × {} apps connected and subscribed in {:.2} s",
        o.sessions, o.apps, setup_secs
    );
    let ready = Setup {
        sh,
        want,
        setup_secs,
        rush,
    };
    Ok((ready, driver, glasses))
}

/// Start every app of every session: a peer's apps the load generator connects itself, a
/// few at a time; the server's with `start_app`. Returns when the first `start_app` was sent
/// (`None` for a peer).
fn start_apps(
    o: &Opts,
    target: &Target,
    sh: &Arc<Shared>,
    glasses: &mut [Ws],
) -> Result<Option<Instant>, String> {
    let want = o.sessions * o.apps;
    let mut starts_at = None;
    match o.peer {
        // A peer: the load generator connects the apps itself, a few at a time.
        Some((proto, port)) => {
            let todo: Vec<(usize, String)> = (0..o.sessions)
                .flat_map(|s| target.packages.iter().map(move |p| (s, p.clone())))
                .collect();
            let todo = Arc::new(Mutex::new(todo));
            for _ in 0..8 {
                let (sh, todo) = (sh.clone(), todo.clone());
                thread::spawn(move || loop {
                    let Some((session, p)) = todo.lock().unwrap().pop() else {
                        return;
                    };
                    let user = &sh.users[session];
                    match peer::connect_app(proto, port, user, &p, &sh.streams) {
                        Ok(ws) => {
                            if let Some(apps) = sh.apps.get() {
                                apps.add(ws, session, p);
                            }
                            sh.ready.fetch_add(1, Relaxed);
                        }
                        Err(e) => sh.error(format!("app {p} of {user}: {e}")),
                    }
                });
            }
        }
        // The server: start the apps, at most a few hundred waiting at once (each waiting
        // start holds a webhook connection, a descriptor on both sides), or all at once
        // (--rush: the box queues them per app server).
        None => {
            let setup_deadline = Instant::now() + Duration::from_secs(30 + want as u64 / 200);
            for (n, g) in glasses.iter_mut().enumerate() {
                while !o.rush && n * o.apps > sh.ready.load(Relaxed) + 256 {
                    if Instant::now() > setup_deadline || !sh.errors.lock().unwrap().is_empty() {
                        break;
                    }
                    thread::sleep(Duration::from_millis(1));
                }
                if n == 0 {
                    starts_at = Some(Instant::now());
                }
                for p in &target.packages {
                    let msg = json!({"type": "start_app", "packageName": p}).to_string();
                    g.send(wsc::TEXT, msg.as_bytes())
                        .map_err(|e| format!("start_app {p}: {e}"))?;
                }
            }
        }
    }
    Ok(starts_at)
}

/// Wait until every app (and, with `--transcripts`, every publisher) is connected; with
/// `--rush`, say how long the starts took and how many webhooks were in flight at once.
fn wait_ready(
    o: &Opts,
    b: &Subject,
    sh: &Shared,
    want: usize,
    starts_at: Instant,
) -> Result<Option<Rush>, String> {
    let target = &b.target;
    let setup_limit = 30 + want as u64 / 200;
    let setup_deadline = Instant::now() + Duration::from_secs(setup_limit);
    if o.transcripts && !o.venue && !target.publisher {
        return Err(format!("--transcripts: the config lists no {PUBLISHER} (write one with --write-config --transcripts)"));
    }
    let publishers = if o.transcripts && !o.venue {
        o.sessions
    } else {
        0
    };
    while sh.ready.load(Relaxed) < want || sh.publishers_ready.load(Relaxed) < publishers {
        if let Some(e) = sh.errors.lock().unwrap().first() {
            return Err(format!("setup failed: {e}"));
        }
        if Instant::now() > setup_deadline {
            return Err(format!(
                "setup failed: only {} of {want} apps and {} of {publishers} publishers connected within {setup_limit} s; server: {} ({})",
                sh.ready.load(Relaxed),
                sh.publishers_ready.load(Relaxed),
                start_summary(target.port),
                b.config_note,
            ));
        }
        thread::sleep(Duration::from_millis(10));
    }
    let rush = (o.rush && o.peer.is_none()).then(|| Rush {
        last_active_secs: starts_at.elapsed().as_secs_f64(),
        webhooks_peak: sh.webhooks_peak.load(Relaxed),
        server: start_summary(target.port),
    });
    if let Some(r) = &rush {
        eprintln!(
            "rush: {want} app starts sent at once; the last app active {:.2} s after the first start; \
             webhooks in flight at the app server at most {} at once; server: {}",
            r.last_active_secs, r.webhooks_peak, r.server,
        );
    }
    Ok(rush)
}

/// The numbers printed once a second while the load runs and drains.
struct Progress<'a> {
    pid_s: &'a str,
    start: Instant,
    tck: f64,
    last: Sample,
    rss_peak: u64,
}

impl Progress<'_> {
    /// Print the last second's line: delivery rate, server CPU and RSS, counts so far.
    fn tick(&mut self, sh: &Shared, lives: &[Arc<GlassesLive>]) {
        let s = Sample::take(self.pid_s, sh);
        let last = self.last;
        let dt = (s.at - last.at).as_secs_f64().max(1e-9);
        let rss = stats::status_kib(self.pid_s, "VmRSS");
        self.rss_peak = self.rss_peak.max(rss);
        eprintln!(
            "[{:6.1} s] delivered {:>10.0}/s  server CPU {:5.1} %  server RSS {:>7} KiB  sent {:>10}  delivered {:>11}  apps disconnected {}",
            (s.at - self.start).as_secs_f64(),
            s.delivered.saturating_sub(last.delivered) as f64 / dt,
            s.server_ticks.saturating_sub(last.server_ticks) as f64 / self.tck / dt * 100.0,
            rss,
            sent(lives),
            s.delivered,
            sh.disconnected.load(Relaxed),
        );
        self.last = s;
    }
}

/// Numbered messages sent by all glasses (or publishers) so far.
fn sent(lives: &[Arc<GlassesLive>]) -> u64 {
    lives.iter().map(|l| l.sent.load(Relaxed)).sum::<u64>()
}

/// Drive: hand the glasses to the driver for `--seconds`, then drain until everything sent
/// was delivered (or delivery stalls for 3 s), sampling the server; then stop the run.
fn drive(o: &Opts, b: &mut Subject, ready: &Setup, driver: Driver, glasses: Vec<Ws>) -> Drove {
    let (sh, want, target) = (&ready.sh, ready.want, &b.target);
    let pid_s = b.pid_s.as_str();
    let tck = stats::clock_ticks() as f64;
    let rss_start = stats::status_kib(pid_s, "VmRSS");
    let lives: Vec<Arc<GlassesLive>> = (0..o.sessions).map(|_| Arc::default()).collect();
    let first = Sample::take(pid_s, sh);
    let start = first.at;
    let deadline = start + Duration::from_secs_f64(o.seconds);
    // What each glasses sends when the run stops: stop its apps, close (raw: a TCP shutdown).
    let goodbye = match o.peer {
        Some((Proto::Raw, _)) => None,
        _ => {
            let mut out = Vec::new();
            for p in target.packages.iter().filter(|_| o.peer.is_none()) {
                let msg = json!({"type": "stop_app", "packageName": p}).to_string();
                wsc::push_masked(&mut out, wsc::TEXT, msg.as_bytes(), stats::mask_key());
            }
            let code = 1000u16.to_be_bytes();
            wsc::push_masked(&mut out, wsc::CLOSE, &code, stats::mask_key());
            Some(out)
        }
    };
    let publishers = std::mem::take(&mut *sh.publishers.lock().unwrap());
    let mut writers: Vec<_> = glasses
        .into_iter()
        .zip(publishers)
        .zip(lives.iter().cloned())
        .map(|((g, p), l)| (g, p, l))
        .collect();
    // A venue feed: its one publisher writes; the other sessions' glasses only stay connected.
    let _idle = if o.venue {
        writers.split_off(1)
    } else {
        Vec::new()
    };
    driver.drive(
        writers,
        Load {
            start,
            deadline,
            rate: o.rate,
            batch: o.batch,
            window: o.window,
            display_rate: o.display_rate,
            audio: o.audio,
            transcripts: o.transcripts,
            spread: o.spread,
            goodbye,
        },
    );
    let mut progress = Progress {
        pid_s,
        start,
        tck,
        last: first,
        rss_peak: rss_start,
    };
    let mut k = 1;
    while !driver.writers_done.load(Relaxed) {
        let tick = start + Duration::from_secs(k);
        let now = Instant::now();
        if tick > now {
            thread::sleep((tick - now).min(Duration::from_millis(50)));
            if Instant::now() < tick {
                continue;
            }
        }
        progress.tick(sh, &lives);
        k += 1;
    }
    let sent_total = sent(&lives);
    let expected = sent_total * want as u64 / if o.venue { 1 } else { o.sessions as u64 };
    let drive_secs = (Instant::now() - start).as_secs_f64();

    // Drain: until everything sent was delivered, or delivery stalls for 3 s.
    let mut seen = (sh.delivered.load(Relaxed), Instant::now());
    loop {
        let d = sh.delivered.load(Relaxed);
        if d >= expected || sh.disconnected.load(Relaxed) >= want {
            break;
        }
        if d != seen.0 {
            seen = (d, Instant::now());
        } else if seen.1.elapsed() > Duration::from_secs(3) {
            eprintln!("drain: delivery stopped at {d} of {expected}");
            break;
        }
        if Instant::now() >= start + Duration::from_secs(k) {
            progress.tick(sh, &lives);
            k += 1;
        }
        thread::sleep(Duration::from_millis(1));
    }
    let end = Sample::take(pid_s, sh);
    let server_alive = stats::alive(pid_s);
    let rss_end = stats::status_kib(pid_s, "VmRSS");
    let rss_peak = progress.rss_peak.max(rss_end);
    let hwm = stats::status_kib(pid_s, "VmHWM");
    let counters = match o.peer {
        Some(_) => Vec::new(),
        None => server_counters(target.port),
    };
    stop(b, sh, driver);
    Drove {
        lives,
        tck,
        first,
        end,
        sent_total,
        expected,
        drive_secs,
        rss: [rss_start, rss_peak, hwm, rss_end],
        server_alive,
        counters,
    }
}

/// Stop: the driver publishes its results and the glasses say goodbye; the server this run
/// started is killed once its webhooks are answered.
fn stop(b: &mut Subject, sh: &Shared, driver: Driver) {
    sh.stop.store(true, Relaxed);
    driver.join();
    if b.server.is_some() {
        // The goodbye's stop_app made the server send a stop_request per app: let them be
        // answered before killing it, or the connections it opened and had not yet written
        // to are cut (the listener then sees them closed before a request).
        let settle = Instant::now() + Duration::from_secs(10);
        while webhooks_pending(b.target.port) > 0.0 && Instant::now() < settle {
            thread::sleep(Duration::from_millis(20));
        }
    }
    sh.server_stopped.store(true, Relaxed);
    drop(b.server.take());
    // What the listener still had to accept arrives within moments.
    thread::sleep(Duration::from_millis(300));
}

/// Account: merge the apps' results into the run's [`Report`] (losses, order, latency, the
/// server's CPU and RSS over the measured window).
fn account(o: &Opts, b: &Subject, ready: Setup, d: Drove) -> Report {
    let Setup {
        sh,
        want,
        setup_secs,
        rush,
    } = ready;
    let lives = &d.lives;
    let results = std::mem::take(&mut *sh.results.lock().unwrap());
    let mut hist = Histogram::default();
    let fanout = if o.venue { want as u64 } else { o.apps as u64 };
    let mut interims = o.transcripts.then(|| Interims {
        sent: lives.iter().map(|l| l.interims.load(Relaxed)).sum(),
        expected: lives.iter().map(|l| l.interims.load(Relaxed)).sum::<u64>() * fanout,
        ..Interims::default()
    });
    let (mut delivered, mut gaps, mut reordered, mut other, mut lost) = (0, 0, 0, 0, 0);
    let mut disconnects = Vec::new();
    let mut other_types: Vec<&str> = Vec::new();
    for r in &results {
        for t in &r.other_types {
            if !other_types.contains(&t.as_str()) {
                other_types.push(t);
            }
        }
        hist.merge(&r.hist);
        if let Some(i) = &mut interims {
            i.delivered += r.interims;
            i.reordered += r.interim_seq.reordered;
            i.latency.merge(&r.interim_hist);
        }
        delivered += r.delivered;
        gaps += r.seq.gaps;
        reordered += r.seq.reordered;
        other += r.other;
        let expect = lives[if o.venue { 0 } else { r.session }]
            .sent
            .load(Relaxed);
        lost += expect.saturating_sub(r.delivered);
        if let Some(e) = &r.disconnected {
            disconnects.push(format!("{} of {}: {e}", r.package, sh.users[r.session]));
        }
    }
    // Apps whose reader never reported lost all of it.
    let per_app = match o.venue {
        true => d.sent_total,
        false => d.sent_total / o.sessions.max(1) as u64,
    };
    lost += (want.saturating_sub(results.len()) as u64) * per_app;
    let glasses_errors: Vec<String> = lives
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            l.error
                .lock()
                .unwrap()
                .as_ref()
                .map(|e| format!("{}: {e}", sh.users[i]))
        })
        .collect();
    let (first, end, tck) = (&d.first, &d.end, d.tck);
    let window = (end.at - first.at).as_secs_f64();
    let server_cpu = end.server_ticks.saturating_sub(first.server_ticks) as f64 / tck;
    let server_sys = end.server_sys_ticks.saturating_sub(first.server_sys_ticks) as f64 / tck;
    let self_cpu = end.self_ticks.saturating_sub(first.self_ticks) as f64 / tck;
    let busy = end.busy_ticks.saturating_sub(first.busy_ticks) as f64 / tck;
    let report = Report {
        sessions: o.sessions,
        apps: o.apps,
        rate: o.rate,
        batch: o.batch,
        window: o.window,
        drive_secs: d.drive_secs,
        window_secs: window,
        setup_secs,
        sent: d.sent_total,
        expected: d.expected,
        delivered,
        lost,
        gaps,
        reordered,
        app_disconnects: disconnects,
        glasses_errors,
        latency: hist,
        rss: d.rss,
        server_pid: b.pid,
        server_note: String::new(),
        server_alive: d.server_alive,
        server_cpu,
        server_sys,
        self_cpu,
        busy,
        others: (busy - server_cpu - self_cpu).max(0.0),
        cpus: stats::machine_cpus(),
        counters: d.counters,
        ignored: sh.ignored.load(Relaxed),
        empty_webhooks: sh.empty_webhooks.load(Relaxed),
        empty_after_stop: sh.empty_after_stop.load(Relaxed),
        rush,
        other,
        other_types: other_types.iter().map(|t| t.to_string()).collect(),
        errors: sh.errors.lock().unwrap().clone(),
        audio: o.audio,
        unix: o.unix.clone(),
        tls: o.tls,
        interims,
        displays: o
            .display_rate
            .map(|_| std::mem::take(&mut *sh.display.lock().unwrap())),
    };
    report
}

/// Report: print the summary (and write `--json`); a clean run's scratch files are removed.
fn publish(o: &Opts, b: Subject, mut report: Report) -> Result<(), String> {
    let mut config_note = b.config_note;
    if let (true, Some(files)) = (report.clean(), &b.scratch) {
        for f in files {
            let _ = std::fs::remove_file(f);
        }
        config_note = "scratch config and log removed: nothing went wrong".into();
    }
    report.server_note = config_note;
    print!("{}", report.text());
    if let Some(path) = &o.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&report.json()).unwrap_or_default(),
        )
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// The server's `/metrics` text (empty if it cannot be read).
fn server_metrics(port: u16) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    s.set_read_timeout(Some(Duration::from_secs(2))).ok();
    let req =
        format!("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return String::new();
    }
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}

/// What the server says of the app starts: apps active and failed, webhooks that waited for
/// their app server, failed webhook attempts, starts refused for a full queue.
fn start_summary(port: u16) -> String {
    summarise_starts(&server_metrics(port))
}

/// [`start_summary`] of the `/metrics` text `text`.
fn summarise_starts(text: &str) -> String {
    let get = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    format!(
        "{} apps active, {} failed; {} webhooks queued, {} failed, {} refused WEBHOOK_QUEUE_FULL",
        get(r#"augmentos_edge_apps{state="active"}"#),
        get(r#"augmentos_edge_apps{state="failed"}"#),
        get("augmentos_edge_webhooks_queued_total"),
        get(r#"augmentos_edge_webhooks_total{outcome="not_sent"}"#)
            + get(r#"augmentos_edge_webhooks_total{outcome="failed"}"#)
            + get(r#"augmentos_edge_webhooks_total{outcome="http_error"}"#)
            + get(r#"augmentos_edge_webhooks_total{outcome="tls"}"#),
        get(r#"augmentos_edge_refusals_total{code="WEBHOOK_QUEUE_FULL"}"#),
    )
}

/// Webhooks the server has in flight or waiting, all app servers together (0 for a server
/// without these gauges).
fn webhooks_pending(port: u16) -> f64 {
    server_metrics(port)
        .lines()
        .filter(|l| {
            l.starts_with("augmentos_edge_webhooks_in_flight{")
                || l.starts_with("augmentos_edge_webhook_queue_length{")
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The server's non-zero counters from `/metrics` (not the per-connection rows).
fn server_counters(port: u16) -> Vec<String> {
    server_metrics(port)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.contains("user=") && !l.contains("package="))
        .filter_map(|l| {
            let (name, v) = l.rsplit_once(' ')?;
            let v: f64 = v.parse().ok()?;
            (v != 0.0 && name.contains("_total")).then(|| format!("{name}={v}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(tls: Option<(u16, PathBuf)>) -> Target {
        Target {
            port: 18_110,
            webhook_port: 18_111,
            secret: "s3cret".into(),
            packages: vec![package(0), package(1)],
            tls,
            publisher: false,
        }
    }

    #[test]
    fn a_tls_config_listens_on_tls_and_sends_the_apps_back_over_it() {
        let cert = PathBuf::from("/tmp/run.crt");
        let text = scratch_config(&target(Some((18_112, cert.clone()))), 2, None, false);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["listen"][0], "127.0.0.1:18110");
        assert_eq!(v["listen"][1]["address"], "127.0.0.1:18112");
        assert_eq!(v["listen"][1]["tls"]["certificate"], "/tmp/run.crt");
        assert_eq!(v["listen"][1]["tls"]["key"], "/tmp/run.key");
        assert_eq!(v["publicWsUrl"], "wss://localhost:18112");
        // Written, then read back by a later run against that server.
        let path = std::env::temp_dir().join(format!("edge-load-cfg-{}.json", std::process::id()));
        std::fs::write(&path, &text).unwrap();
        let t = read_config(&path, None, 2);
        let _ = std::fs::remove_file(&path);
        let t = t.unwrap();
        assert_eq!((t.port, t.webhook_port), (18_110, 18_111));
        assert_eq!(t.tls, Some((18_112, cert)));
    }

    #[test]
    fn every_failed_webhook_outcome_counts_as_failed_tls_included() {
        let text = "augmentos_edge_apps{state=\"active\"} 3\n\
            augmentos_edge_webhooks_total{outcome=\"ok\"} 40\n\
            augmentos_edge_webhooks_total{outcome=\"not_sent\"} 1\n\
            augmentos_edge_webhooks_total{outcome=\"failed\"} 2\n\
            augmentos_edge_webhooks_total{outcome=\"http_error\"} 4\n\
            augmentos_edge_webhooks_total{outcome=\"tls\"} 8\n";
        let line = summarise_starts(text);
        assert!(line.starts_with("3 apps active, 0 failed;"), "{line}");
        assert!(line.contains("0 webhooks queued, 15 failed,"), "{line}");
    }

    #[test]
    fn a_plain_config_has_no_tls_listener() {
        let text = scratch_config(&target(None), 2, None, false);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["listen"].as_array().map(|l| l.len()), Some(1));
        assert_eq!(v["publicWsUrl"], "ws://127.0.0.1:18110");
    }

    #[test]
    fn a_rush_config_keeps_the_webhook_cap_and_lifecycle_timings_at_their_defaults() {
        let plain: Value =
            serde_json::from_str(&scratch_config(&target(None), 5000, None, false)).unwrap();
        assert_eq!(plain["limits"]["maxWebhooksPerServer"], 10_016);
        let rush: Value =
            serde_json::from_str(&scratch_config(&target(None), 5000, None, true)).unwrap();
        assert_eq!(rush["limits"]["maxWebhooksPerServer"], Value::Null);
        assert_eq!(rush["timings"]["appConnectTimeoutMs"], Value::Null);
        assert_eq!(rush["timings"]["webhookTimeoutMs"], Value::Null);
        // The box takes it as it is (a secret of the length a run makes).
        let t = Target {
            secret: stats::random_hex(24),
            ..target(None)
        };
        let checked =
            augmentos_edge::config::Config::from_json(&scratch_config(&t, 5000, None, true));
        assert!(checked.is_ok(), "{:?}", checked.err());
    }
}
