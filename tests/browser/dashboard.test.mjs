// Browser test of the host dashboard (static/): drives Debian's Chromium with playwright-core
// against an already running livehub server (started with --open-buyers by the caller).
//
// Env: LIVEHUB_URL (e.g. http://127.0.0.1:18080), LIVEHUB_ADMIN_TOKEN, LIVEHUB_VIEWER_TOKEN,
//      SCREENSHOT (optional; default docs/dashboard.png; a relative path is taken from the repo root),
//      CHROMIUM (optional; default /usr/bin/chromium).
// Run: node --test tests/browser/
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BASE = (process.env.LIVEHUB_URL || '').replace(/\/+$/, '');
const ADMIN = process.env.LIVEHUB_ADMIN_TOKEN || '';
const VIEWER = process.env.LIVEHUB_VIEWER_TOKEN || '';
const SCREENSHOT = path.resolve(REPO_ROOT, process.env.SCREENSHOT || 'docs/dashboard.png');
const ROOM = 'bt-' + Date.now().toString(36);
const TIMEOUT_MS = 10_000;

/** The exact money format the page must show: integer fen -> "¥12,345.00". */
function formatFen(fen) {
  const yuan = Math.floor(fen / 100).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  return `¥${yuan}.${String(fen % 100).padStart(2, '0')}`;
}

/** Calls the REST API with the admin token; returns the parsed JSON, throws on a non-2xx status. */
async function api(method, urlPath, body) {
  const res = await fetch(BASE + urlPath, {
    method,
    headers: { Authorization: `Bearer ${ADMIN}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${urlPath} -> ${res.status}: ${text}`);
  return text ? JSON.parse(text) : null;
}

const SKUS = [
  { sku: 'A1', name: '保温杯 500ml', price_fen: 9900, stock: 50, limit_per_user: null },
  { sku: 'B2', name: '蓝牙耳机 Pro', price_fen: 19900, stock: 50, limit_per_user: null },
  // A tiny flash sale that sells out during the test, so the sold-out badge and rejections show.
  { sku: 'C3', name: '限量礼盒（秒杀）', price_fen: 4990, stock: 3, limit_per_user: 1 },
];

/**
 * The buys, in three waves about a second apart (so the trend has several points):
 * 30 buys over A1/B2 from six users (some with a sharer `ref`), and six C3 buys that sell it out.
 */
function buyPlan() {
  const users = ['u1', 'u2', 'u3', 'u4', 'u5', 'u6'];
  const plan = [];
  for (let i = 0; i < 30; i++) {
    plan.push({
      wave: i % 3, user: users[i % 6], req: `r${i}`, sku: i % 2 ? 'B2' : 'A1', qty: i % 4 === 0 ? 2 : 1,
      ref: i % 3 === 0 ? 'sharer_amy' : i % 5 === 0 ? 'xiaomei.88' : undefined,
    });
  }
  for (let i = 0; i < 6; i++) plan.push({ wave: 2, user: users[i % 5], req: `c${i}`, sku: 'C3', qty: 1 });
  return plan;
}

/**
 * Runs inside a browser page: opens one /ws/buy socket per user (?user=, server runs --open-buyers),
 * waits for each `hello`, then sends each wave's buys and waits for all their acks.
 * Resolves to [{user, req, sku, qty, ack}] for every buy.
 */
async function runBuysInPage({ wsBase, room, plan, timeoutMs }) {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const withTimeout = (p, what) => Promise.race([p, sleep(timeoutMs).then(() => { throw new Error(`timeout: ${what}`); })]);
  const users = [...new Set(plan.map((b) => b.user))];
  const sockets = new Map();
  const waiting = new Map(); // user \0 req -> resolve(ack)
  await Promise.all(users.map((user) => withTimeout(new Promise((resolve, reject) => {
    const ws = new WebSocket(`${wsBase}/ws/buy?room=${encodeURIComponent(room)}&user=${encodeURIComponent(user)}`);
    sockets.set(user, ws);
    ws.onerror = () => reject(new Error(`buyer socket error for ${user}`));
    ws.onmessage = (ev) => {
      const m = JSON.parse(ev.data);
      if (m.op === 'hello') resolve();
      if (m.op === 'ack') {
        const key = user + '\u0000' + m.req;
        const done = waiting.get(key);
        if (done) { waiting.delete(key); done(m); }
      }
      // `stock` and `sale` pushes are ignored.
    };
  }), `hello for ${user}`)));

  const results = [];
  const waves = [...new Set(plan.map((b) => b.wave))].sort();
  for (const w of waves) {
    if (w !== waves[0]) await sleep(1100);
    const inWave = plan.filter((b) => b.wave === w);
    const acks = inWave.map((b) => withTimeout(new Promise((resolve) => {
      waiting.set(b.user + '\u0000' + b.req, resolve);
      const frame = { op: 'buy', req: b.req, sku: b.sku, qty: b.qty };
      if (b.ref) frame.ref = b.ref;
      sockets.get(b.user).send(JSON.stringify(frame));
    }), `ack for ${b.user}/${b.req}`).then((ack) => ({ user: b.user, req: b.req, sku: b.sku, qty: b.qty, ack })));
    results.push(...(await Promise.all(acks)));
  }
  for (const ws of sockets.values()) ws.close();
  return results;
}

/** Polls `fn(arg)` in the page until truthy; on timeout fails with `what` and a dump of the page's figures. */
async function waitInPage(page, fn, arg, what) {
  try {
    await page.waitForFunction(fn, arg, { timeout: TIMEOUT_MS, polling: 100 });
  } catch (e) {
    const state = await page.evaluate(() => ({
      gmv: document.querySelector('[data-testid=gmv]')?.outerHTML,
      conn: document.querySelector('[data-testid=conn-state]')?.textContent,
      age: document.querySelector('[data-testid=data-age]')?.textContent,
      rows: [...document.querySelectorAll('[data-testid=sku-table] [data-sku]')].map((r) => r.innerText.replace(/\s+/g, ' ')),
      points: document.querySelector('[data-testid=trend-chart]')?.dataset.points,
    })).catch(() => 'page unavailable');
    throw new Error(`${what}: not reached within ${TIMEOUT_MS} ms (${e.message.split('\n')[0]}); page: ${JSON.stringify(state)}`);
  }
}

/** Last cumulative value and point count of the trend chart, read from its ECharts instance. */
function readChart() {
  const el = document.querySelector('[data-testid=trend-chart]');
  const chart = window.echarts && window.echarts.getInstanceByDom(el);
  const series = chart ? chart.getOption().series : [];
  const line = series[1] ? series[1].data : [];
  return { points: Number(el.dataset.points), cumulative: line.length ? line[line.length - 1][1] : 0, bars: series[0] ? series[0].data.length : 0 };
}

describe('dashboard page', { timeout: 120_000 }, () => {
  let browser;
  let page;
  const problems = []; // page errors and CSP violations, checked last
  let expected; // {gmv, orders, units, perSku: {sku: units}}

  before(async () => {
    assert.ok(BASE, 'LIVEHUB_URL is not set: start livehub first (see tests/browser/README.md)');
    assert.ok(ADMIN && VIEWER, 'LIVEHUB_ADMIN_TOKEN and LIVEHUB_VIEWER_TOKEN must be set');

    await api('PUT', `/api/rooms/${ROOM}`, { title: '浏览器测试 browser test' });
    for (const s of SKUS) {
      await api('PUT', `/api/rooms/${ROOM}/skus/${s.sku}`, {
        name: s.name, price_fen: s.price_fen, stock: s.stock, limit_per_user: s.limit_per_user,
        opens_at_ms: null, closes_at_ms: null,
      });
    }

    browser = await chromium.launch({
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    const context = await browser.newContext({ viewport: { width: 1600, height: 900 }, locale: 'zh-CN' });
    // Record the page's WebSockets so a test can cut the feed (injected via CDP, not subject to CSP).
    await context.addInitScript(() => {
      const Native = window.WebSocket;
      window.__sockets = [];
      window.WebSocket = class extends Native {
        constructor(...a) { super(...a); window.__sockets.push(this); }
      };
    });
    page = await context.newPage();
    page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error' && /Content Security Policy|Refused to/i.test(m.text())) problems.push(`csp: ${m.text()}`);
    });
    await page.goto(`${BASE}/?room=${encodeURIComponent(ROOM)}&token=${encodeURIComponent(VIEWER)}`);
  });

  after(async () => {
    if (browser) await browser.close();
  });

  test('connects and shows the empty room', async () => {
    await waitInPage(page, () => document.querySelector('[data-testid=conn-state]')?.dataset.state === 'open', null, 'conn-state open');
    await waitInPage(page, () => document.querySelectorAll('[data-testid=sku-table] [data-sku]').length === 3, null, 'three SKU rows');
    assert.equal(await page.getAttribute('[data-testid=gmv]', 'data-value-fen'), '0');
    assert.equal((await page.textContent('[data-testid=gmv]')).trim(), '¥0.00');
  });

  test('buys from the browser show up exactly: GMV, counts, per-SKU sold, trend', async () => {
    const buyer = await browser.newPage();
    // Any page of the server's origin will do; /healthz is part of the contract.
    await buyer.goto(`${BASE}/healthz`);
    const wsBase = BASE.replace(/^http/, 'ws');
    const results = await buyer.evaluate(runBuysInPage, { wsBase, room: ROOM, plan: buyPlan(), timeoutMs: TIMEOUT_MS });
    await buyer.close();

    const ok = results.filter((r) => r.ack.ok);
    for (const r of results.filter((x) => x.sku !== 'C3')) {
      assert.equal(r.ack.ok, true, `buy ${r.user}/${r.req} of ${r.sku} should succeed: ${JSON.stringify(r.ack)}`);
    }
    const c3 = results.filter((r) => r.sku === 'C3');
    assert.equal(c3.filter((r) => r.ack.ok).length, 3, 'C3 sells exactly its stock of 3');
    const perSku = { A1: 0, B2: 0, C3: 0 };
    for (const r of ok) perSku[r.sku] += r.ack.qty;
    expected = {
      gmv: ok.reduce((a, r) => a + r.ack.amount_fen, 0),
      orders: ok.length,
      units: ok.reduce((a, r) => a + r.ack.qty, 0),
      perSku,
    };
    assert.ok(expected.gmv > 0);

    const text = formatFen(expected.gmv);
    await waitInPage(page, ({ fen, text }) => {
      const el = document.querySelector('[data-testid=gmv]');
      return el && el.dataset.valueFen === String(fen) && el.textContent.trim() === text;
    }, { fen: expected.gmv, text }, `GMV ${text}`);

    assert.equal(await page.getAttribute('[data-testid=orders]', 'data-value'), String(expected.orders));
    assert.equal(await page.getAttribute('[data-testid=units]', 'data-value'), String(expected.units));
    assert.equal(await page.getAttribute('[data-testid=buyers]', 'data-value'), '6');

    for (const [sku, units] of Object.entries(perSku)) {
      await waitInPage(page, ({ sku, units }) => {
        const cell = document.querySelector(`[data-testid=sku-table] [data-sku="${sku}"] [data-testid=sku-sold]`);
        return cell && cell.textContent.replace(/,/g, '').trim() === String(units);
      }, { sku, units }, `SKU ${sku} sold ${units}`);
      const stock = SKUS.find((s) => s.sku === sku).stock;
      const left = await page.textContent(`[data-testid=sku-table] [data-sku="${sku}"] [data-testid=sku-left]`);
      assert.equal(left.replace(/,/g, '').trim(), String(stock - units), `SKU ${sku} left`);
    }
    assert.equal(await page.getAttribute('[data-testid=sku-table] [data-sku="C3"]', 'data-state'), 'sold_out');

    // Rejections: one entry per error code, counting the rejected acks.
    const rejected = {};
    for (const r of results.filter((x) => !x.ack.ok)) rejected[r.ack.error] = (rejected[r.ack.error] || 0) + 1;
    assert.equal(await page.getAttribute('[data-testid=rejected-total]', 'data-value'), String(results.length - ok.length));
    for (const [code, n] of Object.entries(rejected)) {
      const count = await page.textContent(`[data-testid=rejections] li[data-code="${code}"] .count`);
      assert.equal(count.trim(), String(n), `rejections ${code}`);
    }

    // Trend: points merged by t_ms, cumulative line ends on the exact GMV.
    await waitInPage(page, (fen) => {
      const el = document.querySelector('[data-testid=trend-chart]');
      const chart = window.echarts && window.echarts.getInstanceByDom(el);
      if (!chart || !(Number(el.dataset.points) > 0)) return false;
      const line = chart.getOption().series[1].data;
      return line.length > 0 && line[line.length - 1][1] === fen;
    }, expected.gmv, 'trend chart with cumulative GMV');
    const chart = await page.evaluate(readChart);
    assert.ok(chart.points > 0 && chart.bars === chart.points, `trend points ${JSON.stringify(chart)}`);

    // Fresh data: the server pushes at least once a second.
    const age = await page.$eval('[data-testid=data-age]', (el) => ({ stale: el.classList.contains('stale'), ms: Number(el.dataset.ageMs) }));
    assert.equal(age.stale, false, `data age ${age.ms} ms`);

    await mkdir(path.dirname(SCREENSHOT), { recursive: true });
    await page.waitForTimeout(500); // let the stock bars' CSS transition settle
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
  });

  test('after the feed is cut, it reconnects and replaces the trend instead of doubling it', async () => {
    const before = await page.evaluate(readChart);
    const cutAt = Date.now();
    await page.evaluate(() => window.__sockets.filter((s) => s.url.includes('/ws/dashboard')).forEach((s) => s.close()));
    await waitInPage(page, () => document.querySelector('[data-testid=conn-state]')?.dataset.state !== 'open', null, 'conn-state leaves open');
    await waitInPage(page, () => document.querySelector('[data-testid=conn-state]')?.dataset.state === 'open', null, 'conn-state open again');
    // Wait for a snapshot from the new socket, then compare.
    await waitInPage(page, () => {
      const dash = window.__sockets.filter((s) => s.url.includes('/ws/dashboard'));
      return dash.length >= 2 && dash[dash.length - 1].readyState === 1;
    }, null, 'second dashboard socket');
    await page.waitForTimeout(1500);
    const afterCut = await page.evaluate(readChart);
    assert.equal(afterCut.cumulative, expected.gmv, 'cumulative GMV after reconnect');
    // No buys since: the same points, or a few more if the server also reports empty seconds.
    const maxNew = Math.ceil((Date.now() - cutAt) / 1000) + 2;
    assert.ok(afterCut.points >= before.points && afterCut.points <= before.points + maxNew,
      `trend point count after reconnect: ${before.points} -> ${afterCut.points}`);
    assert.equal(await page.getAttribute('[data-testid=gmv]', 'data-value-fen'), String(expected.gmv));
  });

  test('host controls: close, open, restock, and an error shows its detail', async () => {
    await page.click('[data-testid=controls] summary');
    await page.fill('[data-testid=admin-token]', ADMIN);
    const row = (sku) => `[data-testid=controls-table] [data-sku="${sku}"]`;
    const state = (sku) => page.getAttribute(`[data-testid=sku-table] [data-sku="${sku}"]`, 'data-state');

    await page.click(`${row('B2')} [data-testid=ctl-close]`);
    await waitInPage(page, () => document.querySelector('[data-testid=sku-table] [data-sku="B2"]')?.dataset.state === 'closed', null, 'B2 closed');
    await page.click(`${row('B2')} [data-testid=ctl-open]`);
    await waitInPage(page, () => document.querySelector('[data-testid=sku-table] [data-sku="B2"]')?.dataset.state === 'open', null, 'B2 open again');
    assert.equal(await state('B2'), 'open');

    const leftA1 = SKUS[0].stock - expected.perSku.A1;
    await page.fill(`${row('A1')} [data-testid=ctl-delta]`, '10');
    await page.click(`${row('A1')} [data-testid=ctl-stock]`);
    await waitInPage(page, (n) => document.querySelector('[data-testid=sku-table] [data-sku="A1"] [data-testid=sku-left]')?.textContent.trim() === String(n),
      leftA1 + 10, 'A1 restocked by 10');

    // Withdrawing from the sold-out C3 must fail (409) and show the server's detail.
    await page.fill(`${row('C3')} [data-testid=ctl-delta]`, '-5');
    await page.click(`${row('C3')} [data-testid=ctl-stock]`);
    await waitInPage(page, () => document.querySelector('[data-testid=controls-msg]')?.classList.contains('err'), null, 'error message');
    const msg = await page.textContent('[data-testid=controls-msg]');
    assert.match(msg, /C3/);
    assert.ok(msg.replace(/^[\d:\s]+/, '').length > 10, `error detail shown: ${msg}`);

    // The admin token lives in sessionStorage only.
    const stored = await page.evaluate(() => ({ s: sessionStorage.getItem('livehub.adminToken'), l: JSON.stringify(localStorage) }));
    assert.equal(stored.s, ADMIN);
    assert.ok(!stored.l.includes(ADMIN), 'admin token not in localStorage');
  });

  test('language toggle switches labels to English, remembers it, and back', async () => {
    const label = '[data-testid=label-gmv]';
    assert.equal((await page.textContent(label)).trim(), '成交额');
    await page.click('[data-testid=lang-toggle]');
    assert.equal((await page.textContent(label)).trim(), 'GMV');
    assert.equal(await page.getAttribute('html', 'lang'), 'en');
    await page.reload();
    assert.equal((await page.textContent(label)).trim(), 'GMV', 'English remembered across reloads');
    await waitInPage(page, (fen) => document.querySelector('[data-testid=gmv]')?.dataset.valueFen === String(fen), expected.gmv, 'GMV after reload');
    await page.click('[data-testid=lang-toggle]');
    assert.equal((await page.textContent(label)).trim(), '成交额');
  });

  test('no page errors or CSP violations', () => {
    assert.deepEqual(problems, []);
  });
});
