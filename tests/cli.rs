//! The command line as an operator meets it: `hash-key`, `token`, `app-token` against a real
//! config file, config errors that name the key, and usage errors — by running the binary.

use augmentos_edge::auth::{self, jwt};
use std::process::Command;

fn edge(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_augmentos-edge"))
        .args(args)
        .env_remove("AUGMENTOS_AUTH_JWT_SECRET")
        .output()
        .expect("run augmentos-edge");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn config_file(name: &str, json: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("edge-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("edge.json");
    std::fs::write(&path, json).expect("write config");
    path
}

const SECRET: &str = "cli-test-secret-0123456789";

#[test]
fn hash_key_prints_the_sha256_hex() {
    let (code, out, _) = edge(&["hash-key", "my-api-key"]);
    assert_eq!(code, 0);
    assert_eq!(out, auth::hash_api_key("my-api-key"));
    assert_eq!(out.len(), 64);
}

#[test]
fn tokens_verify_with_the_configured_secret() {
    let hashed = auth::hash_api_key("k1");
    let cfg = config_file(
        "tokens",
        &format!(
            r#"{{"jwtSecret": "{SECRET}", "apps": [{{"packageName": "com.x.app", "name": "X",
                "publicUrl": "http://127.0.0.1:3000", "hashedApiKey": "{hashed}"}}]}}"#
        ),
    );
    let cfg = cfg.to_str().expect("utf-8 path");
    let (code, token, err) = edge(&["token", "--user", "gus@example.com", "--config", cfg]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        jwt::glasses_user(&token, SECRET.as_bytes(), 0).as_deref(),
        Ok("gus@example.com")
    );
    let (code, app_token, err) = edge(&["app-token", "--package", "com.x.app", "--config", cfg]);
    assert_eq!(code, 0, "{err}");
    let (package, binding) =
        jwt::verify_app_token(&app_token, SECRET.as_bytes(), 0).expect("valid app token");
    assert_eq!(package, "com.x.app");
    assert_eq!(binding, jwt::app_key_binding(&hashed));
    let (code, _, err) = edge(&["app-token", "--package", "com.missing", "--config", cfg]);
    assert_eq!(code, 2);
    assert!(err.contains("no app 'com.missing'"), "{err}");
    let _ = std::fs::remove_dir_all(std::path::Path::new(cfg).parent().expect("dir"));
}

#[test]
fn bad_config_is_refused_naming_the_key() {
    let cfg = config_file(
        "bad",
        r#"{"listen": ["127.0.0.1:0"], "timings": {"gracePeriod": 5}}"#,
    );
    let (code, _, err) = edge(&["serve", "--config", cfg.to_str().expect("utf-8 path")]);
    let _ = std::fs::remove_dir_all(cfg.parent().expect("dir"));
    assert_eq!(code, 2);
    assert!(err.contains("unknown key 'timings.gracePeriod'"), "{err}");
    let (code, _, err) = edge(&["serve", "--config", "/nonexistent/edge.json"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot read config /nonexistent/edge.json"),
        "{err}"
    );
}

#[test]
fn usage_errors_exit_2_with_the_usage() {
    for args in [
        &["frobnicate"][..],
        &["hash-key"][..],
        &["token"][..],
        &["serve", "--port", "1"][..],
    ] {
        let (code, _, err) = edge(args);
        assert_eq!(code, 2, "{args:?}");
        assert!(
            err.contains("usage:") || err.contains("needs"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn check_config_prints_the_effective_config_with_secrets_masked() {
    let hashed = auth::hash_api_key("k1");
    let cfg = config_file(
        "check",
        &format!(
            r#"{{"jwtSecret": "{SECRET}", "timings": {{"gracePeriodMs": 1234}},
                "ui": {{"enabled": true, "operatorToken": "operator-token-not-to-print"}},
                "apps": [{{"packageName": "com.x.app", "name": "X",
                "publicUrl": "http://127.0.0.1:3000", "hashedApiKey": "{hashed}"}}]}}"#
        ),
    );
    let path = cfg.to_str().expect("utf-8 path");
    let (code, out, err) = edge(&["check-config", path]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains(SECRET), "the secret is printed: {out}");
    assert!(!out.contains(&hashed), "the key hash is printed: {out}");
    assert!(
        !out.contains("operator-token-not-to-print"),
        "the operator token is printed"
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["timings"]["gracePeriodMs"], 1234, "the file's value");
    assert_eq!(v["timings"]["closeTimeoutMs"], 2000, "a default filled in");
    assert_eq!(v["listen"][0], "127.0.0.1:8002");
    assert_eq!(v["apps"][0]["packageName"], "com.x.app");
    assert_eq!(v["apps"][0]["hashedApiKey"], "<masked>");
    assert_eq!(v["ui"]["enabled"], true);
    assert!(v["jwtSecret"]
        .as_str()
        .is_some_and(|s| s.starts_with("<masked")));

    std::fs::write(&cfg, r#"{"listen": [{"address": "127.0.0.1:0", "tls": {"certificate": "/nonexistent/c.pem", "key": "/nonexistent/k.pem"}}]}"#)
        .expect("write");
    let (code, _, err) = edge(&["check-config", path]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/c.pem"), "{err}");
    let _ = std::fs::remove_dir_all(cfg.parent().expect("dir"));
}

#[test]
fn version_and_help_on_every_command() {
    let (code, out, _) = edge(&["--version"]);
    assert_eq!(code, 0);
    assert_eq!(out, format!("augmentos-edge {}", env!("CARGO_PKG_VERSION")));
    for cmd in [
        "serve",
        "check-config",
        "hash-key",
        "token",
        "app-token",
        "help",
    ] {
        let (code, out, err) = edge(&[cmd, "--help"]);
        assert_eq!(code, 0, "{cmd}: {err}");
        assert!(
            out.starts_with(&format!("usage: augmentos-edge {cmd}")),
            "{cmd}: {out}"
        );
    }
    let (code, _, err) = edge(&["check-config"]);
    assert_eq!(code, 2);
    assert!(err.contains("check-config needs FILE"), "{err}");
}

#[test]
fn the_public_operator_token_goes_with_the_public_secret() {
    let cfg = config_file("ui-dev", r#"{"ui": {"enabled": true}}"#);
    let path = cfg.to_str().expect("utf-8 path");
    let (code, out, err) = edge(&["check-config", path]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["ui"]["enabled"], true);
    assert!(v["ui"]["operatorToken"]
        .as_str()
        .is_some_and(|s| s.contains("PUBLIC")));
    // A real secret from the environment turns the pages off rather than keep a public token.
    let out = Command::new(env!("CARGO_BIN_EXE_augmentos-edge"))
        .args(["check-config", path])
        .env("AUGMENTOS_AUTH_JWT_SECRET", SECRET)
        .output()
        .expect("run augmentos-edge");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["ui"]["enabled"], false);
    assert_eq!(v["ui"]["operatorToken"], serde_json::Value::Null);
}

#[test]
fn tokens_expire_after_the_configured_lifetime_or_expires() {
    let cfg = config_file(
        "expiring",
        &format!(r#"{{"jwtSecret": "{SECRET}", "tokens": {{"lifetimeSeconds": 3600}}}}"#),
    );
    let cfg = cfg.to_str().expect("utf-8 path");
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
    };
    for (extra, life) in [(&[][..], 3600), (&["--expires", "90s"][..], 90)] {
        let mut args = vec!["token", "--user", "ivy@example.com", "--config", cfg];
        args.extend_from_slice(extra);
        let (code, token, err) = edge(&args);
        assert_eq!(code, 0, "{err}");
        let claims = jwt::verify(&token, SECRET.as_bytes(), now()).expect("valid");
        let exp = claims["exp"].as_u64().expect("exp");
        let iat = claims["iat"].as_u64().expect("iat");
        assert_eq!(exp - iat, life, "{extra:?}");
        assert!(iat.abs_diff(now()) < 60);
    }
    let _ = std::fs::remove_dir_all(std::path::Path::new(cfg).parent().expect("dir"));
}

#[test]
fn device_commands_say_why_they_cannot_reach_the_box() {
    let cfg = config_file("devices-off", &format!(r#"{{"jwtSecret": "{SECRET}"}}"#));
    let path = cfg.to_str().expect("utf-8 path");
    let (code, _, err) = edge(&["device", "list", "--config", path]);
    assert_eq!(code, 2);
    assert!(err.contains("ui.enabled"), "{err}");
    // The pages on, but no box running on the config's listener.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    std::fs::write(
        &cfg,
        format!(
            r#"{{"jwtSecret": "{SECRET}", "listen": ["127.0.0.1:{port}"],
                "ui": {{"enabled": true, "operatorToken": "operator-token-0123456789"}}}}"#
        ),
    )
    .expect("write");
    let (code, _, err) = edge(&["device", "revoke", "desk-1", "--config", path]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot reach the running box"), "{err}");
    let (code, _, err) = edge(&["device", "revoke", "a/b", "--config", path]);
    assert_eq!(code, 2);
    assert!(err.contains("no device can be named"), "{err}");
    let _ = std::fs::remove_dir_all(cfg.parent().expect("dir"));
}
