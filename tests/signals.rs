//! Signals, against the real binary: SIGTERM and SIGINT stop it in order (listeners closed,
//! every WebSocket, glasses and app, closed with 1001 "going away", exit 0 within the close
//! deadline even when a client never answers), and SIGHUP reloads the app registry from the
//! edited config file while a glasses session stays up (a changed app key refuses the old key
//! to new connections and keeps the live ones).

use augmentos_edge::auth::{self, jwt};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

#[path = "support/ports.rs"]
mod ports;
#[path = "support/webhooks.rs"]
mod webhooks;
use webhooks::webhook_server;

const SECRET: &str = "signals-test-secret-0123456789";
/// Far above the stop bound under test (close deadline 1 s + margin), so a slow machine does
/// not fail the test, while a server that never exits still does.
const EXIT_WITHIN: Duration = Duration::from_secs(15);

struct Edge {
    child: Child,
    port: u16,
    dir: PathBuf,
}

fn free_port() -> u16 {
    ports::free_port().expect("a free port")
}

fn app(package: &str) -> String {
    app_at(package, 9, "key")
}

/// An app whose webhooks go to `webhook_port`, with the key `key`.
fn app_at(package: &str, webhook_port: u16, key: &str) -> String {
    format!(
        r#"{{"packageName": "{package}", "name": "{package}",
            "publicUrl": "http://127.0.0.1:{webhook_port}", "hashedApiKey": "{}"}}"#,
        auth::hash_api_key(key)
    )
}

fn config(port: u16, apps: &[&str]) -> String {
    let apps: Vec<String> = apps.iter().map(|p| app(p)).collect();
    config_of(port, &apps)
}

fn config_of(port: u16, apps: &[String]) -> String {
    format!(
        r#"{{"listen": ["127.0.0.1:{port}"], "jwtSecret": "{SECRET}",
            "timings": {{"closeTimeoutMs": 1000, "webhookTimeoutMs": 500, "webhookAttempts": 1}},
            "apps": [{}]}}"#,
        apps.join(",")
    )
}

impl Edge {
    fn start(name: &str, apps: &[&str]) -> Edge {
        Edge::start_with(name, |port| config(port, apps))
    }

    /// Start with the config `config(port)` for the port it listens on.
    fn start_with(name: &str, config: impl FnOnce(u16) -> String) -> Edge {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "augmentos-edge-signals-{}-{name}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let port = free_port();
        std::fs::write(dir.join("edge.json"), config(port)).expect("config");
        let child = Command::new(env!("CARGO_BIN_EXE_augmentos-edge"))
            .args(["serve", "--config"])
            .arg(dir.join("edge.json"))
            .env_remove("AUGMENTOS_AUTH_JWT_SECRET")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start augmentos-edge");
        let edge = Edge { child, port, dir };
        let until = Instant::now() + EXIT_WITHIN;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "the server did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        edge
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Wait for the process to exit; `None` if it is still running after `EXIT_WITHIN`.
    fn wait_exit(&mut self) -> Option<ExitStatus> {
        let until = Instant::now() + EXIT_WITHIN;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return Some(s);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn glasses(&self, user: &str) -> WebSocket<TcpStream> {
        use tungstenite::client::IntoClientRequest;
        let tcp = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut req = format!("ws://127.0.0.1:{}/glasses-ws", self.port)
            .into_client_request()
            .expect("request");
        let token = jwt::glasses_token(user, SECRET.as_bytes());
        req.headers_mut().insert(
            "Authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
        let (mut ws, _) = tungstenite::client(req, tcp).expect("glasses upgrade");
        ws.send(Message::text(r#"{"type":"connection_init"}"#))
            .expect("init");
        wait_for(&mut ws, |v| v["type"] == "connection_ack");
        ws
    }

    /// An app WebSocket for `package` in `user`'s session, with `key`: after its
    /// `tpa_connection_init`, the first message it got (the ack or the refusal).
    fn app(
        &self,
        user: &str,
        package: &str,
        key: &str,
    ) -> (WebSocket<TcpStream>, serde_json::Value) {
        let tcp = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let url = format!("ws://127.0.0.1:{}/app-ws", self.port);
        let (mut ws, _) = tungstenite::client(url, tcp).expect("app upgrade");
        let init = serde_json::json!({"type": "tpa_connection_init", "packageName": package,
            "sessionId": format!("{user}-{package}"), "apiKey": key});
        ws.send(Message::text(init.to_string())).expect("init");
        let first = wait_for(&mut ws, |_| true);
        (ws, first)
    }

    /// `POST /apps/{package}/{action}` for `user`: the status and the JSON body.
    fn rest(&self, user: &str, package: &str, action: &str) -> (u16, serde_json::Value) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let token = jwt::glasses_token(user, SECRET.as_bytes());
        write!(
            s,
            "POST /apps/{package}/{action} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        let text = String::from_utf8_lossy(&got);
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("null");
        (status, serde_json::from_str(body).unwrap_or_default())
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Read text messages until one satisfies `want`; returns it.
fn wait_for(
    ws: &mut WebSocket<TcpStream>,
    want: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    loop {
        match ws.read().expect("read") {
            Message::Text(t) => {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).expect("JSON");
                if want(&v) {
                    return v;
                }
            }
            Message::Close(c) => panic!("closed while waiting: {c:?}"),
            _ => {}
        }
    }
}

/// Read until the server's close frame; returns its code and reason.
fn close_of(ws: &mut WebSocket<TcpStream>) -> (CloseCode, String) {
    loop {
        match ws.read() {
            Ok(Message::Close(Some(f))) => return (f.code, f.reason.to_string()),
            Ok(Message::Close(None)) => panic!("a close frame without a code"),
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    }
}

#[test]
fn sigterm_closes_every_websocket_with_1001_and_exits_0() {
    let mut edge = Edge::start("term", &[]);
    let mut a = edge.glasses("ann@example.com");
    let mut b = edge.glasses("ben@example.com");
    edge.signal("TERM");
    for ws in [&mut a, &mut b] {
        let (code, reason) = close_of(ws);
        assert_eq!(code, CloseCode::Away);
        assert_eq!(reason, "going away");
    }
    let status = edge.wait_exit().expect("exited after SIGTERM");
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(
        TcpStream::connect(("127.0.0.1", edge.port)).is_err(),
        "nothing listens after the stop"
    );
}

#[test]
fn sigint_stops_in_order_even_when_a_client_never_answers_the_close() {
    let mut edge = Edge::start("int", &[]);
    // A raw WebSocket client that reads nothing and never answers the close frame.
    let mut mute = TcpStream::connect(("127.0.0.1", edge.port)).expect("connect");
    let token = jwt::glasses_token("mute@example.com", SECRET.as_bytes());
    write!(
        mute,
        "GET /glasses-ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    )
    .expect("write");
    mute.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut head = [0u8; 12];
    mute.read_exact(&mut head).expect("read the 101");
    assert_eq!(&head, b"HTTP/1.1 101");
    edge.signal("INT");
    let status = edge
        .wait_exit()
        .expect("exited at the close deadline although a client never answered");
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn an_idle_server_stops_at_once() {
    let mut edge = Edge::start("idle", &[]);
    edge.signal("TERM");
    assert_eq!(edge.wait_exit().and_then(|s| s.code()), Some(0));
}

#[test]
fn sighup_reloads_the_app_registry_while_the_session_stays_up() {
    let mut edge = Edge::start("hup", &["com.kept", "com.removed"]);
    let user = "hal@example.com";
    let mut glasses = edge.glasses(user);
    let (status, body) = edge.rest(user, "com.removed", "start");
    assert_eq!(status, 200, "{body}");
    let (status, body) = edge.rest(user, "com.added", "start");
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "PACKAGE_NOT_FOUND");

    std::fs::write(
        edge.dir.join("edge.json"),
        config(edge.port, &["com.kept", "com.added"]),
    )
    .expect("edit the config");
    edge.signal("HUP");

    // The glasses are told the removed app stopped, on the same connection (a stop, not the
    // give-up after its unanswered webhook, which also says `app_stopped` but with an `error`).
    wait_for(&mut glasses, |v| {
        v["type"] == "app_stopped" && v["packageName"] == "com.removed" && v["error"].is_null()
    });
    let (status, body) = edge.rest(user, "com.added", "start");
    assert_eq!(status, 200, "the added app can be started: {body}");
    let (status, body) = edge.rest(user, "com.removed", "start");
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "PACKAGE_NOT_FOUND");
    let (status, body) = edge.rest(user, "com.kept", "start");
    assert_eq!(status, 200, "{body}");

    // The session is the one from before the reload: still up, still answering.
    glasses
        .send(Message::Ping(b"still here".to_vec().into()))
        .expect("ping");
    loop {
        match glasses.read().expect("read") {
            Message::Pong(p) if &p[..] == b"still here" => break,
            Message::Close(c) => panic!("the session was dropped by the reload: {c:?}"),
            _ => {}
        }
    }
    edge.signal("TERM");
    assert_eq!(close_of(&mut glasses).0, CloseCode::Away);
    assert_eq!(edge.wait_exit().and_then(|s| s.code()), Some(0));
}

/// A started app of `user`, connected with `key` and acknowledged.
fn started_app(edge: &Edge, user: &str, package: &str, key: &str) -> WebSocket<TcpStream> {
    let (status, body) = edge.rest(user, package, "start");
    assert_eq!(status, 200, "{body}");
    let (ws, ack) = edge.app(user, package, key);
    assert_eq!(ack["type"], "tpa_connection_ack", "{ack}");
    ws
}

/// The socket answers a ping: it is open and read.
fn answers_ping(ws: &mut WebSocket<TcpStream>, what: &str) {
    ws.send(Message::Ping(b"still here".to_vec().into()))
        .expect("ping");
    loop {
        match ws.read().expect("read") {
            Message::Pong(p) if &p[..] == b"still here" => return,
            Message::Close(c) => panic!("{what} was closed: {c:?}"),
            _ => {}
        }
    }
}

#[test]
fn sigterm_closes_an_apps_websocket_with_1001_too() {
    let hooks = webhook_server();
    let mut edge = Edge::start_with("term-app", |port| {
        config_of(port, &[app_at("com.term", hooks, "key")])
    });
    let user = "tia@example.com";
    let mut glasses = edge.glasses(user);
    let mut app = started_app(&edge, user, "com.term", "key");
    edge.signal("TERM");
    for (ws, what) in [(&mut app, "app"), (&mut glasses, "glasses")] {
        let (code, reason) = close_of(ws);
        assert_eq!(code, CloseCode::Away, "{what}");
        assert_eq!(reason, "going away", "{what}");
    }
    let status = edge.wait_exit().expect("exited after SIGTERM");
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn sighup_with_a_changed_app_key_refuses_the_old_key_to_new_connections_and_keeps_live_ones() {
    let hooks = webhook_server();
    let mut edge = Edge::start_with("hup-key", |port| {
        config_of(port, &[app_at("com.keyed", hooks, "old-key")])
    });
    let user = "kim@example.com";
    let mut glasses = edge.glasses(user);
    let mut live = started_app(&edge, user, "com.keyed", "old-key");

    std::fs::write(
        edge.dir.join("edge.json"),
        config_of(edge.port, &[app_at("com.keyed", hooks, "new-key")]),
    )
    .expect("edit the config");
    edge.signal("HUP");
    // The reload is seen by a connection for a session that does not exist: the key is
    // checked first, so the old key is told SESSION_NOT_FOUND before the reload and
    // INVALID_API_KEY after it (and the live connection is not replaced meanwhile).
    let until = Instant::now() + EXIT_WITHIN;
    loop {
        let (_, first) = edge.app("nobody@example.com", "com.keyed", "old-key");
        if first["code"] == "INVALID_API_KEY" {
            break;
        }
        assert_eq!(first["code"], "SESSION_NOT_FOUND", "{first}");
        assert!(Instant::now() < until, "the reload never took effect");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A new connection with the old key is refused with its code, then closed 1008.
    let (mut refused, first) = edge.app(user, "com.keyed", "old-key");
    assert_eq!(first["type"], "tpa_connection_error", "{first}");
    assert_eq!(first["code"], "INVALID_API_KEY", "{first}");
    assert_eq!(close_of(&mut refused).0, CloseCode::Policy);
    // The live connection, authenticated with the old key, is kept: still open, and still the
    // app's bound connection (the glasses were told nothing stopped).
    answers_ping(&mut live, "the live app connection");
    answers_ping(&mut glasses, "the glasses");
    // The new key is taken, by a connection that replaces the live one as usual.
    let (mut new, first) = edge.app(user, "com.keyed", "new-key");
    assert_eq!(first["type"], "tpa_connection_ack", "{first}");
    let (code, reason) = close_of(&mut live);
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.contains("Replaced"), "{reason}");
    edge.signal("TERM");
    assert_eq!(close_of(&mut new).0, CloseCode::Away);
    let stopped = |v: &serde_json::Value| v["type"] == "app_stopped";
    loop {
        match glasses.read() {
            Ok(Message::Text(t)) => {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).expect("JSON");
                assert!(!stopped(&v), "the glasses were told the app stopped: {v}");
            }
            Ok(Message::Close(f)) => {
                assert_eq!(f.map(|f| f.code), Some(CloseCode::Away));
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    }
    assert_eq!(edge.wait_exit().and_then(|s| s.code()), Some(0));
}
