//! The reference Prometheus text parser (the Python client's, `tests/requirements.txt`), for
//! tests that check `/metrics` is valid exposition text rather than comparing strings.

// Not every test file uses every helper.
#![allow(dead_code)]

use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};

/// Parse `text` with the reference parser and return each sample as `[name, labels, value]`;
/// `None` when that parser is not installed (outside CI only: under `CI=true` a missing parser
/// fails the test).
pub fn parse(text: &str) -> Option<Value> {
    const SCRIPT: &str = "import sys, json\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        out = []\n\
        for f in text_string_to_metric_families(sys.stdin.read()):\n\
        \x20   for s in f.samples:\n\
        \x20       out.append([s.name, s.labels, s.value])\n\
        print(json.dumps(out))\n";
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let has_parser = Command::new("python3")
        .args(["-c", "import prometheus_client"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_parser {
        assert!(
            !ci,
            "CI needs python3 with prometheus-client (tests/requirements.txt)"
        );
        eprintln!("skipped: python3 with prometheus-client is not installed");
        return None;
    }
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write the exposition");
    let out = child.wait_with_output().expect("the parser finishes");
    assert!(
        out.status.success(),
        "the reference parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("the parser's JSON"))
}

/// The value of the sample `name` whose labels include every pair of `labels` (0 if absent).
pub fn value(samples: &Value, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s[0] == name)
        .filter(|s| labels.iter().all(|(k, v)| s[1][*k] == *v))
        .map(|s| s[2].as_f64().unwrap_or(0.0))
        .sum()
}
