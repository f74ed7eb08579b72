// Browser test of the load tool's HTML report (`livehub-loadtest --report FILE.html`): runs a
// short open-loop steady load against the running livehub, opens the report from disk in
// Debian's Chromium, and checks that every chart drew what the summary says.
//
// Env: as dashboard.test.mjs (LIVEHUB_URL, LIVEHUB_ADMIN_TOKEN, LIVEHUB_VIEWER_TOKEN, CHROMIUM),
//      and LIVEHUB_LOADTEST (optional; default target/debug/livehub-loadtest from the repo root).
// Run: node --test tests/browser/
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BASE = (process.env.LIVEHUB_URL || '').replace(/\/+$/, '');
const ADMIN = process.env.LIVEHUB_ADMIN_TOKEN || '';
const VIEWER = process.env.LIVEHUB_VIEWER_TOKEN || '';
const LOADTEST = path.resolve(REPO_ROOT, process.env.LIVEHUB_LOADTEST || 'target/debug/livehub-loadtest');
const CONNECTIONS = 4;

describe('load-test report', () => {
  let browser;
  let page;
  let dir;
  let summary; // the run's --json summary
  const problems = []; // page errors, checked last

  before(async () => {
    assert.ok(BASE, 'LIVEHUB_URL is not set: start livehub first (see tests/browser/README.md)');
    dir = await mkdtemp(path.join(tmpdir(), 'lh-report-'));
    const report = path.join(dir, 'report.html');
    const args = ['steady', '--url', BASE, '--open-buyers', '--admin-token', ADMIN, '--viewer-token', VIEWER,
      '--connections', String(CONNECTIONS), '--rate', '400', '--duration', '2s', '--max-seconds', '60',
      '--no-progress', '--json', '--report', report];
    const { stdout } = await promisify(execFile)(LOADTEST, args, { timeout: 90_000 });
    summary = JSON.parse(stdout.trim());
    assert.equal(summary.ok, true, `the load run failed: ${JSON.stringify(summary.problems)}`);

    browser = await chromium.launch({
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
    });
    page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
    // The file must stand alone: nothing may be fetched from anywhere.
    page.on('request', (r) => { if (!r.url().startsWith('file:')) problems.push(`fetched ${r.url()}`); });
    await page.goto(pathToFileURL(report).href);
  });

  after(async () => {
    if (browser) await browser.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** The series of the chart in `#id`, as ECharts holds them after drawing. */
  const seriesOf = (id) => page.evaluate((id) => {
    const c = echarts.getInstanceByDom(document.getElementById(id));
    return c ? c.getOption().series.map((s) => ({ name: s.name, data: s.data })) : null;
  }, id);

  test('is titled with the scenario and its verdict', async () => {
    assert.equal(await page.textContent('h1'), 'livehub-loadtest steady — PASS');
    assert.match(await page.textContent('pre'), /steady: PASS/);
  });

  test('draws throughput and latency over time from the run', async () => {
    const thr = await seriesOf('thr');
    assert.ok(thr, 'no throughput chart');
    const rates = thr[0].data.map((p) => p[1]);
    assert.ok(Math.max(...rates) > 0, `throughput: ${JSON.stringify(rates)}`);
    const lat = await seriesOf('lat');
    const p99 = lat.find((s) => s.name.endsWith('p99'));
    const values = p99.data.map((p) => p[1]).filter((v) => v != null);
    assert.ok(values.length > 0 && values.every((v) => v > 0), `p99 over time: ${JSON.stringify(values)}`);
    // No second of the run can have a p99 over the whole run's maximum (the timeline's
    // histograms keep 2 significant digits, the run's 3: hence the 2%).
    const max = summary.livehub.buys.latency.max_ms;
    assert.ok(values.every((v) => v <= max * 1.02), `p99s ${values} over the run's max ${max}`);
  });

  test('draws the distribution up to the run\'s maximum', async () => {
    const dist = await seriesOf('dist');
    const all = dist.find((s) => !s.name.includes('ok acks'));
    const top = all.data[all.data.length - 1];
    assert.ok(Math.abs(top - summary.livehub.buys.latency.max_ms) < 0.01, `100th percentile ${top}`);
  });

  test('draws the connections the run held, and their close at its end', async () => {
    const points = (await seriesOf('conns'))[0].data;
    assert.equal(Math.max(...points.map((p) => p[1])), CONNECTIONS, JSON.stringify(points));
    const [t, n] = points[points.length - 1];
    assert.equal(n, 0, `connections still open at the end: ${JSON.stringify(points)}`);
    assert.ok(Math.abs(t - summary.elapsed_s) < 0.5, `the line ends at ${t} s, the run at ${summary.elapsed_s} s`);
  });

  test('draws the hiccup meter\'s stalls, every one the summary counts', async () => {
    const stalls = await seriesOf('stalls');
    assert.ok(stalls, 'no stalls chart');
    const counted = stalls[0].data.reduce((n, p) => n + p[2], 0);
    assert.equal(counted, summary.machine.hiccups.over_1ms, JSON.stringify(stalls[0].data));
    for (const [t, ms] of stalls[0].data) {
      assert.ok(t >= 0 && t <= summary.elapsed_s + 1, `stall at ${t} s`);
      assert.ok(ms > 1 && ms <= summary.machine.hiccups.late.max_ms + 0.05, `stall of ${ms} ms`);
    }
  });

  test('no page errors and nothing fetched', () => {
    assert.deepEqual(problems, []);
  });
});
