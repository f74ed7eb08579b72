// Browser test of the overview page (static/overview.html): drives Debian's Chromium with
// playwright-core against an already running livehub server (started with --open-buyers by the
// caller, as for dashboard.test.mjs). Other tests' rooms may be there too, changing meanwhile:
// the page is compared with the `/api/overview` answer of the same build (the same ts_ms).
//
// Env: LIVEHUB_URL, LIVEHUB_ADMIN_TOKEN, LIVEHUB_VIEWER_TOKEN (see tests/browser/README.md),
//      OVERVIEW_SCREENSHOT (optional: a path to save a 1600x900 screenshot to),
//      CHROMIUM (optional; default /usr/bin/chromium).
// Run: node --test tests/browser/overview.test.mjs
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BASE = (process.env.LIVEHUB_URL || '').replace(/\/+$/, '');
const ADMIN = process.env.LIVEHUB_ADMIN_TOKEN || '';
const VIEWER = process.env.LIVEHUB_VIEWER_TOKEN || '';
const TIMEOUT_MS = 15_000;
const TAG = Date.now().toString(36);
/** This test's rooms: one that sells, one with an audience and an order, one never active. */
const SHOP = `ov-shop-${TAG}`;
const TEA = `ov-tea-${TAG}`;
const QUIET = `ov-quiet-${TAG}`;

/** The exact money format the page must show: integer fen -> "¥12,345.00". */
function formatFen(fen) {
  const yuan = Math.floor(fen / 100).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  return `¥${yuan}.${String(fen % 100).padStart(2, '0')}`;
}

/** Calls the REST API with `token`; returns the parsed JSON, throws on a non-2xx status. */
async function api(method, urlPath, body, token = ADMIN) {
  const res = await fetch(BASE + urlPath, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${urlPath} -> ${res.status}: ${text}`);
  return text ? JSON.parse(text) : null;
}

/**
 * Runs inside a page of the server's origin: one buyer socket per buy (?user=, the server runs
 * --open-buyers), each waits for its `hello`, buys and closes. Resolves to the acks.
 */
async function buyInPage({ wsBase, buys, timeoutMs }) {
  const one = ({ room, user, req, sku, qty }) => new Promise((resolve, reject) => {
    const ws = new WebSocket(`${wsBase}/ws/buy?room=${encodeURIComponent(room)}&user=${encodeURIComponent(user)}`);
    const timer = setTimeout(() => reject(new Error(`timeout: ${room}/${user}/${req}`)), timeoutMs);
    ws.onerror = () => reject(new Error(`buyer socket error: ${room}/${user}`));
    ws.onmessage = (ev) => {
      const m = JSON.parse(ev.data);
      if (m.op === 'hello') ws.send(JSON.stringify({ op: 'buy', req, sku, qty }));
      if (m.op === 'ack' && m.req === req) { clearTimeout(timer); ws.close(); resolve(m); }
    };
  });
  const acks = [];
  for (const b of buys) acks.push(await one(b));
  return acks;
}

/** Runs in the overview page: what it shows, card by card, in its order. */
function readPage() {
  const root = document.querySelector('[data-testid=overview]');
  const cards = [...document.querySelectorAll('[data-testid=room-card]')].map((c) => {
    const q = (id) => c.querySelector(`[data-testid=${id}]`);
    const review = q('card-review');
    return {
      room: c.dataset.room,
      live: c.dataset.live === 'true',
      title: q('card-title').textContent,
      href: q('card-title').getAttribute('href'),
      review: review.hidden ? null : review.getAttribute('href'),
      paid: Number(q('card-paid-gmv').dataset.valueFen),
      paidText: q('card-paid-gmv').textContent,
      gmv: Number(q('card-gmv').dataset.valueFen),
      gmvText: q('card-gmv').textContent,
      orders: Number(q('card-orders').dataset.value),
      online: Number(q('card-online').dataset.value),
      lastOrder: q('card-last-order').dataset.ms === '' ? null : Number(q('card-last-order').dataset.ms),
      lastOrderText: q('card-last-order').textContent,
      badge: q('card-live').textContent,
    };
  });
  const total = (id) => Number(document.querySelector(`[data-testid=${id}]`).dataset.value);
  return {
    ts: Number(root.dataset.tsMs), cards, age: document.querySelector('[data-testid=data-age]').textContent,
    totals: { paid: total('total-paid-gmv'), gmv: total('total-gmv'), orders: total('total-orders'), online: total('total-online') },
  };
}

/** Text of the page that must never show: a figure computed from a missing field. */
function badText() {
  return (document.body.innerText.match(/.{0,40}\b(NaN|undefined|null)\b.{0,40}/) || [''])[0];
}

describe('overview page', { timeout: 120_000 }, () => {
  let browser;
  let page;
  const problems = []; // page errors and CSP violations, checked last
  let matched; // {api, shown}: the page and /api/overview of one build

  before(async () => {
    assert.ok(BASE, 'LIVEHUB_URL is not set: start livehub first (see tests/browser/README.md)');
    assert.ok(ADMIN && VIEWER, 'LIVEHUB_ADMIN_TOKEN and LIVEHUB_VIEWER_TOKEN must be set');
    await api('PUT', `/api/rooms/${SHOP}`, { title: '概览测试·主场 Overview shop' });
    await api('PUT', `/api/rooms/${TEA}`, { title: '概览测试·茶 Overview tea' });
    await api('PUT', `/api/rooms/${QUIET}`, { title: '概览测试·未开播 Overview quiet' });
    await api('PUT', `/api/rooms/${SHOP}/skus/A`, { name: '保温杯', price_fen: 123_456, stock: 100 });
    await api('PUT', `/api/rooms/${TEA}/skus/T`, { name: '龙井', price_fen: 15_800, stock: 100 });

    browser = await chromium.launch({
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    const context = await browser.newContext({ viewport: { width: 1600, height: 900 }, locale: 'zh-CN' });
    // The readers in the page, for predicates polled there (the page's CSP forbids eval).
    await context.addInitScript({ content: `window.readPage = ${readPage.toString()};` });

    const buyer = await context.newPage();
    await buyer.goto(`${BASE}/healthz`);
    const wsBase = BASE.replace(/^http/, 'ws');
    const acks = await buyer.evaluate(buyInPage, {
      wsBase, timeoutMs: TIMEOUT_MS, buys: [
        { room: SHOP, user: 'b1', req: 'r1', sku: 'A', qty: 2 },
        { room: SHOP, user: 'b2', req: 'r2', sku: 'A', qty: 1 },
        { room: TEA, user: 'b3', req: 'r3', sku: 'T', qty: 1 },
      ],
    });
    await buyer.close();
    for (const a of acks) assert.equal(a.ok, true, JSON.stringify(a));
    const now = Date.now();
    const res = await fetch(`${BASE}/api/rooms/${TEA}/audience`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${ADMIN}`, 'Content-Type': 'application/json' },
      body: JSON.stringify([
        ...['w1', 'w2', 'w3', 'w4'].map((user, i) => ({ type: 'enter', user, ts_ms: now - 2000 + i, source: 'follow' })),
        { type: 'leave', user: 'w4', ts_ms: now - 100 },
      ]),
    });
    assert.equal(res.status, 200, await res.text());

    page = await context.newPage();
    page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error' && /Content Security Policy|Refused to/i.test(m.text())) problems.push(`csp: ${m.text()}`);
    });
    await page.goto(`${BASE}/overview?token=${encodeURIComponent(VIEWER)}`);
  });

  after(async () => {
    if (browser) await browser.close();
  });

  test('shows every room with the figures of /api/overview, in its order', async () => {
    await page.waitForFunction(() => document.querySelector('[data-testid=conn-state]')?.dataset.state === 'open',
      null, { timeout: TIMEOUT_MS, polling: 100 });
    // Until the page shows the build /api/overview answers with, and that build has this
    // test's orders and audience in its figures.
    const deadline = Date.now() + TIMEOUT_MS;
    let last = '';
    for (;;) {
      const apiNow = await api('GET', '/api/overview', null, VIEWER);
      const shown = await page.evaluate(() => window.readPage());
      const line = (room) => apiNow.rooms.find((l) => l.room === room);
      const ready = line(SHOP)?.orders === 2 && line(TEA)?.orders === 1 && line(TEA)?.online === 3;
      if (ready && shown.ts === apiNow.ts_ms) { matched = { api: apiNow, shown }; break; }
      last = `api ts ${apiNow.ts_ms}, page ts ${shown.ts}, shop ${JSON.stringify(line(SHOP))}`;
      if (Date.now() > deadline) throw new Error(`the page never showed the API's build: ${last}`);
      await new Promise((r) => setTimeout(r, 150));
    }
    const { api: o, shown } = matched;
    assert.equal(o.op, 'overview');
    assert.deepEqual(shown.cards.map((c) => c.room), o.rooms.map((l) => l.room), 'one card per room, in the API\'s order');
    for (const [i, l] of o.rooms.entries()) {
      const c = shown.cards[i];
      assert.deepEqual(
        { live: c.live, title: c.title, paid: c.paid, gmv: c.gmv, orders: c.orders, online: c.online, lastOrder: c.lastOrder },
        { live: l.live, title: l.title || l.room, paid: l.paid_gmv_fen, gmv: l.gmv_fen, orders: l.orders, online: l.online, lastOrder: l.last_order_ms },
        `room ${l.room}`,
      );
      assert.equal(c.paidText, formatFen(l.paid_gmv_fen), `room ${l.room}: paid GMV text`);
      assert.equal(c.gmvText, formatFen(l.gmv_fen), `room ${l.room}: GMV text`);
      assert.equal(c.href, `/?room=${encodeURIComponent(l.room)}&token=${encodeURIComponent(VIEWER)}`, `room ${l.room}: opens its dashboard`);
      assert.equal(c.review, l.live ? null : `/review?room=${encodeURIComponent(l.room)}&token=${encodeURIComponent(VIEWER)}`,
        `room ${l.room}: a review link only when not live`);
    }
    const sum = (f) => o.rooms.reduce((a, l) => a + l[f], 0);
    assert.deepEqual(shown.totals, { paid: sum('paid_gmv_fen'), gmv: sum('gmv_fen'), orders: sum('orders'), online: sum('online') },
      'the sums over every room');
    const firstOff = o.rooms.findIndex((l) => !l.live);
    assert.ok(firstOff === -1 || o.rooms.slice(firstOff).every((l) => !l.live), 'live rooms first');
  });

  test('this test\'s rooms: exact money, live badges, time since the last order', async () => {
    const card = (room) => matched.shown.cards.find((c) => c.room === room);
    const shop = card(SHOP);
    assert.equal(shop.paidText, '¥3,703.68', '3 × ¥1,234.56');
    assert.equal(shop.gmvText, '¥3,703.68');
    assert.equal(shop.live, true);
    assert.equal(shop.badge, '直播中');
    assert.match(shop.lastOrderText, /^\d+秒前$/);
    const tea = card(TEA);
    assert.deepEqual([tea.live, tea.online, tea.orders, tea.paid], [true, 3, 1, 15_800]);
    const quiet = card(QUIET);
    assert.deepEqual([quiet.live, quiet.orders, quiet.lastOrder, quiet.lastOrderText, quiet.badge],
      [false, 0, null, '暂无订单', '未开播']);
    assert.match(matched.shown.age, /前更新$/, 'the data-age badge');
    assert.equal(await page.evaluate(badText), '');
  });

  test('the language toggle switches the labels and back', async () => {
    await page.click('[data-testid=lang-toggle]');
    await page.waitForFunction(() => document.querySelector('[data-testid=label-title]').textContent === 'All rooms',
      null, { timeout: TIMEOUT_MS });
    const badge = await page.textContent(`[data-room="${SHOP}"] [data-testid=card-live]`);
    assert.equal(badge, 'LIVE');
    assert.match(await page.textContent('[data-testid=data-age]'), /^updated .* ago$/);
    if (process.env.OVERVIEW_SCREENSHOT) {
      await page.screenshot({ path: path.resolve(REPO_ROOT, process.env.OVERVIEW_SCREENSHOT), animations: 'disabled' });
    }
    await page.click('[data-testid=lang-toggle]');
    await page.waitForFunction(() => document.querySelector('[data-testid=label-title]').textContent === '全部直播间',
      null, { timeout: TIMEOUT_MS });
  });

  test('a card opens its room\'s dashboard', async () => {
    // Anywhere on the card: the title link is stretched over it (forced: the link, not the figure, takes the click).
    await page.click(`[data-room="${SHOP}"] [data-testid=card-paid-gmv]`, { force: true });
    await page.waitForURL((u) => u.pathname === '/' && u.searchParams.get('room') === SHOP, { timeout: TIMEOUT_MS });
    await page.waitForFunction(() => document.querySelector('[data-testid=paid-gmv]')?.dataset.valueFen === '370368',
      null, { timeout: TIMEOUT_MS, polling: 100 });
  });

  test('no page errors and no CSP violations', () => {
    assert.deepEqual(problems, []);
  });
});
