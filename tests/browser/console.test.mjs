// The console (docs/console.md) in Debian's chromium, driven by playwright-core against the real
// service: scripts/check-console starts roomsync (ROOMSYNC_URL, API_TOKEN) and runs this file.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const BASE = process.env.ROOMSYNC_URL;
const TOKEN = process.env.API_TOKEN;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const APP = 1400000001;
let browser;
let eventTime = Date.now() - 3600_000;

before(async () => {
  assert.ok(BASE && TOKEN, "ROOMSYNC_URL and API_TOKEN are set");
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
});
after(async () => browser && browser.close());

async function callback(body) {
  body.EventTime ??= ++eventTime;
  const query = `SdkAppid=${APP}&CallbackCommand=${encodeURIComponent(body.CallbackCommand)}`;
  const answer = await fetch(`${BASE}/callback?${query}`, { method: "POST", body: JSON.stringify(body) });
  return answer.status;
}
const enter = (room, users) =>
  callback({ CallbackCommand: "Room.CallbackAfterMemberEnter", RoomId: room, MemberList_Account: users });

/// A page signed in, and every request it makes.
async function signedIn() {
  const context = await browser.newContext();
  const page = await context.newPage();
  const requests = [];
  page.on("request", (r) => requests.push(r.url()));
  await page.goto(`${BASE}/console`);
  await page.fill("#token", TOKEN);
  await Promise.all([page.waitForURL(`${BASE}/console`), page.click("button[type=submit]")]);
  await page.waitForSelector("#rooms");
  return { context, page, requests };
}

test("the token form, a wrong token, then the console", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const first = await page.goto(`${BASE}/console`);
  assert.equal(first.status(), 200);
  assert.ok(await page.isVisible("#token"), "the token form");
  await page.fill("#token", "not-the-token-at-all");
  const [answer] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith("/console/login")),
    page.click("button[type=submit]"),
  ]);
  assert.equal(answer.status(), 401);
  assert.equal(await page.textContent("#message"), "That is not the token.");
  assert.equal((await context.cookies()).length, 0, "no session for a wrong token");
  await page.fill("#token", TOKEN);
  await Promise.all([page.waitForURL(`${BASE}/console`), page.click("button[type=submit]")]);
  await page.waitForSelector("#rooms");
  const [cookie] = await context.cookies();
  assert.equal(cookie.name, "roomsync_console");
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, "Strict");
  assert.equal(cookie.secure, false, "plain HTTP here; Secure over TLS (tested in Rust)");
  assert.equal(cookie.path, "/console");
  const hours = (cookie.expires * 1000 - Date.now()) / 3600_000;
  assert.ok(hours > 11.9 && hours <= 12, `expires in ${hours} h`);
  assert.ok(!cookie.value.includes(TOKEN), "the cookie does not hold the token");
  // Signing out ends the session in this browser.
  await Promise.all([page.waitForURL(`${BASE}/console`), page.click("#logout")]);
  assert.ok(await page.isVisible("#token"));
  assert.equal((await context.cookies()).length, 0);
  await context.close();
});

test("a new member appears without a reload within 2 s, and the open room follows", async () => {
  const { context, page } = await signedIn();
  await page.waitForSelector("#live.up");
  const started = Date.now();
  assert.equal(await enter("live-room", ["ann"]), 200);
  await page.waitForSelector("#rooms tbody tr:has-text('live-room')", { timeout: 2000 });
  const took = Date.now() - started;
  assert.ok(took < 2000, `${took} ms`);
  await page.click("#rooms tbody tr:has-text('live-room')");
  await page.waitForSelector("#room-members li:has-text('ann')");
  assert.equal(await enter("live-room", ["bob"]), 200);
  await page.waitForSelector("#room-members li:has-text('bob')", { timeout: 2000 });
  // The room's count moves with the write's `rooms` event, which comes after the room's own
  // changes in the same write and is rendered on the next frame: wait for it, within 2 s too.
  const count = page.locator("#rooms tbody tr:has-text('live-room') td:nth-child(5)");
  await count.filter({ hasText: /^2$/ }).waitFor({ timeout: 2000 });
  assert.equal(await count.textContent(), "2");
  await context.close();
});

test("an id holding HTML is shown as text and never run", async () => {
  const { context, page } = await signedIn();
  await page.waitForSelector("#live.up");
  const evil = `<img src=x onerror="window.__pwned=1">`;
  assert.equal(await enter(evil, [`<b>${evil}</b>`]), 200);
  const cell = await page.waitForSelector(`#rooms tbody td:text-is('${evil}')`, { timeout: 2000 });
  assert.equal(await cell.textContent(), evil);
  await cell.click();
  await page.waitForSelector("#room-members li");
  assert.ok((await page.textContent("#room-members")).includes(`<b>${evil}</b>`));
  assert.equal(await page.locator("img").count(), 0, "no element was made from the id");
  assert.equal(await page.locator("#room-members b").count(), 0);
  assert.equal(await page.evaluate(() => window.__pwned), undefined);
  await context.close();
});

test("a refused callback is listed with its code, its body only on request", async () => {
  assert.equal(await callback({ CallbackCommand: "Room.CallbackAfterMemberEnter", RoomId: "r" }), 400);
  const { context, page } = await signedIn();
  const refusal = page.locator("#refusals tbody tr").first();
  await refusal.waitFor();
  assert.equal(await refusal.locator("td:nth-child(2)").textContent(), "40002");
  assert.equal(await refusal.locator("td:nth-child(3)").textContent(), "Room.CallbackAfterMemberEnter");
  assert.ok(await page.isHidden("#refusal-body"));
  await refusal.locator("button").click();
  await page.waitForSelector("#refusal-body:not([hidden])");
  assert.ok((await page.textContent("#refusal-body")).includes('"RoomId":"r"'));
  await context.close();
});

test("the setup check names a command that arrived and one that did not", async () => {
  await enter("setup-room", ["x"]);
  const { context, page } = await signedIn();
  const arrived = page.locator("#setup tbody tr:has-text('Room.CallbackAfterMemberEnter')");
  await arrived.waitFor();
  assert.notEqual(await arrived.locator("td:nth-child(2)").textContent(), "0");
  assert.notEqual(await arrived.getAttribute("class"), "missing");
  const missing = page.locator("#setup tbody tr:has-text('Live.CallbackAfterCreateRoom')");
  assert.equal(await missing.getAttribute("class"), "missing");
  assert.equal(await missing.locator("td:nth-child(3)").textContent(), "not in 30 days");
  assert.ok((await page.textContent("#health")).includes("not signed"));
  await context.close();
});

test("no request leaves roomsync", async () => {
  const { context, page, requests } = await signedIn();
  await page.waitForSelector("#live.up");
  await enter("origin-room", ["z"]);
  await page.waitForSelector("#rooms tbody tr:has-text('origin-room')");
  assert.ok(requests.length >= 4, requests.join("\n"));
  for (const url of requests) assert.ok(url.startsWith(BASE + "/"), url);
  await context.close();
});

test("1,000 live rooms page by 50", async () => {
  for (let i = 0; i < 20; i++) {
    const batch = [];
    for (let j = 0; j < 50; j++) batch.push(enter(`many-${i * 50 + j}`, ["m"]));
    assert.ok((await Promise.all(batch)).every((s) => s === 200));
  }
  const { context, page } = await signedIn();
  await page.waitForSelector("#rooms tbody tr");
  assert.equal(await page.locator("#rooms tbody tr").count(), 50);
  assert.match(await page.textContent("#page"), /^page 1 of (2[1-9]|[3-9]\d)$/);
  await page.click("#next");
  assert.equal(await page.locator("#rooms tbody tr").count(), 50);
  await page.fill("#room-filter", "many-999");
  assert.equal(await page.locator("#rooms tbody tr").count(), 1);
  await context.close();
});
