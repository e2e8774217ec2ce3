//! The box's limits: connections in total and per source address (HTTP 503 with a JSON body
//! before any upgrade; networks exempt from the per-address cap; `/health` and `/metrics`
//! answered past both caps through a small reserve with a deadline), sessions in total and apps per session (structured refusals), and a
//! flood of half-open handshakes (slowloris) shed while an established session keeps working.
//!
//! The connection limits and the flood run over real sockets (the whole server on a reactor
//! thread, see `support`); the session and app limits run in the deterministic world. No test
//! asserts elapsed time: the flood test prints the round trips it saw and asserts only that
//! every one arrived and every half-open connection was answered 408 or 503.

mod support;

use augmentos_edge::auth::{self, jwt};
use augmentos_edge::hub::registry::AppSpec;
use augmentos_edge::hub::HubConfig;
use augmentos_edge::net::{Peer, Target};
use augmentos_edge::server::ServerConfig;
use augmentos_edge::sim::World;
use serde_json::{json, Value};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use support::{http_exchange, read_until_closed, Sock, TestServer, Transport};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

const SECRET: &[u8] = b"limits-test-secret";
const CAPTIONS: &str = "com.example.captions";
const NOTES: &str = "com.example.notes";
const KEY: &str = "app-key";

fn spec(package: &str, host: &str, port: u16) -> AppSpec {
    AppSpec {
        package_name: package.into(),
        name: package.into(),
        public_url: format!("http://{host}:{port}"),
        webhook_target: Target {
            host: host.into(),
            port,
            tls: None,
        },
        webhook_path: String::new(),
        hashed_api_key: auth::hash_api_key(KEY),
        is_system_app: false,
        permissions: Vec::new(),
        allowed_addresses: Vec::new(),
        publishes: Vec::new(),
        settings: Vec::new(),
    }
}

fn bearer(user: &str) -> String {
    format!("Authorization: Bearer {}", jwt::glasses_token(user, SECRET))
}

fn assert_json_error(status: u16, body: &Value, want_status: u16, code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
}

// ---- sessions and apps (deterministic world) ---------------------------------------------

fn world(max_sessions: usize, max_apps: usize) -> World {
    World::with_hub(
        ServerConfig {
            ping_interval: None,
            ..ServerConfig::default()
        },
        HubConfig {
            jwt_secret: SECRET.to_vec(),
            apps: vec![
                spec(CAPTIONS, "apps.example", 5001),
                spec(NOTES, "apps.example", 5002),
            ],
            max_sessions,
            max_apps_per_session: max_apps,
            ..HubConfig::default()
        },
    )
}

fn of_type<'a>(msgs: &'a [Value], ty: &str) -> Vec<&'a Value> {
    msgs.iter().filter(|m| m["type"] == ty).collect()
}

fn open_glasses(w: &mut World, user: &str) -> usize {
    let g = w.connect();
    assert_eq!(w.upgrade_with(g, "/glasses-ws", &[&bearer(user)]).0, 101);
    w.send_text(g, r#"{"type":"connection_init"}"#);
    assert_eq!(of_type(&w.json_messages(g), "connection_ack").len(), 1);
    g
}

#[test]
fn a_new_session_past_the_limit_is_refused_and_a_known_user_still_resumes() {
    let mut w = world(1, 32);
    let first = open_glasses(&mut w, "ann@example.com");
    // A second user with a bearer token: refused at the upgrade, 503 with a JSON body.
    let c = w.connect();
    let (status, body) = w.upgrade_with(c, "/glasses-ws", &[&bearer("ben@example.com")]);
    let body: Value = serde_json::from_str(&body).expect("a JSON body");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["type"], "connection_error");
    assert_eq!(body["code"], "TOO_MANY_SESSIONS");
    // The token in connection_init instead: connection_error, then the close.
    let c = w.connect();
    assert_eq!(w.upgrade(c, "/glasses-ws"), 101);
    let token = jwt::glasses_token("ben@example.com", SECRET);
    w.send_text(
        c,
        &json!({"type": "connection_init", "coreToken": token}).to_string(),
    );
    let msgs = w.json_messages(c);
    assert_eq!(
        of_type(&msgs, "connection_error")[0]["code"],
        "TOO_MANY_SESSIONS",
        "{msgs:?}"
    );
    assert!(msgs.iter().any(|m| m["close"] == 1008), "{msgs:?}");
    assert_eq!(w.server.hub.session_count(), 1);
    // The user who holds the session takes it over from a new connection.
    let again = open_glasses(&mut w, "ann@example.com");
    assert_ne!(first, again);
    assert_eq!(w.server.hub.session_count(), 1);
    assert_eq!(
        w.server.hub.counters.refusals.get("TOO_MANY_SESSIONS"),
        Some(&2)
    );
    // /health says the box is full of sessions, and not ready for more.
    let h = w.connect();
    w.send_raw(h, b"GET /health HTTP/1.1\r\n\r\n");
    let (status, body) = w.clients[h].take_http_response().expect("a response");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["ready"], false, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["components"]["sessions"]["state"], "full", "{body}");
    assert_eq!(body["components"]["sessions"]["limit"], 1, "{body}");
}

#[test]
fn an_app_past_the_per_session_limit_is_refused_from_the_glasses_and_over_rest() {
    let mut w = world(10, 1);
    let g = open_glasses(&mut w, "cy@example.com");
    w.send_text(
        g,
        &json!({"type": "start_app", "packageName": CAPTIONS}).to_string(),
    );
    assert_eq!(
        w.server.hub.app_state("cy@example.com", CAPTIONS),
        Some("loading")
    );
    w.json_messages(g);
    w.send_text(
        g,
        &json!({"type": "start_app", "packageName": NOTES}).to_string(),
    );
    let msgs = w.json_messages(g);
    let err = of_type(&msgs, "connection_error");
    assert_eq!(err.len(), 1, "{msgs:?}");
    assert_eq!(err[0]["code"], "TOO_MANY_APPS");
    assert!(
        !w.clients[g].closed,
        "a refused start does not close the glasses"
    );
    assert_eq!(w.server.hub.app_state("cy@example.com", NOTES), None);
    // Over REST: 429 with the same code.
    let r = w.connect();
    let token = jwt::glasses_token("cy@example.com", SECRET);
    w.send_raw(
        r,
        format!("POST /apps/{NOTES}/start HTTP/1.1\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n")
            .as_bytes(),
    );
    let (status, body) = w.clients[r].take_http_response().expect("a response");
    assert_json_error(
        status,
        &serde_json::from_str(&body).unwrap(),
        429,
        "TOO_MANY_APPS",
    );
    // Stopping the first frees the slot.
    w.send_text(
        g,
        &json!({"type": "stop_app", "packageName": CAPTIONS}).to_string(),
    );
    w.send_text(
        g,
        &json!({"type": "start_app", "packageName": NOTES}).to_string(),
    );
    assert_eq!(
        w.server.hub.app_state("cy@example.com", NOTES),
        Some("loading")
    );
}

// ---- connection limits past their caps (deterministic world) -------------------------------

fn caps_world(max_connections: usize, max_per_address: usize, exempt: &[&str]) -> World {
    World::new(ServerConfig {
        echo: true,
        max_connections,
        max_per_address,
        per_address_exempt: exempt.iter().map(|n| n.parse().unwrap()).collect(),
        ping_interval: None,
        ..ServerConfig::default()
    })
}

fn from(w: &mut World, ip: &str) -> usize {
    let addr: SocketAddr = (ip.parse::<std::net::IpAddr>().unwrap(), 40_000).into();
    w.connect_from(Peer::Ip(addr))
}

/// Client `c` sends `GET path` and gets the whole answer: its status and body.
fn get(w: &mut World, c: usize, path: &str) -> (u16, String) {
    w.send_raw(
        c,
        format!("GET {path} HTTP/1.1\r\nHost: box\r\n\r\n").as_bytes(),
    );
    let r = w.clients[c].take_http_response().expect("an answer");
    assert!(
        w.clients[c].closed,
        "the connection is closed after its answer"
    );
    r
}

fn refused(w: &mut World, c: usize, code: &str) {
    let (status, body) = w.clients[c].take_http_response().expect("an answer");
    assert_json_error(status, &serde_json::from_str(&body).unwrap(), 503, code);
    assert!(w.clients[c].closed);
}

#[test]
fn a_nat_gateway_listed_as_exempt_is_not_held_to_the_per_address_cap() {
    // A venue's guest Wi-Fi, NATed: every visitor arrives from 10.8.0.1.
    let mut w = caps_world(100, 2, &["10.8.0.0/16", "fd00::/8"]);
    for ip in ["10.8.0.1", "::ffff:10.8.0.1", "fd00::7"] {
        for _ in 0..5 {
            let c = from(&mut w, ip);
            assert_eq!(w.upgrade(c, "/echo"), 101, "{ip}");
        }
    }
    // Any other address is still held to it.
    for _ in 0..2 {
        let c = from(&mut w, "192.0.2.7");
        assert_eq!(w.upgrade(c, "/echo"), 101);
    }
    let c = from(&mut w, "192.0.2.7");
    w.send_raw(c, support::upgrade_request().as_bytes());
    refused(&mut w, c, "TOO_MANY_FROM_ADDRESS");
    assert_eq!(w.server.stats().refused_per_address, 1);
    // The exempt ones still count towards the total.
    let mut w = caps_world(3, 2, &["10.8.0.0/16"]);
    for _ in 0..3 {
        let c = from(&mut w, "10.8.0.1");
        assert_eq!(w.upgrade(c, "/echo"), 101);
    }
    let c = from(&mut w, "10.8.0.1");
    w.send_raw(c, support::upgrade_request().as_bytes());
    refused(&mut w, c, "AT_CAPACITY");
}

#[test]
fn health_and_metrics_are_answered_past_both_caps_and_nothing_else_is() {
    let mut w = caps_world(3, 2, &[]);
    for _ in 0..2 {
        let c = from(&mut w, "192.0.2.7");
        assert_eq!(w.upgrade(c, "/echo"), 101);
    }
    // The address is full: its health check and its scrape are answered...
    let c = from(&mut w, "192.0.2.7");
    let (status, body) = get(&mut w, c, "/health");
    assert_eq!(status, 200, "{body}");
    let c = from(&mut w, "192.0.2.7");
    let (status, text) = get(&mut w, c, "/metrics");
    assert_eq!(status, 200);
    assert!(text.contains("augmentos_edge_connections{"), "{text}");
    // ... anything else is refused with the cap's code, as before.
    for path in ["/echo", "/apps/x/start", "/nowhere"] {
        let c = from(&mut w, "192.0.2.7");
        let (status, body) = get(&mut w, c, path);
        assert_json_error(
            status,
            &serde_json::from_str(&body).unwrap(),
            503,
            "TOO_MANY_FROM_ADDRESS",
        );
    }
    // Full in total: the box's own check from loopback says so.
    let c = from(&mut w, "198.51.100.1");
    assert_eq!(w.upgrade(c, "/echo"), 101);
    let c = from(&mut w, "127.0.0.1");
    let (status, body) = get(&mut w, c, "/health");
    assert_eq!(status, 200, "{body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["ready"], false, "{health}");
    assert_eq!(
        health["components"]["connections"]["state"], "full",
        "{health}"
    );
    assert_eq!(health["components"]["connections"]["count"], 3, "{health}");
    assert_eq!(
        health["components"]["connections"]["overCap"], 1,
        "{health}"
    );
    let c = from(&mut w, "127.0.0.1");
    let (status, body) = get(&mut w, c, "/metrics");
    assert_eq!(status, 200);
    assert!(
        body.contains("augmentos_edge_refusals_total{code=\"TOO_MANY_FROM_ADDRESS\"} 3"),
        "{body}"
    );
    let c = from(&mut w, "127.0.0.1");
    let (status, body) = get(&mut w, c, "/glasses-ws");
    assert_json_error(
        status,
        &serde_json::from_str(&body).unwrap(),
        503,
        "AT_CAPACITY",
    );
    assert_eq!(w.server.stats().refused_at_capacity, 1);
    // The three WebSockets were never disturbed.
    assert_eq!(w.server.websocket_count(), 3);
}

#[test]
fn the_over_cap_reserve_is_small_and_has_a_deadline() {
    use augmentos_edge::server::{OVER_CAP_DEADLINE, OVER_CAP_RESERVE};
    let mut w = caps_world(1, 1024, &[]);
    let held = from(&mut w, "192.0.2.7");
    assert_eq!(w.upgrade(held, "/echo"), 101);
    // Connections past the cap that send nothing wait in the reserve, unanswered...
    let start = w.now;
    let waiting: Vec<usize> = (0..OVER_CAP_RESERVE)
        .map(|i| from(&mut w, &format!("198.51.100.{i}")))
        .collect();
    for &c in &waiting {
        assert!(w.clients[c].take_http_response().is_none());
        assert!(!w.clients[c].closed);
    }
    // ... of which there are never more than the reserve: the next is refused at once.
    for i in 0..3 {
        let c = from(&mut w, &format!("203.0.113.{i}"));
        refused(&mut w, c, "AT_CAPACITY");
    }
    assert_eq!(w.server.connection_count(), 1 + OVER_CAP_RESERVE);
    // The box's own peers have a reserve of their own: the network's silent connections cannot
    // keep the operator's check (loopback, the Unix socket) out; it is bounded the same way.
    let local: Vec<usize> = (0..OVER_CAP_RESERVE)
        .map(|_| from(&mut w, "127.0.0.1"))
        .collect();
    let over = from(&mut w, "127.0.0.1");
    refused(&mut w, over, "AT_CAPACITY");
    let unix = w.connect_from(Peer::Unix);
    refused(&mut w, unix, "AT_CAPACITY");
    assert_eq!(get(&mut w, local[0], "/health").0, 200);
    let unix = w.connect_from(Peer::Unix);
    assert_eq!(get(&mut w, unix, "/metrics").0, 200);
    for &c in &local[1..] {
        assert!(w.clients[c].take_http_response().is_none());
    }
    assert_eq!(w.server.connection_count(), 2 * OVER_CAP_RESERVE);
    // The next deadline is the reserve's: each waiting one is refused then.
    assert!(w.jump_to_next_deadline());
    assert_eq!(w.now, start + OVER_CAP_DEADLINE);
    for &c in waiting.iter().chain(&local[1..]) {
        refused(&mut w, c, "AT_CAPACITY");
    }
    assert_eq!(w.server.connection_count(), 1);
    assert_eq!(
        w.server.stats().refused_at_capacity,
        3 + 2 + OVER_CAP_RESERVE as u64 + (OVER_CAP_RESERVE - 1) as u64
    );
    // The reserve is free again: the operator's check gets through.
    let c = from(&mut w, "127.0.0.1");
    assert_eq!(get(&mut w, c, "/health").0, 200);
    // Nothing is left waiting but the output-buffer pool's hand-back of the answers' buffers.
    assert_eq!(w.server.poll_timeout(), w.server.net.pool_deadline());
    w.advance(augmentos_edge::net::pool::POOL_IDLE);
    assert!(w.server.poll_timeout().is_none(), "nothing is left waiting");
}

// ---- connection limits (real sockets) -----------------------------------------------------

/// Read the one HTTP response a server sends before it closes.
fn response_of(sock: &mut Sock) -> (u16, Value) {
    let r = support::parse_response(&read_until_closed(sock));
    let body = r.json();
    (r.status, body)
}

#[test]
fn over_the_total_limit_a_connection_is_answered_503_json_before_any_upgrade() {
    let server = TestServer::start(ServerConfig {
        max_connections: 2,
        ..ServerConfig::default()
    });
    let _held: Vec<Sock> = (0..2).map(|_| server.connect(Transport::Tcp)).collect();
    // The third is refused whatever it sends, and on every transport.
    for t in [Transport::Tcp, Transport::Unix] {
        let mut sock = server.connect(t);
        let _ = sock.write_all(support::upgrade_request().as_bytes());
        let (status, body) = response_of(&mut sock);
        assert_json_error(status, &body, 503, "AT_CAPACITY");
    }
}

#[test]
fn over_the_per_address_limit_a_connection_is_answered_503_json_and_unix_is_exempt() {
    let server = TestServer::start(ServerConfig {
        max_per_address: 2,
        ..ServerConfig::default()
    });
    let held: Vec<Sock> = (0..2).map(|_| server.connect(Transport::Tcp)).collect();
    let mut third = server.connect(Transport::Tcp);
    let _ = third.write_all(support::upgrade_request().as_bytes());
    let (status, body) = response_of(&mut third);
    assert_json_error(status, &body, 503, "TOO_MANY_FROM_ADDRESS");
    // The box's own health check from the full address is answered all the same.
    let r = http_exchange(
        server.connect(Transport::Tcp),
        b"GET /health HTTP/1.1\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{:?}", r.json());
    // Unix-socket and in-process callers are not counted by address.
    for t in [Transport::Unix, Transport::InProcess] {
        let r = http_exchange(server.connect(t), b"GET /health HTTP/1.1\r\n\r\n");
        assert_eq!(r.status, 200, "{t:?}");
    }
    // A slot freed is a slot usable again.
    drop(held);
    let mut ok = None;
    for _ in 0..100 {
        let r = http_exchange(
            server.connect(Transport::Tcp),
            b"GET /health HTTP/1.1\r\n\r\n",
        );
        if r.status == 200 {
            ok = Some(r);
            break;
        }
        // The server may not have seen the close of the dropped ones yet.
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ok.is_some(), "the address never got a slot back");
    let metrics = http_exchange(
        server.connect(Transport::Unix),
        b"GET /metrics HTTP/1.1\r\n\r\n",
    );
    let text = String::from_utf8(metrics.body).unwrap();
    assert!(
        text.lines().any(|l| l
            .starts_with("augmentos_edge_refusals_total{code=\"TOO_MANY_FROM_ADDRESS\"}")
            && !l.ends_with(" 0")),
        "{text}"
    );
}

// ---- the flood ----------------------------------------------------------------------------

fn ws_client(server: &TestServer, path: &str, auth: Option<&str>) -> WebSocket<Sock> {
    let mut req = format!("ws://localhost{path}")
        .into_client_request()
        .expect("request");
    if let Some(a) = auth {
        req.headers_mut()
            .insert("Authorization", a.parse().expect("header value"));
    }
    match tungstenite::client::client(req, server.connect(Transport::Tcp)) {
        Ok((ws, _)) => ws,
        Err(e) => panic!("upgrade of {path} failed: {e}"),
    }
}

/// The next text message as JSON, skipping pings.
fn next_json(ws: &mut WebSocket<Sock>) -> Value {
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => return serde_json::from_str(t.as_str()).expect("JSON"),
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

fn until_type(ws: &mut WebSocket<Sock>, ty: &str) -> Value {
    loop {
        let m = next_json(ws);
        if m["type"] == ty {
            return m;
        }
    }
}

fn press(id: &str) -> String {
    json!({"type": "button_press", "buttonId": id, "pressType": "short",
           "timestamp": "2025-01-01T00:00:00.000Z"})
    .to_string()
}

/// Send a press from the glasses and wait until the app has it; the round trip.
fn round_trip(glasses: &mut WebSocket<Sock>, app: &mut WebSocket<Sock>, id: &str) -> Duration {
    let sent = Instant::now();
    glasses.send(Message::text(press(id))).expect("send press");
    loop {
        let m = next_json(app);
        if m["type"] == "data_stream" && m["data"]["buttonId"] == id {
            return sent.elapsed();
        }
    }
}

#[test]
fn two_thousand_half_open_handshakes_are_shed_while_a_session_keeps_exchanging() {
    const HALF_OPEN: usize = 2_000;
    const PER_ADDRESS: usize = 500;
    let user = "flood@example.com";
    let port = support::webhooks::webhook_server();
    let server = TestServer::start_with(
        ServerConfig {
            handshake_timeout: Duration::from_secs(2),
            max_per_address: PER_ADDRESS,
            ..ServerConfig::default()
        },
        HubConfig {
            jwt_secret: SECRET.to_vec(),
            apps: vec![spec(CAPTIONS, "127.0.0.1", port)],
            ..HubConfig::default()
        },
    );
    // The established session: glasses and a subscribed app, both over TCP from 127.0.0.1.
    let token = format!("Bearer {}", jwt::glasses_token(user, SECRET));
    let mut glasses = ws_client(&server, "/glasses-ws", Some(&token));
    glasses
        .send(Message::text(r#"{"type":"connection_init"}"#))
        .unwrap();
    until_type(&mut glasses, "connection_ack");
    glasses
        .send(Message::text(
            json!({"type": "start_app", "packageName": CAPTIONS}).to_string(),
        ))
        .unwrap();
    let session_id = format!("{user}-{CAPTIONS}");
    let mut app = ws_client(&server, "/app-ws", None);
    app.send(Message::text(
        json!({"type": "tpa_connection_init", "packageName": CAPTIONS,
               "sessionId": session_id, "apiKey": KEY})
        .to_string(),
    ))
    .unwrap();
    until_type(&mut app, "tpa_connection_ack");
    app.send(Message::text(
        json!({"type": "subscription_update", "packageName": CAPTIONS,
               "sessionId": session_id, "subscriptions": ["button_press"]})
        .to_string(),
    ))
    .unwrap();
    // The subscription and the first press race on two sockets: press until one arrives.
    app.get_mut()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut warm = false;
    for i in 0..100 {
        glasses
            .send(Message::text(press(&format!("warm{i}"))))
            .unwrap();
        match app.read() {
            Ok(Message::Text(t)) if t.as_str().contains("\"data_stream\"") => {
                warm = true;
                break;
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("app read failed: {e}"),
        }
    }
    assert!(warm, "the app never received a press");
    app.get_mut()
        .set_read_timeout(Some(support::READ_TIMEOUT))
        .unwrap();

    // The flood: raw connections that send part of a request line and then nothing.
    let target = server.tcp;
    let flood = std::thread::spawn(move || {
        let mut socks = Vec::with_capacity(HALF_OPEN);
        for _ in 0..HALF_OPEN {
            let mut s = TcpStream::connect(target).expect("connect (check ulimit -n)");
            let _ = s.write_all(b"GET /glasses-ws HTT");
            socks.push(s);
        }
        socks
    });
    let mut trips = Vec::new();
    let mut n = 0;
    while !flood.is_finished() {
        trips.push(round_trip(&mut glasses, &mut app, &format!("during{n}")));
        n += 1;
        // A steady stream, not a busy loop that starves the flood on a small machine.
        std::thread::sleep(Duration::from_millis(1));
    }
    let socks = flood.join().expect("the flood thread");
    let during = trips.len();
    // Until the deadline has shed every one of them, and after.
    for i in 0..200 {
        trips.push(round_trip(&mut glasses, &mut app, &format!("after{i}")));
        std::thread::sleep(Duration::from_millis(1));
    }

    let (mut timed_out, mut refused) = (0, 0);
    for mut s in socks {
        s.set_read_timeout(Some(support::READ_TIMEOUT)).unwrap();
        let mut bytes = Vec::new();
        let _ = s.read_to_end(&mut bytes);
        let r = support::parse_response(&bytes);
        match (r.status, r.json()["code"].as_str()) {
            (408, Some("HANDSHAKE_TIMEOUT")) => timed_out += 1,
            (503, Some("TOO_MANY_FROM_ADDRESS" | "AT_CAPACITY")) => refused += 1,
            other => panic!("a half-open connection got {other:?}"),
        }
    }
    // How many of each depends on how fast the connects come (the deadline frees slots of
    // the address); that every one is shed, one way or the other, does not.
    assert_eq!(timed_out + refused, HALF_OPEN);
    // Still working after the flood, and the session saw every message.
    trips.push(round_trip(&mut glasses, &mut app, "last"));
    trips.sort();
    eprintln!(
        "flood of {HALF_OPEN}: {timed_out} answered 408, {refused} answered 503; \
         {} round trips glasses -> app ({during} during the connects): p50 {:?}, p99 {:?}, max {:?}",
        trips.len(),
        trips[trips.len() / 2],
        trips[trips.len() * 99 / 100],
        trips[trips.len() - 1],
    );
}

// ---- /metrics over real sockets ----------------------------------------------------------

fn scrape(server: &TestServer) -> Option<Value> {
    let r = http_exchange(
        server.connect(Transport::Unix),
        b"GET /metrics HTTP/1.1\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4"));
    support::prom::parse(&String::from_utf8(r.body).expect("UTF-8"))
}

#[test]
fn metrics_parse_as_prometheus_text_and_counters_move_with_traffic() {
    use support::prom::value;
    let user = "metrics@example.com";
    let port = support::webhooks::webhook_server();
    let server = TestServer::start_with(
        ServerConfig {
            echo: true,
            ..ServerConfig::default()
        },
        HubConfig {
            jwt_secret: SECRET.to_vec(),
            apps: vec![spec(CAPTIONS, "127.0.0.1", port)],
            ..HubConfig::default()
        },
    );
    let health = http_exchange(
        server.connect(Transport::Unix),
        b"GET /health HTTP/1.1\r\n\r\n",
    )
    .json();
    assert_eq!(health["ready"], true, "{health}");
    assert_eq!(health["status"], "ok", "{health}");
    let c = &health["components"];
    assert_eq!(
        c["listeners"],
        json!({"state": "ok", "open": 3}),
        "{health}"
    );
    assert_eq!(c["store"]["state"], "ok", "{health}");
    assert_eq!(c["sessions"]["state"], "ok", "{health}");
    assert_eq!(c["connections"]["state"], "ok", "{health}");
    let Some(before) = scrape(&server) else {
        return;
    };
    // Traffic: echo messages, and a glasses session that starts an app (a webhook goes out).
    let mut echo = server.ws(Transport::Tcp);
    for i in 0..5 {
        echo.send(Message::text(format!("hello {i}"))).unwrap();
        assert!(matches!(echo.read().unwrap(), Message::Text(_)));
    }
    let token = format!("Bearer {}", jwt::glasses_token(user, SECRET));
    let mut glasses = ws_client(&server, "/glasses-ws", Some(&token));
    glasses
        .send(Message::text(r#"{"type":"connection_init"}"#))
        .unwrap();
    until_type(&mut glasses, "connection_ack");
    glasses
        .send(Message::text(
            json!({"type": "start_app", "packageName": CAPTIONS}).to_string(),
        ))
        .unwrap();
    // Wait until the webhook has its outcome (the app never connects; it stays loading).
    let mut after = scrape(&server).expect("parsed");
    for _ in 0..200 {
        if value(
            &after,
            "augmentos_edge_webhooks_total",
            &[("outcome", "ok")],
        ) >= 1.0
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        after = scrape(&server).expect("parsed");
    }
    let moved = |name: &str, labels: &[(&str, &str)]| {
        let (b, a) = (value(&before, name, labels), value(&after, name, labels));
        assert!(a > b, "{name}{labels:?}: {b} before, {a} after");
    };
    moved("augmentos_edge_connections_accepted_total", &[]);
    moved("augmentos_edge_websocket_upgrades_total", &[]);
    for dir in ["in", "out"] {
        for kind in ["echo", "glasses"] {
            moved(
                "augmentos_edge_messages_total",
                &[("direction", dir), ("kind", kind)],
            );
            moved(
                "augmentos_edge_bytes_total",
                &[("direction", dir), ("kind", kind)],
            );
        }
    }
    moved("augmentos_edge_webhooks_total", &[("outcome", "ok")]);
    moved("augmentos_edge_webhook_duration_seconds_count", &[]);
    moved("augmentos_edge_event_loop_turn_seconds_count", &[]);
    moved(
        "augmentos_edge_event_loop_turn_seconds_bucket",
        &[("le", "+Inf")],
    );
    moved(
        "augmentos_edge_display_events_total",
        &[("outcome", "sent")],
    );
    assert_eq!(value(&after, "augmentos_edge_sessions", &[]), 1.0);
    assert_eq!(
        value(&after, "augmentos_edge_apps", &[("state", "loading")]),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "augmentos_edge_connections",
            &[("kind", "glasses"), ("transport", "tcp")]
        ),
        1.0
    );
    // Every name follows the convention.
    for s in after.as_array().unwrap() {
        let name = s[0].as_str().unwrap();
        assert!(name.starts_with("augmentos_edge_"), "{name}");
    }
}
