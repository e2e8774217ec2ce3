//! The load generator as a shipped tool: short `edge-load route` runs against the real server
//! binary (plain TCP, TLS, transcripts through a publishing system app), checking that each
//! sets up, drives, and writes a JSON report that says what happened; and `edge-load idle
//! --tls`, which reports TLS beside plain TCP; and `edge-load venue --transcriber`, the real
//! transcriber as the venue feed (needs `python3` with moonshine-voice; skipped with a message
//! without it, except under `CI=true`). They assert no speed
//! (speed belongs to BENCHMARKS.md, not to tests).

use serde_json::Value;
use std::process::Command;

/// Run `edge-load route ARGS --json FILE`; the report and the summary table.
fn route(name: &str, args: &[&str]) -> (Value, String) {
    let json = std::env::temp_dir().join(format!("edge-load-{name}-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_edge-load"))
        .arg("route")
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run edge-load");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "edge-load failed:\n{stdout}\n{stderr}"
    );
    let text = std::fs::read_to_string(&json).expect("the --json report");
    let _ = std::fs::remove_file(&json);
    (
        serde_json::from_str(&text).expect("the report is JSON"),
        stdout,
    )
}

/// Every message sent reached each of `apps` apps, in order, timed, and the table says so.
fn check_clean(r: &Value, stdout: &str, apps: u64) {
    let delivered = r["delivered"].as_u64().expect("delivered");
    assert!(delivered > 0, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["gaps"], 0, "{r}");
    assert_eq!(r["reordered"], 0, "{r}");
    assert_eq!(r["clean"], true, "{r}");
    assert_eq!(r["latencyUs"]["samples"].as_u64(), Some(delivered), "{r}");
    assert_eq!(r["sent"].as_u64().map(|s| s * apps), Some(delivered), "{r}");
    assert!(r["serverCpuSeconds"].as_f64().is_some(), "{r}");
    assert!(
        stdout.contains(&format!(
            "delivered         {delivered} of {delivered}: lost 0"
        )),
        "{stdout}"
    );
}

#[test]
fn a_short_route_run_writes_a_json_report_with_nothing_lost() {
    let args = [
        "--sessions",
        "2",
        "--apps",
        "2",
        "--seconds",
        "2",
        "--rate",
        "2000",
    ];
    let (r, stdout) = route("tcp", &args);
    check_clean(&r, &stdout, 2);
    assert_eq!(r["glassesTransport"], "tcp", "{r}");
}

#[test]
fn a_rush_of_starts_against_the_default_webhook_cap_sets_every_app_up() {
    // 40 starts at once; the box keeps at most 16 webhooks in flight to the app server.
    let args = [
        "--rush",
        "--sessions",
        "40",
        "--apps",
        "1",
        "--seconds",
        "1",
        "--rate",
        "100",
    ];
    let (r, stdout) = route("rush", &args);
    check_clean(&r, &stdout, 1);
    let rush = &r["rush"];
    assert!(rush["lastActiveSeconds"].as_f64().is_some(), "{r}");
    // The app server sees at most the 16 webhooks plus the one fetch of the app's own
    // tpa_config.json (one per app, not per session, and not a webhook).
    let peak = rush["webhooksInFlightPeak"].as_u64().expect("the peak");
    assert!((1..=16 + 1).contains(&peak), "{r}");
    let server = rush["server"].as_str().expect("the server's account");
    assert!(server.contains("0 failed;"), "{server}");
    assert!(
        stdout.contains("  rush              40 starts at once"),
        "{stdout}"
    );
    assert_eq!(r["emptyWebhookConnections"], 0, "{r}");
    assert_eq!(r["emptyWebhookConnectionsAfterStop"], 0, "{r}");
}

/// `--tls` writes its scratch certificate with the openssl command.
fn have_openssl() -> bool {
    let ok = Command::new("openssl").arg("version").output().is_ok();
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "openssl is missing under CI=true"
        );
        eprintln!("skipped: no openssl command (edge-load --tls writes its certificate with it)");
    }
    ok
}

#[test]
fn idle_over_tls_reports_tls_beside_plain_tcp() {
    if !have_openssl() {
        return;
    }
    let port = 20_000 + (std::process::id() % 20_000) as u16;
    let out = Command::new(env!("CARGO_BIN_EXE_edge-load"))
        .args([
            "idle",
            "--conns",
            "40",
            "--tls",
            "--port",
            &port.to_string(),
        ])
        .output()
        .expect("run edge-load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].starts_with("idle connections: 40 in"), "{stdout}");
    assert!(
        lines[1].starts_with("idle connections over TLS: 40 in"),
        "{stdout}"
    );
    assert!(lines.iter().all(|l| l.ends_with("bytes each")), "{stdout}");
}

#[test]
fn a_short_tls_run_drives_glasses_and_apps_over_tls() {
    if !have_openssl() {
        return;
    }
    let args = ["--tls", "--sessions", "2", "--apps", "2", "--seconds", "1"];
    let (r, stdout) = route("tls", &[&args[..], &["--rate", "2000"]].concat());
    check_clean(&r, &stdout, 2);
    assert_eq!(r["glassesTransport"], "tls", "{r}");
    assert_eq!(r["appsTransport"], "tls", "{r}");
    assert!(stdout.contains("glasses and apps over TLS"), "{stdout}");
}

#[test]
fn a_short_transcripts_run_delivers_every_final_through_the_publishing_app() {
    let args = ["--transcripts", "--sessions", "2", "--apps", "2"];
    let (r, stdout) = route(
        "transcripts",
        &[&args[..], &["--seconds", "1", "--rate", "500"]].concat(),
    );
    // The finals are the numbered messages: all of them, in order, to both apps.
    check_clean(&r, &stdout, 2);
    let t = &r["transcripts"];
    assert_eq!(t["finalsSent"], r["sent"], "{r}");
    // Three interims before each final; some may be dropped for an app behind, none reordered.
    let sent = t["interimsSent"].as_u64().expect("interimsSent");
    assert_eq!(Some(sent), r["sent"].as_u64().map(|f| f * 3), "{r}");
    assert_eq!(t["interimsExpected"].as_u64(), Some(sent * 2), "{r}");
    let delivered = t["interimsDelivered"].as_u64().expect("interimsDelivered");
    assert!(delivered > 0 && delivered <= sent * 2, "{r}");
    assert_eq!(t["interimsReordered"], 0, "{r}");
    assert_eq!(
        t["interimLatencyUs"]["samples"].as_u64(),
        Some(delivered),
        "{r}"
    );
    assert!(stdout.contains("final transcripts"), "{stdout}");
}

#[test]
fn a_venue_run_with_the_real_transcriber_reports_its_finals_and_both_processes_cpu() {
    let have = Command::new("python3")
        .args(["-c", "import moonshine_voice"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("python3 with moonshine-voice is needed; failing because CI=true");
        }
        return eprintln!("skipped: no python3 with moonshine-voice");
    }
    // The shortest committed sentence (3 s), as the feed of 2 sessions.
    let wav = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/transcriber/samples/librivox/sense_and_sensibility_01_austen_64kb-0880.wav"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_edge-load"))
        .args(["venue", "--transcriber", "--sessions", "2", "--apps", "1"])
        .args(["--wav", wav])
        .output()
        .expect("run edge-load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // Every final the transcriber published reached both apps, with its words, in order.
    let finals = stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("finals")?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no finals line:\n{stdout}"));
    assert!(finals > 0, "{stdout}");
    let clean = format!(
        "delivered {} of {}: lost 0; 2 of 2 apps got every final in order with the same words",
        2 * finals,
        2 * finals
    );
    assert!(stdout.contains(&clean), "{stdout}");
    assert!(
        stdout.contains(&format!("({} samples;", 2 * finals)),
        "{stdout}"
    );
    // The recogniser worked while the audio played: its CPU is counted.
    let play = stdout
        .lines()
        .find(|l| l.starts_with("phase play"))
        .unwrap_or_else(|| panic!("no play phase:\n{stdout}"));
    let per_audio: f64 = play
        .split("transcriber CPU ")
        .nth(1)
        .and_then(|r| r.split(", ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no CPU per second of audio: {play}"));
    assert!(per_audio > 0.0, "{play}");
    assert!(play.contains("server CPU"), "{play}");
}
