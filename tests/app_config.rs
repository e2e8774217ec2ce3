//! Apps' own `tpa_config.json`, through the in-memory world and its virtual clock: the box
//! fetches `${publicUrl}/tpa_config.json` at an app's first start, merges the file's settings
//! under the config's (config wins, key by key) into the app's ack, and fetches it again on a
//! reload. Bad input — a 10 MB file, a body past 64 KiB with no length, invalid JSON, a 404, an
//! app server that never answers — is each a counted failure
//! (`app_config_fetches_total{outcome}`), and the app still starts with its config's settings.
//!
//! The fixture: `com.example.a` (settings in the config: `fontSize`, default 24); one user.

use augmentos_edge::auth::{self, jwt};
use augmentos_edge::hub::registry::AppSpec;
use augmentos_edge::hub::HubConfig;
use augmentos_edge::net::Target;
use augmentos_edge::server::ServerConfig;
use augmentos_edge::sim::World;
use serde_json::{json, Value};
use std::time::Duration;

const SECRET: &[u8] = b"app-config-test-secret";
const USER: &str = "ada@example.com";
const A: &str = "com.example.a";
const KEY: &str = "com.example.a-key";

fn spec() -> AppSpec {
    AppSpec {
        package_name: A.into(),
        name: A.into(),
        public_url: "http://apps.example:4001/base".into(),
        webhook_target: Target {
            host: "apps.example".into(),
            port: 4001,
            tls: None,
        },
        webhook_path: "/base".into(),
        hashed_api_key: auth::hash_api_key(KEY),
        is_system_app: false,
        permissions: vec!["ALL".into()],
        allowed_addresses: Vec::new(),
        publishes: Vec::new(),
        settings: vec![json!({"key": "fontSize", "type": "slider", "defaultValue": 24})],
    }
}

fn world() -> World {
    let hub = HubConfig {
        jwt_secret: SECRET.to_vec(),
        apps: vec![spec()],
        lifecycle_burst: 100,
        fetch_app_config: true,
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
    assert_eq!(w.json_messages(g)[0]["type"], "connection_ack");
    g
}

fn start(w: &mut World, g: usize) {
    w.send_text(
        g,
        &json!({"type": "start_app", "packageName": A}).to_string(),
    );
}

/// The open outbound request whose request line starts with `line`.
fn request(w: &World, line: &str) -> Option<usize> {
    w.open_outbound()
        .into_iter()
        .find(|&i| w.outbound[i].request_line().starts_with(line))
}

/// The app joins its session; its ack's settings as `key -> defaultValue`.
fn join(w: &mut World) -> serde_json::Map<String, Value> {
    let c = w.connect();
    assert_eq!(w.upgrade(c, "/app-ws"), 101);
    w.send_text(
        c,
        &json!({"type": "tpa_connection_init", "packageName": A,
            "sessionId": format!("{USER}-{A}"), "apiKey": KEY})
        .to_string(),
    );
    let ack = w.json_messages(c).into_iter().next().expect("an answer");
    assert_eq!(ack["type"], "tpa_connection_ack", "{ack}");
    ack["settings"]
        .as_array()
        .expect("settings")
        .iter()
        .map(|s| {
            (
                s["key"].as_str().unwrap_or("").to_string(),
                s["defaultValue"].clone(),
            )
        })
        .collect()
}

fn ok_response(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn counted(w: &World, outcome: &str) -> bool {
    let m = w.server.metrics(w.clock());
    m.contains(&format!(
        "augmentos_edge_app_config_fetches_total{{outcome=\"{outcome}\"}} 1\n"
    ))
}

const FILE: &str = r#"{"name": "A", "settings": [
    {"key": "fontSize", "type": "slider", "defaultValue": 99},
    {"type": "group", "title": "Look"},
    {"key": "theme", "type": "select", "defaultValue": "dark"}]}"#;

#[test]
fn the_files_settings_merge_under_the_configs_and_a_reload_fetches_it_again() {
    let mut w = world();
    let g = glasses(&mut w);
    start(&mut w, g);
    let get = request(&w, "GET /base/tpa_config.json ").expect("the file is asked for");
    assert!(
        request(&w, "POST /base/webhook ").is_some(),
        "the webhook is not held back"
    );
    w.respond_http_bytes(get, &ok_response(FILE));
    assert!(counted(&w, "ok"));
    let settings = join(&mut w);
    assert_eq!(settings["fontSize"], 24, "the config wins: {settings:?}");
    assert_eq!(
        settings["theme"], "dark",
        "the file's own setting: {settings:?}"
    );
    // A second start does not ask again.
    let asked = |w: &World| {
        w.outbound
            .iter()
            .filter(|o| o.request_line().starts_with("GET /base/tpa_config.json"))
            .count()
    };
    assert_eq!(asked(&w), 1);

    // A reload asks again; the new file's defaults are what the next ack carries.
    let now = w.clock();
    w.server.handle_reload(vec![spec()], now);
    w.step();
    assert_eq!(asked(&w), 2);
    let get = request(&w, "GET /base/tpa_config.json ").expect("asked again");
    w.respond_http_bytes(
        get,
        &ok_response(r#"{"settings": [{"key": "theme", "defaultValue": "light"}]}"#),
    );
    let settings = join(&mut w);
    assert_eq!(settings["theme"], "light", "{settings:?}");
}

/// One bad answer: counted under `outcome`, the app starts with the config's settings only.
fn bad(outcome: &str, answer: impl FnOnce(&mut World, usize)) {
    let mut w = world();
    let g = glasses(&mut w);
    start(&mut w, g);
    let get = request(&w, "GET /base/tpa_config.json ").expect("the file is asked for");
    answer(&mut w, get);
    assert!(counted(&w, outcome), "{outcome} not counted");
    let settings = join(&mut w);
    assert_eq!(settings.len(), 1, "{outcome}: {settings:?}");
    assert_eq!(settings["fontSize"], 24);
    // The app is running and the webhook went out as usual.
    let hook = request(&w, "POST /base/webhook ").expect("the webhook");
    w.respond_http(hook, 200);
    assert!(w
        .server
        .metrics(w.clock())
        .contains("augmentos_edge_webhooks_total{outcome=\"ok\"} 1\n"));
}

#[test]
fn a_ten_megabyte_file_is_too_large() {
    bad("too_large", |w, i| {
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n";
        let mut resp = head.as_bytes().to_vec();
        resp.extend(std::iter::repeat_n(b' ', 100_000));
        w.respond_http_bytes(i, &resp);
    });
}

#[test]
fn a_body_past_the_limit_without_a_length_is_too_large() {
    bad("too_large", |w, i| {
        w.respond_http_bytes(i, b"HTTP/1.1 200 OK\r\n\r\n{\"settings\": [");
        let chunk = vec![b' '; 16 * 1024];
        for _ in 0..5 {
            w.respond_http_bytes(i, &chunk);
        }
    });
}

#[test]
fn invalid_json_is_counted() {
    bad("invalid", |w, i| {
        w.respond_http_bytes(i, &ok_response(r#"{"settings": [{"key": "#))
    });
}

#[test]
fn settings_without_keys_are_invalid() {
    bad("invalid", |w, i| {
        w.respond_http_bytes(i, &ok_response(r#"{"settings": [{"label": "x"}]}"#))
    });
}

#[test]
fn a_missing_file_is_counted() {
    bad("missing", |w, i| {
        w.respond_http_bytes(i, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    });
}

#[test]
fn a_server_that_never_answers_times_out() {
    let mut w = world();
    let g = glasses(&mut w);
    start(&mut w, g);
    assert!(request(&w, "GET /base/tpa_config.json ").is_some());
    // The app joins meanwhile, with its config's settings, and its webhook is answered.
    let settings = join(&mut w);
    assert_eq!(settings.len(), 1, "{settings:?}");
    let hook = request(&w, "POST /base/webhook ").expect("the webhook");
    w.respond_http(hook, 200);
    w.json_messages(g);
    w.advance(Duration::from_secs(6));
    assert!(counted(&w, "timed_out"));
    assert!(
        request(&w, "GET /base/tpa_config.json ").is_none(),
        "closed"
    );
    // Nothing else happened to the app: no stop, no restart webhook.
    let posts = w
        .outbound
        .iter()
        .filter(|o| o.request_line().starts_with("POST "))
        .count();
    assert_eq!(posts, 1);
    assert!(w
        .server
        .metrics(w.clock())
        .contains("augmentos_edge_webhooks_total{outcome=\"ok\"} 1\n"));
}
