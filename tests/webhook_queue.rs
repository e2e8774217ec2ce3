//! The webhook queue per app server, through the in-memory world (`sim::World`) on a virtual
//! clock stepped deadline by deadline: a rush of app starts waits its turn behind
//! `maxWebhooksPerServer` instead of failing, in arrival order; a start that waits leaves the
//! queue when it is cancelled; the connect deadline counts from the send and the wait has its
//! own (`webhookQueueTimeoutMs`); past `maxQueuedWebhooks` a start is refused with its code.
//! The queue's length and oldest wait show in `/metrics` and the operator state.

use augmentos_edge::auth::{self, jwt};
use augmentos_edge::hub::registry::AppSpec;
use augmentos_edge::hub::{HubConfig, Timings};
use augmentos_edge::net::Target;
use augmentos_edge::server::ServerConfig;
use augmentos_edge::sim::World;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

const SECRET: &[u8] = b"queue-test-secret";
const CAPTIONS: &str = "com.example.captions";
const KEY: &str = "captions-key";
const PORT: u16 = 3001;

fn world(cap: usize, bound: usize, timings: Timings) -> World {
    let spec = AppSpec {
        package_name: CAPTIONS.into(),
        name: "captions".into(),
        public_url: format!("http://apps.example:{PORT}"),
        webhook_target: Target {
            host: "apps.example".into(),
            port: PORT,
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
            ping_interval: None,
            ..ServerConfig::default()
        },
        HubConfig {
            public_ws_url: "ws://edge.example:8002".into(),
            jwt_secret: SECRET.to_vec(),
            apps: vec![spec],
            timings,
            max_webhooks_per_server: cap,
            max_queued_webhooks: bound,
            ..HubConfig::default()
        },
    )
}

fn user(i: usize) -> String {
    format!("u{i:03}@venue.example")
}

fn sid(user: &str) -> String {
    format!("{user}-{CAPTIONS}")
}

/// Glasses of `user`, initialised, inbox drained.
fn glasses(w: &mut World, user: &str) -> usize {
    let g = w.connect();
    let auth = format!("Authorization: Bearer {}", jwt::glasses_token(user, SECRET));
    let (status, body) = w.upgrade_with(g, "/glasses-ws", &[&auth]);
    assert_eq!(status, 101, "{body}");
    w.send_text(g, r#"{"type":"connection_init"}"#);
    assert_eq!(w.json_messages(g)[0]["type"], "connection_ack");
    g
}

fn send(w: &mut World, g: usize, ty: &str) {
    w.send_text(g, &json!({"type": ty, "packageName": CAPTIONS}).to_string());
}

/// The user of outbound request `i`, if it is a `session_request`.
fn start_of(w: &World, i: usize) -> Option<String> {
    let v = w.outbound[i].json()?;
    (v["type"] == "session_request").then(|| v["userId"].as_str().unwrap_or("").to_string())
}

fn session_requests(w: &World) -> Vec<String> {
    (0..w.outbound.len())
        .filter_map(|i| start_of(w, i))
        .collect()
}

fn in_flight(w: &World) -> usize {
    w.open_outbound()
        .iter()
        .filter(|&&i| w.outbound[i].target.port == PORT)
        .count()
}

/// What the app server does with a `session_request`, as SDK 2.1.29: connect the app for the
/// session, then answer 200.
fn answer_as_the_sdk(w: &mut World, i: usize) {
    let user = start_of(w, i).expect("a session_request");
    let c = w.connect();
    assert_eq!(w.upgrade(c, "/app-ws"), 101);
    w.send_text(
        c,
        &json!({
            "type": "tpa_connection_init",
            "packageName": CAPTIONS,
            "sessionId": sid(&user),
            "apiKey": KEY,
        })
        .to_string(),
    );
    let msgs = w.json_messages(c);
    assert_eq!(msgs[0]["type"], "tpa_connection_ack", "{user}: {msgs:?}");
    w.respond_http(i, 200);
}

fn app_stopped_error(msgs: &[Value]) -> Option<String> {
    msgs.iter()
        .find(|m| m["type"] == "app_stopped" && m["packageName"] == CAPTIONS)
        .and_then(|m| m["error"].as_str().map(String::from))
}

fn queue(w: &World) -> (usize, usize, Duration) {
    let l = w.server.hub.webhook_servers(w.clock());
    assert_eq!(l.len(), 1);
    (l[0].in_flight, l[0].waiting, l[0].oldest)
}

#[test]
fn a_rush_of_starts_waits_its_turn_in_order_and_every_app_becomes_active() {
    // 100 visitors start the captions app at once; its server answers each start a second
    // after it arrives and takes at most 16 at a time. 100 / 16 rounds of a second: the last
    // start is sent after about 6 s, past the 5 s connect deadline counted from the start.
    const N: usize = 100;
    const SLOW: Duration = Duration::from_secs(1);
    let mut w = world(16, 10_000, Timings::default());
    let users: Vec<String> = (0..N).map(user).collect();
    let gs: Vec<usize> = users.iter().map(|u| glasses(&mut w, u)).collect();
    for &g in &gs {
        send(&mut w, g, "start_app");
    }
    assert_eq!(in_flight(&w), 16);
    assert_eq!(queue(&w).1, N - 16, "the rest wait");
    let t0 = w.now;
    let mut seen: HashMap<usize, _> = HashMap::new();
    let mut peak = 0;
    let mut oldest = Duration::ZERO;
    for _ in 0..10 * N {
        for i in w.open_outbound() {
            seen.entry(i).or_insert(w.now);
        }
        peak = peak.max(in_flight(&w));
        oldest = oldest.max(queue(&w).2);
        // The earliest answer due; time passes deadline by deadline until then.
        let Some((&i, &at)) = w
            .open_outbound()
            .iter()
            .map(|i| (i, &seen[i]))
            .min_by_key(|(i, at)| (**at, **i))
        else {
            break;
        };
        let due = at + SLOW;
        if due > w.now {
            w.advance(due.saturating_since(w.now));
        }
        answer_as_the_sdk(&mut w, i);
    }
    peak = peak.max(in_flight(&w));
    let active = users
        .iter()
        .filter(|u| w.server.hub.app_state(u, CAPTIONS) == Some("active"))
        .count();
    assert_eq!(active, N, "every start waited its turn");
    assert!(peak <= 16, "in flight to one app server: {peak}");
    assert_eq!(peak, 16);
    assert_eq!(
        session_requests(&w),
        users,
        "sent in the order the starts arrived"
    );
    assert!(w.now.saturating_since(t0) > Duration::from_secs(6));
    assert!(
        oldest >= Duration::from_secs(5),
        "the queue's age was seen: {oldest:?}"
    );
    assert_eq!(queue(&w), (0, 0, Duration::ZERO));
    for &g in &gs {
        assert_eq!(app_stopped_error(&w.json_messages(g)), None);
    }
    assert_eq!(w.server.hub.counters.webhooks_queued, (N - 16) as u64);
    assert_eq!(w.server.hub.counters.refusals_total, 0);
}

#[test]
fn a_cancelled_start_leaves_the_queue_and_the_next_is_sent_at_once() {
    let timings = Timings {
        grace_period: Duration::from_secs(2),
        ..Timings::default()
    };
    let mut w = world(1, 10_000, timings);
    let users: Vec<String> = (0..4).map(user).collect();
    let gs: Vec<usize> = users.iter().map(|u| glasses(&mut w, u)).collect();
    for &g in &gs {
        send(&mut w, g, "start_app");
    }
    assert_eq!(session_requests(&w), [users[0].clone()]);
    assert_eq!(queue(&w), (1, 3, Duration::ZERO));
    // u1 stops its app while its start waits; u2's glasses leave and its session ends.
    send(&mut w, gs[1], "stop_app");
    assert_eq!(queue(&w).1, 2);
    w.client_eof(gs[2]);
    w.advance(Duration::from_secs(2));
    assert_eq!(w.server.hub.session_count(), 3);
    assert_eq!(queue(&w), (1, 1, Duration::from_secs(2)));
    // u0's start is answered: u3's is sent at once, the cancelled ones never.
    let first = w.open_outbound()[0];
    answer_as_the_sdk(&mut w, first);
    assert_eq!(session_requests(&w), [users[0].clone(), users[3].clone()]);
    let next = w.open_outbound()[0];
    answer_as_the_sdk(&mut w, next);
    assert_eq!(w.server.hub.app_state(&users[3], CAPTIONS), Some("active"));
    // The app server never heard of u1's or u2's start, so it hears no stop for them either.
    assert_eq!(w.outbound.len(), 2, "no other webhook went out");
    assert_eq!(queue(&w), (0, 0, Duration::ZERO));
}

#[test]
fn the_connect_deadline_counts_from_the_send_and_the_wait_has_its_own() {
    let timings = Timings {
        webhook_queue_timeout: Duration::from_millis(8_100),
        webhook_timeout: Duration::from_secs(30),
        ..Timings::default()
    };
    let mut w = world(1, 10_000, timings);
    let users: Vec<String> = (0..3).map(user).collect();
    let gs: Vec<usize> = users.iter().map(|u| glasses(&mut w, u)).collect();
    for &g in &gs {
        send(&mut w, g, "start_app");
    }
    // The app server takes 3 s for u0: u1's start is sent then, and gets its 5 s from then.
    w.advance(Duration::from_secs(3));
    let first = w.open_outbound()[0];
    answer_as_the_sdk(&mut w, first);
    assert_eq!(session_requests(&w).len(), 2);
    w.advance(Duration::from_millis(4_900));
    assert_eq!(w.server.hub.app_state(&users[1], CAPTIONS), Some("loading"));
    // At 8 s u1's connect deadline passes; u2, still waiting, has 0.1 s of its 8.1 s left,
    // then fails with the queue's own code, and leaves it.
    w.advance(Duration::from_millis(100));
    assert_eq!(w.server.hub.app_state(&users[1], CAPTIONS), Some("failed"));
    assert_eq!(
        app_stopped_error(&w.json_messages(gs[1])).as_deref(),
        Some("APP_CONNECT_TIMEOUT")
    );
    assert_eq!(w.server.hub.app_state(&users[2], CAPTIONS), Some("loading"));
    w.advance(Duration::from_millis(100));
    assert_eq!(w.server.hub.app_state(&users[2], CAPTIONS), Some("failed"));
    assert_eq!(
        app_stopped_error(&w.json_messages(gs[2])).as_deref(),
        Some("WEBHOOK_QUEUE_TIMEOUT")
    );
    assert_eq!(queue(&w).1, 0);
    assert_eq!(session_requests(&w).len(), 2, "u2's start was never sent");
    let metrics = w.server.metrics(w.clock());
    assert!(
        metrics.contains(r#"augmentos_edge_webhooks_total{outcome="queue_timeout"} 1"#),
        "{metrics}"
    );
}

#[test]
fn past_the_total_bound_a_start_is_refused_with_its_code_and_counted() {
    let mut w = world(1, 2, Timings::default());
    let users: Vec<String> = (0..4).map(user).collect();
    let gs: Vec<usize> = users.iter().map(|u| glasses(&mut w, u)).collect();
    for &g in &gs[..3] {
        send(&mut w, g, "start_app");
    }
    w.advance(Duration::from_millis(1_500));
    // One in flight, two waiting: the queue, its age, in /metrics and the operator state.
    let metrics = w.server.metrics(w.clock());
    let server = "apps.example:3001";
    for line in [
        format!(r#"augmentos_edge_webhooks_in_flight{{server="{server}"}} 1"#),
        format!(r#"augmentos_edge_webhook_queue_length{{server="{server}"}} 2"#),
        format!(r#"augmentos_edge_webhook_queue_age_seconds{{server="{server}"}} 1.5"#),
    ] {
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    let state = w.server.ui_state(w.clock());
    assert_eq!(
        state["webhookServers"],
        json!([{"server": server, "inFlight": 1, "waiting": 2, "oldestWaitMs": 1500}])
    );
    // The fourth finds the queue full: refused with its code, nothing sent, nothing waiting.
    send(&mut w, gs[3], "start_app");
    assert_eq!(w.server.hub.app_state(&users[3], CAPTIONS), Some("failed"));
    assert_eq!(
        app_stopped_error(&w.json_messages(gs[3])).as_deref(),
        Some("WEBHOOK_QUEUE_FULL")
    );
    assert_eq!(
        w.server.hub.counters.refusals.get("WEBHOOK_QUEUE_FULL"),
        Some(&1)
    );
    assert!(metrics_line(
        &w,
        r#"refusals_total{code="WEBHOOK_QUEUE_FULL"} 1"#
    ));
    assert_eq!(queue(&w).1, 2);
    // The others are unaffected: each is sent in turn and becomes active.
    for u in &users[..3] {
        let i = *w.open_outbound().first().expect("one in flight");
        assert_eq!(start_of(&w, i).as_deref(), Some(u.as_str()));
        answer_as_the_sdk(&mut w, i);
        assert_eq!(w.server.hub.app_state(u, CAPTIONS), Some("active"));
    }
}

fn metrics_line(w: &World, line: &str) -> bool {
    w.server
        .metrics(w.clock())
        .lines()
        .any(|l| l == format!("augmentos_edge_{line}"))
}
