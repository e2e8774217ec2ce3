// Live captions: an app on the stock `@mentra/sdk@2.1.29` that shows what is said around the
// wearer as a text wall. Transcripts come from the box's on-box transcriber
// (contrib/transcriber) through `onTranscriptionForLanguage(LANGUAGE)` (the box routes them to
// the app's `transcription:<LANGUAGE>` subscription). The interim text of the utterance in progress is
// replaced in place as it firms up; finals are kept; the last LINES lines, wrapped to WIDTH
// characters, are shown.
// With TARGET_LANGUAGE set (e.g. es-ES), it shows the box's on-box translation of the
// LANGUAGE transcripts into that language instead, through SDK 2.1.29's
// `ontranslationForLanguage(LANGUAGE, TARGET_LANGUAGE)` (the box routes the transcriber's
// `translation:<LANGUAGE>-to-<TARGET_LANGUAGE>` data to it; the transcriber must be run with
// `--translate <TARGET_LANGUAGE>`).
// The wearer can choose it too: the app's `targetLanguage` setting (declare it in the box's
// config entry for the app, e.g. `"settings": [{"key": "targetLanguage", "type": "select",
// "defaultValue": "", "options": [{"label": "English", "value": "en-US"}, {"label":
// "Español", "value": "es-ES"}]}]`; the glasses emulator's "Captions language" sets it through
// `PUT /api/settings/<package>`) overrides TARGET_LANGUAGE when set, and a change takes
// effect at once (the old subscription dropped, the new one made; LANGUAGE itself shows the
// transcripts).
// When the box says no translation engine serves the pair (`TRANSLATION_UNAVAILABLE`; SDK
// 2.1.29 hands the app only its message, which names the pair, as an Error to
// `session.events.onError`), a short line says so on the glasses (e.g. "Spanish captions
// unavailable — showing English") above the LANGUAGE transcripts, shown instead until a
// translation comes (the subscription stays).
//
//   npm ci && PORT=3000 PACKAGE_NAME=com.example.captions API_KEY=… node captions.mjs
//
// Env: PORT, PACKAGE_NAME, API_KEY (required); LINES (default 4), WIDTH (default 30),
// LANGUAGE (the transcripts' language, default en-US); TARGET_LANGUAGE (show a translation into
// it, default none: the transcripts themselves).
// stdout carries one JSON object per line ("listening", "session", "caption" with the text
// shown and the time the transcript came, "unavailable" when it falls back to the
// transcripts, "stop", "error"); the SDK's own logs go to stderr.
// Unless CAPTIONS_ALLOW_NETWORK is set, the SDK's one outside request at start (a version
// check) is pointed at a closed local port, so nothing leaves the box.

import { writeSync } from "node:fs";

if (!process.env.CAPTIONS_ALLOW_NETWORK) {
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
for (const name of ["log", "info", "debug"]) {
  console[name] = (...args) => console.error(...args);
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
const LINES = Number.parseInt(process.env.LINES ?? "4", 10);
const WIDTH = Number.parseInt(process.env.WIDTH ?? "30", 10);
const LANGUAGE = process.env.LANGUAGE || "en-US";
const TARGET_LANGUAGE = process.env.TARGET_LANGUAGE || "";
if (!Number.isInteger(port) || port <= 0 || !packageName || !apiKey) {
  emit("fatal", { message: "PORT, PACKAGE_NAME and API_KEY must be set" });
  process.exit(2);
}

/** Greedy word wrap to `width` characters (a longer word is cut). */
export function wrap(text, width) {
  const lines = [];
  let line = "";
  for (let word of text.split(/\s+/).filter(Boolean)) {
    while (word.length > width) {
      if (line) lines.push(line);
      lines.push(word.slice(0, width));
      word = word.slice(width);
      line = "";
    }
    if (!line) line = word;
    else if (line.length + 1 + word.length <= width) line += " " + word;
    else {
      lines.push(line);
      line = word;
    }
  }
  if (line) lines.push(line);
  return lines;
}

const languageNames = (() => {
  try {
    return new Intl.DisplayNames(["en"], { type: "language" });
  } catch {
    return null;
  }
})();

/** "Spanish" for es-ES; the code itself if it has no name here. */
function languageName(code) {
  try {
    return languageNames?.of(code.split("-")[0]) ?? code;
  } catch {
    return code;
  }
}

/** The caption state of one session: finals kept, the interim replaced in place. */
class Captions {
  finals = [];
  interim = "";

  update(text, isFinal) {
    if (isFinal) {
      if (text.trim()) this.finals.push(text.trim());
      this.interim = "";
      // Only the last LINES lines are ever shown; keep a little more than that.
      if (this.finals.length > LINES * 2) this.finals.splice(0, this.finals.length - LINES * 2);
    } else {
      this.interim = text.trim();
    }
    return this.text();
  }

  text() {
    const lines = [...this.finals, this.interim].filter(Boolean).flatMap((t) => wrap(t, WIDTH));
    return lines.slice(-LINES).join("\n");
  }
}

class LiveCaptions extends AppServer {
  async onSession(session, sessionId, userId) {
    emit("session", { sessionId, userId });
    const captions = new Captions();
    let shown = "";
    // While the translation shown is unavailable: the line saying so, and the off() of the
    // transcripts shown instead.
    let notice = "";
    let fallback = null;
    const render = (text) => {
      if (!notice) return text;
      const head = wrap(notice, WIDTH);
      const room = Math.max(LINES - head.length, 1);
      return [...head, ...(text ? text.split("\n").slice(-room) : [])].join("\n");
    };
    const onText = (data) => {
      const text = render(captions.update(String(data?.text ?? ""), data?.isFinal === true));
      // An empty final after interim text clears it; before anything was shown, nothing to do.
      if (!text && !shown) return;
      shown = text;
      session.layouts.showTextWall(text);
      emit("caption", {
        sessionId,
        text,
        isFinal: data?.isFinal === true,
        heard: data?.text ?? null,
        utteranceId: data?.utteranceId ?? null,
        startTime: data?.startTime ?? null,
        endTime: data?.endTime ?? null,
        at: Date.now(), // when the transcript came (wall clock, ms): for latency measurements
        // A translation the box could not make (`didTranslate: false`) carries the source
        // text: it is tagged with the source language, not the target's.
        language:
          (data?.didTranslate === false ? null : data?.translateLanguage) ??
          data?.transcribeLanguage ??
          null,
      });
    };
    // The language shown: the wearer's `targetLanguage` setting, else TARGET_LANGUAGE.
    let off = null;
    let showing = null;
    const endFallback = () => {
      if (fallback) fallback();
      fallback = null;
      notice = "";
    };
    // A translation that comes ends the fallback (an untranslated one, the source text, is
    // dropped while the transcripts show).
    const onTranslation = (data) => {
      if (fallback) {
        if (data?.didTranslate === false) return;
        endFallback();
      }
      onText(data);
    };
    const unavailable = () => {
      notice = `${languageName(showing)} captions unavailable — showing ${languageName(LANGUAGE)}`;
      emit("unavailable", { sessionId, language: showing, showing: LANGUAGE, notice });
      fallback = session.events.onTranscriptionForLanguage(LANGUAGE, onText);
      shown = render(captions.text());
      session.layouts.showTextWall(shown);
    };
    const show = (target) => {
      target = typeof target === "string" ? target.trim() : "";
      if (target === LANGUAGE) target = "";
      if (target === showing) return;
      endFallback();
      if (off) off();
      try {
        off = target
          ? session.events.ontranslationForLanguage(LANGUAGE, target, onTranslation)
          : session.events.onTranscriptionForLanguage(LANGUAGE, onText);
      } catch (err) {
        // Not a language code the SDK takes: the transcripts instead.
        emit("error", { sessionId, message: String(err?.message ?? err) });
        target = "";
        off = session.events.onTranscriptionForLanguage(LANGUAGE, onText);
      }
      showing = target;
      emit("language", { sessionId, language: target || LANGUAGE });
    };
    const setting = () => session.settings.get("targetLanguage", undefined);
    show(setting() || TARGET_LANGUAGE);
    session.settings.onValueChange("targetLanguage", (value) => show(value || TARGET_LANGUAGE));
    session.events.onError((err) => {
      const message = String(err?.message ?? err);
      emit("error", { sessionId, message });
      // TRANSLATION_UNAVAILABLE names the pair in its message: show the transcripts instead.
      if (showing && !fallback && message.includes(`${LANGUAGE}-to-${showing}`)) unavailable();
    });
  }

  async onStop(sessionId, userId, reason) {
    emit("stop", { sessionId, userId, reason });
    await super.onStop(sessionId, userId, reason);
  }
}

const server = new LiveCaptions({ packageName, apiKey, port, publicDir: false, healthCheck: true });
process.on("unhandledRejection", (err) => emit("error", { message: "unhandled rejection: " + String(err?.stack ?? err) }));
await server.start();
emit("listening", { port });
