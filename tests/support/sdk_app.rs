//! Test support for the tests that run a real `@mentra/sdk` app script under Node against the
//! real `augmentos-edge` binary (`tests/sdk_https.rs`, `tests/sdk_speech.rs`,
//! `tests/dashboard.rs`).
//!
//! [`with_node`] skips a test whose tools are missing (fails it under `CI=true`), installs the
//! app's `node_modules` on first use, runs the scenario in a fresh temporary directory and, on
//! error, panics with the tails of its logs. [`start_box`] runs the binary on a config,
//! [`start_app`] a `node` script given its port, package and key, [`glasses`] connects glasses
//! with a token from the CLI.
//!
//! Invariants: every wait has a deadline ([`STEP`]); every process is a [`Proc`], killed on drop.

#![allow(dead_code)]

use crate::captions::{cli, tail, Glasses, Proc, TempDir, R, STEP};
use crate::tools::{npm_ci, runs, skip};
use serde_json::{json, Value};
use std::ffi::OsStr;
use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

/// Runs `scenario(repo root, temporary directory)` once `tools` all run and `app_dir` (from the
/// repo root) has its `node_modules`; on error, panics with the tails of `logs` (files in the
/// temporary directory). Missing tools skip the test with a message naming `what`.
pub fn with_node(
    what: &str,
    tools: &[&str],
    app_dir: &str,
    logs: &[&str],
    scenario: impl FnOnce(&Path, &Path) -> R,
) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| !runs(Command::new(t).arg("--version")))
        .collect();
    if !missing.is_empty() {
        return skip(&format!(
            "{what} test skipped: missing {}",
            missing.join(", ")
        ));
    }
    npm_ci(&root.join(app_dir), "@mentra/sdk/package.json").unwrap();
    let dir = TempDir::new().unwrap();
    if let Err(e) = scenario(&root, &dir.0) {
        panic!("{e}{}", log_tails(&dir.0, logs));
    }
}

/// The last 40 lines of each of `files` in `dir`, each under its name.
pub fn log_tails(dir: &Path, files: &[&str]) -> String {
    files
        .iter()
        .map(|f| format!("\n--- {f} (tail)\n{}", tail(&dir.join(f), 40)))
        .collect()
}

/// The binary on `config` (written to `dir/edge.json`, returned), once it listens on `port`.
pub fn start_box(dir: &Path, config: &Value, port: u16) -> R<(Proc, PathBuf)> {
    let path = dir.join("edge.json");
    fs::write(&path, config.to_string()).map_err(|e| e.to_string())?;
    let server = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_augmentos-edge"))
            .args(["serve", "--config"])
            .arg(&path),
        dir,
        "server",
    )?;
    let deadline = Instant::now() + STEP;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("the server did not listen".into());
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok((server, path))
}

/// `node <script>` in `app_dir` as package `package` with key `key` on `port` (and `env`),
/// once it reports `listening`; its output goes to `dir/<name>.stdout` and `.stderr`.
#[allow(clippy::too_many_arguments)]
pub fn start_app(
    app_dir: &Path,
    script: &str,
    dir: &Path,
    name: &str,
    port: u16,
    package: &str,
    key: &str,
    env: &[(&str, &OsStr)],
) -> R<Proc> {
    let mut app = Proc::spawn(
        Command::new("node")
            .arg(script)
            .current_dir(app_dir)
            .env("PORT", port.to_string())
            .env("PACKAGE_NAME", package)
            .env("API_KEY", key)
            .envs(env.iter().copied()),
        dir,
        name,
    )?;
    app.wait_event("listening", STEP)?;
    Ok(app)
}

/// Glasses of `user` (a token from the CLI on `config`) on `port`, `connection_init` sent.
pub fn glasses(port: u16, config: &Path, user: &str, log: &Path) -> R<Glasses> {
    let token = cli(&[
        "token",
        "--user",
        user,
        "--config",
        &config.to_string_lossy(),
    ])?;
    let mut g = Glasses::connect(port, &token, log)?;
    g.send(json!({"type": "connection_init"}))?;
    Ok(g)
}
