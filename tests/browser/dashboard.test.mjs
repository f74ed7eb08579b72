// Browser test of the host dashboard (static/): drives Debian's Chromium with playwright-core
// against an already running livehub server (started with --open-buyers by the caller).
//
// Env: LIVEHUB_URL (e.g. http://127.0.0.1:18080), LIVEHUB_ADMIN_TOKEN, LIVEHUB_VIEWER_TOKEN,
//      LIVEHUB_PAYMENT_SECRET (the server's --payment-secret: the test signs payment notices),
//      SCREENSHOT (optional; default docs/dashboard.png; a relative path is taken from the repo root),
//      CHROMIUM (optional; default /usr/bin/chromium).
// Run: node --test tests/browser/
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BASE = (process.env.LIVEHUB_URL || '').replace(/\/+$/, '');
const ADMIN = process.env.LIVEHUB_ADMIN_TOKEN || '';
const VIEWER = process.env.LIVEHUB_VIEWER_TOKEN || '';
const PAYMENT_SECRET = process.env.LIVEHUB_PAYMENT_SECRET || '';
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

/**
 * Sends a payment notice (POST /api/payments) as a payment provider's adapter would: signed with
 * HMAC-SHA256 of "<timestamp>.<raw body>" under the payment secret. Returns {status, json}.
 */
async function notifyPayment({ order, amount_fen, payment_id }) {
  const body = JSON.stringify({ order, room: ROOM, payment_id, amount_fen, paid_at_ms: Date.now() });
  const timestamp = String(Date.now());
  const signature = createHmac('sha256', PAYMENT_SECRET).update(`${timestamp}.${body}`).digest('hex');
  const res = await fetch(`${BASE}/api/payments`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-Livehub-Timestamp': timestamp, 'X-Livehub-Signature': `sha256=${signature}` },
    body,
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null };
}

/** Polls `GET /stats` until `ready(stats)` holds; returns that snapshot. */
async function statsWhen(ready, what) {
  const deadline = Date.now() + TIMEOUT_MS;
  let stats;
  for (;;) {
    const res = await fetch(`${BASE}/api/rooms/${ROOM}/stats`, { headers: { Authorization: `Bearer ${VIEWER}` } });
    stats = await res.json();
    if (ready(stats)) return stats;
    if (Date.now() > deadline) throw new Error(`${what}: /stats did not get there within ${TIMEOUT_MS} ms: ${JSON.stringify(stats)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const SKUS = [
  { sku: 'A1', name: '保温杯 500ml', price_fen: 9900, stock: 50, limit_per_user: null },
  { sku: 'B2', name: '蓝牙耳机 Pro', price_fen: 19900, stock: 50, limit_per_user: null },
  // A tiny flash sale that sells out during the test, so the sold-out badge and rejections show.
  { sku: 'C3', name: '限量礼盒（秒杀）', price_fen: 4990, stock: 3, limit_per_user: 1 },
  // Orders of this one must be paid within 60 s (v2): the test pays one and cancels one.
  { sku: 'D4', name: '真丝围巾', price_fen: 12900, stock: 20, limit_per_user: null, pay_timeout_s: 60 },
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
 * waits for each `hello`, then sends each wave's buys (or, for a step with `order`, cancels of that
 * order) and waits for all their acks. Resolves to [{user, req, sku, qty, ack}] for every step.
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
      // `stock`, `sale` and `order` pushes are ignored.
    };
  }), `hello for ${user}`)));

  const results = [];
  const waves = [...new Set(plan.map((b) => b.wave))].sort();
  for (const w of waves) {
    if (w !== waves[0]) await sleep(1100);
    const inWave = plan.filter((b) => b.wave === w);
    const acks = inWave.map((b) => withTimeout(new Promise((resolve) => {
      waiting.set(b.user + '\u0000' + b.req, resolve);
      const frame = b.order ? { op: 'cancel', req: b.req, order: b.order } : { op: 'buy', req: b.req, sku: b.sku, qty: b.qty };
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

/**
 * The trend chart, read from its ECharts instance: point count, the last values of the placed and
 * paid running totals, and the number of placed bars.
 */
function readChart() {
  const el = document.querySelector('[data-testid=trend-chart]');
  const chart = window.echarts && window.echarts.getInstanceByDom(el);
  const series = chart ? chart.getOption().series : [];
  const data = (id) => series.find((x) => x.id === id)?.data || [];
  const end = (id) => { const d = data(id); return d.length ? d[d.length - 1][1] : 0; };
  return {
    points: Number(el.dataset.points), cumulative: end('placed-cum'), paidCumulative: end('paid-cum'),
    bars: data('placed-per-interval').length,
  };
}

/**
 * The audience charts, read from their ECharts instances: the last online value of the trend
 * (null when it has none), the funnel's count per step, and the likes per minute slot
 * ({t_ms: likes}, the slots being the category axis' data).
 */
function readAudience() {
  const instance = (id) => window.echarts && window.echarts.getInstanceByDom(document.querySelector(`[data-testid=${id}]`));
  const data = (chart, id) => (chart ? chart.getOption().series.find((x) => x.id === id)?.data || [] : []);
  const online = data(instance('trend-chart'), 'online');
  return {
    online: online.length ? online[online.length - 1][1] : null,
    funnel: Object.fromEntries(data(instance('funnel'), 'funnel').map((d) => [d.step, d.count])),
    likes: Object.fromEntries((instance('interact-chart')?.getOption().xAxis[0].data || [])
      .map((t, i) => [t, data(instance('interact-chart'), 'likes')[i]])),
  };
}

/** Chinese labels of the traffic sources the page knows; other ids are shown as they are. */
const SOURCE_NAMES = { recommend: '推荐', follow: '关注', share: '分享', search: '搜索', ad: '广告' };

/**
 * What the video platform's adapter would send for this room: the six buyers of the first test
 * and 33 watchers enter from a mix of sources (one the page does not know), six watchers leave,
 * some like (with counts), comment, share and follow, and everyone taps product cards.
 * All of it happened in the last half minute. Returns {events, expected} where `expected` holds
 * the figures the protocol defines from these events alone.
 */
function audiencePlan(now) {
  const t0 = now - 30_000;
  const watchers = Array.from({ length: 33 }, (_, i) => `w${i}`);
  const everyone = [...watchers, 'u1', 'u2', 'u3', 'u4', 'u5', 'u6'];
  const sourceOf = (i) => (i % 10 < 5 ? 'recommend' : i % 10 < 7 ? 'follow' : i % 10 === 7 ? 'share'
    : i % 10 === 8 ? 'search' : i === 9 ? 'wechat_group' : 'ad');
  const events = [];
  const sources = {};
  everyone.forEach((user, i) => {
    const source = sourceOf(i);
    sources[source] = (sources[source] || 0) + 1;
    events.push({ type: 'enter', user, ts_ms: t0 + i, source });
    events.push({ type: 'click', user, ts_ms: t0 + 2_000 + i, sku: 'A1' });
    if (i < 20) events.push({ type: 'click', user, ts_ms: t0 + 3_000 + i, sku: 'B2' });
  });
  // Taps on D4's card twice each, by the buyers: clicks count taps, not users.
  for (const [i, user] of ['u1', 'u2', 'u3', 'u4', 'u5', 'u6'].entries()) {
    events.push({ type: 'click', user, ts_ms: t0 + 4_000 + i, sku: 'D4' });
    events.push({ type: 'click', user, ts_ms: t0 + 4_500 + i, sku: 'D4' });
  }
  let likes = 0;
  for (let i = 0; i < 20; i++) {
    const count = (i % 5) + 1;
    likes += count;
    events.push({ type: 'like', user: watchers[i], ts_ms: t0 + 5_000 + i, count });
  }
  events.push({ type: 'like', user: 'w0', ts_ms: t0 + 6_000, count: 10 });
  likes += 10;
  for (let i = 0; i < 10; i++) events.push({ type: 'comment', user: watchers[i], ts_ms: t0 + 7_000 + i });
  for (let i = 0; i < 4; i++) events.push({ type: 'share', user: watchers[i], ts_ms: t0 + 8_000 + i });
  for (let i = 0; i < 5; i++) events.push({ type: 'follow', user: watchers[i], ts_ms: t0 + 9_000 + i });
  for (let i = 0; i < 6; i++) events.push({ type: 'leave', user: watchers[i], ts_ms: t0 + 20_000 + i });
  return {
    events,
    expected: {
      entered: everyone.length, online: everyone.length - 6, clicked: everyone.length,
      likes, comments: 10, shares: 4, follows: 5, sources, clicks: { A1: everyone.length, B2: 20, D4: 12 },
    },
  };
}

/** Text of the page that must never show: a figure computed from a missing field. */
function badText() {
  return (document.body.innerText.match(/.{0,40}\b(NaN|undefined|null)\b.{0,40}/) || [''])[0];
}

describe('dashboard page', { timeout: 120_000 }, () => {
  let browser;
  let page;
  const problems = []; // page errors and CSP violations, checked last
  let expected; // {gmv, paid, orders, units, perSku: {sku: units}}

  before(async () => {
    assert.ok(BASE, 'LIVEHUB_URL is not set: start livehub first (see tests/browser/README.md)');
    assert.ok(ADMIN && VIEWER, 'LIVEHUB_ADMIN_TOKEN and LIVEHUB_VIEWER_TOKEN must be set');
    assert.ok(PAYMENT_SECRET, 'LIVEHUB_PAYMENT_SECRET must be set (the server\'s --payment-secret)');

    await api('PUT', `/api/rooms/${ROOM}`, { title: '浏览器测试 browser test' });
    for (const s of SKUS) {
      await api('PUT', `/api/rooms/${ROOM}/skus/${s.sku}`, {
        name: s.name, price_fen: s.price_fen, stock: s.stock, limit_per_user: s.limit_per_user,
        opens_at_ms: null, closes_at_ms: null, pay_timeout_s: s.pay_timeout_s ?? null,
      });
    }

    browser = await chromium.launch({
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    const context = await browser.newContext({ viewport: { width: 1600, height: 900 }, locale: 'zh-CN' });
    // Record the page's WebSockets, and how many messages each received, so a test can cut the
    // feed and wait for the next one (injected via CDP, not subject to CSP).
    await context.addInitScript(() => {
      const Native = window.WebSocket;
      window.__sockets = [];
      window.WebSocket = class extends Native {
        constructor(...a) {
          super(...a);
          this.__messages = 0;
          this.addEventListener('message', () => { this.__messages++; });
          window.__sockets.push(this);
        }
      };
    });
    // readChart in the page, for predicates polled there (the page's CSP forbids eval).
    await context.addInitScript({ content: `window.readChart = ${readChart.toString()};` });
    await context.addInitScript({ content: `window.readAudience = ${readAudience.toString()};` });
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
    await waitInPage(page, (n) => document.querySelectorAll('[data-testid=sku-table] [data-sku]').length === n, SKUS.length, 'a row per SKU');
    assert.equal(await page.getAttribute('[data-testid=gmv]', 'data-value-fen'), '0');
    assert.equal((await page.textContent('[data-testid=gmv]')).trim(), '¥0.00');
    assert.equal((await page.textContent('[data-testid=paid-gmv]')).trim(), '¥0.00');
    assert.equal((await page.textContent('[data-testid=pay-rate]')).trim(), '—', 'no pay rate before any order');
    assert.equal(await page.evaluate(badText), '');
  });

  test('buys from the browser show up exactly: GMV, counts, per-SKU sold, trend', async () => {
    // Orders of SKUs without a payment timeout are paid when placed: paid GMV = placed GMV.
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
    for (const r of ok) assert.equal(r.ack.status, 'paid', `${r.sku} is paid on order: ${JSON.stringify(r.ack)}`);
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
    expected.paid = expected.gmv;
    await waitInPage(page, ({ fen, text }) => {
      const el = document.querySelector('[data-testid=paid-gmv]');
      return el && el.dataset.valueFen === String(fen) && el.textContent.trim() === text;
    }, { fen: expected.paid, text }, `paid GMV ${text}`);
    assert.equal((await page.textContent('[data-testid=pay-rate]')).trim(), '100.0%');
    assert.equal(await page.getAttribute('[data-testid=unpaid]', 'data-value-fen'), '0');

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
      const paid = await page.getAttribute(`[data-testid=sku-table] [data-sku="${sku}"] [data-testid=sku-paid]`, 'data-value');
      assert.equal(paid, String(units), `SKU ${sku} paid`);
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

    // Trend: points merged by t_ms, both running totals end on the exact GMV.
    await waitInPage(page, (fen) => {
      const chart = window.readChart();
      return chart.points > 0 && chart.cumulative === fen && chart.paidCumulative === fen;
    }, expected.gmv, 'trend chart with cumulative GMV');
    const chart = await page.evaluate(readChart);
    assert.ok(chart.points > 0 && chart.bars === chart.points, `trend points ${JSON.stringify(chart)}`);

    // Fresh data: the server pushes at least once a second.
    const age = await page.$eval('[data-testid=data-age]', (el) => ({ stale: el.classList.contains('stale'), ms: Number(el.dataset.ageMs) }));
    assert.equal(age.stale, false, `data age ${age.ms} ms`);
  });

  test('orders that must be paid: the page shows /stats\' paid, placed, awaiting payment, pay rate', async () => {
    const buyer = await browser.newPage();
    await buyer.goto(`${BASE}/healthz`);
    const wsBase = BASE.replace(/^http/, 'ws');
    const buys = await buyer.evaluate(runBuysInPage, {
      wsBase, room: ROOM, timeoutMs: TIMEOUT_MS, plan: [
        { wave: 0, user: 'p1', req: 'd1', sku: 'D4', qty: 2 }, // paid by a notice
        { wave: 0, user: 'p2', req: 'd2', sku: 'D4', qty: 1 }, // cancelled by the buyer
        { wave: 0, user: 'p3', req: 'd3', sku: 'D4', qty: 3 }, // left unpaid
        { wave: 0, user: 'p1', req: 'd4', sku: 'D4', qty: 1 }, // left unpaid
      ],
    });
    for (const r of buys) {
      assert.equal(r.ack.ok, true, `buy ${r.user}/${r.req}: ${JSON.stringify(r.ack)}`);
      assert.equal(r.ack.status, 'unpaid', `D4 orders wait for payment: ${JSON.stringify(r.ack)}`);
    }
    const [toPay, toCancel, ...unpaid] = buys.map((r) => r.ack);

    const paid = await notifyPayment({ order: toPay.order, amount_fen: toPay.amount_fen, payment_id: `pay-${toPay.order}` });
    assert.equal(paid.status, 200, `payment notice: ${JSON.stringify(paid)}`);
    assert.equal(paid.json.status, 'paid');
    const [cancel] = await buyer.evaluate(runBuysInPage, {
      wsBase, room: ROOM, timeoutMs: TIMEOUT_MS, plan: [{ wave: 0, user: 'p2', req: 'c1', order: toCancel.order }],
    });
    await buyer.close();
    assert.equal(cancel.ack.ok, true, `cancel: ${JSON.stringify(cancel.ack)}`);
    assert.equal(cancel.ack.status, 'cancelled');
    // Paying the cancelled order is too late: kept as a late payment, to be refunded.
    const late = await notifyPayment({ order: toCancel.order, amount_fen: toCancel.amount_fen, payment_id: `late-${toCancel.order}` });
    assert.equal(late.status, 409, `late payment: ${JSON.stringify(late)}`);
    assert.equal(late.json.error, 'order_cancelled');

    const placedD4 = buys.reduce((a, r) => a + r.ack.amount_fen, 0);
    const stats = await statsWhen((s) => s.late_payments === 1 && s.cancelled_fen === toCancel.amount_fen
      && s.paid_gmv_fen === expected.paid + toPay.amount_fen, 'payment, cancel and late payment counted');
    assert.equal(stats.gmv_fen, expected.gmv + placedD4, 'placed GMV counts every order placed');
    assert.equal(stats.unpaid_fen, unpaid.reduce((a, o) => a + o.amount_fen, 0));
    expected.gmv = stats.gmv_fen;
    expected.paid = stats.paid_gmv_fen;

    // The page settles on exactly the figures of /stats: values and their text.
    await waitInPage(page, ({ fens, values, texts }) => {
      const q = (id) => document.querySelector(`[data-testid=${id}]`);
      return Object.entries(fens).every(([id, v]) => q(id)?.dataset.valueFen === String(v))
        && Object.entries(values).every(([id, v]) => q(id)?.dataset.value === String(v))
        && Object.entries(texts).every(([id, v]) => q(id)?.textContent.trim() === v);
    }, {
      fens: {
        'paid-gmv': stats.paid_gmv_fen, gmv: stats.gmv_fen, unpaid: stats.unpaid_fen,
        'expired-cancelled': stats.expired_fen + stats.cancelled_fen, refunded: stats.refunded_fen,
      },
      values: { 'pay-rate': stats.pay_rate, 'late-payments': stats.late_payments },
      texts: {
        'paid-gmv': formatFen(stats.paid_gmv_fen), gmv: formatFen(stats.gmv_fen), unpaid: formatFen(stats.unpaid_fen),
        'expired-cancelled': formatFen(stats.expired_fen + stats.cancelled_fen), refunded: formatFen(stats.refunded_fen),
        'pay-rate': `${(stats.pay_rate * 100).toFixed(1)}%`, 'late-payments': String(stats.late_payments),
      },
    }, 'payment figures of /stats');

    // D4's row: paid and unpaid units as /stats has them, the units that come back if unpaid,
    // and the payment timeout.
    const d4 = stats.skus.find((k) => k.sku === 'D4');
    assert.equal(d4.paid, toPay.qty);
    assert.equal(d4.unpaid, unpaid.reduce((a, o) => a + o.qty, 0));
    const row = '[data-testid=sku-table] [data-sku="D4"]';
    await waitInPage(page, ({ row, d4 }) => {
      const q = (id) => document.querySelector(`${row} [data-testid=${id}]`);
      return q('sku-paid')?.dataset.value === String(d4.paid) && q('sku-unpaid')?.dataset.value === String(d4.unpaid)
        && q('sku-sold')?.dataset.value === String(d4.sold) && q('sku-left')?.dataset.value === String(d4.left);
    }, { row, d4 }, 'D4 paid, unpaid, sold and left of /stats');
    assert.equal((await page.textContent(`${row} [data-testid=sku-unpaid]`)).trim(), `${d4.unpaid} 待支付 · 过期将回库`);
    assert.equal((await page.textContent(`${row} [data-testid=sku-pay-timeout]`)).trim(), '1分钟内支付');
    assert.equal(await page.isVisible('[data-testid=sku-table] [data-sku="A1"] [data-testid=sku-pay-timeout]'), false,
      'no payment timeout shown for a SKU paid on order');

    // Trend: the running totals end on placed and paid GMV.
    await waitInPage(page, ({ gmv, paid }) => {
      const chart = window.readChart();
      return chart.cumulative === gmv && chart.paidCumulative === paid;
    }, { gmv: stats.gmv_fen, paid: stats.paid_gmv_fen }, 'trend totals of placed and paid GMV');

    assert.equal(await page.evaluate(badText), '', 'no NaN, undefined or null on the page');
  });

  test('audience events: the page shows /stats\' online, funnel, sources, likes and click-to-order', async () => {
    const { events, expected: want } = audiencePlan(Date.now());
    const answer = await api('POST', `/api/rooms/${ROOM}/audience`, events);
    assert.equal(answer.accepted, events.length, `every event is new: ${JSON.stringify(answer)}`);
    assert.equal(answer.duplicates, 0);

    // The figures the protocol defines from these events alone. No buyer socket is open now, so
    // online counts the watchers who entered and did not leave. Users who only opened a buyer
    // socket in the earlier tests may count as viewers, hence "at least" for entered and unique.
    const clicksOf = (s, sku) => s.skus.find((k) => k.sku === sku)?.clicks;
    const stats = await statsWhen((s) => s.audience && s.funnel && s.audience.likes === want.likes
      && s.audience.comments === want.comments && s.audience.online === want.online && s.funnel.clicked === want.clicked
      && Object.entries(want.clicks).every(([sku, n]) => clicksOf(s, sku) === n), 'audience events counted');
    const a = stats.audience;
    assert.ok(stats.funnel.entered >= want.entered && a.unique >= want.entered, `entered and unique: ${JSON.stringify(stats.funnel)}, ${a.unique}`);
    assert.equal(a.shares, want.shares);
    assert.equal(a.follows, want.follows);
    for (const [id, n] of Object.entries(want.sources)) assert.equal(a.sources[id], n, `viewers from ${id}`);
    assert.equal(a.per_minute.reduce((n, m) => n + m.likes, 0), want.likes, 'likes per minute add up to the likes');

    // The audience card: values and their text, as /stats has them.
    const group = (n) => String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
    const watch = (sec) => { const s = Math.round(sec); return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`; };
    const counters = {
      'aud-online': a.online, 'aud-peak': a.peak, 'aud-unique': a.unique,
      'aud-likes': a.likes, 'aud-comments': a.comments, 'aud-shares': a.shares, 'aud-follows': a.follows,
    };
    await waitInPage(page, ({ counters, texts }) => {
      const q = (id) => document.querySelector(`[data-testid=${id}]`);
      return Object.entries(counters).every(([id, v]) => q(id)?.dataset.value === String(v))
        && Object.entries(texts).every(([id, v]) => q(id)?.textContent.trim() === v);
    }, {
      counters,
      texts: { ...Object.fromEntries(Object.entries(counters).map(([id, v]) => [id, group(v)])), 'aud-watch': watch(a.avg_watch_s) },
    }, 'audience figures of /stats');

    // The funnel: its data attributes and the chart's layers, entered → clicked → ordered → paid.
    const f = stats.funnel;
    await waitInPage(page, (f) => {
      const el = document.querySelector('[data-testid=funnel]');
      const drawn = window.readAudience().funnel;
      return ['entered', 'clicked', 'ordered', 'paid'].every((k) => el.dataset[k] === String(f[k]) && drawn[k] === f[k]);
    }, f, 'funnel of /stats');
    assert.equal((await page.textContent('[data-testid=funnel-overall]')).trim(), `${(f.paid / f.entered * 100).toFixed(1)}%`);

    // Sources: one row per source, most first, known ids by their Chinese name.
    const sources = Object.entries(a.sources).filter(([, n]) => n > 0).sort((x, y) => y[1] - x[1] || (x[0] < y[0] ? -1 : 1));
    await waitInPage(page, (sources) => {
      const rows = [...document.querySelectorAll('[data-testid=sources] li')];
      return rows.length === sources.length && rows.every((li, i) => li.dataset.source === sources[i][0] && li.dataset.value === String(sources[i][1]));
    }, sources, 'sources of /stats');
    for (const [id] of sources) {
      const name = (await page.textContent(`[data-testid=sources] li[data-source="${id}"] .name`)).trim();
      assert.equal(name, SOURCE_NAMES[id] || id, `name of source ${id}`);
    }

    // Click-to-order per SKU: the clicks and the rate of /stats, the rate as a percentage.
    for (const k of stats.skus) {
      const cell = `[data-testid=sku-table] [data-sku="${k.sku}"] [data-testid=sku-clicks]`;
      await waitInPage(page, ({ cell, k }) => {
        const el = document.querySelector(cell);
        return el?.dataset.clicks === String(k.clicks) && el?.dataset.value === String(k.click_to_order);
      }, { cell, k }, `${k.sku} clicks and click-to-order`);
      const rate = (await page.textContent(`${cell} .cto`)).trim();
      assert.equal(rate, k.clicks > 0 ? `${(k.click_to_order * 100).toFixed(1)}%` : '—', `${k.sku} click-to-order text`);
    }

    // Likes per minute as /stats has them; the trend's online curve ends where /stats' does.
    const perMinute = a.per_minute.map((m) => [m.t_ms, m.likes]);
    const withOnline = stats.trend.points.filter((p) => typeof p.online === 'number');
    const lastOnline = withOnline.length ? withOnline[withOnline.length - 1].online : null;
    await waitInPage(page, ({ perMinute, lastOnline }) => {
      const drawn = window.readAudience();
      const drawnTotal = Object.values(drawn.likes).reduce((n, x) => n + x, 0);
      return perMinute.every(([t, n]) => drawn.likes[t] === n) && drawnTotal === perMinute.reduce((n, [, x]) => n + x, 0)
        && drawn.online === lastOnline;
    }, { perMinute, lastOnline }, 'likes per minute and the online curve of /stats');

    assert.equal(await page.evaluate(badText), '', 'no NaN, undefined or null on the page');

    await mkdir(path.dirname(SCREENSHOT), { recursive: true });
    // Animations disabled: the stock bars' transitions are shown finished.
    await page.screenshot({ path: SCREENSHOT, fullPage: true, animations: 'disabled' });
  });

  test('after the feed is cut, it reconnects and replaces the trend instead of doubling it', async () => {
    const before = await page.evaluate(readChart);
    const cutAt = Date.now();
    await page.evaluate(() => window.__sockets.filter((s) => s.url.includes('/ws/dashboard')).forEach((s) => s.close()));
    await waitInPage(page, () => document.querySelector('[data-testid=conn-state]')?.dataset.state !== 'open', null, 'conn-state leaves open');
    await waitInPage(page, () => document.querySelector('[data-testid=conn-state]')?.dataset.state === 'open', null, 'conn-state open again');
    // Wait for three snapshots from the new socket: the first (the whole trend) is drawn at once,
    // so by the third the chart shows what the reconnect made of it.
    await waitInPage(page, () => {
      const dash = window.__sockets.filter((s) => s.url.includes('/ws/dashboard'));
      return dash.length >= 2 && dash[dash.length - 1].__messages >= 3;
    }, null, 'three snapshots on the second dashboard socket');
    const afterCut = await page.evaluate(readChart);
    assert.equal(afterCut.cumulative, expected.gmv, 'cumulative GMV after reconnect');
    assert.equal(afterCut.paidCumulative, expected.paid, 'cumulative paid GMV after reconnect');
    // No buys since: the same points, or a few more if the server also reports empty seconds.
    const maxNew = Math.ceil((Date.now() - cutAt) / 1000) + 2;
    assert.ok(afterCut.points >= before.points && afterCut.points <= before.points + maxNew,
      `trend point count after reconnect: ${before.points} -> ${afterCut.points}`);
    assert.equal(await page.getAttribute('[data-testid=gmv]', 'data-value-fen'), String(expected.gmv));
    assert.equal(await page.getAttribute('[data-testid=paid-gmv]', 'data-value-fen'), String(expected.paid));
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
    const label = '[data-testid=label-paid-gmv]';
    const placedLabel = '[data-testid=label-gmv]';
    const d4 = '[data-testid=sku-table] [data-sku="D4"]';
    assert.equal((await page.textContent(label)).trim(), '成交额');
    assert.equal((await page.textContent(placedLabel)).trim(), '下单金额');
    await page.click('[data-testid=lang-toggle]');
    assert.equal((await page.textContent(label)).trim(), 'Paid GMV');
    assert.equal((await page.textContent(placedLabel)).trim(), 'Placed GMV');
    assert.equal(await page.getAttribute('html', 'lang'), 'en');
    await page.reload();
    assert.equal((await page.textContent(label)).trim(), 'Paid GMV', 'English remembered across reloads');
    await waitInPage(page, ({ gmv, paid }) => document.querySelector('[data-testid=gmv]')?.dataset.valueFen === String(gmv)
      && document.querySelector('[data-testid=paid-gmv]')?.dataset.valueFen === String(paid), expected, 'GMV after reload');
    // The unpaid note keeps its text while hidden (D4's orders may have expired by now).
    const unpaid = await page.getAttribute(`${d4} [data-testid=sku-unpaid]`, 'data-value');
    assert.equal((await page.textContent(`${d4} [data-testid=sku-unpaid]`)).trim(), `${unpaid} awaiting payment, back on sale if unpaid`);
    assert.equal((await page.textContent(`${d4} [data-testid=sku-pay-timeout]`)).trim(), 'pay within 1 min');
    await waitInPage(page, () => document.querySelector('[data-testid=sources] li[data-source="recommend"]'), null, 'sources after reload');
    assert.equal((await page.textContent('[data-testid=sources] li[data-source="recommend"] .name')).trim(), 'Recommended');
    assert.equal((await page.textContent('[data-testid=sources] li[data-source="wechat_group"] .name')).trim(), 'wechat_group');
    assert.equal(await page.evaluate(badText), '', 'no NaN, undefined or null on the English page');
    await page.click('[data-testid=lang-toggle]');
    assert.equal((await page.textContent(label)).trim(), '成交额');
  });

  test('without the payment fields (a server before v2), nothing shows NaN or undefined', async () => {
    // The page of this server, fed one snapshot of the v1 shape by a stand-in WebSocket.
    const context = await browser.newContext({ viewport: { width: 1600, height: 900 }, locale: 'zh-CN' });
    await context.addInitScript(() => {
      const now = Date.now();
      const snapshot = {
        op: 'snapshot', room: 'v1', seq: 2, ts_ms: now, gmv_fen: 29800, orders: 2, units: 2, buyers: 2, viewers: 1,
        peak_viewers: 2, unique_viewers: 2, aov_fen: 14900, conversion: 1, gpm_fen: 14900000, rejected: {},
        latency_us: { p50: 900, p90: 1200, p99: 1500, p999: 1500, max: 1500 }, top_referrers: [],
        skus: [{ sku: 'A1', name: 'v1', price_fen: 14900, stock_total: 10, sold: 2, left: 8, limit_per_user: null,
          opens_at_ms: null, closes_at_ms: null, state: 'open', gmv_fen: 29800, sold_out_at_ms: null, eta_sold_out_s: null }],
        trend: { interval_ms: 1000, points: [{ t_ms: now - (now % 1000), gmv_fen: 29800, orders: 2 }] },
      };
      window.WebSocket = class {
        constructor(url) {
          this.url = url;
          setTimeout(() => { this.onopen?.(); this.onmessage?.({ data: JSON.stringify(snapshot) }); }, 0);
        }
        send() {}
        close() {}
      };
    });
    await context.addInitScript({ content: `window.readChart = ${readChart.toString()};` });
    const v1 = await context.newPage();
    v1.on('pageerror', (e) => problems.push(`pageerror (v1 snapshot): ${e.message}`));
    try {
      await v1.goto(`${BASE}/?room=v1&token=x`);
      await waitInPage(v1, () => document.querySelector('[data-testid=paid-gmv]')?.textContent.trim() === '¥298.00'
        && window.readChart().paidCumulative === 29800, null, 'paid GMV = GMV without paid_gmv_fen');
      assert.equal((await v1.textContent('[data-testid=gmv]')).trim(), '¥298.00');
      for (const id of ['unpaid', 'expired-cancelled', 'refunded', 'pay-rate', 'late-payments']) {
        assert.equal((await v1.textContent(`[data-testid=${id}]`)).trim(), '—', `${id} not reported`);
      }
      assert.equal(await v1.getAttribute('[data-sku="A1"] [data-testid=sku-paid]', 'data-value'), '2', 'v1 orders are paid');
      assert.equal(await v1.isVisible('[data-sku="A1"] [data-testid=sku-unpaid]'), false);
      // Nor the audience figures (a server before the audience events): "—", and empty panels.
      for (const id of ['aud-online', 'aud-peak', 'aud-unique', 'aud-watch', 'aud-likes', 'funnel-overall']) {
        assert.equal((await v1.textContent(`[data-testid=${id}]`)).trim(), '—', `${id} not reported`);
      }
      assert.equal(await v1.isVisible('#funnel-empty'), true, 'the funnel says it has no data');
      assert.equal(await v1.isVisible('#sources-empty'), true, 'no sources');
      assert.equal((await v1.textContent('[data-sku="A1"] [data-testid=sku-clicks]')).trim(), '—', 'no click figures');
      assert.equal(await v1.evaluate(badText), '');
    } finally {
      await context.close();
    }
  });

  test('no page errors or CSP violations', () => {
    assert.deepEqual(problems, []);
  });
});
