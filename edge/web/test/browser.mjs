// Browser test: headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core) opens
// the demo page as two users against a running Switchboard (SB_HTTP_URL, e.g.
// http://127.0.0.1:8080/; SB_HTTP_URL_B optionally points the second page at another edge or
// balancer address; SB_REQUIRE_TWO_EDGES=1 fails unless the two pages sit on different edges)
// and checks that a chat message from one appears in the other and that a danmaku appears in
// both. Saves screenshots to test/out/. Prints "browser: N passed, M failed"
// and exits non-zero when a check failed.
//
//   SB_HTTP_URL=http://127.0.0.1:8080/ node test/browser.mjs
import { chromium } from 'playwright-core';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const outDir = path.join(here, 'out');
const base = process.env.SB_HTTP_URL;
if (!base) {
  console.error('browser: SB_HTTP_URL is not set (e.g. http://127.0.0.1:8080/)');
  console.log('browser: 0 passed, 1 failed');
  process.exit(1);
}
const baseB = process.env.SB_HTTP_URL_B || base;
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const TIMEOUT = Number(process.env.SB_BROWSER_TIMEOUT || 30000); // generous: a loaded 2-core box

const results = [];
async function check(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    results.push({ name, ok: true });
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (err) {
    results.push({ name, ok: false, err });
    console.log(`FAIL ${name}: ${err && err.message ? err.message.split('\n')[0] : err}`);
  }
}

const tag = Math.random().toString(36).slice(2, 7);
const alice = `alice-${tag}`;
const bob = `bob-${tag}`;

await mkdir(outDir, { recursive: true });
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-dev-shm-usage'],
});
let exitCode = 1;
try {
  const ctxA = await browser.newContext({ viewport: { width: 1280, height: 760 } });
  const ctxB = await browser.newContext({ viewport: { width: 1280, height: 760 } });
  const pageA = await ctxA.newPage();
  const pageB = await ctxB.newPage();
  const pageErrors = [];
  for (const [who, p] of [[alice, pageA], [bob, pageB]]) {
    p.setDefaultTimeout(TIMEOUT);
    p.on('pageerror', (err) => pageErrors.push(`${who}: ${err.message}`));
    p.on('console', (m) => { if (m.type() === 'error') pageErrors.push(`${who} console: ${m.text()}`); });
  }
  const urlA = new URL(base);
  urlA.searchParams.set('user', alice);
  const urlB = new URL(baseB);
  urlB.searchParams.set('user', bob);
  urlB.searchParams.set('dm', alice);

  await check('both pages load and go online', async () => {
    // One after the other: a least-connections balancer then puts them on different edges.
    await pageA.goto(urlA.toString());
    await pageA.waitForSelector('[data-testid=state][data-state=online]');
    await pageB.goto(urlB.toString());
    await pageB.waitForSelector('[data-testid=state][data-state=online]');
    const meA = await pageA.textContent('[data-testid=me]');
    if (meA !== alice) throw new Error(`page A is ${meA}, want ${alice}`);
  });

  await check('edges: each page names the edge it is connected to', async () => {
    const edgeOf = async (p) => (await p.evaluate(() => window.sb.welcome && window.sb.welcome.edge)) || '';
    const [ea, eb] = [await edgeOf(pageA), await edgeOf(pageB)];
    console.log(`     alice on edge ${ea}, bob on edge ${eb}`);
    if (!ea || !eb) throw new Error('no edge in the welcome');
    // Through a balancer in front of several edges (make cluster), the test must cross edges.
    if (process.env.SB_REQUIRE_TWO_EDGES === '1' && ea === eb) {
      throw new Error(`both pages on edge ${ea}: the test would not cross edges`);
    }
  });

  await check('online count: the lobby shows both viewers on both pages', async () => {
    for (const p of [pageA, pageB]) {
      await p.waitForFunction(() => Number(document.getElementById('viewers').textContent) >= 2);
    }
  });

  await check('chat: a 1:1 message from bob appears on alice\'s page', async () => {
    const text = `hi alice, it's bob ${tag}`;
    await pageB.fill('[data-testid=chat-input]', text);
    await pageB.click('[data-testid=chat-send]');
    await pageA.click(`[data-testid=convs] li[data-peer="${bob}"]`);
    await pageA.waitForFunction((t) => [...document.querySelectorAll('#messages .msg .body')].some((e) => e.textContent === t), text);
    // and bob sees it confirmed (sequence number from the server)
    await pageB.waitForFunction((t) => [...document.querySelectorAll('#messages .msg')].some((e) => e.querySelector('.body').textContent === t && !e.classList.contains('pending')), text);
  });

  await check('chat: a group message from alice appears on bob\'s page', async () => {
    const text = `hello #general from alice ${tag}`;
    await pageA.click('[data-testid=convs] li[data-conv="g:general"]');
    await pageA.fill('[data-testid=chat-input]', text);
    await pageA.click('[data-testid=chat-send]');
    await pageB.click('[data-testid=convs] li[data-conv="g:general"]');
    await pageB.waitForFunction((t) => [...document.querySelectorAll('#messages .msg .body')].some((e) => e.textContent === t), text);
  });

  await check('danmaku: one sent by alice flies across both pages', async () => {
    const text = `danmaku ${tag} ✨`;
    const seen = (p) => p.waitForFunction((t) => [...document.querySelectorAll('#danmaku .bullet')].some((e) => e.textContent === t), text, { polling: 20 });
    const both = Promise.all([seen(pageA), seen(pageB)]);
    await pageA.fill('[data-testid=danmaku-input]', text);
    await pageA.click('[data-testid=danmaku-send]');
    await both;
  });

  await check('screenshot: both pages with danmaku on the stage', async () => {
    // A few more for a livelier picture, from both sides.
    await pageA.check('#paid'); // a paid ("super") danmaku: highlighted, never shed
    await pageA.fill('[data-testid=danmaku-input]', 'Switchboard: one frame per edge, fanout at the edge');
    await pageA.click('[data-testid=danmaku-send]');
    await pageA.uncheck('#paid');
    await pageB.waitForSelector('#danmaku .bullet.paid');
    await pageB.click('#cheer');
    try {
      await pageB.waitForFunction(() => document.querySelectorAll('#danmaku .bullet').length >= 3, undefined, { polling: 50 });
    } catch (err) {
      const seen = await pageB.evaluate(() => ({
        bullets: [...document.querySelectorAll('#danmaku .bullet')].map((e) => e.textContent),
        toasts: [...document.querySelectorAll('.toast')].map((e) => e.textContent),
        stats: document.getElementById('stats').textContent,
      }));
      throw new Error(`${err.message.split('\n')[0]}; bob's page: ${JSON.stringify(seen)}`);
    }
    await pageA.waitForTimeout(900); // let them fly into view: a picture, not a synchronisation
    await pageA.screenshot({ path: path.join(outDir, 'browser-alice.png') });
    await pageB.screenshot({ path: path.join(outDir, 'browser-bob.png') });
    console.log(`     screenshots: ${path.join(outDir, 'browser-alice.png')}, ${path.join(outDir, 'browser-bob.png')}`);
  });

  await check('chat resume: a message sent while bob is offline shows up after he reconnects', async () => {
    const text = `while you were away ${tag}`;
    await pageB.evaluate(() => window.sb.close());
    await pageB.waitForSelector('[data-testid=state][data-state=offline]');
    await pageA.click(`[data-testid=convs] li[data-peer="${bob}"]`);
    await pageA.fill('[data-testid=chat-input]', text);
    await pageA.click('[data-testid=chat-send]');
    await pageA.waitForFunction((t) => [...document.querySelectorAll('#messages .msg')].some((e) => e.querySelector('.body').textContent === t && !e.classList.contains('pending')), text);
    await pageB.evaluate(() => window.sb.connect());
    await pageB.click(`[data-testid=convs] li[data-peer="${alice}"]`);
    await pageB.waitForFunction((t) => [...document.querySelectorAll('#messages .msg')].some((e) => e.querySelector('.body').textContent === t && /synced/.test(e.querySelector('.meta').textContent)), text);
  });

  await check('online count: bob moves to another room; both counts follow live', async () => {
    await pageB.click('[data-testid=rooms] [data-room=music]');
    await pageB.waitForFunction(() => document.getElementById('viewers').textContent === '1');
    await pageA.waitForFunction(() => document.getElementById('viewers').textContent === '1');
  });

  await check('no errors on either page', async () => {
    if (pageErrors.length) throw new Error(pageErrors.join('; '));
  });
  exitCode = results.every((r) => r.ok) ? 0 : 1;
} catch (err) {
  console.log(`FAIL browser: ${err && err.message}`);
  results.push({ name: 'setup', ok: false, err });
} finally {
  await browser.close();
}
const passed = results.filter((r) => r.ok).length;
console.log(`browser: ${passed} passed, ${results.length - passed} failed`);
process.exit(exitCode);
