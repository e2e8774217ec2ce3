//! Durable state: the core's persist events in the deterministic world, and the real SQLite
//! store in a temporary directory — a round trip across a restart of the core, a damaged
//! database file at many offsets (the server still starts, and says so), and a migration from
//! an older schema version (the fixture `tests/fixtures/state-v1.sql`).

use augmentos_edge::auth::{self, jwt};
use augmentos_edge::hub::registry::AppSpec;
use augmentos_edge::hub::HubConfig;
use augmentos_edge::net::Target;
use augmentos_edge::server::ServerConfig;
use augmentos_edge::sim::World;
use augmentos_edge::state::sqlite::{open_configured, SqliteStore, FILE, SCHEMA_VERSION};
use augmentos_edge::state::{Persist, Snapshot, Store};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

const SECRET: &[u8] = b"state-test-secret-0123";
const USER: &str = "ada@example.com";
const CAPTIONS: &str = "com.example.captions";
const NOTES: &str = "com.example.notes";

fn spec(package: &str, port: u16) -> AppSpec {
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
        hashed_api_key: auth::hash_api_key("k"),
        is_system_app: false,
        permissions: Vec::new(),
        allowed_addresses: Vec::new(),
        publishes: Vec::new(),
        settings: Vec::new(),
    }
}

fn hub() -> HubConfig {
    HubConfig {
        jwt_secret: SECRET.to_vec(),
        apps: vec![spec(CAPTIONS, 5001), spec(NOTES, 5002)],
        ..HubConfig::default()
    }
}

fn server_cfg() -> ServerConfig {
    ServerConfig {
        ping_interval: None,
        ..ServerConfig::default()
    }
}

/// A fresh directory under the system's temporary directory.
fn temp_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "augmentos-edge-state-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn glasses(w: &mut World, user: &str) -> usize {
    let g = w.connect();
    let bearer = format!("Authorization: Bearer {}", jwt::glasses_token(user, SECRET));
    assert_eq!(w.upgrade_with(g, "/glasses-ws", &[&bearer]).0, 101);
    w.send_text(g, r#"{"type":"connection_init"}"#);
    g
}

fn lifecycle(w: &mut World, g: usize, ty: &str, package: &str) {
    w.send_text(g, &json!({"type": ty, "packageName": package}).to_string());
}

/// The packages `session_request` webhooks were sent for, in order.
fn started(w: &World) -> Vec<String> {
    w.outbound
        .iter()
        .filter_map(|o| o.json())
        .filter(|b| b["type"] == "session_request")
        .map(|b| {
            let sid = b["sessionId"].as_str().unwrap();
            sid.rsplit_once("-com.")
                .map(|(_, p)| format!("com.{p}"))
                .unwrap()
        })
        .collect()
}

#[test]
fn starting_and_stopping_apps_persists_exactly_the_changes() {
    let mut w = World::with_hub(server_cfg(), hub());
    let g = glasses(&mut w, USER);
    lifecycle(&mut w, g, "start_app", CAPTIONS);
    lifecycle(&mut w, g, "start_app", CAPTIONS);
    lifecycle(&mut w, g, "start_app", NOTES);
    lifecycle(&mut w, g, "stop_app", CAPTIONS);
    lifecycle(&mut w, g, "stop_app", CAPTIONS);
    let running = |package: &str, running: bool| Persist::Running {
        user: USER.into(),
        package: package.into(),
        running,
    };
    assert_eq!(
        w.persisted,
        vec![
            running(CAPTIONS, true),
            running(NOTES, true),
            running(CAPTIONS, false)
        ]
    );
}

#[test]
fn running_apps_survive_a_restart_of_the_core_through_the_store() {
    let dir = temp_dir();
    // First life: the user starts two apps and stops one.
    let mut w = World::with_hub(server_cfg(), hub());
    let g = glasses(&mut w, USER);
    lifecycle(&mut w, g, "start_app", CAPTIONS);
    lifecycle(&mut w, g, "start_app", NOTES);
    lifecycle(&mut w, g, "stop_app", NOTES);
    let mut store = SqliteStore::open_dir(&dir, 0).unwrap().store;
    store.apply(&w.persisted).unwrap();
    drop(store);
    // Second life, from the file: the glasses reconnect and the running app is started again.
    let loaded = open_configured(Some(&dir), 0);
    assert!(loaded.store.is_some());
    assert_eq!(loaded.status.recovered, None);
    assert_eq!(
        loaded.snapshot.running,
        vec![(USER.to_string(), CAPTIONS.to_string())]
    );
    let mut w = World::with_state(server_cfg(), hub(), loaded.snapshot);
    assert!(started(&w).is_empty());
    glasses(&mut w, USER);
    assert_eq!(started(&w), vec![CAPTIONS.to_string()]);
    let _ = std::fs::remove_dir_all(&dir);
}

fn sample() -> Vec<Persist> {
    let mut batch = Vec::new();
    for i in 0..200 {
        batch.push(Persist::Running {
            user: format!("user{i}@example.com"),
            package: CAPTIONS.into(),
            running: true,
        });
        batch.push(Persist::Storage {
            user: format!("user{i}@example.com"),
            package: NOTES.into(),
            key: "note".into(),
            value: Some(json!("x".repeat(i)).to_string()),
        });
    }
    batch
}

#[test]
fn a_damaged_database_never_stops_the_server_and_is_reported() {
    let dir = temp_dir();
    {
        let mut s = SqliteStore::open_dir(&dir, 0).unwrap().store;
        s.apply(&sample()).unwrap();
        // Fold the WAL into the main file so the damage below hits real pages.
        drop(s);
        SqliteStore::open(&dir.join(FILE)).unwrap();
    }
    let good = std::fs::read(dir.join(FILE)).unwrap();
    let full = open_configured(Some(&dir), 0).snapshot;
    assert_eq!(full.running.len(), 200);
    let mut recovered = 0;
    let mut offsets: Vec<usize> = (0..good.len()).step_by(good.len() / 40 + 1).collect();
    offsets.extend([0, 16, 18, 28, 96, 100]);
    for (n, &at) in offsets.iter().enumerate() {
        for truncate in [false, true] {
            let case = temp_dir();
            let mut bytes = good.clone();
            if truncate {
                bytes.truncate(at);
            } else {
                for b in bytes.iter_mut().skip(at).take(64) {
                    *b ^= 0xA5;
                }
            }
            std::fs::write(case.join(FILE), &bytes).unwrap();
            let loaded = open_configured(Some(&case), 1_000 + n as u64);
            // Whatever happened, the server has a store to write to and starts.
            assert!(loaded.store.is_some(), "offset {at}: no store");
            match &loaded.status.recovered {
                Some(why) => {
                    recovered += 1;
                    assert_eq!(loaded.snapshot, Snapshot::default());
                    assert!(why.contains("moved to"), "{why}");
                    let aside = std::fs::read_dir(&case)
                        .unwrap()
                        .filter_map(Result::ok)
                        .any(|e| e.file_name().to_string_lossy().contains(".unreadable-"));
                    assert!(aside, "offset {at}: the bad file was not kept");
                }
                // Damage SQLite could not see (free space) or a clean truncation to a valid
                // prefix: what loads is a subset of what was written.
                None => assert!(loaded.snapshot.running.len() <= 200),
            }
            let _ = std::fs::remove_dir_all(&case);
        }
    }
    assert!(
        recovered >= offsets.len() / 2,
        "only {recovered} of the damaged files were caught"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn build_from_sql(path: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(sql).unwrap();
}

#[test]
fn an_older_schema_is_migrated_and_keeps_its_data() {
    let dir = temp_dir();
    build_from_sql(&dir.join(FILE), include_str!("fixtures/state-v1.sql"));
    let loaded = open_configured(Some(&dir), 0);
    assert_eq!(loaded.status.recovered, None);
    assert_eq!(loaded.snapshot.running.len(), 3);
    let mut store = loaded.store.unwrap();
    store
        .apply(&[Persist::Storage {
            user: USER.into(),
            package: NOTES.into(),
            key: "k".into(),
            value: Some("\"v\"".into()),
        }])
        .unwrap();
    drop(store);
    let conn = rusqlite::Connection::open(dir.join(FILE)).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let again = open_configured(Some(&dir), 0).snapshot;
    assert_eq!(again.running.len(), 3);
    assert_eq!(again.storage.len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_database_from_a_newer_binary_is_moved_aside_not_overwritten() {
    let dir = temp_dir();
    build_from_sql(&dir.join(FILE), "PRAGMA user_version = 99;");
    let loaded = open_configured(Some(&dir), 7);
    assert!(loaded
        .status
        .recovered
        .as_deref()
        .is_some_and(|r| r.contains("newer")));
    assert!(dir.join(format!("{FILE}.unreadable-7")).exists());
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- REST against durable state --------------------------------------------------------------

fn captions_with_settings() -> HubConfig {
    let mut h = hub();
    h.apps[0].settings = vec![
        json!({"type": "group", "title": "Text"}),
        json!({"key": "fontSize", "type": "slider", "label": "Size", "defaultValue": 24}),
        json!({"key": "lang", "type": "select", "label": "Language", "defaultValue": "en-US",
               "options": [{"label": "English", "value": "en-US"}]}),
    ];
    h
}

/// One HTTP request through the world; the status and JSON body.
fn http(
    w: &mut World,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let c = w.connect();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: Bearer {a}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    w.send_raw(c, req.as_bytes());
    let (status, body) = w.clients[c].take_http_response().expect("a response");
    (
        status,
        serde_json::from_str(&body).unwrap_or(json!({"raw": body})),
    )
}

#[test]
fn simple_storage_is_scoped_checked_and_limited() {
    let mut w = World::with_hub(server_cfg(), hub());
    let path = "/api/sdk/simple-storage/ada%40example.com";
    let app = format!("{CAPTIONS}:k");
    let (s, v) = http(&mut w, "GET", path, Some(&app), "");
    assert_eq!((s, &v["data"]), (200, &json!({})));
    let (s, _) = http(
        &mut w,
        "PUT",
        path,
        Some(&app),
        r#"{"data":{"theme":"dark","n":"1"}}"#,
    );
    assert_eq!(s, 200);
    let (s, v) = http(&mut w, "GET", path, Some(&app), "");
    assert_eq!((s, &v["data"]), (200, &json!({"theme": "dark", "n": "1"})));
    // Another app with its own key sees its own, empty, scope.
    let (_, v) = http(&mut w, "GET", path, Some(&format!("{NOTES}:k")), "");
    assert_eq!(v["data"], json!({}));
    // A wrong key is refused; nothing is changed.
    let (s, v) = http(
        &mut w,
        "PUT",
        path,
        Some(&format!("{CAPTIONS}:wrong")),
        r#"{"data":{"theme":"x"}}"#,
    );
    assert_eq!((s, &v["code"]), (401, &json!("INVALID_API_KEY")));
    // Over the value limit: 413, nothing changed.
    let big = format!(r#"{{"data":{{"theme":"{}"}}}}"#, "x".repeat(100_001));
    let w_cfg = ServerConfig {
        http: augmentos_edge::http::RequestLimits {
            max_head: 8192,
            max_body: 200_000,
        },
        ..server_cfg()
    };
    let mut w2 = World::with_hub(w_cfg, hub());
    let (s, v) = http(&mut w2, "PUT", path, Some(&app), &big);
    assert_eq!((s, &v["code"]), (413, &json!("VALUE_TOO_LARGE")));
    assert!(w2.persisted.is_empty());
    // Delete one key, then everything.
    let (s, _) = http(&mut w, "DELETE", &format!("{path}/n"), Some(&app), "");
    assert_eq!(s, 200);
    let (_, v) = http(&mut w, "GET", path, Some(&app), "");
    assert_eq!(v["data"], json!({"theme": "dark"}));
    let (s, _) = http(&mut w, "DELETE", path, Some(&app), "");
    assert_eq!(s, 200);
    let (_, v) = http(&mut w, "GET", path, Some(&app), "");
    assert_eq!(v["data"], json!({}));
    // Every change was persisted, in order.
    let keys: Vec<(String, bool)> = w
        .persisted
        .iter()
        .filter_map(|p| match p {
            Persist::Storage { key, value, .. } => Some((key.clone(), value.is_some())),
            _ => None,
        })
        .collect();
    assert_eq!(
        keys,
        vec![
            ("n".into(), true),
            ("theme".into(), true),
            ("n".into(), false),
            ("theme".into(), false)
        ]
    );
}

#[test]
fn settings_are_served_merged_and_changed_for_the_user() {
    let mut w = World::with_hub(server_cfg(), captions_with_settings());
    let g = glasses(&mut w, USER);
    // Not running the app: the settings are not handed out.
    let (s, v) = http(
        &mut w,
        "GET",
        &format!("/appsettings/user/{CAPTIONS}"),
        Some(&format!("{USER}-{CAPTIONS}")),
        "",
    );
    assert_eq!((s, &v["code"]), (403, &json!("APP_NOT_STARTED")));
    lifecycle(&mut w, g, "start_app", CAPTIONS);
    let (s, v) = http(
        &mut w,
        "GET",
        &format!("/appsettings/user/{CAPTIONS}"),
        Some(&format!("{USER}-{CAPTIONS}")),
        "",
    );
    assert_eq!(s, 200, "{v}");
    let values: Vec<(String, serde_json::Value)> = v["settings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["key"].as_str().unwrap().to_string(), x["value"].clone()))
        .collect();
    assert_eq!(
        values,
        vec![
            ("fontSize".into(), json!(24)),
            ("lang".into(), json!("en-US"))
        ]
    );
    // The user changes one: saved, and the app server is told at /settings.
    let token = jwt::glasses_token(USER, SECRET);
    let (s, _) = http(
        &mut w,
        "PUT",
        &format!("/api/settings/{CAPTIONS}"),
        Some(&token),
        r#"{"settings":{"fontSize":32}}"#,
    );
    assert_eq!(s, 200);
    let (_, v) = http(
        &mut w,
        "GET",
        &format!("/tpasettings/user/{CAPTIONS}"),
        Some(USER),
        "",
    );
    assert_eq!(v["settings"][0]["value"], 32);
    let told = w
        .outbound
        .iter()
        .find(|o| o.request_line().starts_with("POST /settings "))
        .and_then(|o| o.json())
        .expect("a POST to the app server's /settings");
    assert_eq!(told["userIdForSettings"], USER);
    assert_eq!(told["settings"][0]["value"], 32);
    // An undeclared key is refused by name.
    let (s, v) = http(
        &mut w,
        "PUT",
        &format!("/api/settings/{CAPTIONS}"),
        Some(&token),
        r#"{"settings":{"colour":1}}"#,
    );
    assert_eq!((s, &v["code"]), (400, &json!("UNKNOWN_SETTING")));
    assert!(v["message"].as_str().unwrap().contains("colour"));
}

#[test]
fn tpa_server_registration_recovers_exactly_the_live_sessions_of_its_package() {
    let mut w = World::with_hub(server_cfg(), hub());
    let g1 = glasses(&mut w, USER);
    let g2 = glasses(&mut w, "bo@example.com");
    let _g3 = glasses(&mut w, "cy@example.com");
    lifecycle(&mut w, g1, "start_app", CAPTIONS);
    lifecycle(&mut w, g2, "start_app", CAPTIONS);
    lifecycle(&mut w, g2, "start_app", NOTES);
    let body =
        json!({"packageName": CAPTIONS, "apiKey": "k", "webhookUrl": "http://10.0.0.5:7000/hook"})
            .to_string();
    let (s, v) = http(&mut w, "POST", "/api/tpa-server/register", None, &body);
    assert_eq!(s, 201, "{v}");
    let rid = v["registrationId"].as_str().unwrap().to_string();
    // Bad bodies and keys are refused by field.
    let (s, v) = http(
        &mut w,
        "POST",
        "/api/tpa-server/register",
        None,
        r#"{"packageName":"x"}"#,
    );
    assert_eq!((s, &v["code"]), (400, &json!("MALFORMED_BODY")));
    let bad =
        json!({"packageName": CAPTIONS, "apiKey": "nope", "webhookUrl": "http://h/"}).to_string();
    assert_eq!(
        http(&mut w, "POST", "/api/tpa-server/register", None, &bad).0,
        401
    );
    // Restart: one session_request per live session of the package, to the registered URL.
    let before = w.outbound.len();
    let (s, v) = http(
        &mut w,
        "POST",
        "/api/tpa-server/restart",
        None,
        &json!({"registrationId": rid}).to_string(),
    );
    assert_eq!((s, &v["recoveredSessions"]), (200, &json!(2)));
    let sent: Vec<(String, String)> = w.outbound[before..]
        .iter()
        .map(|o| {
            (
                o.request_line(),
                o.json().unwrap()["sessionId"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        sent,
        vec![
            (
                "POST /hook HTTP/1.1".to_string(),
                format!("{USER}-{CAPTIONS}")
            ),
            (
                "POST /hook HTTP/1.1".to_string(),
                format!("bo@example.com-{CAPTIONS}")
            ),
        ]
    );
    assert!(w.outbound[before..]
        .iter()
        .all(|o| o.target.host == "10.0.0.5" && o.target.port == 7000));
    // The registration is durable, kept alive by heartbeats, and expires without them.
    assert!(w
        .persisted
        .iter()
        .any(|p| matches!(p, Persist::Registration(r) if r.id == rid)));
    w.advance(std::time::Duration::from_secs(20 * 60));
    assert_eq!(
        http(
            &mut w,
            "POST",
            "/api/tpa-server/heartbeat",
            None,
            &json!({"registrationId": rid}).to_string()
        )
        .0,
        200
    );
    w.advance(std::time::Duration::from_secs(25 * 60));
    assert_eq!(
        http(
            &mut w,
            "POST",
            "/api/tpa-server/heartbeat",
            None,
            &json!({"registrationId": rid}).to_string()
        )
        .0,
        200
    );
    w.advance(std::time::Duration::from_secs(31 * 60));
    w.advance(std::time::Duration::from_secs(15 * 60));
    let (s, v) = http(
        &mut w,
        "POST",
        "/api/tpa-server/heartbeat",
        None,
        &json!({"registrationId": rid}).to_string(),
    );
    assert_eq!((s, &v["code"]), (404, &json!("REGISTRATION_NOT_FOUND")));
    assert!(w
        .persisted
        .iter()
        .any(|p| matches!(p, Persist::RegistrationGone(id) if *id == rid)));
}

#[test]
fn device_settings_from_core_status_are_kept_pushed_and_acked() {
    let dir = temp_dir();
    let mut h = hub();
    h.apps[1].permissions = vec!["ALL".into()];
    let mut w = World::with_hub(server_cfg(), h.clone());
    let g = glasses(&mut w, USER);
    // An app subscribed to one setting, started and connected.
    lifecycle(&mut w, g, "start_app", NOTES);
    let app = w.connect();
    assert_eq!(w.upgrade(app, "/app-ws"), 101);
    let init = json!({"type": "tpa_connection_init", "packageName": NOTES,
                      "sessionId": format!("{USER}-{NOTES}"), "apiKey": "k"});
    w.send_text(app, &init.to_string());
    w.send_text(
        app,
        &json!({"type": "subscription_update", "subscriptions": ["augmentos:brightness"]})
            .to_string(),
    );
    w.json_messages(app);
    let report = |brightness: &str, angle: i64| {
        json!({"type": "core_status_update", "status": {"status": {
            "core_info": {"sensing_enabled": false, "force_core_onboard_mic": true},
            "connected_glasses": {"brightness": brightness, "headUp_angle": angle}
        }}})
        .to_string()
    };
    w.send_text(g, &report("80", 20));
    let got = w.json_messages(app);
    let updates: Vec<_> = got
        .iter()
        .filter(|m| m["type"] == "augmentos_settings_update")
        .collect();
    assert_eq!(updates.len(), 1, "{got:?}");
    assert_eq!(updates[0]["settings"]["brightness"], 80);
    assert_eq!(updates[0]["settings"]["sensingEnabled"], false);
    assert_eq!(updates[0]["settings"]["useOnboardMic"], true);
    // A report that changes only the head-up angle does not concern this subscriber; the same
    // report again changes nothing at all.
    w.send_text(g, &report("80", 35));
    w.send_text(g, &report("80", 35));
    assert!(w
        .json_messages(app)
        .iter()
        .all(|m| m["type"] != "augmentos_settings_update"));
    // Across a restart, through the store: the new session starts from them.
    let mut store = SqliteStore::open_dir(&dir, 0).unwrap().store;
    store.apply(&w.persisted).unwrap();
    drop(store);
    let snapshot = open_configured(Some(&dir), 0).snapshot;
    let mut w = World::with_state(server_cfg(), h, snapshot);
    let g = glasses(&mut w, USER);
    w.json_messages(g);
    w.send_text(g, r#"{"type":"request_settings"}"#);
    let s = &w.json_messages(g)[0]["settings"];
    assert_eq!(
        (s["brightness"].clone(), s["headUpAngle"].clone()),
        (json!(80), json!(35))
    );
    assert_eq!(s["sensingEnabled"], false);
    let _ = std::fs::remove_dir_all(&dir);
}
