//! Test support for the deterministic tests through the in-memory world ([`World`]): the app
//! specs, a venue box (two ordinary apps, the venue feed's publisher and a per-session
//! publisher), and the clients every such test drives: initialised glasses, a started and
//! subscribed app, a venue publisher, and what a client received as `data_stream`s.
//!
//! Invariants: every helper that connects a client asserts the upgrade and the ack it needs, so
//! a test fails at the step that went wrong; nothing here moves virtual time.

// Not every test file uses every helper.
#![allow(dead_code)]

use augmentos_edge::auth::{self, jwt};
use augmentos_edge::hub::registry::AppSpec;
use augmentos_edge::hub::HubConfig;
use augmentos_edge::net::{Peer, Target};
use augmentos_edge::server::ServerConfig;
use augmentos_edge::sim::World;
use serde_json::{json, Value};

pub const SECRET: &[u8] = b"world-test-secret-0123";

pub const A: &str = "com.example.a";
pub const B: &str = "com.example.b";
/// The venue feed's publisher.
pub const FEED: &str = "system.venue.stt";
/// A per-session publisher (not a feed).
pub const STT: &str = "system.local.stt";

pub fn key(package: &str) -> String {
    format!("{package}-key")
}

/// An app with every permission; a `system` app may connect in-process only.
pub fn spec(package: &str, port: u16, system: bool, publishes: &[&str]) -> AppSpec {
    spec_with(package, port, &["ALL"], system, publishes)
}

pub fn spec_with(
    package: &str,
    port: u16,
    perms: &[&str],
    system: bool,
    publishes: &[&str],
) -> AppSpec {
    AppSpec {
        package_name: package.into(),
        name: package.into(),
        public_url: format!("http://apps.example:{port}"),
        webhook_target: Target {
            host: "apps.example".into(),
            port,
            tls: None,
        },
        webhook_path: String::new(),
        hashed_api_key: auth::hash_api_key(&key(package)),
        is_system_app: system,
        permissions: perms.iter().map(|s| s.to_string()).collect(),
        allowed_addresses: if system {
            vec!["in-process".into()]
        } else {
            Vec::new()
        },
        publishes: publishes.iter().map(|s| s.to_string()).collect(),
        settings: Vec::new(),
    }
}

/// A server that never pings, so only what a test does moves.
pub fn quiet() -> ServerConfig {
    ServerConfig {
        ping_interval: None,
        ..ServerConfig::default()
    }
}

/// A box with `apps` and the venue feeds `feeds` (`(name, publisher)`).
pub fn hub(apps: Vec<AppSpec>, feeds: &[(&str, &str)]) -> HubConfig {
    HubConfig {
        jwt_secret: SECRET.to_vec(),
        apps,
        lifecycle_burst: 100,
        venue_feeds: feeds
            .iter()
            .map(|&(n, p)| (n.to_string(), p.to_string()))
            .collect(),
        ..HubConfig::default()
    }
}

/// The venue box: apps [`A`] and [`B`], the feed "main" published by [`FEED`], and [`STT`].
pub fn venue_hub() -> HubConfig {
    hub(
        vec![
            spec(A, 4001, false, &[]),
            spec(B, 4002, false, &[]),
            spec(FEED, 4003, true, &["transcription", "translation"]),
            spec(STT, 4004, true, &["transcription"]),
        ],
        &[("main", FEED)],
    )
}

pub fn venue_world(server: ServerConfig) -> World {
    World::with_hub(server, venue_hub())
}

/// Glasses of `user`, connected with a bearer token and initialised (the ack read).
pub fn glasses(w: &mut World, user: &str) -> usize {
    let g = w.connect();
    let bearer = format!("Authorization: Bearer {}", jwt::glasses_token(user, SECRET));
    assert_eq!(w.upgrade_with(g, "/glasses-ws", &[&bearer]).0, 101);
    w.send_text(g, r#"{"type":"connection_init"}"#);
    let msgs = w.json_messages(g);
    assert_eq!(msgs[0]["type"], "connection_ack", "{msgs:?}");
    g
}

pub fn init(w: &mut World, c: usize, package: &str, session_id: &str, api_key: &str) {
    w.send_text(
        c,
        &json!({"type": "tpa_connection_init", "packageName": package,
                "sessionId": session_id, "apiKey": api_key})
        .to_string(),
    );
}

/// Connect `package` into the session of `user` (started from the glasses `g` unless
/// `started` is false) and answer its webhooks; returns it and what it got (the ack first).
pub fn connect_app(
    w: &mut World,
    g: usize,
    user: &str,
    package: &str,
    started: bool,
) -> (usize, Vec<Value>) {
    if started {
        w.send_text(
            g,
            &json!({"type": "start_app", "packageName": package}).to_string(),
        );
    }
    let c = w.connect();
    assert_eq!(w.upgrade(c, "/app-ws"), 101);
    init(w, c, package, &format!("{user}-{package}"), &key(package));
    let msgs = w.json_messages(c);
    assert_eq!(msgs[0]["type"], "tpa_connection_ack", "{package}: {msgs:?}");
    for i in w.open_outbound() {
        w.respond_http(i, 200);
    }
    (c, msgs)
}

/// Start `package` from the glasses of `user` (unless it is [`STT`]), connect it, subscribe it
/// to `subs`; returns it with its inbox drained.
pub fn app(w: &mut World, g: usize, user: &str, package: &str, subs: Value) -> usize {
    let (c, _) = connect_app(w, g, user, package, package != STT);
    subscribe(w, c, subs);
    w.json_messages(c);
    c
}

pub fn subscribe(w: &mut World, c: usize, subs: Value) {
    w.send_text(
        c,
        &json!({"type": "subscription_update", "subscriptions": subs}).to_string(),
    );
}

/// A venue publisher, connected from `peer` as `sessionId` `id`; returns it and its replies.
pub fn publisher(
    w: &mut World,
    peer: Peer,
    id: &str,
    package: &str,
    k: &str,
) -> (usize, Vec<Value>) {
    let c = w.connect_from(peer);
    assert_eq!(w.upgrade(c, "/app-ws"), 101);
    init(w, c, package, id, k);
    let msgs = w.json_messages(c);
    (c, msgs)
}

pub fn transcript(text: &str, lang: &str, is_final: bool) -> Value {
    json!({"type": "transcription", "text": text, "isFinal": is_final, "startTime": 100,
           "endTime": 900, "transcribeLanguage": lang})
}

/// Publish `data` from `c` under its own `type` as the stream type.
pub fn publish(w: &mut World, c: usize, data: &Value) {
    w.send_text(
        c,
        &json!({"type": "data_stream", "streamType": data["type"], "data": data}).to_string(),
    );
}

/// The `(streamType, data)` of every `data_stream` client `c` received.
pub fn streams(w: &mut World, c: usize) -> Vec<(String, Value)> {
    w.json_messages(c)
        .into_iter()
        .filter(|m| m["type"] == "data_stream")
        .map(|m| (m["streamType"].as_str().unwrap().into(), m["data"].clone()))
        .collect()
}
