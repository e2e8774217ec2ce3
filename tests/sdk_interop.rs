//! Interop test against the real, unmodified `@mentra/sdk@2.1.29`: the judge of whether an app
//! written with the stock SDK works against this server unchanged.
//!
//! Each test runs the real `augmentos-edge` binary (`serve --config <tmp file>`), a tungstenite
//! glasses client (over TCP, or over the Unix socket), the Node app in `tests/sdk/app.mjs` (an
//! `AppServer` subclass; it prints one JSON object per stdout line), and a publishing system app
//! played by this file (a tiny HTTP endpoint answering its `session_request` webhook, and a
//! tungstenite client that connects over the Unix socket, its only allowed address). The flow:
//! glasses `connection_init` → `connection_ack` (and `glasses_connection_state` naming Mentra
//! Live), and the server starts the system app (webhook → `tpa_connection_init` → ack);
//! `start_app` → webhook → the SDK connects, `onSession` runs, glasses see the app active;
//! `session.capabilities` is Mentra Live's (camera, no display), and after the phone's
//! `core_status_update` names an Even Realities G1, the SDK's `onCapabilitiesUpdate` fires and
//! `session.capabilities` is the G1's; a button press reaches the app and its `showTextWall` reaches the
//! glasses as a `display_event`; the SDK's `showTextWall`, `showReferenceCard`,
//! `showDoubleTextWall` and `dashboard.content.writeToMain` reach the glasses as the expected
//! `display_event`s, and a burst of 20 `showTextWall`s as at most 4, the newest last.
//!
//! Then the SDK's stream handlers, registered by the app on the button "streams" (SDK 2.1.29
//! dispatches a `data_stream` only when `streamType` equals a handler key exactly, so each check
//! fails if the server delivers under another `streamType`): `location.subscribeToStream` gets
//! at once the last of two `location_update`s the glasses sent before it subscribed;
//! `onHeadPosition` gets "down"; `onTouchEvent("double_tap")` fires for a double tap and not for
//! the single tap sent before it, which the catch-all `onTouchEvent` sees; `onAudioChunk` gets
//! two binary PCM frames whole (length and sha256 match, in order); `onTranscription` gets the
//! system app's interim then final en-US transcript and not the fr-FR one published before them;
//! `ontranslationForLanguage("es-ES", "en-US")` gets the es-ES → en-US translation and not the
//! es-ES → fr-FR one; no handler fires more often than that, and the system app is refused
//! nothing.
//!
//! Settings and storage, through the SDK's own APIs (the config declares the app's settings, a
//! `fontSize` slider defaulting to 24 and a `lang` select defaulting to "en-US", behind a group
//! heading, and a `stateDir`): at its first `onSession` the app sees exactly the two declared
//! defaults in `session.settings` (from `tpa_connection_ack`, through `getAll()` and `get()`),
//! gets them again from `session.settings.fetch()` (the SDK's `GET /appsettings/user/{pkg}`),
//! and `session.simpleStorage.get("note")` finds nothing. The test changes `fontSize` to 32 with
//! `PUT /api/settings/{pkg}` and the glasses token: `settings.onValueChange` reports 24 → 32
//! once, the AppServer's `onSettingsUpdate` hook gets it (the server's POST to its `/settings`),
//! and `events.onSettingsUpdate` fires exactly twice (that POST, and the server's
//! `settings_update` message; without the message it fires once). A button makes the app call
//! `simpleStorage.set("note", …)`; the test polls `GET /api/sdk/simple-storage/…` with the app's
//! key until the SDK's debounced PUT has arrived.
//!
//! Then `stop_app` → `onStop`; start again (the new session sees 32 in the ack and from
//! `fetch()`, and reads the note back); then the app process is SIGKILLed and a new one started
//! on the same port, and the server's restart path (grace period, webhook again) must bring
//! `onSession` back, in a process with no cache that again sees 32 and the note; the system app
//! stays connected throughout.
//!
//! Last, the server crashes: SIGKILL, then the binary is started again on the same config and
//! `stateDir`, and the glasses reconnect as the same user without sending `start_app`. The
//! server must start the app the user was running by itself (its webhook, once), the SDK's
//! `onSession` runs again, its session sees `fontSize` 32 and reads the note back (both written
//! before the crash), and a button round trip works; the system app is started and connects
//! again. Errors the old SDK session reports after the crash (its reconnection attempts) are
//! expected; any other error fails the test. After that the app says goodbye through the SDK
//! (`session.disconnect({releaseOwnership: true, reason: "clean_shutdown"})`): the glasses see
//! it stopped, and no restart webhook reaches it past the server's grace and backoff.
//!
//! Needs `node` and `npm` (Node 20). Without them the tests print a message and pass, except
//! under `CI=true`, where they fail. `tests/sdk/node_modules` is installed with `npm ci` on
//! first use. On any failure the panic message carries the server's stderr, the app's stdout
//! and stderr (which traces every WebSocket frame the SDK sends and receives), and the messages
//! the glasses and the system app last received, so the cause is visible in the test output.
//! With `SDK_INTEROP_KEEP=1` the temporary directory (config, `state/`, the server's and each
//! app process's logs, `glasses.log`, `system-app.log`, and after the crash `server-1.*`,
//! `glasses-1.log`, `system-app-1.log`) is kept for inspection.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::{Message, WebSocket};

#[path = "support/ports.rs"]
mod ports;
use ports::free_port;
#[path = "support/tools.rs"]
mod tools;
use tools::{npm_ci, runs, skip};

const PACKAGE: &str = "com.example.interop";
const USER: &str = "alice@example.com";
const API_KEY: &str = "interop-test-key-0123456789";
/// The publishing system app (a fixture in this file: webhook endpoint plus a tungstenite client
/// over the Unix socket).
const STT_PACKAGE: &str = "system.interop.transcriber";
const STT_KEY: &str = "interop-transcriber-key-9876543210";
/// The glasses-token secret (the server refuses one shorter than 16 characters).
const JWT_SECRET: &str = "test-secret-123-interop";
/// The interop app's declared `fontSize` default, and the value the user changes it to.
const FONT_DEFAULT: i64 = 24;
const FONT_CHANGED: i64 = 32;
/// The simple-storage key `app.mjs` uses, and the value it stores (non-ASCII and punctuation:
/// it travels in a button id, a JSON body and back).
const NOTE_KEY: &str = "note";
const NOTE: &str = "tea, no sugar ☕";

/// Budget for each step of the flow (a webhook, a message round trip, a process start).
const STEP: Duration = Duration::from_secs(15);
/// Budget for the restart path after the app process is killed: the server's 5 s app grace
/// period, its restart backoff, and the new Node process starting up.
const RESTART: Duration = Duration::from_secs(25);

type TestResult<T = ()> = Result<T, String>;

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

#[test]
fn real_sdk_app_with_glasses_over_tcp() {
    run_scenario(GlassesTransport::Tcp);
}

#[test]
fn real_sdk_app_with_glasses_over_unix_socket() {
    run_scenario(GlassesTransport::Unix);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GlassesTransport {
    Tcp,
    Unix,
}

fn run_scenario(transport: GlassesTransport) {
    let Some(sdk_dir) = prepare_node() else {
        return;
    };
    let mut world = match World::start(sdk_dir, transport) {
        Ok(w) => w,
        Err(e) => panic!("setup failed: {e}"),
    };
    if let Err(e) = world.flow() {
        let report = world.diagnostics();
        panic!("SDK interop ({transport:?} glasses) failed: {e}\n{report}");
    }
}

// ---------------------------------------------------------------------------------------------
// Node and npm
// ---------------------------------------------------------------------------------------------

/// Checks for `node`/`npm` and installs `tests/sdk/node_modules` if it is missing. Returns the
/// `tests/sdk` directory, or `None` when Node is unavailable outside CI (the test then passes
/// with a message). Panics under `CI=true` without Node, or when `npm ci` fails.
fn prepare_node() -> Option<PathBuf> {
    let sdk_dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("sdk");
    let missing: Vec<&str> = ["node", "npm"]
        .into_iter()
        .filter(|tool| !runs(Command::new(tool).arg("--version")))
        .collect();
    if !missing.is_empty() {
        let msg = format!(
            "SDK interop test skipped: {} not found on PATH (install Node 20 to run it)",
            missing.join(" and ")
        );
        skip(&msg);
        return None;
    }
    // One `npm ci` per test process, however many tests ask at once.
    static INSTALL: OnceLock<Result<(), String>> = OnceLock::new();
    let installed = INSTALL.get_or_init(|| npm_ci(&sdk_dir, "@mentra/sdk/package.json"));
    if let Err(e) = installed {
        panic!("{e}");
    }
    Some(sdk_dir)
}

// ---------------------------------------------------------------------------------------------
// The world: a temporary directory, the server process, the glasses, the app process
// ---------------------------------------------------------------------------------------------

/// Fields drop in order: the glasses and app processes first, then the server, and the
/// temporary directory (holding their files) last.
struct World {
    transport: GlassesTransport,
    sdk_dir: PathBuf,
    glasses: Option<Client>,
    /// The publishing system app's connection, once the server's webhook started it.
    stt: Option<Client>,
    stt_hooks: WebhookServer,
    /// Every app process started so far (the current one is last); kept for diagnostics.
    apps: Vec<AppProcess>,
    server: ServerProcess,
    /// The stderr logs of server processes killed by the test, for diagnostics.
    crashed_servers: Vec<PathBuf>,
    server_port: u16,
    app_port: u16,
    dir: TempDir,
}

impl World {
    fn start(sdk_dir: PathBuf, transport: GlassesTransport) -> TestResult<World> {
        let dir = TempDir::new()?;
        let server_port = free_port()?;
        let app_port = free_port()?;
        let config_path = dir.path.join("edge.json");
        let hashed = sha256_hex(API_KEY);
        let stt_hooks = WebhookServer::start()?;
        let cli_hash = run_cli(&["hash-key", API_KEY])?;
        if cli_hash != hashed {
            return Err(format!(
                "`augmentos-edge hash-key` printed {cli_hash:?}, expected the sha256 hex {hashed:?}"
            ));
        }
        let config = json!({
            "listen": [
                format!("127.0.0.1:{server_port}"),
                format!("unix:{}", dir.path.join("edge.sock").display()),
            ],
            "publicWsUrl": format!("ws://127.0.0.1:{server_port}"),
            "internalWsUrl": format!("ws://127.0.0.1:{server_port}"),
            "jwtSecret": JWT_SECRET,
            "stateDir": dir.path.join("state").display().to_string(),
            "apps": [{
                "packageName": PACKAGE,
                "name": "Interop",
                "publicUrl": format!("http://127.0.0.1:{app_port}"),
                "hashedApiKey": hashed,
                "isSystemApp": false,
                "permissions": ["MICROPHONE", "LOCATION", "CAMERA"],
                "allowedAddresses": [],
                // As its tpa_config.json would declare them; the group is only a heading.
                "settings": [
                    {"type": "group", "title": "Display"},
                    {"key": "fontSize", "type": "slider", "label": "Font size",
                     "defaultValue": FONT_DEFAULT, "min": 12, "max": 48},
                    {"key": "lang", "type": "select", "label": "Language",
                     "defaultValue": "en-US",
                     "options": [{"label": "English", "value": "en-US"},
                                 {"label": "German", "value": "de-DE"}]},
                ],
            }, {
                "packageName": STT_PACKAGE,
                "name": "Interop transcriber",
                "publicUrl": format!("http://127.0.0.1:{}", stt_hooks.port),
                "hashedApiKey": sha256_hex(STT_KEY),
                "isSystemApp": true,
                "permissions": ["MICROPHONE"],
                "allowedAddresses": ["unix"],
                "publishes": ["transcription", "translation"],
            }],
            "timings": { "gracePeriodMs": 60000 },
        });
        let text = serde_json::to_string_pretty(&config).map_err(|e| e.to_string())?;
        fs::write(&config_path, text).map_err(|e| format!("write config: {e}"))?;

        let server = ServerProcess::start(&dir.path, &config_path, server_port, 0)?;
        Ok(World {
            transport,
            sdk_dir,
            dir,
            server,
            crashed_servers: Vec::new(),
            server_port,
            app_port,
            glasses: None,
            stt: None,
            stt_hooks,
            apps: Vec::new(),
        })
    }

    fn glasses(&mut self) -> &mut Client {
        self.glasses.as_mut().expect("glasses connected")
    }

    fn stt(&mut self) -> &mut Client {
        self.stt.as_mut().expect("system app connected")
    }

    fn app(&mut self) -> &mut AppProcess {
        self.apps.last_mut().expect("an app process")
    }

    fn start_app_process(&mut self) -> TestResult {
        let index = self.apps.len();
        let app = AppProcess::start(&self.sdk_dir, &self.dir.path, self.app_port, index)?;
        self.apps.push(app);
        let ev = self.app().wait_event("listening", STEP, |_| true)?;
        if ev["port"] != json!(self.app_port) {
            return Err(format!("app listening line names the wrong port: {ev}"));
        }
        Ok(())
    }

    /// The whole flow; returns the first broken expectation.
    fn flow(&mut self) -> TestResult {
        let session_id = format!("{USER}-{PACKAGE}");

        // 1. Glasses connect and initialise, and name their model.
        let token = self.server.token(USER)?;
        self.connect_glasses(&token, "glasses.log")?;
        self.glasses()
            .send(json!({"type": "glasses_connection_state",
            "modelName": "Mentra Live", "status": "CONNECTED"}))?;

        // 1b. The session starts the system app: its webhook, then it connects over the Unix
        //     socket and is acknowledged.
        self.connect_system_app("system-app.log")?;

        // 2. Start the app: webhook → SDK connects → onSession; glasses see it active. The SDK
        //    sees the declared setting defaults (in the ack, and from its settings fetch), and
        //    nothing stored yet.
        self.start_app_process()?;
        self.glasses()
            .send(json!({"type": "start_app", "packageName": PACKAGE}))?;
        self.expect_session(&session_id, STEP)?;
        self.expect_session_state(FONT_DEFAULT, None)
            .map_err(|e| format!("first session: {e}"))?;
        self.glasses()
            .wait_for("app_state_change with the app active", STEP, |m| {
                m["type"] == "app_state_change" && app_is_active(m)
            })?;

        // 2b. `session.capabilities` is the glasses' model's; other glasses named mid-session
        //     reach it through `capabilities_update`.
        self.capabilities()
            .map_err(|e| format!("capabilities: {e}"))?;

        // 3. Button press → app → showTextWall → display_event at the glasses.
        self.button_round_trip("main")?;

        // 3b. The SDK's stream handlers fire with the right data: transcripts and translations
        //     published by the system app, head position, a gesture, audio, a replayed location.
        self.streams().map_err(|e| format!("streams: {e}"))?;
        // 3c. The SDK's layouts and dashboard reach the glasses as the expected display_events,
        //     and a burst of 20 text walls is coalesced by the throttle.
        self.displays_round_trip()?;
        // 3c'. The SDK's request APIs reach the glasses and settle with the glasses' replies.
        self.requests_round_trip()
            .map_err(|e| format!("requests: {e}"))?;

        // 3d. The user changes a setting; the running app hears of it.
        self.change_setting(&token)
            .map_err(|e| format!("settings change: {e}"))?;

        // 3e. The app stores a value; the SDK writes it to the server after its debounce.
        self.store_note()
            .map_err(|e| format!("simpleStorage.set: {e}"))?;

        // 4. Stop from the glasses → onStop; the glasses see the app gone.
        self.glasses()
            .send(json!({"type": "stop_app", "packageName": PACKAGE}))?;
        self.app()
            .wait_event("stop", STEP, |e| e["sessionId"] == session_id.as_str())?;
        self.glasses().wait_for(
            "app_stopped or app_state_change without the app",
            STEP,
            |m| {
                (m["type"] == "app_stopped" && m["packageName"] == PACKAGE)
                    || (m["type"] == "app_state_change" && !app_is_active(m))
            },
        )?;

        // 5. Start again → onSession again, fully wired (this also lets the webhook's HTTP
        //    response reach the server before the kill below). The new session sees the changed
        //    setting and reads back the stored value.
        self.glasses()
            .send(json!({"type": "start_app", "packageName": PACKAGE}))?;
        self.expect_session(&session_id, STEP)?;
        self.expect_session_state(FONT_CHANGED, Some(NOTE))
            .map_err(|e| format!("session after stop_app and start_app: {e}"))?;
        self.glasses()
            .wait_for("app_state_change with the app active again", STEP, |m| {
                m["type"] == "app_state_change" && app_is_active(m)
            })?;
        self.button_round_trip("again")?;

        // 6. The app process dies (SIGKILL: no close frame, no ownership_release). A new process
        //    on the same port must get a new webhook from the server's restart path; it has no
        //    cache, so what it reads comes from the server.
        let killed_at = Instant::now();
        self.app().kill();
        self.start_app_process()?;
        let left = RESTART.saturating_sub(killed_at.elapsed());
        self.expect_session(&session_id, left.max(Duration::from_secs(1)))
            .map_err(|e| format!("restart path: {e}"))?;
        self.expect_session_state(FONT_CHANGED, Some(NOTE))
            .map_err(|e| format!("restart path: {e}"))?;
        // The restarted app is fully wired: its subscriptions and displays work. (Another button
        // id, so a late duplicate display from step 3 cannot satisfy this check.)
        self.button_round_trip("restart")
            .map_err(|e| format!("after restart: {e}"))?;

        // 7. The system app stayed connected through all of it, and was never refused.
        self.stt()
            .expect_none("a close or an error", Duration::from_millis(300), |m| {
                m["type"] == "tpa_connection_error"
            })?;

        // 8. The server crashes and starts again on the same config (same stateDir).
        self.server_crash(&token, &session_id)
            .map_err(|e| format!("after the server crash: {e}"))?;

        // 9. The app says goodbye through the SDK (`ownership_release`, then its close): a
        //    stop, not a crash — the glasses see it stopped, and no restart webhook follows.
        self.goodbye()
            .map_err(|e| format!("ownership_release: {e}"))?;
        Ok(())
    }

    /// Connects the glasses (over the scenario's transport) with `token`, sends
    /// `connection_init` and checks the `connection_ack`.
    fn connect_glasses(&mut self, token: &str, log_name: &str) -> TestResult {
        let log = self.dir.path.join(log_name);
        let glasses = match self.transport {
            GlassesTransport::Tcp => Client::glasses_tcp(self.server_port, token, &log)?,
            GlassesTransport::Unix => {
                Client::glasses_unix(&self.dir.path.join("edge.sock"), token, &log)?
            }
        };
        self.glasses = Some(glasses);
        self.glasses().send(json!({"type": "connection_init"}))?;
        let ack = self
            .glasses()
            .wait_for("connection_ack", STEP, |m| m["type"] == "connection_ack")?;
        if ack["sessionId"] != USER {
            return Err(format!(
                "connection_ack sessionId should be {USER:?}: {ack}"
            ));
        }
        if !ack["userSession"].is_object() {
            return Err(format!("connection_ack has no userSession object: {ack}"));
        }
        Ok(())
    }

    /// Answers the server's `session_request` webhook for the system app, then connects it
    /// over the Unix socket with `tpa_connection_init` and waits for the ack.
    fn connect_system_app(&mut self, log_name: &str) -> TestResult {
        let stt_session = format!("{USER}-{STT_PACKAGE}");
        let (line, body) = self.stt_hooks.next(STEP)?;
        if !line.starts_with("POST /webhook ") {
            return Err(format!(
                "system app webhook: unexpected request line {line:?}"
            ));
        }
        let ws_url = format!("ws://127.0.0.1:{}/app-ws", self.server_port);
        if body["type"] != "session_request"
            || body["sessionId"] != stt_session.as_str()
            || body["userId"] != USER
            || body["mentraOSWebsocketUrl"] != ws_url.as_str()
        {
            return Err(format!(
                "system app webhook: expected a session_request for {stt_session:?} naming \
                 {ws_url:?} (internalWsUrl): {body}"
            ));
        }
        let log = self.dir.path.join(log_name);
        let mut stt = Client::system_app_unix(&self.dir.path.join("edge.sock"), &log)?;
        stt.send(json!({
            "type": "tpa_connection_init",
            "packageName": STT_PACKAGE,
            "sessionId": stt_session,
            "apiKey": STT_KEY,
            "timestamp": "2025-01-01T00:00:00.000Z",
        }))?;
        self.stt = Some(stt);
        let ack = self.stt().wait_for("tpa_connection_ack", STEP, |m| {
            m["type"] == "tpa_connection_ack" || m["type"] == "tpa_connection_error"
        })?;
        if ack["type"] != "tpa_connection_ack" || ack["sessionId"] != stt_session.as_str() {
            return Err(format!("system app init was not acknowledged: {ack}"));
        }
        Ok(())
    }

    /// Step 3b. The app registers its stream handlers on the button "streams"; the glasses
    /// seeing its text wall afterwards means the server has applied the subscriptions.
    fn streams(&mut self) -> TestResult {
        // A location the app has not subscribed to yet: two updates, the last one counts.
        self.glasses().send(json!({
            "type": "location_update", "lat": 48.137, "lng": 11.575,
            "timestamp": "2025-01-01T00:00:00.000Z",
        }))?;
        self.glasses().send(json!({
            "type": "location_update", "lat": 52.52, "lng": 13.405, "accuracy": 5,
            "timestamp": "2025-01-01T00:00:01.000Z",
        }))?;
        self.button_round_trip("streams")?;
        let subscribed = self.app().wait_event("subscribed", STEP, |e| {
            e["streams"]
                .as_array()
                .is_some_and(|s| s.iter().any(|x| x == "audio_chunk"))
        })?;
        let mut registered: Vec<&str> = subscribed["streams"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        registered.sort_unstable();
        let expected = [
            "audio_chunk",
            "button_press",
            "head_position",
            "location_update",
            "touch_event",
            "touch_event:double_tap",
            "transcription:en-US",
            "translation:es-ES-to-en-US",
        ];
        if registered != expected {
            return Err(format!(
                "the SDK registered other handler keys than expected {expected:?}: {subscribed}"
            ));
        }

        // Location: the last update is replayed at once; the glasses send no other.
        let loc = self.app().wait_event("location", STEP, |_| true)?;
        if loc["lat"] != json!(52.52) || loc["lng"] != json!(13.405) {
            return Err(format!(
                "location.subscribeToStream got {loc}, expected the last update (52.52, 13.405)"
            ));
        }

        // Head position ("down": the SDK would substitute "up" for a malformed one).
        self.glasses().send(json!({
            "type": "head_position", "position": "down",
            "timestamp": "2025-01-01T00:00:02.000Z",
        }))?;
        let head = self.app().wait_event("head", STEP, |_| true)?;
        if head["position"] != "down" {
            return Err(format!(
                "onHeadPosition got {head}, expected position \"down\""
            ));
        }

        // Touch: a single tap then a double tap. The catch-all handler sees both, in order;
        // the `double_tap` handler only the double tap (the single tap came first on the same
        // connection, so had it fired, it would be the first "touch" event).
        for gesture in ["single_tap", "double_tap"] {
            self.glasses().send(json!({
                "type": "touch_event", "device_model": "Even Realities G1",
                "gesture_name": gesture, "timestamp": "2025-01-01T00:00:03.000Z",
            }))?;
        }
        for gesture in ["single_tap", "double_tap"] {
            let any = self.app().wait_event("touch_any", STEP, |_| true)?;
            if any["gesture"] != gesture {
                return Err(format!(
                    "onTouchEvent(handler) got {any}, expected the {gesture} next"
                ));
            }
        }
        let touch = self.app().wait_event("touch", STEP, |_| true)?;
        if touch["gesture"] != "double_tap" {
            return Err(format!(
                "onTouchEvent(\"double_tap\", handler) fired for another gesture: {touch}"
            ));
        }

        // Audio: two binary PCM frames, each delivered whole, byte for byte, in order.
        let frames = [pcm_frame(3200, 1), pcm_frame(1600, 2)];
        for frame in &frames {
            self.glasses().send_binary(frame)?;
        }
        for (i, frame) in frames.iter().enumerate() {
            let audio = self.app().wait_event("audio", STEP, |_| true)?;
            let sha = sha256_bytes_hex(frame);
            if audio["bytes"] != json!(frame.len()) || audio["sha256"] != sha.as_str() {
                return Err(format!(
                    "onAudioChunk call {i} got {audio}, expected {} bytes with sha256 {sha}",
                    frame.len()
                ));
            }
        }

        // Transcripts from the system app: a French one first (the app listens to en-US
        // only), then an interim and a final English one.
        for (text, lang, is_final) in [
            ("bonjour", "fr-FR", true),
            ("hello wor", "en-US", false),
            ("hello world", "en-US", true),
        ] {
            self.stt().send(json!({
                "type": "data_stream",
                "streamType": "transcription",
                "data": {
                    "type": "transcription", "text": text, "isFinal": is_final,
                    "startTime": 1200, "endTime": 2100, "transcribeLanguage": lang,
                },
            }))?;
        }
        for (text, is_final) in [("hello wor", false), ("hello world", true)] {
            let t = self.app().wait_event("transcription", STEP, |_| true)?;
            if t["text"] != text || t["isFinal"] != is_final || t["transcribeLanguage"] != "en-US" {
                return Err(format!(
                    "onTranscription got {t}, expected {text:?} with isFinal {is_final} next"
                ));
            }
        }

        // Translations: es-ES → fr-FR first (not the app's pair), then es-ES → en-US.
        for (text, to) in [("bonjour", "fr-FR"), ("hello", "en-US")] {
            self.stt().send(json!({
                "type": "data_stream",
                "streamType": "translation",
                "data": {
                    "type": "translation", "text": text, "originalText": "hola",
                    "isFinal": true, "startTime": 3000, "endTime": 3500, "didTranslate": true,
                    "transcribeLanguage": "es-ES", "translateLanguage": to,
                },
            }))?;
        }
        let t = self.app().wait_event("translation", STEP, |_| true)?;
        if t["text"] != "hello"
            || t["originalText"] != "hola"
            || t["isFinal"] != true
            || t["transcribeLanguage"] != "es-ES"
            || t["translateLanguage"] != "en-US"
        {
            return Err(format!(
                "ontranslationForLanguage(\"es-ES\", \"en-US\") got {t}, expected the es-ES → en-US \
                 translation \"hello\""
            ));
        }

        // Nothing more: one more button round trip orders everything before it, then no
        // handler may have fired again (a second touch, a third transcript, a second
        // translation or location, a third audio chunk).
        self.button_round_trip("streams-done")?;
        for name in [
            "touch",
            "touch_any",
            "transcription",
            "translation",
            "location",
            "audio",
            "head",
        ] {
            if let Some(extra) = self.app().take_pending(name) {
                return Err(format!("a handler fired once too often: {extra}"));
            }
        }
        // The system app was not refused anything.
        self.stt()
            .expect_none("a refusal", Duration::from_millis(200), |m| {
                m["type"] == "tpa_connection_error"
            })?;
        Ok(())
    }

    fn expect_session(&mut self, session_id: &str, within: Duration) -> TestResult {
        let ev = self
            .app()
            .wait_event("session", within, |e| e["sessionId"] == session_id)?;
        if ev["userId"] != USER {
            return Err(format!("onSession userId should be {USER:?}: {ev}"));
        }
        self.app().generation = ev["generation"].as_u64().unwrap_or(0);
        Ok(())
    }

    /// What the app's new session reports at its start: the settings the SDK kept from
    /// `tpa_connection_ack` (through `getAll()` and `get()`), the result of its
    /// `session.settings.fetch()` (GET `/appsettings/user/{pkg}`), and
    /// `simpleStorage.get("note")` (`None`: nothing stored).
    fn expect_session_state(&mut self, font: i64, note: Option<&str>) -> TestResult {
        let connected = self.app().wait_event("connected", STEP, |_| true)?;
        check_connected_event(&connected)?;
        check_settings_in_ack(&connected, font)?;
        let fetched = self.app().wait_event("settings_fetched", STEP, |_| true)?;
        if fetched["error"].is_string() || !values_are(&fetched["values"], font) {
            return Err(format!(
                "session.settings.fetch() (GET /appsettings/user/{PACKAGE}) should give fontSize \
                 {font} and lang \"en-US\": {fetched}"
            ));
        }
        let stored = self.app().wait_event("storage", STEP, |_| true)?;
        let expected = note.map_or(Value::Null, |n| json!(n));
        if stored["key"] != NOTE_KEY || stored["value"] != expected {
            return Err(format!(
                "simpleStorage.get({NOTE_KEY:?}) should give {expected}: {stored}"
            ));
        }
        Ok(())
    }

    /// Step 3d. `PUT /api/settings/{pkg}` with the glasses token changes `fontSize`. The SDK
    /// reports the change once through `settings.onValueChange`; `events.onSettingsUpdate`
    /// fires twice, once for the server's `settings_update` message and once for its POST to
    /// the AppServer's `/settings`, which alone reaches the AppServer's `onSettingsUpdate` hook.
    fn change_setting(&mut self, token: &str) -> TestResult {
        let path = format!("/api/settings/{PACKAGE}");
        let change = json!({"settings": {"fontSize": FONT_CHANGED}});
        let (status, body) = http(self.server_port, "PUT", &path, Some(token), Some(&change))?;
        if status != 200 || body["success"] != true {
            return Err(format!("PUT {path} {change} answered {status}: {body}"));
        }
        let value = self.app().wait_event("setting_value", STEP, |_| true)?;
        if value["newValue"] != json!(FONT_CHANGED) || value["oldValue"] != json!(FONT_DEFAULT) {
            return Err(format!(
                "session.settings.onValueChange(\"fontSize\") got {value}, expected \
                 {FONT_DEFAULT} → {FONT_CHANGED}"
            ));
        }
        let post = self.app().wait_event("settings_post", STEP, |_| true)?;
        if post["userId"] != USER || !values_are(&post["values"], FONT_CHANGED) {
            return Err(format!(
                "the AppServer's /settings got {post}, expected fontSize {FONT_CHANGED} for \
                 {USER:?}"
            ));
        }
        for i in 1..=2 {
            let update = self
                .app()
                .wait_event("settings_update", STEP, |_| true)
                .map_err(|e| {
                    format!(
                        "{e} (onSettingsUpdate call {i} of 2: one for the settings_update \
                         message, one for the POST to /settings)"
                    )
                })?;
            if !values_are(&update["values"], FONT_CHANGED) {
                return Err(format!(
                    "session.events.onSettingsUpdate got {update}, expected fontSize \
                     {FONT_CHANGED}"
                ));
            }
        }
        // Nothing more: a button round trip orders the app's WebSocket, then no report of
        // the change may follow.
        self.button_round_trip("settings-done")?;
        for name in ["setting_value", "settings_update", "settings_post"] {
            if let Some(extra) = self.app().take_pending(name) {
                return Err(format!(
                    "the app heard of the change once too often: {extra}"
                ));
            }
        }
        Ok(())
    }

    /// Step 3e. The button "store:<NOTE>" makes the app call `simpleStorage.set("note", NOTE)`;
    /// the SDK PUTs it after its 3 s debounce. A GET with the app's key, polled, shows when
    /// the server has it.
    fn store_note(&mut self) -> TestResult {
        self.button_round_trip(&format!("store:{NOTE}"))?;
        let stored = self.app().wait_event("stored", STEP, |_| true)?;
        if stored["value"] != NOTE {
            return Err(format!("the app stored another value: {stored}"));
        }
        let path = format!(
            "/api/sdk/simple-storage/{}/{NOTE_KEY}",
            USER.replace('@', "%40")
        );
        let auth = format!("{PACKAGE}:{API_KEY}");
        let deadline = Instant::now() + STEP;
        loop {
            let (status, body) = http(self.server_port, "GET", &path, Some(&auth), None)?;
            match status {
                200 if body["data"][NOTE_KEY] == NOTE => return Ok(()),
                200 => return Err(format!("GET {path} answered another value: {body}")),
                404 if Instant::now() < deadline => thread::sleep(Duration::from_millis(100)),
                _ => {
                    return Err(format!(
                        "GET {path} answered {status}: {body} (the SDK's PUT did not arrive \
                         within {STEP:?})"
                    ))
                }
            }
        }
    }

    /// Step 8. SIGKILL the server, start it again on the same config (same `stateDir`), and
    /// reconnect the glasses as the same user. Nobody sends `start_app`: the server must start
    /// the app the user was running by itself (its webhook), once, and the app's new session
    /// must see the changed setting and the stored value, both written before the crash.
    fn server_crash(&mut self, token: &str, session_id: &str) -> TestResult {
        // The app's current session loses its socket; the SDK's reconnection attempts may be
        // refused or fail, and those errors are expected.
        let generation = self.app().generation;
        self.app().stale_through = generation;
        self.server.crash();
        self.glasses = None;
        self.stt = None;
        self.crashed_servers.push(self.server.stderr_path.clone());
        let config = self.server.config_path.clone();
        let index = self.crashed_servers.len();
        self.server = ServerProcess::start(&self.dir.path, &config, self.server_port, index)?;
        self.connect_glasses(token, "glasses-1.log")?;
        self.connect_system_app("system-app-1.log")?;
        self.expect_session(session_id, STEP)
            .map_err(|e| format!("the running app was not started again: {e}"))?;
        self.expect_session_state(FONT_CHANGED, Some(NOTE))?;
        self.button_round_trip("after-crash")?;
        if let Some(extra) = self.app().take_pending("session") {
            return Err(format!("the app was started more than once: {extra}"));
        }
        self.stt()
            .expect_none("a refusal", Duration::from_millis(200), |m| {
                m["type"] == "tpa_connection_error"
            })?;
        Ok(())
    }

    /// Step 2b: the session's `session.capabilities` (from the ack) are Mentra Live's, named by
    /// the glasses before the app started (a camera, no display); the phone's
    /// `core_status_update` then names an Even Realities G1, and after the SDK's
    /// `onCapabilitiesUpdate` fires, `session.capabilities` is the G1's (a display, no camera).
    fn capabilities(&mut self) -> TestResult {
        let ack = self
            .app()
            .wait_event("capabilities", STEP, |e| e["source"] == "ack")?;
        if ack["modelName"] != "Mentra Live"
            || ack["hasCamera"] != true
            || ack["hasDisplay"] != false
        {
            return Err(format!("session.capabilities after the ack: {ack}"));
        }
        self.glasses()
            .send(json!({"type": "core_status_update", "status": {"status": {
            "core_info": {}, "connected_glasses": {"model_name": "Even Realities G1"}}}}))?;
        let update = self
            .app()
            .wait_event("capabilities", STEP, |e| e["source"] == "update")?;
        if update["modelName"] != "Even Realities G1"
            || update["hasCamera"] != false
            || update["hasDisplay"] != true
        {
            return Err(format!("session.capabilities after the update: {update}"));
        }
        Ok(())
    }

    /// Step 9: the button "goodbye" makes the app call `session.disconnect({releaseOwnership:
    /// true, reason: "clean_shutdown"})`. The glasses must be told the app stopped, and past
    /// the server's reconnect grace and restart backoff (5 s + 1 s) no new `session_request`
    /// may reach the app (it would log a "session").
    fn goodbye(&mut self) -> TestResult {
        self.button_round_trip("goodbye")?;
        self.app().wait_event("released", STEP, |_| true)?;
        self.glasses()
            .wait_for("app_stopped for the app", STEP, |m| {
                m["type"] == "app_stopped" && m["packageName"] == PACKAGE
            })?;
        match self
            .app()
            .wait_event("session", Duration::from_secs(9), |_| true)
        {
            Ok(again) => Err(format!("the app was restarted after its goodbye: {again}")),
            // The wait ran out: no session_request came.
            Err(e) if e.contains("did not log a matching") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Presses button `button_id` until the app reports it, then waits for the app's text wall
    /// ("pressed <id>") at the glasses. The press is repeated (once a second) because the app's
    /// `subscription_update` travels on its own connection: the glasses may learn the app is
    /// active a moment before the server has applied its `button_press` subscription.
    fn button_round_trip(&mut self, button_id: &str) -> TestResult {
        let press = json!({
            "type": "button_press",
            "buttonId": button_id,
            "pressType": "short",
            "timestamp": "2025-01-01T00:00:00.000Z",
        });
        let deadline = Instant::now() + STEP;
        let mut presses = 0;
        let button = loop {
            self.glasses().send(press.clone())?;
            presses += 1;
            match self
                .app()
                .wait_event("button", Duration::from_secs(1), |e| {
                    e["buttonId"] == button_id
                }) {
                Ok(ev) => break ev,
                Err(_) if Instant::now() < deadline => continue,
                Err(e) => return Err(format!("{e} (after {presses} presses)")),
            }
        };
        if button["buttonId"] != button_id || button["pressType"] != "short" {
            return Err(format!("the app saw a different press: {button}"));
        }
        let text = format!("pressed {button_id}");
        self.glasses().wait_for(
            &format!("display_event with text wall {text:?}"),
            STEP,
            |m| {
                m["type"] == "display_event"
                    && m["packageName"] == PACKAGE
                    && m["view"] == "main"
                    && m["layout"]["layoutType"] == "text_wall"
                    && m["layout"]["text"] == text.as_str()
            },
        )?;
        Ok(())
    }

    /// Button "requests" makes the app call `playAudio`, `getLatestLocation` and `requestPhoto`
    /// on the stock SDK. The glasses see each request in its 2.1.29 shape and answer it: the
    /// audio and location promises resolve with the glasses' values; the photo, failed by the
    /// glasses, is rejected with their code, which the SDK can only have learnt from the
    /// server's POST to its AppServer's `/photo-upload`.
    fn requests_round_trip(&mut self) -> TestResult {
        // Not `button_round_trip`: it reads past (and drops) what reaches the glasses before the
        // display it waits for, and the requests are among that.
        self.glasses()
            .send(json!({"type": "button_press", "buttonId": "requests",
            "pressType": "short", "timestamp": "2025-01-01T00:00:00.000Z"}))?;
        let mut audio = None;
        let mut poll = None;
        let mut photo = None;
        let deadline = Instant::now() + STEP;
        while audio.is_none() || poll.is_none() || photo.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = self.glasses().wait_for("the app's requests", left, |m| {
                matches!(
                    m["type"].as_str(),
                    Some("audio_play_request" | "request_single_location" | "photo_request")
                )
            })?;
            match m["type"].as_str() {
                Some("audio_play_request") => audio = Some(m),
                Some("request_single_location") => poll = Some(m),
                _ => photo = Some(m),
            }
        }
        let (audio, poll, photo) = (audio.unwrap(), poll.unwrap(), photo.unwrap());
        if audio["appId"] != PACKAGE || audio["audioUrl"] != "http://media.example/a.mp3" {
            return Err(format!("audio_play_request: {audio}"));
        }
        let photo_id = photo["requestId"].as_str().unwrap_or("");
        let hook = format!("http://127.0.0.1:{}/photo-upload", self.app_port);
        if !photo_id.starts_with("photo_req_") || photo["webhookUrl"] != hook.as_str() {
            return Err(format!("photo_request (want webhookUrl {hook}): {photo}"));
        }
        self.glasses().send(json!({"type": "audio_play_response",
            "requestId": audio["requestId"], "success": true, "duration": 1.5}))?;
        self.glasses()
            .send(json!({"type": "location_update", "lat": 52.5, "lng": 13.4,
            "accuracy": 5, "correlationId": poll["correlationId"]}))?;
        self.glasses()
            .send(json!({"type": "photo_response", "requestId": photo_id,
            "success": false, "error": {"code": "CAMERA_BUSY", "message": "camera in use"}}))?;
        let ev = self.app().wait_event("audio_result", STEP, |_| true)?;
        if ev["value"]["success"] != true || ev["value"]["duration"] != 1.5 {
            return Err(format!("playAudio settled with {ev}"));
        }
        let ev = self.app().wait_event("location_result", STEP, |_| true)?;
        if ev["value"]["lat"] != 52.5 || ev["value"]["correlationId"] != poll["correlationId"] {
            return Err(format!("getLatestLocation settled with {ev}"));
        }
        let ev = self.app().wait_event("photo_result", STEP, |_| true)?;
        if !ev["error"]
            .as_str()
            .is_some_and(|e| e.contains("CAMERA_BUSY"))
        {
            return Err(format!("requestPhoto settled with {ev}"));
        }
        Ok(())
    }

    /// Button "displays" makes the app show a text wall, a reference card, a double text wall,
    /// write to the dashboard, then send 20 text walls at once: each of the first four reaches
    /// the glasses as its `display_event`; the burst reaches them as at most 4, the newest last.
    fn displays_round_trip(&mut self) -> TestResult {
        self.button_round_trip("displays")?;
        let from_app = |m: &Value, layout_type: &str| {
            m["type"] == "display_event"
                && m["packageName"] == PACKAGE
                && m["view"] == "main"
                && m["layout"]["layoutType"] == layout_type
        };
        self.glasses()
            .wait_for("the SDK's showTextWall", STEP, |m| {
                from_app(m, "text_wall") && m["layout"]["text"] == "interop text wall"
            })?;
        self.glasses()
            .wait_for("the SDK's showReferenceCard", STEP, |m| {
                from_app(m, "reference_card")
                    && m["layout"]["title"] == "Interop"
                    && m["layout"]["text"] == "reference card body"
            })?;
        self.glasses()
            .wait_for("the SDK's showDoubleTextWall", STEP, |m| {
                from_app(m, "double_text_wall")
                    && m["layout"]["topText"] == "top half"
                    && m["layout"]["bottomText"] == "bottom half"
            })?;
        self.glasses()
            .wait_for("the dashboard with the SDK's writeToMain", STEP, |m| {
                m["type"] == "display_event"
                    && m["view"] == "dashboard"
                    && m["layout"]["layoutType"] == "double_text_wall"
                    && m["layout"]["bottomText"]
                        .as_str()
                        .is_some_and(|t| t.ends_with("interop dashboard"))
            })?;
        let mut burst = Vec::new();
        while burst.last().map(String::as_str) != Some("burst 19") {
            let m = self
                .glasses()
                .wait_for("the burst's newest text wall", STEP, |m| {
                    from_app(m, "text_wall")
                        && m["layout"]["text"]
                            .as_str()
                            .is_some_and(|t| t.starts_with("burst "))
                })?;
            burst.push(m["layout"]["text"].as_str().unwrap_or("").to_string());
        }
        if burst.len() > 4 {
            return Err(format!(
                "a burst of 20 text walls reached the glasses as {} displays: {burst:?}",
                burst.len()
            ));
        }
        self.app()
            .wait_event("displays", STEP, |e| e["sessionId"].is_string())?;
        Ok(())
    }

    fn diagnostics(&self) -> String {
        let mut out = String::new();
        for (i, path) in self.crashed_servers.iter().enumerate() {
            out += &format!(
                "--- server process #{i} (killed by the test) stderr, last lines:\n{}\n",
                tail_file(path, 40)
            );
        }
        out += &format!(
            "--- server (port {}, dir {}) stderr, last lines:\n{}\n",
            self.server_port,
            self.dir.path.display(),
            tail_file(&self.server.stderr_path, 60)
        );
        for client in [&self.glasses, &self.stt].into_iter().flatten() {
            out += &format!("--- {}: last messages received:\n", client.who);
            for m in &client.seen {
                out += m;
                out.push('\n');
            }
        }
        for app in &self.apps {
            out +=
                &format!(
                "--- app process #{} stdout:\n{}\n--- app process #{} stderr, last lines:\n{}\n",
                app.index,
                app.stdout_lines.lock().map(|l| l.join("\n")).unwrap_or_default(),
                app.index,
                tail_file(&app.stderr_path, 40)
            );
        }
        out
    }
}

fn app_is_active(msg: &Value) -> bool {
    msg["userSession"]["activeAppPackageNames"]
        .as_array()
        .is_some_and(|a| a.iter().any(|p| p == PACKAGE))
}

/// `{fontSize, lang}` as the app reported them: `fontSize` is `font`, `lang` its default.
fn values_are(values: &Value, font: i64) -> bool {
    values["fontSize"] == json!(font) && values["lang"] == "en-US"
}

/// The declared settings as the SDK kept them from `tpa_connection_ack`: exactly `fontSize` and
/// `lang` (the group is only a heading), each with its `defaultValue` and current `value`, read
/// through `settings.getAll()` and through `settings.get(key)`.
fn check_settings_in_ack(ev: &Value, font: i64) -> TestResult {
    let all = ev["settings"].as_array().cloned().unwrap_or_default();
    let mut keys: Vec<&str> = all.iter().filter_map(|s| s["key"].as_str()).collect();
    keys.sort_unstable();
    let setting = |key: &str| all.iter().find(|s| s["key"] == key).cloned();
    let font_setting = setting("fontSize").unwrap_or_default();
    let lang_setting = setting("lang").unwrap_or_default();
    if keys != ["fontSize", "lang"]
        || all.len() != 2
        || font_setting["value"] != json!(font)
        || font_setting["defaultValue"] != json!(FONT_DEFAULT)
        || lang_setting["value"] != "en-US"
        || lang_setting["defaultValue"] != "en-US"
        || !values_are(&ev["values"], font)
    {
        return Err(format!(
            "the SDK's settings from tpa_connection_ack should be fontSize {font} (default \
             {FONT_DEFAULT}) and lang \"en-US\": {ev}"
        ));
    }
    Ok(())
}

/// What the SDK kept from `tpa_connection_ack`: `settings` is an array, and
/// `mentraosSettings` was present (the SDK warns when it is missing, and apps read it).
fn check_connected_event(ev: &Value) -> TestResult {
    if !ev["settings"].is_array() {
        return Err(format!("the SDK saw no settings array in the ack: {ev}"));
    }
    if !ev["mentraosSettings"].is_object()
        || ev["mentraosSettings"]
            .as_object()
            .is_some_and(|o| o.is_empty())
    {
        return Err(format!(
            "the SDK saw no mentraosSettings in tpa_connection_ack: {ev}"
        ));
    }
    let caps = &ev["capabilities"];
    if !caps.is_null() && !caps["modelName"].is_string() {
        return Err(format!(
            "capabilities in the ack are not an SDK Capabilities object: {ev}"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------------

/// The `augmentos-edge` binary serving the test config; killed on drop.
struct ServerProcess {
    child: Child,
    config_path: PathBuf,
    stderr_path: PathBuf,
}

impl ServerProcess {
    /// Starts server process number `index` (0 first; its logs are `server.stderr` and
    /// `server.stdout`, later ones `server-<index>.*`) and waits until it listens.
    fn start(dir: &Path, config_path: &Path, port: u16, index: usize) -> TestResult<ServerProcess> {
        let name = match index {
            0 => "server".to_string(),
            n => format!("server-{n}"),
        };
        let stderr_path = dir.join(format!("{name}.stderr"));
        let stderr = File::create(&stderr_path).map_err(|e| e.to_string())?;
        let stdout = File::create(dir.join(format!("{name}.stdout"))).map_err(|e| e.to_string())?;
        let child = Command::new(env!("CARGO_BIN_EXE_augmentos-edge"))
            .arg("serve")
            .arg("--config")
            .arg(config_path)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start the server binary: {e}"))?;
        let mut server = ServerProcess {
            child,
            config_path: config_path.to_path_buf(),
            stderr_path,
        };
        let sock = dir.join("edge.sock");
        let deadline = Instant::now() + STEP;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!(
                    "the server exited at start ({status}):\n{}",
                    tail_file(&server.stderr_path, 40)
                ));
            }
            let tcp_up = TcpStream::connect(("127.0.0.1", port)).is_ok();
            let unix_up = UnixStream::connect(&sock).is_ok();
            if tcp_up && unix_up {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the server did not listen on 127.0.0.1:{port} and {} within {STEP:?}:\n{}",
                    sock.display(),
                    tail_file(&server.stderr_path, 40)
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: a crash. The server gets no chance to finish its writes or close anything.
    fn crash(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `augmentos-edge token --user USER --config CFG` → the glasses JWT.
    fn token(&self, user: &str) -> TestResult<String> {
        let config = self.config_path.to_string_lossy();
        run_cli(&["token", "--user", user, "--config", &config])
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The Node app process
// ---------------------------------------------------------------------------------------------

/// One `node app.mjs` process. Its stdout lines (one JSON object each) arrive on a channel;
/// they are also kept as text for diagnostics. Killed on drop.
struct AppProcess {
    index: usize,
    child: Child,
    events: Receiver<Value>,
    /// Events read from the channel but not yet asked for.
    pending: VecDeque<Value>,
    /// The `generation` of the last `session` event the test waited for (`onSession` calls of
    /// this process, counted from 1).
    generation: u64,
    /// `error` events of sessions up to this generation are expected (the test has given those
    /// sessions up, e.g. the SDK's reconnection attempts after a server crash) and kept
    /// instead of failing the wait; 0: none.
    stale_through: u64,
    stdout_lines: Arc<Mutex<Vec<String>>>,
    stderr_path: PathBuf,
}

impl AppProcess {
    fn start(sdk_dir: &Path, dir: &Path, port: u16, index: usize) -> TestResult<AppProcess> {
        let stderr_path = dir.join(format!("app-{index}.stderr"));
        let stderr = File::create(&stderr_path).map_err(|e| e.to_string())?;
        let mut child = Command::new("node")
            .arg("app.mjs")
            .current_dir(sdk_dir)
            .env("PORT", port.to_string())
            .env("PACKAGE_NAME", PACKAGE)
            .env("API_KEY", API_KEY)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start `node app.mjs`: {e}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut copy = File::create(dir.join(format!("app-{index}.stdout"))).ok();
        let (tx, events) = mpsc::channel();
        let stdout_lines = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&stdout_lines);
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(f) = copy.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                if let Ok(mut l) = lines.lock() {
                    l.push(line.clone());
                }
                // Lines that are not an event object are kept for diagnostics only.
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["event"].is_string() && tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        Ok(AppProcess {
            index,
            child,
            events,
            pending: VecDeque::new(),
            generation: 0,
            stale_through: 0,
            stdout_lines,
            stderr_path,
        })
    }

    /// Waits for the next event named `name` that satisfies `pred`; other events are kept for
    /// later calls, except `error` events which fail at once (unless they belong to a session
    /// of generation `stale_through` or older).
    fn wait_event(
        &mut self,
        name: &str,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> TestResult<Value> {
        let matches = |v: &Value| v["event"] == name && pred(v);
        if let Some(i) = self.pending.iter().position(matches) {
            return Ok(self.pending.remove(i).expect("index in range"));
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) if matches(&v) => return Ok(v),
                Ok(v)
                    if v["event"] == "error"
                        && v["generation"]
                            .as_u64()
                            .is_some_and(|g| g <= self.stale_through) =>
                {
                    self.pending.push_back(v)
                }
                Ok(v) if v["event"] == "error" || v["event"] == "fatal" => {
                    return Err(format!(
                        "app #{} reported an error while waiting for {name:?}: {v}",
                        self.index
                    ));
                }
                Ok(v) => self.pending.push_back(v),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "app #{} did not log a matching {name:?} event within {within:?}",
                        self.index
                    ));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.try_wait().ok().flatten();
                    return Err(format!(
                        "app #{} closed its stdout (exit status {status:?}) while waiting for {name:?}",
                        self.index
                    ));
                }
            }
        }
    }

    /// Removes and returns the first event named `name` the app logged so far and no call
    /// asked for (reading what is already on the channel, without waiting).
    fn take_pending(&mut self, name: &str) -> Option<Value> {
        while let Ok(v) = self.events.try_recv() {
            self.pending.push_back(v);
        }
        let i = self.pending.iter().position(|v| v["event"] == name)?;
        self.pending.remove(i)
    }

    /// SIGKILL: the app gets no chance to close its WebSocket.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AppProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// The system app's webhook endpoint
// ---------------------------------------------------------------------------------------------

/// A tiny HTTP server standing in for the system app's server: every request is answered
/// `200 {"status":"success"}` (what an SDK `AppServer` answers) and handed to the test as
/// (request line, JSON body). The system app's WebSocket side is driven by the test itself.
struct WebhookServer {
    port: u16,
    requests: Receiver<TestResult<(String, Value)>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl WebhookServer {
    fn start() -> TestResult<WebhookServer> {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let (tx, requests) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if tx.send(answer_webhook(stream)).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => {
                        let _ = tx.send(Err(format!("webhook accept: {e}")));
                        return;
                    }
                }
            }
        });
        Ok(WebhookServer {
            port,
            requests,
            stop,
            thread: Some(thread),
        })
    }

    fn next(&self, within: Duration) -> TestResult<(String, Value)> {
        match self.requests.recv_timeout(within) {
            Ok(r) => r,
            Err(_) => Err(format!(
                "the system app's webhook (port {}) received no request within {within:?}",
                self.port
            )),
        }
    }
}

impl Drop for WebhookServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one HTTP/1.1 message from `stream`: its head, then a `Content-Length` body.
fn read_http(stream: &mut TcpStream, what: &str) -> TestResult<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err(format!("{what} ended before its head")),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("{what} read: {e}")),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .ok_or_else(|| format!("{what} without Content-Length: {head:?}"))?;
    while buf.len() < head_end + length {
        match stream.read(&mut chunk) {
            Ok(0) => return Err(format!("{what} ended inside its body")),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("{what} body read: {e}")),
        }
    }
    Ok((head, buf[head_end..head_end + length].to_vec()))
}

/// One request to the server's REST side over TCP (`bearer` goes in `Authorization`); the
/// status and the JSON body of the answer.
fn http(
    port: u16,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&Value>,
) -> TestResult<(u16, Value)> {
    let what = format!("the answer to {method} {path}");
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .map_err(|e| format!("{method} {path}: connect: {e}"))?;
    stream
        .set_read_timeout(Some(STEP))
        .map_err(|e| e.to_string())?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(b) = bearer {
        request += &format!("Authorization: Bearer {b}\r\n");
    }
    request += "\r\n";
    request += &body;
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("{method} {path}: write: {e}"))?;
    let (head, body) = read_http(&mut stream, &what)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("{what} has no status line: {head:?}"))?;
    let json = serde_json::from_slice(&body).map_err(|e| {
        format!(
            "{what} ({status}) is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&body)
        )
    })?;
    Ok((status, json))
}

/// Reads one HTTP/1.1 request (head, then a `Content-Length` body), answers 200 and closes.
fn answer_webhook(mut stream: TcpStream) -> TestResult<(String, Value)> {
    stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(STEP)))
        .map_err(|e| e.to_string())?;
    let (head, body) = read_http(&mut stream, "webhook request")?;
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| format!("webhook body is not JSON ({e}): {head:?}"))?;
    let reply = r#"{"status":"success"}"#;
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    );
    stream
        .write_all(response.as_bytes())
        .map_err(|e| format!("webhook answer: {e}"))?;
    let line = head.lines().next().unwrap_or_default().to_string();
    Ok((line, body))
}

// ---------------------------------------------------------------------------------------------
// WebSocket clients: the glasses, and the publishing system app
// ---------------------------------------------------------------------------------------------

/// A blocking stream over either transport, so one tungstenite client serves both.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(d),
            Stream::Unix(s) => s.set_read_timeout(d),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// A tungstenite client of the server: the glasses (`/glasses-ws`) or the system app
/// (`/app-ws`, always over the Unix socket).
struct Client {
    /// "glasses" or "the system app", for messages.
    who: &'static str,
    ws: WebSocket<Stream>,
    /// The most recent text messages received, for diagnostics.
    seen: VecDeque<String>,
    /// Every message sent ("> ") and received ("< "), in the test's temporary directory.
    log: Option<File>,
}

impl Client {
    fn glasses_tcp(port: u16, token: &str, log: &Path) -> TestResult<Client> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .map_err(|e| format!("glasses TCP connect: {e}"))?;
        Client::handshake(
            "glasses",
            Stream::Tcp(stream),
            &format!("ws://127.0.0.1:{port}/glasses-ws"),
            Some(token),
            log,
        )
    }

    fn glasses_unix(path: &Path, token: &str, log: &Path) -> TestResult<Client> {
        let stream = UnixStream::connect(path).map_err(|e| format!("glasses Unix connect: {e}"))?;
        Client::handshake(
            "glasses",
            Stream::Unix(stream),
            "ws://localhost/glasses-ws",
            Some(token),
            log,
        )
    }

    /// The system app's connection: over the Unix socket (its only allowed address), no
    /// bearer (it sends `tpa_connection_init`).
    fn system_app_unix(path: &Path, log: &Path) -> TestResult<Client> {
        let stream =
            UnixStream::connect(path).map_err(|e| format!("system app Unix connect: {e}"))?;
        Client::handshake(
            "the system app",
            Stream::Unix(stream),
            "ws://localhost/app-ws",
            None,
            log,
        )
    }

    fn handshake(
        who: &'static str,
        stream: Stream,
        url: &str,
        token: Option<&str>,
        log: &Path,
    ) -> TestResult<Client> {
        stream
            .set_read_timeout(Some(STEP))
            .map_err(|e| e.to_string())?;
        let mut request = url.into_client_request().map_err(|e| e.to_string())?;
        if let Some(token) = token {
            let bearer =
                HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| e.to_string())?;
            request.headers_mut().insert("Authorization", bearer);
        }
        let (ws, response) = tungstenite::client::client(request, stream)
            .map_err(|e| format!("{who} WebSocket handshake at {url}: {e}"))?;
        // Short reads from here on, so waits are bounded by their own deadlines.
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(|e| e.to_string())?;
        if response.status().as_u16() != 101 {
            return Err(format!("{who} upgrade answered {}", response.status()));
        }
        Ok(Client {
            who,
            ws,
            seen: VecDeque::new(),
            log: File::create(log).ok(),
        })
    }

    fn send(&mut self, msg: Value) -> TestResult {
        if let Some(f) = self.log.as_mut() {
            let _ = writeln!(f, "> {msg}");
        }
        let who = self.who;
        self.ws
            .send(Message::text(msg.to_string()))
            .map_err(|e| format!("{who} send {msg}: {e}"))
    }

    fn send_binary(&mut self, bytes: &[u8]) -> TestResult {
        if let Some(f) = self.log.as_mut() {
            let _ = writeln!(f, "> binary, {} bytes", bytes.len());
        }
        let who = self.who;
        self.ws
            .send(Message::binary(bytes.to_vec()))
            .map_err(|e| format!("{who} send of {} binary bytes: {e}", bytes.len()))
    }

    /// Reads messages until one satisfies `pred`, skipping the rest.
    fn wait_for(
        &mut self,
        what: &str,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> TestResult<Value> {
        let who = self.who;
        let deadline = Instant::now() + within;
        loop {
            if Instant::now() > deadline {
                return Err(format!("{who} did not receive {what} within {within:?}"));
            }
            if let Some(v) = self.read_one(what)? {
                if pred(&v) {
                    return Ok(v);
                }
            }
        }
    }

    /// Reads what arrives within `within`; fails on any message satisfying `bad` (and on a
    /// close or a read error: the connection must stay up).
    fn expect_none(
        &mut self,
        what: &str,
        within: Duration,
        bad: impl Fn(&Value) -> bool,
    ) -> TestResult {
        let who = self.who;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(v) = self.read_one(what)? {
                if bad(&v) {
                    return Err(format!("{who} received {what}: {v}"));
                }
            }
        }
        Ok(())
    }

    /// One read (at most the 200 ms read timeout): a JSON text message, or `None` for a
    /// timeout or a non-text frame.
    fn read_one(&mut self, what: &str) -> TestResult<Option<Value>> {
        let who = self.who;
        match self.ws.read() {
            Ok(Message::Text(text)) => {
                let text = text.as_str();
                if let Some(f) = self.log.as_mut() {
                    let _ = writeln!(f, "< {text}");
                }
                if self.seen.len() == 40 {
                    self.seen.pop_front();
                }
                self.seen.push_back(truncate(text, 600));
                match serde_json::from_str::<Value>(text) {
                    Ok(v) => Ok(Some(v)),
                    Err(_) => Err(format!(
                        "{who} received a text frame that is not JSON: {text:?}"
                    )),
                }
            }
            Ok(Message::Close(frame)) => Err(format!(
                "the server closed the socket of {who} ({frame:?}) while waiting for {what}"
            )),
            Ok(_) => Ok(None),
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                Ok(None)
            }
            Err(e) => Err(format!("{who} read failed while waiting for {what}: {e}")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// Runs the server binary with `args`; its stdout must be one non-empty word (a hash, a token).
fn run_cli(args: &[&str]) -> TestResult<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_augmentos-edge"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `augmentos-edge {}`: {e}", args[0]))?;
    let word = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || word.is_empty() || word.contains(char::is_whitespace) {
        return Err(format!(
            "`augmentos-edge {}` failed ({}): stdout {word:?}, stderr {:?}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(word)
}

fn sha256_hex(s: &str) -> String {
    sha256_bytes_hex(s.as_bytes())
}

fn sha256_bytes_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `len` bytes of 16-bit little-endian mono PCM: a sawtooth with a per-frame `seed`, so no two
/// frames (and no two halves of one) are alike.
fn pcm_frame(len: usize, seed: u16) -> Vec<u8> {
    (0..len / 2)
        .flat_map(|i| {
            let sample = (i as u16)
                .wrapping_mul(523)
                .wrapping_add(seed.wrapping_mul(7919));
            sample.to_le_bytes()
        })
        .collect()
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn tail_file(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..]
                .iter()
                .map(|l| truncate(l, 400))
                .collect::<Vec<_>>()
                .join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// A fresh directory under the system temp dir, removed on drop. Kept short: it holds the Unix
/// socket, whose path must fit in `sun_path`.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new() -> TestResult<TempDir> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "edge-sdk-{}-{}-{nanos:x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path).map_err(|e| format!("create {}: {e}", path.display()))?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("SDK_INTEROP_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}
