// Browser half of tests/ui.rs: drives the /ui/ pages in the system Chromium (headless) with
// playwright-core. Everything comes from the environment (see tests/ui.rs). Prints one line per
// step; exits non-zero, naming the failed step, on any failure.
import { writeFileSync } from "node:fs";
import path from "node:path";
import { env, launch, problems, say, walk, watch } from "./browser.mjs";

const BASE = env("BASE_URL");
const TOKEN = env("OPERATOR_TOKEN");
const USER = env("USER_ID");
const PKG = env("APP_PACKAGE");
const WALL = env("WALL");
const CARD_TITLE = env("CARD_TITLE");
const DASHBOARD = env("DASHBOARD");
const FEED_MAIN = env("FEED_MAIN");
const FEED_B = env("FEED_B");
const SHOTS = env("SHOTS");
const PROFILE = env("PROFILE");
const WAIT = 15000;

const context = await launch(["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]);
await context.grantPermissions(["microphone"], { origin: BASE });

// One second of a 440 Hz tone, 48 kHz mono PCM16, as a WAV file.
function toneWav(file) {
  const rate = 48000, n = rate;
  const b = Buffer.alloc(44 + 2 * n);
  b.write("RIFF", 0); b.writeUInt32LE(36 + 2 * n, 4); b.write("WAVEfmt ", 8);
  b.writeUInt32LE(16, 16); b.writeUInt16LE(1, 20); b.writeUInt16LE(1, 22);
  b.writeUInt32LE(rate, 24); b.writeUInt32LE(2 * rate, 28); b.writeUInt16LE(2, 32);
  b.writeUInt16LE(16, 34); b.write("data", 36); b.writeUInt32LE(2 * n, 40);
  for (let i = 0; i < n; i++) b.writeInt16LE(Math.round(8000 * Math.sin(2 * Math.PI * 440 * i / rate)), 44 + 2 * i);
  writeFileSync(file, b);
  return file;
}

// The number of audio bytes the app says (on its dashboard line) it has heard.
async function heard(page) {
  const t = await page.locator("#screen-dashboard").textContent();
  const m = /heard (\d+) bytes/.exec(t || "");
  return m ? Number(m[1]) : 0;
}

await walk(context, async () => {
  const glasses = await context.newPage();
  watch(glasses, "glasses");
  glasses.on("console", (m) => { if (m.type() === "error") problems.push(`glasses console: ${m.text()}`); });

  say("the landing page links both pages");
  await glasses.goto(`${BASE}/ui/`);
  await glasses.locator('a[href="/ui/operator"]').first().waitFor({ timeout: WAIT });
  await glasses.locator('a[href="/ui/glasses"]').first().waitFor({ timeout: WAIT });
  await glasses.screenshot({ path: path.join(SHOTS, "landing.png") });

  say("emulator: a pasted token that is no token is refused, and not retried");
  await glasses.goto(`${BASE}/ui/glasses`);
  await glasses.locator("#dev-signin:not(.hidden)").waitFor({ timeout: WAIT });
  await glasses.screenshot({ path: path.join(SHOTS, "glasses-sign-in.png") });
  await glasses.locator("#token").fill("not.a.token");
  await glasses.locator("#token-go").click();
  await glasses.locator("#status", { hasText: /^refused: [A-Z_]+$/ }).waitFor({ timeout: WAIT });
  await glasses.waitForTimeout(2500);
  if (!/^refused/.test(await glasses.locator("#status").textContent())) throw new Error("retried a refused token");
  await glasses.locator("#disconnect").click();

  say("emulator: sign in as a development user");
  await glasses.locator("#user-id").fill(USER);
  await glasses.locator("#dev-go").click();
  await glasses.locator("#status", { hasText: /^connected$/ }).waitFor({ timeout: WAIT });
  const who = await glasses.locator("#who").textContent();
  if (who !== USER) throw new Error(`signed in as ${who}`);

  say("emulator: a WAV file as the audio source, not chosen yet");
  await glasses.locator("input[name=mic-src][value=wav]").check();

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

  say("emulator: the microphone is on, and asks for the file");
  await glasses.locator("#mic-state", { hasText: "on" }).waitFor({ timeout: WAIT });
  await glasses.locator("#mic-error", { hasText: "choose a WAV file first" }).waitFor({ timeout: WAIT });

  say("emulator: choosing the file while the microphone is on plays it to the app (1 s = 32000 bytes)");
  await glasses.locator("#wav").setInputFiles(toneWav(path.join(PROFILE, "tone.wav")));
  await glasses.locator("#screen-dashboard", { hasText: "heard 32000 bytes" }).waitFor({ timeout: WAIT });
  if (await glasses.locator("#mic-error").textContent()) throw new Error(`still: ${await glasses.locator("#mic-error").textContent()}`);

  say("emulator: a button press reaches the app, which answers with a reference card");
  await glasses.locator("button[data-button=short]").click();
  await main.locator(".lt-title", { hasText: CARD_TITLE }).waitFor({ timeout: WAIT });
  if ((await main.getAttribute("data-layout")) !== "reference_card") throw new Error("main view is not a reference_card");
  const text = await main.locator(".lt-ref .lt-text").textContent();
  if (!text.includes("Keynote")) throw new Error(`reference card text: ${text}`);
  await glasses.locator("#head-up").click();
  await glasses.screenshot({ path: path.join(SHOTS, "glasses-reference-card.png"), fullPage: true });

  say("emulator: touch gestures reach the app, which shows every other layout");
  const touch = async (gesture, layout) => {
    await glasses.locator(`button[data-gesture=${gesture}]`).click();
    await glasses.locator(`#screen-main[data-layout=${layout}]`).waitFor({ timeout: WAIT });
  };
  const textOf = (sel) => main.locator(sel).textContent();
  await touch("single_tap", "double_text_wall");
  if (await textOf(".lt-top") !== "Now: Keynote" || await textOf(".lt-bottom") !== "Next: Demos at 15:15") {
    throw new Error("double_text_wall: " + await main.textContent());
  }
  await touch("double_tap", "dashboard_card");
  if (await textOf(".lt-left") !== "Hall B" || await textOf(".lt-right") !== "14:30") {
    throw new Error("dashboard_card: " + await main.textContent());
  }
  await touch("triple_tap", "bitmap_view");
  const size = await main.locator("img.bitmap").evaluate(async (img) => {
    await img.decode();
    return [img.naturalWidth, img.naturalHeight];
  });
  if (size[0] !== 64 || size[1] !== 16) throw new Error(`bitmap_view decoded as ${size}`);
  await main.screenshot({ path: path.join(SHOTS, "glasses-bitmap.png") });
  await touch("long_press", "bitmap_animation");
  const first = await main.locator("img.bitmap").getAttribute("src");
  await glasses.waitForFunction((src) => {
    const img = document.querySelector("#screen-main img.bitmap");
    return img && img.getAttribute("src") !== src;
  }, first, { timeout: WAIT });
  await touch("forward_swipe", "clear_view");
  if ((await main.textContent()).trim() !== "") throw new Error("clear_view: " + await main.textContent());
  await glasses.locator("button[data-button=short]").click();
  await main.locator(".lt-title", { hasText: CARD_TITLE }).waitFor({ timeout: WAIT });

  say("operator API: a wrong token is a 401 JSON");
  const op = await context.newPage();
  watch(op, "operator");
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
  await card.locator(".badge.mic-on", { hasText: "microphone on" }).waitFor({ timeout: WAIT });
  await card.locator(`tr[data-package="${PKG}"] .state`, { hasText: "active" }).waitFor({ timeout: WAIT });
  await card.locator(".screen-main .lt-title", { hasText: CARD_TITLE }).waitFor({ timeout: WAIT });
  await card.locator(".screen-dashboard", { hasText: DASHBOARD }).waitFor({ timeout: WAIT });
  await op.locator("#t-sessions", { hasText: "1" }).waitFor({ timeout: WAIT });
  await op.waitForTimeout(1200); // one more poll: the rates have two samples
  await op.screenshot({ path: path.join(SHOTS, "operator.png"), fullPage: true });

  say("operator page: the session follows the first venue feed");
  const followers = (feed) => op.locator(`#feeds tr[data-feed="${feed}"] .followers`);
  await card.locator(".feed-now", { hasText: FEED_MAIN }).waitFor({ timeout: WAIT });
  await followers(FEED_MAIN).filter({ hasText: /^1$/ }).waitFor({ timeout: WAIT });
  await followers(FEED_B).filter({ hasText: /^0$/ }).waitFor({ timeout: WAIT });

  say("operator page: point the user at the second feed; the page shows it and the followers move");
  await card.locator("select.feed-pick").selectOption(FEED_B);
  await card.locator("button.feed-follow").click();
  await card.locator(".feed-now", { hasText: FEED_B }).waitFor({ timeout: WAIT });
  await card.locator(".small", { hasText: `follows feed ${FEED_B}` }).waitFor({ timeout: WAIT });
  await followers(FEED_B).filter({ hasText: /^1$/ }).waitFor({ timeout: WAIT });
  await followers(FEED_MAIN).filter({ hasText: /^0$/ }).waitFor({ timeout: WAIT });
  if ((await card.locator("select.feed-pick").inputValue()) !== FEED_B) throw new Error("the feed choice was not kept");
  await op.waitForTimeout(1200); // a poll later, still so
  if ((await card.locator(".feed-now").textContent()) !== FEED_B) throw new Error("the page went back to the old feed");
  await op.screenshot({ path: path.join(SHOTS, "operator-feeds.png"), fullPage: true });

  say("operator API: the session follows the second feed");
  const st = await (await op.request.get(`${BASE}/ui/api/state`, { headers: { Authorization: `Bearer ${TOKEN}` } })).json();
  const mine = st.sessions.find((s) => s.userId === USER);
  if (!mine || mine.feed !== FEED_B) throw new Error(`the API says the session follows ${mine && mine.feed}`);
  const count = Object.fromEntries(st.feeds.map((f) => [f.name, f.followers]));
  if (count[FEED_MAIN] !== 0 || count[FEED_B] !== 1) throw new Error(`followers: ${JSON.stringify(count)}`);
  const noToken = await op.request.post(`${BASE}/ui/api/feeds/${FEED_MAIN}/follow`, { data: { user: USER } });
  if (noToken.status() !== 401) throw new Error(`follow without a token: HTTP ${noToken.status()}`);

  say("operator page: stop the app; the emulator shows it stopped");
  await card.locator(`tr[data-package="${PKG}"] button`, { hasText: "Stop" }).click();
  await card.locator(`tr[data-package="${PKG}"]`).waitFor({ state: "detached", timeout: WAIT });
  await row.locator(".state", { hasText: "stopped" }).waitFor({ timeout: WAIT });
  await glasses.locator("#mic-state", { hasText: "off" }).waitFor({ timeout: WAIT });

  say("emulator: start the app again; the microphone streams to it");
  await glasses.locator("input[name=mic-src][value=mic]").check();
  await row.locator("button[data-action=start]").click();
  await glasses.locator("#mic-state", { hasText: "on" }).waitFor({ timeout: WAIT });
  const until = Date.now() + WAIT;
  while ((await heard(glasses)) < 16000) {
    if (Date.now() > until) throw new Error(`the app heard ${await heard(glasses)} bytes from the microphone`);
    await glasses.waitForTimeout(100);
  }
  if (await glasses.locator("#mic-error").textContent()) throw new Error(await glasses.locator("#mic-error").textContent());

  say("operator page: add a device; its token and QR code only on request");
  await op.locator("#dev-names").fill("emu-desk");
  await op.locator("#dev-add").click();
  const drow = op.locator('#devices tr[data-device="emu-desk"]');
  await drow.waitFor({ timeout: WAIT });
  if ((await op.locator("#dev-token").textContent()).trim()) throw new Error("a token shown before it was asked for");
  await drow.locator("button.dev-show").click();
  await op.locator("#dev-shown:not(.hidden)").waitFor({ timeout: WAIT });
  const devToken = (await op.locator("#dev-token").textContent()).trim();
  if (devToken.split(".").length !== 3) throw new Error(`not a token: ${devToken}`);
  const qr = op.locator("#dev-qr");
  if (!(await qr.getAttribute("src") || "").startsWith("data:image/svg+xml,")) throw new Error("no QR code");
  const qrWidth = await qr.evaluate(async (img) => { await img.decode(); return img.naturalWidth; });
  if (!(qrWidth > 0)) throw new Error("the QR code is not drawn");
  await op.screenshot({ path: path.join(SHOTS, "operator-devices.png"), fullPage: true });

  say("emulator: sign in with the device's token");
  await glasses.locator("#disconnect").click();
  await glasses.locator("#token").fill(devToken);
  await glasses.locator("#token-go").click();
  await glasses.locator("#status", { hasText: /^connected$/ }).waitFor({ timeout: WAIT });
  if ((await glasses.locator("#who").textContent()) !== "device:emu-desk") throw new Error("not signed in as the device");

  say("operator page: revoke the device; the emulator is cut off");
  await drow.locator("button.dev-revoke").click();
  await drow.locator("button.dev-revoke", { hasText: "Confirm revoke" }).click();
  await glasses.locator("#status", { hasText: "refused: DEVICE_REVOKED" }).waitFor({ timeout: WAIT });
  await drow.locator("button.dev-revoke").waitFor({ state: "detached", timeout: WAIT });
  if (await op.locator("#dev-shown:not(.hidden)").count()) throw new Error("the revoked token stays shown");
});
