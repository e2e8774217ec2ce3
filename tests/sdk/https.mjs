// SDK https test app: an app on the real, unmodified `@mentra/sdk@2.1.29`, served over https
// (Node's own `https` server around the SDK's express app, `server.getExpressApp()`) with the
// test certificate `tests/sdk_https.rs` made, so the box reaches its webhook at `https://`.
//
// Env: PORT, PACKAGE_NAME, API_KEY; CERT and KEY (PEM files: the chain and its key).
//
// It also serves its `tpa_config.json` (a `theme` setting, and a `fontSize` the box's config
// declares too): the box fetches it and merges it under its config's settings, which the SDK
// reads from its ack (`session.settings.getAll()`, reported with each session).
//
// stdout: one JSON object per line ("listening", "session" with the settings, "error"). The
// SDK's pino logs go to stderr. Unless INTEROP_ALLOW_NETWORK is set, axios's proxy is a closed local port.

import { readFileSync, writeSync } from "node:fs";
import https from "node:https";

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

const { AppServer, logger: sdkLogger } = await import("@mentra/sdk");

// The SDK's pino logger writes to stdout; send it to stderr so stdout stays one JSON per line.
const streamSym = Object.getOwnPropertySymbols(sdkLogger).find((s) => s.description === "pino.stream");
for (const entry of (streamSym && sdkLogger[streamSym]?.streams) || []) {
  entry.stream = { write: (chunk) => process.stderr.write(chunk) };
}

const port = Number.parseInt(process.env.PORT ?? "", 10);
const packageName = process.env.PACKAGE_NAME;
const apiKey = process.env.API_KEY;
if (!Number.isInteger(port) || port <= 0 || !packageName || !apiKey || !process.env.CERT || !process.env.KEY) {
  emit("fatal", { message: "PORT, PACKAGE_NAME, API_KEY, CERT and KEY must be set" });
  process.exit(2);
}

class HttpsApp extends AppServer {
  async onSession(session, sessionId, userId) {
    emit("session", { sessionId, userId, settings: session.settings.getAll() });
  }
}

const app = new HttpsApp({ packageName, apiKey, port, publicDir: false, healthCheck: true });
process.on("unhandledRejection", (err) => emit("error", { message: "unhandled rejection: " + String(err?.stack ?? err) }));
app.getExpressApp().get("/tpa_config.json", (_req, res) => {
  res.json({
    name: "https test app",
    settings: [
      { key: "theme", type: "select", label: "Theme", defaultValue: "dark", options: [{ label: "Dark", value: "dark" }] },
      { key: "fontSize", type: "slider", label: "Size", defaultValue: 99 },
    ],
  });
});
const tls = { cert: readFileSync(process.env.CERT), key: readFileSync(process.env.KEY) };
https.createServer(tls, app.getExpressApp()).listen(port, "127.0.0.1", () => emit("listening", { port }));
