//! The `/ui/` routes of the core, through the in-memory world (`sim::World`, virtual time): the
//! operator feed and actions behind their token, the development-user shortcut, the embedded
//! pages, and nothing served when the config does not enable them. The browser half is
//! `tests/ui.rs`.

use augmentos_edge::auth::{self, jwt};
use augmentos_edge::config::DEV_SECRET;
use augmentos_edge::hub::registry::AppSpec;
use augmentos_edge::hub::HubConfig;
use augmentos_edge::net::Target;
use augmentos_edge::server::ServerConfig;
use augmentos_edge::sim::World;
use serde_json::{json, Value};
use std::time::Duration;

const TOKEN: &str = "operator-token-for-tests";
const SECRET: &[u8] = b"a-secret-for-the-ui-tests";
const ALICE: &str = "alice@example.com";
const CAPTIONS: &str = "com.example.captions";

fn world_with(operator_token: Option<&str>, secret: &[u8]) -> World {
    let hub = HubConfig {
        jwt_secret: secret.to_vec(),
        apps: vec![AppSpec {
            package_name: CAPTIONS.into(),
            name: "Captions".into(),
            public_url: "http://apps.example:3001".into(),
            webhook_target: Target {
                host: "apps.example".into(),
                port: 3001,
                tls: None,
            },
            webhook_path: String::new(),
            hashed_api_key: auth::hash_api_key("captions-key"),
            is_system_app: false,
            permissions: vec!["ALL".into()],
            allowed_addresses: Vec::new(),
            publishes: Vec::new(),
            settings: Vec::new(),
        }],
        ..HubConfig::default()
    };
    World::with_hub(
        ServerConfig {
            ping_interval: None,
            operator_token: operator_token.map(str::to_string),
            ..ServerConfig::default()
        },
        hub,
    )
}

fn world() -> World {
    world_with(Some(TOKEN), SECRET)
}

/// One request; (status, head, body).
fn http(w: &mut World, method: &str, path: &str, headers: &[&str], body: &str) -> (u16, String) {
    let c = w.connect();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: sim\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    w.send_raw(c, req.as_bytes());
    let (status, body) = w.clients[c].take_http_response().expect("a response");
    assert!(w.clients[c].closed, "{path}: the connection is closed");
    (status, body)
}

fn api(w: &mut World, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let auth = token.map(|t| format!("Authorization: Bearer {t}"));
    let headers: Vec<&str> = auth.iter().map(String::as_str).collect();
    let (status, body) = http(w, method, path, &headers, "");
    let v = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: not JSON: {body}"));
    (status, v)
}

/// Glasses of ALICE, initialised, that asked to start the captions app: the glasses client.
fn alice_starts_captions(w: &mut World) -> usize {
    let g = w.connect();
    let bearer = format!(
        "Authorization: Bearer {}",
        jwt::glasses_token(ALICE, SECRET)
    );
    assert_eq!(w.upgrade_with(g, "/glasses-ws", &[&bearer]).0, 101);
    w.send_text(g, r#"{"type":"connection_init"}"#);
    w.send_text(
        g,
        &json!({"type": "start_app", "packageName": CAPTIONS}).to_string(),
    );
    g
}

/// Glasses of ALICE with the captions app started, connected and showing a text wall, and a
/// dashboard line; returns the app's client.
fn alice_with_captions(w: &mut World) -> usize {
    alice_starts_captions(w);
    let hook = (0..w.outbound.len())
        .rev()
        .find(|&i| {
            w.outbound[i]
                .json()
                .is_some_and(|v| v["type"] == "session_request")
        })
        .expect("a session_request");
    let sid = format!("{ALICE}-{CAPTIONS}");
    let c = w.connect();
    assert_eq!(w.upgrade(c, "/app-ws"), 101);
    w.send_text(
        c,
        &json!({"type": "tpa_connection_init", "packageName": CAPTIONS, "sessionId": sid,
                "apiKey": "captions-key"})
        .to_string(),
    );
    w.respond_http(hook, 200);
    w.send_text(
        c,
        &json!({"type": "subscription_update", "packageName": CAPTIONS, "sessionId": sid,
                "subscriptions": ["button_press"]})
        .to_string(),
    );
    w.advance(Duration::from_millis(2000));
    w.send_text(
        c,
        &json!({"type": "display_event", "packageName": CAPTIONS, "sessionId": sid, "view": "main",
                "layout": {"layoutType": "text_wall", "text": "hello visitors"},
                "timestamp": "2026-01-01T00:00:00.000Z"})
        .to_string(),
    );
    w.send_text(
        c,
        &json!({"type": "dashboard_content_update", "packageName": CAPTIONS, "sessionId": sid,
                "content": "Hall B", "modes": ["main"], "timestamp": "2026-01-01T00:00:00.000Z"})
        .to_string(),
    );
    w.advance(Duration::from_millis(500));
    c
}

#[test]
fn the_feed_is_refused_without_the_operator_token() {
    let mut w = world();
    for token in [
        None,
        Some("wrong"),
        Some("operator-token-for-tests-and-more"),
        Some(""),
    ] {
        let (status, v) = api(&mut w, "GET", "/ui/api/state", token);
        assert_eq!(status, 401, "{token:?}");
        assert_eq!(v["code"], "INVALID_OPERATOR_TOKEN", "{token:?}");
        assert!(v["message"].is_string());
    }
    // Actions too, before anything else is looked at.
    let stop = format!("/ui/api/sessions/{ALICE}/apps/{CAPTIONS}/stop");
    assert_eq!(api(&mut w, "POST", &stop, Some("wrong")).0, 401);
    assert_eq!(api(&mut w, "GET", "/ui/api/nothing", None).0, 401);
    let (status, v) = api(&mut w, "GET", "/ui/api/state", Some(TOKEN));
    assert_eq!(status, 200);
    assert_eq!(v["counters"]["refusals"]["INVALID_OPERATOR_TOKEN"], 6);
    let recent = v["recentRefusals"].as_array().unwrap();
    assert_eq!(recent.len(), 6, "one per request: {recent:?}");
    assert!(recent
        .iter()
        .all(|r| r["code"] == "INVALID_OPERATOR_TOKEN" && r["count"] == 1 && r["at"].is_string()));
    assert!(w
        .server
        .metrics(w.clock())
        .contains("augmentos_edge_refusals_total{code=\"INVALID_OPERATOR_TOKEN\"} 6"));
}

#[test]
fn the_feed_shows_sessions_apps_and_what_the_glasses_show() {
    let mut w = world();
    let (_, empty) = api(&mut w, "GET", "/ui/api/state", Some(TOKEN));
    assert_eq!(empty["sessions"], json!([]));
    assert_eq!(empty["apps"][0]["packageName"], CAPTIONS);

    let app = alice_with_captions(&mut w);
    let (status, v) = api(&mut w, "GET", "/ui/api/state", Some(TOKEN));
    assert_eq!(status, 200);
    let s = &v["sessions"][0];
    assert_eq!(s["userId"], ALICE);
    assert_eq!(s["glasses"], "connected");
    assert_eq!(s["graceLeftMs"], Value::Null);
    assert_eq!(s["microphone"], false, "no app wants audio");
    assert_eq!(s["apps"][0]["packageName"], CAPTIONS);
    assert_eq!(s["apps"][0]["state"], "active");
    assert_eq!(s["apps"][0]["subscriptions"], json!(["button_press"]));
    let screen = |view: &str| {
        s["screens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["view"] == view)
            .cloned()
            .unwrap_or_else(|| panic!("no {view} screen in {s}"))
    };
    let main = screen("main");
    assert_eq!(main["packageName"], CAPTIONS);
    assert_eq!(
        main["layout"],
        json!({"layoutType": "text_wall", "text": "hello visitors"})
    );
    let dash = screen("dashboard");
    assert_eq!(dash["layout"]["layoutType"], "double_text_wall");
    assert!(dash["layout"]["bottomText"]
        .as_str()
        .unwrap()
        .contains("Hall B"));
    let c = &v["counters"];
    assert_eq!(c["connections"]["glasses"], 1);
    assert_eq!(c["connections"]["app"], 1);
    assert_eq!(c["webhooks"]["count"], 1);
    assert!(c["displays"]["sent"].as_u64().unwrap() >= 2);

    // An app that wants audio turns the glasses' microphone on.
    w.send_text(
        app,
        &json!({"type": "subscription_update", "packageName": CAPTIONS,
                "sessionId": format!("{ALICE}-{CAPTIONS}"), "subscriptions": ["audio_chunk"]})
        .to_string(),
    );
    w.advance(Duration::from_millis(1500));
    let (_, v) = api(&mut w, "GET", "/ui/api/state", Some(TOKEN));
    assert_eq!(v["sessions"][0]["microphone"], true);
}

#[test]
fn recent_refusals_are_kept_newest_first_and_bounded() {
    let mut w = world();
    for _ in 0..45 {
        api(&mut w, "GET", "/ui/api/state", None);
    }
    w.advance(Duration::from_secs(3));
    let (status, body) = http(&mut w, "POST", "/ui/dev/token", &[], "{}");
    assert_eq!(status, 403, "{body}");
    let (_, v) = api(&mut w, "GET", "/ui/api/state", Some(TOKEN));
    let recent = v["recentRefusals"].as_array().unwrap();
    assert_eq!(recent.len(), 40, "bounded");
    assert_eq!(recent[0]["code"], "DEV_USERS_DISABLED", "newest first");
    assert_eq!(recent[1]["code"], "INVALID_OPERATOR_TOKEN");
    assert!(
        recent[0]["at"].as_str() > recent[1]["at"].as_str(),
        "{recent:?}"
    );
}

#[test]
fn glasses_gone_are_shown_in_grace() {
    let mut w = world();
    alice_with_captions(&mut w);
    let g = (0..w.clients.len())
        .find(|&i| !w.clients[i].closed)
        .expect("the glasses");
    w.client_eof(g);
    w.advance(Duration::from_secs(10));
    let (_, v) = api(&mut w, "GET", "/ui/api/state", Some(TOKEN));
    let s = &v["sessions"][0];
    assert_eq!(s["glasses"], "grace");
    assert_eq!(s["graceLeftMs"], 50_000, "60 s grace, 10 s gone");
    assert_eq!(v["counters"]["connections"]["glasses"], 0);
}

#[test]
fn the_boot_card_is_shown_as_the_glasses_get_it() {
    let mut w = world();
    let g = alice_starts_captions(&mut w);
    let (_, v) = api(&mut w, "GET", "/ui/api/state", Some(TOKEN));
    let s = &v["sessions"][0];
    assert_eq!(s["apps"][0]["state"], "loading");
    let sent = w
        .json_messages(g)
        .into_iter()
        .find(|m| m["type"] == "display_event")
        .expect("the boot card");
    assert_eq!(s["screens"][0]["layout"], sent["layout"]);
    assert_eq!(sent["layout"]["layoutType"], "reference_card");
}

#[test]
fn operators_start_and_stop_apps_for_a_user() {
    let mut w = world();
    alice_with_captions(&mut w);
    let stop = format!(
        "/ui/api/sessions/{}/apps/{CAPTIONS}/stop",
        "alice%40example.com"
    );
    let (status, v) = api(&mut w, "POST", &stop, Some(TOKEN));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["status"], "stopped");
    assert_eq!(w.server.hub.app_state(ALICE, CAPTIONS), None);
    let stops = w
        .outbound
        .iter()
        .filter(|o| o.json().is_some_and(|v| v["type"] == "stop_request"))
        .count();
    assert_eq!(stops, 1, "the app server is told");

    let start = format!("/ui/api/sessions/{ALICE}/apps/{CAPTIONS}/start");
    let (status, v) = api(&mut w, "POST", &start, Some(TOKEN));
    assert_eq!(status, 200, "{v}");
    assert_eq!(w.server.hub.app_state(ALICE, CAPTIONS), Some("loading"));

    let (status, v) = api(
        &mut w,
        "POST",
        &format!("/ui/api/sessions/bob/apps/{CAPTIONS}/start"),
        Some(TOKEN),
    );
    assert_eq!(
        (status, v["code"].as_str()),
        (404, Some("SESSION_NOT_FOUND"))
    );
    let (status, v) = api(
        &mut w,
        "POST",
        &format!("/ui/api/sessions/{ALICE}/apps/com.nope/start"),
        Some(TOKEN),
    );
    assert_eq!(
        (status, v["code"].as_str()),
        (404, Some("PACKAGE_NOT_FOUND"))
    );
    let (status, _) = api(&mut w, "GET", &start, Some(TOKEN));
    assert_eq!(status, 405);
    let (status, v) = api(
        &mut w,
        "POST",
        &format!("/ui/api/sessions/{ALICE}/apps/{CAPTIONS}/restart"),
        Some(TOKEN),
    );
    assert_eq!((status, v["code"].as_str()), (404, Some("NOT_FOUND")));
}

/// What the emulator asks: are development users on, and a token for `body`.
fn dev_user(w: &mut World, body: &str) -> (bool, u16, String) {
    let (_, cfg) = http(w, "GET", "/ui/config.json", &[], "");
    let on = serde_json::from_str::<Value>(&cfg).unwrap()["devUsers"] == true;
    let (status, body) = http(w, "POST", "/ui/dev/token", &[], body);
    (on, status, body)
}

#[test]
fn development_users_only_with_the_development_secret() {
    let mut w = world_with(Some(TOKEN), DEV_SECRET.as_bytes());
    let (on, status, body) = dev_user(&mut w, r#"{"userId": " ann@example.com "}"#);
    assert_eq!((on, status), (true, 200), "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let user = jwt::glasses_user(v["token"].as_str().unwrap(), DEV_SECRET.as_bytes(), 0);
    assert_eq!(user.as_deref(), Ok("ann@example.com"));
    for bad in [r#"{"userId": ""}"#, r#"{"user": "x"}"#, "not json"] {
        let (_, status, body) = dev_user(&mut w, bad);
        assert_eq!(status, 400, "{bad}: {body}");
    }

    let mut w = world();
    let (on, status, body) = dev_user(&mut w, r#"{"userId": "ann@example.com"}"#);
    assert_eq!((on, status), (false, 403));
    assert!(body.contains("DEV_USERS_DISABLED"), "{body}");
    assert!(!body.contains("eyJ"), "no token: {body}");
}

#[test]
fn the_pages_are_embedded_and_nothing_is_served_when_off() {
    let mut w = world();
    for (path, needle) in [
        ("/ui/", "Operator"),
        ("/ui/operator", "operator.js"),
        ("/ui/glasses", "glasses.js"),
        ("/ui/render.js", "renderLayout"),
        ("/ui/ui.css", ".glasses"),
    ] {
        let (status, body) = http(&mut w, "GET", path, &[], "");
        assert_eq!(status, 200, "{path}");
        assert!(body.contains(needle), "{path}");
    }
    let (status, _) = http(&mut w, "GET", "/ui/nothing-here", &[], "");
    assert_eq!(status, 404);
    let (status, _) = http(&mut w, "POST", "/ui/operator", &[], "");
    assert_eq!(status, 405);

    let mut off = world_with(None, SECRET);
    for path in ["/ui/", "/ui/operator", "/ui/api/state", "/ui/config.json"] {
        let (status, v) = api(&mut off, "GET", path, Some(TOKEN));
        assert_eq!(
            (status, v["code"].as_str()),
            (404, Some("NOT_FOUND")),
            "{path}"
        );
    }
}
