//! Caption finals lost in a drain: an app that does not read when the orderly stop begins
//! loses the finals queued for it, and they are counted (`drain_finals_lost_total`).

use augmentos_edge::auth::{self, jwt};
use augmentos_edge::hub::registry::AppSpec;
use augmentos_edge::hub::HubConfig;
use augmentos_edge::net::{Peer, Target};
use augmentos_edge::server::ServerConfig;
use augmentos_edge::sim::World;
use serde_json::{json, Value};
use std::time::Duration;

const SECRET: &[u8] = b"venue-test-secret-0123";
const USERS: [&str; 3] = ["ada@example.com", "bo@example.com", "cy@example.com"];

const A: &str = "com.example.a";
const B: &str = "com.example.b";
/// The venue feed's publisher.
const FEED: &str = "system.venue.stt";
/// A per-session publisher (not a feed).
const STT: &str = "system.local.stt";

fn key(package: &str) -> String {
    format!("{package}-key")
}

fn spec(package: &str, port: u16, system: bool, publishes: &[&str]) -> AppSpec {
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
        permissions: vec!["ALL".into()],
        allowed_addresses: if system {
            vec!["in-process".into()]
        } else {
            Vec::new()
        },
        publishes: publishes.iter().map(|s| s.to_string()).collect(),
        settings: Vec::new(),
    }
}

fn world_with(server: ServerConfig) -> World {
    World::with_hub(
        server,
        HubConfig {
            jwt_secret: SECRET.to_vec(),
            apps: vec![
                spec(A, 4001, false, &[]),
                spec(B, 4002, false, &[]),
                spec(FEED, 4003, true, &["transcription", "translation"]),
                spec(STT, 4004, true, &["transcription"]),
            ],
            lifecycle_burst: 100,
            venue_feeds: vec![("main".into(), FEED.into())],
            ..HubConfig::default()
        },
    )
}

fn glasses(w: &mut World, user: &str) -> usize {
    let g = w.connect();
    let bearer = format!("Authorization: Bearer {}", jwt::glasses_token(user, SECRET));
    assert_eq!(w.upgrade_with(g, "/glasses-ws", &[&bearer]).0, 101);
    w.send_text(g, r#"{"type":"connection_init"}"#);
    let msgs = w.json_messages(g);
    assert_eq!(msgs[0]["type"], "connection_ack", "{msgs:?}");
    g
}

/// Start `package` from the glasses of `user`, connect it, subscribe it to `subs`.
fn app(w: &mut World, g: usize, user: &str, package: &str, subs: Value) -> usize {
    if package != STT {
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
    subscribe(w, c, subs);
    w.json_messages(c);
    c
}

fn init(w: &mut World, c: usize, package: &str, session_id: &str, api_key: &str) {
    w.send_text(
        c,
        &json!({"type": "tpa_connection_init", "packageName": package,
                "sessionId": session_id, "apiKey": api_key})
        .to_string(),
    );
}

fn subscribe(w: &mut World, c: usize, subs: Value) {
    w.send_text(
        c,
        &json!({"type": "subscription_update", "subscriptions": subs}).to_string(),
    );
}

/// The venue publisher, connected from `peer` as `sessionId` `id`; returns it and its replies.
fn publisher(w: &mut World, peer: Peer, id: &str, package: &str, k: &str) -> (usize, Vec<Value>) {
    let c = w.connect_from(peer);
    assert_eq!(w.upgrade(c, "/app-ws"), 101);
    init(w, c, package, id, k);
    let msgs = w.json_messages(c);
    (c, msgs)
}

fn feed(w: &mut World) -> usize {
    let (c, msgs) = publisher(w, Peer::InProcess, "venue", FEED, &key(FEED));
    assert_eq!(msgs[0]["type"], "tpa_connection_ack", "{msgs:?}");
    assert_eq!(msgs[0]["sessionId"], "venue");
    // Besides the ack, a translation publisher is told what its followers want, nothing else.
    assert!(
        msgs[1..].iter().all(|m| m["type"] == "publish_demand"),
        "{msgs:?}"
    );
    c
}

fn transcript(text: &str, lang: &str, is_final: bool) -> Value {
    json!({"type": "transcription", "text": text, "isFinal": is_final, "startTime": 100,
           "endTime": 900, "transcribeLanguage": lang})
}

fn publish(w: &mut World, c: usize, data: &Value) {
    w.send_text(
        c,
        &json!({"type": "data_stream", "streamType": data["type"], "data": data}).to_string(),
    );
}

/// The `(streamType, data)` of every `data_stream` client `c` received.
fn streams(w: &mut World, c: usize) -> Vec<(String, Value)> {
    w.json_messages(c)
        .into_iter()
        .filter(|m| m["type"] == "data_stream")
        .map(|m| {
            (
                m["streamType"].as_str().unwrap().to_string(),
                m["data"].clone(),
            )
        })
        .collect()
}

#[test]
fn finals_queued_for_an_app_that_does_not_read_when_a_drain_begins_are_counted_lost() {
    let mut w = world_with(ServerConfig {
        ping_interval: None,
        read_pause: 1 << 20,
        max_output: 4 << 20,
        stall_timeout: Duration::from_secs(60),
        ..ServerConfig::default()
    });
    let g1 = glasses(&mut w, USERS[0]);
    let reading = app(&mut w, g1, USERS[0], A, json!(["transcription:en-US"]));
    let g2 = glasses(&mut w, USERS[1]);
    let stalled = app(&mut w, g2, USERS[1], A, json!(["transcription:en-US"]));
    w.set_reading(stalled, false);
    let f = feed(&mut w);
    for i in 0..12 {
        publish(
            &mut w,
            f,
            &transcript(&format!("interim {i}"), "en-US", false),
        );
        if i % 3 == 2 {
            publish(&mut w, f, &transcript(&format!("final {i}"), "en-US", true));
        }
    }
    assert_eq!(streams(&mut w, reading).len(), 16);
    let now = w.clock();
    w.server.handle_shutdown(now);
    w.step();
    assert_eq!(
        w.server.drain_finals_lost(),
        0,
        "nothing lost before the deadline"
    );
    // The stalled app never reads: at the close deadline its connection goes with 4 finals
    // (and its interims) unwritten; the reading app lost nothing.
    w.advance(Duration::from_secs(30));
    assert!(w.clients[stalled].closed);
    assert_eq!(w.server.drain_finals_lost(), 4);
    assert_eq!(w.server.finish_drain(), 4);
    let now = w.clock();
    let metrics = w.server.metrics(now);
    assert!(
        metrics.contains("augmentos_edge_drain_finals_lost_total 4"),
        "{metrics}"
    );
}
