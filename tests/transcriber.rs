//! The on-box transcriber's own unit tests (`contrib/transcriber/test_*.py`), run as part of the
//! README's test command: the capped audio backlog, its metrics, the phrase list's language
//! model and its corrections, a missing or damaged Moonshine model file, and each recogniser
//! (Moonshine, PocketSphinx) on silence, noise, clipped speech, odd chunk sizes, lost audio
//! and the end of a stream.
//!
//! Needs `python3` with `moonshine_voice` and `pocketsphinx`
//! (`pip install -r contrib/transcriber/requirements.txt`); the speech cases also need
//! `espeak-ng` (Python skips them without it). Without the Python packages the test prints a
//! message and passes, except under `CI=true`, where it fails.

use std::path::Path;
use std::process::{Command, Stdio};

#[test]
fn transcriber_unit_tests() {
    let has_packages = Command::new("python3")
        .args(["-c", "import pocketsphinx, moonshine_voice"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_packages {
        let msg = "transcriber unit tests skipped: missing python3 with pocketsphinx and moonshine_voice \
                   (pip install -r contrib/transcriber/requirements.txt)";
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "{msg}; failing because CI=true"
        );
        eprintln!("{msg}");
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/transcriber");
    let out = Command::new("python3")
        .args(["-m", "unittest", "-v"])
        .current_dir(&dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run python3 -m unittest");
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "transcriber unit tests failed:\n{report}"
    );
    // A discovery that found nothing also exits 0: make sure the tests ran.
    assert!(
        report.contains("Ran ") && !report.contains("Ran 0 tests"),
        "{report}"
    );
    eprintln!("{}", report.lines().last().unwrap_or(""));
}
