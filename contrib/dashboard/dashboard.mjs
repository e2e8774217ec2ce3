// The venue dashboard: a system app on the stock `@mentra/sdk@2.1.29` that fills the glasses'
// dashboard (the view a wearer sees by looking up) with what a visitor wants at a glance:
//
//   top left      the time (HH:MM, the box's time zone: TZ)
//   top right     the glasses' battery ("batt 73%", "+" while charging), from their
//                 `glasses_battery_update` events (`session.events.onGlassesBattery`)
//   bottom left   the next item of the venue's schedule ("Next 14:30 Keynote, Main hall")
//
// The schedule is a file the operator edits (SCHEDULE, re-read when it changes):
//   JSON, an array of {"start": "14:30" | "2026-12-07T14:30:00+01:00", "title": "Keynote",
//   "where": "Main hall"}, or text, one item a line: "14:30 Keynote, Main hall" (blank lines
//   and lines starting with # are skipped). "HH:MM" is today in the box's time zone; an item
//   is "next" from the minute it was due until NEXT_GRACE_MIN minutes later (default 5: a talk
//   that just began is still worth pointing to), then the following one is. A bad file is
//   logged and the last good schedule kept.
//
// Run it beside the box and register it as a system app (README, "The venue dashboard"): the box
// then starts it for every glasses session. It must use the SDK's system dashboard API, which
// SDK 2.1.29 offers only to the package named by SYSTEM_DASHBOARD_PACKAGE_NAME (default
// "system.augmentos.dashboard"); this program sets that to its own PACKAGE_NAME.
//
//   npm ci && PORT=3200 PACKAGE_NAME=system.venue.dashboard API_KEY=… \
//     SCHEDULE=/etc/augmentos-edge/schedule.json node dashboard.mjs
//
// Env: PORT, PACKAGE_NAME, API_KEY (required); SCHEDULE (a file; none: no schedule line);
// REFRESH_MS (default 15000: how often the time and the schedule are looked at; the dashboard
// is only written when a line changed); NEXT_GRACE_MIN (default 5).
// stdout carries one JSON object per line ("listening", "session", "dashboard" with the lines
// written, "schedule" when it was read, "stop", "error"); the SDK's own logs go to stderr.
// Unless DASHBOARD_ALLOW_NETWORK is set, the SDK's one outside request at start (a version
// check) is pointed at a closed local port, so nothing leaves the box.

import { readFileSync, statSync, writeSync } from "node:fs";

if (!process.env.DASHBOARD_ALLOW_NETWORK) {
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

const port = Number.parseInt(process.env.PORT ?? "", 10);
const packageName = process.env.PACKAGE_NAME;
const apiKey = process.env.API_KEY;
const schedulePath = process.env.SCHEDULE || "";
const refreshMs = Number.parseInt(process.env.REFRESH_MS ?? "15000", 10);
const graceMin = Number.parseInt(process.env.NEXT_GRACE_MIN ?? "5", 10);
if (!Number.isInteger(port) || port <= 0 || !packageName || !apiKey || !(refreshMs > 0) || !(graceMin >= 0)) {
  emit("fatal", { message: "PORT, PACKAGE_NAME and API_KEY must be set (REFRESH_MS > 0, NEXT_GRACE_MIN >= 0)" });
  process.exit(2);
}
// Read by the SDK when it loads: this app is the system dashboard.
process.env.SYSTEM_DASHBOARD_PACKAGE_NAME = packageName;

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

const pad = (n) => String(n).padStart(2, "0");
const hhmm = (d) => `${pad(d.getHours())}:${pad(d.getMinutes())}`;

/** One schedule item's start as a Date ("HH:MM" is today, local time), or null. */
export function startOf(start, now) {
  const m = /^(\d{1,2}):(\d{2})$/.exec(String(start).trim());
  if (m) {
    const d = new Date(now);
    d.setHours(Number(m[1]), Number(m[2]), 0, 0);
    return Number(m[1]) < 24 && Number(m[2]) < 60 ? d : null;
  }
  const d = new Date(String(start));
  return Number.isNaN(d.getTime()) ? null : d;
}

/** The schedule file's items, [{start, title, where}], from JSON or text. Throws if malformed. */
export function parseSchedule(text) {
  const trimmed = text.trim();
  if (trimmed.startsWith("[")) {
    const items = JSON.parse(trimmed);
    return items.map((it, i) => {
      if (typeof it?.start !== "string" || typeof it?.title !== "string" || !it.title.trim()) {
        throw new Error(`item ${i}: needs "start" and "title" strings`);
      }
      return { start: it.start, title: it.title.trim(), where: typeof it.where === "string" ? it.where.trim() : "" };
    });
  }
  return trimmed
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"))
    .map((l, i) => {
      const m = /^(\d{1,2}:\d{2})\s+(.+)$/.exec(l);
      if (!m) throw new Error(`line ${i + 1}: expected "HH:MM what, where"`);
      const [title, ...rest] = m[2].split(",");
      return { start: m[1], title: title.trim(), where: rest.join(",").trim() };
    });
}

/** The line for the next item at `now`, or "" when nothing is left today. */
export function nextLine(items, now) {
  const due = items
    .map((it) => ({ ...it, at: startOf(it.start, now) }))
    .filter((it) => it.at && it.at.getTime() + graceMin * 60_000 > now.getTime())
    .sort((a, b) => a.at - b.at);
  if (!due.length) return "";
  const it = due[0];
  return `Next ${hhmm(it.at)} ${it.title}${it.where ? ", " + it.where : ""}`;
}

/** The operator's schedule, re-read when the file's modification time or size changes. */
class Schedule {
  items = [];
  seen = "";

  refresh() {
    if (!schedulePath) return;
    let stamp;
    try {
      const st = statSync(schedulePath);
      stamp = `${st.mtimeMs}:${st.size}`;
    } catch (err) {
      if (this.seen !== "missing") emit("error", { message: `schedule ${schedulePath}: ${err.message}` });
      this.seen = "missing";
      return;
    }
    if (stamp === this.seen) return;
    this.seen = stamp;
    try {
      this.items = parseSchedule(readFileSync(schedulePath, "utf8"));
      emit("schedule", { path: schedulePath, items: this.items.length });
    } catch (err) {
      emit("error", { message: `schedule ${schedulePath}: ${err.message}; keeping the last good one` });
    }
  }
}

const schedule = new Schedule();
/** Each session's refresh timer, by session id. */
const timers = new Map();

class VenueDashboard extends AppServer {
  async onSession(session, sessionId, userId) {
    emit("session", { sessionId, userId });
    const system = session.dashboard.system;
    if (!system) {
      emit("error", { sessionId, message: "the SDK gave no system dashboard API" });
      return;
    }
    const shown = { topLeft: null, topRight: null, bottomLeft: null };
    let battery = "";
    const show = () => {
      schedule.refresh();
      const now = new Date();
      const lines = { topLeft: hhmm(now), topRight: battery, bottomLeft: nextLine(schedule.items, now) };
      let changed = false;
      for (const [section, text] of Object.entries(lines)) {
        if (shown[section] === text) continue;
        shown[section] = text;
        changed = true;
        if (section === "topLeft") system.setTopLeft(text);
        else if (section === "topRight") system.setTopRight(text);
        else system.setBottomLeft(text);
      }
      if (changed) emit("dashboard", { sessionId, ...lines });
    };
    session.events.onGlassesBattery((data) => {
      const level = Number(data?.level);
      battery = Number.isFinite(level) ? `batt ${Math.round(level)}%${data?.charging ? "+" : ""}` : "";
      show();
    });
    show();
    clearInterval(timers.get(sessionId));
    timers.set(sessionId, setInterval(show, refreshMs));
    session.events.onError((err) => emit("error", { sessionId, message: String(err?.message ?? err) }));
  }

  async onStop(sessionId, userId, reason) {
    clearInterval(timers.get(sessionId));
    timers.delete(sessionId);
    emit("stop", { sessionId, userId, reason });
    await super.onStop(sessionId, userId, reason);
  }
}

const server = new VenueDashboard({ packageName, apiKey, port, publicDir: false, healthCheck: true });
process.on("unhandledRejection", (err) => emit("error", { message: "unhandled rejection: " + String(err?.stack ?? err) }));
await server.start();
emit("listening", { port });
