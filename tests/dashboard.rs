//! The venue dashboard (`contrib/dashboard`, a system app on the stock `@mentra/sdk@2.1.29`)
//! against the real `augmentos-edge` binary, seen from the glasses.
//!
//! `venue_dashboard_reaches_every_session`: the box's config registers the dashboard as a
//! system app (allowed from 127.0.0.1); the app runs with `TZ=UTC`, a 200 ms refresh and a JSON
//! schedule file of two items (30 and 90 minutes from now). Glasses connect and send only
//! `connection_init`: the box must start the dashboard for the session by itself, and the
//! glasses must get a `dashboard` view `display_event` holding the time (this minute or the
//! next) and "Next HH:MM Keynote, Main hall". A `glasses_battery_update` (73 %) must come back
//! as "batt 73%". The operator then rewrites the schedule in the text format: the new next item
//! must reach the glasses; then a malformed one: the app reports it and the glasses keep the
//! last good line (seen with the next battery update, "batt 41%+" while charging). A second
//! user's glasses get their own dashboard session with the schedule line too.
//!
//! Needs `node` and `npm`; `contrib/dashboard/node_modules` is installed with `npm ci` on first
//! use. Without them the test prints a message and passes, except under `CI=true`.
//! `CAPTIONS_KEEP=1` keeps the temporary directory (config, logs, schedule).

#[path = "support/captions.rs"]
mod captions;
#[path = "support/ports.rs"]
mod ports;
#[path = "support/sdk_app.rs"]
mod sdk_app;
#[path = "support/tools.rs"]
mod tools;

use captions::{free_port, sha256_hex, Glasses, R, STEP};
use serde_json::{json, Value};
use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DASH: &str = "system.venue.dashboard";
const DASH_KEY: &str = "dashboard-test-key-0123456789";
const SECRET: &str = "test-secret-dashboard-123";

/// Unix seconds now.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// "HH:MM" (UTC) of a Unix time.
fn hhmm(t: u64) -> String {
    format!("{:02}:{:02}", t / 3600 % 24, t / 60 % 60)
}

/// An RFC 3339 UTC timestamp of a Unix time (civil from days, Howard Hinnant's algorithm).
fn iso(t: u64) -> String {
    let days = (t / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{}:00Z", hhmm(t))
}

/// The text of the dashboard `display_event`s the glasses read within `within` until one
/// passes `want`; that one's text.
fn wait_dashboard(g: &mut Glasses, within: Duration, want: impl Fn(&str) -> bool) -> R<String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        if Instant::now() > deadline {
            return Err(format!("no such dashboard; the glasses saw: {seen:?}"));
        }
        let Some(m) = g.read()? else { continue };
        if m["type"] != "display_event" || m["view"] != "dashboard" {
            continue;
        }
        let text = layout_text(&m["layout"]);
        if want(&text) {
            return Ok(text);
        }
        seen.push(text);
    }
}

/// Every string of a layout, joined by newlines.
fn layout_text(layout: &Value) -> String {
    [
        "topText",
        "bottomText",
        "text",
        "title",
        "leftText",
        "rightText",
    ]
    .iter()
    .filter_map(|k| layout[k].as_str())
    .collect::<Vec<_>>()
    .join("\n")
}

#[test]
fn venue_dashboard_reaches_every_session() {
    let logs = [
        "server.stderr",
        "dashboard.stdout",
        "dashboard.stderr",
        "glasses.log",
    ];
    sdk_app::with_node(
        "dashboard",
        &["node", "npm"],
        "contrib/dashboard",
        &logs,
        run,
    );
}

fn run(root: &Path, dir: &Path) -> R {
    let (port, app_port) = (free_port()?, free_port()?);
    let now = unix_now();
    let (keynote, lunch) = (now + 30 * 60, now + 90 * 60);
    let schedule = dir.join("schedule.json");
    let items = json!([
        {"start": iso(lunch), "title": "Lunch", "where": "Second floor"},
        {"start": iso(keynote), "title": "Keynote", "where": "Main hall"},
    ]);
    fs::write(&schedule, items.to_string()).map_err(|e| e.to_string())?;
    let config = json!({
        "listen": [format!("127.0.0.1:{port}")],
        "publicWsUrl": format!("ws://127.0.0.1:{port}"),
        "jwtSecret": SECRET,
        "apps": [{
            "packageName": DASH, "name": "Venue dashboard",
            "publicUrl": format!("http://127.0.0.1:{app_port}"),
            "hashedApiKey": sha256_hex(DASH_KEY), "isSystemApp": true,
            "allowedAddresses": ["127.0.0.1"],
        }],
    });
    let (_server, config_path) = sdk_app::start_box(dir, &config, port)?;
    let env = [
        ("SCHEDULE", schedule.as_os_str()),
        ("TZ", OsStr::new("UTC")),
        ("REFRESH_MS", OsStr::new("200")),
    ];
    let dashboard = root.join("contrib/dashboard");
    let mut app = sdk_app::start_app(
        &dashboard,
        "dashboard.mjs",
        dir,
        "dashboard",
        app_port,
        DASH,
        DASH_KEY,
        &env,
    )?;
    let glasses =
        |user: &str, log: &str| sdk_app::glasses(port, &config_path, user, &dir.join(log));
    let mut g = glasses("ann@example.com", "glasses.log")?;
    app.wait_event("session", STEP)?;
    let next = format!("Next {} Keynote, Main hall", hhmm(keynote));
    let clock = [hhmm(now), hhmm(now + 60), hhmm(now + 120)];
    let text = wait_dashboard(&mut g, STEP, |t| {
        t.contains(&next) && clock.iter().any(|c| t.contains(c.as_str()))
    })?;
    eprintln!("dashboard: {text:?}");

    g.send(json!({"type": "glasses_battery_update", "level": 73, "charging": false}))?;
    wait_dashboard(&mut g, STEP, |t| {
        t.contains("batt 73%") && t.contains(&next)
    })?;

    // The operator edits the schedule (now in the text format).
    let closing = now + 20 * 60;
    fs::write(
        &schedule,
        format!("# today\n{} Closing remarks, Hall B\n", hhmm(closing)),
    )
    .map_err(|e| e.to_string())?;
    let next = format!("Next {} Closing remarks, Hall B", hhmm(closing));
    if closing / 86_400 == now / 86_400 {
        // (An "HH:MM" item is today: past midnight UTC it would already be over.)
        wait_dashboard(&mut g, STEP, |t| t.contains(&next))?;
    }
    // A bad edit is reported and the last good schedule stays on the glasses.
    fs::write(&schedule, "[{\"start\": 12}]").map_err(|e| e.to_string())?;
    let error = app.wait_event("error", STEP)?;
    if !error["message"]
        .as_str()
        .is_some_and(|m| m.contains("keeping the last good one"))
    {
        return Err(format!("the bad schedule gave {error}"));
    }
    g.send(json!({"type": "glasses_battery_update", "level": 41, "charging": true}))?;
    let kept = if closing / 86_400 == now / 86_400 {
        next.clone()
    } else {
        "batt".into()
    };
    wait_dashboard(&mut g, STEP, |t| {
        t.contains("batt 41%+") && t.contains(&kept)
    })?;

    // Another visitor's glasses: a session of its own, started by the box, the same schedule.
    let mut g2 = glasses("bob@example.com", "glasses-2.log")?;
    app.wait_event("session", STEP)?;
    let today = closing / 86_400 == now / 86_400;
    wait_dashboard(&mut g2, STEP, |t| {
        clock.iter().any(|c| t.contains(c.as_str())) && (!today || t.contains(&next))
    })?;
    Ok(())
}
