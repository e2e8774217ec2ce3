// SDK interop test app: a minimal third-party app built on the real, unmodified
// `@mentra/sdk@2.1.29` `AppServer`, started and driven by `tests/sdk_interop.rs`.
//
// Config (env): PORT (webhook HTTP port), PACKAGE_NAME, API_KEY.
//
// Output contract: every line this program writes to stdout is exactly one JSON object with
// an `event` field ("listening", "session", "connected", "capabilities", "subscribed", "button",
// "displays", "stop",
// "error", "fatal", one per stream handler call: "transcription", "translation", "head",
// "touch", "touch_any", "audio", "location", and the settings and storage events below).
// Everything else -- the SDK's own pino logs and its stray console.log calls -- is sent to
// stderr, so the Rust side can parse stdout line by line. "session" and "error" events carry
// `generation`, the number of `onSession` calls this process has made so far (the session an
// error belongs to), so the test can tell a session it has given up on from the current one.
//
// Settings and storage, through the SDK's own APIs only: at session start the app reports what
// `session.settings` holds from `tpa_connection_ack` ("connected": `getAll()` and `get(key)`),
// then calls `session.settings.fetch()` (the SDK's GET /appsettings/user/{pkg}) and reports the
// result ("settings_fetched"), and reads `session.simpleStorage.get("note")` ("storage"). A
// setting changed by the user is reported by `session.settings.onValueChange("fontSize")`
// ("setting_value"), by `session.events.onSettingsUpdate` ("settings_update": the SDK emits it
// once for the server's `settings_update` WebSocket message and once for the server's POST to
// this AppServer's `/settings`), and by the AppServer's `onSettingsUpdate` hook, which only that
// POST reaches ("settings_post"). A press of a button "store:<text>" calls
// `session.simpleStorage.set("note", "<text>")` ("stored"); the SDK writes it to the server
// after its own debounce. A press of the button "goodbye" calls
// `session.disconnect({ releaseOwnership: true, reason: "clean_shutdown" })` ("released").
//
// Stream handlers: at session start the app listens to button presses only. A press of the
// button "streams" registers, once per session, the handlers of the SDK's stream API
// (transcription, translation es-ES → en-US, head position, the `double_tap` gesture and the
// catch-all touch handler, audio chunks, the location stream), each sending its own
// `subscription_update`, and only then shows the usual "pressed <id>" text wall. That display
// travels on the same WebSocket after the subscriptions, so once the glasses see it, the server
// has applied them: the test's barrier before it sends the streams' data.
//
// The SDK performs one internet request at start (a version check against api.mentra.glass,
// 3 s timeout, failure ignored). The test box has no outside network, and the test must not
// depend on it, so unless INTEROP_ALLOW_NETWORK is set, this process points axios's proxy
// settings at a closed local port: the check fails at once and nothing leaves the machine.
// (The SDK's WebSocket client, `ws`, does not use proxy settings, so the app's connection to
// the server under test is unaffected.)

import { createHash } from "node:crypto";
import { writeSync } from "node:fs";
import { createRequire } from "node:module";

if (!process.env.INTEROP_ALLOW_NETWORK) {
  for (const key of ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"]) {
    process.env[key] = "http://127.0.0.1:9";
  }
  for (const key of ["NO_PROXY", "no_proxy"]) {
    delete process.env[key];
  }
}

/** Write one event line to stdout (synchronously, so no line is lost on SIGKILL or exit). */
function emit(event, fields = {}) {
  writeSync(1, JSON.stringify({ event, ...fields }) + "\n");
}

/**
 * Button "requests": the SDK's own request APIs, each answered by the glasses or the server —
 * `session.audio.playAudio` ("audio_result"), `session.location.getLatestLocation`
 * ("location_result") and `session.camera.requestPhoto` ("photo_result"; SDK 2.1.29 settles it
 * only through this AppServer's `/photo-upload`). Each event carries the resolved value or the
 * rejection as `error`.
 */
function runRequests(session, sessionId) {
  const report = (event, promise, pick) =>
    promise.then(
      (value) => emit(event, { sessionId, value: pick(value) }),
      (err) => emit(event, { sessionId, error: String(err?.message ?? err) }),
    );
  report("audio_result", session.audio.playAudio({ audioUrl: "http://media.example/a.mp3" }), (r) => r);
  report("location_result", session.location.getLatestLocation({ accuracy: "high" }), (l) => l);
  report("photo_result", session.camera.requestPhoto(), (p) => ({ size: p?.size ?? null }));
}

// The SDK (and its dependencies) log with console.log in a few places; keep stdout clean.
for (const name of ["log", "info", "debug"]) {
  console[name] = (...args) => console.error(...args);
}

// Trace every WebSocket frame the SDK sends and receives to stderr (`{"ws":"in"|"out",...}`),
// so a failing interop run shows exactly what crossed the wire. This wraps the `ws` package the
// SDK itself loads (resolved from the SDK's own location); the SDK's code is untouched.
function traceWebSocketFrames() {
  const sdkRequire = createRequire(import.meta.resolve("@mentra/sdk"));
  const WebSocket = sdkRequire("ws");
  const proto = WebSocket.prototype;
  const text = (data) =>
    typeof data === "string" ? data : Buffer.isBuffer(data) ? data.toString("utf8") : String(data);
  const trace = (dir, data, isBinary) => {
    const line = isBinary ? { ws: dir, binaryBytes: data.length } : { ws: dir, data: text(data) };
    process.stderr.write(JSON.stringify(line) + "\n");
  };
  const send = proto.send;
  proto.send = function (data, ...rest) {
    trace("out", data, typeof data !== "string" && rest[0]?.binary === true);
    return send.call(this, data, ...rest);
  };
  const emit = proto.emit;
  proto.emit = function (event, ...args) {
    if (event === "message") trace("in", args[0], args[1] === true);
    if (event === "close") {
      process.stderr.write(JSON.stringify({ ws: "close", code: args[0], reason: text(args[1] ?? "") }) + "\n");
    }
    return emit.call(this, event, ...args);
  };
}
traceWebSocketFrames();

const { AppServer, logger: sdkLogger } = await import("@mentra/sdk");

// The SDK's root pino logger writes through a pino-pretty transport to fd 1 (stdout), with
// no option to change that. Swap the destination of its multistream for stderr (raw JSON
// lines, still useful as diagnostics) and end the pretty-printing worker.
function redirectSdkLogsToStderr() {
  const streamSym = Object.getOwnPropertySymbols(sdkLogger).find(
    (s) => s.description === "pino.stream",
  );
  const multi = streamSym && sdkLogger[streamSym];
  if (!multi || !Array.isArray(multi.streams)) {
    console.error("interop app: could not find the SDK logger's streams; SDK logs may reach stdout");
    return;
  }
  for (const entry of multi.streams) {
    const old = entry.stream;
    entry.stream = { write: (chunk) => process.stderr.write(chunk) };
    try {
      old.end?.();
    } catch {
      // The old transport is only being discarded.
    }
  }
}
redirectSdkLogsToStderr();

const port = Number.parseInt(process.env.PORT ?? "", 10);
const packageName = process.env.PACKAGE_NAME;
const apiKey = process.env.API_KEY;
if (!Number.isInteger(port) || port <= 0 || !packageName || !apiKey) {
  emit("fatal", { message: "PORT, PACKAGE_NAME and API_KEY must be set" });
  process.exit(2);
}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const displaysRun = new Set();

// The display cases of the interop test, spaced past the server's 300 ms throttle so each
// one is shown, then a burst of 20 text walls that the throttle coalesces.
async function showDisplays(session, sessionId) {
  await pause(400);
  session.layouts.showTextWall("interop text wall");
  await pause(400);
  session.layouts.showReferenceCard("Interop", "reference card body");
  await pause(400);
  session.layouts.showDoubleTextWall("top half", "bottom half");
  await pause(400);
  session.dashboard.content.writeToMain("interop dashboard");
  await pause(400);
  for (let i = 0; i < 20; i++) {
    session.layouts.showTextWall("burst " + i);
  }
  emit("displays", { sessionId });
}

/** The simple-storage key the app writes and reads. */
const STORAGE_KEY = "note";

/** `{key: value}` of an SDK `AppSetting[]`. */
function settingValues(settings) {
  return Object.fromEntries((settings ?? []).map((s) => [s.key, s.value ?? null]));
}

class InteropApp extends AppServer {
  generation = 0;

  async onSession(session, sessionId, userId) {
    const generation = ++this.generation;
    emit("session", { sessionId, userId, generation });

    // What the SDK kept from `tpa_connection_ack`. `mentraosSettings` is a TypeScript-private
    // field of the SettingsManager; plain JS can read it, and it is the only way to see the
    // whole object (getMentraosSetting() needs a key and console.logs).
    emit("connected", {
      sessionId,
      settings: session.settings.getAll(),
      values: {
        fontSize: session.settings.get("fontSize") ?? null,
        lang: session.settings.get("lang") ?? null,
      },
      mentraosSettings: session.settings.mentraosSettings ?? null,
      capabilities: session.capabilities ?? null,
    });

    // What the glasses can do: `session.capabilities` from the ack, and after each
    // `capabilities_update` (`events.onCapabilitiesUpdate`), as the session then holds it.
    const reportCapabilities = (source) => {
      const caps = session.capabilities;
      emit("capabilities", {
        sessionId,
        source,
        modelName: caps?.modelName ?? null,
        hasCamera: caps?.hasCamera ?? null,
        hasDisplay: caps?.hasDisplay ?? null,
      });
    };
    reportCapabilities("ack");
    session.events.onCapabilitiesUpdate(() => reportCapabilities("update"));

    // A change of a setting, seen through each of the SDK's ways to hear of it.
    session.settings.onValueChange("fontSize", (newValue, oldValue) => {
      emit("setting_value", {
        sessionId,
        key: "fontSize",
        newValue: newValue ?? null,
        oldValue: oldValue ?? null,
      });
    });
    session.events.onSettingsUpdate((settings) => {
      emit("settings_update", { sessionId, values: settingValues(settings) });
    });
    // The SDK's GET /appsettings/user/{pkg}, and the stored value of the note.
    session.settings.fetch().then(
      (settings) => emit("settings_fetched", { sessionId, values: settingValues(settings) }),
      (err) => emit("settings_fetched", { sessionId, error: String(err?.message ?? err) }),
    );
    session.simpleStorage.get(STORAGE_KEY).then(
      (value) => emit("storage", { sessionId, key: STORAGE_KEY, value: value ?? null }),
      (err) => emit("error", { sessionId, generation, message: "simpleStorage.get: " + err }),
    );

    let streamsRegistered = false;
    session.events.onButtonPress((data) => {
      emit("button", {
        sessionId,
        buttonId: data?.buttonId ?? null,
        pressType: data?.pressType ?? null,
      });
      if (data?.buttonId === "streams" && !streamsRegistered) {
        streamsRegistered = true;
        this.registerStreamHandlers(session, sessionId);
      }
      const id = String(data?.buttonId ?? "");
      if (id.startsWith("store:")) {
        const value = id.slice("store:".length);
        session.simpleStorage.set(STORAGE_KEY, value).then(
          () => emit("stored", { sessionId, key: STORAGE_KEY, value }),
          (err) => emit("error", { sessionId, generation, message: "simpleStorage.set: " + err }),
        );
      }
      if (id === "requests") {
        runRequests(session, sessionId);
      }
      session.layouts.showTextWall("pressed " + data?.buttonId);
      // Button "goodbye": the SDK's own clean goodbye (`ownership_release`, then the close).
      if (id === "goodbye") {
        session.disconnect({ releaseOwnership: true, reason: "clean_shutdown" }).then(
          () => emit("released", { sessionId }),
          (err) => emit("error", { sessionId, generation, message: "disconnect: " + err }),
        );
      }
      if (data?.buttonId === "displays" && !displaysRun.has(sessionId)) {
        displaysRun.add(sessionId);
        showDisplays(session, sessionId).catch((err) =>
          emit("error", { sessionId, message: "displays: " + String(err?.stack ?? err) }),
        );
      }
    });
    emit("subscribed", { sessionId, streams: session.events.getRegisteredStreams() });

    session.events.onError((err) => {
      emit("error", { sessionId, generation, message: String(err?.message ?? err) });
    });
    session.events.onPermissionError((err) => {
      emit("error", { sessionId, generation, message: "permission_error: " + JSON.stringify(err) });
    });
  }

  /** The AppServer hook its `/settings` endpoint calls (the server's POST, PROTOCOL §12.3). */
  async onSettingsUpdate(userId, settings) {
    emit("settings_post", { userId, values: settingValues(settings) });
  }

  /** The SDK 2.1.29 stream handlers; each call is reported as one event line. */
  registerStreamHandlers(session, sessionId) {
    const events = session.events;
    events.onTranscription((data) => {
      emit("transcription", {
        sessionId,
        text: data?.text ?? null,
        isFinal: data?.isFinal ?? null,
        transcribeLanguage: data?.transcribeLanguage ?? null,
      });
    });
    // 2.1.29 spells it with a lower-case "t" (there is no onTranslation).
    events.ontranslationForLanguage("es-ES", "en-US", (data) => {
      emit("translation", {
        sessionId,
        text: data?.text ?? null,
        originalText: data?.originalText ?? null,
        isFinal: data?.isFinal ?? null,
        transcribeLanguage: data?.transcribeLanguage ?? null,
        translateLanguage: data?.translateLanguage ?? null,
      });
    });
    events.onHeadPosition((data) => {
      emit("head", { sessionId, position: data?.position ?? null });
    });
    events.onTouchEvent("double_tap", (data) => {
      emit("touch", { sessionId, gesture: data?.gesture_name ?? null });
    });
    events.onTouchEvent((data) => {
      emit("touch_any", { sessionId, gesture: data?.gesture_name ?? null });
    });
    events.onAudioChunk((chunk) => {
      const bytes = Buffer.from(chunk.arrayBuffer);
      emit("audio", {
        sessionId,
        bytes: bytes.length,
        sha256: createHash("sha256").update(bytes).digest("hex"),
      });
    });
    session.location.subscribeToStream({ accuracy: "high" }, (data) => {
      emit("location", { sessionId, lat: data?.lat ?? null, lng: data?.lng ?? null });
    });
    emit("subscribed", { sessionId, streams: events.getRegisteredStreams() });
  }

  async onStop(sessionId, userId, reason) {
    emit("stop", { sessionId, userId, reason });
    await super.onStop(sessionId, userId, reason);
  }
}

const server = new InteropApp({
  packageName,
  apiKey,
  port,
  publicDir: false,
  healthCheck: true,
});

process.on("unhandledRejection", (err) => {
  emit("error", { message: "unhandled rejection: " + String(err?.stack ?? err) });
});

await server.start();
emit("listening", { port });
