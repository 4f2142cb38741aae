// The status page in headless Chromium, driven by tests/e2e/browser.rs.
//
//   node tests/browser/status_page.mjs http://ADMIN
//
// Expects sitesteer with two sites, `a` and `b`, both up, and `[admin] token_file` set; the
// token comes from SITESTEER_TOKEN. Protocol on stdout (everything else goes to stderr):
//
//   READY        both sites show up: the driver now kills site a (kill -9)
//   OK           every check passed
//
// Exits 1 with `FAIL: why` on stderr on any failure. Screenshots go to build/artifacts/
// (ARTIFACTS_DIR overrides).

import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const admin = (process.argv[2] || "").replace(/\/$/, "");
const token = process.env.SITESTEER_TOKEN || "";
const artifacts = process.env.ARTIFACTS_DIR
  || resolve(dirname(fileURLToPath(import.meta.url)), "../../build/artifacts");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const started = Date.now();

const log = (msg) => process.stderr.write(`[browser +${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}\n`);
class Failure extends Error {}
const fail = (msg) => { throw new Failure(msg); };

if (!/^http:\/\/[^/]+$/.test(admin)) {
  process.stderr.write("usage: node status_page.mjs http://ADMIN_HOST:PORT (SITESTEER_TOKEN in the environment)\n");
  process.exit(1);
}
if (!token) {
  process.stderr.write("FAIL: SITESTEER_TOKEN is not set\n");
  process.exit(1);
}

// Nothing here may hang: the whole run is bounded.
const watchdog = setTimeout(() => {
  process.stderr.write("FAIL: the browser test did not finish within 90s\n");
  process.exit(1);
}, 90_000);

const profile = mkdtempSync(join(tmpdir(), "sitesteer-chromium-"));
let context;

/** `data-state` of every site card, e.g. {a: "up", b: "up"}. */
async function states(page) {
  return page.evaluate(() => Object.fromEntries([...document.querySelectorAll("article.site")]
    .map((c) => [c.dataset.site, c.dataset.state])));
}

/** Waits (bounded) until site `name` shows `state` on the page, without reloading it. */
async function waitState(page, name, state, ms) {
  try {
    await page.waitForSelector(`article.site[data-site="${name}"][data-state="${state}"]`, { timeout: ms });
  } catch {
    fail(`site ${name} did not show "${state}" within ${ms / 1000}s; the page shows ${JSON.stringify(await states(page))}`);
  }
}

/** The admin API's view of one site. */
async function apiState(name) {
  const r = await fetch(`${admin}/api/v1/sites`, { signal: AbortSignal.timeout(5000) });
  if (!r.ok) fail(`GET /api/v1/sites answered ${r.status}`);
  const site = (await r.json()).sites.find((s) => s.name === name);
  return site ? site.state : "missing";
}

/** True when the page scrolls sideways. */
const scrollsSideways = (page) => page.evaluate(() =>
  document.documentElement.scrollWidth > document.documentElement.clientWidth + 1);

/** The relative luminance (0 black .. 1 white) of the body's background. */
const bodyLuminance = (page) => page.evaluate(() => {
  const m = getComputedStyle(document.body).backgroundColor.match(/\d+(\.\d+)?/g).map(Number);
  const lin = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
  return 0.2126 * lin(m[0]) + 0.7152 * lin(m[1]) + 0.0722 * lin(m[2]);
});

async function main() {
  mkdirSync(artifacts, { recursive: true });
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    viewport: { width: 1280, height: 800 },
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  context.setDefaultTimeout(10_000);
  const page = context.pages()[0] || await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(`page error: ${e.message}`));
  page.on("console", (m) => { if (m.type() === "error") log(`console error: ${m.text()}`); });
  page.on("response", (r) => { if (r.status() >= 400) log(`${r.request().method()} ${new URL(r.url()).pathname} -> ${r.status()}`); });
  // Prompts get the token; alerts are the page reporting a refused action.
  const alerts = [];
  let answerPrompt = null;
  page.on("dialog", async (d) => {
    if (d.type() === "prompt" && answerPrompt !== null) {
      await d.accept(answerPrompt);
    } else {
      if (d.type() === "alert") alerts.push(d.message());
      await d.dismiss();
    }
  });
  let navigations = 0;
  page.on("framenavigated", (f) => { if (f === page.mainFrame()) navigations += 1; });

  // 1. The page shows both sites up.
  const resp = await page.goto(`${admin}/`, { waitUntil: "domcontentloaded" });
  if (!resp || resp.status() !== 200) fail(`GET / answered ${resp ? resp.status() : "nothing"}`);
  if ((await page.title()) !== "sitesteer status") fail(`unexpected title ${JSON.stringify(await page.title())}`);
  await waitState(page, "a", "up", 15_000);
  await waitState(page, "b", "up", 15_000);
  try {
    await page.waitForSelector("#conn.live", { timeout: 10_000 });
  } catch {
    fail(`the event stream never connected: the page says ${JSON.stringify(await page.textContent("#conn"))}`);
  }
  // Mark the document and the events shown so far: what follows must come live.
  await page.evaluate(() => {
    window.__sameDocument = true;
    document.querySelectorAll("#events li").forEach((li) => { li.dataset.before = "1"; });
  });
  const navigationsBefore = navigations;
  log(`both sites up: ${JSON.stringify(await states(page))}`);
  process.stdout.write("READY\n");

  // 2. Site a dies (the driver kill -9's it): the open page follows without a reload.
  const killedAt = Date.now();
  await waitState(page, "a", "down", 10_000);
  log(`site a shows down ${Date.now() - killedAt} ms after READY`);
  if (navigations !== navigationsBefore || !(await page.evaluate(() => window.__sameDocument === true))) {
    fail("the page was reloaded or navigated; it must update live");
  }
  const badge = await page.evaluate(() => document.querySelector('article.site[data-site="a"] .state')?.textContent ?? "");
  if (badge.trim().toLowerCase() !== "down") fail(`site a's badge says ${JSON.stringify(badge)}`);
  // The event list shows the change, live over SSE (a new entry, not one shown before).
  try {
    await page.waitForFunction(() => [...document.querySelectorAll("#events li:not([data-before])")]
      .some((li) => li.querySelector("b")?.textContent === "a" && /→ down/.test(li.textContent)), null, { timeout: 5_000 });
  } catch {
    const shown = await page.evaluate(() => [...document.querySelectorAll("#events li")].slice(0, 5).map((li) => li.textContent.trim()));
    fail(`the event list shows no new "a … → down" change; its first entries: ${JSON.stringify(shown)}`);
  }
  log("the event list shows a → down");

  // 3. Drain b from the page: refused without the token, done with it.
  const drainB = 'article.site[data-site="b"] button[data-act="drain"]';
  await page.click(drainB);
  const deadline = Date.now() + 5_000;
  while (alerts.length === 0 && Date.now() < deadline) await page.waitForTimeout(50);
  if (alerts.length === 0) fail("draining without the token showed no refusal");
  if (!/drain b:/.test(alerts[0])) fail(`unexpected alert without the token: ${JSON.stringify(alerts[0])}`);
  if ((await apiState("b")) !== "up") fail("a drain without the token changed site b");
  log(`without the token the page says: ${alerts[0]}`);

  answerPrompt = token;
  await page.click("#token-btn");
  const stored = await page.evaluate(() => sessionStorage.getItem("sitesteer-token"));
  if (stored !== token) fail(`the token prompt did not store the token (got ${JSON.stringify(stored)})`);
  await page.click(drainB);
  await waitState(page, "b", "drained", 10_000);
  if (alerts.length !== 1) fail(`the drain with the token was refused: ${JSON.stringify(alerts.slice(1))}`);
  const api = await apiState("b");
  if (api !== "drained") fail(`the page shows b drained but GET /api/v1/sites says ${JSON.stringify(api)}`);
  await page.waitForSelector('article.site[data-site="b"] button[data-act="undrain"]');
  log("site b drained from the page; the API agrees");

  // 4. Screenshots: light, dark, phone.
  await page.waitForTimeout(1_200); // one more refresh, so the sparklines have points
  await page.screenshot({ path: join(artifacts, "status-page.png"), fullPage: true });
  const light = await bodyLuminance(page);
  await page.emulateMedia({ colorScheme: "dark" });
  const dark = await bodyLuminance(page);
  if (!(dark < 0.05 && light > 0.5)) fail(`dark mode does not render dark: body luminance ${dark.toFixed(3)} (light ${light.toFixed(3)})`);
  // One evaluate (not $eval: the cards are re-rendered every second, a handle can go stale).
  const badgeColour = await page.evaluate(() => {
    const e = document.querySelector('article.site[data-site="a"] .state');
    return e ? getComputedStyle(e).backgroundColor : null;
  });
  if (!badgeColour || badgeColour === "rgba(0, 0, 0, 0)") fail("the down badge has no colour in dark mode");
  await page.screenshot({ path: join(artifacts, "status-page-dark.png"), fullPage: true });

  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(300);
  for (const scheme of ["dark", "light"]) {
    await page.emulateMedia({ colorScheme: scheme });
    if (await scrollsSideways(page)) {
      const w = await page.evaluate(() => document.documentElement.scrollWidth);
      fail(`at 390x844 (${scheme}) the page scrolls sideways: ${w}px wide`);
    }
  }
  await page.screenshot({ path: join(artifacts, "status-page-phone.png"), fullPage: true });
  if (errors.length) fail(errors.join("; "));
  log(`screenshots in ${artifacts}`);
  process.stdout.write("OK\n");
}

let code = 0;
try {
  await main();
} catch (e) {
  process.stderr.write(`FAIL: ${e instanceof Failure ? e.message : (e && e.stack) || e}\n`);
  code = 1;
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  clearTimeout(watchdog);
}
log(code === 0 ? "passed" : "failed");
process.exit(code);
