//! Deterministic tests of the application core (`hub`) through the in-memory world
//! (`sim::World`): glasses and apps as in-memory clients, webhooks captured as outbound
//! requests, a virtual clock. No sockets, no sleeps.
//!
//! Covers every session rule of DESIGN §5 and PROTOCOL §12-§17: the start flow (webhook,
//! `tpa_connection_init`, ack, `app_state_change`), the 5 s connect timeout, webhook retries and
//! timeouts, the glasses grace period (resume and expiry), the app's own reconnect grace, the
//! bounded and backed-off restart, replaced connections, stops, the attack list (each refusal a
//! distinct `tpa_connection_error` code, then close 1008, nothing else disturbed), header auth at
//! the upgrade, the REST start/stop endpoints, simple routing, settings, and session ids whose
//! user and package both contain dashes.
//!
//! The fixture: `com.example.captions` (MICROPHONE), `com.example.notes` (no permissions) and
//! the system app `system.local.stt`, which may only connect from 10.9.9.9 and is started
//! automatically with every session.

use augmentos_edge::auth::{self, base64, jwt};
use augmentos_edge::hub::registry::AppSpec;
use augmentos_edge::hub::{HubConfig, Timings};
use augmentos_edge::net::{Peer, Target};
use augmentos_edge::server::ServerConfig;
use augmentos_edge::sim::{Received, World};
use augmentos_edge::ws::Opcode;
use serde_json::{json, Value};
use std::time::Duration;

const SECRET: &[u8] = b"hub-test-secret";
const PUBLIC_WS: &str = "ws://edge.example:8002";
const INTERNAL_WS: &str = "ws://10.9.9.1:8002";

const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";
const MARY: &str = "mary-jane@example.com";

const CAPTIONS: &str = "com.example.captions";
const NOTES: &str = "com.example.notes";
const STT: &str = "system.local.stt";
const DASHED: &str = "com.my-app.live-captions";

const CAPTIONS_KEY: &str = "captions-key";
const NOTES_KEY: &str = "notes-key";
const STT_KEY: &str = "stt-key";
const DASHED_KEY: &str = "live-key";

const STT_ADDR: &str = "10.9.9.9:5000";

// ---- fixture -----------------------------------------------------------------------------

fn spec(
    package: &str,
    key: &str,
    system: bool,
    permissions: &[&str],
    allowed: &[&str],
    port: u16,
) -> AppSpec {
    AppSpec {
        package_name: package.into(),
        name: package.rsplit('.').next().unwrap_or(package).into(),
        public_url: format!("http://apps.example:{port}"),
        webhook_target: Target {
            host: "apps.example".into(),
            port,
            tls: None,
        },
        webhook_path: String::new(),
        hashed_api_key: auth::hash_api_key(key),
        is_system_app: system,
        permissions: permissions.iter().map(|s| s.to_string()).collect(),
        allowed_addresses: allowed.iter().map(|s| s.to_string()).collect(),
        publishes: Vec::new(),
        settings: Vec::new(),
    }
}

fn apps() -> Vec<AppSpec> {
    vec![
        spec(CAPTIONS, CAPTIONS_KEY, false, &["MICROPHONE"], &[], 3001),
        spec(NOTES, NOTES_KEY, false, &[], &[], 3002),
        spec(STT, STT_KEY, true, &[], &["10.9.9.9"], 3003),
    ]
}

/// The heartbeat of the connection layer is off: these clients never answer pings, and the
/// grace periods here run for minutes of virtual time (the heartbeat has tests of its own).
fn world_of(apps: Vec<AppSpec>, timings: Timings) -> World {
    World::with_hub(
        ServerConfig {
            ping_interval: None,
            ..ServerConfig::default()
        },
        HubConfig {
            public_ws_url: PUBLIC_WS.into(),
            internal_ws_url: INTERNAL_WS.into(),
            jwt_secret: SECRET.to_vec(),
            apps,
            timings,
            ..HubConfig::default()
        },
    )
}

fn world() -> World {
    world_of(apps(), Timings::default())
}

fn port_of(package: &str) -> u16 {
    match package {
        CAPTIONS => 3001,
        NOTES => 3002,
        STT => 3003,
        _ => 3004,
    }
}

fn sid(user: &str, package: &str) -> String {
    format!("{user}-{package}")
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// ---- message helpers ---------------------------------------------------------------------

fn of_type<'a>(msgs: &'a [Value], ty: &str) -> Vec<&'a Value> {
    msgs.iter().filter(|m| m["type"] == ty).collect()
}

fn closes(msgs: &[Value]) -> Vec<&Value> {
    msgs.iter().filter(|m| m.get("close").is_some()).collect()
}

/// Whether any `app_stopped` to the glasses names `package`.
fn told_stopped(msgs: &[Value], package: &str) -> bool {
    of_type(msgs, "app_stopped")
        .iter()
        .any(|m| m["packageName"] == package)
}

fn last_state_change(msgs: &[Value]) -> Value {
    of_type(msgs, "app_state_change")
        .last()
        .map(|m| (*m).clone())
        .unwrap_or_else(|| panic!("no app_state_change in {msgs:?}"))
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Indices of outbound webhooks of `kind` (`session_request` / `stop_request`) for `session`.
fn webhooks(w: &World, kind: &str, session: &str) -> Vec<usize> {
    (0..w.outbound.len())
        .filter(|&i| {
            w.outbound[i]
                .json()
                .is_some_and(|v| v["type"] == kind && v["sessionId"] == session)
        })
        .collect()
}

fn starts(w: &World, user: &str, package: &str) -> Vec<usize> {
    webhooks(w, "session_request", &sid(user, package))
}

fn stops(w: &World, user: &str, package: &str) -> Vec<usize> {
    webhooks(w, "stop_request", &sid(user, package))
}

// ---- glasses -----------------------------------------------------------------------------

fn bearer(user: &str) -> String {
    format!("Authorization: Bearer {}", jwt::glasses_token(user, SECRET))
}

/// Glasses of `user` connect with a bearer token and send `connection_init`; returns the client
/// and everything the glasses received (the `connection_ack` first).
fn glasses_raw(w: &mut World, user: &str) -> (usize, Vec<Value>) {
    let g = w.connect();
    let (status, body) = w.upgrade_with(g, "/glasses-ws", &[&bearer(user)]);
    assert_eq!(status, 101, "{body}");
    w.send_text(g, r#"{"type":"connection_init"}"#);
    let msgs = w.json_messages(g);
    assert_eq!(msgs[0]["type"], "connection_ack", "{msgs:?}");
    assert_eq!(msgs[0]["sessionId"], user);
    (g, msgs)
}

/// A session for `user` with its system app connected and answered: the glasses client, with
/// its inbox drained.
fn session(w: &mut World, user: &str) -> usize {
    let (g, _) = glasses_raw(w, user);
    let stt = join(
        w,
        Peer::Ip(STT_ADDR.parse().unwrap()),
        "/app-ws",
        STT,
        STT_KEY,
        &sid(user, STT),
    );
    assert_eq!(w.json_messages(stt)[0]["type"], "tpa_connection_ack");
    for i in starts(w, user, STT) {
        if !w.outbound[i].closed {
            w.respond_http(i, 200);
        }
    }
    assert_eq!(w.server.hub.app_state(user, STT), Some("active"));
    w.json_messages(g);
    g
}

fn start_app(w: &mut World, g: usize, package: &str) {
    w.send_text(
        g,
        &json!({"type": "start_app", "packageName": package}).to_string(),
    );
}

fn stop_app(w: &mut World, g: usize, package: &str) {
    w.send_text(
        g,
        &json!({"type": "stop_app", "packageName": package}).to_string(),
    );
}

fn button_press(w: &mut World, g: usize) -> String {
    let text = r#"{"type":"button_press","buttonId":"select","pressType":"short","timestamp":"2025-01-01T00:00:00.000Z"}"#;
    w.send_text(g, text);
    text.to_string()
}

// ---- apps --------------------------------------------------------------------------------

fn init_msg(package: &str, key: &str, session: &str) -> String {
    json!({
        "type": "tpa_connection_init",
        "packageName": package,
        "sessionId": session,
        "apiKey": key,
        "timestamp": "2025-01-01T00:00:00.000Z",
    })
    .to_string()
}

/// An app connection from `peer` on `path` that sends `tpa_connection_init`; its inbox is left
/// for the caller.
fn join(w: &mut World, peer: Peer, path: &str, package: &str, key: &str, session: &str) -> usize {
    let c = w.connect_from(peer);
    assert_eq!(w.upgrade(c, path), 101);
    w.send_text(c, &init_msg(package, key, session));
    c
}

fn key_of(package: &str) -> &'static str {
    match package {
        CAPTIONS => CAPTIONS_KEY,
        NOTES => NOTES_KEY,
        STT => STT_KEY,
        _ => DASHED_KEY,
    }
}

/// Start `package` from the glasses and connect it as the SDK would (connect, init, then the
/// webhook is answered 200); returns the app client with its inbox drained. The glasses inbox is
/// drained too.
fn start_active(w: &mut World, g: usize, user: &str, package: &str) -> usize {
    start_app(w, g, package);
    let hooks = starts(w, user, package);
    let hook = *hooks.last().expect("a session_request");
    let c = join(
        w,
        Peer::InProcess,
        "/app-ws",
        package,
        key_of(package),
        &sid(user, package),
    );
    let msgs = w.json_messages(c);
    assert_eq!(msgs[0]["type"], "tpa_connection_ack", "{msgs:?}");
    w.respond_http(hook, 200);
    assert_eq!(w.server.hub.app_state(user, package), Some("active"));
    w.json_messages(g);
    c
}

fn subscribe(w: &mut World, c: usize, package: &str, subs: Value) {
    w.send_text(
        c,
        &json!({
            "type": "subscription_update",
            "packageName": package,
            "subscriptions": subs,
            "sessionId": "",
        })
        .to_string(),
    );
}

/// The `data_stream`s client `c` received.
fn data_streams(w: &mut World, c: usize) -> Vec<Value> {
    w.json_messages(c)
        .into_iter()
        .filter(|m| m["type"] == "data_stream")
        .collect()
}

/// The healthy app gets exactly one routed `button_press` as a `data_stream`.
fn assert_routed(w: &mut World, g: usize, app: usize, user: &str, package: &str) {
    let sent = button_press(w, g);
    let got = data_streams(w, app);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["streamType"], "button_press");
    assert_eq!(got[0]["sessionId"], sid(user, package));
    assert_eq!(
        got[0]["data"],
        serde_json::from_str::<Value>(&sent).unwrap()
    );
}

// ---- 1. the start flow -------------------------------------------------------------------

#[test]
fn start_flow_webhook_init_ack_and_state() {
    let mut w = world();
    let (g, msgs) = glasses_raw(&mut w, ALICE);
    let ack = &msgs[0];
    assert_eq!(ack["userSession"]["sessionId"], ALICE);
    assert_eq!(ack["userSession"]["userId"], ALICE);
    assert!(ack["userSession"]["installedApps"].is_array());
    // The system app was started with the session, through the internal URL.
    let stt_hooks = starts(&w, ALICE, STT);
    assert_eq!(stt_hooks.len(), 1);
    let body = w.outbound[stt_hooks[0]].json().unwrap();
    assert_eq!(
        body["augmentOSWebsocketUrl"],
        format!("{INTERNAL_WS}/app-ws")
    );
    assert_eq!(w.server.hub.app_state(ALICE, STT), Some("loading"));

    for (package, path) in [(CAPTIONS, "/app-ws"), (NOTES, "/tpa-ws")] {
        start_app(&mut w, g, package);
        let hooks = starts(&w, ALICE, package);
        assert_eq!(hooks.len(), 1, "{package}");
        let out = &w.outbound[hooks[0]];
        assert_eq!(out.request_line(), "POST /webhook HTTP/1.1");
        assert_eq!(out.target.host, "apps.example");
        assert_eq!(out.target.port, port_of(package));
        let body = out.json().unwrap();
        assert_eq!(body["type"], "session_request");
        assert_eq!(body["sessionId"], sid(ALICE, package));
        assert_eq!(body["userId"], ALICE);
        let url = format!("{PUBLIC_WS}/app-ws");
        assert_eq!(body["augmentOSWebsocketUrl"], url);
        assert_eq!(body["mentraOSWebsocketUrl"], url);
        assert_eq!(w.server.hub.app_state(ALICE, package), Some("loading"));
        // Loading is not active: the glasses are not told it started yet.
        let msgs = w.json_messages(g);
        assert!(of_type(&msgs, "app_started").is_empty(), "{msgs:?}");
        let us = &last_state_change(&msgs)["userSession"];
        assert!(names(&us["loadingApps"]).contains(&package.to_string()));
        assert!(!names(&us["activeAppPackageNames"]).contains(&package.to_string()));

        let c = join(
            &mut w,
            Peer::InProcess,
            path,
            package,
            key_of(package),
            &sid(ALICE, package),
        );
        let app_msgs = w.json_messages(c);
        assert_eq!(app_msgs.len(), 1, "{app_msgs:?}");
        let ack = &app_msgs[0];
        assert_eq!(ack["type"], "tpa_connection_ack");
        assert_eq!(ack["sessionId"], sid(ALICE, package));
        assert!(ack["settings"].is_array());
        assert_eq!(ack["mentraosSettings"]["headUpAngle"], 20);
        assert!(ack["capabilities"].is_object());
        assert_eq!(w.server.hub.app_state(ALICE, package), Some("active"));

        let msgs = w.json_messages(g);
        let started = of_type(&msgs, "app_started");
        assert_eq!(started.len(), 1, "{msgs:?}");
        assert_eq!(started[0]["packageName"], package);
        let us = &last_state_change(&msgs)["userSession"];
        assert!(names(&us["activeAppPackageNames"]).contains(&package.to_string()));
        assert!(!names(&us["loadingApps"]).contains(&package.to_string()));
        assert_eq!(us["appStates"][package]["state"], "active");

        // The SDK answers the webhook only now; that changes nothing.
        w.respond_http(hooks[0], 200);
        assert_eq!(w.server.hub.app_state(ALICE, package), Some("active"));
        assert!(w.json_messages(c).is_empty());
    }
}

// ---- 2. the connect timeout --------------------------------------------------------------

#[test]
fn app_that_never_connects_fails_at_five_seconds_not_before() {
    let mut w = world();
    let g = session(&mut w, ALICE);
    start_app(&mut w, g, CAPTIONS);
    w.json_messages(g);
    w.advance(ms(4_999));
    assert_eq!(w.server.hub.app_state(ALICE, CAPTIONS), Some("loading"));
    let msgs = w.json_messages(g);
    assert!(!told_stopped(&msgs, CAPTIONS), "{msgs:?}");
    w.advance(ms(1));
    assert_eq!(w.server.hub.app_state(ALICE, CAPTIONS), Some("failed"));
    let msgs = w.json_messages(g);
    assert!(told_stopped(&msgs, CAPTIONS), "{msgs:?}");
    let us = &last_state_change(&msgs)["userSession"];
    assert_eq!(us["appStates"][CAPTIONS]["state"], "failed");
    assert_eq!(us["appStates"][CAPTIONS]["error"], "APP_CONNECT_TIMEOUT");
    assert!(!names(&us["loadingApps"]).contains(&CAPTIONS.to_string()));
    assert!(!names(&us["activeAppPackageNames"]).contains(&CAPTIONS.to_string()));
    // A late connection is refused: the start was given up.
    let c = join(
        &mut w,
        Peer::InProcess,
        "/app-ws",
        CAPTIONS,
        CAPTIONS_KEY,
        &sid(ALICE, CAPTIONS),
    );
    let msgs = w.json_messages(c);
    assert_eq!(msgs[0]["code"], "APP_NOT_STARTED", "{msgs:?}");
}

// ---- 3. webhook retry and timeout --------------------------------------------------------

#[test]
fn failed_webhook_is_retried_once_after_the_backoff_then_fails() {
    let mut w = world();
    let g = session(&mut w, ALICE);
    start_app(&mut w, g, CAPTIONS);
    w.json_messages(g);
    let first = starts(&w, ALICE, CAPTIONS);
    assert_eq!(first.len(), 1);
    w.fail_http(first[0]);
    assert_eq!(w.server.hub.app_state(ALICE, CAPTIONS), Some("loading"));
    w.advance(ms(999));
    assert_eq!(starts(&w, ALICE, CAPTIONS).len(), 1, "retried before 1 s");
    w.advance(ms(1));
    let both = starts(&w, ALICE, CAPTIONS);
    assert_eq!(both.len(), 2, "no retry at 1 s");
    let retry = w.outbound[both[1]].json().unwrap();
    assert_eq!(retry["userId"], ALICE);
    assert_eq!(w.server.hub.app_state(ALICE, CAPTIONS), Some("loading"));
    let msgs = w.json_messages(g);
    assert!(!told_stopped(&msgs, CAPTIONS), "{msgs:?}");

    w.fail_http(both[1]);
    assert_eq!(w.server.hub.app_state(ALICE, CAPTIONS), Some("failed"));
    let msgs = w.json_messages(g);
    assert!(told_stopped(&msgs, CAPTIONS), "{msgs:?}");
    let us = &last_state_change(&msgs)["userSession"];
    assert_eq!(us["appStates"][CAPTIONS]["error"], "WEBHOOK_FAILED");
    // Two attempts in all.
    w.advance(secs(30));
    assert_eq!(starts(&w, ALICE, CAPTIONS).len(), 2);
}

#[test]
fn unanswered_webhook_times_out_and_is_retried_after_the_backoff() {
    let mut w = world_of(
        apps(),
        Timings {
            webhook_timeout: secs(2),
            app_connect_timeout: secs(5),
            ..Timings::default()
        },
    );
    let g = session(&mut w, ALICE);
    start_app(&mut w, g, CAPTIONS);
    let first = starts(&w, ALICE, CAPTIONS);
    assert_eq!(first.len(), 1);
    w.advance(ms(1_999));
    assert!(!w.outbound[first[0]].closed, "timed out before 2 s");
    w.advance(ms(1));
    assert!(w.outbound[first[0]].closed, "not timed out at 2 s");
    assert_eq!(starts(&w, ALICE, CAPTIONS).len(), 1);
    w.advance(ms(999));
    assert_eq!(starts(&w, ALICE, CAPTIONS).len(), 1, "retried before 3 s");
    w.advance(ms(1));
    assert_eq!(starts(&w, ALICE, CAPTIONS).len(), 2, "no retry at 3 s");
    assert_eq!(w.server.hub.app_state(ALICE, CAPTIONS), Some("loading"));
    // The retry is answered by a connection: active.
    let c = join(
        &mut w,
        Peer::InProcess,
        "/app-ws",
        CAPTIONS,
        CAPTIONS_KEY,
        &sid(ALICE, CAPTIONS),
    );
    assert_eq!(w.json_messages(c)[0]["type"], "tpa_connection_ack");
    assert_eq!(w.server.hub.app_state(ALICE, CAPTIONS), Some("active"));
}

// ---- 4. and 5. the glasses grace period --------------------------------------------------

#[test]
fn glasses_reconnect_within_the_grace_period_resumes_everything() {
    let mut w = world();
    let g = session(&mut w, ALICE);
    let app = start_active(&mut w, g, ALICE, CAPTIONS);
    subscribe(&mut w, app, CAPTIONS, json!(["button_press"]));
    let hooks_before = w.outbound.len();

    w.client_eof(g);
    assert_eq!(w.server.hub.session_count(), 1);
    w.advance(secs(59));
    assert_eq!(w.server.hub.session_count(), 1);
    let (g2, msgs) = glasses_raw(&mut w, ALICE);
    let us = &msgs[0]["userSession"];
    assert!(names(&us["activeAppPackageNames"]).contains(&CAPTIONS.to_string()));

    // The app connection was never closed, and no webhook of any kind went out.
    assert!(!w.clients[app].closed);
    let app_msgs = w.json_messages(app);
    assert!(closes(&app_msgs).is_empty(), "{app_msgs:?}");
    assert!(of_type(&app_msgs, "app_stopped").is_empty(), "{app_msgs:?}");
    assert_eq!(w.outbound.len(), hooks_before);
    assert_eq!(w.server.hub.app_state(ALICE, CAPTIONS), Some("active"));

    // Well past the old deadline, nothing ends.
    w.advance(secs(120));
    assert_eq!(w.server.hub.session_count(), 1);
    assert_eq!(w.outbound.len(), hooks_before);
    assert_routed(&mut w, g2, app, ALICE, CAPTIONS);
}

#[test]
fn grace_expiry_ends_the_session_and_the_apps_come_back_with_the_glasses() {
    let mut w = world();
    let g = session(&mut w, ALICE);
    let app = start_active(&mut w, g, ALICE, CAPTIONS);
    w.client_eof(g);
    w.advance(ms(59_999));
    assert_eq!(w.server.hub.session_count(), 1);
    assert!(w.json_messages(app).is_empty());
    assert!(stops(&w, ALICE, CAPTIONS).is_empty());

    w.advance(ms(1));
    let msgs = w.json_messages(app);
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert_eq!(msgs[0]["type"], "app_stopped");
    assert_eq!(msgs[1]["close"], 1000);
    assert_eq!(msgs[1]["reason"], "User session ended");
    let stop = stops(&w, ALICE, CAPTIONS);
    assert_eq!(stop.len(), 1);
    let body = w.outbound[stop[0]].json().unwrap();
    assert_eq!(body["userId"], ALICE);
    assert_eq!(w.outbound[stop[0]].request_line(), "POST /webhook HTTP/1.1");
    assert_eq!(stops(&w, ALICE, STT).len(), 1);
    assert_eq!(w.server.hub.session_count(), 0);
    assert_eq!(w.server.hub.app_state(ALICE, CAPTIONS), None);
    // The app answers the close; still nothing restarts it.
    w.client_eof(app);
    w.advance(secs(30));
    assert_eq!(starts(&w, ALICE, CAPTIONS).len(), 1);

    // The glasses come back: a new session, and the user's running app is started again.
    let (_g2, _) = glasses_raw(&mut w, ALICE);
    assert_eq!(w.server.hub.session_count(), 1);
    assert_eq!(starts(&w, ALICE, CAPTIONS).len(), 2);
    assert_eq!(starts(&w, ALICE, STT).len(), 2);
    assert_eq!(w.server.hub.app_state(ALICE, CAPTIONS), Some("loading"));
    assert!(starts(&w, ALICE, NOTES).is_empty());
}

// ---- 6. and 7. app drops: reconnect grace, restart, bound, stopped apps ------------------

#[test]
fn app_reconnecting_within_its_grace_is_active_again_without_a_webhook() {
    let mut w = world();
    let g = session(&mut w, ALICE);
    let app = start_active(&mut w, g, ALICE, CAPTIONS);
    let hooks = w.outbound.len();
    w.client_eof(app);
    assert_eq!(
        w.server.hub.app_state(ALICE, CAPTIONS),
        Some("reconnecting")
    );
    w.advance(ms(4_900));
    let again = join(
        &mut w,
        Peer::InProcess,
        "/app-ws",
        CAPTIONS,
        CAPTIONS_KEY,
        &sid(ALICE, CAPTIONS),
    );
    assert_eq!(w.json_messages(again)[0]["type"], "tpa_connection_ack");
    assert_eq!(w.server.hub.app_state(ALICE, CAPTIONS), Some("active"));
    // The old timers fire as no-ops.
    w.advance(secs(20));
    assert_eq!(w.server.hub.app_state(ALICE, CAPTIONS), Some("active"));
    assert_eq!(w.outbound.len(), hooks);
    subscribe(&mut w, again, CAPTIONS, json!(["button_press"]));
    assert_routed(&mut w, g, again, ALICE, CAPTIONS);
}

#[test]
fn dropped_app_is_restarted_after_grace_and_backoff() {
    let mut w = world();
    let g = session(&mut w, ALICE);
    let app = start_active(&mut w, g, ALICE, CAPTIONS);
    w.client_eof(app);
    w.advance(ms(5_000));
    assert_eq!(w.server.hub.app_state(ALICE, CAPTIONS), Some("restarting"));
    w.advance(ms(999));
    assert_eq!(starts(&w, ALICE, CAPTIONS).len(), 1, "restarted too early");
    w.advance(ms(1));
    let hooks = starts(&w, ALICE, CAPTIONS);
    assert_eq!(hooks.len(), 2, "not restarted at 5 s + 1 s");
    assert_eq!(w.server.hub.app_state(ALICE, CAPTIONS), Some("loading"));
    let c = join(
        &mut w,
        Peer::InProcess,
        "/app-ws",
        CAPTIONS,
        CAPTIONS_KEY,
        &sid(ALICE, CAPTIONS),
    );
    assert_eq!(w.json_messages(c)[0]["type"], "tpa_connection_ack");
    w.respond_http(hooks[1], 200);
    assert_eq!(w.server.hub.app_state(ALICE, CAPTIONS), Some("active"));
    subscribe(&mut w, c, CAPTIONS, json!(["button_press"]));
    assert_routed(&mut w, g, c, ALICE, CAPTIONS);
}

#[test]
fn restarts_are_bounded_and_backed_off() {
    let mut w = world();
    let g = session(&mut w, ALICE);
    let app = start_active(&mut w, g, ALICE, CAPTIONS);
    let dropped_at = w.now;
    w.client_eof(app);
    // Nothing answers from here on: run the clock deadline by deadline.
    let mut sent_at = Vec::new();
    let mut seen = starts(&w, ALICE, CAPTIONS).len();
    let mut glasses = Vec::new();
    while w.now.saturating_since(dropped_at) < secs(300) && w.jump_to_next_deadline() {
        let now = starts(&w, ALICE, CAPTIONS).len();
        for _ in seen..now {
            sent_at.push(w.now.saturating_since(dropped_at));
        }
        seen = now;
        glasses.extend(w.json_messages(g));
        if w.server.hub.app_state(ALICE, CAPTIONS) == Some("failed") {
            break;
        }
    }
    assert_eq!(
        sent_at,
        vec![secs(6), secs(13), secs(22)],
        "restart webhooks (after the drop)"
    );
    assert_eq!(w.server.hub.app_state(ALICE, CAPTIONS), Some("failed"));
    assert_eq!(w.now.saturating_since(dropped_at), secs(27));
    assert!(told_stopped(&glasses, CAPTIONS), "{glasses:?}");
    let us = &last_state_change(&glasses)["userSession"];
    assert_eq!(us["appStates"][CAPTIONS]["error"], "RESTART_LIMIT_REACHED");
    assert_eq!(w.server.hub.counters.app_restarts, 3);
    // Nothing more, however long we wait.
    w.advance(secs(120));
    assert_eq!(starts(&w, ALICE, CAPTIONS).len(), 4);
}

#[test]
fn a_late_webhook_failure_of_an_earlier_start_is_not_taken_for_the_current_one() {
    let mut w = world();
    let g = session(&mut w, ALICE);
    start_app(&mut w, g, CAPTIONS);
    let first = starts(&w, ALICE, CAPTIONS);
    stop_app(&mut w, g, CAPTIONS);
    start_app(&mut w, g, CAPTIONS);
    // The new start waits for the stop request, so the app server hears them in order.
    assert_eq!(starts(&w, ALICE, CAPTIONS).len(), 1);
    let stop = stops(&w, ALICE, CAPTIONS);
    assert_eq!(stop.len(), 1);
    w.respond_http(stop[0], 200);
    let both = starts(&w, ALICE, CAPTIONS);
    assert_eq!(both.len(), 2);
    // The first start's request fails only now: the second start is not retried for it.
    w.fail_http(first[0]);
    w.advance(secs(2));
    assert_eq!(starts(&w, ALICE, CAPTIONS).len(), 2);
    assert_eq!(w.server.hub.app_state(ALICE, CAPTIONS), Some("loading"));
    // Its own failure is retried once, as usual.
    w.fail_http(both[1]);
    w.advance(secs(1));
    assert_eq!(starts(&w, ALICE, CAPTIONS).len(), 3);
}

#[test]
fn app_stopped_on_purpose_is_never_restarted() {
    let mut w = world();
    let g = session(&mut w, ALICE);
    let app = start_active(&mut w, g, ALICE, CAPTIONS);
    stop_app(&mut w, g, CAPTIONS);
    w.client_eof(app);
    w.advance(secs(60));
    w.advance(secs(60));
    assert_eq!(starts(&w, ALICE, CAPTIONS).len(), 1);
    assert_eq!(w.server.hub.app_state(ALICE, CAPTIONS), None);
    assert_eq!(w.server.hub.counters.app_restarts, 0);
}

// ---- 8. replaced connections -------------------------------------------------------------

#[test]
fn a_newer_connection_replaces_the_old_and_the_old_close_is_harmless() {
    let mut w = world();
    let g = session(&mut w, ALICE);
    let a = start_active(&mut w, g, ALICE, CAPTIONS);
    subscribe(&mut w, a, CAPTIONS, json!(["button_press"]));
    let hooks = w.outbound.len();
    let b = join(
        &mut w,
        Peer::InProcess,
        "/app-ws",
        CAPTIONS,
        CAPTIONS_KEY,
        &sid(ALICE, CAPTIONS),
    );
    let a_msgs = w.json_messages(a);
    let a_close = closes(&a_msgs);
    assert_eq!(a_close.len(), 1, "{a_msgs:?}");
    assert_eq!(a_close[0]["close"], 1008);
    assert!(
        a_close[0]["reason"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("replaced"),
        "{a_msgs:?}"
    );
    let b_msgs = w.json_messages(b);
    assert_eq!(b_msgs[0]["type"], "tpa_connection_ack");
    assert_eq!(b_msgs[0]["sessionId"], sid(ALICE, CAPTIONS));

    // A answers late; the app is not reconnecting and keeps its subscriptions.
    w.client_eof(a);
    assert_eq!(w.server.hub.app_state(ALICE, CAPTIONS), Some("active"));
    assert_eq!(
        w.server.hub.subscriptions(ALICE, CAPTIONS),
        vec!["button_press".to_string()]
    );
    w.advance(secs(30));
    assert_eq!(w.server.hub.app_state(ALICE, CAPTIONS), Some("active"));
    assert_eq!(w.outbound.len(), hooks);
    assert_routed(&mut w, g, b, ALICE, CAPTIONS);
    assert!(w.json_messages(a).is_empty());
}

/// The `microphone_state_change`s among `msgs`, as their `isMicrophoneEnabled`.
fn mic_changes(msgs: &[Value]) -> Vec<bool> {
    of_type(msgs, "microphone_state_change")
        .iter()
        .map(|m| m["isMicrophoneEnabled"].as_bool().unwrap())
        .collect()
}

#[test]
fn a_replacing_connection_inherits_the_subscriptions_until_it_sends_its_own() {
    let mut w = world();
    let g = session(&mut w, ALICE);
    let a = start_active(&mut w, g, ALICE, CAPTIONS);
    subscribe(&mut w, a, CAPTIONS, json!(["button_press", "audio_chunk"]));
    assert_eq!(mic_changes(&w.json_messages(g)), [true]);
    w.advance(secs(2)); // past the microphone's debounce: a change would be sent at once
                        // The same app connects again while its old connection is still up (a half-open socket
                        // the SDK gave up on).
    let b = join(
        &mut w,
        Peer::InProcess,
        "/app-ws",
        CAPTIONS,
        CAPTIONS_KEY,
        &sid(ALICE, CAPTIONS),
    );
    assert_eq!(w.json_messages(b)[0]["type"], "tpa_connection_ack");
    // Until it says otherwise it gets what the old one subscribed to, and the microphone the
    // app needed stays on: no gap in the captions, no off-and-on at the glasses.
    assert_eq!(
        w.server.hub.subscriptions(ALICE, CAPTIONS),
        ["button_press", "audio_chunk"]
    );
    assert_routed(&mut w, g, b, ALICE, CAPTIONS);
    w.send_frame(g, true, Opcode::Binary, &[7; 64]);
    assert_eq!(w.clients[b].messages(), [Received::Binary(vec![7; 64])]);
    assert!(mic_changes(&w.json_messages(g)).is_empty());
    // Its own list (SDK 2.1.29 sends it right after the ack) replaces the inherited one.
    subscribe(&mut w, b, CAPTIONS, json!(["button_press"]));
    assert_eq!(
        w.server.hub.subscriptions(ALICE, CAPTIONS),
        ["button_press"]
    );
    assert_eq!(mic_changes(&w.json_messages(g)), [false]);
    w.send_frame(g, true, Opcode::Binary, &[8; 64]);
    assert!(w.clients[b].messages().is_empty());
    subscribe(&mut w, b, CAPTIONS, json!([]));
    button_press(&mut w, g);
    assert!(data_streams(&mut w, b).is_empty());
    assert!(data_streams(&mut w, a).is_empty());
}

// ---- 9. stop -----------------------------------------------------------------------------

#[test]
fn stop_app_tells_the_app_the_app_server_and_the_glasses() {
    let mut w = world();
    let g = session(&mut w, ALICE);
    let app = start_active(&mut w, g, ALICE, CAPTIONS);
    stop_app(&mut w, g, CAPTIONS);
    let msgs = w.json_messages(app);
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert_eq!(msgs[0]["type"], "app_stopped");
    assert_eq!(msgs[1]["close"], 1000);
    assert_eq!(msgs[1]["reason"], "App stopped");
    let stop = stops(&w, ALICE, CAPTIONS);
    assert_eq!(stop.len(), 1);
    let body = w.outbound[stop[0]].json().unwrap();
    assert_eq!(body["reason"], "user_disabled");
    assert_eq!(body["userId"], ALICE);
    let gm = w.json_messages(g);
    assert!(told_stopped(&gm, CAPTIONS), "{gm:?}");
    let us = &last_state_change(&gm)["userSession"];
    assert!(!names(&us["activeAppPackageNames"]).contains(&CAPTIONS.to_string()));
    assert!(!names(&us["loadingApps"]).contains(&CAPTIONS.to_string()));
    assert!(us["appStates"].get(CAPTIONS).is_none(), "{us}");
    assert!(names(&us["activeAppPackageNames"]).contains(&STT.to_string()));
    assert_eq!(w.server.hub.app_state(ALICE, CAPTIONS), None);
    // Stopped apps are not in the running list: a new session does not start it.
    w.client_eof(g);
    w.advance(secs(60));
    assert_eq!(w.server.hub.session_count(), 0);
    glasses_raw(&mut w, ALICE);
    assert_eq!(starts(&w, ALICE, CAPTIONS).len(), 1);
}

// ---- 10. the attack list -----------------------------------------------------------------

/// One refused app connection: its messages must be exactly the error with `code`, then close
/// 1008.
fn assert_refused(w: &mut World, c: usize, code: &str, what: &str) {
    let msgs = w.json_messages(c);
    assert_eq!(msgs.len(), 2, "{what}: {msgs:?}");
    assert_eq!(msgs[0]["type"], "tpa_connection_error", "{what}");
    assert_eq!(msgs[0]["code"], code, "{what}");
    assert!(msgs[0]["message"].is_string(), "{what}");
    assert_eq!(msgs[1]["close"], 1008, "{what}");
}

/// A glasses token signed over arbitrary header and claims with `secret`.
fn forge(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        base64::encode(header.to_string().as_bytes()),
        base64::encode(claims.to_string().as_bytes())
    );
    let mac = auth::hmac_sha256(secret, input.as_bytes());
    format!("{input}.{}", base64::encode(&mac))
}

#[test]
fn attacks_are_refused_with_distinct_codes_and_disturb_no_one() {
    let mut w = world();
    let g = session(&mut w, ALICE);
    let healthy = start_active(&mut w, g, ALICE, CAPTIONS);
    subscribe(&mut w, healthy, CAPTIONS, json!(["button_press"]));
    assert!(w.json_messages(healthy).is_empty());
    w.json_messages(g);
    let bob = session(&mut w, BOB);
    start_app(&mut w, bob, NOTES);
    w.json_messages(bob);

    type Attack = Box<dyn Fn(&mut World) -> usize>;
    let attacks: Vec<(&str, &str, Attack)> = vec![
        (
            "wrong key",
            "INVALID_API_KEY",
            Box::new(|w| {
                join(
                    w,
                    Peer::InProcess,
                    "/app-ws",
                    CAPTIONS,
                    "guess",
                    &sid(ALICE, CAPTIONS),
                )
            }),
        ),
        (
            "key of notes, package of captions",
            "INVALID_API_KEY",
            Box::new(|w| {
                join(
                    w,
                    Peer::InProcess,
                    "/app-ws",
                    CAPTIONS,
                    NOTES_KEY,
                    &sid(ALICE, CAPTIONS),
                )
            }),
        ),
        (
            "valid app never started in this session",
            "APP_NOT_STARTED",
            Box::new(|w| {
                join(
                    w,
                    Peer::InProcess,
                    "/app-ws",
                    NOTES,
                    NOTES_KEY,
                    &sid(ALICE, NOTES),
                )
            }),
        ),
        (
            "another user's session that did not start it",
            "APP_NOT_STARTED",
            Box::new(|w| {
                join(
                    w,
                    Peer::InProcess,
                    "/app-ws",
                    CAPTIONS,
                    CAPTIONS_KEY,
                    &sid(BOB, CAPTIONS),
                )
            }),
        ),
        (
            "a user with no session",
            "SESSION_NOT_FOUND",
            Box::new(|w| {
                join(
                    w,
                    Peer::InProcess,
                    "/tpa-ws",
                    CAPTIONS,
                    CAPTIONS_KEY,
                    &sid("nobody@example.com", CAPTIONS),
                )
            }),
        ),
        (
            "a session id that names another package",
            "SESSION_NOT_FOUND",
            Box::new(|w| {
                join(
                    w,
                    Peer::InProcess,
                    "/app-ws",
                    CAPTIONS,
                    CAPTIONS_KEY,
                    &sid(ALICE, NOTES),
                )
            }),
        ),
        (
            "messages before init",
            "NOT_INITIALIZED",
            Box::new(|w| {
                let c = w.connect();
                assert_eq!(w.upgrade(c, "/app-ws"), 101);
                subscribe(w, c, CAPTIONS, json!(["button_press"]));
                c
            }),
        ),
        (
            "a second init for another package",
            "ALREADY_INITIALIZED",
            Box::new(|w| {
                let c = join(
                    w,
                    Peer::InProcess,
                    "/app-ws",
                    NOTES,
                    NOTES_KEY,
                    &sid(BOB, NOTES),
                );
                let first = w.json_messages(c);
                assert_eq!(first[0]["type"], "tpa_connection_ack", "{first:?}");
                w.send_text(c, &init_msg(CAPTIONS, CAPTIONS_KEY, &sid(ALICE, CAPTIONS)));
                c
            }),
        ),
        (
            "system app from another address",
            "ADDRESS_NOT_ALLOWED",
            Box::new(|w| {
                join(
                    w,
                    Peer::Ip("10.9.9.8:5000".parse().unwrap()),
                    "/app-ws",
                    STT,
                    STT_KEY,
                    &sid(ALICE, STT),
                )
            }),
        ),
        (
            "system app in process",
            "ADDRESS_NOT_ALLOWED",
            Box::new(|w| {
                join(
                    w,
                    Peer::InProcess,
                    "/app-ws",
                    STT,
                    STT_KEY,
                    &sid(ALICE, STT),
                )
            }),
        ),
        (
            "unknown package",
            "PACKAGE_NOT_FOUND",
            Box::new(|w| {
                join(
                    w,
                    Peer::InProcess,
                    "/app-ws",
                    "com.evil.app",
                    CAPTIONS_KEY,
                    &sid(ALICE, "com.evil.app"),
                )
            }),
        ),
        (
            "non-JSON first message",
            "MALFORMED_MESSAGE",
            Box::new(|w| {
                let c = w.connect();
                assert_eq!(w.upgrade(c, "/app-ws"), 101);
                w.send_text(c, "hello, let me in");
                c
            }),
        ),
    ];
    let mut want: std::collections::BTreeMap<&str, u64> = Default::default();
    for (what, code, attack) in &attacks {
        let c = attack(&mut w);
        assert_refused(&mut w, c, code, what);
        *want.entry(code).or_default() += 1;
        // The refused client answers the close; nothing else moves.
        w.client_eof(c);
        let gm = w.json_messages(g);
        assert!(gm.is_empty(), "{what}: alice's glasses saw {gm:?}");
        assert!(!w.clients[g].closed, "{what}");
        assert!(!w.clients[healthy].closed, "{what}");
        assert_eq!(w.server.hub.app_state(ALICE, CAPTIONS), Some("active"));
        assert_routed(&mut w, g, healthy, ALICE, CAPTIONS);
    }
    assert_eq!(w.server.hub.app_state(ALICE, NOTES), None);
    assert_eq!(w.server.hub.app_state(BOB, CAPTIONS), None);

    // Forged glasses tokens: refused at the upgrade with a JSON body.
    let forged = [
        (
            "wrong secret",
            jwt::glasses_token(ALICE, b"not-the-secret"),
            "INVALID_SIGNATURE",
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                base64::encode(br#"{"alg":"none","typ":"JWT"}"#),
                base64::encode(json!({"sub": ALICE, "email": ALICE}).to_string().as_bytes())
            ),
            "UNSUPPORTED_ALGORITHM",
        ),
        (
            "alg none, signed anyway",
            forge(&json!({"alg": "none"}), &json!({"email": ALICE}), SECRET),
            "UNSUPPORTED_ALGORITHM",
        ),
        (
            "no email",
            jwt::sign(&json!({"sub": ALICE}), SECRET),
            "MISSING_EMAIL",
        ),
    ];
    for (what, token, code) in &forged {
        let c = w.connect();
        let (status, body) = w.upgrade_with(
            c,
            "/glasses-ws",
            &[&format!("Authorization: Bearer {token}")],
        );
        assert_eq!(status, 401, "{what}");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{what}: {body}"));
        assert_eq!(v["type"], "connection_error", "{what}");
        assert_eq!(v["code"], *code, "{what}");
        assert!(w.clients[c].closed, "{what}");
        *want.entry(code).or_default() += 1;
    }
    assert_eq!(w.server.hub.session_count(), 2);
    assert!(w.json_messages(g).is_empty());
    assert_routed(&mut w, g, healthy, ALICE, CAPTIONS);

    let got: std::collections::BTreeMap<&str, u64> = w
        .server
        .hub
        .counters
        .refusals
        .iter()
        .map(|(k, v)| (*k, *v))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn a_bound_connection_refused_for_a_second_init_does_not_leave_its_app_active() {
    let mut w = world();
    let g = session(&mut w, ALICE);
    let notes = start_active(&mut w, g, ALICE, NOTES);
    let captions = start_active(&mut w, g, ALICE, CAPTIONS);
    subscribe(&mut w, captions, CAPTIONS, json!(["button_press"]));
    w.send_text(
        notes,
        &init_msg(CAPTIONS, CAPTIONS_KEY, &sid(ALICE, CAPTIONS)),
    );
    assert_refused(&mut w, notes, "ALREADY_INITIALIZED", "second init");
    // Captions is untouched; notes lost its only connection, so it is not active on a closed
    // socket but handled as a drop: its grace, then a restart through its webhook.
    assert_eq!(w.server.hub.app_state(ALICE, CAPTIONS), Some("active"));
    assert_eq!(w.server.hub.app_state(ALICE, NOTES), Some("reconnecting"));
    let gm = w.json_messages(g);
    let us = &last_state_change(&gm)["userSession"];
    assert_eq!(us["appStates"][NOTES]["state"], "reconnecting");
    w.client_eof(notes);
    w.advance(secs(5));
    w.advance(secs(1));
    assert_eq!(starts(&w, ALICE, NOTES).len(), 2);
    assert_routed(&mut w, g, captions, ALICE, CAPTIONS);
}

// ---- 11. header auth at the upgrade ------------------------------------------------------

fn app_token_for(package: &str, key: &str) -> String {
    jwt::app_token(package, &auth::hash_api_key(key), SECRET)
}

fn header_upgrade(w: &mut World, token: &str, session: Option<&str>) -> (usize, u16, String) {
    let c = w.connect();
    let auth = format!("Authorization: Bearer {token}");
    let sess = session.map(|s| format!("X-Session-Id: {s}"));
    let mut headers = vec![auth.as_str()];
    if let Some(s) = &sess {
        headers.push(s.as_str());
    }
    let (status, body) = w.upgrade_with(c, "/app-ws", &headers);
    (c, status, body)
}

#[test]
fn header_auth_at_the_upgrade() {
    let mut w = world();
    let g = session(&mut w, ALICE);
    start_app(&mut w, g, CAPTIONS);
    w.json_messages(g);

    let refusals = [
        (
            "bad token",
            jwt::app_token(CAPTIONS, &auth::hash_api_key(CAPTIONS_KEY), b"wrong"),
            Some(sid(ALICE, CAPTIONS)),
            401,
            "INVALID_APP_TOKEN",
        ),
        (
            "no X-Session-Id",
            app_token_for(CAPTIONS, CAPTIONS_KEY),
            None,
            401,
            "MISSING_HEADERS",
        ),
        (
            "app not started",
            app_token_for(NOTES, NOTES_KEY),
            Some(sid(ALICE, NOTES)),
            403,
            "APP_NOT_STARTED",
        ),
        (
            "token for an old key",
            app_token_for(CAPTIONS, "captions-key-before-rotation"),
            Some(sid(ALICE, CAPTIONS)),
            401,
            "INVALID_APP_TOKEN",
        ),
    ];
    for (what, token, session, status, code) in &refusals {
        let (c, got, body) = header_upgrade(&mut w, token, session.as_deref());
        assert_eq!(got, *status, "{what}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{what}: {body}"));
        assert_eq!(v["type"], "tpa_connection_error", "{what}");
        assert_eq!(v["code"], *code, "{what}");
        assert!(w.clients[c].closed, "{what}");
        assert_eq!(w.server.hub.app_state(ALICE, CAPTIONS), Some("loading"));
    }

    let (c, status, _) = header_upgrade(
        &mut w,
        &app_token_for(CAPTIONS, CAPTIONS_KEY),
        Some(&sid(ALICE, CAPTIONS)),
    );
    assert_eq!(status, 101);
    let msgs = w.json_messages(c);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0]["type"], "tpa_connection_ack");
    assert_eq!(msgs[0]["sessionId"], sid(ALICE, CAPTIONS));
    assert_eq!(w.server.hub.app_state(ALICE, CAPTIONS), Some("active"));
    let gm = w.json_messages(g);
    assert_eq!(of_type(&gm, "app_started").len(), 1, "{gm:?}");
    subscribe(&mut w, c, CAPTIONS, json!(["button_press"]));
    assert_routed(&mut w, g, c, ALICE, CAPTIONS);
}

// ---- 12. REST ----------------------------------------------------------------------------

fn rest(w: &mut World, method: &str, path: &str, auth: Option<&str>) -> (u16, Value) {
    let c = w.connect();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: sim\r\nContent-Length: 0\r\n");
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: Bearer {a}\r\n"));
    }
    req.push_str("\r\n");
    w.send_raw(c, req.as_bytes());
    let (status, body) = w.clients[c].take_http_response().expect("a response");
    assert!(w.clients[c].closed);
    let v = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    (status, v)
}

#[test]
fn rest_start_and_stop() {
    let mut w = world();
    let g = session(&mut w, ALICE);
    let token = jwt::glasses_token(ALICE, SECRET);
    let start = format!("/apps/{CAPTIONS}/start");
    let stop = format!("/apps/{CAPTIONS}/stop");

    let (status, v) = rest(&mut w, "POST", &start, Some(&token));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["success"], true);
    assert_eq!(v["data"]["status"], "started");
    assert_eq!(v["data"]["packageName"], CAPTIONS);
    assert_eq!(v["data"]["appState"]["state"], "loading");
    assert_eq!(starts(&w, ALICE, CAPTIONS).len(), 1);
    let gm = w.json_messages(g);
    let us = &last_state_change(&gm)["userSession"];
    assert!(names(&us["loadingApps"]).contains(&CAPTIONS.to_string()));
    let app = join(
        &mut w,
        Peer::InProcess,
        "/app-ws",
        CAPTIONS,
        CAPTIONS_KEY,
        &sid(ALICE, CAPTIONS),
    );
    assert_eq!(w.json_messages(app)[0]["type"], "tpa_connection_ack");

    let (status, v) = rest(&mut w, "POST", &stop, Some(&token));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["success"], true);
    assert_eq!(v["data"]["status"], "stopped");
    assert_eq!(v["data"]["packageName"], CAPTIONS);
    assert_eq!(v["data"]["appState"]["state"], "stopped");
    assert_eq!(stops(&w, ALICE, CAPTIONS).len(), 1);
    let msgs = w.json_messages(app);
    assert_eq!(
        closes(&msgs).first().map(|c| c["close"].clone()),
        Some(json!(1000))
    );
    assert_eq!(w.server.hub.app_state(ALICE, CAPTIONS), None);

    let hooks = w.outbound.len();
    let bad = jwt::glasses_token(ALICE, b"forged");
    let (status, v) = rest(&mut w, "POST", &start, Some(&bad));
    assert_eq!(status, 401, "{v}");
    assert_eq!(v["code"], "INVALID_SIGNATURE");
    let (status, v) = rest(&mut w, "POST", &start, None);
    assert_eq!(status, 401, "{v}");
    assert!(v["code"].is_string());
    let (status, v) = rest(&mut w, "POST", "/apps/com.evil.app/start", Some(&token));
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["code"], "PACKAGE_NOT_FOUND");
    let (status, v) = rest(&mut w, "GET", &start, Some(&token));
    assert_eq!(status, 405, "{v}");
    let bob = jwt::glasses_token(BOB, SECRET);
    let (status, v) = rest(&mut w, "POST", &start, Some(&bob));
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["code"], "SESSION_NOT_FOUND");
    // None of the refusals started anything.
    assert_eq!(w.outbound.len(), hooks);
    assert_eq!(w.server.hub.app_state(ALICE, CAPTIONS), None);
    assert_eq!(w.server.hub.session_count(), 1);
}

// ---- 13. routing -------------------------------------------------------------------------

#[test]
fn routing_by_subscription_and_displays_by_connection() {
    let mut w = world();
    let g = session(&mut w, ALICE);
    let captions = start_active(&mut w, g, ALICE, CAPTIONS);
    let notes = start_active(&mut w, g, ALICE, NOTES);
    subscribe(
        &mut w,
        captions,
        CAPTIONS,
        json!(["button_press", "audio_chunk"]),
    );
    subscribe(&mut w, notes, NOTES, json!(["head_position"]));
    assert!(w.json_messages(captions).is_empty());
    assert!(w.json_messages(notes).is_empty());
    assert_eq!(
        w.server.hub.subscriptions(ALICE, CAPTIONS),
        vec!["button_press".to_string(), "audio_chunk".to_string()]
    );
    let gm = w.json_messages(g);
    let us = &last_state_change(&gm)["userSession"];
    assert_eq!(us["appSubscriptions"][NOTES], json!(["head_position"]));

    // An event reaches only its subscribers, with the original message as data.
    assert_routed(&mut w, g, captions, ALICE, CAPTIONS);
    assert!(w.json_messages(notes).is_empty());
    let head = r#"{"type":"head_position","position":"up"}"#;
    w.send_text(g, head);
    let got = data_streams(&mut w, notes);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["streamType"], "head_position");
    assert_eq!(got[0]["sessionId"], sid(ALICE, NOTES));
    assert_eq!(got[0]["data"], serde_json::from_str::<Value>(head).unwrap());
    assert!(w.json_messages(captions).is_empty());

    // Binary audio: the same bytes, to audio_chunk subscribers only.
    let audio: Vec<u8> = (0..=255u8).cycle().take(640).collect();
    w.send_frame(g, true, augmentos_edge::ws::Opcode::Binary, &audio);
    assert_eq!(
        w.clients[captions].messages(),
        vec![Received::Binary(audio.clone())]
    );
    assert!(w.clients[notes].messages().is_empty());

    // A display: packageName forced to the sender's, layout intact (after the boot screen).
    w.advance(ms(1500));
    w.json_messages(g);
    let layout = json!({"layoutType": "text_wall", "text": "hello from notes"});
    w.send_text(
        notes,
        &json!({
            "type": "display_event",
            "packageName": CAPTIONS,
            "view": "main",
            "layout": layout,
            "durationMs": 3000,
            "sessionId": "",
        })
        .to_string(),
    );
    let gm = w.json_messages(g);
    let shown = of_type(&gm, "display_event");
    assert_eq!(shown.len(), 1, "{gm:?}");
    assert_eq!(shown[0]["packageName"], NOTES);
    assert_eq!(shown[0]["layout"], layout);
    assert_eq!(shown[0]["view"], "main");
    assert_eq!(shown[0]["durationMs"], 3000);

    // A forbidden subscription: permission_error, the rest applied.
    subscribe(
        &mut w,
        notes,
        NOTES,
        json!(["location_update", "button_press"]),
    );
    let msgs = w.json_messages(notes);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0]["type"], "permission_error");
    assert_eq!(msgs[0]["details"][0]["stream"], "location_update");
    assert_eq!(msgs[0]["details"][0]["requiredPermission"], "LOCATION");
    assert_eq!(
        w.server.hub.subscriptions(ALICE, NOTES),
        vec!["button_press".to_string()]
    );
    assert_routed(&mut w, g, notes, ALICE, NOTES);
    assert_eq!(data_streams(&mut w, captions).len(), 1);

    // An unknown stream: INVALID_SUBSCRIPTION, the rest applied, the connection kept.
    subscribe(
        &mut w,
        notes,
        NOTES,
        json!(["no_such_stream", "head_position"]),
    );
    let msgs = w.json_messages(notes);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0]["type"], "tpa_connection_error");
    assert_eq!(msgs[0]["code"], "INVALID_SUBSCRIPTION");
    assert_eq!(
        w.server.hub.subscriptions(ALICE, NOTES),
        vec!["head_position".to_string()]
    );
    w.send_text(g, head);
    assert_eq!(data_streams(&mut w, notes).len(), 1);
    assert!(!w.clients[notes].closed);
    assert_eq!(w.server.hub.app_state(ALICE, NOTES), Some("active"));
}

// ---- 14. settings ------------------------------------------------------------------------

#[test]
fn request_settings_answers_the_ten_defaults() {
    let mut w = world();
    let g = session(&mut w, ALICE);
    w.send_text(
        g,
        &json!({"type": "request_settings", "sessionId": ALICE}).to_string(),
    );
    let msgs = w.json_messages(g);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0]["type"], "settings_update");
    assert_eq!(msgs[0]["sessionId"], ALICE);
    let settings = msgs[0]["settings"].as_object().unwrap();
    let want = json!({
        "useOnboardMic": false,
        "contextualDashboard": true,
        "metricSystemEnabled": false,
        "headUpAngle": 20,
        "brightness": 50,
        "autoBrightness": false,
        "sensingEnabled": true,
        "alwaysOnStatusBar": false,
        "bypassVad": false,
        "bypassAudioEncoding": false
    });
    assert_eq!(settings.len(), 10);
    assert_eq!(msgs[0]["settings"], want);
}

// ---- 15. dashes in user and package ------------------------------------------------------

#[test]
fn user_and_package_with_dashes_join_by_suffix() {
    let mut all = apps();
    all.push(spec(DASHED, DASHED_KEY, false, &[], &[], 3004));
    let mut w = world_of(all, Timings::default());
    let g = session(&mut w, MARY);
    start_app(&mut w, g, DASHED);
    let hooks = starts(&w, MARY, DASHED);
    assert_eq!(hooks.len(), 1);
    assert_eq!(
        w.outbound[hooks[0]].json().unwrap()["sessionId"],
        "mary-jane@example.com-com.my-app.live-captions"
    );
    let c = join(
        &mut w,
        Peer::InProcess,
        "/app-ws",
        DASHED,
        DASHED_KEY,
        "mary-jane@example.com-com.my-app.live-captions",
    );
    let msgs = w.json_messages(c);
    assert_eq!(msgs[0]["type"], "tpa_connection_ack", "{msgs:?}");
    assert_eq!(
        msgs[0]["sessionId"],
        "mary-jane@example.com-com.my-app.live-captions"
    );
    assert_eq!(w.server.hub.app_state(MARY, DASHED), Some("active"));
    subscribe(&mut w, c, DASHED, json!(["button_press"]));
    assert_routed(&mut w, g, c, MARY, DASHED);
    // A user named by the first dash only does not exist.
    let c = join(
        &mut w,
        Peer::InProcess,
        "/app-ws",
        DASHED,
        DASHED_KEY,
        "mary-com.my-app.live-captions",
    );
    assert_refused(&mut w, c, "SESSION_NOT_FOUND", "first-dash split");
}

// ---- hostile clients on the venue network --------------------------------------------------

/// A world whose heartbeat pings every second, so a socket can stay "alive" by answering.
fn world_pinging(max_connections: usize) -> World {
    World::with_hub(
        ServerConfig {
            ping_interval: Some(secs(1)),
            idle_timeout: secs(3),
            max_connections,
            ..ServerConfig::default()
        },
        HubConfig {
            public_ws_url: PUBLIC_WS.into(),
            internal_ws_url: INTERNAL_WS.into(),
            jwt_secret: SECRET.to_vec(),
            apps: apps(),
            ..HubConfig::default()
        },
    )
}

fn get(w: &mut World, path: &str) -> u16 {
    let c = w.connect();
    w.send_raw(c, format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes());
    w.clients[c].take_http_response().map_or(0, |(s, _)| s)
}

/// Whether a new client connection is admitted (past the cap it is answered 503; only
/// `/health` and `/metrics` are answered there).
fn slot_free(w: &mut World) -> bool {
    match get(w, "/nowhere") {
        404 => true,
        503 => false,
        other => panic!("GET /nowhere answered {other}"),
    }
}

#[test]
fn app_sockets_that_never_initialise_are_closed_at_their_deadline_though_they_answer_pings() {
    let mut w = world_pinging(3);
    let idle: Vec<usize> = (0..3)
        .map(|_| {
            let c = w.connect();
            assert_eq!(w.upgrade(c, "/app-ws"), 101);
            c
        })
        .collect();
    // Every client slot is held (only /health and /metrics are still answered).
    assert!(!slot_free(&mut w));
    assert_eq!(get(&mut w, "/health"), 200);
    // They answer every ping, as client libraries do, for the whole init deadline (5 s).
    for _ in 0..4 {
        w.advance(secs(1));
        for &c in &idle {
            w.send_frame(c, true, Opcode::Pong, b"edge");
        }
    }
    assert!(idle.iter().all(|&c| !w.clients[c].closed));
    w.advance(secs(1));
    for &c in &idle {
        let msgs = w.json_messages(c);
        let errs = of_type(&msgs, "tpa_connection_error");
        assert_eq!(errs.len(), 1, "{msgs:?}");
        assert_eq!(errs[0]["code"], "INIT_TIMEOUT");
        assert_eq!(closes(&msgs)[0]["close"], 1008, "{msgs:?}");
    }
    // They get the close deadline to answer our close frame, then the slots are free.
    w.advance(secs(2));
    assert!(idle.iter().all(|&c| w.clients[c].closed));
    assert!(slot_free(&mut w));
    assert_eq!(w.server.hub.counters.refusals.get("INIT_TIMEOUT"), Some(&3));
}

#[test]
fn a_binary_frame_before_init_is_refused_like_any_message_before_init() {
    let mut w = world();
    let c = w.connect();
    assert_eq!(w.upgrade(c, "/tpa-ws"), 101);
    w.send_frame(c, true, Opcode::Binary, &[0, 1, 2, 3]);
    let msgs = w.json_messages(c);
    assert_eq!(
        of_type(&msgs, "tpa_connection_error")[0]["code"],
        "NOT_INITIALIZED",
        "{msgs:?}"
    );
    assert_eq!(closes(&msgs)[0]["close"], 1008, "{msgs:?}");
}

#[test]
fn a_bound_app_message_without_a_string_type_gets_a_structured_error() {
    let mut w = world();
    let g = session(&mut w, ALICE);
    let app = start_active(&mut w, g, ALICE, CAPTIONS);
    for bad in [
        r#"{"type":5}"#,
        r#"{"packageName":"x"}"#,
        "[1,2]",
        "not json",
    ] {
        w.send_text(app, bad);
        let msgs = w.json_messages(app);
        assert_eq!(msgs.len(), 1, "{bad}: {msgs:?}");
        assert_eq!(msgs[0]["type"], "tpa_connection_error", "{bad}: {msgs:?}");
        assert_eq!(msgs[0]["code"], "MALFORMED_MESSAGE", "{bad}: {msgs:?}");
    }
    // The app stays connected and routed.
    assert!(!w.clients[app].closed);
    subscribe(&mut w, app, CAPTIONS, json!(["button_press"]));
    assert_routed(&mut w, g, app, ALICE, CAPTIONS);
}

#[test]
fn start_stop_toggling_is_rate_limited_coalesced_and_never_crowds_out_clients() {
    // Four client slots: the glasses and the system app hold two.
    let mut w = world_pinging(4);
    let g = session(&mut w, ALICE);
    let port = port_of(CAPTIONS);
    // The app server accepts and never answers; the glasses toggle as fast as they can.
    for i in 0..200 {
        if i % 2 == 0 {
            start_app(&mut w, g, CAPTIONS);
        } else {
            stop_app(&mut w, g, CAPTIONS);
        }
    }
    let msgs = w.json_messages(g);
    let limited = of_type(&msgs, "connection_error")
        .iter()
        .filter(|m| m["code"] == "RATE_LIMITED")
        .count();
    assert_eq!(limited, 190, "a burst of 10 passes, the rest is refused");
    // Of the ten that passed, the app server heard the first start and the first stop; the
    // rest wait behind that stop as one request, the latest.
    let sent = w.outbound.iter().filter(|o| o.target.port == port).count();
    assert_eq!(sent, 2);
    assert_eq!(w.server.hub.counters.webhooks_coalesced, 7);
    // Client connections are untouched by the outbound ones.
    assert!(slot_free(&mut w));
    assert_eq!(w.server.net.inbound_count(), 2);
    // A second later the session may ask again, once.
    w.advance(secs(1));
    start_app(&mut w, g, CAPTIONS);
    stop_app(&mut w, g, CAPTIONS);
    let msgs = w.json_messages(g);
    let codes: Vec<_> = of_type(&msgs, "connection_error")
        .iter()
        .map(|m| m["code"].clone())
        .collect();
    assert_eq!(codes, vec![json!("RATE_LIMITED")], "{msgs:?}");
}

#[test]
fn webhooks_are_capped_per_app_server_and_in_total_apart_from_client_connections() {
    let mut w = World::with_hub(
        ServerConfig {
            ping_interval: None,
            // Three glasses and one more caller fill the client slots exactly.
            max_connections: 4,
            max_outbound: 3,
            ..ServerConfig::default()
        },
        HubConfig {
            public_ws_url: PUBLIC_WS.into(),
            internal_ws_url: INTERNAL_WS.into(),
            jwt_secret: SECRET.to_vec(),
            apps: apps(),
            max_webhooks_per_server: 2,
            ..HubConfig::default()
        },
    );
    let users = ["u1@x.org", "u2@x.org", "u3@x.org"];
    let glasses: Vec<usize> = users.iter().map(|u| glasses_raw(&mut w, u).0).collect();
    // Each session's system app start is one webhook to the STT server: 3 wanted, 2 allowed.
    let stt_port = port_of(STT);
    let to_stt = |w: &World| {
        w.outbound
            .iter()
            .filter(|o| o.target.port == stt_port)
            .count()
    };
    assert_eq!(to_stt(&w), 2);
    assert_eq!(w.server.hub.app_state(users[2], STT), Some("loading"));
    // The same sessions start the captions app: one more fits the total cap of 3.
    for &g in &glasses {
        start_app(&mut w, g, CAPTIONS);
    }
    assert_eq!(w.server.net.outbound_count(), 3);
    // Client connections still fit, however many webhooks wait.
    assert!(slot_free(&mut w));
    assert!(w.server.stats().outbound_refused >= 2);
    // The refused attempts are retried after the backoff, within the caps.
    let sent = w.outbound.len();
    let first = w.open_outbound()[0];
    w.respond_http(first, 200);
    w.advance(secs(1));
    assert!(w.outbound.len() > sent);
    assert!(w.server.net.outbound_count() <= 3);
    assert!(
        w.open_outbound()
            .iter()
            .filter(|&&i| w.outbound[i].target.port == stt_port)
            .count()
            <= 2
    );
}

#[test]
fn deadlines_that_no_longer_apply_never_wake_the_loop() {
    let mut w = world();
    let g = session(&mut w, ALICE);
    // Loading armed the 5 s connect deadline; the app connected and its webhook was answered.
    let app = start_active(&mut w, g, ALICE, CAPTIONS);
    // The boot screen's minimum time is the one deadline left; then none.
    assert_eq!(w.server.poll_timeout(), Some(w.now + ms(1500)));
    w.advance(ms(1500));
    // Then only the output-buffer pool's, handing back what the setup left in it.
    assert_eq!(w.server.poll_timeout(), w.server.net.pool_deadline());
    w.advance(augmentos_edge::net::pool::POOL_IDLE);
    assert_eq!(w.server.poll_timeout(), None);
    // A dropped app arms its reconnect grace; its return makes that deadline moot too.
    w.client_eof(app);
    assert_eq!(w.server.poll_timeout(), Some(w.now + secs(5)));
    let back = join(
        &mut w,
        Peer::InProcess,
        "/app-ws",
        CAPTIONS,
        CAPTIONS_KEY,
        &sid(ALICE, CAPTIONS),
    );
    assert_eq!(w.json_messages(back)[0]["type"], "tpa_connection_ack");
    assert_eq!(w.server.poll_timeout(), w.server.net.pool_deadline());
}
