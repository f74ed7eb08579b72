// livehub review page (直播复盘): the report of a stream, and its replay.
//
// Plain ES2020, no build step. Loaded with `defer` after vendor/echarts.min.js, common.js and
// app.js.
// Contract: GET /api/rooms/{room}/review (viewer token; docs/protocol.md, "Overview and
// review"), and ?format=csv for its per-minute series.
//
// The replay plays the stream back through the dashboard's own rendering (app.js, through
// window.livehubDashboard): the dashboard's markup is fetched from / and inserted below the
// report, and each replayed moment is a synthetic snapshot built from the review's minutes up
// to that moment. Within a minute the figures grow evenly (the review's finest grain is the
// minute); what the minutes cannot tell (per-SKU sales, the funnel, sharers, refusals) is
// left out of the snapshot, so the dashboard shows "—", until the replay's end, whose snapshot
// carries the review's totals.
//
// Everything the server sends is rendered with textContent (never innerHTML).
'use strict';

(() => {
  const D = window.livehubDashboard;
  if (!D) return; // app.js did not load: nothing can be drawn
  const { t, fmt } = D;

  D.addStrings({
    zh: {
      rv_title: '直播复盘',
      rv_setup_hint: '输入直播间和观看令牌以打开复盘。',
      rv_open: '打开复盘',
      rv_open_dashboard: '打开大屏',
      rv_csv: '下载每分钟 CSV',
      rv_peak_minute: '峰值分钟',
      rv_sales_per_minute: '每分钟成交',
      rv_audience_per_minute: '每分钟在线与点击',
      rv_col_sold_out: '售罄时间',
      rv_col_clicks: '点击',
      rv_col_cto: '点击转化',
      rv_payments: '支付结果',
      rv_pay_paid: '已支付',
      rv_pay_expired: '已过期',
      rv_pay_cancelled: '已取消',
      rv_pay_refunded: '已退款',
      rv_pay_late: '迟到支付',
      rv_unit_orders: '单',
      rv_replay: '回放',
      rv_play: '播放',
      rv_pause: '暂停',
      rv_again: '重播',
      rv_speed: '速度',
      rv_replay_hint: '回放按分钟数据重现大屏：金额、订单和在线人数随时间增长；商品、漏斗、分享和拒单在回放结束时给出全场数字。',
      rv_series_gmv: '下单金额',
      rv_series_paid: '成交额',
      rv_series_orders: '订单',
      rv_series_online: '直播间在线',
      rv_series_clicks: '商品点击',
      rv_rejected_total: '共 {n} 次',
      rv_loading: '加载中…',
      rv_err_unauthorized: '令牌无效',
      rv_err_not_found: '直播间不存在',
      rv_err_unreachable: '无法连接服务器',
      rv_err_other: '复盘加载失败：{e}',
      rv_empty: '这场直播还没有任何活动。',
      rv_range: '{from} – {to} · {d}',
    },
    en: {
      rv_title: 'Stream review',
      rv_setup_hint: 'Enter the room and the viewer token to open its review.',
      rv_open: 'Open review',
      rv_open_dashboard: 'Dashboard',
      rv_csv: 'Per-minute CSV',
      rv_peak_minute: 'Peak minute',
      rv_sales_per_minute: 'Sales per minute',
      rv_audience_per_minute: 'Online and clicks per minute',
      rv_col_sold_out: 'Sold out at',
      rv_col_clicks: 'Clicks',
      rv_col_cto: 'Click→order',
      rv_payments: 'Payments',
      rv_pay_paid: 'Paid',
      rv_pay_expired: 'Expired',
      rv_pay_cancelled: 'Cancelled',
      rv_pay_refunded: 'Refunded',
      rv_pay_late: 'Late payments',
      rv_unit_orders: 'orders',
      rv_replay: 'Replay',
      rv_play: 'Play',
      rv_pause: 'Pause',
      rv_again: 'Replay again',
      rv_speed: 'Speed',
      rv_replay_hint: 'The replay rebuilds the dashboard from the per-minute figures: money, orders and the audience grow as they did; products, the funnel, sharers and refusals show the whole stream\'s figures at the end.',
      rv_series_gmv: 'Placed',
      rv_series_paid: 'Paid',
      rv_series_orders: 'Orders',
      rv_series_online: 'Watching',
      rv_series_clicks: 'Product clicks',
      rv_rejected_total: '{n} in all',
      rv_loading: 'Loading…',
      rv_err_unauthorized: 'invalid token',
      rv_err_not_found: 'room not found',
      rv_err_unreachable: 'server unreachable',
      rv_err_other: 'the review could not be loaded: {e}',
      rv_empty: 'This stream has no activity yet.',
      rv_range: '{from} – {to} · {d}',
    },
  });

  const MINUTE_MS = 60000;
  /** Real milliseconds between two replayed snapshots while playing. */
  const FRAME_MS = 200;

  const C = window.livehubCommon;
  const { $, h, fitText, escapeHtml } = C;
  const { room, token } = C.pageParams();
  const reviewUrl = () => `/api/rooms/${encodeURIComponent(room)}/review`;
  const auth = () => ({ Authorization: 'Bearer ' + token });

  /** The review as the server sent it, or null before it came. */
  let review = null;

  // ------------------------------------------------------------- helpers --

  function num(x) { return typeof x === 'number' && isFinite(x) ? x : null; }
  function setText(el, text) { if (el.textContent !== text) el.textContent = text; }
  /** "YYYY-MM-DD HH:MM" of a Unix-ms time, local. */
  function fmtDay(ms) {
    const d = new Date(ms);
    const p = (x) => String(x).padStart(2, '0');
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
  }
  const hm = (ms) => fmt.clock(ms).slice(0, 5);

  const fitTotals = () => { for (const el of document.querySelectorAll('.rv-totals .num')) fitText(el); };

  function showMsg(text) {
    const el = $('rv-msg');
    el.hidden = !text;
    setText(el, text || '');
  }

  // -------------------------------------------------------------- report --

  function renderReport() {
    const r = review;
    const tot = r.totals || {};
    setText($('rv-room'), r.title ? `${r.title} · ${r.room}` : r.room || room);
    document.title = `${r.title || room} · livehub ${t('rv_title')}`;
    const from = num(r.from_ms);
    const to = num(r.to_ms);
    setText($('rv-range'), from != null && to != null
      ? t('rv_range', { from: fmtDay(from), to: hm(to), d: fmt.duration((to - from) / 1000) }) : '');

    const fen = (id, v) => {
      const el = $(id);
      el.dataset.valueFen = v == null ? '' : String(v);
      setText(el, v == null ? '—' : fmt.fen(v));
    };
    const count = (id, v) => {
      const el = $(id);
      el.dataset.value = v == null ? '' : String(v);
      setText(el, v == null ? '—' : fmt.group(v));
    };
    fen('rv-paid-gmv', num(tot.paid_gmv_fen));
    fen('rv-gmv', num(tot.gmv_fen));
    count('rv-orders', num(tot.orders));
    count('rv-units', num(tot.units));
    count('rv-buyers', num(tot.buyers));
    const orders = num(tot.orders);
    const aov = num(tot.aov_fen) ?? (orders > 0 ? Math.round(num(tot.gmv_fen) / orders) : null);
    setText($('rv-aov'), aov == null ? '—' : fmt.fen(aov));
    const rate = num(tot.pay_rate);
    $('rv-pay-rate').dataset.value = rate == null ? '' : String(rate);
    setText($('rv-pay-rate'), rate == null ? '—' : fmt.rate(rate));
    const peak = r.peak_minute || null;
    const peakEl = $('rv-peak');
    peakEl.dataset.tMs = peak ? String(peak.t_ms) : '';
    peakEl.dataset.valueFen = peak ? String(peak.gmv_fen) : '';
    setText(peakEl, peak ? fmt.fen(peak.gmv_fen) : '—');
    setText($('rv-peak-time'), peak ? `${hm(peak.t_ms)}–${hm(peak.t_ms + MINUTE_MS)}` : '');

    fitTotals();
    renderSkuTable(r.skus || []);
    renderFunnel(r.funnel);
    renderPaymentOutcomes(r.payments || {});
    renderRejections(r.rejected || {});
    renderReferrers(r.top_referrers || []);
    renderCharts();
  }

  function renderSkuTable(skus) {
    const rows = skus.map((k) => {
      const cell = (v, text, cls) => h('td', { class: 'r num-cell' + (cls ? ' ' + cls : ''), 'data-value': v == null ? '' : String(v) }, text);
      const clicks = num(k.clicks);
      const cto = num(k.click_to_order);
      return h('tr', { 'data-sku': k.sku },
        h('td', { class: 'product' }, h('span', { class: 'sku-name', title: k.name || k.sku }, k.name || k.sku), h('span', { class: 'sku-id' }, k.sku)),
        cell(num(k.sold), fmt.group(num(k.sold) ?? 0), 'big'),
        cell(num(k.paid), fmt.group(num(k.paid) ?? 0), 'big paid'),
        h('td', { class: 'r num-cell', 'data-value-fen': String(num(k.gmv_fen) ?? 0) }, fmt.fen(num(k.gmv_fen) ?? 0)),
        h('td', { class: 'eta', 'data-value': k.sold_out_at_ms == null ? '' : String(k.sold_out_at_ms) },
          k.sold_out_at_ms == null ? '—' : fmt.clock(k.sold_out_at_ms)),
        cell(clicks, clicks == null ? '—' : fmt.group(clicks)),
        cell(cto, clicks > 0 && cto != null ? fmt.rate(cto) : '—'));
    });
    $('rv-sku-body').replaceChildren(...rows);
    $('rv-skus-empty').hidden = skus.length > 0;
  }

  /** A bar list row: name, a bar as wide as n / max, the figure and an optional note. */
  function barRow(attrs, name, n, max, note) {
    const fill = h('span', { class: 'fill' });
    fill.style.width = (max > 0 ? (100 * n) / max : 0).toFixed(1) + '%';
    return h('li', attrs, h('span', { class: 'name' }, name), h('span', { class: 'bar' }, fill),
      h('span', { class: 'count' }, fmt.group(n)), note == null ? null : h('span', { class: 'note' }, note));
  }

  const FUNNEL_STEPS = [['entered', 'step_entered'], ['clicked', 'step_clicked'], ['ordered', 'step_ordered'], ['paid', 'step_paid']];

  function renderFunnel(f) {
    const ok = f && typeof f === 'object' && FUNNEL_STEPS.some(([k]) => num(f[k]) != null);
    const counts = FUNNEL_STEPS.map(([k]) => (ok ? num(f[k]) ?? 0 : 0));
    const max = Math.max(1, ...counts);
    $('rv-funnel').replaceChildren(...(ok ? FUNNEL_STEPS.map(([k, label], i) => barRow(
      { 'data-step': k, 'data-value': String(counts[i]) }, t(label), counts[i], max,
      i > 0 && counts[i - 1] > 0 ? '↓ ' + fmt.rate(counts[i] / counts[i - 1]) : '')) : []));
    $('rv-funnel-empty').hidden = !!ok;
    const overall = ok && counts[0] > 0 ? counts[3] / counts[0] : null;
    setText($('rv-funnel-overall'), overall == null ? '—' : fmt.rate(overall));
  }

  function renderPaymentOutcomes(p) {
    const figs = [['paid', 'rv_pay_paid', 'good'], ['expired', 'rv_pay_expired', ''], ['cancelled', 'rv_pay_cancelled', ''],
      ['refunded', 'rv_pay_refunded', ''], ['late_payments', 'rv_pay_late', 'warn']];
    $('rv-payments').replaceChildren(...figs.map(([k, label, cls]) => {
      const n = num(p[k]);
      return h('div', { class: 'rv-fig ' + cls, 'data-outcome': k, 'data-value': n == null ? '' : String(n) },
        h('span', { class: 'label' }, t(label)),
        h('span', { class: 'v num' }, n == null ? '—' : fmt.group(n)),
        h('span', { class: 'unit' }, t('rv_unit_orders')));
    }));
  }

  function renderRejections(rej) {
    const entries = Object.entries(rej).filter(([, n]) => num(n) > 0).sort((a, b) => b[1] - a[1]);
    const total = entries.reduce((a, [, n]) => a + n, 0);
    const max = entries.length ? entries[0][1] : 1;
    $('rv-rejections').replaceChildren(...entries.map(([code, n]) => barRow({ 'data-code': code, 'data-value': String(n) }, D.rejName(code), n, max)));
    $('rv-rejections-empty').hidden = entries.length > 0;
    const totalEl = $('rv-rejected-total');
    totalEl.dataset.value = String(total);
    setText(totalEl, total > 0 ? t('rv_rejected_total', { n: fmt.group(total) }) : '');
  }

  function renderReferrers(refs) {
    $('rv-referrers').replaceChildren(...refs.slice(0, 10).map((r, i) => h('li', { 'data-ref': r.ref },
      h('span', { class: 'rank' + (i < 3 ? ' top' : '') }, String(i + 1)),
      h('span', { class: 'ref' }, r.ref),
      h('span', { class: 'orders' }, fmt.group(r.orders || 0) + ' ' + t('ref_orders')),
      h('span', { class: 'gmv' }, fmt.fen(r.gmv_fen || 0)))));
    $('rv-referrers-empty').hidden = refs.length > 0;
  }

  // -------------------------------------------------------------- charts --

  const AXIS_TEXT = { color: '#8a97b8', fontSize: 14 };
  const SPLIT = { lineStyle: { color: 'rgba(138,151,184,0.12)' } };
  const TOOLTIP = { backgroundColor: 'rgba(12,18,32,0.95)', borderColor: '#2a3656', textStyle: { color: '#e8edf8' } };
  const charts = {};

  function chartOn(id) {
    if (!charts[id]) {
      const el = $(id);
      charts[id] = window.echarts.init(el, null, { renderer: 'canvas' });
      new ResizeObserver(() => charts[id].resize()).observe(el);
    }
    return charts[id];
  }

  /** A tooltip of the minute and each series' figure, formatted by `f[seriesId]`. */
  function tooltip(f) {
    return {
      trigger: 'axis', ...TOOLTIP,
      formatter: (items) => items.length
        ? [hm(Number(items[0].axisValue)), ...items.map((x) => `${x.seriesName}: ${(f[x.seriesId] || fmt.group)(x.value)}`)].map(escapeHtml).join('<br>')
        : '',
    };
  }

  /**
   * The per-minute charts: placed and paid GMV (bars, the paid one over the placed one) with
   * orders (line, right axis), the peak minute marked; and the audience online (line) with
   * product clicks (bars). Series ids (for tests): gmv, paid, orders, online, clicks.
   */
  function renderCharts() {
    if (!review || !window.echarts) return;
    const mins = (review.minutes || []).filter((m) => m && typeof m.t_ms === 'number');
    const xs = mins.map((m) => m.t_ms);
    const col = (k) => mins.map((m) => num(m[k]) ?? 0);
    const xAxis = {
      type: 'category', data: xs, boundaryGap: true, axisTick: { show: false },
      axisLabel: { ...AXIS_TEXT, formatter: (v) => hm(Number(v)), hideOverlap: true },
      axisLine: { lineStyle: { color: '#2a3656' } },
    };
    const legend = { top: 0, right: 0, textStyle: { color: '#c8d1ea', fontSize: 14 }, itemWidth: 16, itemHeight: 10 };
    const grid = { left: 8, right: 8, top: 36, bottom: 8, containLabel: true };
    const peak = review.peak_minute;
    const peakAt = peak ? xs.indexOf(peak.t_ms) : -1;
    for (const id of ['rv-sales-chart', 'rv-audience-chart']) $(id).dataset.points = String(mins.length);

    chartOn('rv-sales-chart').setOption({
      animation: false, backgroundColor: 'transparent', grid, legend, xAxis,
      tooltip: tooltip({ gmv: fmt.fen, paid: fmt.fen }),
      yAxis: [
        { type: 'value', min: 0, minInterval: 100, axisLabel: { ...AXIS_TEXT, formatter: fmt.fenShort }, splitLine: SPLIT },
        { type: 'value', min: 0, minInterval: 1, axisLabel: { ...AXIS_TEXT, formatter: fmt.countShort }, splitLine: { show: false } },
      ],
      series: [
        { id: 'gmv', name: t('rv_series_gmv'), type: 'bar', data: col('gmv_fen'), barMaxWidth: 28,
          itemStyle: { color: 'rgba(138,151,184,0.45)', borderRadius: [3, 3, 0, 0] },
          markPoint: peakAt < 0 ? undefined : {
            symbol: 'pin', symbolSize: 44, itemStyle: { color: '#ff7a45' },
            label: { color: '#0b1020', fontSize: 11, fontWeight: 700, formatter: () => 'TOP' },
            data: [{ coord: [peakAt, peak.gmv_fen] }],
          } },
        { id: 'paid', name: t('rv_series_paid'), type: 'bar', data: col('paid_gmv_fen'), barMaxWidth: 28, barGap: '-100%',
          itemStyle: { color: '#ffd23f', borderRadius: [3, 3, 0, 0] } },
        { id: 'orders', name: t('rv_series_orders'), type: 'line', yAxisIndex: 1, data: col('orders'), showSymbol: false,
          lineStyle: { color: '#ff7a45', width: 3 }, itemStyle: { color: '#ff7a45' } },
      ],
    }, { notMerge: true });

    chartOn('rv-audience-chart').setOption({
      animation: false, backgroundColor: 'transparent', grid, legend, xAxis,
      tooltip: tooltip({}),
      yAxis: [
        { type: 'value', min: 0, minInterval: 1, axisLabel: { ...AXIS_TEXT, color: '#4ea8ff', formatter: fmt.countShort }, splitLine: SPLIT },
        { type: 'value', min: 0, minInterval: 1, axisLabel: { ...AXIS_TEXT, color: '#3ddc97', formatter: fmt.countShort }, splitLine: { show: false } },
      ],
      series: [
        { id: 'clicks', name: t('rv_series_clicks'), type: 'bar', yAxisIndex: 1, data: col('clicks'), barMaxWidth: 20,
          itemStyle: { color: 'rgba(61,220,151,0.55)', borderRadius: [3, 3, 0, 0] } },
        { id: 'online', name: t('rv_series_online'), type: 'line', data: col('online'), showSymbol: false,
          lineStyle: { color: '#4ea8ff', width: 3 }, itemStyle: { color: '#4ea8ff' },
          areaStyle: { color: 'rgba(78,168,255,0.12)' } },
      ],
    }, { notMerge: true });
  }

  // ----------------------------------------------------------------- CSV --

  /**
   * Downloads the per-minute CSV. A link cannot carry the Authorization header, so the file is
   * fetched with it and saved from a Blob URL.
   */
  async function downloadCsv() {
    const btn = $('rv-csv');
    btn.disabled = true;
    try {
      const res = await fetch(reviewUrl() + '?format=csv', { headers: auth(), cache: 'no-store' });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const url = URL.createObjectURL(await res.blob());
      const a = h('a', { href: url, download: `review-${room}.csv` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (e) {
      showMsg(t('rv_err_other', { e: e && e.message ? e.message : e }));
    } finally {
      btn.disabled = false;
    }
  }

  // -------------------------------------------------------------- replay --

  /** The replay: its span (whole minutes), where it is, how fast, and its timer. */
  const replay = { start: 0, end: 0, at: 0, speed: 30, timer: 0, lastTick: 0, state: 'paused' };

  /**
   * The dashboard snapshot at replayed moment `at`: the minutes before it, the current one in
   * the part of it that has passed. At the end, the review's totals and final figures.
   */
  function snapshotAt(at) {
    const r = review;
    const tot = r.totals || {};
    const ended = at >= replay.end;
    let gmv = 0;
    let paid = 0;
    let orders = 0;
    let online = null;
    let peakOnline = null;
    const points = [];
    for (const m of r.minutes || []) {
      if (m.t_ms >= at && !ended) break;
      const part = ended ? 1 : Math.min(1, (at - m.t_ms) / MINUTE_MS);
      const p = {
        t_ms: m.t_ms,
        gmv_fen: Math.round((num(m.gmv_fen) ?? 0) * part),
        paid_gmv_fen: Math.round((num(m.paid_gmv_fen) ?? 0) * part),
        orders: Math.floor((num(m.orders) ?? 0) * part),
        online: num(m.online),
      };
      points.push(p);
      gmv += p.gmv_fen;
      paid += p.paid_gmv_fen;
      orders += p.orders;
      if (p.online != null) {
        online = p.online;
        peakOnline = Math.max(peakOnline ?? 0, p.online);
      }
    }
    const s = {
      op: 'snapshot', room: r.room, seq: 0, ts_ms: at,
      gmv_fen: gmv, paid_gmv_fen: paid, orders,
      aov_fen: orders > 0 ? Math.round(gmv / orders) : 0,
      trend: { interval_ms: MINUTE_MS, points },
      audience: online == null ? null : { online, peak: peakOnline },
      skus: (r.skus || []).map((k) => {
        const out = k.sold_out_at_ms != null && k.sold_out_at_ms <= at;
        return { sku: k.sku, name: k.name, state: out ? 'sold_out' : 'open', sold_out_at_ms: out ? k.sold_out_at_ms : null };
      }),
      rejected: {},
      top_referrers: [],
    };
    if (!ended) return s;
    // The end: every figure of the review. The minutes' sums are its totals (PROTOCOL.md).
    return {
      ...s,
      ...tot,
      aov_fen: num(tot.aov_fen) ?? s.aov_fen,
      skus: (r.skus || []).map((k) => ({
        sku: k.sku, name: k.name, state: k.sold_out_at_ms != null ? 'sold_out' : 'open',
        sold_out_at_ms: k.sold_out_at_ms ?? null, sold: k.sold, paid: k.paid, gmv_fen: k.gmv_fen,
        clicks: k.clicks, click_to_order: k.click_to_order,
      })),
      funnel: r.funnel || null,
      rejected: r.rejected || {},
      top_referrers: r.top_referrers || [],
    };
  }

  function showAt(at) {
    replay.at = Math.max(replay.start, Math.min(replay.end, at));
    D.apply(snapshotAt(replay.at), true);
    const el = $('rv-replay');
    el.dataset.tMs = String(replay.at);
    $('rv-slider').value = String(replay.at - replay.start);
    setText($('rv-time'), `${fmt.clock(replay.at)} / ${fmt.duration((replay.at - replay.start) / 1000)}`);
  }

  function setState(state) {
    replay.state = state;
    $('rv-replay').dataset.state = state;
    $('rv-play').dataset.i18n = state === 'playing' ? 'rv_pause' : state === 'ended' ? 'rv_again' : 'rv_play';
    setText($('rv-play'), t($('rv-play').dataset.i18n));
  }

  function play() {
    if (replay.at >= replay.end) showAt(replay.start);
    setState('playing');
    replay.lastTick = performance.now();
    clearInterval(replay.timer);
    replay.timer = setInterval(step, FRAME_MS);
  }

  function pause(state) {
    clearInterval(replay.timer);
    replay.timer = 0;
    setState(state || 'paused');
  }

  /** Advances the replay by the real time since the last step times the speed. */
  function step() {
    const now = performance.now();
    const dt = (now - replay.lastTick) * replay.speed;
    replay.lastTick = now;
    showAt(replay.at + dt);
    if (replay.at >= replay.end) pause('ended');
  }

  async function initReplay() {
    const mins = review.minutes || [];
    if (!mins.length) return;
    replay.start = mins[0].t_ms;
    replay.end = mins[mins.length - 1].t_ms + MINUTE_MS;
    const slider = $('rv-slider');
    slider.max = String(replay.end - replay.start);
    const speed = Number(new URLSearchParams(location.search).get('speed'));
    if ([1, 5, 10, 30, 60].includes(speed)) $('rv-speed').value = String(speed);
    replay.speed = Number($('rv-speed').value);
    $('rv-speed').addEventListener('change', () => { replay.speed = Number($('rv-speed').value); });
    slider.addEventListener('input', () => {
      showAt(replay.start + Number(slider.value));
      if (replay.state === 'ended' && replay.at < replay.end) setState('paused');
      if (replay.at >= replay.end && replay.state !== 'ended') pause('ended');
    });
    $('rv-play').addEventListener('click', () => (replay.state === 'playing' ? pause() : play()));

    // The dashboard's own markup, from the dashboard page: one source for both.
    const res = await fetch('/', { cache: 'no-store' });
    const doc = new DOMParser().parseFromString(await res.text(), 'text/html');
    const dash = doc.getElementById('dashboard');
    if (!dash) return;
    $('rv-stage').append(document.importNode(dash, true));
    D.mount();
    // Opens at the end: the whole stream, as the dashboard showed it when the stream ended.
    showAt(replay.end);
    setState('ended');
  }

  // ---------------------------------------------------------------- boot --

  async function load() {
    showMsg(t('rv_loading'));
    let res;
    try {
      res = await fetch(reviewUrl(), { headers: auth(), cache: 'no-store' });
    } catch (_) {
      showMsg(t('rv_err_unreachable'));
      return;
    }
    if (!res.ok) {
      showMsg(res.status === 401 ? t('rv_err_unauthorized') : res.status === 404 ? t('rv_err_not_found') : t('rv_err_other', { e: `HTTP ${res.status}` }));
      return;
    }
    review = await res.json();
    showMsg((review.minutes || []).length ? '' : t('rv_empty'));
    renderReport();
    await initReplay();
  }

  function boot() {
    D.applyLang();
    if (!room || !token) {
      $('rv-setup').hidden = false;
      $('rv-setup-room').value = room;
      $('rv-setup-token').value = token;
      (room ? $('rv-setup-token') : $('rv-setup-room')).focus();
      return;
    }
    $('rv-page').hidden = false;
    $('rv-dashboard-link').href = `/?room=${encodeURIComponent(room)}&token=${encodeURIComponent(token)}`;
    $('rv-csv').addEventListener('click', downloadCsv);
    window.addEventListener('resize', fitTotals);
    D.onLang(() => {
      if (!review) return;
      renderReport();
      setState(replay.state);
    });
    load();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();
