//! Config layer: the JSON configuration file and the embedded default.
//!
//! Owns parsing and validation only. Invariants: every key is known (an unknown key is an
//! error naming it, with its path), every value is range-checked, and a loaded [`Config`] is
//! complete (defaults filled in), so nothing downstream re-validates.

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
}

/// The configuration used when no file is given: loopback only.
pub const EMBEDDED_DEFAULT: &str = r#"{
  "listen": ["127.0.0.1:8002"],
  "echoRoute": false
}"#;

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
        known_keys(top, "", &["listen", "echoRoute", "limits", "timings"])?;
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
            if let Some(n) = get(
                "maxConnections",
                1,
                crate::server::conn::MAX_INDEX as u64 - 1,
            )? {
                server.max_connections = n as usize;
            }
        }
        if let Some(t) = top.get("timings") {
            let t = object(t, "timings")?;
            known_keys(t, "timings.", &["handshakeTimeoutMs", "closeTimeoutMs"])?;
            if let Some(n) = number(t, "timings.", "handshakeTimeoutMs", 100, 600_000)? {
                server.handshake_timeout = Duration::from_millis(n);
            }
            if let Some(n) = number(t, "timings.", "closeTimeoutMs", 10, 60_000)? {
                server.close_timeout = Duration::from_millis(n);
            }
        }
        Ok(Config { listen, server })
    }
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

    #[test]
    fn errors_name_the_key() {
        let cases = [
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
        ];
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
