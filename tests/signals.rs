//! Signals, against the real binary: SIGTERM and SIGINT stop it in order (listeners closed,
//! every WebSocket closed with 1001 "going away", exit 0 within the close deadline even when a
//! client never answers), and SIGHUP reloads the app registry from the edited config file while
//! a glasses session stays up.

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
    format!(
        r#"{{"packageName": "{package}", "name": "{package}", "publicUrl": "http://127.0.0.1:9",
            "hashedApiKey": "{}"}}"#,
        auth::hash_api_key("key")
    )
}

fn config(port: u16, apps: &[&str]) -> String {
    let apps: Vec<String> = apps.iter().map(|p| app(p)).collect();
    format!(
        r#"{{"listen": ["127.0.0.1:{port}"], "jwtSecret": "{SECRET}",
            "timings": {{"closeTimeoutMs": 1000, "webhookTimeoutMs": 500, "webhookAttempts": 1}},
            "apps": [{}]}}"#,
        apps.join(",")
    )
}

impl Edge {
    fn start(name: &str, apps: &[&str]) -> Edge {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "augmentos-edge-signals-{}-{name}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let port = free_port();
        std::fs::write(dir.join("edge.json"), config(port, apps)).expect("config");
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
