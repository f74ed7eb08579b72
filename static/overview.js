// livehub overview (全部直播间): every room at a glance.
//
// Plain ES2020, no build step. Contract: /ws/overview pushes {"op":"overview","ts_ms","rooms"}
// about once a second (docs/protocol.md, "Overview"); the server sorts the rooms (live first,
// then by GMV), and the page keeps that order.
//
// Everything the server sends is rendered with textContent (never innerHTML): titles and room
// ids are untrusted text. The page shares the dashboard's look (style.css), its language
// choice (the same localStorage key) and its data-age badge.
'use strict';

(() => {
  // ---------------------------------------------------------------- i18n --

  const I18N = {
    zh: {
      title: '全部直播间',
      setup_hint: '输入观看令牌以查看全部直播间。',
      viewer_token: '观看令牌',
      open_overview: '打开',
      rooms_count: '{n} 个直播间 · {live} 个直播中',
      no_rooms: '暂无直播间',
      live: '直播中',
      ended: '已下播',
      idle: '未开播',
      paid_gmv: '成交额',
      placed_gmv: '下单金额',
      orders: '订单数',
      online: '在线观众',
      last_order: '最近下单',
      last_order_ago: '{a}前',
      no_order: '暂无订单',
      open_dashboard: '打开大屏',
      total_paid_gmv: '全部成交额',
      total_gmv: '全部下单金额',
      total_orders: '全部订单',
      total_online: '全部在线',
      review: '复盘',
      conn_connecting: '连接中…',
      conn_open: '实时',
      conn_reconnecting: '重连中 {s}s',
      age_none: '等待数据',
      age: '{a} 前更新',
      err_unauthorized: '令牌无效',
      err_unreachable: '无法连接服务器',
      dur_s: '{s}秒',
      dur_ms: '{m}分{s}秒',
      dur_h: '{h}小时{m}分',
      dur_d: '{d}天{h}小时',
    },
    en: {
      title: 'All rooms',
      setup_hint: 'Enter a viewer token to see every room.',
      viewer_token: 'Viewer token',
      open_overview: 'Open',
      rooms_count: '{n} rooms · {live} live',
      no_rooms: 'No rooms yet',
      live: 'LIVE',
      ended: 'Ended',
      idle: 'Not started',
      paid_gmv: 'Paid GMV',
      placed_gmv: 'Placed GMV',
      orders: 'Orders',
      online: 'Watching',
      last_order: 'Last order',
      last_order_ago: '{a} ago',
      no_order: 'no orders yet',
      open_dashboard: 'Dashboard',
      total_paid_gmv: 'Paid GMV, all rooms',
      total_gmv: 'Placed GMV, all rooms',
      total_orders: 'Orders, all rooms',
      total_online: 'Watching, all rooms',
      review: 'Review',
      conn_connecting: 'Connecting…',
      conn_open: 'Live',
      conn_reconnecting: 'Reconnecting {s}s',
      age_none: 'waiting for data',
      age: 'updated {a} ago',
      err_unauthorized: 'invalid token',
      err_unreachable: 'server unreachable',
      dur_s: '{s}s',
      dur_ms: '{m}m{s}s',
      dur_h: '{h}h{m}m',
      dur_d: '{d}d{h}h',
    },
  };

  /** The dashboard's key: one language choice for both pages. */
  const LANG_KEY = 'livehub.lang';

  function storageGet(key) {
    try { return window.localStorage.getItem(key); } catch (_) { return null; }
  }
  function storageSet(key, value) {
    try { window.localStorage.setItem(key, value); } catch (_) { /* private mode */ }
  }

  let lang = storageGet(LANG_KEY) === 'en' ? 'en' : 'zh';

  /** Translates `key` in the current language, filling {name} placeholders from `vars`. */
  function t(key, vars) {
    const s = I18N[lang][key] ?? I18N.zh[key] ?? key;
    return vars ? s.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m)) : s;
  }

  function applyLang() {
    document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
    for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
    for (const b of document.querySelectorAll('.lang-toggle')) {
      b.textContent = lang === 'zh' ? 'EN' : '中文';
      b.title = lang === 'zh' ? 'Switch to English' : '切换到中文';
    }
    document.title = 'livehub ' + t('title');
    if (last) render(last);
    renderConn();
    renderAge();
  }

  function toggleLang() {
    lang = lang === 'zh' ? 'en' : 'zh';
    storageSet(LANG_KEY, lang);
    applyLang();
  }

  // ---------------------------------------------------------- formatting --

  /** "1234567" -> "1,234,567" for a safe integer (sign kept). */
  function group(n) {
    const s = String(Math.trunc(Math.abs(n)));
    return (n < 0 ? '-' : '') + s.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  }

  /** Exact money text, as the dashboard shows it: integer fen -> "¥12,345.00". */
  function fmtFen(fen) {
    const n = Math.round(Number(fen) || 0);
    const a = Math.abs(n);
    return (n < 0 ? '-' : '') + '¥' + group(Math.floor(a / 100)) + '.' + String(a % 100).padStart(2, '0');
  }

  /** Seconds -> "12秒" / "3分05秒" / "2小时05分" / "3天4小时" (zh), "12s" / "3m05s" / … (en). */
  function fmtDuration(sec) {
    const s = Math.max(0, Math.round(sec));
    if (s < 60) return t('dur_s', { s });
    if (s < 3600) return t('dur_ms', { m: Math.floor(s / 60), s: String(s % 60).padStart(2, '0') });
    if (s < 86400) return t('dur_h', { h: Math.floor(s / 3600), m: String(Math.floor((s % 3600) / 60)).padStart(2, '0') });
    return t('dur_d', { d: Math.floor(s / 86400), h: Math.floor((s % 86400) / 3600) });
  }

  /** Data age -> "0.3秒" style text with one decimal below 10 s. */
  function fmtAge(ms) {
    if (ms < 10000) return t('dur_s', { s: (ms / 1000).toFixed(1) });
    return fmtDuration(ms / 1000);
  }

  /** Local wall-clock "HH:MM:SS" of a Unix-ms time. */
  function fmtClock(ms) {
    const d = new Date(ms);
    return [d.getHours(), d.getMinutes(), d.getSeconds()].map((x) => String(x).padStart(2, '0')).join(':');
  }

  // ------------------------------------------------------------- helpers --

  const $ = (id) => document.getElementById(id);

  /** Creates an element: h('div', {class: 'x', 'data-testid': 'y'}, 'text', child...). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    if (attrs) for (const [k, v] of Object.entries(attrs)) if (v != null) el.setAttribute(k, v);
    for (const c of children) if (c != null) el.append(c);
    return el;
  }

  /** Sets text only when it changed; big numerals are shrunk to fit their box. */
  function setText(el, text) {
    if (el.textContent === text) return;
    el.textContent = text;
    if (el.classList.contains('num')) fitText(el);
  }

  /** Shrinks an element's font so its one-line text fits its box (never past the CSS size). */
  function fitText(el) {
    el.style.fontSize = '';
    const avail = el.clientWidth;
    const need = el.scrollWidth;
    if (avail > 0 && need > avail) {
      const size = parseFloat(getComputedStyle(el).fontSize);
      el.style.fontSize = Math.floor(size * avail / need * 0.97) + 'px';
    }
  }

  /** A field as a finite number, or 0 (a figure the server left out shows as zero, never NaN). */
  function num(x) { return typeof x === 'number' && isFinite(x) ? x : 0; }

  // --------------------------------------------------------------- state --

  const params = new URLSearchParams(location.search);
  const token = (params.get('token') || '').trim();

  /** Latest overview, or null before the first one. */
  let last = null;
  /** Client-minus-server clock offset samples (ms): receive time minus ts_ms. */
  const offsetSamples = [];
  let clockOffset = 0;
  let lastRecvAt = 0;

  /** Estimated server "now" in ms: the client clock corrected by the smallest observed offset. */
  function serverNow() { return Date.now() - clockOffset; }

  /** The dashboard of `room` (the dashboard reads ?room=&token=). */
  function dashboardUrl(room) {
    return `/?room=${encodeURIComponent(room)}&token=${encodeURIComponent(token)}`;
  }
  /** The review of `room` (复盘). */
  function reviewUrl(room) {
    return `/review?room=${encodeURIComponent(room)}&token=${encodeURIComponent(token)}`;
  }

  // --------------------------------------------------------------- cards --

  /** Card elements by room id, reused from one overview to the next. */
  const cards = new Map();

  /** A figure of a card: its label and its value element. */
  function figure(cls, testid, labelKey) {
    const v = h('div', { class: 'num ' + cls, 'data-testid': testid });
    const box = h('div', { class: 'ov-fig ' + cls }, h('div', { class: 'label', 'data-i18n': labelKey }, t(labelKey)), v);
    return { box, v };
  }

  function makeCard(room) {
    const c = {};
    c.el = h('article', { class: 'card ov-card', 'data-testid': 'room-card', 'data-room': room });
    c.badge = h('span', { class: 'ov-badge', 'data-testid': 'card-live' });
    c.title = h('a', { class: 'ov-title', 'data-testid': 'card-title', href: dashboardUrl(room) });
    c.id = h('span', { class: 'ov-room', 'data-testid': 'card-room' }, room);
    c.paid = figure('paid', 'card-paid-gmv', 'paid_gmv');
    c.gmv = figure('placed', 'card-gmv', 'placed_gmv');
    c.orders = figure('orders', 'card-orders', 'orders');
    c.online = figure('online', 'card-online', 'online');
    c.lastOrder = h('span', { class: 'ov-last', 'data-testid': 'card-last-order' });
    c.review = h('a', { class: 'btn ghost ov-review', 'data-testid': 'card-review', href: reviewUrl(room) });
    c.open = h('span', { class: 'ov-open', 'data-i18n': 'open_dashboard' }, t('open_dashboard'));
    c.el.append(
      h('div', { class: 'ov-head' }, c.badge, h('div', { class: 'ov-name' }, c.title, c.id)),
      c.paid.box,
      h('div', { class: 'ov-figs' }, c.gmv.box, c.orders.box, c.online.box),
      h('div', { class: 'ov-foot' },
        h('span', { class: 'label', 'data-i18n': 'last_order' }, t('last_order')), c.lastOrder,
        h('span', { class: 'ov-spacer' }), c.review, c.open),
    );
    return c;
  }

  /** Renders one room's line into its card. */
  function renderCard(c, r) {
    const live = r.live === true;
    c.el.dataset.live = String(live);
    c.badge.className = 'ov-badge ' + (live ? 'on' : 'off');
    // Off air: a room that has sold ended its stream; one that never sold has not begun.
    setText(c.badge, t(live ? 'live' : r.last_order_ms == null ? 'idle' : 'ended'));
    setText(c.title, r.title || r.room);
    c.title.title = r.title || r.room;
    const paid = num(r.paid_gmv_fen);
    const placed = num(r.gmv_fen);
    c.paid.v.dataset.valueFen = String(paid);
    setText(c.paid.v, fmtFen(paid));
    c.gmv.v.dataset.valueFen = String(placed);
    setText(c.gmv.v, fmtFen(placed));
    c.orders.v.dataset.value = String(num(r.orders));
    setText(c.orders.v, group(num(r.orders)));
    c.online.v.dataset.value = String(num(r.online));
    setText(c.online.v, group(num(r.online)));
    c.lastOrder.dataset.ms = typeof r.last_order_ms === 'number' ? String(r.last_order_ms) : '';
    renderLastOrder(c);
    // A room off air has a finished stream to go over; a live one is watched on its dashboard.
    c.review.hidden = live;
    setText(c.review, t('review'));
  }

  /** "3分05秒前" since the room's last order, in server time; ticks between overviews. */
  function renderLastOrder(c) {
    const ms = c.lastOrder.dataset.ms;
    if (!ms) {
      c.lastOrder.classList.add('none');
      setText(c.lastOrder, t('no_order'));
      return;
    }
    c.lastOrder.classList.remove('none');
    setText(c.lastOrder, t('last_order_ago', { a: fmtDuration((serverNow() - Number(ms)) / 1000) }));
  }

  /** Renders an overview: one card per room, in the server's order. */
  function render(o) {
    const grid = $('cards');
    const rooms = Array.isArray(o.rooms) ? o.rooms : [];
    const seen = new Set();
    let i = 0;
    let live = 0;
    for (const r of rooms) {
      if (!r || typeof r.room !== 'string') continue;
      seen.add(r.room);
      let c = cards.get(r.room);
      if (!c) {
        c = makeCard(r.room);
        cards.set(r.room, c);
      }
      if (grid.children[i] !== c.el) grid.insertBefore(c.el, grid.children[i] || null);
      i++;
      renderCard(c, r);
      if (r.live === true) live++;
    }
    for (const [room, c] of cards) if (!seen.has(room)) { c.el.remove(); cards.delete(room); }
    renderTotals(rooms);
    $('cards-empty').hidden = seen.size > 0;
    setText($('room-count'), t('rooms_count', { n: seen.size, live }));
    $('overview').dataset.tsMs = String(num(o.ts_ms));
  }

  /** Sums over every room: what the merchant sells across all streams now. */
  function renderTotals(rooms) {
    const sum = (f) => rooms.reduce((a, r) => a + num(r && r[f]), 0);
    const set = (id, v, text) => { const el = $(id); el.dataset.value = String(v); setText(el, text); };
    set('total-paid-gmv', sum('paid_gmv_fen'), fmtFen(sum('paid_gmv_fen')));
    set('total-gmv', sum('gmv_fen'), fmtFen(sum('gmv_fen')));
    set('total-orders', sum('orders'), group(sum('orders')));
    set('total-online', sum('online'), group(sum('online')));
  }

  function applyOverview(o) {
    const now = Date.now();
    lastRecvAt = now;
    if (typeof o.ts_ms === 'number') {
      offsetSamples.push(now - o.ts_ms);
      if (offsetSamples.length > 64) offsetSamples.shift();
      clockOffset = Math.min(...offsetSamples);
    }
    last = o;
    render(o);
    renderAge();
  }

  // ----------------------------------------------------------- connection --

  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 10000;
  const STALL_MS = 5000; // server sends once a second; 5 s of silence = dead link

  /** state: connecting | open | reconnecting; retryAt: when the next attempt starts. */
  const conn = { ws: null, state: 'connecting', attempt: 0, timer: 0, retryAt: 0, problem: '' };

  function wsUrl() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${proto}//${location.host}/ws/overview?token=${encodeURIComponent(token)}`;
  }

  /** Opens the overview socket; on any close, schedules a retry with backoff. */
  function connect() {
    clearTimeout(conn.timer);
    conn.timer = 0;
    conn.state = 'connecting';
    renderConn();
    let ws;
    try {
      ws = new WebSocket(wsUrl());
    } catch (_) {
      scheduleReconnect();
      return;
    }
    conn.ws = ws;
    let opened = false;
    ws.onopen = () => {
      if (conn.ws !== ws) return;
      opened = true;
      conn.state = 'open';
      conn.problem = '';
      lastRecvAt = Date.now();
      renderConn();
    };
    ws.onmessage = (ev) => {
      if (conn.ws !== ws) return;
      let msg;
      try { msg = JSON.parse(ev.data); } catch (_) { return; }
      if (!msg || msg.op !== 'overview') return;
      applyOverview(msg);
      conn.attempt = 0;
    };
    ws.onclose = () => {
      if (conn.ws !== ws) return;
      conn.ws = null;
      if (!opened) diagnose();
      scheduleReconnect();
    };
    ws.onerror = () => { /* a close event always follows */ };
  }

  /** Waits 0.5 s · 2^attempt (max 10 s, ±20% jitter), then connects again. */
  function scheduleReconnect() {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * Math.pow(2, conn.attempt));
    const delay = Math.min(BACKOFF_MAX_MS, Math.round(base * (0.8 + 0.4 * Math.random())));
    conn.attempt++;
    conn.state = 'reconnecting';
    conn.retryAt = Date.now() + delay;
    clearTimeout(conn.timer);
    conn.timer = setTimeout(connect, delay);
    renderConn();
  }

  function dropAndReconnect() {
    const ws = conn.ws;
    conn.ws = null;
    if (ws) { try { ws.close(); } catch (_) { /* ignore */ } }
    scheduleReconnect();
  }

  function retryNow() {
    if (conn.state === 'reconnecting') { conn.attempt = 0; connect(); }
  }

  /** After a socket failed before opening, asks the REST API why: 401 -> bad token. */
  async function diagnose() {
    try {
      const r = await fetch('/api/overview', { headers: { Authorization: 'Bearer ' + token }, cache: 'no-store' });
      conn.problem = r.status === 401 ? t('err_unauthorized') : '';
    } catch (_) {
      conn.problem = t('err_unreachable');
    }
    renderConn();
  }

  function renderConn() {
    const el = $('conn-state');
    if (!el) return;
    el.dataset.state = conn.state;
    let text;
    if (conn.state === 'open') text = t('conn_open');
    else if (conn.state === 'connecting') text = t('conn_connecting');
    else text = t('conn_reconnecting', { s: Math.max(0, Math.ceil((conn.retryAt - Date.now()) / 1000)) });
    if (conn.problem && conn.state !== 'open') text = conn.problem + ' · ' + text;
    setText(el, text);
  }

  // ------------------------------------------------- data age and ticker --

  /** Shows how old the displayed overview is, in server time; class "stale" past 3 s. */
  function renderAge() {
    const el = $('data-age');
    if (!el) return;
    if (!last) {
      setText(el, t('age_none'));
      el.dataset.ageMs = '';
      el.classList.add('stale');
      return;
    }
    const age = Math.max(0, serverNow() - last.ts_ms);
    el.dataset.ageMs = String(Math.round(age));
    el.classList.toggle('stale', age > 3000);
    setText(el, t('age', { a: fmtAge(age) }));
    el.title = `ts ${new Date(last.ts_ms).toISOString()}`;
  }

  /** Runs every 250 ms: age badge, clock, times since the last orders, stall watchdog. */
  function tick() {
    renderAge();
    setText($('clock'), fmtClock(serverNow()));
    for (const c of cards.values()) renderLastOrder(c);
    if (conn.state !== 'open') renderConn();
    if (conn.state === 'open' && Date.now() - lastRecvAt > STALL_MS) dropAndReconnect();
  }

  // ---------------------------------------------------------------- boot --

  function boot() {
    for (const b of document.querySelectorAll('.lang-toggle')) b.addEventListener('click', toggleLang);
    if (!token) {
      $('setup').hidden = false;
      applyLang();
      $('setup-token').focus();
      return;
    }
    $('overview').hidden = false;
    applyLang();
    connect();
    setInterval(tick, 250);
    tick();
    window.addEventListener('online', retryNow);
    window.addEventListener('resize', () => { for (const el of document.querySelectorAll('.num')) fitText(el); });
    document.addEventListener('visibilitychange', () => { if (!document.hidden) retryNow(); });
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();
