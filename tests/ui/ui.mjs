// Browser half of tests/ui.rs: drives the /ui/ pages in the system Chromium (headless) with
// playwright-core. Everything comes from the environment (see tests/ui.rs). Prints one line per
// step; exits non-zero, naming the failed step, on any failure.
import { chromium } from "playwright-core";
import { mkdirSync, rmSync } from "node:fs";
import path from "node:path";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const BASE = env("BASE_URL");
const TOKEN = env("OPERATOR_TOKEN");
const USER = env("USER_ID");
const PKG = env("APP_PACKAGE");
const WALL = env("WALL");
const CARD_TITLE = env("CARD_TITLE");
const DASHBOARD = env("DASHBOARD");
const SHOTS = env("SHOTS");
const PROFILE = env("PROFILE");
const WAIT = 15000;

let step = "launch";
const say = (s) => { step = s; console.log(`step: ${s}`); };

rmSync(PROFILE, { recursive: true, force: true });
mkdirSync(PROFILE, { recursive: true });
mkdirSync(SHOTS, { recursive: true });
const context = await chromium.launchPersistentContext(PROFILE, {
  executablePath: env("CHROMIUM"),
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
  viewport: { width: 1280, height: 900 },
});
const problems = [];

try {
  const glasses = await context.newPage();
  glasses.on("pageerror", (e) => problems.push(`glasses page error: ${e.message}`));
  glasses.on("console", (m) => { if (m.type() === "error") problems.push(`glasses console: ${m.text()}`); });

  say("emulator: sign in as a development user");
  await glasses.goto(`${BASE}/ui/glasses`);
  await glasses.locator("#user-id").fill(USER);
  await glasses.locator("#dev-go").click();
  await glasses.locator("#status", { hasText: /^connected$/ }).waitFor({ timeout: WAIT });
  const who = await glasses.locator("#who").textContent();
  if (who !== USER) throw new Error(`signed in as ${who}`);

  say("emulator: start the app from installedApps");
  const row = glasses.locator(`#apps tr[data-package="${PKG}"]`);
  await row.locator("button[data-action=start]").click();
  await row.locator(".state", { hasText: "active" }).waitFor({ timeout: WAIT });

  say("emulator: the text wall is drawn on the main view");
  const main = glasses.locator("#screen-main");
  await main.locator(".lt-text", { hasText: WALL }).waitFor({ timeout: WAIT });
  if ((await main.getAttribute("data-layout")) !== "text_wall") throw new Error("main view is not a text_wall");
  say("emulator: the dashboard line is drawn on the dashboard view");
  await glasses.locator("#screen-dashboard", { hasText: DASHBOARD }).waitFor({ timeout: WAIT });
  await glasses.screenshot({ path: path.join(SHOTS, "glasses-text-wall.png"), fullPage: true });

  say("emulator: a button press reaches the app, which answers with a reference card");
  await glasses.locator("button[data-button=short]").click();
  await main.locator(".lt-title", { hasText: CARD_TITLE }).waitFor({ timeout: WAIT });
  if ((await main.getAttribute("data-layout")) !== "reference_card") throw new Error("main view is not a reference_card");
  const text = await main.locator(".lt-ref .lt-text").textContent();
  if (!text.includes("Keynote")) throw new Error(`reference card text: ${text}`);
  await glasses.locator("#head-up").click();
  await glasses.screenshot({ path: path.join(SHOTS, "glasses-reference-card.png"), fullPage: true });

  say("operator API: a wrong token is a 401 JSON");
  const op = await context.newPage();
  op.on("pageerror", (e) => problems.push(`operator page error: ${e.message}`));
  const bad = await op.request.get(`${BASE}/ui/api/state`, { headers: { Authorization: "Bearer not-the-token" } });
  if (bad.status() !== 401) throw new Error(`wrong token: HTTP ${bad.status()}`);
  const badBody = await bad.json();
  if (badBody.code !== "INVALID_OPERATOR_TOKEN") throw new Error(`wrong token body: ${JSON.stringify(badBody)}`);
  const none = await op.request.post(`${BASE}/ui/api/sessions/${encodeURIComponent(USER)}/apps/${PKG}/stop`);
  if (none.status() !== 401) throw new Error(`no token on an action: HTTP ${none.status()}`);

  say("operator page: a wrong token is refused in the page");
  await op.goto(`${BASE}/ui/operator`);
  await op.locator("#op-token").fill("not-the-token");
  await op.locator("#op-go").click();
  await op.locator("#login-error", { hasText: "INVALID_OPERATOR_TOKEN" }).waitFor({ timeout: WAIT });

  say("operator page: the session, the app active, and its current screen");
  await op.locator("#op-token").fill(TOKEN);
  await op.locator("#op-go").click();
  const card = op.locator(`.session[data-user="${USER}"]`);
  await card.locator(".badge.connected").waitFor({ timeout: WAIT });
  await card.locator(`tr[data-package="${PKG}"] .state`, { hasText: "active" }).waitFor({ timeout: WAIT });
  await card.locator(".screen-main .lt-title", { hasText: CARD_TITLE }).waitFor({ timeout: WAIT });
  await card.locator(".screen-dashboard", { hasText: DASHBOARD }).waitFor({ timeout: WAIT });
  await op.locator("#t-sessions", { hasText: "1" }).waitFor({ timeout: WAIT });
  await op.waitForTimeout(1200); // one more poll: the rates have two samples
  await op.screenshot({ path: path.join(SHOTS, "operator.png"), fullPage: true });

  say("operator page: stop the app; the emulator shows it stopped");
  await card.locator(`tr[data-package="${PKG}"] button`, { hasText: "Stop" }).click();
  await card.locator(`tr[data-package="${PKG}"]`).waitFor({ state: "detached", timeout: WAIT });
  await row.locator(".state", { hasText: "stopped" }).waitFor({ timeout: WAIT });

  if (problems.length) throw new Error(problems.join("\n"));
  say("done");
} catch (e) {
  console.error(`FAILED at step "${step}": ${e.message}`);
  if (problems.length) console.error(problems.join("\n"));
  await context.close();
  process.exit(1);
}
await context.close();
