// The README's screenshots: opens a page of a running livehub in headless Chromium, waits,
// and saves a PNG. Not a test.
//   node tests/browser/screenshot.mjs URL OUT.png WIDTH HEIGHT WAIT_MS
// e.g. with `livehub --demo` running for a minute:
//   node tests/browser/screenshot.mjs "http://127.0.0.1:8080/overview?token=$(cat data/viewer.token)" docs/overview.png 1600 470 2500
//   node tests/browser/screenshot.mjs "http://127.0.0.1:8080/review?room=demo-earlier&token=$(cat data/viewer.token)" docs/review.png 1600 1000 3000
import { chromium } from 'playwright-core';

const [url, out, width, height, wait] = process.argv.slice(2);
if (!url || !out) {
  console.error('usage: node tests/browser/screenshot.mjs URL OUT.png [WIDTH] [HEIGHT] [WAIT_MS]');
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu'],
});
const page = await browser.newPage({ viewport: { width: +(width || 1600), height: +(height || 900) } });
await page.goto(url);
await page.waitForTimeout(+(wait || 3000));
await page.screenshot({ path: out, animations: 'disabled' });
await browser.close();
