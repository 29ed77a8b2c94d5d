// Drives the controller's dashboard in headless Chromium (Debian's, through playwright-core): connects
// with an API key, starts a synthetic-room recording from the form, stops it with its button and waits
// for the MP4, taking a screenshot at each step. Fails on any console error or page error (a script the
// Content-Security-Policy blocked shows there).
//
// usage: node dashboard.mjs --url http://127.0.0.1:PORT --key API_KEY --out DIR [--chromium /usr/bin/chromium]

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
for (const required of ['url', 'key', 'out']) {
  if (!args[required]) {
    console.error(`missing --${required}`);
    process.exit(2);
  }
}
mkdirSync(args.out, { recursive: true });
const log = (event, fields = {}) => console.log(JSON.stringify({ event, ...fields }));

const browser = await chromium.launch({ executablePath: args.chromium ?? '/usr/bin/chromium', headless: true, args: ['--no-sandbox', '--disable-gpu'] });
const problems = [];
let status = 0;
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on('console', (message) => message.type() === 'error' && problems.push(`console: ${message.text()}`));
  page.on('pageerror', (err) => problems.push(`page: ${err.message}`));
  await page.goto(`${args.url}/dashboard`);
  await page.fill('#api-key', args.key);
  await page.click('#key-form button');
  await page.waitForSelector('#nodes tbody tr', { timeout: 30_000 });
  log('connected', { nodes: await page.locator('#nodes tbody tr').count() });

  await page.fill('#room', 'dashboard-room');
  await page.check('#test-source');
  await page.click('#start-form button');
  const row = page.locator('#recordings tbody tr', { hasText: 'dashboard-room' }).first();
  await row.locator('td.state.recording').waitFor({ timeout: 60_000 });
  const id = await row.getAttribute('data-id');
  log('recording', { id });
  await page.waitForTimeout(4000);
  await page.screenshot({ path: `${args.out}/recording.png`, fullPage: true });

  await row.locator('button.stop').click();
  const done = page.locator(`#recordings tbody tr[data-id="${id}"] td.state.complete`);
  await done.waitFor({ timeout: 180_000 });
  const output = await page.locator(`#recordings tbody tr[data-id="${id}"] td`).nth(6).innerText();
  log('complete', { id, output });
  if (!output.includes('MP4')) problems.push(`no MP4 shown for the completed recording: ${output}`);
  await page.screenshot({ path: `${args.out}/complete.png`, fullPage: true });
} catch (err) {
  problems.push(`step failed: ${err.message}`);
} finally {
  await browser.close();
}
for (const problem of problems) {
  log('problem', { problem });
  status = 1;
}
process.exit(status);
