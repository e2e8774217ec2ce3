// Browser half of tests/ui_captions.rs: a new user's walk of the live captions stack in the
// system Chromium (headless, playwright-core). Opens the emulator URL the stack printed, pastes
// the glasses token, picks a WAV file as the source, starts Live Captions, chooses the file of
// real speech once the microphone is on, reads the captions on the emulated display, then opens
// the operator page with the printed operator token and finds the session. Prints one line per
// step and, last, `captions: <text>`; exits non-zero naming the failed step.
import path from "node:path";
import { env, launch, say, walk, watch } from "./browser.mjs";

const EMULATOR = env("EMULATOR_URL");
const OPERATOR = env("OPERATOR_URL");
const GLASSES_TOKEN = env("GLASSES_TOKEN");
const OPERATOR_TOKEN = env("OPERATOR_TOKEN");
const USER = env("USER_ID");
const WAV = env("WAV");
const EXPECT = env("EXPECT"); // words the captions must show, space-separated
// Words the captions must show in Spanish once "Español" is picked (unset: not tried).
const EXPECT_ES = process.env.EXPECT_ES || "";
const SHOTS = env("SHOTS");
const PKG = "com.example.captions";
const WAIT = 20000;

const context = await launch();
const words = (t) => (t || "").toLowerCase().replace(/[^a-z0-9' ]+/g, " ").split(/\s+/).filter(Boolean);

let shown = "";
await walk(context, async () => {
  const glasses = await context.newPage();
  watch(glasses, "glasses");

  say("emulator: paste the glasses token the stack printed");
  await glasses.goto(EMULATOR);
  await glasses.locator("#token").fill(GLASSES_TOKEN);
  await glasses.locator("#token-go").click();
  await glasses.locator("#status", { hasText: /^connected$/ }).waitFor({ timeout: WAIT });

  say("emulator: a WAV file as the source; start Live Captions");
  await glasses.locator("input[name=mic-src][value=wav]").check();
  const row = glasses.locator(`#apps tr[data-package="${PKG}"]`);
  await row.locator("button[data-action=start]").click();
  await row.locator(".state", { hasText: "active" }).waitFor({ timeout: WAIT });
  await glasses.locator("#mic-state", { hasText: "on" }).waitFor({ timeout: WAIT });

  say("emulator: choose the recording while the microphone is on; read the captions");
  await glasses.locator("#wav").setInputFiles(WAV);
  const want = words(EXPECT);
  const main = glasses.locator("#screen-main");
  const until = Date.now() + WAIT;
  for (;;) {
    shown = (await main.textContent()) || "";
    const got = words(shown);
    if (want.every((w) => got.includes(w))) break;
    if (Date.now() > until) throw new Error(`the display shows ${JSON.stringify(shown)}, not all of "${EXPECT}"`);
    await glasses.waitForTimeout(100);
  }
  await glasses.screenshot({ path: path.join(SHOTS, "captions-glasses.png"), fullPage: true });

  if (EXPECT_ES) {
    say("emulator: pick Español as the captions language; play the recording again");
    await glasses.locator("#captions-language").selectOption("es-ES");
    await glasses.locator("#language-state", { hasText: "set for Live Captions" }).waitFor({ timeout: WAIT });
    // The app swaps its subscription (two updates): let the microphone settle, on.
    await glasses.waitForTimeout(2500);
    await glasses.locator("#mic-state", { hasText: "on" }).waitFor({ timeout: WAIT });
    await glasses.locator("#wav").setInputFiles(WAV);
    const wantEs = words(EXPECT_ES);
    const untilEs = Date.now() + WAIT;
    for (;;) {
      shown = (await main.textContent()) || "";
      if (wantEs.every((w) => words(shown).includes(w))) break;
      if (Date.now() > untilEs) throw new Error(`the display shows ${JSON.stringify(shown)}, not all of "${EXPECT_ES}"`);
      await glasses.waitForTimeout(100);
    }
    await glasses.screenshot({ path: path.join(SHOTS, "captions-glasses-es.png"), fullPage: true });
  }

  say("operator page: the operator token; the session with Live Captions active");
  const op = await context.newPage();
  watch(op, "operator");
  await op.goto(OPERATOR);
  await op.locator("#op-token").fill(OPERATOR_TOKEN);
  await op.locator("#op-go").click();
  const card = op.locator(`.session[data-user="${USER}"]`);
  await card.locator(".badge.connected").waitFor({ timeout: WAIT });
  await card.locator(`tr[data-package="${PKG}"] .state`, { hasText: "active" }).waitFor({ timeout: WAIT });
  await op.screenshot({ path: path.join(SHOTS, "captions-operator.png"), fullPage: true });
});
console.log(`captions: ${shown.replace(/\s+/g, " ").trim()}`);
