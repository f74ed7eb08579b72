// livehub overview (全部直播间): every room at a glance.
//
// Plain ES2020, no build step. Contract: /ws/overview pushes {"op":"overview","ts_ms","rooms"}
// about once a second (docs/protocol.md, "Overview"); the server sorts the rooms (live first,
// then by GMV), and the page keeps that order.
//
// Everything the server sends is rendered with textContent (never innerHTML): titles and room
// ids are untrusted text. The page shares the dashboard's look (style.css), its language
// choice (the same localStorage key) and its data-age badge, through common.js.
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

  const C = window.livehubCommon;
  const { $, h, setText, group, fmtFen } = C;

  /** The language: the dashboard's choice too (one localStorage key for every page). */
  const L = C.i18n(I18N);
  const { t } = L;

  function applyLang() {
    L.applyBase();
    document.title = 'livehub ' + t('title');
    if (last) render(last);
    conn.render();
    renderAge();
  }

  // ---------------------------------------------------------- formatting --

  /** Seconds -> "12秒" / "3分05秒" / "2小时05分" / "3天4小时" (zh), "12s" / "3m05s" / … (en). */
  const fmtDuration = (sec) => C.fmtDuration(t, sec, true);

  /** A field as a finite number, or 0 (a figure the server left out shows as zero, never NaN). */
  function num(x) { return typeof x === 'number' && isFinite(x) ? x : 0; }

  // --------------------------------------------------------------- state --

  const { token } = C.pageParams();

  /** Latest overview, or null before the first one. */
  let last = null;
  const clock = C.serverClock();

  /** Estimated server "now" in ms. */
  const serverNow = clock.now;

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
    clock.sample(o.ts_ms);
    last = o;
    render(o);
    renderAge();
  }

  // ----------------------------------------------------------- connection --

  /** The overview socket; a refused one is asked about at /api/overview (401: bad token). */
  const conn = C.connection({
    path: `/ws/overview?token=${encodeURIComponent(token)}`,
    op: 'overview',
    onFrame: applyOverview,
    diagnosePath: '/api/overview',
    token,
    problems: { 401: 'err_unauthorized' },
    t,
  });

  // ------------------------------------------------- data age and ticker --

  /** Shows how old the displayed overview is, in server time; class "stale" past 3 s. */
  function renderAge() {
    C.renderAge({ last, now: serverNow(), t, days: true, title: (o) => `ts ${new Date(o.ts_ms).toISOString()}` });
  }

  /** Runs every 250 ms: age badge, clock, times since the last orders, stall watchdog. */
  function tick() {
    renderAge();
    setText($('clock'), C.fmtClock(serverNow()));
    for (const c of cards.values()) renderLastOrder(c);
    conn.tick();
  }

  // ---------------------------------------------------------------- boot --

  function boot() {
    L.bindToggles(applyLang);
    if (!token) {
      $('setup').hidden = false;
      applyLang();
      $('setup-token').focus();
      return;
    }
    $('overview').hidden = false;
    applyLang();
    conn.start();
    setInterval(tick, 250);
    tick();
    window.addEventListener('resize', C.fitAll);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();
