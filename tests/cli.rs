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
