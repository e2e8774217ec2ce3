// Browser set-up shared by the UI walks (ui.mjs, captions.mjs): settings from the environment,
// the system Chromium (headless, playwright-core) on a fresh profile, one `step:` line per step,
// and on failure the failed step and each page's state on stderr and a non-zero exit.
import { chromium } from "playwright-core";
import { mkdirSync, rmSync } from "node:fs";

export const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};

let step = "launch";
export const say = (s) => { step = s; console.log(`step: ${s}`); };
// Page errors seen on the way; any fails the walk at its end.
export const problems = [];
export const watch = (page, name) => page.on("pageerror", (e) => problems.push(`${name} page error: ${e.message}`));

// Chromium on an emptied PROFILE (SHOTS made), with `args` beside the common flags.
export async function launch(args = []) {
  const profile = env("PROFILE");
  rmSync(profile, { recursive: true, force: true });
  mkdirSync(profile, { recursive: true });
  mkdirSync(env("SHOTS"), { recursive: true });
  return chromium.launchPersistentContext(profile, {
    executablePath: env("CHROMIUM"),
    headless: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync", ...args,
    ],
    viewport: { width: 1280, height: 900 },
  });
}

// Runs the walk's `steps`, then says "done" and closes the browser; any failure (or page error)
// is reported with each page's state and exits 1.
export async function walk(context, steps) {
  try {
    await steps();
    if (problems.length) throw new Error(problems.join("\n"));
    say("done");
  } catch (e) {
    console.error(`FAILED at step "${step}": ${e.message}`);
    for (const page of context.pages()) {
      const dump = await page.evaluate(() => {
        const t = (id) => (document.getElementById(id) || {}).textContent;
        return { url: location.pathname, status: t("status"), mic: t("mic-state"), micError: t("mic-error"),
          main: t("screen-main"), dashboard: t("screen-dashboard"), log: t("log"), error: t("login-error") };
      }).catch((err) => ({ error: String(err) }));
      console.error(JSON.stringify(dump));
    }
    if (problems.length) console.error(problems.join("\n"));
    await context.close();
    process.exit(1);
  }
  await context.close();
}
