// N open consoles in a real browser (Debian's chromium, driven by playwright-core from
// tests/browser; it downloads no browser), for `bench/run --console-browsers N`: the page itself,
// its script, its event stream and its rendering, as people have it open beside a load.
//
//   node bench/viewers.mjs URL N     (API_TOKEN set; loopback URLs only)
//
// Signs in once, opens N pages of /console in that session, prints "ready" when every page shows
// its rooms. From SIGUSR1 on it counts what each page's event stream brings (the page's own
// EventSource, watched from an init script: `rooms` events, their ids, their lag from the change's
// recorded_at); on SIGUSR2 it prints one JSON line (the keys of bench/feedreader.rs) and exits.
// A `rooms` event whose id is not the previous id plus its changes is a gap (counted from the
// page's start).
import { createRequire } from "node:module";

const require = createRequire(new URL("../tests/browser/package.json", import.meta.url));
const { chromium } = require("playwright-core");

const [url, n] = [process.argv[2], Number(process.argv[3])];
const token = process.env.API_TOKEN;
if (!url || !(n >= 1 && n <= 200) || !token) {
  console.error("usage: API_TOKEN=… node bench/viewers.mjs URL N   (N from 1 to 200)");
  process.exit(2);
}
const host = new URL(url).hostname;
if (!["127.0.0.1", "[::1]", "localhost"].includes(host)) {
  console.error(`viewers: loopback only, not ${host}`);
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox"],
});
// Counts what the page's own event stream brings (run in the page before its script).
function watch() {
  const seen = { gaps: 0, last: null, events: [] };
  window.__viewer = seen;
  const Real = window.EventSource;
  window.EventSource = class extends Real {
    constructor(...args) {
      super(...args);
      this.addEventListener("rooms", (e) => {
        const data = JSON.parse(e.data);
        const id = Number(e.lastEventId);
        if (seen.last !== null && id !== seen.last + data.changes) seen.gaps++;
        seen.last = id;
        const at = Date.now();
        seen.events.push([at, data.changes, at - Date.parse(data.recorded_at)]);
      });
    }
  };
}

// Each console in a context of its own, as in a browser of its own: one browser holds at most six
// HTTP/1.1 connections to a host, and each console keeps one open for its event stream.
async function open() {
  const context = await browser.newContext();
  await context.addInitScript(watch);
  return context;
}
const signIn = await open();
const first = await signIn.newPage();
await first.goto(`${url}/console`);
await first.fill("#token", token);
await Promise.all([first.waitForURL(`${url}/console`), first.click("button[type=submit]")]);
const session = await signIn.cookies();
const pages = [first];
for (let i = 1; i < n; i++) {
  const context = await open();
  await context.addCookies(session);
  const page = await context.newPage();
  await page.goto(`${url}/console`);
  pages.push(page);
}
await Promise.all(pages.map((p) => p.waitForSelector("#rooms", { timeout: 120_000 })));
console.error(`viewers: ${n} consoles open`);
console.log("ready");

// The pages keep every event with the time it came; what came between the two signals counts.
let from = Infinity;
process.on("SIGUSR1", () => {
  from = Date.now();
});
process.on("SIGUSR2", async () => {
  const to = Date.now();
  const seen = (await Promise.all(pages.map((p) => p.evaluate(() => window.__viewer)))).map((s) => {
    const events = s.events.filter(([at]) => at >= from && at <= to);
    return {
      gaps: s.gaps,
      events: events.length,
      changes: events.reduce((a, e) => a + e[1], 0),
      lags: events.map((e) => e[2]),
    };
  });
  const lags = seen.flatMap((s) => s.lags).sort((a, b) => a - b);
  const at = (q) => (lags.length ? lags[Math.min(lags.length - 1, Math.floor((lags.length * q) / 100))] : 0);
  const changes = seen.map((s) => s.changes);
  const summary = {
    readers: n,
    events: seen.reduce((a, s) => a + s.events, 0),
    changes_per_reader: Math.min(...changes),
    changes_max: Math.max(...changes),
    gaps: seen.reduce((a, s) => a + s.gaps, 0),
    errors: seen.filter((s) => s.events === 0).length,
    lag_p50_ms: at(50),
    lag_p99_ms: at(99),
    lag_max_ms: lags.length ? lags[lags.length - 1] : 0,
  };
  console.log(JSON.stringify(summary));
  console.error(
    `viewers: ${n} consoles, ${summary.changes_per_reader}–${summary.changes_max} changes each, ` +
      `${summary.gaps} gaps, ${summary.errors} without an event; lag p50 ${at(50)} ms, p99 ${at(99)} ms`,
  );
  await browser.close();
  process.exit(0);
});
