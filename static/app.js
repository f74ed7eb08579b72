// livehub host dashboard (实时大屏).
//
// Plain ES2020, no build step. Loaded with `defer` after vendor/echarts.min.js and common.js
// (the helpers, language, formatting and socket the pages share: window.livehubCommon).
// Contract: /ws/dashboard pushes {"op":"snapshot",...} frames (see PROTOCOL.md,
// "Dashboard WebSocket"); host controls call the admin REST API.
//
// Everything the server sends is rendered with textContent (never innerHTML):
// SKU names, referrer ids and error details are untrusted text.
//
// The review page (review.html, <html data-page="review">) replays a finished stream through
// this same rendering: it inserts the dashboard's markup and drives it with synthetic
// snapshots through window.livehubDashboard (the end of this file). There is no socket then,
// and the page's clock is the replayed moment.
'use strict';

(() => {
  /** True on the review page, which replays a stream; false on the live dashboard. */
  const REPLAY = document.documentElement.dataset.page === 'review';

  // ---------------------------------------------------------------- i18n --

  const I18N = {
    zh: {
      title: '实时大屏',
      setup_hint: '输入直播间和观看令牌以打开大屏。',
      room: '直播间',
      viewer_token: '观看令牌',
      open_dashboard: '打开大屏',
      paid_gmv: '成交额',
      last_60s: '近60秒',
      placed_gmv: '下单金额',
      unpaid: '待支付',
      expired_cancelled: '已过期/已取消',
      expired_cancelled_title: '已过期 {e} · 已取消 {c}',
      refunded: '已退款',
      late_payments: '迟到支付',
      pay_rate: '支付率',
      orders: '订单数',
      units: '下单件数',
      buyers: '下单人数',
      viewers: '抢购页在线',
      peak: '峰值',
      aov: '客单价',
      conversion: '转化率',
      unique_viewers: '抢购页累计',
      gpm: '千次观看成交 GPM',
      rejected_total: '拒单',
      trend: '成交趋势',
      series_paid_per_sec: '每秒成交额',
      series_per_sec: '每秒下单金额',
      series_paid_per_min: '每分钟成交额',
      series_per_min: '每分钟下单金额',
      series_paid_cum: '累计成交额',
      series_cum: '累计下单金额',
      tooltip_orders: '订单',
      series_online: '直播间在线',
      latency: '下单延迟',
      funnel: '转化漏斗',
      funnel_overall: '进房→支付',
      no_audience: '暂无观众数据',
      step_entered: '进房',
      step_clicked: '点击商品',
      step_ordered: '下单',
      step_paid: '支付',
      audience_online: '直播间在线',
      audience_peak: '峰值',
      audience_unique: '累计观众',
      avg_watch: '平均观看',
      likes: '点赞',
      comments: '评论',
      shares: '分享',
      follows: '关注',
      per_minute: '每分钟',
      per_minute_likes: '点赞',
      per_minute_comments: '评论',
      per_minute_shares: '分享',
      sources: '流量来源',
      rejections: '拒单原因',
      none_yet: '暂无',
      skus: '商品',
      no_skus: '暂无商品',
      col_product: '商品',
      col_state: '状态',
      col_stock: '库存',
      col_sold: '已售',
      col_paid: '已支付',
      col_left: '剩余',
      col_gmv: '下单金额',
      col_clicks: '点击 / 转化',
      sku_clicks: '{n} 点击',
      col_soldout: '售罄 / 预计',
      referrers: '分享裂变 Top',
      ref_orders: '单',
      controls: '主播控制台',
      admin_token: '管理令牌',
      admin_token_hint: '仅保存在本标签页（sessionStorage）',
      btn_open: '开售',
      btn_close: '停售',
      btn_restock: '补货',
      restock_placeholder: '+数量',
      state_scheduled: '待开售',
      state_open: '抢购中',
      state_sold_out: '已售罄',
      state_closed: '已停售',
      limit_n: '限购{n}件/人',
      sku_unpaid: '{n} 待支付',
      sku_unpaid_back: '过期将回库',
      pay_within: '{d}内支付',
      timeout_s: '{n}秒',
      timeout_m: '{n}分钟',
      timeout_h: '{n}小时',
      sold_out_at: '{t} 售罄',
      eta: '约{d}',
      opens_at: '{t} 开售',
      closes_at: '{t} 停售',
      conn_connecting: '连接中…',
      conn_open: '实时',
      conn_reconnecting: '重连中 {s}s',
      conn_offline: '已断开',
      conn_replay: '回放',
      review_link: '复盘',
      age_none: '等待数据',
      age: '{a} 前更新',
      err_unauthorized: '令牌无效',
      err_not_found: '直播间不存在',
      err_unreachable: '无法连接服务器',
      need_admin_token: '请先输入管理令牌',
      bad_delta: '请输入非零整数（负数为减库存）',
      ok_open: '{sku} 已开售',
      ok_close: '{sku} 已停售',
      ok_stock: '{sku} 库存调整 {delta}，剩余 {left}',
      failed: '{sku} 操作失败',
      dur_s: '{s}秒',
      dur_ms: '{m}分{s}秒',
      dur_h: '{h}小时{m}分',
      rej: {
        sold_out: '已售罄', insufficient_stock: '库存不足', limit_exceeded: '超出限购',
        not_open: '未开售', closed: '已停售', unknown_sku: '未知商品', bad_request: '请求错误',
        rate_limited: '限流', unavailable: '服务不可用',
      },
      // `other` is the server's bucket for sources past its limit.
      src: { recommend: '推荐', follow: '关注', share: '分享', search: '搜索', ad: '广告', other: '其他' },
    },
    en: {
      title: 'Live Dashboard',
      setup_hint: 'Enter the room and a viewer token to open the dashboard.',
      room: 'Room',
      viewer_token: 'Viewer token',
      open_dashboard: 'Open dashboard',
      paid_gmv: 'Paid GMV',
      last_60s: 'last 60 s',
      placed_gmv: 'Placed GMV',
      unpaid: 'Awaiting payment',
      expired_cancelled: 'Expired / cancelled',
      expired_cancelled_title: 'expired {e} · cancelled {c}',
      refunded: 'Refunded',
      late_payments: 'late payments',
      pay_rate: 'Pay rate',
      orders: 'Orders',
      units: 'Units ordered',
      buyers: 'Buyers',
      viewers: 'On buy page',
      peak: 'peak',
      aov: 'Avg. order value',
      conversion: 'Conversion',
      unique_viewers: 'unique',
      gpm: 'GPM (per 1k viewers)',
      rejected_total: 'Rejected',
      trend: 'Sales trend',
      series_paid_per_sec: 'Paid / s',
      series_per_sec: 'Placed / s',
      series_paid_per_min: 'Paid / min',
      series_per_min: 'Placed / min',
      series_paid_cum: 'Paid total',
      series_cum: 'Placed total',
      tooltip_orders: 'orders',
      series_online: 'Watching',
      latency: 'Order latency',
      funnel: 'Funnel',
      funnel_overall: 'enter→paid',
      no_audience: 'no audience data',
      step_entered: 'Entered',
      step_clicked: 'Clicked',
      step_ordered: 'Ordered',
      step_paid: 'Paid',
      audience_online: 'Watching now',
      audience_peak: 'Peak',
      audience_unique: 'Unique',
      avg_watch: 'Avg. watch',
      likes: 'Likes',
      comments: 'Comments',
      shares: 'Shares',
      follows: 'Follows',
      per_minute: 'per minute',
      per_minute_likes: 'Likes',
      per_minute_comments: 'Comments',
      per_minute_shares: 'Shares',
      sources: 'Traffic sources',
      rejections: 'Rejections',
      none_yet: 'none yet',
      skus: 'Products',
      no_skus: 'No products yet',
      col_product: 'Product',
      col_state: 'State',
      col_stock: 'Stock',
      col_sold: 'Sold',
      col_paid: 'Paid',
      col_left: 'Left',
      col_gmv: 'Placed',
      col_clicks: 'Clicks/conv.',
      sku_clicks: '{n} clicks',
      col_soldout: 'Sold out/ETA',
      referrers: 'Top sharers',
      ref_orders: 'orders',
      controls: 'Host controls',
      admin_token: 'Admin token',
      admin_token_hint: 'kept in this tab only (sessionStorage)',
      btn_open: 'Open',
      btn_close: 'Close',
      btn_restock: 'Restock',
      restock_placeholder: '+qty',
      state_scheduled: 'Scheduled',
      state_open: 'Open',
      state_sold_out: 'SOLD OUT',
      state_closed: 'Closed',
      limit_n: 'limit {n}/user',
      sku_unpaid: '{n} awaiting payment,',
      sku_unpaid_back: 'back on sale if unpaid',
      pay_within: 'pay within {d}',
      timeout_s: '{n} s',
      timeout_m: '{n} min',
      timeout_h: '{n} h',
      sold_out_at: 'at {t}',
      eta: '~{d}',
      opens_at: 'opens {t}',
      closes_at: 'closes {t}',
      conn_connecting: 'Connecting…',
      conn_open: 'Live',
      conn_reconnecting: 'Reconnecting {s}s',
      conn_offline: 'Offline',
      conn_replay: 'Replay',
      review_link: 'Review',
      age_none: 'waiting for data',
      age: 'updated {a} ago',
      err_unauthorized: 'invalid token',
      err_not_found: 'room not found',
      err_unreachable: 'server unreachable',
      need_admin_token: 'Enter the admin token first',
      bad_delta: 'Enter a non-zero integer (negative withdraws stock)',
      ok_open: '{sku} opened',
      ok_close: '{sku} closed',
      ok_stock: '{sku} stock {delta}, {left} left',
      failed: '{sku}: request failed',
      dur_s: '{s}s',
      dur_ms: '{m}m{s}s',
      dur_h: '{h}h{m}m',
      rej: {
        sold_out: 'Sold out', insufficient_stock: 'Insufficient stock', limit_exceeded: 'Over limit',
        not_open: 'Not open', closed: 'Closed', unknown_sku: 'Unknown SKU', bad_request: 'Bad request',
        rate_limited: 'Rate limited', unavailable: 'Unavailable',
      },
      src: { recommend: 'Recommended', follow: 'Followers', share: 'Shares', search: 'Search', ad: 'Ads', other: 'Other' },
    },
  };

  const C = window.livehubCommon;
  const { $, h, setText, fitText, storageGet, storageSet, group, fmtFen, fmtClock } = C;

  const ADMIN_KEY = 'livehub.adminToken';

  /** The language, shared with the other pages (one localStorage key). */
  const L = C.i18n(I18N);
  const { t } = L;
  /** Human name of a rejection code; unknown codes are shown as they are. */
  function rejName(code) { return I18N[L.lang()].rej[code] || code; }
  /** Human name of a traffic source id; ids the page does not know are shown as they are. */
  function srcName(id) { return I18N[L.lang()].src[id] || id; }

  /** Applies the current language to every [data-i18n] element and to dynamic parts. */
  function applyLang() {
    L.applyBase();
    const restock = document.querySelectorAll('.ctl input[type=number]');
    for (const i of restock) i.placeholder = t('restock_placeholder');
    if (!REPLAY) document.title = (room ? room + ' · ' : '') + 'livehub ' + t('title');
    if (last) renderSnapshot(last);
    conn.render();
    renderAge();
    const dash = $('dashboard');
    if (dash && !dash.hidden) {
      chartDirty = true;
      audienceDirty = true;
      renderChart();
      renderAudienceCharts();
    }
    for (const f of langListeners) f(L.lang());
  }

  /** Called with the language after every change (the review page redraws its own parts). */
  const langListeners = [];

  // ---------------------------------------------------------- formatting --

  /** Short money text for labels and axes: "¥1.23万" / "¥1.23亿" (zh), "¥12.3k" / "¥1.23M" (en). */
  function fmtFenShort(fen) {
    const y = (Number(fen) || 0) / 100;
    const a = Math.abs(y);
    if (L.lang() === 'zh') {
      if (a >= 1e8) return '¥' + trimZeros((y / 1e8).toFixed(2)) + '亿';
      if (a >= 1e4) return '¥' + trimZeros((y / 1e4).toFixed(2)) + '万';
    } else {
      if (a >= 1e6) return '¥' + trimZeros((y / 1e6).toFixed(2)) + 'M';
      if (a >= 1e3) return '¥' + trimZeros((y / 1e3).toFixed(1)) + 'k';
    }
    const [i, f] = trimZeros(y.toFixed(2)).split('.');
    return '¥' + group(Number(i)) + (f ? '.' + f : '');
  }

  /** True when fmtFenShort abbreviates (¥1万+ in zh, ¥1k+ in en). */
  function isBigFen(fen) { return Math.abs(fen) >= (L.lang() === 'zh' ? 1e6 : 1e5); }
  function trimZeros(s) { return s.includes('.') ? s.replace(/\.?0+$/, '') : s; }

  /** Microseconds -> milliseconds text with 2-3 significant digits ("0.31", "12.5", "1,234"). */
  function fmtMs(us) {
    if (us == null || !isFinite(us)) return '–';
    const ms = us / 1000;
    if (ms < 10) return ms.toFixed(2);
    if (ms < 100) return ms.toFixed(1);
    return group(Math.round(ms));
  }

  /** Seconds -> "12秒" / "3分05秒" (zh) or "12s" / "3m05s" (en). */
  const fmtDuration = (sec) => C.fmtDuration(t, sec);

  /** Payment timeout (s) -> "60秒" / "5分钟" / "1小时" (zh), "60 s" / "5 min" / "1 h" (en). */
  function fmtTimeout(sec) {
    if (sec < 60) return t('timeout_s', { n: sec });
    if (sec % 3600 === 0) return t('timeout_h', { n: sec / 3600 });
    if (sec % 60 === 0) return t('timeout_m', { n: sec / 60 });
    return fmtDuration(sec);
  }

  /** A 0–1 fraction -> "87.5%". */
  function fmtRate(x) { return (x * 100).toFixed(1) + '%'; }

  /** Short count for axes: "1.2万" / "3.4亿" (zh), "12k" / "1.2M" (en). */
  function fmtCountShort(n) {
    const a = Math.abs(n);
    if (L.lang() === 'zh') {
      if (a >= 1e8) return trimZeros((n / 1e8).toFixed(1)) + '亿';
      if (a >= 1e4) return trimZeros((n / 1e4).toFixed(1)) + '万';
    } else {
      if (a >= 1e6) return trimZeros((n / 1e6).toFixed(1)) + 'M';
      if (a >= 1e3) return trimZeros((n / 1e3).toFixed(1)) + 'k';
    }
    return group(n);
  }

  /** Watch time in seconds -> "4:05", or "1:02:05" from an hour up. */
  function fmtWatch(sec) {
    const s = Math.max(0, Math.round(sec));
    const mm = Math.floor((s % 3600) / 60);
    const ss = String(s % 60).padStart(2, '0');
    return s < 3600 ? `${mm}:${ss}` : `${Math.floor(s / 3600)}:${String(mm).padStart(2, '0')}:${ss}`;
  }

  // ------------------------------------------------------------- helpers --

  /**
   * A snapshot field as a finite number, or null when it is absent: a server older than v2
   * (docs/protocol.md, "Orders that must be paid") sends none of the payment fields.
   */
  function numOrNull(x) { return typeof x === 'number' && isFinite(x) ? x : null; }

  /**
   * Paid GMV (成交额) of a snapshot. A server older than v2 has no `paid_gmv_fen`: there every
   * order is paid when placed, so its `gmv_fen` is the paid GMV.
   */
  function paidGmvFen(s) { return numOrNull(s.paid_gmv_fen) ?? numOrNull(s.gmv_fen) ?? 0; }

  /** Sets a money figure: exact text and data-value-fen; null (not reported) shows "—". */
  function setFen(el, fen) {
    el.dataset.valueFen = fen == null ? '' : String(fen);
    el.classList.toggle('none', fen == null);
    setText(el, fen == null ? '—' : fmtFen(fen));
  }

  /** A count as grouped text, or "—" when it is not reported. */
  function groupOrNone(n) { return numOrNull(n) == null ? '—' : group(n); }
  /** Money as exact text, or "—" when it is not reported. */
  function fenOrNone(fen) { return numOrNull(fen) == null ? '—' : fmtFen(fen); }

  /** Sets a counter card: exact grouped integer text and data-value="<integer>". */
  function setCount(el, n) {
    el.dataset.value = String(n);
    setText(el, group(n));
  }

  /** Like setCount; null (a server without the field) shows "—" and an empty data-value. */
  function setCountOrNone(el, n) {
    if (n == null) {
      el.dataset.value = '';
      setText(el, '—');
    } else {
      setCount(el, n);
    }
  }

  // --------------------------------------------------------------- state --

  const { room, token } = C.pageParams();

  /** Latest snapshot, or null before the first one. */
  let last = null;
  /**
   * Trend points by t_ms: {t_ms, gmv_fen, paid_gmv_fen, orders, online}; replaced by the first
   * snapshot of each connection. A later snapshot re-sends a point that changed (a payment or a
   * refund counted in an earlier second), so points are replaced by t_ms, never added up.
   * `online` (the audience online then) is null from a server without audience figures.
   */
  const trend = new Map();
  let trendInterval = 1000;
  /** The server's clock, from the snapshots' ts_ms. */
  const clock = C.serverClock();

  /** In a replay, the replayed moment: the latest synthetic snapshot's ts_ms. */
  let replayNow = null;

  /**
   * Estimated server "now" in ms: the client clock corrected by the smallest observed offset;
   * in a replay, the replayed moment.
   */
  function serverNow() { return replayNow ?? clock.now(); }

  // -------------------------------------------------------- GMV counter --

  /**
   * Animated counter of the headline, the paid GMV. setGmv(fen) stores the exact value in
   * data-value-fen at once, then tweens the visible text from what is shown now; the last
   * frame always shows exactly fmtFen(fen). Decreases, hidden tabs and reduced-motion users
   * jump directly.
   */
  const gmv = { el: null, shown: 0, from: 0, to: 0, start: 0, dur: 700, raf: 0 };
  const reducedMotion = window.matchMedia && window.matchMedia('(prefers-reduced-motion: reduce)').matches;

  function drawGmv() {
    const text = fmtFen(gmv.shown);
    if (gmv.el.textContent === text) return;
    const refit = text.length !== gmv.el.textContent.length;
    gmv.el.textContent = text;
    if (refit) fitText(gmv.el);
  }

  function setGmv(fen, instant) {
    gmv.el.dataset.valueFen = String(fen);
    if (fen === gmv.to && (gmv.raf || gmv.shown === fen)) return;
    gmv.to = fen;
    if (instant || reducedMotion || document.hidden || fen < gmv.shown) {
      finishGmv();
      return;
    }
    gmv.from = gmv.shown;
    gmv.start = performance.now();
    gmv.el.classList.add('bump');
    if (!gmv.raf) gmv.raf = requestAnimationFrame(stepGmv);
  }

  function stepGmv(now) {
    const p = Math.min(1, (now - gmv.start) / gmv.dur);
    const eased = 1 - Math.pow(1 - p, 3);
    gmv.shown = p >= 1 ? gmv.to : Math.round(gmv.from + (gmv.to - gmv.from) * eased);
    drawGmv();
    if (p < 1) gmv.raf = requestAnimationFrame(stepGmv);
    else finishGmv();
  }

  /** Ends any tween and shows the exact target value. */
  function finishGmv() {
    if (gmv.raf) cancelAnimationFrame(gmv.raf);
    gmv.raf = 0;
    gmv.shown = gmv.to;
    drawGmv();
    gmv.el.classList.remove('bump');
  }

  // ------------------------------------------------------------ snapshot --

  /**
   * Applies one snapshot frame. `first` is true for the first frame of a connection,
   * whose trend is the whole history and so replaces what we had.
   */
  function applySnapshot(s, first) {
    if (REPLAY) replayNow = s.ts_ms;
    else clock.sample(s.ts_ms);

    const tr = s.trend || {};
    if (first) trend.clear();
    if (tr.interval_ms > 0) trendInterval = tr.interval_ms;
    for (const p of tr.points || []) {
      if (!p || typeof p.t_ms !== 'number') continue;
      const placed = numOrNull(p.gmv_fen) ?? 0;
      // Before v2 every order was paid when placed: its second's paid GMV is its GMV.
      const paid = numOrNull(p.paid_gmv_fen) ?? placed;
      trend.set(p.t_ms, {
        t_ms: p.t_ms, gmv_fen: placed, paid_gmv_fen: paid, orders: numOrNull(p.orders) ?? 0, online: numOrNull(p.online),
      });
    }
    chartDirty = true;
    audienceDirty = true;

    setGmv(paidGmvFen(s), first && last === null);
    last = s;
    renderSnapshot(s);
    renderAge();
    scheduleChart();
  }

  /** Renders every figure of a snapshot except the paid GMV counter and the chart. */
  function renderSnapshot(s) {
    setText($('room-name'), s.room || room);
    const paid = paidGmvFen(s);
    const big = isBigFen(paid);
    setText($('gmv-compact'), big ? '≈ ' + fmtFenShort(paid) : '');
    $('gmv-compact').hidden = !big;
    $('gmv-sep').hidden = !big;
    setText($('gmv-60s'), '+' + fmtFen(sumRecent(60000)));

    setCount($('orders'), s.orders || 0);
    // A figure a replay cannot know at its moment is left out of its snapshot and shows "—";
    // the live feed always sends them.
    setCountOrNone($('units'), numOrNull(s.units));
    setCountOrNone($('buyers'), numOrNull(s.buyers));
    setCountOrNone($('viewers'), numOrNull(s.viewers));
    setText($('peak-viewers'), groupOrNone(s.peak_viewers));
    setText($('unique-viewers'), groupOrNone(s.unique_viewers));
    setText($('aov'), fenOrNone(s.aov_fen));
    setText($('conversion'), numOrNull(s.conversion) == null ? '—' : (s.conversion * 100).toFixed(2) + '%');
    setText($('gpm'), fenOrNone(s.gpm_fen));
    renderPayments(s);

    renderLatency(s.latency_us || {});
    renderRejections(s.rejected || {});
    renderAudience(s.audience);
    renderFunnelFigures(s.funnel);
    renderSources(s.audience && s.audience.sources);
    renderSkus(s.skus || []);
    renderReferrers(s.top_referrers || []);
    renderControls(s.skus || []);
  }

  /**
   * The figures beside the headline: placed GMV, awaiting payment, expired and cancelled,
   * refunded, late payments and the pay rate. Those a pre-v2 server does not send show "—".
   */
  function renderPayments(s) {
    setFen($('gmv'), numOrNull(s.gmv_fen) ?? 0);
    setFen($('unpaid'), numOrNull(s.unpaid_fen));
    const expired = numOrNull(s.expired_fen);
    const cancelled = numOrNull(s.cancelled_fen);
    const ended = $('expired-cancelled');
    const reported = expired != null || cancelled != null;
    setFen(ended, reported ? (expired ?? 0) + (cancelled ?? 0) : null);
    ended.title = reported ? t('expired_cancelled_title', { e: fmtFen(expired ?? 0), c: fmtFen(cancelled ?? 0) }) : '';
    setFen($('refunded'), numOrNull(s.refunded_fen));

    const late = numOrNull(s.late_payments);
    const lateEl = $('late-payments');
    lateEl.dataset.value = late == null ? '' : String(late);
    setText(lateEl, late == null ? '—' : group(late));
    lateEl.classList.toggle('warn', late > 0);

    // The server sends 0 while no order has been paid, expired or cancelled: nothing to rate yet.
    const rate = numOrNull(s.pay_rate);
    const rateEl = $('pay-rate');
    const settled = rate > 0 || numOrNull(s.expired_fen) > 0 || numOrNull(s.cancelled_fen) > 0;
    rateEl.dataset.value = rate == null ? '' : String(rate);
    rateEl.classList.toggle('none', !(rate != null && settled));
    setText(rateEl, rate != null && settled ? fmtRate(rate) : '—');
  }

  /** Paid GMV (fen) of the trend buckets that started within the last `ms` of server time. */
  function sumRecent(ms) {
    const since = serverNow() - ms;
    let sum = 0;
    for (const p of trend.values()) if (p.t_ms >= since) sum += p.paid_gmv_fen;
    return sum;
  }

  function renderLatency(l) {
    for (const k of ['p50', 'p90', 'p99', 'p999', 'max']) {
      const el = $('lat-' + k);
      setText(el, fmtMs(l[k]));
      const ms = (l[k] || 0) / 1000;
      el.className = 'v ' + (ms < 5 ? 'good' : ms < 50 ? 'fair' : 'bad');
    }
  }

  function renderRejections(rej) {
    const entries = Object.entries(rej).filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]);
    const total = Object.values(rej).reduce((a, n) => a + (Number(n) || 0), 0);
    setCount($('rejected-total'), total);
    const max = entries.length ? entries[0][1] : 1;
    const ul = $('rejections');
    ul.replaceChildren(...entries.map(([code, n]) => {
      const fill = h('span', { class: 'fill' });
      fill.style.width = (100 * n / max).toFixed(1) + '%';
      return h('li', { 'data-code': code },
        h('span', { class: 'name' }, rejName(code)),
        h('span', { class: 'bar' }, fill),
        h('span', { class: 'count' }, group(n)));
    }));
    $('rejections-empty').hidden = entries.length > 0;
  }

  function renderReferrers(refs) {
    const ol = $('referrers');
    ol.replaceChildren(...refs.slice(0, 10).map((r, i) => h('li', { 'data-ref': r.ref },
      h('span', { class: 'rank' + (i < 3 ? ' top' : '') }, String(i + 1)),
      h('span', { class: 'ref' }, r.ref),
      h('span', { class: 'orders' }, group(r.orders || 0) + ' ' + t('ref_orders')),
      h('span', { class: 'gmv' }, fmtFen(r.gmv_fen || 0)),
      // Shown instead of the exact amount when the card is narrow (style.css).
      h('span', { class: 'gmv short' }, fmtFenShort(r.gmv_fen || 0)))));
    $('referrers-empty').hidden = refs.length > 0;
  }

  // ------------------------------------------------------------ audience --

  /** The steps of the funnel, in order: snapshot field and label key. */
  const FUNNEL_STEPS = [
    ['entered', 'step_entered'], ['clicked', 'step_clicked'], ['ordered', 'step_ordered'], ['paid', 'step_paid'],
  ];

  /**
   * The audience card's figures: online now, peak, unique, average watch time and the
   * interaction counters. A server without audience figures leaves them all "—".
   */
  function renderAudience(a) {
    const aud = a && typeof a === 'object' ? a : {};
    setCountOrNone($('aud-online'), numOrNull(aud.online));
    setCountOrNone($('aud-peak'), numOrNull(aud.peak));
    setCountOrNone($('aud-unique'), numOrNull(aud.unique));
    for (const k of ['likes', 'comments', 'shares', 'follows']) setCountOrNone($('aud-' + k), numOrNull(aud[k]));
    const watch = numOrNull(aud.avg_watch_s);
    const w = $('aud-watch');
    w.dataset.value = watch == null ? '' : String(watch);
    setText(w, watch == null ? '—' : fmtWatch(watch));
  }

  /**
   * The funnel's figures as data attributes of its chart (for tests and scripts) and the overall
   * rate, entered to paid; the chart itself is drawn with the others.
   */
  function renderFunnelFigures(f) {
    const el = $('funnel-chart');
    const ok = f && typeof f === 'object' && FUNNEL_STEPS.some(([k]) => numOrNull(f[k]) != null);
    for (const [k] of FUNNEL_STEPS) el.dataset[k] = ok ? String(numOrNull(f[k]) ?? 0) : '';
    $('funnel-empty').hidden = !!ok;
    el.hidden = !ok;
    const entered = ok ? numOrNull(f.entered) ?? 0 : 0;
    const overall = $('funnel-overall');
    overall.dataset.value = entered > 0 ? String((numOrNull(f.paid) ?? 0) / entered) : '';
    setText(overall, entered > 0 ? fmtRate((numOrNull(f.paid) ?? 0) / entered) : '—');
    audienceDirty = true;
  }

  /** Traffic sources: unique viewers per source id, most first, as bars with their share. */
  function renderSources(sources) {
    const entries = Object.entries(sources && typeof sources === 'object' ? sources : {})
      .filter(([, n]) => numOrNull(n) > 0).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
    const total = entries.reduce((a, [, n]) => a + n, 0);
    const max = entries.length ? entries[0][1] : 1;
    // Each row's background is its bar, so the narrow column keeps room for the figures.
    $('sources').replaceChildren(...entries.map(([id, n]) => {
      const fill = h('span', { class: 'fill' });
      fill.style.width = (100 * n / max).toFixed(1) + '%';
      return h('li', { 'data-source': id, 'data-value': String(n) }, fill,
        h('span', { class: 'name' }, srcName(id)),
        h('span', { class: 'count' }, group(n)),
        h('span', { class: 'share' }, fmtRate(n / total)));
    }));
    $('sources-empty').hidden = entries.length > 0;
  }

  // ----------------------------------------------------------- SKU table --

  /** sku id -> {tr, cells..., state}: rows are updated in place, never rebuilt. */
  const skuRows = new Map();

  function makeSkuRow(sku) {
    const fill = h('span', { class: 'fill' });
    const held = h('span', { class: 'fill held' });
    const r = {
      tr: h('tr', { 'data-sku': sku }),
      name: h('span', { class: 'sku-name' }),
      id: h('span', { class: 'sku-id' }),
      payWithin: h('span', { class: 'tag pay-within', 'data-testid': 'sku-pay-timeout', hidden: '' }),
      limit: h('span', { class: 'tag limit', 'data-testid': 'sku-limit', hidden: '' }),
      price: h('span', { class: 'price num-cell', 'data-testid': 'sku-price' }),
      badge: h('span', { class: 'badge', 'data-testid': 'sku-state' }),
      fill,
      held,
      stockText: h('span', { class: 'stock-text' }),
      unpaid: h('span', { class: 'unpaid-note', 'data-testid': 'sku-unpaid', hidden: '' }),
      unpaidN: h('span'),
      unpaidSep: h('span', { class: 'sep' }),
      unpaidBack: h('span'),
      sold: h('td', { class: 'r num-cell big', 'data-testid': 'sku-sold' }),
      paid: h('td', { class: 'r num-cell big paid', 'data-testid': 'sku-paid' }),
      left: h('span', { class: 'big', 'data-testid': 'sku-left' }),
      gmv: h('td', { class: 'r num-cell', 'data-testid': 'sku-gmv' }),
      clicks: h('td', { class: 'r num-cell clicks', 'data-testid': 'sku-clicks' }),
      ctoRate: h('span', { class: 'cto' }),
      ctoClicks: h('span', { class: 'cto-clicks' }),
      eta: h('td', { class: 'eta', 'data-testid': 'sku-eta' }),
      state: null,
    };
    // "12 待支付 · 过期将回库": two unbreakable halves, so a narrow column breaks between them.
    r.unpaid.append(r.unpaidN, r.unpaidSep, r.unpaidBack);
    r.clicks.append(r.ctoRate, r.ctoClicks);
    // Under the name: the price, then the per-user limit and the payment timeout as tags when set.
    r.tr.append(
      h('td', { class: 'product' }, r.name, r.id, h('span', { class: 'tags' }, r.price, r.limit, r.payWithin)),
      h('td', null, r.badge),
      h('td', { class: 'stock-col' }, h('span', { class: 'stockbar' }, fill, held), r.unpaid),
      // Units left, over "/ total": the bar beside it then gets its whole column.
      r.sold, r.paid, h('td', { class: 'r num-cell left' }, r.left, r.stockText), r.gmv, r.clicks, r.eta);
    return r;
  }

  /** Text of the "sold out / ETA" cell for one SKU. */
  function skuEtaText(k) {
    if (k.state === 'sold_out' || k.sold_out_at_ms != null) {
      return k.sold_out_at_ms != null ? t('sold_out_at', { t: fmtClock(k.sold_out_at_ms) }) : '—';
    }
    if (k.state === 'scheduled' && k.opens_at_ms != null) return t('opens_at', { t: fmtClock(k.opens_at_ms) });
    if (k.state === 'open' && k.eta_sold_out_s != null && isFinite(k.eta_sold_out_s)) {
      return t('eta', { d: fmtDuration(k.eta_sold_out_s) });
    }
    if (k.state === 'open' && k.closes_at_ms != null) return t('closes_at', { t: fmtClock(k.closes_at_ms) });
    return '—';
  }

  function renderSkus(skus) {
    const body = $('sku-body');
    const seen = new Set();
    let i = 0;
    for (const k of skus) {
      seen.add(k.sku);
      let r = skuRows.get(k.sku);
      if (!r) { r = makeSkuRow(k.sku); skuRows.set(k.sku, r); }
      if (body.children[i] !== r.tr) body.insertBefore(r.tr, body.children[i] || null);
      i++;

      setText(r.name, k.name || k.sku);
      r.name.title = k.name || k.sku; // a long name is cut with an ellipsis
      setText(r.id, k.sku);
      setText(r.price, numOrNull(k.price_fen) == null ? '' : fmtFen(k.price_fen));
      if (r.state && r.state !== 'sold_out' && k.state === 'sold_out') flash(r.tr);
      r.state = k.state;
      r.tr.dataset.state = k.state;
      r.badge.className = 'badge state-' + k.state;
      setText(r.badge, t('state_' + k.state));

      // A replay knows no stock: its SKUs have no stock_total and no left.
      const total = numOrNull(k.stock_total) ?? 0;
      const left = numOrNull(k.left);
      const frac = total > 0 ? Math.max(0, Math.min(1, (left ?? 0) / total)) : 0;
      r.fill.style.width = (frac * 100).toFixed(1) + '%';
      r.fill.className = 'fill ' + (frac > 0.5 ? 'hi' : frac > 0.2 ? 'mid' : 'lo');
      setText(r.stockText, numOrNull(k.stock_total) == null ? '' : '/ ' + group(total));

      // Units held by unpaid orders: drawn after `left` on the bar, as they come back to it
      // if their orders expire or are cancelled.
      const unpaid = numOrNull(k.unpaid) ?? 0;
      r.held.style.width = (total > 0 ? Math.max(0, Math.min(1 - frac, unpaid / total)) * 100 : 0).toFixed(1) + '%';
      r.unpaid.dataset.value = String(unpaid);
      r.unpaid.hidden = !(unpaid > 0);
      setText(r.unpaidN, t('sku_unpaid', { n: group(unpaid) }));
      setText(r.unpaidSep, L.lang() === 'zh' ? ' · ' : ' ');
      setText(r.unpaidBack, t('sku_unpaid_back'));
      const timeout = numOrNull(k.pay_timeout_s);
      r.payWithin.dataset.value = timeout == null ? '' : String(timeout);
      r.payWithin.hidden = !(timeout > 0);
      setText(r.payWithin, timeout > 0 ? t('pay_within', { d: fmtTimeout(timeout) }) : '');

      // A replay leaves out the figures of a SKU it cannot know at its moment: "—".
      const sold = numOrNull(k.sold);
      r.sold.dataset.value = sold == null ? '' : String(sold);
      setText(r.sold, groupOrNone(sold));
      // Before v2 every order was paid when placed: paid units are the units sold.
      const paid = numOrNull(k.paid) ?? sold;
      r.paid.dataset.value = paid == null ? '' : String(paid);
      setText(r.paid, groupOrNone(paid));
      r.left.dataset.value = left == null ? '' : String(left);
      setText(r.left, groupOrNone(left));
      r.gmv.dataset.valueFen = numOrNull(k.gmv_fen) == null ? '' : String(k.gmv_fen);
      setText(r.gmv, fenOrNone(k.gmv_fen));
      renderSkuClicks(r, k);
      const limit = numOrNull(k.limit_per_user);
      r.limit.hidden = limit == null;
      setText(r.limit, limit == null ? '' : t('limit_n', { n: limit }));
      setText(r.eta, skuEtaText(k));
      r.eta.classList.toggle('soon', k.state === 'open' && k.eta_sold_out_s != null && k.eta_sold_out_s < 30);
    }
    for (const [sku, r] of skuRows) if (!seen.has(sku)) { r.tr.remove(); skuRows.delete(sku); }
    $('skus-empty').hidden = skus.length > 0;
  }

  /**
   * The click-to-order cell: the rate (orders of the SKU per click on its card) over the click
   * count. "—" for a server without click figures, and for the rate while nobody has clicked.
   */
  function renderSkuClicks(r, k) {
    const clicks = numOrNull(k.clicks);
    const rate = numOrNull(k.click_to_order);
    r.clicks.dataset.clicks = clicks == null ? '' : String(clicks);
    r.clicks.dataset.value = rate == null ? '' : String(rate);
    setText(r.ctoRate, clicks > 0 && rate != null ? fmtRate(rate) : '—');
    r.ctoClicks.hidden = clicks == null;
    setText(r.ctoClicks, clicks == null ? '' : t('sku_clicks', { n: group(clicks) }));
  }

  /** Briefly highlights a row (a SKU just sold out). */
  function flash(el) {
    el.classList.remove('flash');
    void el.offsetWidth; // restart the CSS animation
    el.classList.add('flash');
    setTimeout(() => el.classList.remove('flash'), 4000);
  }

  // -------------------------------------------------------------- charts --

  let chart = null;
  let chartDirty = false;
  /** The funnel and the interactions chart need a redraw (new snapshot or language). */
  let audienceDirty = false;
  let funnelChart = null;
  let interactChart = null;
  let chartTimer = 0;
  let chartLastDraw = 0;
  const CHART_MIN_GAP_MS = 300; // at most ~3 redraws a second, whatever the push rate

  const AXIS_TEXT = { color: '#8a97b8', fontSize: 14 };
  const SPLIT = { lineStyle: { color: 'rgba(138,151,184,0.12)' } };
  const TOOLTIP = { backgroundColor: 'rgba(12,18,32,0.95)', borderColor: '#2a3656', textStyle: { color: '#e8edf8' } };
  const ONLINE_COLOR = '#4ea8ff';

  /** Redraws the charts soon (throttled); the data is in `trend` and `last`. */
  function scheduleChart() {
    if (chartTimer) return;
    const wait = Math.max(0, CHART_MIN_GAP_MS - (performance.now() - chartLastDraw));
    chartTimer = setTimeout(() => {
      chartTimer = 0;
      renderChart();
      renderAudienceCharts();
    }, wait);
  }

  /** An ECharts instance on `el`, made on first use and resized with its box. */
  function chartOn(el) {
    const c = window.echarts.init(el, null, { renderer: 'canvas' });
    new ResizeObserver(() => c.resize()).observe(el);
    return c;
  }

  /**
   * Draws from `trend`, sorted by t_ms: the running totals of paid and placed GMV (lines, left
   * axis; paid bright, placed muted), the audience online (blue line, right axis, when the server
   * reports it), and per-interval paid and placed GMV (bars, the paid bar over the placed one).
   * The bars have their own unlabelled axis scaled to the lower half of the plot, so they show
   * the sale's pace without hiding the lines; the tooltip gives their amounts.
   * Sets data-points on the container to the number of points.
   * Series ids (for tests): paid-per-interval, placed-per-interval, paid-cum, placed-cum, online.
   */
  function renderChart() {
    const el = $('trend-chart');
    if (!chartDirty || !el) return;
    chartDirty = false;
    chartLastDraw = performance.now();
    const pts = [...trend.values()].sort((a, b) => a.t_ms - b.t_ms);
    el.dataset.points = String(pts.length);
    if (!window.echarts) return; // vendor script missing: figures still work
    if (!chart) chart = chartOn(el);
    let cum = 0;
    let paidCum = 0;
    const bars = [];
    const paidBars = [];
    const line = [];
    const paidLine = [];
    const online = [];
    for (const p of pts) {
      cum += p.gmv_fen;
      paidCum += p.paid_gmv_fen;
      bars.push([p.t_ms, p.gmv_fen, p.orders]);
      paidBars.push([p.t_ms, p.paid_gmv_fen]);
      line.push([p.t_ms, cum]);
      paidLine.push([p.t_ms, paidCum]);
      if (p.online != null) online.push([p.t_ms, p.online]);
    }
    const hasOnline = online.length > 0;
    const lastT = pts.length ? pts[pts.length - 1].t_ms : serverNow();
    const firstT = pts.length ? pts[0].t_ms : lastT;
    const perMin = trendInterval >= 60000; // a replay's points are the review's minutes
    const names = {
      'paid-per-interval': t(perMin ? 'series_paid_per_min' : 'series_paid_per_sec'),
      'placed-per-interval': t(perMin ? 'series_per_min' : 'series_per_sec'),
      'paid-cum': t('series_paid_cum'), 'placed-cum': t('series_cum'), online: t('series_online'),
    };
    // The muted per-interval bars of placed GMV need no legend entry: they sit behind the paid ones.
    const legend = [names['paid-cum'], names['placed-cum'], names['paid-per-interval']];
    if (hasOnline) legend.push(names.online);
    chart.setOption({
      animation: false,
      backgroundColor: 'transparent',
      grid: { left: 8, right: 8, top: 36, bottom: 8, containLabel: true },
      legend: {
        top: 0, right: 0, textStyle: { color: '#c8d1ea', fontSize: 14 }, itemWidth: 16, itemHeight: 10, itemGap: 10,
        data: legend,
      },
      tooltip: {
        trigger: 'axis', ...TOOLTIP,
        formatter: (items) => {
          const by = (id) => items.find((x) => x.seriesId === id);
          const shown = items.find((x) => x.data);
          if (!shown) return '';
          const lines = [fmtClock(shown.data[0])];
          for (const id of ['paid-per-interval', 'placed-per-interval', 'paid-cum', 'placed-cum']) {
            const x = by(id);
            if (!x) continue;
            const orders = id === 'placed-per-interval' ? ` (${x.data[2]} ${t('tooltip_orders')})` : '';
            lines.push(`${names[id]}: ${fmtFen(x.data[1])}${orders}`);
          }
          const o = by('online');
          if (o) lines.push(`${names.online}: ${group(o.data[1])}`);
          return lines.map(C.escapeHtml).join('<br>');
        },
      },
      xAxis: {
        type: 'time',
        min: Math.min(firstT, lastT - 59 * trendInterval) - trendInterval / 2,
        max: lastT + trendInterval / 2,
        axisLabel: { ...AXIS_TEXT, formatter: (v) => fmtClock(v), hideOverlap: true },
        axisLine: { lineStyle: { color: '#2a3656' } },
        splitLine: { show: false },
      },
      yAxis: [
        // Ticks at whole yuan and whole viewers, also while every value is still 0.
        { type: 'value', axisLabel: { ...AXIS_TEXT, formatter: fmtFenShort }, splitLine: SPLIT, min: 0, minInterval: 100, splitNumber: 4 },
        { type: 'value', show: false, min: 0, max: (v) => Math.max(1, v.max * 2) },
        {
          type: 'value', show: hasOnline, position: 'right', min: 0, minInterval: 1, splitLine: { show: false },
          axisLabel: { ...AXIS_TEXT, color: ONLINE_COLOR, formatter: fmtCountShort },
        },
      ],
      series: [
        {
          // Placed first, so the paid bar of the same second is drawn over it (barGap -100%).
          id: 'placed-per-interval', name: names['placed-per-interval'], type: 'bar', yAxisIndex: 1,
          data: bars, barMaxWidth: 18, large: bars.length > 2000,
          itemStyle: { color: 'rgba(138,151,184,0.45)', borderRadius: [3, 3, 0, 0] },
          encode: { x: 0, y: 1 },
        },
        {
          id: 'paid-per-interval', name: names['paid-per-interval'], type: 'bar', yAxisIndex: 1,
          data: paidBars, barMaxWidth: 18, barGap: '-100%', large: paidBars.length > 2000,
          itemStyle: { color: '#ff7a45', borderRadius: [3, 3, 0, 0] },
          encode: { x: 0, y: 1 },
        },
        {
          id: 'placed-cum', name: names['placed-cum'], type: 'line', yAxisIndex: 0, data: line,
          showSymbol: false, smooth: false, sampling: 'lttb', step: false,
          lineStyle: { color: '#c8d1ea', width: 2, type: 'dashed', opacity: 0.8 },
          itemStyle: { color: '#c8d1ea' },
          encode: { x: 0, y: 1 },
        },
        {
          id: 'paid-cum', name: names['paid-cum'], type: 'line', yAxisIndex: 0, data: paidLine,
          showSymbol: false, smooth: false, sampling: 'lttb', step: false,
          lineStyle: { color: '#ffd23f', width: 4 },
          itemStyle: { color: '#ffd23f' },
          areaStyle: {
            color: new window.echarts.graphic.LinearGradient(0, 0, 0, 1, [
              { offset: 0, color: 'rgba(255,210,63,0.28)' }, { offset: 1, color: 'rgba(255,210,63,0)' },
            ]),
          },
          encode: { x: 0, y: 1 },
        },
        {
          id: 'online', name: names.online, type: 'line', yAxisIndex: 2, data: online,
          showSymbol: false, smooth: false, sampling: 'lttb',
          lineStyle: { color: ONLINE_COLOR, width: 3 },
          itemStyle: { color: ONLINE_COLOR },
          encode: { x: 0, y: 1 },
        },
      ],
    }, { lazyUpdate: true });
  }

  /** Draws the funnel and the interactions per minute from the latest snapshot. */
  function renderAudienceCharts() {
    if (!audienceDirty || !last || !window.echarts) return;
    audienceDirty = false;
    renderFunnel(last.funnel);
    renderInteractions(last.audience && last.audience.per_minute);
  }

  /**
   * The funnel: one layer a step, entered → clicked → ordered → paid. The steps of a real stream
   * differ by orders of magnitude, so the layers' widths are fixed and narrowing, not
   * proportional; each layer is labelled with its unique users, and a second, transparent funnel
   * of the same shape labels each step on the right with its rate from the step before.
   * The chart's data items carry `step` and `count` (for tests).
   */
  function renderFunnel(f) {
    const el = $('funnel-chart');
    if (el.hidden) return;
    if (!funnelChart) funnelChart = chartOn(el);
    const counts = FUNNEL_STEPS.map(([k]) => numOrNull(f[k]) ?? 0);
    const widths = [100, 75, 50, 25];
    const data = FUNNEL_STEPS.map(([k, label], i) => ({ name: t(label), value: widths[i], step: k, count: counts[i] }));
    const rate = (i) => (i > 0 && counts[i - 1] > 0 ? fmtRate(counts[i] / counts[i - 1]) : '');
    const colors = ['#4ea8ff', '#5b8cff', '#ff7a45', '#ffd23f'];
    const shape = { type: 'funnel', sort: 'none', min: 0, max: 100, minSize: '40%', maxSize: '100%', gap: 4,
      left: 0, right: '26%', top: 6, bottom: 6, funnelAlign: 'center' };
    funnelChart.setOption({
      animation: false,
      backgroundColor: 'transparent',
      series: [
        {
          ...shape, id: 'funnel', name: t('funnel'), data, silent: true,
          itemStyle: { borderWidth: 0, color: (p) => colors[p.dataIndex] },
          label: {
            position: 'inside', color: '#0b1020', fontSize: 14, fontWeight: 700,
            formatter: (p) => `${p.name} ${group(p.data.count)}`,
          },
        },
        {
          ...shape, id: 'funnel-rates', data: data.map((d, i) => ({ ...d, rate: rate(i) })), silent: true, z: 1,
          itemStyle: { color: 'transparent', borderWidth: 0 },
          label: { position: 'rightTop', color: '#c8d1ea', fontSize: 14, fontWeight: 700, formatter: (p) => (p.data.rate ? '↓ ' + p.data.rate : '') },
          labelLine: { show: false },
        },
      ],
    }, { lazyUpdate: true });
  }

  /**
   * Likes (bars, left axis), comments and shares (lines, right axis) per minute over the last
   * hour: sixty minute slots ending with the newest minute reported, a quiet minute (which the
   * server leaves out) at zero. The slots are a category axis: a bar series on a time axis with
   * few points makes ECharts widen the axis to fit the bars, which puts them at the wrong time.
   * The x axis data are the slots' t_ms. Sets data-points to the number of minutes reported.
   * Series ids (for tests): likes, comments, shares.
   */
  function renderInteractions(perMinute) {
    const el = $('interact-chart');
    const rows = (Array.isArray(perMinute) ? perMinute : []).filter((m) => m && typeof m.t_ms === 'number');
    el.dataset.points = String(rows.length);
    if (!interactChart) interactChart = chartOn(el);
    const now = serverNow();
    const lastT = rows.length ? rows[rows.length - 1].t_ms : now - (now % 60000);
    const slots = Array.from({ length: 60 }, (_, i) => lastT - (59 - i) * 60000);
    const byT = new Map(rows.map((m) => [m.t_ms, m]));
    const series = (k) => slots.map((ts) => numOrNull(byT.get(ts)?.[k]) ?? 0);
    const hm = (v) => fmtClock(Number(v)).slice(0, 5);
    const names = { likes: t('per_minute_likes'), comments: t('per_minute_comments'), shares: t('per_minute_shares') };
    const countAxis = { type: 'value', min: 0, minInterval: 1, splitNumber: 1, axisLabel: { ...AXIS_TEXT, fontSize: 12, formatter: fmtCountShort } };
    interactChart.setOption({
      animation: false,
      backgroundColor: 'transparent',
      // No legend: the counters above, in the series' colours, are the legend.
      grid: { left: 4, right: 4, top: 16, bottom: 2, containLabel: true },
      title: { text: t('per_minute'), left: 'center', top: 0, textStyle: { color: '#8a97b8', fontSize: 12, fontWeight: 'normal' } },
      tooltip: {
        trigger: 'axis', ...TOOLTIP,
        formatter: (items) => {
          if (!items.length) return '';
          return [hm(items[0].axisValue), ...items.map((x) => `${x.seriesName}: ${group(x.value)}`)].map(C.escapeHtml).join('<br>');
        },
      },
      xAxis: {
        type: 'category', data: slots, boundaryGap: true,
        axisTick: { show: false },
        // A label every ten minutes of the clock.
        axisLabel: { ...AXIS_TEXT, fontSize: 12, formatter: hm, interval: (i, v) => new Date(Number(v)).getMinutes() % 10 === 0 },
        axisLine: { lineStyle: { color: '#2a3656' } }, splitLine: { show: false },
      },
      yAxis: [{ ...countAxis, splitLine: SPLIT }, { ...countAxis, splitLine: { show: false } }],
      series: [
        { id: 'likes', name: names.likes, type: 'bar', yAxisIndex: 0, data: series('likes'), barMaxWidth: 10, barCategoryGap: '25%',
          itemStyle: { color: '#ff6b9a', borderRadius: [2, 2, 0, 0] } },
        { id: 'comments', name: names.comments, type: 'line', yAxisIndex: 1, data: series('comments'), showSymbol: false,
          lineStyle: { color: '#4ea8ff', width: 2 }, itemStyle: { color: '#4ea8ff' } },
        { id: 'shares', name: names.shares, type: 'line', yAxisIndex: 1, data: series('shares'), showSymbol: false,
          lineStyle: { color: '#3ddc97', width: 2 }, itemStyle: { color: '#3ddc97' } },
      ],
    }, { lazyUpdate: true });
  }

  // ---------------------------------------------------------- connection --

  /**
   * The dashboard socket. A refused one is asked about at the room's stats: 401 -> bad token,
   * 404 -> unknown room. The review page replays instead (conn.replay()).
   */
  const conn = C.connection({
    path: `/ws/dashboard?room=${encodeURIComponent(room)}&token=${encodeURIComponent(token)}`,
    op: 'snapshot',
    onFrame: applySnapshot,
    diagnosePath: `/api/rooms/${encodeURIComponent(room)}/stats`,
    token,
    problems: { 401: 'err_unauthorized', 404: 'err_not_found' },
    t,
  });

  // ------------------------------------------------- data age and ticker --

  /** Shows how old the displayed snapshot is, in server time; class "stale" past 3 s. */
  function renderAge() {
    C.renderAge({ last, now: serverNow(), t, title: (s) => `seq ${s.seq} · ts ${new Date(s.ts_ms).toISOString()}` });
  }

  /** Runs every 250 ms: age badge, clock, retry countdown, stall watchdog, stuck tween. */
  function tick() {
    renderAge();
    setText($('clock'), fmtClock(serverNow()));
    conn.tick();
    if (gmv.raf && performance.now() - gmv.start > gmv.dur + 1000) finishGmv(); // rAF throttled
    if (last) setText($('gmv-60s'), '+' + fmtFen(sumRecent(60000)));
  }

  // ------------------------------------------------------- host controls --

  /** Keeps the controls table in step with the SKU list, preserving typed restock amounts. */
  const ctlRows = new Map();

  function renderControls(skus) {
    const body = $('ctl-body');
    const seen = new Set();
    let i = 0;
    for (const k of skus) {
      seen.add(k.sku);
      let r = ctlRows.get(k.sku);
      if (!r) {
        r = {
          tr: h('tr', { 'data-sku': k.sku }),
          name: h('td', { class: 'product' }),
          badge: h('span', { class: 'badge' }),
          open: h('button', { type: 'button', class: 'btn ok', 'data-action': 'open', 'data-testid': 'ctl-open' }),
          close: h('button', { type: 'button', class: 'btn danger', 'data-action': 'close', 'data-testid': 'ctl-close' }),
          qty: h('input', { type: 'number', step: '1', inputmode: 'numeric', 'data-testid': 'ctl-delta' }),
          stock: h('button', { type: 'button', class: 'btn', 'data-action': 'stock', 'data-testid': 'ctl-stock' }),
        };
        r.tr.append(r.name, h('td', null, r.badge), h('td', null, r.open, r.close), h('td', { class: 'restock' }, r.qty, r.stock));
        ctlRows.set(k.sku, r);
      }
      if (body.children[i] !== r.tr) body.insertBefore(r.tr, body.children[i] || null);
      i++;
      setText(r.name, `${k.name || k.sku} (${k.sku})`);
      r.badge.className = 'badge small state-' + k.state;
      setText(r.badge, t('state_' + k.state));
      setText(r.open, t('btn_open'));
      setText(r.close, t('btn_close'));
      setText(r.stock, t('btn_restock'));
      r.qty.placeholder = t('restock_placeholder');
    }
    for (const [sku, r] of ctlRows) if (!seen.has(sku)) { r.tr.remove(); ctlRows.delete(sku); }
  }

  function showCtlMsg(text, ok) {
    const el = $('ctl-msg');
    el.textContent = `${fmtClock(Date.now())}  ${text}`;
    el.className = 'ctl-msg ' + (ok ? 'ok' : 'err');
  }

  /**
   * POSTs /api/rooms/{room}/skus/{sku}/{action} with the admin token. `body` (stock only)
   * is sent as JSON. Shows the outcome; on failure shows the error's `detail`.
   */
  async function hostAction(action, sku, button) {
    const adminToken = $('admin-token').value.trim();
    if (!adminToken) { showCtlMsg(t('need_admin_token'), false); $('admin-token').focus(); return; }
    const init = { method: 'POST', headers: { Authorization: 'Bearer ' + adminToken }, cache: 'no-store' };
    let delta = 0;
    if (action === 'stock') {
      const input = ctlRows.get(sku).qty;
      delta = Number(input.value);
      if (!Number.isInteger(delta) || delta === 0) { showCtlMsg(t('bad_delta'), false); input.focus(); return; }
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify({ delta });
    }
    button.disabled = true;
    try {
      const url = `/api/rooms/${encodeURIComponent(room)}/skus/${encodeURIComponent(sku)}/${action}`;
      const res = await fetch(url, init);
      const text = await res.text();
      let json = null;
      try { json = text ? JSON.parse(text) : null; } catch (_) { /* not JSON */ }
      if (!res.ok) {
        const detail = json && (json.detail || json.error) ? `${json.detail || ''}${json.error ? ` [${json.error}]` : ''}` : `HTTP ${res.status} ${res.statusText}`;
        showCtlMsg(`${t('failed', { sku })}: ${detail}`, false);
        return;
      }
      if (action === 'stock') {
        ctlRows.get(sku).qty.value = '';
        showCtlMsg(t('ok_stock', { sku, delta: (delta > 0 ? '+' : '') + delta, left: json && json.left != null ? group(json.left) : '?' }), true);
      } else {
        showCtlMsg(t(action === 'open' ? 'ok_open' : 'ok_close', { sku }), true);
      }
    } catch (e) {
      showCtlMsg(`${t('failed', { sku })}: ${e && e.message ? e.message : e}`, false);
    } finally {
      button.disabled = false;
    }
  }

  function initControls() {
    const input = $('admin-token');
    input.value = storageGet('sessionStorage', ADMIN_KEY) || '';
    input.addEventListener('input', () => storageSet('sessionStorage', ADMIN_KEY, input.value.trim()));
    $('ctl-body').addEventListener('click', (ev) => {
      const b = ev.target.closest('button[data-action]');
      if (!b) return;
      hostAction(b.dataset.action, b.closest('tr').dataset.sku, b);
    });
    $('ctl-body').addEventListener('keydown', (ev) => {
      if (ev.key !== 'Enter' || ev.target.tagName !== 'INPUT') return;
      const b = ev.target.closest('tr').querySelector('button[data-action=stock]');
      hostAction('stock', ev.target.closest('tr').dataset.sku, b);
    });
  }

  // ---------------------------------------------------------------- boot --

  function boot() {
    L.bindToggles(applyLang);
    if (REPLAY) return; // the review page mounts the dashboard when its markup is in place
    if (!room || !token) {
      $('setup').hidden = false;
      $('setup-room').value = room;
      $('setup-token').value = token;
      applyLang();
      (room ? $('setup-token') : $('setup-room')).focus();
      return;
    }
    $('dashboard').hidden = false;
    gmv.el = $('paid-gmv');
    setText($('room-name'), room);
    $('review-link').href = `/review?room=${encodeURIComponent(room)}&token=${encodeURIComponent(token)}`;
    initControls();
    applyLang();
    conn.start(finishGmv);
    setInterval(tick, 250);
    tick();
    window.addEventListener('resize', C.fitAll);
  }

  /**
   * The review page's handle on this rendering (only there): mount() once the dashboard's
   * markup is in the page, then apply(snapshot, first) for each replayed moment; `first`
   * replaces the trend with the snapshot's. Also the language and the formatters, so the
   * review page speaks and writes figures as the dashboard does.
   */
  function mountReplay() {
    $('dashboard').hidden = false;
    gmv.el = $('paid-gmv');
    setText($('room-name'), room);
    conn.replay();
    applyLang();
    setInterval(tick, 250);
    tick();
    window.addEventListener('resize', C.fitAll);
  }

  if (REPLAY) {
    window.livehubDashboard = {
      mount: mountReplay,
      apply: (s, first) => applySnapshot(s, first),
      /** Adds the review page's own strings: {zh: {...}, en: {...}}. */
      addStrings: (more) => { for (const l of Object.keys(I18N)) Object.assign(I18N[l], more[l] || {}); },
      onLang: (f) => langListeners.push(f),
      applyLang,
      t, lang: L.lang, rejName, srcName,
      fmt: { group, fen: fmtFen, fenShort: fmtFenShort, clock: fmtClock, duration: fmtDuration, rate: fmtRate, countShort: fmtCountShort },
    };
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();
