//! The `/metrics` and `/health` documents of a non-trivial world, byte for byte: sessions,
//! an active app, webhooks in flight and waiting, a refused start, a protocol error, an idle
//! WebSocket, all on the in-memory world's virtual clock (so nothing varies run to run). The
//! golden files pin the exposition's exact text, so moving or reshaping the renderers cannot
//! change what an operator's scraper reads. Regenerate them only for an intended change:
//! `EXPOSITION_BLESS=1 cargo test --test exposition`.

/// The reference Prometheus parser (shared with the real-socket tests).
#[path = "support/prom.rs"]
mod prom;

use augmentos_edge::auth::{self, jwt};
use augmentos_edge::hub::registry::AppSpec;
use augmentos_edge::hub::{HubConfig, Timings};
use augmentos_edge::net::Target;
use augmentos_edge::server::ServerConfig;
use augmentos_edge::sim::World;
use serde_json::json;
use std::time::Duration;

const SECRET: &[u8] = b"exposition-secret";
const CAPTIONS: &str = "com.example.captions";
const KEY: &str = "captions-key";

fn world() -> World {
    let spec = AppSpec {
        package_name: CAPTIONS.into(),
        name: "captions".into(),
        public_url: "http://apps.example:3001".into(),
        webhook_target: Target {
            host: "apps.example".into(),
            port: 3001,
            tls: None,
        },
        webhook_path: String::new(),
        hashed_api_key: auth::hash_api_key(KEY),
        is_system_app: false,
        permissions: vec!["MICROPHONE".into()],
        allowed_addresses: Vec::new(),
        publishes: Vec::new(),
        settings: Vec::new(),
    };
    World::with_hub(
        ServerConfig {
            echo: true,
            ..ServerConfig::default()
        },
        HubConfig {
            public_ws_url: "ws://edge.example:8002".into(),
            jwt_secret: SECRET.to_vec(),
            apps: vec![spec],
            timings: Timings::default(),
            max_webhooks_per_server: 1,
            max_queued_webhooks: 2,
            ..HubConfig::default()
        },
    )
}

fn glasses(w: &mut World, user: &str) -> usize {
    let g = w.connect();
    let auth = format!("Authorization: Bearer {}", jwt::glasses_token(user, SECRET));
    let (status, body) = w.upgrade_with(g, "/glasses-ws", &[&auth]);
    assert_eq!(status, 101, "{body}");
    w.send_text(g, r#"{"type":"connection_init"}"#);
    assert_eq!(w.json_messages(g)[0]["type"], "connection_ack");
    g
}

/// A world with something in every section of the exposition.
fn busy_world() -> World {
    let mut w = world();
    let users: Vec<String> = (0..4).map(|i| format!("u{i}@venue.example")).collect();
    let gs: Vec<usize> = users.iter().map(|u| glasses(&mut w, u)).collect();
    // Four starts at a server taking one at a time with room for two waiting: one sent, two
    // wait, one refused.
    for &g in &gs {
        w.send_text(
            g,
            &json!({"type": "start_app", "packageName": CAPTIONS}).to_string(),
        );
    }
    w.advance(Duration::from_millis(1500));
    // The first start is answered as the SDK does: the app connects, then 200.
    let first = w.open_outbound()[0];
    let app = w.connect();
    assert_eq!(w.upgrade(app, "/app-ws"), 101);
    w.send_text(
        app,
        &json!({
            "type": "tpa_connection_init",
            "packageName": CAPTIONS,
            "sessionId": format!("{}-{CAPTIONS}", users[0]),
            "apiKey": KEY,
        })
        .to_string(),
    );
    assert_eq!(w.json_messages(app)[0]["type"], "tpa_connection_ack");
    w.respond_http(first, 200);
    w.send_text(
        gs[0],
        r#"{"type":"button_press","buttonId":"a","pressType":"short"}"#,
    );
    // An echo peer that breaks the protocol, and one that stays quiet.
    let bad = w.connect();
    assert_eq!(w.upgrade(bad, "/echo"), 101);
    w.send_text(bad, "\u{0}");
    w.send_raw(bad, &[0x81, 0x01, b'x']); // unmasked: closed 1002
    let quiet = w.connect();
    assert_eq!(w.upgrade(quiet, "/echo"), 101);
    // Glasses that leave: their session waits out its grace period.
    w.client_eof(gs[3]);
    w.advance(Duration::from_millis(2500));
    w
}

fn http_get(w: &mut World, path: &str) -> String {
    let c = w.connect();
    w.send_raw(c, format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes());
    let (status, body) = w.clients[c].take_http_response().unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

/// Compares `got` with the golden file `name`; the crate version is written as `VERSION`
/// there, so a release does not rewrite the files.
fn check(name: &str, got: &str) {
    let version = format!("\"version\":\"{}\"", env!("CARGO_PKG_VERSION"));
    let got = got.replace(&version, "\"version\":\"VERSION\"");
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("EXPOSITION_BLESS").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap();
    assert!(
        got == want,
        "{name} changed:\n--- got\n{got}\n--- want\n{want}"
    );
}

#[test]
fn metrics_exposition_is_unchanged() {
    let mut w = busy_world();
    let body = http_get(&mut w, "/metrics");
    check("exposition.prom", &body);
    // The golden text is valid exposition text, and shows the world it was taken from.
    if let Some(samples) = prom::parse(&body) {
        let queue_full = [("code", "WEBHOOK_QUEUE_FULL")];
        assert_eq!(
            prom::value(&samples, "augmentos_edge_refusals_total", &queue_full),
            1.0
        );
        assert_eq!(prom::value(&samples, "augmentos_edge_sessions", &[]), 4.0);
        let server = [("server", "apps.example:3001")];
        assert_eq!(
            prom::value(&samples, "augmentos_edge_webhook_queue_length", &server),
            1.0
        );
    }
}

#[test]
fn health_document_is_unchanged() {
    let mut w = busy_world();
    let body = http_get(&mut w, "/health");
    check("health.json", &body);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["sessions"].as_u64(), v["ready"].as_bool()),
        (Some(4), Some(true))
    );
}
