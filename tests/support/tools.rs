//! Test support: the outside tools some tests need (node, npm, espeak-ng, chromium, …).
//!
//! A test whose tools are missing is skipped with a message, except under `CI=true`: `.ci/run`
//! installs them, so there a missing tool is a failure. Node packages a test needs are installed
//! with `npm ci` from the directory's own lockfile, once, on first use.

use std::path::Path;
use std::process::{Command, Stdio};

/// Whether `cmd` runs and exits successfully (its output discarded).
pub fn runs(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Says why a test is skipped; under `CI=true` fails it instead.
pub fn skip(msg: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}; failing because CI=true");
    }
    eprintln!("{msg}");
}

/// `npm ci` in `dir` unless `dir/node_modules/<marker>` is already there.
pub fn npm_ci(dir: &Path, marker: &str) -> Result<(), String> {
    let marker = dir.join("node_modules").join(marker);
    if marker.exists() {
        return Ok(());
    }
    eprintln!(
        "installing {}/node_modules with `npm ci` (first run only)",
        dir.display()
    );
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `npm ci` in {}: {e}", dir.display()))?;
    if !out.status.success() || !marker.exists() {
        return Err(format!(
            "`npm ci` in {} failed ({}):\n{}\n{}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}
