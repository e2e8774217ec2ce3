//! Shell layer: `augmentos-edge device add|list|revoke` — a small blocking HTTP client of the
//! running box's operator API (`/ui/api/devices…`, bearer `ui.operatorToken` from the config).
//!
//! Why through the box and not the database: the running box holds the devices in memory and
//! is the one writer of its store, so a revoke made through it is in force inside the event
//! loop's turn that receives it (the pair is closed, any later reconnect refused) and is then
//! written by its store's writer; a second writer on the file would be seen only at the next
//! start. So these commands need the box running, with the `/ui/` pages enabled. They use its
//! first Unix listener, else its first plain TCP one (a TLS-only box: call the API with curl).
//! The token is printed only by `add` (the page shows it again on request).

use augmentos_edge::config::{Config, ListenSpec};
use augmentos_edge::time::{iso8601, Wall};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::time::Duration;

use crate::cli::DeviceAction;

/// Longest answer read from the box.
const MAX_ANSWER: u64 = 16 << 20;

pub fn run(action: DeviceAction, config: &Config) -> Result<(), String> {
    let token = config.server.operator_token.as_deref().ok_or(
        "device commands call the running box's operator API: set ui.enabled (and ui.operatorToken) in the config",
    )?;
    if let DeviceAction::Revoke { name } = &action {
        if !augmentos_edge::hub::devices::valid_device_name(name) {
            return Err(format!("no device can be named {name:?}"));
        }
    }
    let (method, path, body) = match &action {
        DeviceAction::Add { names, expires } => (
            "POST",
            "/ui/api/devices".to_string(),
            json!({ "names": names, "expiresSeconds": expires }).to_string(),
        ),
        DeviceAction::List => ("GET", "/ui/api/devices".to_string(), String::new()),
        DeviceAction::Revoke { name } => (
            "POST",
            format!("/ui/api/devices/{name}/revoke"),
            String::new(),
        ),
    };
    let (status, answer) = call(&config.listen, method, &path, token, &body)?;
    let v: Value = serde_json::from_str(&answer)
        .map_err(|_| format!("the box answered {status} with something other than JSON"))?;
    if status != 200 {
        let code = v["code"].as_str().unwrap_or("?");
        let message = v["message"].as_str().unwrap_or("");
        return Err(format!("the box refused ({status} {code}): {message}"));
    }
    let time = |t: &Value| match t.as_u64() {
        Some(s) => iso8601(Wall::from_micros(s.saturating_mul(1_000_000)))[..19].to_string() + "Z",
        None => "-".to_string(),
    };
    match action {
        DeviceAction::Add { .. } => {
            for d in v["devices"].as_array().into_iter().flatten() {
                println!(
                    "{}\t{}\texpires {}\t{}",
                    d["name"].as_str().unwrap_or(""),
                    d["userId"].as_str().unwrap_or(""),
                    time(&d["expires"]),
                    d["token"].as_str().unwrap_or("")
                );
            }
        }
        DeviceAction::List => {
            println!("NAME\tUSER\tCREATED\tEXPIRES\tLAST SEEN\tREVOKED");
            for d in v["devices"].as_array().into_iter().flatten() {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    d["name"].as_str().unwrap_or(""),
                    d["userId"].as_str().unwrap_or(""),
                    time(&d["created"]),
                    time(&d["expires"]),
                    time(&d["lastSeen"]),
                    time(&d["revoked"]),
                );
            }
        }
        DeviceAction::Revoke { name } => {
            println!("revoked {name} at {}", time(&v["device"]["revoked"]));
        }
    }
    Ok(())
}

/// One request to the box; its status and body.
fn call(
    listen: &[ListenSpec],
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> Result<(u16, String), String> {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let timeout = Some(Duration::from_secs(10));
    let unix = listen.iter().find_map(|l| match l {
        ListenSpec::Unix(p) => Some(p.clone()),
        _ => None,
    });
    let tcp = listen.iter().find_map(|l| match l {
        ListenSpec::Tcp(a) => {
            let mut a = *a;
            if a.ip().is_unspecified() {
                a.set_ip(if a.is_ipv4() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                });
            }
            Some(a)
        }
        _ => None,
    });
    let unreachable = |to: String, e: std::io::Error| {
        format!("cannot reach the running box at {to} ({e}); device commands need it running")
    };
    let mut raw = Vec::new();
    if let Some(path) = unix {
        let mut s = std::os::unix::net::UnixStream::connect(&path)
            .map_err(|e| unreachable(path.display().to_string(), e))?;
        s.set_read_timeout(timeout).map_err(|e| e.to_string())?;
        s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
        s.take(MAX_ANSWER)
            .read_to_end(&mut raw)
            .map_err(|e| e.to_string())?;
    } else if let Some(addr) = tcp {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| unreachable(addr.to_string(), e))?;
        s.set_read_timeout(timeout).map_err(|e| e.to_string())?;
        s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
        s.take(MAX_ANSWER)
            .read_to_end(&mut raw)
            .map_err(|e| e.to_string())?;
    } else {
        return Err("the config has no Unix or plain TCP listener to reach the box on".into());
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("the box's answer was cut short")?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("the box's answer has no status")?;
    Ok((status, body.to_string()))
}
