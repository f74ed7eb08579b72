// livehub pages' shared parts: DOM helpers, the language choice, number and money formatting,
// the server clock, the data-age badge and the live socket with its connection pill.
//
// Plain ES2020, no build step: each page loads this with `<script src="common.js" defer>`
// before its own script, which reads it from window.livehubCommon. Nothing here touches the
// page until a page calls it.
'use strict';

window.livehubCommon = (() => {
  // ------------------------------------------------------------- helpers --

  const $ = (id) => document.getElementById(id);

  /** Creates an element: h('td', {class: 'r', 'data-testid': 'x'}, 'text', child...). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    if (attrs) for (const [k, v] of Object.entries(attrs)) if (v != null) el.setAttribute(k, v);
    for (const c of children) if (c != null) el.append(c);
    return el;
  }

  /** Sets text only when it changed (avoids needless layout); big numerals are shrunk to fit. */
  function setText(el, text) {
    if (el.textContent === text) return;
    el.textContent = text;
    if (el.classList.contains('num')) fitText(el);
  }

  /**
   * Shrinks an element's font so its one-line text fits its box (never grows past the CSS size).
   * Called when the text changes and on resize.
   */
  function fitText(el) {
    el.style.fontSize = '';
    const avail = el.clientWidth;
    const need = el.scrollWidth;
    if (avail > 0 && need > avail) {
      const size = parseFloat(getComputedStyle(el).fontSize);
      el.style.fontSize = Math.floor(size * avail / need * 0.97) + 'px';
    }
  }

  /** Refits every big numeral (on resize). */
  function fitAll() { for (const el of document.querySelectorAll('.num')) fitText(el); }

  /** Escapes text for ECharts' HTML tooltip. */
  function escapeHtml(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
  }

  /** Reads a Web Storage key ('localStorage' or 'sessionStorage'); null when unavailable. */
  function storageGet(storage, key) {
    try { return window[storage].getItem(key); } catch (_) { return null; }
  }
  /** Writes a Web Storage key; silently does nothing when storage is unavailable. */
  function storageSet(storage, key, value) {
    try { window[storage].setItem(key, value); } catch (_) { /* private mode */ }
  }

  /** ?room= and ?token= of the page's address, trimmed ('' when absent). */
  function pageParams() {
    const params = new URLSearchParams(location.search);
    return { room: (params.get('room') || '').trim(), token: (params.get('token') || '').trim() };
  }

  // ---------------------------------------------------------------- i18n --

  /** One language choice for every page. */
  const LANG_KEY = 'livehub.lang';

  /**
   * The language of a page with the strings `strings` ({zh: {...}, en: {...}}, which the page
   * may add to later): `t(key, vars)` translates, `lang()` is 'zh' or 'en', `applyBase()` sets
   * the document's language, every [data-i18n] element and the toggles, and `bindToggles(apply)`
   * makes every .lang-toggle switch the language, store it and call the page's `apply`.
   */
  function i18n(strings) {
    let lang = storageGet('localStorage', LANG_KEY) === 'en' ? 'en' : 'zh';

    /** Translates `key` in the current language, filling {name} placeholders from `vars`. */
    function t(key, vars) {
      const s = strings[lang][key] ?? strings.zh[key] ?? key;
      return vars ? s.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m)) : s;
    }

    function applyBase() {
      document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
      for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
      for (const b of document.querySelectorAll('.lang-toggle')) {
        b.textContent = lang === 'zh' ? 'EN' : '中文';
        b.title = lang === 'zh' ? 'Switch to English' : '切换到中文';
      }
    }

    function bindToggles(apply) {
      const toggle = () => {
        lang = lang === 'zh' ? 'en' : 'zh';
        storageSet('localStorage', LANG_KEY, lang);
        apply();
      };
      for (const b of document.querySelectorAll('.lang-toggle')) b.addEventListener('click', toggle);
    }

    return { t, lang: () => lang, applyBase, bindToggles };
  }

  // ---------------------------------------------------------- formatting --

  /** "1234567" -> "1,234,567" for a safe integer (sign kept). */
  function group(n) {
    const s = String(Math.trunc(Math.abs(n)));
    return (n < 0 ? '-' : '') + s.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  }

  /** Exact money text: integer fen -> "¥12,345.00" (no floating-point rounding). */
  function fmtFen(fen) {
    const n = Math.round(Number(fen) || 0);
    const a = Math.abs(n);
    return (n < 0 ? '-' : '') + '¥' + group(Math.floor(a / 100)) + '.' + String(a % 100).padStart(2, '0');
  }

  /** Local wall-clock "HH:MM:SS" of a Unix-ms time. */
  function fmtClock(ms) {
    const d = new Date(ms);
    return [d.getHours(), d.getMinutes(), d.getSeconds()].map((x) => String(x).padStart(2, '0')).join(':');
  }

  /**
   * Seconds -> "12秒" / "3分05秒" / "2小时05分" (zh), "12s" / "3m05s" / "2h05m" (en), through
   * the page's `t` (keys dur_s, dur_ms, dur_h); with `days`, a day and more is "3天4小时" (dur_d).
   */
  function fmtDuration(t, sec, days) {
    const s = Math.max(0, Math.round(sec));
    if (s < 60) return t('dur_s', { s });
    if (s < 3600) return t('dur_ms', { m: Math.floor(s / 60), s: String(s % 60).padStart(2, '0') });
    if (s < 86400 || !days) return t('dur_h', { h: Math.floor(s / 3600), m: String(Math.floor((s % 3600) / 60)).padStart(2, '0') });
    return t('dur_d', { d: Math.floor(s / 86400), h: Math.floor((s % 86400) / 3600) });
  }

  /** Data age -> "0.3秒" style text with one decimal below 10 s, else as fmtDuration. */
  function fmtAge(t, ms, days) {
    if (ms < 10000) return t('dur_s', { s: (ms / 1000).toFixed(1) });
    return fmtDuration(t, ms / 1000, days);
  }

  // -------------------------------------------------------- server clock --

  /**
   * The server's clock as the page sees it: `sample(tsMs)` with each frame's ts_ms as it comes
   * in; `now()` is the client clock corrected by the smallest observed client-minus-server
   * offset (the least delayed frame) over the last 64 frames.
   */
  function serverClock() {
    const samples = [];
    let offset = 0;
    return {
      sample(tsMs) {
        if (typeof tsMs !== 'number') return;
        samples.push(Date.now() - tsMs);
        if (samples.length > 64) samples.shift();
        offset = Math.min(...samples);
      },
      now: () => Date.now() - offset,
    };
  }

  // ------------------------------------------------------------ data age --

  /**
   * Shows in #data-age how old the displayed frame `last` is at server time `now`; class
   * "stale" past 3 s. `title` is the badge's tooltip for the frame.
   */
  function renderAge({ last, now, t, days, title }) {
    const el = $('data-age');
    if (!el) return;
    if (!last) {
      setText(el, t('age_none'));
      el.dataset.ageMs = '';
      el.classList.add('stale');
      return;
    }
    const age = Math.max(0, now - last.ts_ms);
    el.dataset.ageMs = String(Math.round(age));
    el.classList.toggle('stale', age > 3000);
    setText(el, t('age', { a: fmtAge(t, age, days) }));
    el.title = title(last);
  }

  // ---------------------------------------------------------- connection --

  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 10000;
  const STALL_MS = 5000; // the server sends at least once a second; 5 s of silence = dead link

  /**
   * A live socket at `path` (with its query) that reconnects with backoff, shown in the
   * #conn-state pill. Each frame whose `op` is `op` goes to `onFrame(msg, first)`, `first` being
   * true for a connection's first frame. When a socket fails before opening, the REST path
   * `diagnosePath` is asked why (a refused upgrade gives the browser no status code), and
   * `problems` maps its status to the key of the text to show (e.g. {401: 'err_unauthorized'}).
   * `t` translates the pill's text.
   *
   * state: connecting | open | reconnecting, or replay (a page without a socket, set by
   * `replay()`); retryAt: when the next attempt starts.
   */
  function connection({ path, op, onFrame, diagnosePath, token, problems, t }) {
    const conn = { ws: null, state: 'connecting', attempt: 0, timer: 0, retryAt: 0, problem: '' };
    let lastRecvAt = 0;

    function wsUrl() {
      const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
      return `${proto}//${location.host}${path}`;
    }

    /** Opens the socket; on any close, schedules a retry with backoff. */
    function connect() {
      clearTimeout(conn.timer);
      conn.timer = 0;
      conn.state = 'connecting';
      render();
      let ws;
      try {
        ws = new WebSocket(wsUrl());
      } catch (_) {
        scheduleReconnect();
        return;
      }
      conn.ws = ws;
      let opened = false;
      let first = true;
      ws.onopen = () => {
        if (conn.ws !== ws) return;
        opened = true;
        conn.state = 'open';
        conn.problem = '';
        lastRecvAt = Date.now(); // start the stall watchdog now
        render();
      };
      ws.onmessage = (ev) => {
        if (conn.ws !== ws) return;
        let msg;
        try { msg = JSON.parse(ev.data); } catch (_) { return; }
        if (!msg || msg.op !== op) return;
        lastRecvAt = Date.now();
        onFrame(msg, first);
        first = false;
        conn.attempt = 0; // a working feed resets the backoff
      };
      ws.onclose = () => {
        if (conn.ws !== ws) return; // superseded (e.g. by the stall watchdog)
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
      render();
    }

    /** Drops the current socket (without waiting for its close handshake) and retries. */
    function dropAndReconnect() {
      const ws = conn.ws;
      conn.ws = null;
      if (ws) { try { ws.close(); } catch (_) { /* ignore */ } }
      scheduleReconnect();
    }

    /** Skips the remaining backoff wait (network came back, tab became visible). */
    function retryNow() {
      if (conn.state === 'reconnecting') { conn.attempt = 0; connect(); }
    }

    async function diagnose() {
      try {
        const r = await fetch(diagnosePath, { headers: { Authorization: 'Bearer ' + token }, cache: 'no-store' });
        conn.problem = problems[r.status] ? t(problems[r.status]) : '';
      } catch (_) {
        conn.problem = t('err_unreachable');
      }
      render();
    }

    function render() {
      const el = $('conn-state');
      if (!el) return;
      el.dataset.state = conn.state;
      let text;
      if (conn.state === 'replay') text = t('conn_replay');
      else if (conn.state === 'open') text = t('conn_open');
      else if (conn.state === 'connecting') text = t('conn_connecting');
      else text = t('conn_reconnecting', { s: Math.max(0, Math.ceil((conn.retryAt - Date.now()) / 1000)) });
      if (conn.problem && conn.state !== 'open') text = conn.problem + ' · ' + text;
      setText(el, text);
    }

    /** The ticker's part: the retry countdown, and the stall watchdog. */
    function tick() {
      if (conn.state !== 'open') render();
      if (conn.state === 'open' && Date.now() - lastRecvAt > STALL_MS) dropAndReconnect();
    }

    /**
     * Starts the socket, and retries at once when the network comes back or the tab becomes
     * visible (`onVisible` runs first then).
     */
    function start(onVisible) {
      connect();
      window.addEventListener('online', retryNow);
      document.addEventListener('visibilitychange', () => {
        if (document.hidden) return;
        if (onVisible) onVisible();
        retryNow();
      });
    }

    /** No socket: the page replays frames itself, and the pill says so. */
    function replay() { conn.state = 'replay'; }

    return { start, replay, render, tick };
  }

  return {
    $, h, setText, fitText, fitAll, escapeHtml, storageGet, storageSet, pageParams, i18n,
    group, fmtFen, fmtClock, fmtDuration, fmtAge, serverClock, renderAge, connection,
  };
})();
