// The glasses emulator: signs in (a development user, or a pasted token), connects to
// /glasses-ws with the token in connection_init, draws every display_event on the main or the
// dashboard view, sends button presses, head position and touch gestures, starts and stops
// apps, sets the captions language (the apps' `targetLanguage` setting), and streams 16 kHz
// PCM16 audio (microphone or WAV file) while the box asks for it.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const RATE = 16000;
  const CHUNK = 1600; // samples: 100 ms

  let ws = null;
  let token = null;
  let signedIn = false; // reconnect when the socket is lost
  let refused = null; // the box refused the token: do not retry
  let acked = false; // this socket got its connection_ack
  let apps = []; // installedApps
  let state = { active: [], loading: [], states: {} };
  let micWanted = false;
  let audio = null; // the running source: { stop() }
  let starting = false; // a source is being opened

  function now() { return new Date().toISOString(); }

  function log(dir, text) {
    const el = $("log");
    const line = document.createElement("div");
    line.textContent = new Date().toLocaleTimeString() + " " + dir + " " + text;
    el.prepend(line);
    while (el.childNodes.length > 80) el.removeChild(el.lastChild);
  }

  function send(msg) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    msg.timestamp = msg.timestamp || now();
    ws.send(JSON.stringify(msg));
    log("→", msg.type + (msg.packageName ? " " + msg.packageName : "") +
      (msg.gesture_name ? " " + msg.gesture_name : "") + (msg.position ? " " + msg.position : "") +
      (msg.pressType ? " " + msg.pressType : ""));
    return true;
  }

  function setStatus(text, cls) {
    const s = $("status");
    s.textContent = text;
    s.className = "badge " + (cls || "");
  }

  // ---- sign in ---------------------------------------------------------------------------

  async function devSignIn() {
    const userId = $("user-id").value.trim();
    if (!userId) { $("signin-error").textContent = "type a user id"; return; }
    try {
      const r = await fetch("/ui/dev/token", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ userId }),
      });
      const body = await r.json();
      if (!r.ok) { $("signin-error").textContent = body.message || ("refused: " + r.status); return; }
      connect(body.token, body.userId);
    } catch (e) {
      $("signin-error").textContent = "cannot reach the box: " + e;
    }
  }

  function tokenUser(t) {
    try {
      const p = t.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(p + "===".slice((p.length + 3) % 4))).email || "?";
    } catch (_) {
      return "?";
    }
  }

  function connect(t, user) {
    token = t;
    signedIn = true;
    refused = null;
    $("signin-error").textContent = "";
    $("who").textContent = user || tokenUser(t);
    $("signin").classList.add("hidden");
    $("signin-title").classList.add("hidden");
    $("device").classList.remove("hidden");
    window.renderLayout($("screen-main"), null);
    window.renderLayout($("screen-dashboard"), null);
    open();
  }

  // Open the glasses socket; a lost one is opened again (the session resumes within its grace
  // period), unless the box refused the token or the user signed out.
  function open() {
    acked = false;
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(proto + "//" + location.host + "/glasses-ws");
    ws.binaryType = "arraybuffer";
    setStatus("connecting", "loading");
    ws.onopen = () => send({ type: "connection_init", coreToken: token });
    ws.onmessage = (ev) => {
      if (typeof ev.data !== "string") return;
      let m;
      try { m = JSON.parse(ev.data); } catch (_) { return; }
      onMessage(m);
    };
    ws.onclose = (ev) => {
      log("×", "closed " + ev.code + " " + (ev.reason || ""));
      setMic(false);
      ws = null;
      if (signedIn && !refused) {
        setStatus("reconnecting", "loading");
        setTimeout(() => { if (signedIn && !ws) open(); }, 2000);
      } else {
        setStatus(refused ? "refused: " + refused : "disconnected", "failed");
      }
    };
  }

  function signOut() {
    signedIn = false;
    refused = null;
    if (ws) ws.close(1000, "signed out");
    setMic(false);
    ws = null;
    $("device").classList.add("hidden");
    $("signin").classList.remove("hidden");
    $("signin-title").classList.remove("hidden");
  }

  // ---- from the box ----------------------------------------------------------------------

  function onMessage(m) {
    if (m.type !== "display_event") log("←", m.type + (m.code ? " " + m.code : ""));
    switch (m.type) {
      case "connection_ack":
        acked = true;
        setStatus("connected", "connected");
        takeSession(m.userSession);
        break;
      case "app_state_change":
        takeSession(m.userSession);
        break;
      case "connection_error":
        // Before the ack it refuses the token; after it, one request (the socket stays open),
        // except a revocation, which ends this token's use for good.
        if (!acked || m.code === "DEVICE_REVOKED") {
          refused = m.code || m.message || "connection_error";
          setStatus("refused: " + refused, "failed");
        }
        log("!", (m.code ? m.code + ": " : "") + (m.message || ""));
        break;
      case "display_event": {
        const dash = m.view === "dashboard";
        const el = dash ? $("screen-dashboard") : $("screen-main");
        window.renderLayout(el, m.layout, null);
        $(dash ? "dash-from" : "main-from").textContent = m.packageName ? "· " + m.packageName : "";
        log("←", "display_event " + (m.view || "main") + " " + ((m.layout || {}).layoutType || ""));
        break;
      }
      case "microphone_state_change":
        setMic(!!m.isMicrophoneEnabled);
        break;
      default:
        break;
    }
  }

  function takeSession(us) {
    if (!us) return;
    if (Array.isArray(us.installedApps)) apps = us.installedApps;
    state = {
      active: us.activeAppPackageNames || [],
      loading: us.loadingApps || [],
      states: us.appStates || {},
    };
    drawApps();
  }

  function appState(pkg) {
    const s = state.states[pkg];
    if (s && s.state) return s.state;
    if (state.active.includes(pkg)) return "active";
    if (Array.isArray(state.loading) && state.loading.includes(pkg)) return "loading";
    return "stopped";
  }

  function drawApps() {
    const tbody = $("apps").querySelector("tbody");
    tbody.textContent = "";
    const shown = apps.filter((a) => !a.isSystemApp);
    if (!shown.length) {
      const tr = tbody.insertRow();
      tr.insertCell().textContent = "No apps are registered on this box.";
      return;
    }
    for (const a of shown) {
      const st = appState(a.packageName);
      const tr = tbody.insertRow();
      tr.dataset.package = a.packageName;
      const name = tr.insertCell();
      name.textContent = a.name || a.packageName;
      const pkg = document.createElement("div");
      pkg.className = "muted mono";
      pkg.textContent = a.packageName;
      name.appendChild(pkg);
      const badge = document.createElement("span");
      badge.className = "badge state " + st;
      badge.textContent = st;
      tr.insertCell().appendChild(badge);
      const b = document.createElement("button");
      const running = st !== "stopped" && st !== "failed";
      b.textContent = running ? "Stop" : "Start";
      b.className = running ? "danger" : "primary";
      b.dataset.action = running ? "stop" : "start";
      b.onclick = () => send({ type: running ? "stop_app" : "start_app", packageName: a.packageName });
      tr.insertCell().appendChild(b);
    }
  }

  // ---- the captions language -------------------------------------------------------------

  // Sets the `targetLanguage` setting of every app of this box that declares one (the box
  // refuses the others with UNKNOWN_SETTING): PUT /api/settings/<package> with this glasses'
  // token. The box saves it and sends the app's session a settings_update, which the captions
  // app (examples/live-captions) acts on at once: it subscribes to the translation into that
  // language (or to the transcripts, for the spoken language).
  async function pickLanguage() {
    const value = $("captions-language").value;
    const set = [];
    for (const a of apps.filter((x) => !x.isSystemApp)) {
      try {
        const r = await fetch("/api/settings/" + encodeURIComponent(a.packageName), {
          method: "PUT",
          headers: { "Content-Type": "application/json", Authorization: "Bearer " + token },
          body: JSON.stringify({ settings: { targetLanguage: value } }),
        });
        if (r.ok) set.push(a.name || a.packageName);
      } catch (_) { /* the box is away: said below */ }
    }
    $("language-state").textContent = set.length
      ? "set for " + set.join(", ")
      : "no app on this box has a targetLanguage setting";
    log("→", "targetLanguage " + value + (set.length ? " for " + set.join(", ") : " (no app has it)"));
  }

  // ---- to the box ------------------------------------------------------------------------

  function bindControls() {
    $("captions-language").onchange = pickLanguage;
    for (const b of document.querySelectorAll("[data-button]")) {
      b.onclick = () => send({ type: "button_press", buttonId: "select", pressType: b.dataset.button });
    }
    for (const b of document.querySelectorAll("[data-gesture]")) {
      b.onclick = () => send({ type: "touch_event", device_model: "browser", gesture_name: b.dataset.gesture });
    }
    $("head-up").onclick = () => {
      send({ type: "head_position", position: "up" });
      $("screen-dashboard").classList.add("focus");
      $("screen-main").classList.remove("focus");
    };
    $("head-down").onclick = () => {
      send({ type: "head_position", position: "down" });
      $("screen-main").classList.add("focus");
      $("screen-dashboard").classList.remove("focus");
    };
    // Choosing a file makes it the source; while the box wants audio, a new choice of file or
    // source takes over at once (the file plays from its start).
    $("wav").onchange = () => {
      if (!$("wav").files[0]) return;
      document.querySelector("input[name=mic-src][value=wav]").checked = true;
      sourceChanged();
    };
    for (const r of document.querySelectorAll("input[name=mic-src]")) r.onchange = sourceChanged;
  }

  // ---- audio -----------------------------------------------------------------------------

  function setMic(on) {
    micWanted = on;
    $("mic-dot").classList.toggle("on", on);
    $("mic-state").textContent = on ? "on: streaming 16 kHz PCM to the box" : "off";
    if (on && !audio && !starting) startAudio();
    if (!on && audio) { audio.stop(); audio = null; }
  }

  function sourceChanged() {
    if (!micWanted || starting) return;
    if (audio) { audio.stop(); audio = null; }
    startAudio();
  }

  function floatsToPcm16(f) {
    const out = new Int16Array(f.length);
    for (let i = 0; i < f.length; i++) {
      const s = Math.max(-1, Math.min(1, f[i]));
      out[i] = s < 0 ? s * 0x8000 : s * 0x7fff;
    }
    return out;
  }

  function sendPcm(samples) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(floatsToPcm16(samples).buffer);
  }

  async function startAudio() {
    $("mic-error").textContent = "";
    const src = document.querySelector("input[name=mic-src]:checked").value;
    starting = true;
    try {
      audio = src === "wav" ? await wavSource() : await micSource();
      if (!micWanted && audio) { audio.stop(); audio = null; }
    } catch (e) {
      audio = null;
      $("mic-error").textContent = String(e.message || e);
    } finally {
      starting = false;
    }
  }

  // The microphone, resampled by the browser to 16 kHz, sent in 100 ms frames.
  async function micSource() {
    if (!navigator.mediaDevices) throw new Error("no microphone access here (the page must be on localhost or https)");
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
    });
    const ctx = new AudioContext({ sampleRate: RATE });
    const node = ctx.createScriptProcessor(4096, 1, 1);
    const input = ctx.createMediaStreamSource(stream);
    let pending = [];
    let count = 0;
    node.onaudioprocess = (ev) => {
      const data = ev.inputBuffer.getChannelData(0);
      pending.push(new Float32Array(data));
      count += data.length;
      while (count >= CHUNK) {
        const all = new Float32Array(count);
        let at = 0;
        for (const p of pending) { all.set(p, at); at += p.length; }
        sendPcm(all.subarray(0, CHUNK));
        pending = [all.slice(CHUNK)];
        count -= CHUNK;
      }
    };
    input.connect(node);
    node.connect(ctx.destination);
    await ctx.resume();
    return {
      stop() {
        node.disconnect();
        input.disconnect();
        stream.getTracks().forEach((t) => t.stop());
        ctx.close();
      },
    };
  }

  // A WAV file, decoded and resampled to 16 kHz mono, sent in real time (100 ms frames).
  async function wavSource() {
    const file = $("wav").files[0];
    if (!file) throw new Error("choose a WAV file first");
    const ctx = new AudioContext({ sampleRate: RATE });
    const buf = await ctx.decodeAudioData(await file.arrayBuffer());
    ctx.close();
    const mono = new Float32Array(buf.length);
    for (let c = 0; c < buf.numberOfChannels; c++) {
      const d = buf.getChannelData(c);
      for (let i = 0; i < d.length; i++) mono[i] += d[i] / buf.numberOfChannels;
    }
    let at = 0;
    const id = setInterval(() => {
      if (at >= mono.length) {
        clearInterval(id);
        $("mic-state").textContent = "on: the file has been sent";
        return;
      }
      sendPcm(mono.subarray(at, at + CHUNK));
      at += CHUNK;
    }, 100);
    return { stop() { clearInterval(id); } };
  }

  // ---- start -----------------------------------------------------------------------------

  async function init() {
    bindControls();
    $("dev-go").onclick = devSignIn;
    $("user-id").onkeydown = (e) => { if (e.key === "Enter") devSignIn(); };
    $("token-go").onclick = () => {
      const t = $("token").value.trim();
      if (t) connect(t, null);
    };
    $("disconnect").onclick = signOut;
    try {
      const r = await fetch("/ui/config.json");
      const c = await r.json();
      if (c.devUsers) $("dev-signin").classList.remove("hidden");
    } catch (_) { /* the token form stays */ }
  }

  document.addEventListener("DOMContentLoaded", init);
})();
