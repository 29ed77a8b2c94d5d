// Drives the controller's dashboard in headless Chromium (Debian's, through playwright-core): connects
// with an API key, starts a synthetic-room recording from the form, stops it with its button and waits
// for the MP4, opens the MP4 and its poster through their links, taking a screenshot at each step. Fails on any console error or page error (a script the
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
  const output = await page.locator(`#recordings tbody tr[data-id="${id}"] td.output`).innerText();
  log('complete', { id, output });
  if (!output.includes('Play')) problems.push(`no MP4 offered for the completed recording: ${output}`);
  await page.screenshot({ path: `${args.out}/complete.png`, fullPage: true });

  // Play and Poster open the files through their short-lived links, which need no API key: the MP4
  // answers a range (players seek), the poster is a JPEG.
  const doneRow = page.locator(`#recordings tbody tr[data-id="${id}"]`);
  // (The new tab's own URL may be an error page once Chromium hands a video to its download manager: the
  // link is taken from the request the tab made.)
  const requested = [];
  page.context().on('request', (request) => requested.push(request.url()));
  for (const [button, type, magic] of [['button.media.mp4:not(.download)', 'video/mp4', 'ftyp'], ['button.media.poster', 'image/jpeg', null]]) {
    const [popup] = await Promise.all([page.waitForEvent('popup'), doneRow.locator(button).click()]);
    await popup.waitForLoadState().catch(() => {});
    const url = requested.filter((u) => u.includes('/media/')).pop();
    if (!url) throw new Error(`${button} opened no link (${popup.url()})`);
    const response = await page.request.get(url, { headers: { Range: 'bytes=0-63' } });
    const body = await response.body();
    log('link', { button, url: url.replace(/signature=[0-9a-f]+/, 'signature=…'), status: response.status(), type: response.headers()['content-type'], bytes: body.length });
    if (response.status() !== 206 || body.length !== 64) problems.push(`${button}: a range of its link answered ${response.status()} with ${body.length} bytes`);
    if (!response.headers()['content-type']?.startsWith(type)) problems.push(`${button}: content type ${response.headers()['content-type']}`);
    if (magic && body.subarray(4, 8).toString() !== magic) problems.push(`${button}: not an MP4 (${body.subarray(0, 8).toString('hex')})`);
    if (type === 'video/mp4') await popup.screenshot({ path: `${args.out}/playing.png` }).catch(() => {});
    await popup.close();
  }
  const forged = await page.request.get(`${args.url}/media/${id}/mp4?expires=99999999999999&signature=00`);
  log('forged link', { status: forged.status() });
  if (forged.status() !== 403) problems.push(`a forged link answered ${forged.status()}`);
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
