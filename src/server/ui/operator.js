// The operator page: polls /ui/api/state once a second with the operator token and shows every
// session (glasses, apps, what the glasses show), the counters (rates from two polls) and the
// refusals (totals, and the recent ones the box noted); starts and stops apps for a user; points
// a user at a venue feed; adds, lists and revokes provisioned devices (a device's token and its
// QR code only on request). Everything from the box is put in the page as text (textContent,
// option values), never as markup, and in URLs through encodeURIComponent.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const KEY = "augmentos-edge-operator-token";
  let token = sessionStorage.getItem(KEY) || "";
  let last = null; // the previous feed and when it came
  let timer = null;
  const cards = new Map(); // userId -> { el, parts, screens: {view: json} }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = String(text);
    return e;
  }

  function showLogin(message) {
    if (timer) { clearInterval(timer); timer = null; }
    $("board").classList.add("hidden");
    $("login").classList.remove("hidden");
    $("login-error").textContent = message || "";
    $("op-token").focus();
  }

  function start() {
    $("login").classList.add("hidden");
    $("board").classList.remove("hidden");
    poll();
    if (!timer) timer = setInterval(poll, 1000);
  }

  async function api(path, method, body) {
    const init = { method: method || "GET", headers: { Authorization: "Bearer " + token } };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
    const r = await fetch(path, init);
    let answer = null;
    try { answer = await r.json(); } catch (_) { /* not JSON */ }
    if (r.status === 401) {
      sessionStorage.removeItem(KEY);
      showLogin((answer && answer.code) ? "Refused: " + answer.code : "Refused");
      throw new Error("unauthorised");
    }
    return { status: r.status, body: answer };
  }

  async function poll() {
    let res;
    try {
      res = await api("/ui/api/state");
    } catch (e) {
      if (String(e.message) !== "unauthorised") $("feed-error").textContent = "The box does not answer: " + e;
      return;
    }
    $("feed-error").textContent = "";
    draw(res.body, performance.now());
    if (polls++ % 5 === 0) devices();
  }

  // ---- devices ----------------------------------------------------------------------------

  let polls = 0;
  const armed = new Set(); // devices whose Revoke was clicked once (kept across redraws)

  function when(secs) {
    return secs ? new Date(secs * 1000).toISOString().slice(0, 19).replace("T", " ") : "–";
  }

  async function devices() {
    let res;
    try { res = await api("/ui/api/devices"); } catch (_) { return; }
    if (res.status !== 200 || !res.body) return;
    const tbody = $("devices").tBodies[0];
    tbody.replaceChildren();
    for (const d of res.body.devices) {
      const tr = el("tr");
      tr.dataset.device = d.name;
      if (d.revoked) tr.className = "muted";
      for (const v of [d.name, d.userId, when(d.created), when(d.expires), when(d.lastSeen), when(d.revoked)]) {
        tr.append(el("td", "", v));
      }
      const td = el("td");
      const show = el("button", "dev-show", "Show token");
      show.onclick = () => showToken(d.name);
      td.append(show);
      if (!d.revoked) {
        const revoke = el("button", "dev-revoke", armed.has(d.name) ? "Confirm revoke" : "Revoke");
        revoke.onclick = () => {
          if (armed.has(d.name)) { armed.delete(d.name); return revokeDevice(d.name); }
          armed.add(d.name);
          revoke.textContent = "Confirm revoke";
        };
        td.append(revoke);
      }
      tr.append(td);
      tbody.append(tr);
    }
  }

  function note(ok, text) {
    $("dev-note").className = ok ? "small muted" : "small error";
    $("dev-note").textContent = text;
  }

  async function addDevices() {
    const names = $("dev-names").value.split(/[\s,]+/).filter(Boolean);
    if (!names.length) return note(false, "type one or more device names");
    const body = { names };
    const hours = $("dev-hours").value.trim();
    if (hours) {
      const h = Number(hours);
      if (!(h > 0)) return note(false, "hours: a positive number");
      body.expiresSeconds = Math.round(h * 3600);
    }
    try {
      const r = await api("/ui/api/devices", "POST", body);
      if (r.status === 200) {
        $("dev-names").value = "";
        note(true, "added " + r.body.devices.map((d) => d.name).join(", "));
      } else {
        note(false, r.body ? r.body.code + " — " + r.body.message : "HTTP " + r.status);
      }
    } catch (_) { /* shown by api() */ }
    devices();
  }

  async function revokeDevice(name) {
    try {
      const r = await api("/ui/api/devices/" + encodeURIComponent(name) + "/revoke", "POST");
      note(r.status === 200, r.status === 200 ? "revoked " + name
        : (r.body ? r.body.code + " — " + r.body.message : "HTTP " + r.status));
    } catch (_) { /* shown by api() */ }
    if ($("dev-shown-name").textContent === name) hideToken();
    devices();
  }

  async function showToken(name) {
    let r;
    try { r = await api("/ui/api/devices/" + encodeURIComponent(name) + "/token"); } catch (_) { return; }
    if (r.status !== 200) return note(false, r.body ? r.body.code : "HTTP " + r.status);
    $("dev-shown-name").textContent = name;
    $("dev-token").textContent = r.body.token;
    if (r.body.qrSvg) {
      $("dev-qr").src = "data:image/svg+xml," + encodeURIComponent(r.body.qrSvg);
      $("dev-qr").classList.remove("hidden");
    } else {
      $("dev-qr").classList.add("hidden");
    }
    $("dev-shown").classList.remove("hidden");
  }

  function hideToken() {
    $("dev-shown").classList.add("hidden");
    $("dev-token").textContent = "";
    $("dev-shown-name").textContent = "";
    $("dev-qr").removeAttribute("src");
  }

  function sum(o) {
    return Object.values(o || {}).reduce((a, b) => a + (Number(b) || 0), 0);
  }

  function fmtMs(v) {
    if (v === null || v === undefined) return "–";
    return v < 10 ? v.toFixed(1) + " ms" : Math.round(v) + " ms";
  }

  function fmtUptime(s) {
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return (h ? h + " h " : "") + m + " min " + (s % 60) + " s";
  }

  function draw(st, at) {
    const c = st.counters;
    $("updated").textContent = new Date().toLocaleTimeString();
    $("version").textContent = st.version;
    $("uptime").textContent = fmtUptime(st.uptimeSeconds);
    $("t-sessions").textContent = st.sessions.length;
    $("t-glasses").textContent = c.connections.glasses;
    $("t-apps").textContent = c.connections.app;
    $("t-dropped").textContent = c.dropped;
    $("t-displays").textContent = c.displays.sent;
    $("t-webhook").textContent = c.webhooks.count ? fmtMs(c.webhooks.meanMs) : "–";
    $("t-webhook-more").textContent = c.webhooks.count
      ? "mean of " + c.webhooks.count + (c.webhooks.p90AtMostMs ? " · p90 ≤ " + fmtMs(c.webhooks.p90AtMostMs) : "") +
        (c.webhooks.failed ? " · " + c.webhooks.failed + " failed" : "")
      : "no webhooks yet";
    // Starts waiting for a slot at their app server (maxWebhooksPerServer in flight).
    const queues = (st.webhookServers || []).filter((q) => q.waiting > 0);
    if (queues.length) {
      const waiting = queues.reduce((n, q) => n + q.waiting, 0);
      const oldest = Math.max(...queues.map((q) => q.oldestWaitMs));
      $("t-webhook-more").textContent += " · " + waiting + " waiting (oldest " + fmtMs(oldest) + ")";
    }
    if (last) {
      const dt = Math.max(0.001, (at - last.at) / 1000);
      const rate = (a, b) => Math.max(0, Math.round((sum(a) - sum(b)) / dt));
      $("t-in").textContent = rate(c.messagesIn, last.st.counters.messagesIn);
      $("t-out").textContent = rate(c.messagesOut, last.st.counters.messagesOut);
    }
    const recent = $("recent");
    recent.textContent = "";
    for (const r of st.recentRefusals || []) {
      const line = el("div", "", new Date(r.at).toLocaleTimeString() + "  ");
      line.appendChild(el("code", "", r.code));
      if (r.count > 1) line.append("  ×" + r.count);
      recent.appendChild(line);
    }
    if (!recent.childNodes.length) recent.appendChild(el("div", "muted", "none"));
    drawRefusals(c.refusals || {});
    drawFeeds(st.feeds || []);
    drawSessions(st.sessions, st.apps, (st.feeds || []).map((f) => f.name));
    last = { st, at };
  }

  // Venue feeds: one recogniser for the room, its state and its last final lines.
  function drawFeeds(feeds) {
    const tbody = $("feeds").tBodies[0];
    tbody.textContent = "";
    if (!feeds.length) {
      const cell = tbody.insertRow().insertCell();
      cell.colSpan = 9;
      cell.textContent = "no venue feed configured (venueFeed in an app's config entry)";
      return;
    }
    for (const f of feeds) {
      const tr = tbody.insertRow();
      tr.dataset.feed = f.name;
      tr.insertCell().textContent = f.name;
      tr.insertCell().appendChild(el("code", "", f.packageName));
      tr.insertCell().appendChild(el("span", f.connected ? "" : "error", f.connected ? "connected" : "not connected"));
      tr.insertCell().textContent = f.language || "–";
      const followers = tr.insertCell();
      followers.className = "followers";
      followers.textContent = f.followers;
      tr.insertCell().textContent = f.published;
      tr.insertCell().textContent = f.delivered;
      tr.insertCell().textContent = f.dropped;
      const lines = tr.insertCell();
      for (const line of f.lastLines) lines.appendChild(el("div", "small", line));
    }
  }

  function drawRefusals(r) {
    const tbody = $("refusals").querySelector("tbody");
    tbody.textContent = "";
    const codes = Object.keys(r).sort();
    if (!codes.length) {
      tbody.insertRow().insertCell().textContent = "none";
      return;
    }
    for (const code of codes) {
      const tr = tbody.insertRow();
      tr.insertCell().appendChild(el("code", "", code));
      tr.insertCell().textContent = r[code];
    }
  }

  function drawSessions(sessions, apps, feeds) {
    const box = $("sessions");
    const seen = new Set();
    if (!sessions.length) {
      if (!box.querySelector(".none")) {
        box.textContent = "";
        cards.clear();
        box.appendChild(el("div", "panel muted none", "No sessions. Glasses that connect appear here."));
      }
      return;
    }
    const none = box.querySelector(".none");
    if (none) none.remove();
    for (const s of sessions) {
      seen.add(s.userId);
      let card = cards.get(s.userId);
      if (!card) {
        card = makeCard(s.userId, apps, feeds);
        cards.set(s.userId, card);
      }
      box.appendChild(card.el); // keeps the feed's order
      updateCard(card, s);
    }
    for (const [user, card] of cards) {
      if (!seen.has(user)) { card.el.remove(); cards.delete(user); }
    }
  }

  function makeCard(user, apps, feeds) {
    const root = el("div", "panel session");
    root.dataset.user = user;
    const head = el("div", "session-head");
    head.appendChild(el("span", "user", user));
    const glasses = el("span", "badge");
    head.appendChild(glasses);
    const mic = el("span", "badge");
    head.appendChild(mic);
    const since = el("span", "muted small");
    head.appendChild(since);
    root.appendChild(head);

    const cols = el("div", "cards");
    const left = el("div", "stack");
    const table = el("table", "apps");
    table.createTHead().insertRow().append(el("th", "", "App"), el("th", "", "State"),
      el("th", "", "Subscriptions"), el("th", "", ""));
    table.appendChild(el("tbody"));
    left.appendChild(table);
    const startRow = el("div", "row");
    const pick = el("select");
    for (const a of apps) {
      const o = el("option", "", (a.name || a.packageName) + (a.isSystemApp ? " (system)" : ""));
      o.value = a.packageName;
      pick.appendChild(o);
    }
    const go = el("button", "primary", "Start app");
    go.onclick = () => act(user, pick.value, "start");
    startRow.append(pick, go);
    if (apps.length) left.appendChild(startRow);
    // The venue feed the user's captions come from: the current one, and a choice of another.
    let feed = null;
    if (feeds.length) {
      const feedRow = el("div", "row feed-row");
      const now = el("span", "feed-now mono");
      const feedPick = el("select", "feed-pick");
      for (const name of feeds) {
        const o = el("option", "", name);
        o.value = name;
        feedPick.appendChild(o);
      }
      const followGo = el("button", "feed-follow", "Follow feed");
      followGo.onclick = () => followFeed(user, feedPick.value);
      feedRow.append(el("span", "muted small", "Captions feed"), now, feedPick, followGo);
      left.appendChild(feedRow);
      feed = { now, pick: feedPick, drawn: undefined };
    }
    const note = el("div", "small");
    left.appendChild(note);
    cols.appendChild(left);

    const right = el("div", "screens");
    const views = {};
    for (const [view, label] of [["main", "Main view"], ["dashboard", "Dashboard"]]) {
      const b = el("div", "screen-box");
      const cap = el("div", "cap", label);
      const from = el("span", "mono");
      cap.append(" ", from);
      const g = el("div", "glasses small screen-" + view);
      b.append(cap, g);
      right.appendChild(b);
      views[view] = { g, from, json: undefined };
    }
    cols.appendChild(right);
    root.appendChild(cols);
    return { el: root, glasses, mic, since, tbody: table.tBodies[0], views, note, feed };
  }

  function updateCard(card, s) {
    card.glasses.textContent = s.glasses === "grace"
      ? "in grace · " + Math.ceil((s.graceLeftMs || 0) / 1000) + " s left"
      : "glasses connected";
    card.glasses.className = "badge " + s.glasses;
    card.since.textContent = "since " + new Date(s.since).toLocaleString();
    card.mic.textContent = s.microphone ? "microphone on" : "microphone off";
    card.mic.className = "badge " + (s.microphone ? "mic-on" : "mic-off");
    // The choice follows the box only when the box's answer changes, so a poll does not undo
    // what the operator is choosing.
    if (card.feed && s.feed !== card.feed.drawn) {
      card.feed.drawn = s.feed;
      card.feed.now.textContent = s.feed || "–";
      if (s.feed) card.feed.pick.value = s.feed;
    }

    card.tbody.textContent = "";
    if (!s.apps.length) {
      card.tbody.insertRow().insertCell().textContent = "no apps running";
    }
    for (const a of s.apps) {
      const tr = card.tbody.insertRow();
      tr.dataset.package = a.packageName;
      const name = tr.insertCell();
      name.appendChild(el("div", "", a.name));
      name.appendChild(el("div", "muted mono", a.packageName));
      const stc = tr.insertCell();
      stc.appendChild(el("span", "badge state " + a.state, a.state));
      if (a.restarts) stc.appendChild(el("div", "muted small", a.restarts + " restart(s)"));
      if (a.error) stc.appendChild(el("div", "error small", a.error));
      tr.insertCell().appendChild(el("span", "mono", (a.subscriptions || []).join(", ") || "–"));
      const stop = el("button", "danger", "Stop");
      stop.onclick = () => act(s.userId, a.packageName, "stop");
      tr.insertCell().appendChild(stop);
    }

    const byView = {};
    for (const sc of s.screens || []) byView[sc.view] = sc;
    for (const [view, v] of Object.entries(card.views)) {
      const sc = byView[view];
      const json = sc ? JSON.stringify(sc.layout) : "";
      if (json !== v.json) {
        window.renderLayout(v.g, sc ? sc.layout : null);
        v.json = json;
      }
      v.from.textContent = sc ? "· " + sc.packageName + " · " + Math.round(sc.forMs / 1000) + " s" : "";
    }
  }

  async function act(user, pkg, action) {
    const path = "/ui/api/sessions/" + encodeURIComponent(user) + "/apps/" +
      encodeURIComponent(pkg) + "/" + action;
    const card = cards.get(user);
    try {
      const r = await api(path, "POST");
      if (card) {
        card.note.className = r.status === 200 ? "small muted" : "small error";
        card.note.textContent = r.status === 200
          ? pkg + ": " + r.body.data.status
          : pkg + ": " + (r.body ? r.body.code + " — " + r.body.message : "HTTP " + r.status);
      }
    } catch (_) { /* shown by api() */ }
    poll();
  }

  async function followFeed(user, feed) {
    const card = cards.get(user);
    try {
      const r = await api("/ui/api/feeds/" + encodeURIComponent(feed) + "/follow", "POST", { user });
      if (card) {
        card.note.className = r.status === 200 ? "small muted" : "small error";
        card.note.textContent = r.status === 200
          ? "follows feed " + r.body.feed
          : "feed " + feed + ": " + (r.body ? r.body.code + " — " + r.body.message : "HTTP " + r.status);
      }
    } catch (_) { /* shown by api() */ }
    poll();
  }

  function init() {
    $("op-go").onclick = () => {
      token = $("op-token").value.trim();
      if (!token) return;
      sessionStorage.setItem(KEY, token);
      start();
    };
    $("op-token").onkeydown = (e) => { if (e.key === "Enter") $("op-go").click(); };
    $("dev-add").onclick = addDevices;
    $("dev-hide").onclick = hideToken;
    $("op-out").onclick = () => {
      sessionStorage.removeItem(KEY);
      token = "";
      hideToken();
      showLogin("");
    };
    if (token) start(); else showLogin("");
  }

  document.addEventListener("DOMContentLoaded", init);
})();
