//! What an idle session with one started, subscribed app leaves in the core's heap, reached the
//! way a venue reaches it: glasses connect, start the app, its webhook goes out, the app
//! connects, is acked, the webhook is answered 200, the app subscribes, one event is relayed,
//! and then nothing happens for a minute of virtual time.
//!
//! Counted, not timed: a counting global allocator gives the bytes the server frees when it is
//! dropped; the same for a server that never had a session is taken off; the rest, divided by
//! the sessions, is what one idle session with its app holds (both connections included). This
//! file holds one test, so no other test allocates while it counts.

use augmentos_edge::auth::{self, jwt};
use augmentos_edge::hub::registry::AppSpec;
use augmentos_edge::hub::{HubConfig, Timings};
use augmentos_edge::net::{Peer, Target};
use augmentos_edge::server::{Server, ServerConfig};
use augmentos_edge::sim::World;
use augmentos_edge::time::{Instant, Now};
use serde_json::json;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::time::Duration;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Relaxed);
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Relaxed);
        System.alloc_zeroed(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Relaxed);
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static A: Counting = Counting;

const SECRET: &[u8] = b"idle-memory-secret";
const APP: &str = "com.example.captions";
const KEY: &str = "captions-key";
/// Sessions set up: enough that the tables' growth steps average out, and just under a power
/// of two (the connection table then has little spare room, as at 5 000 in a venue).
const SESSIONS: usize = 500;

fn config() -> (ServerConfig, HubConfig) {
    let app = AppSpec {
        package_name: APP.into(),
        name: "Captions".into(),
        public_url: "http://apps.example:3001".into(),
        webhook_target: Target {
            host: "apps.example".into(),
            port: 3001,
            tls: None,
        },
        webhook_path: "/webhook".into(),
        hashed_api_key: auth::hash_api_key(KEY),
        is_system_app: false,
        permissions: vec!["MICROPHONE".into()],
        allowed_addresses: Vec::new(),
        publishes: Vec::new(),
        settings: Vec::new(),
    };
    let server = ServerConfig {
        ping_interval: None,
        ..ServerConfig::default()
    };
    let hub = HubConfig {
        public_ws_url: "ws://edge.example:8002".into(),
        internal_ws_url: "ws://edge.example:8002".into(),
        jwt_secret: SECRET.to_vec(),
        apps: vec![app],
        timings: Timings::default(),
        max_sessions: SESSIONS + 1,
        ..HubConfig::default()
    };
    (server, hub)
}

/// One session as a venue makes it; returns its glasses and app clients.
fn session_with_app(w: &mut World, n: usize) -> (usize, usize) {
    let user = format!("visitor{n}@venue.example");
    let g = w.connect_from(Peer::Ip(
        format!("10.1.{}.{}:40000", n / 250, n % 250 + 1)
            .parse()
            .unwrap(),
    ));
    let bearer = format!(
        "Authorization: Bearer {}",
        jwt::glasses_token(&user, SECRET)
    );
    assert_eq!(w.upgrade_with(g, "/glasses-ws", &[&bearer]).0, 101);
    w.send_text(g, r#"{"type":"connection_init"}"#);
    assert_eq!(w.json_messages(g)[0]["type"], "connection_ack");
    w.send_text(
        g,
        &json!({"type": "start_app", "packageName": APP}).to_string(),
    );
    let hook = w.open_outbound().pop().expect("a session_request");
    let sid = format!("{user}-{APP}");
    let a = w.connect_from(Peer::Ip("10.0.0.2:50000".parse().unwrap()));
    assert_eq!(w.upgrade(a, "/app-ws"), 101);
    w.send_text(
        a,
        &json!({"type": "tpa_connection_init", "packageName": APP, "sessionId": sid, "apiKey": KEY})
            .to_string(),
    );
    assert_eq!(w.json_messages(a)[0]["type"], "tpa_connection_ack");
    w.respond_http(hook, 200);
    w.send_text(
        a,
        &json!({"type": "subscription_update", "packageName": APP, "subscriptions": ["button_press"], "sessionId": sid})
            .to_string(),
    );
    assert_eq!(w.server.hub.app_state(&user, APP), Some("active"));
    (g, a)
}

/// Heap bytes `w`'s server holds: what dropping it frees.
fn server_heap(w: &mut World) -> isize {
    let (cfg, hub) = config();
    let empty = Server::new(cfg, hub, Now::new(Instant::ZERO, w.clock().wall));
    let before = LIVE.load(Relaxed);
    drop(std::mem::replace(&mut w.server, empty));
    before - LIVE.load(Relaxed)
}

#[test]
fn an_idle_session_with_a_started_subscribed_app_holds_little_heap() {
    let (cfg, hub) = config();
    let mut bare = World::with_hub(cfg.clone(), hub.clone());
    bare.advance(Duration::from_secs(60));
    let base = server_heap(&mut bare);

    let mut w = World::with_hub(cfg, hub);
    let clients: Vec<(usize, usize)> = (0..SESSIONS).map(|n| session_with_app(&mut w, n)).collect();
    // One event through every session, then a minute of nothing, deadline by deadline.
    for &(g, a) in &clients {
        w.send_text(
            g,
            r#"{"type":"button_press","buttonId":"select","pressType":"short"}"#,
        );
        assert!(w
            .json_messages(a)
            .iter()
            .any(|m| m["type"] == "data_stream"));
    }
    w.advance(Duration::from_secs(60));
    for &(g, a) in &clients {
        assert!(!w.clients[g].closed && !w.clients[a].closed);
    }
    assert_eq!(w.server.hub.session_count(), SESSIONS);
    let held = server_heap(&mut w);
    let per_session = (held - base) / SESSIONS as isize;
    eprintln!("server heap: {held} B with {SESSIONS} idle sessions, {base} B without: {per_session} B per session");
    // The bar: an idle session with its app costs at most 2 KiB (measured from outside with
    // `edge-load idle --sessions --apps 1`); here the bytes asked of the allocator, spare room
    // of the tables and the simulation's display trace included.
    assert!(
        per_session <= 2048,
        "an idle session with one app holds {per_session} B of the core's heap (budget 2048 B)"
    );
}
