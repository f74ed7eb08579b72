// Browser test of the review page (static/review.html, review.js): drives Debian's Chromium
// with playwright-core against an already running livehub server (started with --open-buyers
// by the caller, as for dashboard.test.mjs).
//
// A fresh room gets buys over /ws/buy (some to be paid: one paid, one cancelled, one left
// unpaid), audience events and a refusal; then the page's totals must equal the orders export's
// (GET /api/rooms/{room}/orders, admin), its CSV must be the review's minutes, and a replay at
// 60x must end on the review's GMV, shown by the dashboard's own rendering.
//
// Env: LIVEHUB_URL, LIVEHUB_ADMIN_TOKEN, LIVEHUB_VIEWER_TOKEN, LIVEHUB_PAYMENT_SECRET,
//      CHROMIUM (optional; default /usr/bin/chromium).
// Run: node --test tests/browser/
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { chromium } from 'playwright-core';

const BASE = (process.env.LIVEHUB_URL || '').replace(/\/+$/, '');
const ADMIN = process.env.LIVEHUB_ADMIN_TOKEN || '';
const VIEWER = process.env.LIVEHUB_VIEWER_TOKEN || '';
const PAYMENT_SECRET = process.env.LIVEHUB_PAYMENT_SECRET || '';
const ROOM = 'rv-' + Date.now().toString(36);
const TIMEOUT_MS = 15_000;
const CSV_HEADER = 't_ms,gmv_fen,paid_gmv_fen,orders,online,clicks';

/** The exact money format the pages show: integer fen -> "¥12,345.00". */
function formatFen(fen) {
  const yuan = Math.floor(fen / 100).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  return `¥${yuan}.${String(fen % 100).padStart(2, '0')}`;
}

/** Calls the REST API (admin token unless `token`); returns {status, text, json}. */
async function call(method, urlPath, body, token = ADMIN) {
  const res = await fetch(BASE + urlPath, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (_) { /* NDJSON or CSV */ }
  return { status: res.status, text, json };
}

async function api(method, urlPath, body) {
  const r = await call(method, urlPath, body);
  if (r.status >= 300) throw new Error(`${method} ${urlPath} -> ${r.status}: ${r.text}`);
  return r.json;
}

/** A payment notice, signed as the provider's adapter signs it. */
async function pay({ order, amount_fen }) {
  const body = JSON.stringify({ order, room: ROOM, payment_id: `pay-${order}`, amount_fen, paid_at_ms: Date.now() });
  const timestamp = String(Date.now());
  const signature = createHmac('sha256', PAYMENT_SECRET).update(`${timestamp}.${body}`).digest('hex');
  const res = await fetch(`${BASE}/api/payments`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-Livehub-Timestamp': timestamp, 'X-Livehub-Signature': `sha256=${signature}` },
    body,
  });
  assert.equal(res.status, 200, `payment of ${order}: ${await res.text()}`);
}

/**
 * Runs in a browser page: one /ws/buy socket per user (?user=, --open-buyers), each buy sent
 * and its ack awaited. Resolves to the acks in the plan's order.
 */
async function buyInPage({ wsBase, room, plan, timeoutMs }) {
  const sockets = new Map();
  const waiting = new Map();
  for (const user of new Set(plan.map((b) => b.user))) {
    await new Promise((resolve, reject) => {
      const ws = new WebSocket(`${wsBase}/ws/buy?room=${encodeURIComponent(room)}&user=${encodeURIComponent(user)}`);
      sockets.set(user, ws);
      setTimeout(() => reject(new Error(`no hello for ${user}`)), timeoutMs);
      ws.onerror = () => reject(new Error(`socket error for ${user}`));
      ws.onmessage = (ev) => {
        const m = JSON.parse(ev.data);
        if (m.op === 'hello') resolve();
        if (m.op === 'ack') waiting.get(user + '\u0000' + m.req)?.(m);
      };
    });
  }
  const acks = [];
  for (const b of plan) {
    acks.push(await new Promise((resolve) => {
      waiting.set(b.user + '\u0000' + b.req, resolve);
      sockets.get(b.user).send(JSON.stringify({ op: 'buy', req: b.req, sku: b.sku, qty: b.qty, ...(b.ref ? { ref: b.ref } : {}) }));
    }));
  }
  for (const ws of sockets.values()) ws.close();
  return acks;
}

/** Polls `fn(arg)` in the page until truthy; on timeout fails with `what` and the page's state. */
async function waitInPage(page, fn, arg, what) {
  try {
    await page.waitForFunction(fn, arg, { timeout: TIMEOUT_MS, polling: 100 });
  } catch (e) {
    const state = await page.evaluate(() => ({
      replay: document.querySelector('[data-testid=rv-replay]')?.dataset,
      gmv: document.querySelector('[data-testid=gmv]')?.outerHTML,
      msg: document.querySelector('[data-testid=rv-msg]')?.textContent,
    })).catch(() => 'page unavailable');
    throw new Error(`${what}: not reached within ${TIMEOUT_MS} ms (${e.message.split('\n')[0]}); page: ${JSON.stringify(state)}`);
  }
}

describe('review page', { timeout: 120_000 }, () => {
  let browser;
  let context;
  let page;
  const problems = [];
  /** What the orders export says: {gmv, paid, orders, perSku: {sku: gmv}}. */
  let exported;
  let review;

  before(async () => {
    assert.ok(BASE, 'LIVEHUB_URL is not set: start livehub first (see tests/browser/README.md)');
    assert.ok(ADMIN && VIEWER && PAYMENT_SECRET, 'the tokens and the payment secret must be set');
    await api('PUT', `/api/rooms/${ROOM}`, { title: '复盘测试 review test' });
    await api('PUT', `/api/rooms/${ROOM}/skus/A1`, { name: '保温杯', price_fen: 9900, stock: 100 });
    await api('PUT', `/api/rooms/${ROOM}/skus/L1`, { name: '限量礼盒', price_fen: 4990, stock: 2, limit_per_user: 1 });
    await api('PUT', `/api/rooms/${ROOM}/skus/P1`, { name: '真丝围巾', price_fen: 12900, stock: 20, pay_timeout_s: 60 });
    const now = Date.now();
    const audience = [];
    for (let i = 0; i < 12; i++) {
      audience.push({ type: 'enter', user: `u${i}`, ts_ms: now - 20_000 + i, source: i % 3 ? 'recommend' : 'share', ...(i % 3 ? {} : { referrer: 'amy' }) });
      audience.push({ type: 'click', user: `u${i}`, ts_ms: now - 10_000 + i, sku: i % 2 ? 'A1' : 'P1' });
    }
    await api('POST', `/api/rooms/${ROOM}/audience`, audience);

    browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox'] });
    context = await browser.newContext({ viewport: { width: 1600, height: 1000 }, acceptDownloads: true });
    const buyer = await context.newPage();
    await buyer.goto(`${BASE}/healthz`);
    const plan = [];
    for (let i = 0; i < 10; i++) plan.push({ user: `u${i % 6}`, req: `a${i}`, sku: 'A1', qty: 1 + (i % 2), ref: i % 3 ? undefined : 'amy' });
    // Three buys of a two-unit SKU: the third is refused (sold_out), and the refusal is journaled.
    for (let i = 0; i < 3; i++) plan.push({ user: `u${i}`, req: `l${i}`, sku: 'L1', qty: 1 });
    for (let i = 0; i < 3; i++) plan.push({ user: `u${i + 6}`, req: `p${i}`, sku: 'P1', qty: 1 });
    const acks = await buyer.evaluate(buyInPage, { wsBase: BASE.replace(/^http/, 'ws'), room: ROOM, plan, timeoutMs: TIMEOUT_MS });
    assert.equal(acks.filter((a) => a.ok).length, plan.length - 1, JSON.stringify(acks));
    assert.equal(acks.find((a) => !a.ok).error, 'sold_out');
    await buyer.close();
    const unpaid = acks.filter((a) => a.ok && a.status === 'unpaid');
    assert.equal(unpaid.length, 3);
    await pay(unpaid[0]);
    await api('POST', `/api/rooms/${ROOM}/orders/${unpaid[1].order}/cancel`);

    const lines = (await call('GET', `/api/rooms/${ROOM}/orders`)).text.split('\n').filter(Boolean).map((l) => JSON.parse(l));
    exported = { gmv: 0, paid: 0, orders: lines.length, perSku: {} };
    for (const o of lines) {
      exported.gmv += o.amount_fen;
      if (o.status === 'paid') exported.paid += o.amount_fen;
      exported.perSku[o.sku] = (exported.perSku[o.sku] || 0) + o.amount_fen;
    }
    assert.equal(exported.orders, plan.length - 1);
    // The refusal reaches the journal within about a second (journaled in aggregate).
    const deadline = Date.now() + TIMEOUT_MS;
    for (;;) {
      review = (await call('GET', `/api/rooms/${ROOM}/review`, null, VIEWER)).json;
      if (review && review.rejected && review.rejected.sold_out === 1) break;
      assert.ok(Date.now() < deadline, `the refusal is in the review: ${JSON.stringify(review)}`);
      await new Promise((r) => setTimeout(r, 200));
    }

    page = await context.newPage();
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
    await page.goto(`${BASE}/review?room=${ROOM}&token=${encodeURIComponent(VIEWER)}&speed=60`);
    await waitInPage(page, () => document.querySelector('[data-testid=rv-replay]')?.dataset.state === 'ended', null, 'the review loads');
  });

  after(async () => { await browser?.close(); });

  test("the page's totals are the orders export's", async () => {
    const figures = await page.evaluate(() => {
      const d = (id) => document.querySelector(`[data-testid=${id}]`);
      return {
        gmv: d('rv-gmv').dataset.valueFen, gmvText: d('rv-gmv').textContent,
        paid: d('rv-paid-gmv').dataset.valueFen, paidText: d('rv-paid-gmv').textContent,
        orders: d('rv-orders').dataset.value,
        skus: Object.fromEntries([...document.querySelectorAll('[data-testid=rv-skus] tr[data-sku]')]
          .map((r) => [r.dataset.sku, Number(r.querySelector('[data-value-fen]').dataset.valueFen)])),
        rejected: Object.fromEntries([...document.querySelectorAll('[data-testid=rv-rejections] li')].map((li) => [li.dataset.code, Number(li.dataset.value)])),
        payments: Object.fromEntries([...document.querySelectorAll('[data-testid=rv-payments] [data-outcome]')].map((x) => [x.dataset.outcome, x.dataset.value])),
        points: Number(d('rv-sales-chart').dataset.points),
        room: d('rv-room').textContent,
      };
    });
    assert.equal(Number(figures.gmv), exported.gmv, 'placed GMV');
    assert.equal(figures.gmvText, formatFen(exported.gmv));
    assert.equal(Number(figures.paid), exported.paid, 'paid GMV: the orders paid now');
    assert.equal(figures.paidText, formatFen(exported.paid));
    assert.equal(Number(figures.orders), exported.orders);
    assert.deepEqual(figures.skus, { A1: exported.perSku.A1, L1: exported.perSku.L1, P1: exported.perSku.P1 });
    assert.deepEqual(figures.rejected, { sold_out: 1 });
    assert.equal(figures.payments.cancelled, '1');
    assert.equal(figures.points, review.minutes.length);
    assert.ok(figures.room.includes('复盘测试'), figures.room);
  });

  test('the CSV download is the review\'s minutes', async () => {
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=rv-csv]')]);
    const text = await readFile(await download.path(), 'utf8');
    const [header, ...rows] = text.trim().split('\n');
    assert.equal(header, CSV_HEADER);
    assert.equal(rows.length, review.minutes.length);
    assert.equal(rows.reduce((a, r) => a + Number(r.split(',')[1]), 0), exported.gmv, 'the minutes add up to the GMV');
  });

  test('a replay at 60x plays the stream through the dashboard and ends on its GMV', async () => {
    const dash = () => {
      const d = (id) => document.querySelector(`#rv-stage [data-testid=${id}]`);
      return { gmv: Number(d('gmv').dataset.valueFen), paid: Number(d('paid-gmv').dataset.valueFen), state: document.querySelector('[data-testid=rv-replay]').dataset.state };
    };
    // The slider at the start: nothing sold yet.
    await page.evaluate(() => {
      const s = document.querySelector('[data-testid=rv-slider]');
      s.value = '0';
      s.dispatchEvent(new Event('input'));
    });
    assert.equal((await page.evaluate(dash)).gmv, 0);
    await page.selectOption('[data-testid=rv-speed]', '60');
    await page.click('[data-testid=rv-play]');
    assert.equal((await page.evaluate(dash)).state, 'playing');
    await waitInPage(page, () => document.querySelector('[data-testid=rv-replay]').dataset.state === 'ended', null, 'the replay ends');
    const end = await page.evaluate(dash);
    assert.equal(end.gmv, review.totals.gmv_fen, "the replay's placed GMV is the review's");
    assert.equal(end.gmv, exported.gmv);
    assert.equal(end.paid, review.totals.paid_gmv_fen);
    // The headline counter's tween ends on the exact figure.
    await waitInPage(page, (want) => document.querySelector('#rv-stage [data-testid=paid-gmv]').textContent === want,
      formatFen(review.totals.paid_gmv_fen), 'the paid GMV counter settles');
    const rest = await page.evaluate(() => ({
      orders: document.querySelector('#rv-stage [data-testid=orders]').dataset.value,
      conn: document.querySelector('#rv-stage [data-testid=conn-state]').dataset.state,
      points: Number(document.querySelector('#rv-stage [data-testid=trend-chart]').dataset.points),
      soldOut: document.querySelector('#rv-stage [data-testid=sku-table] tr[data-sku=L1]')?.dataset.state,
    }));
    assert.equal(Number(rest.orders), exported.orders);
    assert.equal(rest.conn, 'replay');
    assert.equal(rest.points, review.minutes.length);
    assert.equal(rest.soldOut, 'sold_out');
  });

  test('the language toggle switches the report and the replay', async () => {
    await page.click('#rv-page > header [data-testid=lang-toggle]');
    await waitInPage(page, () => document.querySelector('[data-i18n=rv_title]').textContent === 'Stream review', null, 'English');
    assert.equal(await page.textContent('#rv-stage [data-testid=conn-state]'), 'Replay');
    await page.click('#rv-page > header [data-testid=lang-toggle]');
    await waitInPage(page, () => document.querySelector('[data-i18n=rv_title]').textContent === '直播复盘', null, 'Chinese again');
  });

  test("the dashboard links to its room's review", async () => {
    const dash = await context.newPage();
    await dash.goto(`${BASE}/?room=${ROOM}&token=${encodeURIComponent(VIEWER)}`);
    const href = await dash.getAttribute('[data-testid=review-link]', 'href');
    assert.equal(href, `/review?room=${ROOM}&token=${encodeURIComponent(VIEWER)}`);
    await dash.close();
  });

  test('no page errors and nothing that reads NaN or undefined', async () => {
    const bad = await page.evaluate(() => (document.body.innerText.match(/.{0,40}\b(NaN|undefined)\b.{0,40}/) || [''])[0]);
    assert.equal(bad, '');
    assert.deepEqual(problems, []);
  });
});
