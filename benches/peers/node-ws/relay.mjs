// Peer fixture (not part of the server): the minimal AugmentOS routing protocol of
// benches/peers/README.md on Node.js with the `ws` package, written idiomatically (JSON.parse,
// an envelope object, JSON.stringify, ws.send). ws queues what the socket cannot take yet.
// Usage: node relay.mjs PORT (listens on 127.0.0.1:PORT).
import { WebSocketServer } from "ws";

const port = Number(process.argv[2] || 18122);
const sessions = new Map(); // sessionId -> { glasses, apps: Set<{ ws, sid, subs: Set }> }
const session = (id) => {
  let s = sessions.get(id);
  if (!s) sessions.set(id, (s = { glasses: null, apps: new Set() }));
  return s;
};

const wss = new WebSocketServer({ host: "127.0.0.1", port, perMessageDeflate: false });
wss.on("connection", (ws, req) => {
  const path = new URL(req.url, "http://x").pathname;
  const glasses = path === "/glasses-ws";
  let s = null;
  let app = null;
  ws.on("message", (data, isBinary) => {
    if (isBinary) {
      if (!glasses || !s) return;
      for (const a of s.apps) if (a.subs.has("audio_chunk")) a.ws.send(data, { binary: true });
      return;
    }
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    if (!s) {
      if (glasses && msg.type === "connection_init") {
        s = session(msg.sessionId || "");
        s.glasses = ws;
        ws.send(JSON.stringify({ type: "connection_ack", sessionId: msg.sessionId }));
      } else if (!glasses && msg.type === "tpa_connection_init") {
        s = session(msg.sessionId || "");
        app = { ws, sid: `${msg.sessionId}-${msg.packageName}`, subs: new Set() };
        s.apps.add(app);
        ws.send(JSON.stringify({ type: "tpa_connection_ack", sessionId: app.sid }));
      }
      return;
    }
    if (glasses) {
      const timestamp = Date.now();
      for (const a of s.apps) {
        if (!a.subs.has(msg.type)) continue;
        a.ws.send(
          JSON.stringify({ type: "data_stream", sessionId: a.sid, streamType: msg.type, data: msg, timestamp }),
        );
      }
    } else if (msg.type === "subscription_update") {
      app.subs = new Set(msg.subscriptions || []);
    } else if (msg.type === "display_event") {
      if (s.glasses) s.glasses.send(data, { binary: false });
    }
  });
  ws.on("close", () => {
    if (!s) return;
    if (glasses && s.glasses === ws) s.glasses = null;
    if (app) s.apps.delete(app);
  });
});
