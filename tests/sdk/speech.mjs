// SDK speech test app: an app on the real, unmodified `@mentra/sdk@2.1.29`, started and driven
// by `tests/sdk_speech.rs`. At each session it registers `onTranscription` (the SDK then asks
// the box's `GET /api/public/permissions/{pkg}` whether the app holds MICROPHONE) and
// `location.subscribeToStream` (the same for LOCATION), then calls `session.audio.speak(TEXT,
// {voice_id: VOICE_ID})`, which sends the glasses an `audio_play_request` whose `audioUrl` is
// `https://<box>/api/tts?…`, and reports the outcome once the glasses answer.
//
// Env: PORT, PACKAGE_NAME, API_KEY; SPEAK_TEXT, VOICE_ID. NODE_EXTRA_CA_CERTS makes Node trust
// the box's test certificate (the SDK builds `https://` and `wss://` URLs from the box's
// `publicWsUrl`).
//
// stdout: one JSON object per line ("listening", "session", "spoke", "error", and "console"
// for each line the SDK prints with console.log/warn/debug, ANSI colours stripped — its
// permission warnings and its complaints about the permission endpoint arrive there). The SDK's
// pino logs go to stderr. Unless INTEROP_ALLOW_NETWORK is set, axios's proxy is a closed local
// port, so the SDK's version check at start leaves nothing on the network.

import { writeSync } from "node:fs";

if (!process.env.INTEROP_ALLOW_NETWORK) {
  for (const key of ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"]) {
    process.env[key] = "http://127.0.0.1:9";
  }
  for (const key of ["NO_PROXY", "no_proxy"]) {
    delete process.env[key];
  }
}

function emit(event, fields = {}) {
  writeSync(1, JSON.stringify({ event, ...fields }) + "\n");
}

// eslint-disable-next-line no-control-regex
const stripAnsi = (s) => s.replace(/\u001b\[[0-9;]*m/g, "");
for (const level of ["log", "info", "debug", "warn"]) {
  console[level] = (...args) => {
    const text = stripAnsi(args.map((a) => (typeof a === "string" ? a : String(a))).join(" "));
    emit("console", { level, text });
  };
}

const { AppServer, logger: sdkLogger } = await import("@mentra/sdk");

// The SDK's pino logger writes to stdout; send it to stderr so stdout stays one JSON per line.
const streamSym = Object.getOwnPropertySymbols(sdkLogger).find((s) => s.description === "pino.stream");
for (const entry of (streamSym && sdkLogger[streamSym]?.streams) || []) {
  const old = entry.stream;
  entry.stream = { write: (chunk) => process.stderr.write(chunk) };
  try {
    old.end?.();
  } catch {
    // discarded
  }
}

const port = Number.parseInt(process.env.PORT ?? "", 10);
const packageName = process.env.PACKAGE_NAME;
const apiKey = process.env.API_KEY;
const text = process.env.SPEAK_TEXT || "Hello from the box";
const voiceId = process.env.VOICE_ID || undefined;
if (!Number.isInteger(port) || port <= 0 || !packageName || !apiKey) {
  emit("fatal", { message: "PORT, PACKAGE_NAME and API_KEY must be set" });
  process.exit(2);
}

class SpeechApp extends AppServer {
  async onSession(session, sessionId, userId) {
    emit("session", { sessionId, userId });
    session.events.onTranscription(() => {});
    session.location.subscribeToStream({ accuracy: "standard" }, () => {});
    try {
      const result = await session.audio.speak(text, { voice_id: voiceId });
      emit("spoke", { sessionId, result });
    } catch (err) {
      emit("spoke", { sessionId, error: String(err?.message ?? err) });
    }
  }
}

const server = new SpeechApp({ packageName, apiKey, port, publicDir: false, healthCheck: true });
process.on("unhandledRejection", (err) => emit("error", { message: "unhandled rejection: " + String(err?.stack ?? err) }));
await server.start();
emit("listening", { port });
