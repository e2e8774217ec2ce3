//! Deterministic tests, through the in-memory world and its virtual clock, of the SDK 2.1.29
//! features an app expects from its cloud beyond events and displays: an app's goodbye
//! (`ownership_release`: the close after it is no crash, nothing is restarted), capabilities
//! taken from the glasses' model, the location tier the session's apps want, and RTMP
//! keep-alives. Each with its bad input: refused with a code, counted, nothing else disturbed.
//!
//! The fixture: `com.example.a` and `com.example.b` with every permission; one user.

use augmentos_edge::auth::{self, jwt};
use augmentos_edge::hub::registry::AppSpec;
use augmentos_edge::hub::HubConfig;
use augmentos_edge::net::Target;
use augmentos_edge::server::ServerConfig;
use augmentos_edge::sim::World;
use serde_json::{json, Value};
use std::time::Duration;

const SECRET: &[u8] = b"sdk-extras-test-secret";
const USER: &str = "ada@example.com";
const A: &str = "com.example.a";
const B: &str = "com.example.b";

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn key(package: &str) -> String {
    format!("{package}-key")
}

fn spec(package: &str, port: u16) -> AppSpec {
    AppSpec {
        package_name: package.into(),
        name: package.into(),
        public_url: format!("http://apps.example:{port}/"),
        webhook_target: Target {
            host: "apps.example".into(),
            port,
            tls: None,
        },
        webhook_path: String::new(),
        hashed_api_key: auth::hash_api_key(&key(package)),
        is_system_app: false,
        permissions: vec!["ALL".into()],
        allowed_addresses: Vec::new(),
        publishes: Vec::new(),
        settings: Vec::new(),
    }
}

fn world() -> World {
    let hub = HubConfig {
        jwt_secret: SECRET.to_vec(),
        apps: vec![spec(A, 4001), spec(B, 4002)],
        lifecycle_burst: 100,
        ..HubConfig::default()
    };
    World::with_hub(
        ServerConfig {
            ping_interval: None,
            idle_timeout: Duration::from_secs(3600),
            ..ServerConfig::default()
        },
        hub,
    )
}

fn glasses(w: &mut World) -> usize {
    let g = w.connect();
    let bearer = format!("Authorization: Bearer {}", jwt::glasses_token(USER, SECRET));
    assert_eq!(w.upgrade_with(g, "/glasses-ws", &[&bearer]).0, 101);
    w.send_text(g, r#"{"type":"connection_init"}"#);
    let msgs = w.json_messages(g);
    assert_eq!(msgs[0]["type"], "connection_ack", "{msgs:?}");
    g
}

/// An app connection that sends `tpa_connection_init` for `package`; its first message.
fn join(w: &mut World, package: &str) -> (usize, Value) {
    let c = w.connect();
    assert_eq!(w.upgrade(c, "/app-ws"), 101);
    w.send_text(
        c,
        &json!({
            "type": "tpa_connection_init",
            "packageName": package,
            "sessionId": format!("{USER}-{package}"),
            "apiKey": key(package),
        })
        .to_string(),
    );
    let first = w.json_messages(c).into_iter().next().expect("an answer");
    (c, first)
}

/// Start `package` from the glasses, connect it, answer its webhook; the app client with its
/// inbox drained, and its ack.
fn app(w: &mut World, g: usize, package: &str) -> (usize, Value) {
    w.send_text(
        g,
        &json!({"type": "start_app", "packageName": package}).to_string(),
    );
    let (c, ack) = join(w, package);
    assert_eq!(ack["type"], "tpa_connection_ack", "{package}: {ack}");
    for i in w.open_outbound() {
        w.respond_http(i, 200);
    }
    w.json_messages(g);
    (c, ack)
}

fn subscribe(w: &mut World, c: usize, subs: Value) {
    w.send_text(
        c,
        &json!({"type": "subscription_update", "subscriptions": subs}).to_string(),
    );
}

/// Outbound webhooks of `kind` for `package` so far.
fn webhooks(w: &World, kind: &str, package: &str) -> usize {
    let session = format!("{USER}-{package}");
    w.outbound
        .iter()
        .filter(|o| {
            o.json()
                .is_some_and(|v| v["type"] == kind && v["sessionId"] == session.as_str())
        })
        .count()
}

fn of_type(msgs: &[Value], ty: &str) -> Vec<Value> {
    msgs.iter().filter(|m| m["type"] == ty).cloned().collect()
}

fn release(package: &str, reason: &str) -> String {
    json!({"type": "ownership_release", "packageName": package,
        "sessionId": format!("{USER}-{package}"), "reason": reason,
        "timestamp": "2025-01-01T00:00:00.000Z"})
    .to_string()
}

fn refusals(w: &World, code: &str) -> u64 {
    w.server
        .hub
        .counters
        .refusals
        .get(code)
        .copied()
        .unwrap_or(0)
}

// ---- ownership_release ---------------------------------------------------------------------

/// `clean_shutdown` and `user_logout`: the close after the goodbye stops the app — no restart
/// and no stop webhook, gone from the durable running apps, the glasses told.
#[test]
fn a_goodbye_then_a_close_is_a_stop_not_a_crash() {
    for reason in ["clean_shutdown", "user_logout"] {
        let mut w = world();
        let g = glasses(&mut w);
        let (a, _) = app(&mut w, g, A);
        let (b, _) = app(&mut w, g, B);
        assert_eq!(w.server.hub.durable().running(USER).len(), 2);
        w.send_text(a, &release(A, reason));
        assert!(w.json_messages(a).is_empty(), "{reason}: accepted silently");
        w.client_eof(a);
        let seen = w.json_messages(g);
        let stopped = of_type(&seen, "app_stopped");
        assert!(
            stopped.iter().any(|m| m["packageName"] == A),
            "{reason}: {seen:?}"
        );
        let state = of_type(&seen, "app_state_change");
        let active =
            &state.last().expect("app_state_change")["userSession"]["activeAppPackageNames"];
        assert_eq!(active, &json!([B]), "{reason}");
        assert_eq!(w.server.hub.app_state(USER, A), None, "{reason}");
        assert_eq!(w.server.hub.durable().running(USER), vec![B.to_string()]);
        // Long past every grace and backoff: never restarted, never sent a stop.
        w.advance(secs(120));
        assert_eq!(webhooks(&w, "session_request", A), 1, "{reason}");
        assert_eq!(webhooks(&w, "stop_request", A), 0, "{reason}");
        assert_eq!(w.server.hub.counters.app_restarts, 0);
        // The other app is untouched.
        assert_eq!(w.server.hub.app_state(USER, B), Some("active"));
        assert!(w
            .json_messages(b)
            .iter()
            .all(|m| m["type"] != "app_stopped"));
    }
}

/// `switching_clouds`: the SDK reconnects at once; the new connection takes the app's place
/// without a webhook. If it never comes, the app leaves at the end of its grace, unrestarted.
#[test]
fn a_handover_keeps_the_place_for_the_new_connection_and_never_restarts() {
    let mut w = world();
    let g = glasses(&mut w);
    let (a, _) = app(&mut w, g, A);
    w.send_text(a, &release(A, "switching_clouds"));
    w.client_eof(a);
    assert_eq!(w.server.hub.app_state(USER, A), Some("reconnecting"));
    let (again, ack) = join(&mut w, A);
    assert_eq!(ack["type"], "tpa_connection_ack");
    assert_eq!(w.server.hub.app_state(USER, A), Some("active"));
    // The new connection did not say goodbye: its drop is a drop, restarted as ever.
    w.client_eof(again);
    w.advance(secs(7));
    assert_eq!(
        webhooks(&w, "session_request", A),
        2,
        "restarted after a drop"
    );

    let mut w = world();
    let g = glasses(&mut w);
    let (a, _) = app(&mut w, g, A);
    w.send_text(a, &release(A, "switching_clouds"));
    w.client_eof(a);
    w.json_messages(g);
    w.advance(secs(120));
    assert_eq!(w.server.hub.app_state(USER, A), None);
    assert_eq!(webhooks(&w, "session_request", A), 1);
    assert_eq!(webhooks(&w, "stop_request", A), 0);
    assert!(w.server.hub.durable().running(USER).is_empty());
    let seen = w.json_messages(g);
    assert!(of_type(&seen, "app_stopped")
        .iter()
        .any(|m| m["packageName"] == A));
}

/// An unknown reason, another package's name, a malformed goodbye: refused with its code,
/// counted; the app stays as it was, and a close after it is still a drop (restarted).
#[test]
fn a_bad_goodbye_is_refused_counted_and_changes_nothing() {
    let mut w = world();
    let g = glasses(&mut w);
    let (a, _) = app(&mut w, g, A);
    let (b, _) = app(&mut w, g, B);
    for (text, code) in [
        (release(A, "tired"), "INVALID_RELEASE_REASON"),
        (release(B, "clean_shutdown"), "RELEASE_PACKAGE_MISMATCH"),
        (
            json!({"type": "ownership_release", "reason": 7}).to_string(),
            "MALFORMED_MESSAGE",
        ),
    ] {
        let before = refusals(&w, code);
        w.send_text(a, &text);
        let got = w.json_messages(a);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0]["type"], "tpa_connection_error");
        assert_eq!(got[0]["code"], code);
        assert_eq!(refusals(&w, code), before + 1, "{code}");
    }
    // B was named, not touched.
    assert_eq!(w.server.hub.app_state(USER, B), Some("active"));
    w.client_eof(a);
    assert_eq!(w.server.hub.app_state(USER, A), Some("reconnecting"));
    w.advance(secs(7));
    assert_eq!(
        webhooks(&w, "session_request", A),
        2,
        "a drop is still a drop"
    );
    assert!(w.json_messages(b).is_empty());
}

/// A goodbye on a connection that was replaced since is not its successor's.
#[test]
fn a_goodbye_belongs_to_its_connection() {
    let mut w = world();
    let g = glasses(&mut w);
    let (a, _) = app(&mut w, g, A);
    w.send_text(a, &release(A, "clean_shutdown"));
    let (again, ack) = join(&mut w, A);
    assert_eq!(ack["type"], "tpa_connection_ack");
    w.client_eof(again);
    assert_eq!(
        w.server.hub.app_state(USER, A),
        Some("reconnecting"),
        "the new connection's close is a drop"
    );
    assert_eq!(w.server.hub.durable().running(USER), vec![A.to_string()]);
}

// ---- capabilities ------------------------------------------------------------------------

fn connection_state(model: &str, status: &str) -> String {
    json!({"type": "glasses_connection_state", "modelName": model, "status": status,
        "timestamp": "2025-01-01T00:00:00.000Z"})
    .to_string()
}

/// The Android client's `core_status_update`, nested twice, naming the connected glasses.
fn core_status(model: &str) -> String {
    json!({"type": "core_status_update", "status": {"status": {"core_info": {},
        "connected_glasses": {"model_name": model, "brightness": 50}}}})
    .to_string()
}

fn capability_updates(w: &mut World, c: usize) -> Vec<Value> {
    of_type(&w.json_messages(c), "capabilities_update")
}

/// The ack carries what the glasses' model can do; a change reaches every app of the session
/// as `capabilities_update`, once; a report that changes nothing sends nothing.
#[test]
fn capabilities_follow_the_glasses_model() {
    let mut w = world();
    let g = glasses(&mut w);
    let (a, ack) = app(&mut w, g, A);
    let caps = &ack["capabilities"];
    assert_eq!(caps["modelName"], "unknown", "no model named yet: {caps}");
    assert_eq!(caps["hasCamera"], false);
    assert_eq!(caps["hasDisplay"], true);

    w.send_text(g, &connection_state("Mentra Live", "CONNECTED"));
    let got = capability_updates(&mut w, a);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["modelName"], "Mentra Live");
    assert_eq!(got[0]["capabilities"]["hasCamera"], true);
    assert_eq!(got[0]["capabilities"]["hasSpeaker"], true);
    assert_eq!(got[0]["capabilities"]["hasDisplay"], false);
    // An app that joins now is acked with it.
    let (b, ack) = app(&mut w, g, B);
    assert_eq!(ack["capabilities"]["modelName"], "Mentra Live");
    assert_eq!(ack["capabilities"]["camera"]["video"]["canStream"], true);
    // The same model again (and the phone's status naming it): nothing.
    w.send_text(g, &connection_state("Mentra Live", "CONNECTED"));
    w.send_text(g, &core_status("mentra live"));
    assert!(capability_updates(&mut w, a).is_empty());
    // A disconnected state or an empty name changes nothing.
    w.send_text(g, &connection_state("Even Realities G1", "DISCONNECTED"));
    w.send_text(g, &connection_state(" ", "CONNECTED"));
    w.send_text(g, &core_status(""));
    w.send_text(g, &connection_state(&"G".repeat(101), "CONNECTED"));
    assert!(capability_updates(&mut w, a).is_empty());
    assert_eq!(refusals(&w, "INVALID_GLASSES_MODEL"), 1);
    // Other glasses mid-session, named by the phone's status: both apps hear it.
    w.send_text(g, &core_status("Even Realities G1"));
    for c in [a, b] {
        let got = capability_updates(&mut w, c);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0]["capabilities"]["hasCamera"], false);
        assert_eq!(
            got[0]["capabilities"]["display"]["resolution"]["height"],
            200
        );
    }
    assert_eq!(refusals(&w, "UNKNOWN_GLASSES_MODEL"), 0);
}

/// A model without a profile: what its glasses report of themselves, else the conservative
/// profile under its name; counted once per change to it, and a bare repeat keeps the report.
#[test]
fn an_unknown_model_gets_what_it_reports_or_the_conservative_profile() {
    let mut w = world();
    let g = glasses(&mut w);
    let (a, _) = app(&mut w, g, A);
    w.send_text(g, &connection_state("Acme Specs", "CONNECTED"));
    let got = capability_updates(&mut w, a);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["modelName"], "Acme Specs");
    assert_eq!(got[0]["capabilities"]["hasCamera"], false);
    assert_eq!(got[0]["capabilities"]["hasSpeaker"], false);
    assert_eq!(refusals(&w, "UNKNOWN_GLASSES_MODEL"), 1);
    w.send_text(g, &core_status("Acme Specs"));
    assert!(capability_updates(&mut w, a).is_empty());
    assert_eq!(refusals(&w, "UNKNOWN_GLASSES_MODEL"), 1);

    let reported = json!({"type": "glasses_connection_state", "modelName": "Acme Pro",
        "status": "CONNECTED", "capabilities": {"hasCamera": true, "camera": {"hasHDR": true},
        "hasSpeaker": "maybe"}});
    w.send_text(g, &reported.to_string());
    let got = capability_updates(&mut w, a);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["capabilities"]["hasCamera"], true);
    assert_eq!(got[0]["capabilities"]["camera"]["hasHDR"], true);
    assert_eq!(got[0]["capabilities"]["hasSpeaker"], false);
    // The phone's status naming it bare keeps what the glasses reported.
    w.send_text(g, &core_status("Acme Pro"));
    assert!(capability_updates(&mut w, a).is_empty());
    assert_eq!(refusals(&w, "UNKNOWN_GLASSES_MODEL"), 2);
    let (_, ack) = app(&mut w, g, B);
    assert_eq!(ack["capabilities"]["hasCamera"], true);
}

// ---- location tier -------------------------------------------------------------------------

fn location(rate: &str) -> Value {
    json!({"stream": "location_stream", "rate": rate})
}

/// The tiers the glasses were asked for since the last call.
fn tiers(w: &mut World, g: usize) -> Vec<String> {
    of_type(&w.json_messages(g), "set_location_tier")
        .iter()
        .map(|m| m["tier"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// The glasses are asked for the most demanding tier any app of the session wants, and for
/// less when that app unsubscribes, stops or drops; for `reduced` when none wants location.
#[test]
fn the_glasses_get_the_highest_tier_the_apps_want() {
    let mut w = world();
    let g = glasses(&mut w);
    let (a, _) = app(&mut w, g, A);
    let (b, _) = app(&mut w, g, B);
    subscribe(&mut w, a, json!(["button_press"]));
    assert_eq!(
        tiers(&mut w, g),
        Vec::<String>::new(),
        "no location wanted yet"
    );
    subscribe(&mut w, a, json!([location("high")]));
    assert_eq!(tiers(&mut w, g), ["high"]);
    // A subscription without a rate wants `standard`: less than `high`, nothing changes.
    subscribe(&mut w, b, json!(["location_update"]));
    assert_eq!(tiers(&mut w, g), Vec::<String>::new());
    subscribe(&mut w, b, json!([location("realtime"), "button_press"]));
    assert_eq!(tiers(&mut w, g), ["realtime"]);
    // The app that wanted most stops: back to what the other wants.
    w.send_text(
        g,
        &json!({"type": "stop_app", "packageName": B}).to_string(),
    );
    assert_eq!(tiers(&mut w, g), ["high"]);
    // The glasses reconnect: told the current tier after the ack.
    let g2 = w.connect();
    let bearer = format!("Authorization: Bearer {}", jwt::glasses_token(USER, SECRET));
    assert_eq!(w.upgrade_with(g2, "/glasses-ws", &[&bearer]).0, 101);
    w.send_text(g2, r#"{"type":"connection_init"}"#);
    let msgs = w.json_messages(g2);
    assert_eq!(msgs[0]["type"], "connection_ack");
    let told = of_type(&msgs, "set_location_tier");
    assert_eq!(told.len(), 1, "{msgs:?}");
    assert_eq!(told[0]["tier"], "high");
    subscribe(&mut w, a, json!([location("tenMeters")]));
    assert_eq!(tiers(&mut w, g2), ["tenMeters"]);
    subscribe(&mut w, a, json!([]));
    assert_eq!(tiers(&mut w, g2), ["reduced"]);
    subscribe(&mut w, a, json!([]));
    assert_eq!(tiers(&mut w, g2), Vec::<String>::new());
    assert!(w.json_messages(a).is_empty(), "nothing refused");
}

/// An app that drops takes its wish with it; a bad rate is refused, counted and taken as
/// `standard`, and the subscription stands.
#[test]
fn a_dropped_app_lowers_the_tier_and_a_bad_rate_is_standard() {
    let mut w = world();
    let g = glasses(&mut w);
    let (a, _) = app(&mut w, g, A);
    let (b, _) = app(&mut w, g, B);
    subscribe(&mut w, a, json!([location("kilometer")]));
    subscribe(&mut w, b, json!([location("realtime")]));
    assert_eq!(tiers(&mut w, g), ["kilometer", "realtime"]);
    w.client_eof(b);
    assert_eq!(tiers(&mut w, g), ["kilometer"]);
    subscribe(&mut w, a, json!([location("warp")]));
    let got = w.json_messages(a);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["code"], "INVALID_LOCATION_RATE");
    assert_eq!(refusals(&w, "INVALID_LOCATION_RATE"), 1);
    assert_eq!(tiers(&mut w, g), ["standard"]);
    assert_eq!(
        w.server.hub.subscriptions(USER, A),
        vec!["location_stream".to_string()]
    );
}

// ---- RTMP keep-alive -------------------------------------------------------------------------

fn rtmp_request() -> String {
    json!({"type": "rtmp_stream_request", "packageName": A, "sessionId": "",
        "rtmpUrl": "rtmp://media.example/live/k", "timestamp": "2025-01-01T00:00:00.000Z"})
    .to_string()
}

/// An app streaming: the glasses got `start_rtmp_stream` and confirmed it `active`; the
/// stream id, with every inbox drained.
fn live_stream(w: &mut World, g: usize, a: usize) -> String {
    w.send_text(a, &rtmp_request());
    let start = of_type(&w.json_messages(g), "start_rtmp_stream");
    let id = start[0]["streamId"]
        .as_str()
        .expect("a streamId")
        .to_string();
    w.send_text(
        g,
        &json!({"type": "rtmp_stream_status", "streamId": id, "status": "active"}).to_string(),
    );
    let got = w.json_messages(a);
    assert_eq!(got[0]["status"], "active", "{got:?}");
    id
}

fn ack(w: &mut World, g: usize, stream: &str, ack_id: &Value) {
    w.send_text(
        g,
        &json!({"type": "keep_alive_ack", "streamId": stream, "ackId": ack_id}).to_string(),
    );
}

/// Keep-alives go out every 15 s while the stream is live, each acked; three in a row without
/// an ack and the stream is dead at that deadline, not before: the app is told `timeout`, the
/// glasses to stop, and the camera is free again.
#[test]
fn a_live_stream_is_kept_alive_and_declared_dead_after_three_missed_acks() {
    let mut w = world();
    let g = glasses(&mut w);
    let (a, _) = app(&mut w, g, A);
    let stream = live_stream(&mut w, g, a);
    let live_at = w.now;
    let mut sent = Vec::new();
    let mut dead_at = None;
    let mut stops = Vec::new();
    while w.now.saturating_since(live_at) < secs(300) && w.jump_to_next_deadline() {
        let seen = w.json_messages(g);
        stops.extend(of_type(&seen, "stop_rtmp_stream"));
        for m in of_type(&seen, "keep_rtmp_stream_alive") {
            assert_eq!(m["streamId"], stream.as_str());
            let t = w.now.saturating_since(live_at).as_secs();
            sent.push((t, m["ackId"].clone()));
            // The glasses answer the first two only.
            if sent.len() <= 2 {
                ack(&mut w, g, &stream, &m["ackId"]);
            }
        }
        let told = w.json_messages(a);
        if !told.is_empty() {
            assert_eq!(told.len(), 1, "{told:?}");
            assert_eq!(told[0]["type"], "rtmp_stream_status");
            assert_eq!(told[0]["status"], "timeout");
            assert_eq!(told[0]["streamId"], stream.as_str());
            assert!(told[0]["errorDetails"]
                .as_str()
                .unwrap()
                .starts_with("KEEPALIVE_TIMEOUT"));
            dead_at = Some(w.now.saturating_since(live_at).as_secs());
            break;
        }
    }
    let times: Vec<u64> = sent.iter().map(|(t, _)| *t).collect();
    assert_eq!(times, [15, 30, 45, 60, 75], "keep-alives");
    let ids: Vec<&Value> = sent.iter().map(|(_, id)| id).collect();
    assert_eq!(
        ids,
        [
            &json!("1"),
            &json!("2"),
            &json!("3"),
            &json!("4"),
            &json!("5")
        ]
    );
    assert_eq!(
        dead_at,
        Some(90),
        "three unanswered keep-alives: dead at the fourth"
    );
    assert_eq!(stops.len(), 1, "the glasses are told to stop it");
    assert_eq!(stops[0]["streamId"], stream.as_str());
    assert_eq!(refusals(&w, "KEEPALIVE_TIMEOUT"), 1);
    assert_eq!(w.server.hub.pending_requests(USER), 0);
    // Nothing more is sent for it, and the camera is free.
    w.advance(secs(60));
    assert!(of_type(&w.json_messages(g), "keep_rtmp_stream_alive").is_empty());
    w.send_text(a, &rtmp_request());
    assert!(w.json_messages(a).is_empty(), "not STREAM_BUSY");
    assert_eq!(of_type(&w.json_messages(g), "start_rtmp_stream").len(), 1);
}

/// Acks for no live stream or with an id the box never sent are dropped and counted, a
/// malformed one refused; none reaches a wildcard subscriber or keeps the stream alive. A
/// stream the app stops is no longer kept alive.
#[test]
fn bad_keepalive_acks_are_counted_and_a_stopped_stream_is_not_kept_alive() {
    let mut w = world();
    let g = glasses(&mut w);
    let (a, _) = app(&mut w, g, A);
    let (b, _) = app(&mut w, g, B);
    subscribe(&mut w, b, json!(["*"]));
    w.json_messages(b);
    ack(&mut w, g, "edge-1-1", &json!("1"));
    assert_eq!(refusals(&w, "UNMATCHED_KEEPALIVE_ACK"), 1, "no live stream");
    let stream = live_stream(&mut w, g, a);
    w.advance(secs(15));
    assert_eq!(
        of_type(&w.json_messages(g), "keep_rtmp_stream_alive").len(),
        1
    );
    for (sid, id) in [
        ("another-stream", json!("1")),
        (stream.as_str(), json!("2")),
        (stream.as_str(), json!("one")),
    ] {
        ack(&mut w, g, sid, &id);
    }
    assert_eq!(refusals(&w, "UNMATCHED_KEEPALIVE_ACK"), 4);
    ack(&mut w, g, &stream, &json!(1));
    let got = w.json_messages(g);
    assert_eq!(got[0]["type"], "connection_error", "{got:?}");
    assert_eq!(got[0]["code"], "MALFORMED_MESSAGE");
    let relayed: Vec<Value> = w.json_messages(b);
    assert!(relayed.is_empty(), "acks are not events: {relayed:?}");
    // None of those counted as an answer: the stream dies on time (15 + 3 × 15 s).
    w.advance(secs(44));
    assert!(w.json_messages(a).is_empty());
    w.advance(secs(1));
    assert_eq!(w.json_messages(a)[0]["status"], "timeout");

    // A stream the app stops is not kept alive any more.
    let stream = live_stream(&mut w, g, a);
    w.send_text(
        a,
        &json!({"type": "rtmp_stream_stop", "streamId": stream}).to_string(),
    );
    w.advance(secs(120));
    let sent = w.json_messages(g);
    assert!(
        of_type(&sent, "keep_rtmp_stream_alive").is_empty(),
        "{sent:?}"
    );
}
