//! https webhooks, judged by the real, unmodified `@mentra/sdk@2.1.29`.
//!
//! `real_sdk_app_started_over_https`: a test CA and a leaf for 127.0.0.1 it signed are made
//! here (rcgen); the app `tests/sdk/https.mjs` serves the SDK's express app with Node's own
//! `https` server on that leaf. The `augmentos-edge` binary's config lists the app three times:
//! - `com.example.https` at `https://127.0.0.1:<port>` with `caFile` the test CA: the glasses start it, the box's webhook
//!   goes over TLS (SNI and the certificate checked against 127.0.0.1), the SDK connects back
//!   and gets its ack (its `onSession` runs), `webhooks_total{outcome="ok"}` counts it; the
//!   app's own `tpa_config.json` is fetched over the same TLS client, and after a stop and a new
//!   start the SDK's `session.settings` hold the file's `theme` beside the config's `fontSize`
//!   (the config's default wins over the file's);
//! - `com.example.wrongca` at the same URL with `caFile` another CA: its start fails at the handshake, the SDK
//!   never hears of it; the log names the package and the reason (`unknown issuer`),
//!   `webhooks_total{outcome="tls"}` and `refusals_total{code="WEBHOOK_TLS"}` count it;
//! - `com.example.wrongname` at `https://localhost:<port>` with the right CA: the certificate is
//!   for 127.0.0.1 only, so the handshake fails as `not valid for the host name`.
//!
//! `https_config_errors` (no Node needed): a `caFile` that is missing, or holds no certificate,
//! or given for an `http://` URL stops the binary at start with a message naming the key.
//!
//! Needs `node` and `npm`; `tests/sdk/node_modules` is installed with `npm ci` on first use.
//! Without them the first test prints a message and passes, except under `CI=true`.

#[path = "support/captions.rs"]
mod captions;
#[path = "support/ports.rs"]
mod ports;
#[path = "support/sdk_app.rs"]
mod sdk_app;
#[path = "support/tools.rs"]
mod tools;

use captions::{free_port, sha256_hex, TempDir, R, STEP};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::{json, Value};
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

const GOOD: &str = "com.example.https";
const WRONG: &str = "com.example.wrongca";
const WRONG_NAME: &str = "com.example.wrongname";
const APP_KEY: &str = "https-test-key-0123456789";
const USER: &str = "tls@example.com";
const SECRET: &str = "test-secret-https-123";

/// A fresh CA: (its PEM, the issuer to sign with).
fn ca(name: &str) -> (String, CertifiedIssuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
        .expect("CA certificate");
    (ca.pem(), ca)
}

/// Writes ca.pem, wrong-ca.pem, chain.pem (a leaf for 127.0.0.1 only signed by ca.pem, then the
/// CA) and key.pem into `dir`.
fn issue(dir: &Path) -> R {
    let (ca_pem, issuer) = ca("https test CA");
    let (wrong_pem, _) = ca("another CA");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("leaf params")
        .signed_by(&leaf_key, &issuer)
        .expect("leaf certificate");
    for (name, pem) in [
        ("ca.pem", ca_pem.clone()),
        ("wrong-ca.pem", wrong_pem),
        ("chain.pem", format!("{}{ca_pem}", leaf.pem())),
        ("key.pem", leaf_key.serialize_pem()),
    ] {
        fs::write(dir.join(name), pem).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn metrics(port: u16) -> R<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(STEP)).map_err(|e| e.to_string())?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    Ok(text)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

fn app_entry(package: &str, app_port: u16, ca_file: &Path) -> Value {
    app_at(package, &format!("https://127.0.0.1:{app_port}"), ca_file)
}

fn app_at(package: &str, url: &str, ca_file: &Path) -> Value {
    json!({
        "packageName": package, "name": package,
        "settings": [{"key": "fontSize", "type": "slider", "label": "Size", "defaultValue": 24}],
        "publicUrl": url,
        "caFile": ca_file,
        "hashedApiKey": sha256_hex(APP_KEY),
    })
}

#[test]
fn real_sdk_app_started_over_https() {
    let logs = ["server.stderr", "app.stdout", "app.stderr", "glasses.log"];
    sdk_app::with_node("https", &["node", "npm"], "tests/sdk", &logs, over_https);
}

fn over_https(root: &Path, dir: &Path) -> R {
    issue(dir)?;
    let (port, app_port) = (free_port()?, free_port()?);
    let config = json!({
        "listen": [format!("127.0.0.1:{port}")],
        "publicWsUrl": format!("ws://127.0.0.1:{port}"),
        "jwtSecret": SECRET,
        "apps": [
            app_entry(GOOD, app_port, &dir.join("ca.pem")),
            app_entry(WRONG, app_port, &dir.join("wrong-ca.pem")),
            // The right CA, but the certificate is for 127.0.0.1, not for this name.
            app_at(WRONG_NAME, &format!("https://localhost:{app_port}"), &dir.join("ca.pem")),
        ],
    });
    let (server, config_path) = sdk_app::start_box(dir, &config, port)?;
    let (cert, key) = (dir.join("chain.pem"), dir.join("key.pem"));
    let mut app = sdk_app::start_app(
        &root.join("tests/sdk"),
        "https.mjs",
        dir,
        "app",
        app_port,
        GOOD,
        APP_KEY,
        &[("CERT", cert.as_os_str()), ("KEY", key.as_os_str())],
    )?;
    let mut g = sdk_app::glasses(port, &config_path, USER, &dir.join("glasses.log"))?;

    // The trusted CA: the webhook arrives over TLS and the SDK joins the session.
    g.send(json!({"type": "start_app", "packageName": GOOD}))?;
    let session = app.wait_event("session", STEP)?;
    if session["userId"] != USER {
        return Err(format!("session event {session}"));
    }
    // The SDK answers its webhook once it joined: the outcome follows the session.
    let deadline = Instant::now() + STEP;
    while metric(
        &metrics(port)?,
        r#"augmentos_edge_webhooks_total{outcome="ok"}"#,
    ) < 1.0
    {
        if Instant::now() > deadline {
            return Err("the https webhook is not counted ok".into());
        }
        thread::sleep(Duration::from_millis(50));
    }

    // Its tpa_config.json came over the same TLS client: stopped and started again, the SDK
    // reads the file's setting beside the config's (which wins for fontSize).
    let deadline = Instant::now() + STEP;
    while metric(
        &metrics(port)?,
        r#"augmentos_edge_app_config_fetches_total{outcome="ok"}"#,
    ) < 1.0
    {
        if Instant::now() > deadline {
            return Err("tpa_config.json not fetched".into());
        }
        thread::sleep(Duration::from_millis(50));
    }
    g.send(json!({"type": "stop_app", "packageName": GOOD}))?;
    thread::sleep(Duration::from_millis(500));
    g.send(json!({"type": "start_app", "packageName": GOOD}))?;
    let session = app.wait_event("session", STEP)?;
    let value = |key: &str| {
        session["settings"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["key"] == key))
            .map(|s| s["value"].clone())
    };
    if value("theme") != Some(json!("dark")) || value("fontSize") != Some(json!(24)) {
        return Err(format!("the SDK's settings: {}", session["settings"]));
    }

    // Another CA: the handshake fails, with its reason in the log and the metrics.
    g.send(json!({"type": "start_app", "packageName": WRONG}))?;
    let deadline = Instant::now() + STEP;
    loop {
        let text = metrics(port)?;
        let tls = metric(&text, r#"augmentos_edge_webhooks_total{outcome="tls"}"#);
        let refused = metric(
            &text,
            r#"augmentos_edge_refusals_total{code="WEBHOOK_TLS"}"#,
        );
        if tls >= 1.0 && refused >= 1.0 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no tls outcome counted (tls {tls}, refusals {refused})"
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
    let log = fs::read_to_string(dir.join("server.stderr")).unwrap_or_default();
    let line = log
        .lines()
        .find(|l| l.contains("event=webhook_failed") && l.contains(WRONG))
        .ok_or("no webhook_failed line for the app with the wrong CA")?;
    if !line.contains("unknown issuer") {
        return Err(format!("the log gives no reason: {line}"));
    }

    // The name checked is the URL's host (sent as SNI): `localhost` is not in the certificate.
    g.send(json!({"type": "start_app", "packageName": WRONG_NAME}))?;
    let deadline = Instant::now() + STEP;
    let line = loop {
        let log = fs::read_to_string(dir.join("server.stderr")).unwrap_or_default();
        if let Some(l) = log
            .lines()
            .find(|l| l.contains("event=webhook_failed") && l.contains(WRONG_NAME))
        {
            break l.to_string();
        }
        if Instant::now() > deadline {
            return Err("no webhook_failed line for the app at the wrong name".into());
        }
        thread::sleep(Duration::from_millis(50));
    };
    if !line.contains("not valid for the host name") {
        return Err(format!("the log gives no reason: {line}"));
    }
    // The SDK never heard of that start; the first app's session is still the only one.
    if let Some(ev) = app.drain().into_iter().find(|e| e["event"] == "session") {
        return Err(format!("a second session reached the app: {ev}"));
    }
    drop(server);
    Ok(())
}

#[test]
fn https_config_errors() {
    let dir = TempDir::new().unwrap();
    issue(&dir.0).unwrap();
    fs::write(dir.0.join("empty.pem"), "no certificate here\n").unwrap();
    let cases = [
        (
            app_entry(GOOD, 1, &dir.0.join("missing.pem")),
            "apps[0].caFile: CA file",
        ),
        (
            app_entry(GOOD, 1, &dir.0.join("empty.pem")),
            "apps[0].caFile: CA file",
        ),
        (
            json!({"packageName": GOOD, "name": GOOD, "publicUrl": "http://127.0.0.1:1",
                "caFile": dir.0.join("ca.pem"), "hashedApiKey": sha256_hex(APP_KEY)}),
            "apps[0].caFile: only for an https:// publicUrl",
        ),
    ];
    for (app, want) in cases {
        let path = dir.0.join("bad.json");
        fs::write(&path, json!({"apps": [app]}).to_string()).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_augmentos-edge"))
            .args(["serve", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{want}: started anyway");
        assert!(err.contains(want), "{want}: {err}");
    }
}
