//! The load generator as a shipped tool: a two-second `edge-load route` run against the real
//! server binary, checking that it sets up, drives, and writes a JSON report that says what
//! happened. It asserts no speed (speed belongs to BENCHMARKS.md, not to tests).

use std::process::Command;

#[test]
fn a_short_route_run_writes_a_json_report_with_nothing_lost() {
    let json = std::env::temp_dir().join(format!("edge-load-smoke-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_edge-load"))
        .args(["route", "--sessions", "2", "--apps", "2", "--seconds", "2"])
        .args(["--rate", "2000", "--json"])
        .arg(&json)
        .output()
        .expect("run edge-load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "edge-load failed:\n{stdout}\n{stderr}"
    );
    let text = std::fs::read_to_string(&json).expect("the --json report");
    let _ = std::fs::remove_file(&json);
    let r: serde_json::Value = serde_json::from_str(&text).expect("the report is JSON");
    let delivered = r["delivered"].as_u64().expect("delivered");
    assert!(delivered > 0, "{text}");
    assert_eq!(r["lost"], 0, "{text}");
    assert_eq!(r["gaps"], 0, "{text}");
    assert_eq!(r["reordered"], 0, "{text}");
    assert_eq!(r["clean"], true, "{text}");
    // Every delivery was timed, and 2 apps got each of the messages sent.
    assert_eq!(
        r["latencyUs"]["samples"].as_u64(),
        Some(delivered),
        "{text}"
    );
    assert_eq!(r["sent"].as_u64().map(|s| s * 2), Some(delivered), "{text}");
    assert!(r["serverCpuSeconds"].as_f64().is_some(), "{text}");
    // The summary table says the same.
    assert!(
        stdout.contains(&format!(
            "delivered         {delivered} of {delivered}: lost 0"
        )),
        "{stdout}"
    );
}
