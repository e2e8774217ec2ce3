//! The `/ui/` pages in a real browser: the operator page and the glasses emulator, served by the
//! real binary, driven in the distribution's headless Chromium by `tests/ui/ui.mjs`
//! (`playwright-core`, pinned in `tests/ui/package-lock.json`; it never downloads a browser).
//!
//! This file runs `augmentos-edge serve` on a temporary config (the public development secret,
//! so the emulator's development-user shortcut is on; an operator token; one app) and plays
//! that app itself: a webhook listener that, on `session_request`, connects a tungstenite client
//! to the `/app-ws` URL it was given, initialises, subscribes to `button_press`, `touch_event`
//! and `audio_chunk`, shows a text wall and a dashboard line, answers each button press with a
//! reference card and each touch gesture with another layout, and counts the audio bytes it
//! hears on its dashboard line.
//!
//! The browser script opens the landing page; has a pasted non-token refused (and not
//! retried); signs in on the emulator as a typed user; picks "a WAV file" as the audio source
//! without choosing one; starts the app from `installedApps`; checks the page draws the text
//! wall and the dashboard line, that the box turned the microphone on and the page asks for the
//! file; chooses it then, with the microphone on, and checks that it reached the app (1 s at
//! 48 kHz as 32000 bytes of 16 kHz PCM16); presses the button and checks the reference card; makes the
//! app show each other layout of PROTOCOL §7 by touch gestures (double text wall, dashboard card,
//! bitmap, bitmap animation, clear view) and checks each is drawn; gets 401
//! `INVALID_OPERATOR_TOKEN` for a wrong or missing operator token (from the API, and in the
//! page); opens the operator page with the token and finds the session with its glasses
//! connected and microphone on, the app `active`, the reference card on its main view and the
//! dashboard line; points the user at the venue's second feed with the session's feed control
//! and sees the page say so (the session's feed, each feed's followers) and the API agree;
//! stops the app from there and sees the emulator say so and its microphone go
//! off; starts it again from the emulator with Chromium's fake microphone as the source and
//! waits until the app has heard some of it. Then the devices view: adds a device on the
//! operator page, shows its token and QR code (drawn, and only on request), signs the emulator
//! in with that token, revokes the device from the page and sees the emulator cut off with
//! `DEVICE_REVOKED`. Screenshots go to `target/ui-screens/`.
//!
//! This file then checks what the app saw: the short press, the operator's stop, and the audio
//! frames (exactly ten of 3200 bytes from the file; at least five of 3200 from the microphone).
//!
//! Needs `node`, `npm` and `chromium` (or `UI_CHROMIUM=/path`). Without them the test prints a
//! message and passes, except under `CI=true`, where it fails. `tests/ui/node_modules` is
//! installed with `npm ci` on first use. On failure the message carries the server's log and
//! the script's output.

use serde_json::{json, Value};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Sender};
use std::thread;
use std::time::{Duration, Instant};

#[path = "support/tools.rs"]
mod tools;
use tools::{npm_ci, runs, skip};

const PACKAGE: &str = "com.example.venue";
const APP_NAME: &str = "Venue Guide";
const APP_KEY: &str = "venue-guide-key";
const OPERATOR_TOKEN: &str = "ui-test-operator-token";
const USER: &str = "visitor@example.com";
const WALL: &str = "Welcome to Hall B. The keynote starts at 14:30 on the main stage.";
const CARD_TITLE: &str = "Hall B schedule";
const DASHBOARD: &str = "Hall B · keynote 14:30";

/// The venue's two feeds (their publishers never connect here: the page only chooses).
const FEED_MAIN: &str = "main";
const FEED_B: &str = "hall-b";

/// The config entry of a venue feed's publisher.
fn feed_app(feed: &str, n: u16) -> Value {
    json!({
        "packageName": format!("system.venue.{feed}"), "name": format!("Captions {feed}"),
        "publicUrl": format!("http://127.0.0.1:{n}"),
        "hashedApiKey": augmentos_edge::auth::hash_api_key("feed-key"),
        "isSystemApp": true, "publishes": ["transcription"], "venueFeed": feed,
    })
}

/// The tools the test needs, or `None` (after saying why) when one is missing outside CI.
fn tools() -> Option<(PathBuf, PathBuf)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let chromium = match std::env::var("UI_CHROMIUM") {
        Ok(p) => Some(PathBuf::from(p)),
        Err(_) => ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists()),
    }
    .filter(|p| p.exists());
    let mut missing = Vec::new();
    for tool in ["node", "npm"] {
        if !runs(Command::new(tool).arg("--version")) {
            missing.push(tool.to_string());
        }
    }
    if chromium.is_none() {
        missing.push("chromium (apt-get install chromium)".into());
    }
    if !missing.is_empty() {
        skip(&format!(
            "UI browser test skipped: missing {}",
            missing.join(", ")
        ));
        return None;
    }
    if let Err(e) = npm_ci(&root.join("tests/ui"), "playwright-core/package.json") {
        panic!("{e}");
    }
    Some((root, chromium?))
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn operator_page_and_glasses_emulator_work_in_a_browser() {
    let Some((root, chromium)) = tools() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("augmentos-ui-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let shots = root.join("target/ui-screens");
    fs::create_dir_all(&shots).unwrap();

    let app_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let app_port = app_listener.local_addr().unwrap().port();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = json!({
        "listen": [format!("127.0.0.1:{port}")],
        "publicWsUrl": format!("ws://127.0.0.1:{port}"),
        "jwtSecret": augmentos_edge::config::DEV_SECRET,
        "ui": {"enabled": true, "operatorToken": OPERATOR_TOKEN},
        "timings": {"displayBootMs": 200},
        "apps": [{
            "packageName": PACKAGE, "name": APP_NAME,
            "publicUrl": format!("http://127.0.0.1:{app_port}"),
            "hashedApiKey": augmentos_edge::auth::hash_api_key(APP_KEY),
            "permissions": ["MICROPHONE"],
        }, feed_app(FEED_MAIN, 1), feed_app(FEED_B, 2)],
    });
    let config_path = dir.join("edge.json");
    fs::write(&config_path, config.to_string()).unwrap();
    let server_log = dir.join("server.log");
    let _server = Killed(
        Command::new(env!("CARGO_BIN_EXE_augmentos-edge"))
            .args(["serve", "--config"])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&server_log).unwrap())
            .spawn()
            .expect("start the server"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the server did not listen");
        thread::sleep(Duration::from_millis(50));
    }
    let (tx, events) = mpsc::channel();
    thread::spawn(move || serve_app(app_listener, tx));

    let out = run_script(&root, &chromium, port, &shots, &dir);
    let log = fs::read_to_string(&server_log).unwrap_or_default();
    assert!(
        out.0,
        "the browser script failed:\n{}\n--- server log ---\n{log}",
        out.1
    );
    eprintln!("{}", out.1);

    // What the app saw: the press from the page, then the operator's stop.
    let seen: Vec<Value> = events.try_iter().collect();
    let press = seen.iter().find(|e| e["event"] == "button");
    assert!(
        press.is_some_and(|p| p["data"]["pressType"] == "short"),
        "the app got no short button press from the page: {seen:?}"
    );
    assert!(
        seen.iter().any(|e| e["event"] == "stop_request"),
        "the operator's stop did not reach the app server: {seen:?}"
    );
    // Audio: the WAV file (1 s at 48 kHz) as 16 kHz PCM16 in 100 ms frames in the first run,
    // then the (fake) microphone in the second.
    let frames = |run: u32| -> Vec<u64> {
        seen.iter()
            .filter(|e| e["event"] == "audio" && e["run"] == run)
            .map(|e| e["bytes"].as_u64().unwrap())
            .collect()
    };
    let wav = frames(1);
    assert_eq!(wav, vec![3200; 10], "the WAV file's frames");
    let mic = frames(2);
    assert!(
        mic.len() >= 5 && mic.iter().all(|&n| n == 3200),
        "the microphone's frames: {mic:?}"
    );
    for name in ["glasses-text-wall", "glasses-reference-card", "operator"] {
        let p = shots.join(format!("{name}.png"));
        let len = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert!(len > 1000, "screenshot {} missing or empty", p.display());
    }
    let _ = fs::remove_dir_all(&dir);
}

/// Run `tests/ui/ui.mjs`; (success, its output). Killed past two minutes.
fn run_script(root: &Path, chromium: &Path, port: u16, shots: &Path, dir: &Path) -> (bool, String) {
    let stdout = dir.join("script.stdout");
    let stderr = dir.join("script.stderr");
    let mut child = Killed(
        Command::new("node")
            .arg("ui.mjs")
            .current_dir(root.join("tests/ui"))
            .env("BASE_URL", format!("http://127.0.0.1:{port}"))
            .env("CHROMIUM", chromium)
            .env("OPERATOR_TOKEN", OPERATOR_TOKEN)
            .env("USER_ID", USER)
            .env("APP_PACKAGE", PACKAGE)
            .env("APP_NAME", APP_NAME)
            .env("WALL", WALL)
            .env("CARD_TITLE", CARD_TITLE)
            .env("DASHBOARD", DASHBOARD)
            .env("FEED_MAIN", FEED_MAIN)
            .env("FEED_B", FEED_B)
            .env("SHOTS", shots)
            .env("PROFILE", dir.join("chromium-profile"))
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).unwrap())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start node"),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let ok = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status.success();
        }
        if Instant::now() > deadline {
            break false;
        }
        thread::sleep(Duration::from_millis(100));
    };
    let text = format!(
        "{}{}",
        fs::read_to_string(&stdout).unwrap_or_default(),
        fs::read_to_string(&stderr).unwrap_or_default()
    );
    (ok, text)
}

// ---- the app ----------------------------------------------------------------------------------

/// The app server: answers every webhook, and for each `session_request` runs the app's
/// WebSocket side on a thread of its own. Reports what happened on `tx`.
fn serve_app(listener: TcpListener, tx: Sender<Value>) {
    let mut runs = 0;
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { return };
        let Some(body) = read_request(&mut stream) else {
            continue;
        };
        let reply = r#"{"status":"success"}"#;
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
            reply.len()
        );
        let kind = body["type"].as_str().unwrap_or("").to_string();
        let _ = tx.send(json!({"event": kind, "data": body}));
        if kind == "session_request" {
            let tx = tx.clone();
            runs += 1;
            thread::spawn(move || {
                if let Err(e) = run_app(&body, runs, &tx) {
                    let _ = tx.send(json!({"event": "app_error", "data": e}));
                }
            });
        }
    }
}

/// One HTTP request's JSON body.
fn read_request(stream: &mut TcpStream) -> Option<Value> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut r = BufReader::new(stream.try_clone().ok()?);
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    serde_json::from_slice(&body).ok()
}

/// The app's WebSocket side for its `run`-th session.
fn run_app(req: &Value, run: u32, tx: &Sender<Value>) -> Result<(), String> {
    let url = req["augmentOSWebsocketUrl"]
        .as_str()
        .ok_or("no augmentOSWebsocketUrl")?;
    let session = req["sessionId"].as_str().ok_or("no sessionId")?.to_string();
    let (mut ws, _) = tungstenite::connect(url).map_err(|e| e.to_string())?;
    let send = |ws: &mut tungstenite::WebSocket<_>, v: Value| {
        ws.send(tungstenite::Message::text(v.to_string()))
            .map_err(|e| e.to_string())
    };
    send(
        &mut ws,
        json!({"type": "tpa_connection_init", "packageName": PACKAGE, "sessionId": session, "apiKey": APP_KEY}),
    )?;
    let display = |view: &str, layout: Value| {
        json!({"type": "display_event", "packageName": PACKAGE, "sessionId": session,
               "view": view, "layout": layout, "timestamp": "2026-01-01T00:00:00.000Z"})
    };
    let dashboard = |extra: String| {
        json!({"type": "dashboard_content_update", "packageName": PACKAGE,
               "sessionId": session, "content": format!("{DASHBOARD}{extra}"), "modes": ["main"],
               "timestamp": "2026-01-01T00:00:00.000Z"})
    };
    let mut heard = 0usize;
    loop {
        let msg = match ws.read() {
            Ok(tungstenite::Message::Text(t)) => t,
            Ok(tungstenite::Message::Binary(b)) => {
                heard += b.len();
                let _ = tx.send(json!({"event": "audio", "run": run, "bytes": b.len()}));
                send(&mut ws, dashboard(format!(" · heard {heard} bytes")))?;
                continue;
            }
            Ok(_) => continue,
            Err(_) => return Ok(()),
        };
        let m: Value = serde_json::from_str(msg.as_str()).map_err(|e| e.to_string())?;
        match m["type"].as_str() {
            Some("tpa_connection_ack") => {
                send(
                    &mut ws,
                    json!({"type": "subscription_update", "packageName": PACKAGE,
                           "sessionId": session,
                           "subscriptions": ["button_press", "touch_event", "audio_chunk"]}),
                )?;
                send(
                    &mut ws,
                    display("main", json!({"layoutType": "text_wall", "text": WALL})),
                )?;
                send(&mut ws, dashboard(String::new()))?;
            }
            Some("data_stream") if m["streamType"] == "button_press" => {
                let _ = tx.send(json!({"event": "button", "data": m["data"]}));
                let card = json!({"layoutType": "reference_card", "title": CARD_TITLE,
                    "text": "14:30 Keynote · main stage\n15:15 Demos · room 2\n16:00 Panel · room 1"});
                send(&mut ws, display("main", card))?;
            }
            Some("data_stream") if m["streamType"] == "touch_event" => {
                let gesture = m["data"]["gesture_name"].as_str().unwrap_or("");
                if let Some(layout) = layout_for(gesture) {
                    send(&mut ws, display("main", layout))?;
                }
            }
            _ => {}
        }
    }
}

/// What the app shows for each touch gesture: every other layout of PROTOCOL §7.
fn layout_for(gesture: &str) -> Option<Value> {
    let b64 = |b: Vec<u8>| augmentos_edge::auth::base64::encode(&b);
    Some(match gesture {
        "single_tap" => json!({"layoutType": "double_text_wall",
            "topText": "Now: Keynote", "bottomText": "Next: Demos at 15:15"}),
        "double_tap" => json!({"layoutType": "dashboard_card",
            "leftText": "Hall B", "rightText": "14:30"}),
        "triple_tap" => {
            json!({"layoutType": "bitmap_view", "data": b64(bmp(|x, y| (x / 4 + y / 4) % 2 == 0))})
        }
        "long_press" => json!({"layoutType": "bitmap_animation", "interval": 200, "repeat": true,
            "frames": [b64(bmp(|x, _| x < 32)), b64(bmp(|x, _| x >= 32))]}),
        "forward_swipe" => json!({"layoutType": "clear_view"}),
        _ => return None,
    })
}

/// A 64 × 16 24-bit BMP, green where `on`.
fn bmp(on: impl Fn(u32, u32) -> bool) -> Vec<u8> {
    let (w, h) = (64u32, 16u32);
    let row = (w * 3).div_ceil(4) * 4;
    let size = 54 + row * h;
    let mut b = Vec::with_capacity(size as usize);
    b.extend_from_slice(b"BM");
    for v in [size, 0, 54, 40] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&w.to_le_bytes());
    b.extend_from_slice(&h.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&24u16.to_le_bytes());
    for v in [0u32, row * h, 2835, 2835, 0, 0] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    for y in (0..h).rev() {
        for x in 0..w {
            let px: [u8; 3] = if on(x, y) { [0, 255, 0] } else { [0, 0, 0] };
            b.extend_from_slice(&px);
        }
        b.resize(b.len() + (row - w * 3) as usize, 0);
    }
    b
}
