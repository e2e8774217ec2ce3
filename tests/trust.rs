//! Who may join, against the real binary over real sockets: every bad glasses token refused at
//! the upgrade with its own code and counted (forged, expired, `alg: none`, HS/RS confusion,
//! oversized, without `exp` when the config takes only expiring tokens, naming an unknown
//! device), the leeway around `exp`; provisioned devices through the `device` commands (which
//! call the running box): a revoke closes the connected pair with `DEVICE_REVOKED`, refuses a
//! reconnect (header or `coreToken`) and survives a restart; the operator's device API checks
//! its token and shows a token and its QR code only on request; no token reaches the log or
//! `/metrics`; `POST /api/auth/exchange-token`: 501 without `accountLogin`, and with it an
//! account token exchanged for a core token that joins, bad ones refused each with its code.

use augmentos_edge::auth::{base64, hmac_sha256, jwt};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

#[path = "support/ports.rs"]
mod ports;

const SECRET: &str = "trust-test-secret-0123456789";
const OPERATOR: &str = "trust-operator-token-0123456789";
const WITHIN: Duration = Duration::from_secs(15);

/// An RSA public key, as an attacker would find it published: the HS/RS confusion signs an
/// HS256 token with its text as the HMAC secret.
const RSA_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfVLPHCozMxH2Mo
4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u
+qKhbwKfBstIs+bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyeh
kd3qqGElvW/VDL5AaWTg0nLVkjRo9z+40RQzuVaE8AkAFmxZzow3x+VJYKdjykkJ
0iT9wCS0DRTXu269V264Vf/3jvredZiKRkgwlL9xNAwxXFg0x/XFw005UWVRIkdg
cKWTjpBP2dPwVZ4WWC+9aGVd+Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbc
mwIDAQAB
-----END PUBLIC KEY-----";

struct Edge {
    child: Child,
    port: u16,
    dir: PathBuf,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

impl Edge {
    /// A box on a fresh port with its state in `dir` (kept across restarts).
    fn start(dir: &Path, port: u16) -> Edge {
        Edge::start_with(dir, port, "")
    }

    /// [`Edge::start`] with `more` (`, "key": value…`) added to the config.
    fn start_with(dir: &Path, port: u16, more: &str) -> Edge {
        std::fs::create_dir_all(dir).expect("temp dir");
        let config = format!(
            r#"{{"listen": ["127.0.0.1:{port}"], "jwtSecret": "{SECRET}",
                "stateDir": "{}", "ui": {{"enabled": true, "operatorToken": "{OPERATOR}"}},
                "tokens": {{"acceptWithoutExpiry": false, "leewaySeconds": 60}},
                "limits": {{"maxRequestHeadBytes": 16384}},
                "timings": {{"closeTimeoutMs": 500}}, "apps": []{more}}}"#,
            dir.join("state").display()
        );
        std::fs::write(dir.join("edge.json"), config).expect("config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("edge.log"))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_augmentos-edge"))
            .args(["serve", "--config"])
            .arg(dir.join("edge.json"))
            .env_remove("AUGMENTOS_AUTH_JWT_SECRET")
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start augmentos-edge");
        let until = Instant::now() + WITHIN;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "the server did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        Edge {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    /// SIGTERM, and wait for the exit (durable writes finish first).
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let until = Instant::now() + WITHIN;
        while self.child.try_wait().expect("try_wait").is_none() {
            assert!(Instant::now() < until, "the server did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Run `augmentos-edge ARGS --config` against this box's config.
    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_augmentos-edge"))
            .args(args)
            .arg("--config")
            .arg(self.dir.join("edge.json"))
            .env_remove("AUGMENTOS_AUTH_JWT_SECRET")
            .output()
            .expect("run augmentos-edge");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    /// One HTTP request; status and body.
    fn http(&self, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(WITHIN)).expect("timeout");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).expect("write");
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw).to_string();
        let (head, body) = text.split_once("\r\n\r\n").expect("a response");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        (status, body.to_string())
    }

    fn operator(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let auth = format!("Authorization: Bearer {OPERATOR}\r\n");
        let (status, body) = self.http(method, path, &auth, body);
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// A glasses upgrade with `token` as its bearer: the status, and the JSON body if refused.
    fn upgrade(&self, token: &str) -> (u16, Value) {
        let headers = format!(
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer {token}\r\n"
        );
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(WITHIN)).expect("timeout");
        let req = format!("GET /glasses-ws HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
        s.write_all(req.as_bytes()).expect("write");
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
            let text = String::from_utf8_lossy(&raw);
            if text.starts_with("HTTP/1.1 101") && text.contains("\r\n\r\n") {
                return (101, Value::Null);
            }
        }
        let text = String::from_utf8_lossy(&raw).to_string();
        let (head, body) = text.split_once("\r\n\r\n").expect("a response");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    /// Glasses upgraded with `token` as the bearer, that have not sent `connection_init` yet.
    fn upgraded(&self, token: &str) -> WebSocket<TcpStream> {
        let mut req = format!("ws://127.0.0.1:{}/glasses-ws", self.port)
            .into_client_request()
            .expect("request");
        let value = format!("Bearer {token}").parse().expect("header value");
        req.headers_mut().insert("Authorization", value);
        let stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream.set_read_timeout(Some(WITHIN)).expect("timeout");
        tungstenite::client(req, stream).expect("upgrade").0
    }

    /// Glasses connected with `token` (as the bearer, or in `connection_init` without one),
    /// after their first answer: the socket and that answer.
    fn glasses(&self, token: &str, bearer: bool) -> (WebSocket<TcpStream>, Value) {
        let mut req = format!("ws://127.0.0.1:{}/glasses-ws", self.port)
            .into_client_request()
            .expect("request");
        if bearer {
            let value = format!("Bearer {token}").parse().expect("header value");
            req.headers_mut().insert("Authorization", value);
        }
        let stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream.set_read_timeout(Some(WITHIN)).expect("timeout");
        let (mut ws, _) = tungstenite::client(req, stream).expect("upgrade");
        let init = if bearer {
            json!({"type": "connection_init"})
        } else {
            json!({"type": "connection_init", "coreToken": token})
        };
        ws.send(Message::text(init.to_string())).expect("send init");
        let first = next_json(&mut ws).expect("an answer to connection_init");
        (ws, first)
    }

    fn metrics(&self) -> String {
        self.http("GET", "/metrics", "", "").1
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("edge.log")).unwrap_or_default()
    }
}

/// The next JSON text message, `None` once the socket is closed.
fn next_json(ws: &mut WebSocket<TcpStream>) -> Option<Value> {
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => return serde_json::from_str(&t).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::env::temp_dir().join(format!(
        "augmentos-edge-trust-{}-{name}-{nanos}",
        std::process::id()
    ))
}

/// A token with any header and payload, HMAC-SHA256-signed with `key`.
fn forge(header: &str, payload: &Value, key: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        base64::encode(header.as_bytes()),
        base64::encode(payload.to_string().as_bytes())
    );
    let mac = hmac_sha256(key, input.as_bytes());
    format!("{input}.{}", base64::encode(&mac))
}

/// The count of `refusals_total` for `code` in a `/metrics` text.
fn refusals(metrics: &str, code: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.contains("refusals_total{") && l.contains(&format!("\"{code}\"")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn bad_tokens_are_refused_at_the_upgrade_each_with_its_code_and_counted() {
    let dir = temp_dir("bad");
    let edge = Edge::start(&dir, ports::free_port().expect("port"));
    let now = unix_now();
    let s = SECRET.as_bytes();
    let claims = json!({"sub": "v@x", "email": "v@x", "exp": now + 3600});
    let hs256 = r#"{"alg":"HS256","typ":"JWT"}"#;
    let none = format!(
        "{}.{}.",
        base64::encode(br#"{"alg":"none","typ":"JWT"}"#),
        base64::encode(claims.to_string().as_bytes())
    );
    let cases = [
        (
            "forged",
            forge(hs256, &claims, b"not-the-box-secret"),
            "INVALID_SIGNATURE",
        ),
        (
            "expired",
            jwt::glasses_token_expiring("v@x", None, now - 7200, now - 3600, s),
            "TOKEN_EXPIRED",
        ),
        ("alg none", none, "UNSUPPORTED_ALGORITHM"),
        (
            "RS256 header, HMAC with the RSA public key",
            forge(
                r#"{"alg":"RS256","typ":"JWT"}"#,
                &claims,
                RSA_PUBLIC_PEM.as_bytes(),
            ),
            "UNSUPPORTED_ALGORITHM",
        ),
        (
            "HS256 signed with the RSA public key",
            forge(hs256, &claims, RSA_PUBLIC_PEM.as_bytes()),
            "INVALID_SIGNATURE",
        ),
        (
            "oversized",
            jwt::sign(
                &json!({"email": "v@x", "exp": now + 60, "pad": "a".repeat(9000)}),
                s,
            ),
            "TOKEN_TOO_LONG",
        ),
        (
            "no exp",
            jwt::glasses_token("v@x", s),
            "TOKEN_WITHOUT_EXPIRY",
        ),
        (
            "unknown device",
            jwt::glasses_token_expiring("device:ghost", Some("0123abcd"), now, now + 60, s),
            "UNKNOWN_DEVICE",
        ),
    ];
    for (what, token, code) in &cases {
        let (status, body) = edge.upgrade(token);
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body["code"], *code, "{what}: {body}");
        assert_eq!(body["type"], "connection_error", "{what}: {body}");
    }
    // Every refusal is counted under its own code.
    let metrics = edge.metrics();
    for (what, _, code) in &cases {
        assert!(refusals(&metrics, code) >= 1, "{what}: {code} not counted");
    }
    // Expired within the configured leeway is still taken; a fresh expiring token too.
    let late = jwt::glasses_token_expiring("w@x", None, now - 100, now - 5, s);
    assert_eq!(edge.upgrade(&late).0, 101);
    let fresh = jwt::glasses_token_expiring("w@x", None, now, now + 600, s);
    let (_ws, ack) = edge.glasses(&fresh, true);
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    // The same refusals through connection_init's coreToken.
    let (_ws, err) = edge.glasses(&cases[1].1, false);
    assert_eq!(err["code"], "TOKEN_EXPIRED", "{err}");
    // No token reaches /metrics or the log.
    let log = edge.log();
    for (what, token, _) in &cases {
        assert!(!metrics.contains(token.as_str()), "{what} in /metrics");
        assert!(!log.contains(token.as_str()), "{what} in the log");
    }
    edge.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_revoked_device_is_cut_off_refused_again_and_stays_revoked_after_a_restart() {
    let dir = temp_dir("revoke");
    let port = ports::free_port().expect("port");
    let edge = Edge::start(&dir, port);

    // Provision two pairs from the command line.
    let (code, out, err) = edge.cli(&["device", "add", "desk-1", "desk-2", "--expires", "2h"]);
    assert_eq!(code, 0, "{err}");
    let tokens: Vec<(String, String)> = out
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].to_string(), f[3].to_string())
        })
        .collect();
    assert_eq!(tokens.len(), 2, "{out}");
    assert_eq!(tokens[0].0, "desk-1");
    let (t1, t2) = (tokens[0].1.clone(), tokens[1].1.clone());
    let claims = jwt::verify(&t1, SECRET.as_bytes(), unix_now()).expect("a valid token");
    let exp = claims["exp"].as_u64().expect("exp");
    assert!((7100..=7300).contains(&(exp - unix_now())), "{claims:?}");
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
    let (code, _, err) = edge.cli(&["device", "add", "desk-1"]);
    assert_eq!(code, 2);
    assert!(err.contains("DEVICE_EXISTS"), "{err}");

    // desk-1 connects; the list shows it seen.
    let (mut ws, ack) = edge.glasses(&t1, true);
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    assert_eq!(ack["sessionId"], "device:desk-1");
    let (code, list, err) = edge.cli(&["device", "list"]);
    assert_eq!(code, 0, "{err}");
    let row = list
        .lines()
        .find(|l| l.starts_with("desk-1\t"))
        .expect("desk-1 listed");
    let cols: Vec<&str> = row.split('\t').collect();
    assert_eq!(cols[1], "device:desk-1");
    assert_ne!(cols[4], "-", "last seen: {row}");
    assert_eq!(cols[5], "-", "not revoked yet: {row}");
    assert!(!list.contains(&t1), "list shows no token");

    // A reconnect racing the revoke: upgraded with the token, connection_init not sent yet.
    let mut racing = edge.upgraded(&t1);

    // Revoke: the connected pair is told why and closed.
    let (code, out, err) = edge.cli(&["device", "revoke", "desk-1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("revoked desk-1"), "{out}");
    let mut told = None;
    while let Some(m) = next_json(&mut ws) {
        if m["type"] == "connection_error" {
            told = Some(m);
        }
    }
    let told = told.expect("a connection_error before the close");
    assert_eq!(told["code"], "DEVICE_REVOKED", "{told}");
    // The racing connection is closed too; its connection_init, if it got through, is no use.
    let _ = racing.send(Message::text(
        json!({"type": "connection_init"}).to_string(),
    ));
    let mut racing_saw = Vec::new();
    while let Some(m) = next_json(&mut racing) {
        racing_saw.push(m);
    }
    assert!(
        racing_saw.iter().all(|m| m["type"] != "connection_ack"),
        "{racing_saw:?}"
    );
    assert!(
        racing_saw.iter().any(|m| m["code"] == "DEVICE_REVOKED"),
        "{racing_saw:?}"
    );
    // A reconnect is refused, with the header or with coreToken; desk-2 is untouched.
    let (status, body) = edge.upgrade(&t1);
    assert_eq!(
        (status, body["code"].clone()),
        (401, json!("DEVICE_REVOKED"))
    );
    let (_ws1, err) = edge.glasses(&t1, false);
    assert_eq!(err["code"], "DEVICE_REVOKED", "{err}");
    let (_ws2, ack) = edge.glasses(&t2, true);
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    // A token made by hand for the revoked device's user id does not get around it.
    let now = unix_now();
    let by_hand =
        jwt::glasses_token_expiring("device:desk-1", None, now, now + 60, SECRET.as_bytes());
    assert_eq!(edge.upgrade(&by_hand).1["code"], "DEVICE_REVOKED");
    assert!(refusals(&edge.metrics(), "DEVICE_REVOKED") >= 3);
    drop((_ws1, _ws2));
    let log = edge.log();
    assert!(
        log.contains("event=device_revoked"),
        "the log is read: {log}"
    );
    assert!(
        !log.contains(&t1) && !log.contains(&t2),
        "a token in the log"
    );
    edge.stop();

    // After a restart: still revoked, desk-2 still provisioned.
    let edge = Edge::start(&dir, port);
    let (status, body) = edge.upgrade(&t1);
    assert_eq!(
        (status, body["code"].clone()),
        (401, json!("DEVICE_REVOKED"))
    );
    let (_ws, ack) = edge.glasses(&t2, true);
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    let (code, list, _) = edge.cli(&["device", "list"]);
    assert_eq!(code, 0);
    let row = list
        .lines()
        .find(|l| l.starts_with("desk-1\t"))
        .expect("desk-1 listed");
    assert_ne!(row.split('\t').nth(5), Some("-"), "revoked: {row}");
    edge.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_operator_device_api_checks_its_token_and_shows_tokens_only_on_request() {
    let dir = temp_dir("api");
    let edge = Edge::start(&dir, ports::free_port().expect("port"));
    let (status, body) = edge.http("GET", "/ui/api/devices", "", "");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("INVALID_OPERATOR_TOKEN"), "{body}");
    let (status, body) = edge.http(
        "POST",
        "/ui/api/devices",
        "Authorization: Bearer not-the-operator-token\r\n",
        r#"{"names": ["x"]}"#,
    );
    assert_eq!(status, 401, "{body}");

    for (body, code) in [
        ("not json", "MALFORMED_BODY"),
        (r#"{"names": []}"#, "MALFORMED_BODY"),
        (r#"{"names": ["a b"]}"#, "INVALID_DEVICE_NAME"),
        (r#"{"names": ["a", "a"]}"#, "DEVICE_EXISTS"),
        (
            r#"{"names": ["a"], "expiresSeconds": 0}"#,
            "INVALID_LIFETIME",
        ),
    ] {
        let (status, v) = edge.operator("POST", "/ui/api/devices", body);
        assert_eq!(v["code"], code, "{body}: {status} {v}");
        assert!(status == 400 || status == 409, "{body}: {status}");
    }
    let (status, v) = edge.operator("POST", "/ui/api/devices", r#"{"names": ["lobby-7"]}"#);
    assert_eq!(status, 200, "{v}");
    let token = v["devices"][0]["token"]
        .as_str()
        .expect("the new token")
        .to_string();
    // The default lifetime applies: a day.
    let exp = v["devices"][0]["expires"].as_u64().expect("expires");
    assert!((86_000..=86_500).contains(&(exp - unix_now())), "{v}");

    // The list has no tokens; the token and its QR code come on request.
    let (status, list) = edge.operator("GET", "/ui/api/devices", "");
    assert_eq!(status, 200);
    assert_eq!(list["devices"][0]["name"], "lobby-7");
    assert!(!list.to_string().contains(&token));
    let (status, shown) = edge.operator("GET", "/ui/api/devices/lobby-7/token", "");
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["token"], token.as_str());
    let svg = shown["qrSvg"].as_str().expect("a QR code");
    assert!(svg.starts_with("<svg") && svg.contains("<path"), "{svg}");
    let (status, v) = edge.operator("GET", "/ui/api/devices/nope/token", "");
    assert_eq!(
        (status, v["code"].clone()),
        (404, json!("DEVICE_NOT_FOUND"))
    );
    let (status, v) = edge.operator("POST", "/ui/api/devices/nope/revoke", "");
    assert_eq!(
        (status, v["code"].clone()),
        (404, json!("DEVICE_NOT_FOUND"))
    );
    let (status, v) = edge.operator("POST", "/ui/api/devices/lobby-7/revoke", "");
    assert_eq!(status, 200, "{v}");
    assert!(v["device"]["revoked"].as_u64().is_some(), "{v}");
    assert!(!edge.metrics().contains(&token));
    assert!(!edge.log().contains(&token));
    edge.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn account_logins_are_exchanged_only_when_configured_and_verified() {
    let dir = temp_dir("accounts-off");
    let edge = Edge::start(&dir, ports::free_port().expect("port"));
    let body = json!({"supabaseToken": "x.y.z"}).to_string();
    let (status, answer) = edge.http("POST", "/api/auth/exchange-token", "", &body);
    assert_eq!(status, 501, "{answer}");
    assert!(answer.contains("ACCOUNT_LOGIN_NOT_CONFIGURED"), "{answer}");
    edge.stop();
    let _ = std::fs::remove_dir_all(&dir);

    const UPSTREAM: &str = "upstream-account-secret-0123456789";
    let dir = temp_dir("accounts-on");
    let edge = Edge::start_with(
        &dir,
        ports::free_port().expect("port"),
        &format!(
            r#", "accountLogin": {{"hs256Secret": "{UPSTREAM}", "issuer": "https://acct.example",
                "audience": "authenticated"}}"#
        ),
    );
    let now = unix_now();
    let good = json!({"iss": "https://acct.example", "aud": "authenticated",
                      "email": "visitor@example.com", "sub": "u-1", "exp": now + 600});
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        jwt::sign(&c, UPSTREAM.as_bytes())
    };
    let exchange = |token: &str| {
        let body = json!({"supabaseToken": token}).to_string();
        let (status, answer) = edge.http("POST", "/api/auth/exchange-token", "", &body);
        (
            status,
            serde_json::from_str::<Value>(&answer).unwrap_or(Value::Null),
        )
    };
    let (status, v) = exchange(&jwt::sign(&good, UPSTREAM.as_bytes()));
    assert_eq!(status, 200, "{v}");
    let core = v["coreToken"].as_str().expect("a core token");
    let claims = jwt::verify(core, SECRET.as_bytes(), now).expect("signed by the box");
    assert!(
        claims["exp"].as_u64().is_some_and(|e| e > now),
        "{claims:?}"
    );
    let (_ws, ack) = edge.glasses(core, true);
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    assert_eq!(ack["sessionId"], "visitor@example.com");

    let header_none = format!(
        "{}.{}.",
        base64::encode(br#"{"alg":"none"}"#),
        base64::encode(good.to_string().as_bytes())
    );
    for (what, token, code) in [
        (
            "forged",
            jwt::sign(&good, b"not-the-upstream-secret"),
            "INVALID_SIGNATURE",
        ),
        ("expired", with("exp", json!(now - 3600)), "TOKEN_EXPIRED"),
        (
            "wrong issuer",
            with("iss", json!("https://evil.example")),
            "WRONG_ISSUER",
        ),
        (
            "wrong audience",
            with("aud", json!("anon")),
            "WRONG_AUDIENCE",
        ),
        ("alg none", header_none, "UNSUPPORTED_ALGORITHM"),
        (
            "RS256 header, HMAC with the RSA public key",
            forge(r#"{"alg":"RS256"}"#, &good, RSA_PUBLIC_PEM.as_bytes()),
            "UNSUPPORTED_ALGORITHM",
        ),
        (
            "a device's user id",
            with("email", json!("device:desk-1")),
            "RESERVED_USER_ID",
        ),
        ("a box token", core.to_string(), "INVALID_SIGNATURE"),
    ] {
        let (status, v) = exchange(&token);
        assert_eq!(
            (status, v["code"].as_str()),
            (401, Some(code)),
            "{what}: {v}"
        );
    }
    let (status, answer) = edge.http("POST", "/api/auth/exchange-token", "", "{}");
    assert_eq!(status, 400, "{answer}");
    assert!(refusals(&edge.metrics(), "WRONG_AUDIENCE") >= 1);
    assert!(!edge.log().contains(core), "a core token in the log");
    edge.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A token signed with `sign` over its header and claims.
fn signed(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input = format!(
        "{}.{}",
        base64::encode(header.to_string().as_bytes()),
        base64::encode(claims.to_string().as_bytes())
    );
    let sig = sign(input.as_bytes());
    format!("{input}.{}", base64::encode(&sig))
}

#[test]
fn account_logins_verified_against_a_jwks_file_refuse_algorithm_confusion() {
    use ring::rand::SystemRandom;
    use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
    let rng = SystemRandom::new();
    // A test-only RSA key (tests/fixtures/rsa-test-key.der, PKCS#1), and a P-256 key made now.
    let rsa = RsaKeyPair::from_der(include_bytes!("fixtures/rsa-test-key.der")).expect("rsa");
    let es = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(es, &rng).expect("p256");
    let ec = EcdsaKeyPair::from_pkcs8(es, pkcs8.as_ref(), &rng).expect("p256");
    let parts: signature::RsaPublicKeyComponents<Vec<u8>> = rsa.public().into();
    let (n, e) = (parts.n, parts.e);
    let point = ec.public_key().as_ref().to_vec();
    let jwks = json!({"keys": [
        {"kty": "RSA", "kid": "rsa-1", "alg": "RS256", "use": "sig",
         "n": base64::encode(&n), "e": base64::encode(&e)},
        {"kty": "EC", "crv": "P-256", "kid": "ec-1",
         "x": base64::encode(&point[1..33]), "y": base64::encode(&point[33..65])},
    ]});
    let dir = temp_dir("jwks");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("jwks.json"), jwks.to_string()).expect("jwks");
    let edge = Edge::start_with(
        &dir,
        ports::free_port().expect("port"),
        &format!(
            r#", "accountLogin": {{"jwksFile": "{}", "issuer": "https://acct.example",
                "audience": "authenticated", "userClaim": "sub"}}"#,
            dir.join("jwks.json").display()
        ),
    );
    let now = unix_now();
    let claims = json!({"iss": "https://acct.example", "aud": "authenticated",
                        "sub": "visitor-7", "exp": now + 600});
    let rs256 = |header: &Value, claims: &Value| {
        signed(header, claims, |input| {
            let mut sig = vec![0; rsa.public().modulus_len()];
            rsa.sign(&signature::RSA_PKCS1_SHA256, &rng, input, &mut sig)
                .expect("sign");
            sig
        })
    };
    let es256 = |header: &Value, claims: &Value| {
        signed(header, claims, |input| {
            ec.sign(&rng, input).expect("sign").as_ref().to_vec()
        })
    };
    let exchange = |token: &str| {
        let body = json!({"supabaseToken": token}).to_string();
        let (status, answer) = edge.http("POST", "/api/auth/exchange-token", "", &body);
        (
            status,
            serde_json::from_str::<Value>(&answer).unwrap_or(Value::Null),
        )
    };
    for token in [
        rs256(&json!({"alg": "RS256", "kid": "rsa-1"}), &claims),
        es256(&json!({"alg": "ES256", "kid": "ec-1"}), &claims),
    ] {
        let (status, v) = exchange(&token);
        assert_eq!(status, 200, "{v}");
        let core = v["coreToken"].as_str().expect("a core token");
        let (_ws, ack) = edge.glasses(core, true);
        assert_eq!(ack["sessionId"], "visitor-7", "{ack}");
    }
    // HS/RS confusion: HS256 signed with the RSA public key, as DER bits or as the JWK's n.
    let mut wrong_iss = claims.clone();
    wrong_iss["iss"] = json!("https://evil.example");
    let mut expired = claims.clone();
    expired["exp"] = json!(now - 3600);
    for (what, token, code) in [
        (
            "HS256 with the RSA modulus as secret",
            forge(r#"{"alg":"HS256","kid":"rsa-1"}"#, &claims, &n),
            "UNSUPPORTED_ALGORITHM",
        ),
        (
            "HS256 with the PEM as secret",
            forge(r#"{"alg":"HS256"}"#, &claims, RSA_PUBLIC_PEM.as_bytes()),
            "UNSUPPORTED_ALGORITHM",
        ),
        (
            "no matching kid",
            rs256(&json!({"alg": "RS256", "kid": "rsa-2"}), &claims),
            "UNKNOWN_KEY_ID",
        ),
        (
            "the EC key asked for RS256",
            rs256(&json!({"alg": "RS256", "kid": "ec-1"}), &claims),
            "UNKNOWN_KEY_ID",
        ),
        (
            "signed by the EC key under the RSA kid",
            es256(&json!({"alg": "ES256", "kid": "rsa-1"}), &claims),
            "UNKNOWN_KEY_ID",
        ),
        (
            "forged RS256",
            {
                let t = rs256(&json!({"alg": "RS256", "kid": "rsa-1"}), &claims);
                let (head, _) = t.rsplit_once('.').expect("three parts");
                format!("{head}.{}", base64::encode(&[7u8; 256]))
            },
            "INVALID_SIGNATURE",
        ),
        (
            "wrong issuer",
            es256(&json!({"alg": "ES256", "kid": "ec-1"}), &wrong_iss),
            "WRONG_ISSUER",
        ),
        (
            "expired",
            rs256(&json!({"alg": "RS256", "kid": "rsa-1"}), &expired),
            "TOKEN_EXPIRED",
        ),
    ] {
        let (status, v) = exchange(&token);
        assert_eq!(
            (status, v["code"].as_str()),
            (401, Some(code)),
            "{what}: {v}"
        );
    }
    let metrics = edge.metrics();
    assert!(refusals(&metrics, "UNKNOWN_KEY_ID") >= 3, "counted");
    assert!(refusals(&metrics, "UNSUPPORTED_ALGORITHM") >= 2, "counted");
    edge.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
