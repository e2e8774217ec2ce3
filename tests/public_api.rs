//! The box's public REST calls that need no token, on the in-memory world:
//! `GET /api/public/permissions/{packageName}` answers each registered app's permissions in the
//! shape SDK 2.1.29 reads (`{packageName, permissions: [{type, description}]}`; it warns about
//! a missing permission by looking for a `type`), `ALL` spelled out as every type; an unknown
//! package is a 404 JSON error (`PACKAGE_NOT_FOUND`, counted); a malformed name a 400, a
//! wrong method a 405, each with a JSON `code`.

use augmentos_edge::auth;
use augmentos_edge::hub::registry::AppSpec;
use augmentos_edge::hub::HubConfig;
use augmentos_edge::net::Target;
use augmentos_edge::server::ServerConfig;
use augmentos_edge::sim::World;
use serde_json::Value;

fn app(package: &str, permissions: &[&str]) -> AppSpec {
    AppSpec {
        package_name: package.into(),
        name: package.into(),
        public_url: "http://127.0.0.1:3001".into(),
        webhook_target: Target {
            host: "127.0.0.1".into(),
            port: 3001,
            tls: None,
        },
        webhook_path: String::new(),
        hashed_api_key: auth::hash_api_key("key"),
        is_system_app: false,
        permissions: permissions.iter().map(|p| p.to_string()).collect(),
        allowed_addresses: Vec::new(),
        publishes: Vec::new(),
        settings: Vec::new(),
    }
}

fn world() -> World {
    World::with_hub(
        ServerConfig::default(),
        HubConfig {
            apps: vec![
                app("com.example.captions", &["MICROPHONE", "LOCATION"]),
                app("com.example.all", &["ALL"]),
                app("com.example.none", &[]),
            ],
            ..HubConfig::default()
        },
    )
}

fn request(w: &mut World, method: &str, path: &str) -> (u16, Value) {
    let c = w.connect();
    w.send_raw(c, format!("{method} {path} HTTP/1.1\r\n\r\n").as_bytes());
    let (status, body) = w.clients[c]
        .take_http_response()
        .expect("a complete response");
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{body}: {e}"));
    (status, json)
}

fn types(body: &Value) -> Vec<&str> {
    body["permissions"]
        .as_array()
        .expect("a permissions array")
        .iter()
        .map(|p| {
            assert!(p["description"].is_string(), "{p}");
            p["type"].as_str().expect("a type")
        })
        .collect()
}

#[test]
fn permissions_of_registered_apps() {
    let mut w = world();
    let (status, body) = request(
        &mut w,
        "GET",
        "/api/public/permissions/com.example.captions",
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["packageName"], "com.example.captions");
    assert_eq!(types(&body), ["MICROPHONE", "LOCATION"]);

    // Escaped as the SDK escapes it (`encodeURIComponent`).
    let (status, body) = request(&mut w, "GET", "/api/public/permissions/com%2Eexample%2Eall");
    assert_eq!(status, 200, "{body}");
    let all = types(&body);
    for t in [
        "MICROPHONE",
        "CAMERA",
        "LOCATION",
        "CALENDAR",
        "READ_NOTIFICATIONS",
    ] {
        assert!(all.contains(&t), "ALL lacks {t}: {body}");
    }

    let (status, body) = request(&mut w, "GET", "/api/public/permissions/com.example.none");
    assert_eq!(status, 200, "{body}");
    assert!(types(&body).is_empty(), "{body}");
}

#[test]
fn permissions_refusals() {
    let mut w = world();
    let (status, body) = request(&mut w, "GET", "/api/public/permissions/com.example.nope");
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("PACKAGE_NOT_FOUND"))
    );
    assert_eq!(w.server.hub.counters.refusals["PACKAGE_NOT_FOUND"], 1);

    let (status, body) = request(&mut w, "GET", "/api/public/permissions/%zz");
    assert_eq!((status, body["code"].as_str()), (400, Some("BAD_PATH")));

    let (status, body) = request(&mut w, "POST", "/api/public/permissions/com.example.none");
    assert_eq!(
        (status, body["code"].as_str()),
        (405, Some("METHOD_NOT_ALLOWED"))
    );
}
