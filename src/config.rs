//! Config layer: the JSON configuration file and the embedded default.
//!
//! Owns parsing and validation only. Invariants: every key is known (an unknown key is an
//! error naming it, with its path), every value is range-checked, and a loaded [`Config`] is
//! complete (defaults filled in), so nothing downstream re-validates.

use crate::hub::registry::{parse_http_url, AppSpec};
use crate::hub::HubConfig;
use crate::server::ServerConfig;
use serde_json::{Map, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// One place to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenSpec {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl ListenSpec {
    /// `"127.0.0.1:8002"`, `"[::1]:8002"`, `"unix:/run/edge.sock"` or an absolute path.
    pub fn parse(s: &str) -> Result<ListenSpec, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            return Ok(ListenSpec::Unix(PathBuf::from(p)));
        }
        if s.starts_with('/') {
            return Ok(ListenSpec::Unix(PathBuf::from(s)));
        }
        s.parse::<SocketAddr>()
            .map(ListenSpec::Tcp)
            .map_err(|_| format!("'{s}' is neither an IP:port address nor a unix: path"))
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<ListenSpec>,
    pub server: ServerConfig,
    pub hub: HubConfig,
    pub state_dir: PathBuf,
    /// True when the glasses-token secret is the public development one.
    pub dev_secret: bool,
}

/// The glasses-token secret used when none is configured. It is public: say so aloud.
pub const DEV_SECRET: &str = "augmentos-edge-development-secret";

/// The configuration used when no file is given: loopback only, no apps.
pub const EMBEDDED_DEFAULT: &str = r#"{
  "listen": ["127.0.0.1:8002"],
  "publicWsUrl": "ws://127.0.0.1:8002",
  "echoRoute": false,
  "apps": []
}"#;

const PERMISSIONS: &[&str] = &[
    "MICROPHONE",
    "LOCATION",
    "BACKGROUND_LOCATION",
    "CALENDAR",
    "CAMERA",
    "NOTIFICATIONS",
    "READ_NOTIFICATIONS",
    "POST_NOTIFICATIONS",
    "ALL",
];

impl Config {
    pub fn embedded() -> Config {
        Config::from_json(EMBEDDED_DEFAULT).expect("the embedded default is valid")
    }

    pub fn load(path: &std::path::Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        Config::from_json(&text).map_err(|e| format!("config {}: {e}", path.display()))
    }

    pub fn from_json(text: &str) -> Result<Config, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        let top = object(&v, "")?;
        known_keys(
            top,
            "",
            &[
                "listen",
                "echoRoute",
                "limits",
                "timings",
                "publicWsUrl",
                "internalWsUrl",
                "jwtSecret",
                "stateDir",
                "apps",
            ],
        )?;
        let mut hub = HubConfig::default();
        let ws_url = |key: &str| -> Result<Option<String>, String> {
            match top.get(key) {
                None => Ok(None),
                Some(Value::String(u)) if u.starts_with("ws://") || u.starts_with("wss://") => {
                    Ok(Some(u.trim_end_matches('/').to_string()))
                }
                Some(v) => Err(format!("{key}: expected a ws:// or wss:// URL, got {v}")),
            }
        };
        if let Some(u) = ws_url("publicWsUrl")? {
            hub.public_ws_url = u;
        }
        hub.internal_ws_url = ws_url("internalWsUrl")?.unwrap_or_else(|| hub.public_ws_url.clone());
        let dev_secret = match top.get("jwtSecret") {
            None => {
                hub.jwt_secret = DEV_SECRET.as_bytes().to_vec();
                true
            }
            Some(Value::String(s)) if s.len() >= 16 => {
                hub.jwt_secret = s.as_bytes().to_vec();
                s == DEV_SECRET
            }
            Some(_) => return Err("jwtSecret: expected a string of at least 16 characters".into()),
        };
        let state_dir = match top.get("stateDir") {
            None => PathBuf::from("augmentos-edge-state"),
            Some(Value::String(s)) if !s.is_empty() => PathBuf::from(s),
            Some(_) => return Err("stateDir: expected a directory path".into()),
        };
        if let Some(apps) = top.get("apps") {
            let apps = apps.as_array().ok_or("apps: expected an array")?;
            for (i, a) in apps.iter().enumerate() {
                let spec = parse_app(a, &format!("apps[{i}]."))?;
                if hub.apps.iter().any(|x| x.package_name == spec.package_name) {
                    return Err(format!(
                        "apps[{i}].packageName: '{}' is listed twice",
                        spec.package_name
                    ));
                }
                hub.apps.push(spec);
            }
        }
        let mut server = ServerConfig::default();
        let listen = match top.get("listen") {
            None => vec![ListenSpec::Tcp(SocketAddr::from(([127, 0, 0, 1], 8002)))],
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    item.as_str()
                        .ok_or_else(|| format!("listen[{i}]: expected a string"))
                        .and_then(|s| ListenSpec::parse(s).map_err(|e| format!("listen[{i}]: {e}")))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("listen: expected a non-empty array of addresses".into()),
        };
        if let Some(b) = top.get("echoRoute") {
            server.echo = b.as_bool().ok_or("echoRoute: expected true or false")?;
        }
        if let Some(l) = top.get("limits") {
            let l = object(l, "limits")?;
            known_keys(
                l,
                "limits.",
                &[
                    "maxFrameBytes",
                    "maxMessageBytes",
                    "maxRequestHeadBytes",
                    "maxBodyBytes",
                    "maxOutputBytes",
                    "maxConnections",
                ],
            )?;
            let get = |k: &str, lo: u64, hi: u64| number(l, "limits.", k, lo, hi);
            if let Some(n) = get("maxFrameBytes", 125, 16 << 20)? {
                server.ws.max_frame = n as usize;
            }
            if let Some(n) = get("maxMessageBytes", 125, 16 << 20)? {
                server.ws.max_message = n as usize;
            }
            if let Some(n) = get("maxRequestHeadBytes", 1024, 64 << 10)? {
                server.http.max_head = n as usize;
            }
            if let Some(n) = get("maxBodyBytes", 0, 16 << 20)? {
                server.http.max_body = n as usize;
            }
            if let Some(n) = get("maxOutputBytes", 16 << 10, 256 << 20)? {
                server.max_output = n as usize;
            }
            if let Some(n) = get("maxConnections", 1, crate::net::MAX_INDEX as u64 - 1)? {
                server.max_connections = n as usize;
            }
        }
        if let Some(t) = top.get("timings") {
            let t = object(t, "timings")?;
            known_keys(
                t,
                "timings.",
                &[
                    "handshakeTimeoutMs",
                    "closeTimeoutMs",
                    "gracePeriodMs",
                    "appConnectTimeoutMs",
                    "appReconnectGraceMs",
                    "webhookTimeoutMs",
                    "webhookAttempts",
                    "webhookBackoffMs",
                    "restartAttempts",
                    "restartBackoffMs",
                    "glassesInitTimeoutMs",
                    "pingIntervalMs",
                    "idleTimeoutMs",
                ],
            )?;
            let ms = |k: &str, lo: u64, hi: u64| -> Result<Option<Duration>, String> {
                Ok(number(t, "timings.", k, lo, hi)?.map(Duration::from_millis))
            };
            let h = &mut hub.timings;
            if let Some(d) = ms("handshakeTimeoutMs", 100, 600_000)? {
                server.handshake_timeout = d;
            }
            if let Some(d) = ms("closeTimeoutMs", 10, 60_000)? {
                server.close_timeout = d;
            }
            if let Some(d) = ms("gracePeriodMs", 0, 86_400_000)? {
                h.grace_period = d;
            }
            if let Some(d) = ms("appConnectTimeoutMs", 100, 600_000)? {
                h.app_connect_timeout = d;
            }
            if let Some(d) = ms("appReconnectGraceMs", 0, 600_000)? {
                h.app_reconnect_grace = d;
            }
            if let Some(d) = ms("webhookTimeoutMs", 100, 600_000)? {
                h.webhook_timeout = d;
            }
            if let Some(n) = number(t, "timings.", "webhookAttempts", 1, 10)? {
                h.webhook_attempts = n as u32;
            }
            if let Some(d) = ms("webhookBackoffMs", 0, 600_000)? {
                h.webhook_backoff = d;
            }
            if let Some(n) = number(t, "timings.", "restartAttempts", 0, 100)? {
                h.restart_attempts = n as u32;
            }
            if let Some(d) = ms("restartBackoffMs", 0, 600_000)? {
                h.restart_backoff = d;
            }
            if let Some(d) = ms("pingIntervalMs", 0, 3_600_000)? {
                server.ping_interval = (!d.is_zero()).then_some(d);
            }
            if let Some(d) = ms("idleTimeoutMs", 1_000, 3_600_000)? {
                server.idle_timeout = d;
            }
            if let Some(d) = ms("glassesInitTimeoutMs", 100, 600_000)? {
                h.glasses_init_timeout = d;
            }
        }
        Ok(Config {
            listen,
            server,
            hub,
            state_dir,
            dev_secret,
        })
    }

    /// `AUGMENTOS_AUTH_JWT_SECRET`, when set, overrides the configured secret.
    pub fn apply_env(&mut self) {
        if let Ok(s) = std::env::var("AUGMENTOS_AUTH_JWT_SECRET") {
            if !s.is_empty() {
                self.dev_secret = s == DEV_SECRET;
                self.hub.jwt_secret = s.into_bytes();
            }
        }
    }
}

fn parse_app(v: &Value, p: &str) -> Result<AppSpec, String> {
    let m = object(v, p.trim_end_matches('.'))?;
    known_keys(
        m,
        p,
        &[
            "packageName",
            "name",
            "publicUrl",
            "hashedApiKey",
            "isSystemApp",
            "permissions",
            "allowedAddresses",
        ],
    )?;
    let string = |k: &str| -> Result<String, String> {
        match m.get(k) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            _ => Err(format!("{p}{k}: expected a non-empty string")),
        }
    };
    let strings = |k: &str| -> Result<Vec<String>, String> {
        match m.get(k) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("{p}{k}: expected strings"))
                })
                .collect(),
            Some(_) => Err(format!("{p}{k}: expected an array of strings")),
        }
    };
    let package_name = string("packageName")?;
    if package_name.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(format!(
            "{p}packageName: '{package_name}' may not contain spaces or '/'"
        ));
    }
    let public_url = string("publicUrl")?;
    let (webhook_target, webhook_path) =
        parse_http_url(&public_url).map_err(|e| format!("{p}publicUrl: {e}"))?;
    let hashed_api_key = string("hashedApiKey")?.to_ascii_lowercase();
    if hashed_api_key.len() != 64 || !hashed_api_key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{p}hashedApiKey: expected 64 hex characters (run `augmentos-edge hash-key KEY`)"
        ));
    }
    let is_system_app = match m.get("isSystemApp") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(format!("{p}isSystemApp: expected true or false")),
    };
    let permissions = strings("permissions")?;
    if let Some(bad) = permissions
        .iter()
        .find(|x| !PERMISSIONS.contains(&x.as_str()))
    {
        return Err(format!(
            "{p}permissions: unknown permission '{bad}' (known: {})",
            PERMISSIONS.join(", ")
        ));
    }
    let allowed_addresses = strings("allowedAddresses")?;
    for a in &allowed_addresses {
        if a != "unix" && a != "in-process" && a.parse::<std::net::IpAddr>().is_err() {
            return Err(format!(
                "{p}allowedAddresses: '{a}' is not an IP address, 'unix' or 'in-process'"
            ));
        }
    }
    Ok(AppSpec {
        package_name,
        name: string("name")?,
        public_url,
        webhook_target,
        webhook_path,
        hashed_api_key,
        is_system_app,
        permissions,
        allowed_addresses,
    })
}

fn object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, String> {
    v.as_object().ok_or_else(|| {
        if path.is_empty() {
            "the config must be a JSON object".to_string()
        } else {
            format!("{path}: expected an object")
        }
    })
}

fn known_keys(m: &Map<String, Value>, prefix: &str, known: &[&str]) -> Result<(), String> {
    match m.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "unknown key '{prefix}{k}' (known: {})",
            known.join(", ")
        )),
        None => Ok(()),
    }
}

fn number(
    m: &Map<String, Value>,
    prefix: &str,
    key: &str,
    lo: u64,
    hi: u64,
) -> Result<Option<u64>, String> {
    match m.get(key) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
            _ => Err(format!(
                "{prefix}{key}: expected an integer from {lo} to {hi}, got {v}"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_loopback() {
        let c = Config::embedded();
        assert_eq!(
            c.listen,
            vec![ListenSpec::Tcp("127.0.0.1:8002".parse().unwrap())]
        );
        assert!(!c.server.echo);
    }

    const APP: &str = r#"{"packageName": "com.x", "name": "X", "publicUrl": "http://127.0.0.1:3000",
        "hashedApiKey": "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"}"#;

    /// A valid app entry with one field replaced or added.
    fn app_with(field: &str) -> String {
        let key = field.split('"').nth(1).unwrap_or("");
        let mut v: serde_json::Value = serde_json::from_str(APP).unwrap();
        let extra: serde_json::Value = serde_json::from_str(&format!("{{{field}}}")).unwrap();
        v.as_object_mut()
            .unwrap()
            .insert(key.into(), extra[key].clone());
        format!(r#"{{"apps": [{v}]}}"#)
    }

    #[test]
    fn apps_are_parsed() {
        let c = Config::from_json(&format!(
            r#"{{"apps": [{APP}], "jwtSecret": "0123456789abcdef0"}}"#
        ))
        .unwrap();
        assert_eq!(c.hub.apps[0].webhook_target.port, 3000);
        assert!(!c.hub.apps[0].is_system_app);
        assert!(!c.dev_secret);
        assert!(Config::embedded().dev_secret);
    }

    #[test]
    fn errors_name_the_key() {
        let owned: Vec<(String, &str)> = vec![
            (
                app_with("\"publicUrl\": \"https://x\""),
                "apps[0].publicUrl: https URLs are not supported",
            ),
            (
                app_with("\"hashedApiKey\": \"abc\""),
                "apps[0].hashedApiKey: expected 64 hex",
            ),
            (
                app_with("\"permissions\": [\"MIC\"]"),
                "apps[0].permissions: unknown permission 'MIC'",
            ),
            (
                app_with("\"allowedAddresses\": [\"somewhere\"]"),
                "apps[0].allowedAddresses: 'somewhere'",
            ),
            (app_with("\"colour\": 1"), "unknown key 'apps[0].colour'"),
            (format!(r#"{{"apps": [{APP}, {APP}]}}"#), "listed twice"),
        ];
        let mut cases: Vec<(&str, &str)> = vec![
            (r#"{"lsten": []}"#, "unknown key 'lsten'"),
            (
                r#"{"limits": {"maxFrame": 1}}"#,
                "unknown key 'limits.maxFrame'",
            ),
            (
                r#"{"limits": {"maxFrameBytes": 1}}"#,
                "limits.maxFrameBytes: expected an integer",
            ),
            (r#"{"listen": ["nowhere"]}"#, "listen[0]: 'nowhere'"),
            (
                r#"{"echoRoute": "yes"}"#,
                "echoRoute: expected true or false",
            ),
            (
                r#"{"timings": {"closeTimeoutMs": -1}}"#,
                "timings.closeTimeoutMs",
            ),
            ("[1]", "must be a JSON object"),
            (
                r#"{"publicWsUrl": "http://x"}"#,
                "publicWsUrl: expected a ws://",
            ),
            (
                r#"{"jwtSecret": "short"}"#,
                "jwtSecret: expected a string of at least 16",
            ),
            (
                r#"{"apps": [{"packageName": "a"}]}"#,
                "apps[0].publicUrl: expected a non-empty string",
            ),
        ];
        cases.extend(owned.iter().map(|(j, w)| (j.as_str(), *w)));
        for (json, want) in cases {
            let err = Config::from_json(json).unwrap_err();
            assert!(err.contains(want), "{json}: {err}");
        }
    }

    #[test]
    fn values_are_applied() {
        let c = Config::from_json(
            r#"{"listen": ["[::1]:9000", "unix:/tmp/x.sock"], "echoRoute": true,
                "limits": {"maxMessageBytes": 1000}, "timings": {"handshakeTimeoutMs": 500}}"#,
        )
        .unwrap();
        assert_eq!(c.listen[1], ListenSpec::Unix("/tmp/x.sock".into()));
        assert!(c.server.echo);
        assert_eq!(c.server.ws.max_message, 1000);
        assert_eq!(c.server.handshake_timeout, Duration::from_millis(500));
    }
}
