//! Deterministic tests of the display manager and the dashboard through the in-memory world
//! (`sim::World`): glasses and apps as in-memory clients, a virtual clock that wakes deadline
//! by deadline. One test per display rule (throttle, boot, lock, expiry, restore, dashboard
//! apart from the main view, layout pass-through and limits, §11 composition) and their
//! interactions.
//!
//! The fixture: `com.example.captions` and `com.example.notes` (standard apps; the one started
//! last is the foreground app), and the system app `system.local.stt`, started with every
//! session, which may change the dashboard's mode and sections.

use augmentos_edge::auth::{self, jwt};
use augmentos_edge::hub::registry::AppSpec;
use augmentos_edge::hub::HubConfig;
use augmentos_edge::net::Target;
use augmentos_edge::server::ServerConfig;
use augmentos_edge::sim::World;
use serde_json::{json, Value};
use std::time::Duration;

const SECRET: &[u8] = b"display-test-secret";
const ALICE: &str = "alice@example.com";
const CAPTIONS: &str = "com.example.captions";
const NOTES: &str = "com.example.notes";
const STT: &str = "system.local.stt";
const SYSTEM_PACKAGE: &str = "system.augmentos.dashboard";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn spec(package: &str, name: &str, system: bool, port: u16) -> AppSpec {
    AppSpec {
        package_name: package.into(),
        name: name.into(),
        public_url: format!("http://apps.example:{port}"),
        webhook_target: Target {
            host: "apps.example".into(),
            port,
            tls: None,
        },
        webhook_path: String::new(),
        hashed_api_key: auth::hash_api_key(&format!("{package}-key")),
        is_system_app: system,
        permissions: vec!["ALL".into()],
        allowed_addresses: vec!["in-process".into()],
        publishes: Vec::new(),
        settings: Vec::new(),
    }
}

fn world_with(cfg: impl FnOnce(&mut HubConfig)) -> World {
    let mut hub = HubConfig {
        public_ws_url: "ws://edge.example:8002".into(),
        internal_ws_url: "ws://edge.example:8002".into(),
        jwt_secret: SECRET.to_vec(),
        apps: vec![
            spec(CAPTIONS, "Captions", false, 3001),
            spec(NOTES, "Notes", false, 3002),
            spec(STT, "Speech", true, 3003),
        ],
        lifecycle_burst: 100,
        ..HubConfig::default()
    };
    cfg(&mut hub);
    World::with_hub(
        ServerConfig {
            ping_interval: None,
            ..ServerConfig::default()
        },
        hub,
    )
}

fn world() -> World {
    world_with(|_| {})
}

fn sid(package: &str) -> String {
    format!("{ALICE}-{package}")
}

/// Connect an app as the SDK does and answer its webhook; returns the client, inbox drained.
fn connect_app(w: &mut World, package: &str) -> usize {
    let hook = (0..w.outbound.len())
        .rev()
        .find(|&i| {
            w.outbound[i]
                .json()
                .is_some_and(|v| v["type"] == "session_request" && v["sessionId"] == sid(package))
        })
        .expect("a session_request");
    let c = w.connect();
    assert_eq!(w.upgrade(c, "/app-ws"), 101);
    w.send_text(
        c,
        &json!({"type": "tpa_connection_init", "packageName": package,
                "sessionId": sid(package), "apiKey": format!("{package}-key")})
        .to_string(),
    );
    let msgs = w.json_messages(c);
    assert_eq!(msgs[0]["type"], "tpa_connection_ack", "{msgs:?}");
    w.respond_http(hook, 200);
    c
}

/// Glasses of ALICE, initialised, with the system app connected: the glasses client, drained.
fn session(w: &mut World) -> (usize, usize) {
    let g = w.connect();
    let bearer = format!(
        "Authorization: Bearer {}",
        jwt::glasses_token(ALICE, SECRET)
    );
    assert_eq!(w.upgrade_with(g, "/glasses-ws", &[&bearer]).0, 101);
    w.send_text(g, r#"{"type":"connection_init"}"#);
    let stt = connect_app(w, STT);
    w.json_messages(g);
    (g, stt)
}

fn start(w: &mut World, g: usize, package: &str) {
    w.send_text(
        g,
        &json!({"type": "start_app", "packageName": package}).to_string(),
    );
}

/// Start `package` and connect it; the boot screen is over when this returns. Glasses drained.
fn start_active(w: &mut World, g: usize, package: &str) -> usize {
    start(w, g, package);
    let c = connect_app(w, package);
    w.advance(ms(1500));
    w.json_messages(g);
    c
}

fn show(w: &mut World, app: usize, package: &str, view: &str, layout: Value, dur: Option<u64>) {
    let mut m = json!({"type": "display_event", "packageName": package, "view": view,
                       "layout": layout, "sessionId": "", "timestamp": "2025-01-01T00:00:00.000Z"});
    if let Some(d) = dur {
        m["durationMs"] = json!(d);
    }
    w.send_text(app, &m.to_string());
}

fn wall(text: &str) -> Value {
    json!({"layoutType": "text_wall", "text": text})
}

fn text_wall(w: &mut World, app: usize, package: &str, text: &str, dur: Option<u64>) {
    show(w, app, package, "main", wall(text), dur);
}

/// The `display_event`s the glasses received since last asked.
fn displays(w: &mut World, g: usize) -> Vec<Value> {
    w.json_messages(g)
        .into_iter()
        .filter(|m| m["type"] == "display_event")
        .collect()
}

/// Short labels for main-view displays: the text of a text wall, `boot:<text>`, `clear`.
fn main_labels(ds: &[Value]) -> Vec<String> {
    ds.iter()
        .filter(|d| d["view"] == "main")
        .map(|d| {
            let l = &d["layout"];
            match (l["layoutType"].as_str(), d["packageName"].as_str()) {
                (Some("reference_card"), Some(SYSTEM_PACKAGE)) => {
                    format!("boot:{}", l["text"].as_str().unwrap_or("?"))
                }
                (Some("text_wall"), Some(SYSTEM_PACKAGE)) if l["text"] == "" => "clear".into(),
                _ => l["text"].as_str().unwrap_or("?").to_string(),
            }
        })
        .collect()
}

fn errors(w: &mut World, app: usize) -> Vec<Value> {
    w.json_messages(app)
        .into_iter()
        .filter(|m| m["type"] == "tpa_connection_error")
        .collect()
}

fn refusals(w: &World, code: &str) -> u64 {
    w.server
        .hub
        .counters
        .refusals
        .get(code)
        .copied()
        .unwrap_or(0)
}

// ---- throttle ------------------------------------------------------------------------------

#[test]
fn throttle_ten_updates_in_300_ms_reach_the_glasses_as_the_first_and_the_newest() {
    let mut w = world();
    let (g, _) = session(&mut w);
    let cap = start_active(&mut w, g, CAPTIONS);
    for i in 0..10 {
        text_wall(&mut w, cap, CAPTIONS, &format!("caption {i}"), None);
        w.advance(ms(29));
    }
    assert_eq!(main_labels(&displays(&mut w, g)), ["caption 0"]);
    w.advance(ms(300));
    let ds = displays(&mut w, g);
    assert_eq!(main_labels(&ds), ["caption 9"]);
    assert_eq!(ds[0]["packageName"], CAPTIONS);
    // Nothing more follows, and the app was told nothing (coalescing is not a refusal).
    w.advance(ms(2000));
    assert!(displays(&mut w, g).is_empty());
    assert!(errors(&mut w, cap).is_empty());
}

#[test]
fn force_display_bypasses_the_throttle() {
    let mut w = world();
    let (g, _) = session(&mut w);
    let cap = start_active(&mut w, g, CAPTIONS);
    text_wall(&mut w, cap, CAPTIONS, "a", None);
    let m = json!({"type": "display_event", "view": "main", "layout": wall("b"),
                   "forceDisplay": true, "sessionId": ""});
    w.send_text(cap, &m.to_string());
    assert_eq!(main_labels(&displays(&mut w, g)), ["a", "b"]);
}

// ---- boot ----------------------------------------------------------------------------------

#[test]
fn boot_screen_then_the_apps_first_display() {
    let mut w = world();
    let (g, _) = session(&mut w);
    start(&mut w, g, NOTES);
    let ds = displays(&mut w, g);
    assert_eq!(main_labels(&ds), ["boot:Notes"]);
    assert_eq!(ds[0]["layout"]["title"], "// AugmentOS - Starting App");
    let notes = connect_app(&mut w, NOTES);
    // Displays during the boot are held, latest wins.
    text_wall(&mut w, notes, NOTES, "first", None);
    text_wall(&mut w, notes, NOTES, "second", None);
    w.advance(ms(1499));
    assert!(displays(&mut w, g).is_empty());
    w.advance(ms(1));
    assert_eq!(main_labels(&displays(&mut w, g)), ["second"]);
    assert!(errors(&mut w, notes).is_empty());
}

#[test]
fn boot_lasts_until_the_app_connected_and_a_failed_start_clears_it() {
    let mut w = world();
    let (g, _) = session(&mut w);
    start(&mut w, g, NOTES);
    start(&mut w, g, CAPTIONS);
    assert_eq!(
        main_labels(&displays(&mut w, g)),
        ["boot:Notes", "boot:Notes, Captions"]
    );
    let cap = connect_app(&mut w, CAPTIONS);
    // Captions is done booting at 1.5 s; Notes never connects, so the card stays for it.
    w.advance(ms(1600));
    assert_eq!(main_labels(&displays(&mut w, g)), ["boot:Notes"]);
    text_wall(&mut w, cap, CAPTIONS, "held", None);
    // The 5 s connect timeout fails Notes: the boot ends, the held display shows.
    w.advance(ms(4000));
    assert_eq!(main_labels(&displays(&mut w, g)), ["held"]);
    assert_eq!(w.server.hub.app_state(ALICE, NOTES), Some("failed"));
}

// ---- priority ------------------------------------------------------------------------------

#[test]
fn background_lock_acquisition_refusals_and_inactivity_release() {
    let mut w = world();
    let (g, stt) = session(&mut w);
    let notes = start_active(&mut w, g, NOTES);
    let cap = start_active(&mut w, g, CAPTIONS); // the foreground app
                                                 // Notes is in the background: it takes the view through the lock.
    text_wall(&mut w, notes, NOTES, "note", None);
    assert_eq!(main_labels(&displays(&mut w, g)), ["note"]);
    w.advance(ms(500));
    // The foreground app is refused while the holder shows; its display is kept.
    text_wall(&mut w, cap, CAPTIONS, "caption", Some(10_000));
    let e = errors(&mut w, cap);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0]["code"], "DISPLAY_REFUSED");
    assert_eq!(e[0]["details"]["reason"], "BACKGROUND_LOCK_ACTIVE");
    assert_eq!(e[0]["details"]["holder"], NOTES);
    // Another background app is refused outright.
    text_wall(&mut w, stt, STT, "stt", None);
    let e = errors(&mut w, stt);
    assert_eq!(e[0]["details"]["reason"], "MAIN_VIEW_LOCKED");
    assert_eq!(refusals(&w, "DISPLAY_REFUSED"), 2);
    assert!(displays(&mut w, g).is_empty());
    // 2 s without an update from Notes: released, the foreground display comes back.
    w.advance(ms(1499));
    assert!(displays(&mut w, g).is_empty());
    w.advance(ms(1));
    assert_eq!(main_labels(&displays(&mut w, g)), ["caption"]);
    // Now another background app may take the lock.
    // (The restore started a throttle interval: it shows when that ends.)
    text_wall(&mut w, stt, STT, "stt now", None);
    assert!(displays(&mut w, g).is_empty());
    w.advance(ms(300));
    assert_eq!(main_labels(&displays(&mut w, g)), ["stt now"]);
    assert!(errors(&mut w, stt).is_empty());
}

#[test]
fn background_lock_expires_after_ten_seconds_even_while_updated() {
    let mut w = world();
    let (g, stt) = session(&mut w);
    let _cap = start_active(&mut w, g, CAPTIONS);
    let notes = start_active(&mut w, g, NOTES);
    // Notes is foreground now; the system app is the background one.
    let t0 = w.now;
    text_wall(&mut w, stt, STT, "s0", None);
    for i in 1..10 {
        w.advance(ms(1000));
        text_wall(&mut w, stt, STT, &format!("s{i}"), None);
    }
    assert_eq!(main_labels(&displays(&mut w, g)).len(), 10);
    // Refused while the lock lives (the holder shows).
    text_wall(&mut w, notes, NOTES, "n", None);
    assert_eq!(errors(&mut w, notes).len(), 1);
    // At 10 s from the grant the lock ends though the holder kept updating; its display
    // (no duration, shown 1 s ago) is no longer valid: cleared.
    w.advance(ms(1000));
    assert_eq!(w.now.saturating_since(t0), ms(10_000));
    assert_eq!(main_labels(&displays(&mut w, g)), ["clear"]);
    text_wall(&mut w, notes, NOTES, "n2", None);
    assert_eq!(main_labels(&displays(&mut w, g)), ["n2"]);
    assert!(errors(&mut w, notes).is_empty());
}

// ---- expiry and restore --------------------------------------------------------------------

#[test]
fn duration_expiry_falls_back_to_the_next_eligible_display_then_a_clear() {
    let mut w = world();
    let (g, stt) = session(&mut w);
    let cap = start_active(&mut w, g, CAPTIONS);
    text_wall(&mut w, cap, CAPTIONS, "long", Some(5_000));
    w.advance(ms(1000));
    text_wall(&mut w, stt, STT, "short", Some(1_500));
    let ds = displays(&mut w, g);
    assert_eq!(main_labels(&ds), ["long", "short"]);
    assert_eq!(ds[1]["durationMs"], 1500, "durationMs is forwarded");
    w.advance(ms(1499));
    assert!(displays(&mut w, g).is_empty());
    w.advance(ms(1));
    assert_eq!(main_labels(&displays(&mut w, g)), ["long"]);
    // The caption's own 5 s run out (from when it was first shown): a clear.
    w.advance(ms(2500));
    assert_eq!(main_labels(&displays(&mut w, g)), ["clear"]);
    w.advance(ms(10_000));
    assert!(displays(&mut w, g).is_empty());
}

/// `durationMs: 0` is the cloud's: no expiry (shown until something replaces it) and never
/// restored (PROTOCOL §16.6, `hasRemainingDuration` is false for it); not "show for 0 ms".
#[test]
fn a_display_with_duration_zero_stays_until_replaced_and_is_never_restored() {
    let mut w = world();
    let (g, stt) = session(&mut w);
    let cap = start_active(&mut w, g, CAPTIONS);
    text_wall(&mut w, cap, CAPTIONS, "zero", Some(0));
    let ds = displays(&mut w, g);
    assert_eq!(main_labels(&ds), ["zero"]);
    assert_eq!(ds[0]["durationMs"], 0, "forwarded as given");
    // Deadline by deadline, as the reactor wakes, for ten minutes: it stays on screen.
    let until = w.now + Duration::from_secs(600);
    while w.server.poll_timeout().is_some_and(|at| at <= until) {
        assert!(w.jump_to_next_deadline());
        assert!(displays(&mut w, g).is_empty(), "at {:?}", w.now);
    }
    w.advance(until.saturating_since(w.now));
    assert!(displays(&mut w, g).is_empty());
    // Displaced for a second by a background app, it is not shown again: a clear.
    text_wall(&mut w, stt, STT, "notice", Some(1_000));
    assert_eq!(main_labels(&displays(&mut w, g)), ["notice"]);
    let shown = w.now;
    assert!(w.jump_to_next_deadline());
    assert_eq!(w.now, shown + ms(1_000));
    assert_eq!(main_labels(&displays(&mut w, g)), ["clear"]);
}

#[test]
fn app_stop_restores_the_previous_display_at_once() {
    let mut w = world();
    let (g, stt) = session(&mut w);
    let cap = start_active(&mut w, g, CAPTIONS);
    text_wall(&mut w, cap, CAPTIONS, "caption", Some(60_000));
    w.advance(ms(500));
    text_wall(&mut w, stt, STT, "from stt", None);
    assert_eq!(main_labels(&displays(&mut w, g)), ["caption", "from stt"]);
    // The system app's connection drops: its display goes, the caption is back at once.
    w.client_eof(stt);
    assert_eq!(main_labels(&displays(&mut w, g)), ["caption"]);
    // The captions app is stopped: nothing else is eligible, a clear.
    start(&mut w, g, NOTES);
    displays(&mut w, g);
    w.send_text(
        g,
        &json!({"type": "stop_app", "packageName": CAPTIONS}).to_string(),
    );
    w.send_text(
        g,
        &json!({"type": "stop_app", "packageName": NOTES}).to_string(),
    );
    let labels = main_labels(&displays(&mut w, g));
    assert_eq!(
        labels.last().map(String::as_str),
        Some("clear"),
        "{labels:?}"
    );
}

// ---- dashboard -----------------------------------------------------------------------------

#[test]
fn dashboard_view_is_independent_of_the_main_view() {
    let mut w = world();
    let (g, _) = session(&mut w);
    let cap = start_active(&mut w, g, CAPTIONS);
    let notes = start_active(&mut w, g, NOTES);
    // The main view is inside its throttle interval; the dashboard view is not held by it.
    text_wall(&mut w, notes, NOTES, "m1", None);
    text_wall(&mut w, notes, NOTES, "m2", None);
    show(&mut w, cap, CAPTIONS, "dashboard", wall("dash"), None);
    let ds = displays(&mut w, g);
    assert_eq!(main_labels(&ds), ["m1"]);
    let dash: Vec<&Value> = ds.iter().filter(|d| d["view"] == "dashboard").collect();
    assert_eq!(dash.len(), 1, "{ds:?}");
    assert_eq!(dash[0]["packageName"], CAPTIONS);
    // During a boot the dashboard still passes.
    start(&mut w, g, NOTES);
    w.send_text(
        g,
        &json!({"type": "stop_app", "packageName": NOTES}).to_string(),
    );
    start(&mut w, g, NOTES);
    w.advance(ms(400));
    displays(&mut w, g);
    w.send_text(
        cap,
        &json!({"type": "dashboard_content_update", "packageName": CAPTIONS,
                "content": "42 words", "modes": ["main"], "sessionId": sid(CAPTIONS)})
        .to_string(),
    );
    let ds = displays(&mut w, g);
    assert_eq!(ds.len(), 1, "{ds:?}");
    assert_eq!(ds[0]["view"], "dashboard");
    assert_eq!(ds[0]["packageName"], SYSTEM_PACKAGE);
}

#[test]
fn an_app_flooding_displays_cannot_starve_another_apps_dashboard() {
    let mut w = world();
    let (g, _) = session(&mut w);
    let notes = start_active(&mut w, g, NOTES);
    let cap = start_active(&mut w, g, CAPTIONS);
    let mut dash_seen = Vec::new();
    let system_dash = |ds: &[Value]| -> Vec<String> {
        ds.iter()
            .filter(|d| d["view"] == "dashboard" && d["packageName"] == SYSTEM_PACKAGE)
            .map(|d| d["layout"]["bottomText"].as_str().unwrap_or("").to_string())
            .collect()
    };
    for i in 0..200 {
        // Captions floods both views.
        text_wall(&mut w, cap, CAPTIONS, &format!("flood {i}"), None);
        show(
            &mut w,
            cap,
            CAPTIONS,
            "dashboard",
            wall(&format!("d{i}")),
            None,
        );
        let mut seen = system_dash(&displays(&mut w, g));
        if i % 20 == 0 {
            w.send_text(
                notes,
                &json!({"type": "dashboard_content_update", "content": format!("notes {i}"),
                        "modes": ["main"]})
                .to_string(),
            );
            // At once, not after the flood's throttle interval.
            let now = system_dash(&displays(&mut w, g));
            assert_eq!(now, [format!("\nnotes {i}")], "update {i}");
            seen.extend(now);
        }
        dash_seen.extend(seen);
        w.advance(ms(5));
        dash_seen.extend(system_dash(&displays(&mut w, g)));
    }
    // Every one of Notes' ten updates reached the glasses, once each, in order.
    let want: Vec<String> = (0..10).map(|i| format!("\nnotes {}", i * 20)).collect();
    assert_eq!(dash_seen, want);
}

#[test]
fn dashboard_composition_modes_and_broadcasts_per_section_11() {
    let mut w = world();
    let (g, stt) = session(&mut w);
    let cap = start_active(&mut w, g, CAPTIONS);
    let sys = |w: &mut World, section: &str, content: &str| {
        w.send_text(
            stt,
            &json!({"type": "dashboard_system_update", "section": section, "content": content})
                .to_string(),
        )
    };
    sys(&mut w, "topLeft", "12:00");
    sys(&mut w, "topRight", "80%");
    sys(&mut w, "bottomLeft", "Mon");
    sys(&mut w, "bottomRight", "2 new");
    w.send_text(
        cap,
        &json!({"type": "dashboard_content_update", "packageName": CAPTIONS,
                "content": "captions on", "modes": ["main", "expanded"]})
        .to_string(),
    );
    let ds = displays(&mut w, g);
    let last = ds.last().unwrap();
    assert_eq!(last["view"], "dashboard");
    assert_eq!(last["packageName"], SYSTEM_PACKAGE);
    assert_eq!(
        last["layout"],
        json!({"layoutType": "double_text_wall", "topText": "12:00\nMon",
               "bottomText": "80%\n2 new\n\ncaptions on"})
    );
    assert!(last.get("durationMs").is_none());
    // Only system apps change the mode.
    w.send_text(cap, r#"{"type":"dashboard_mode_change","mode":"expanded"}"#);
    assert_eq!(errors(&mut w, cap)[0]["code"], "DASHBOARD_REFUSED");
    w.send_text(stt, r#"{"type":"dashboard_mode_change","mode":"expanded"}"#);
    let ds = displays(&mut w, g);
    assert_eq!(
        ds.last().unwrap()["layout"],
        json!({"layoutType": "text_wall", "text": "12:00 | 80%\ncaptions on"})
    );
    for (c, pkg) in [(cap, CAPTIONS), (stt, STT)] {
        let m: Vec<Value> = w
            .json_messages(c)
            .into_iter()
            .filter(|m| m["type"] == "dashboard_mode_changed")
            .collect();
        assert_eq!(m.len(), 1, "{pkg}: {m:?}");
        assert_eq!(m[0]["mode"], "expanded");
        assert_eq!(m[0]["sessionId"], sid(pkg));
    }
    // Always-on: broadcast, and its own view.
    w.send_text(
        stt,
        r#"{"type":"dashboard_always_on_change","enabled":true}"#,
    );
    let ds = displays(&mut w, g);
    assert_eq!(ds.last().unwrap()["view"], "always_on");
    assert_eq!(
        w.json_messages(cap)
            .iter()
            .filter(|m| m["type"] == "dashboard_always_on_changed" && m["enabled"] == true)
            .count(),
        1
    );
    // The app disconnects: its content is gone from the dashboard.
    w.client_eof(cap);
    let ds = displays(&mut w, g);
    let dash = ds.iter().rev().find(|d| d["view"] == "dashboard").unwrap();
    assert_eq!(
        dash["layout"]["text"],
        "12:00 | 80%\nNo expanded content available"
    );
}

// ---- layouts -------------------------------------------------------------------------------

#[test]
fn every_layout_type_passes_through_and_oversized_or_unknown_ones_are_refused() {
    let mut w = world_with(|h| h.max_layout_bytes = 1024);
    let (g, _) = session(&mut w);
    let cap = start_active(&mut w, g, CAPTIONS);
    let layouts = [
        json!({"layoutType": "text_wall", "text": "t"}),
        json!({"layoutType": "double_text_wall", "topText": "a", "bottomText": "b"}),
        json!({"layoutType": "dashboard_card", "leftText": "l", "rightText": "r"}),
        json!({"layoutType": "reference_card", "title": "T", "text": "x"}),
        json!({"layoutType": "bitmap_view", "data": "Qk0="}),
        json!({"layoutType": "bitmap_animation", "frames": ["Qk0=", "Qk0="], "interval": 1650, "repeat": true}),
        json!({"layoutType": "clear_view"}),
    ];
    for l in &layouts {
        let m = json!({"type": "display_event", "view": "main", "layout": l, "forceDisplay": true});
        w.send_text(cap, &m.to_string());
    }
    let got: Vec<Value> = displays(&mut w, g)
        .into_iter()
        .map(|d| d["layout"].clone())
        .collect();
    assert_eq!(got, layouts);
    assert!(errors(&mut w, cap).is_empty());

    show(
        &mut w,
        cap,
        CAPTIONS,
        "main",
        json!({"layoutType": "text_wall", "text": "x".repeat(2000)}),
        None,
    );
    let e = errors(&mut w, cap);
    assert_eq!(e[0]["code"], "LAYOUT_TOO_LARGE");
    assert_eq!(e[0]["details"]["maxBytes"], 1024);
    show(
        &mut w,
        cap,
        CAPTIONS,
        "main",
        json!({"layoutType": "hologram"}),
        None,
    );
    assert_eq!(errors(&mut w, cap)[0]["code"], "INVALID_LAYOUT");
    w.send_text(cap, r#"{"type":"display_event","view":"main"}"#);
    assert_eq!(errors(&mut w, cap)[0]["code"], "INVALID_LAYOUT");
    assert_eq!(refusals(&w, "LAYOUT_TOO_LARGE"), 1);
    assert_eq!(refusals(&w, "INVALID_LAYOUT"), 2);
    w.advance(ms(1000));
    assert!(displays(&mut w, g).is_empty());
    assert!(!w.clients[cap].closed);
}

#[test]
fn the_screens_of_a_session_are_readable_for_operators() {
    let mut w = world();
    let (g, _) = session(&mut w);
    let cap = start_active(&mut w, g, CAPTIONS);
    text_wall(&mut w, cap, CAPTIONS, "hello", None);
    show(
        &mut w,
        cap,
        CAPTIONS,
        "dashboard",
        json!({"layoutType": "dashboard_card", "leftText": "a", "rightText": "b"}),
        None,
    );
    w.advance(ms(250));
    let s = w.server.hub.screens(ALICE, w.now);
    assert_eq!(s.len(), 2, "{s:?}");
    assert_eq!(
        (
            s[0].view,
            s[0].layout_type,
            s[0].package_name.as_str(),
            s[0].for_ms
        ),
        ("main", "text_wall", CAPTIONS, 250)
    );
    assert_eq!(
        (s[1].view, s[1].layout_type),
        ("dashboard", "dashboard_card")
    );
    assert!(w.server.hub.screens("nobody", w.now).is_empty());
}

#[test]
fn glasses_that_reconnect_are_shown_what_is_on_screen() {
    let mut w = world();
    let (g, _) = session(&mut w);
    let cap = start_active(&mut w, g, CAPTIONS);
    text_wall(&mut w, cap, CAPTIONS, "still here", None);
    displays(&mut w, g);
    w.client_eof(g);
    let g2 = w.connect();
    let bearer = format!(
        "Authorization: Bearer {}",
        jwt::glasses_token(ALICE, SECRET)
    );
    assert_eq!(w.upgrade_with(g2, "/glasses-ws", &[&bearer]).0, 101);
    w.send_text(g2, r#"{"type":"connection_init"}"#);
    assert_eq!(main_labels(&displays(&mut w, g2)), ["still here"]);
}
