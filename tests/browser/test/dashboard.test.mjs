// The admin dashboard at `/admin` (web/admin.html) against a real server: it lists a new
// connection and its room, publishes into a room, closes a room (members' pages show it),
// disconnects a connection, asks for the API token when one is configured, and keeps
// working when /metrics is missing.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { chatLines, launch, openChat } from '../lib/browser.mjs';
import { DEFAULT_CONFIG, startServer } from '../lib/server.mjs';

describe('admin dashboard', { timeout: 90_000 }, () => {
  let server;
  let browser;

  before(async () => {
    server = await startServer();
    browser = await launch();
  });
  after(async () => {
    await browser?.close();
    if (server) assert.equal(await server.dispose(), 0, `server exit code\n${server.logTail()}`);
    assert.deepEqual(browser?.pageErrors ?? [], [], 'uncaught errors in pages');
  });

  async function openDashboard(srv = server) {
    const page = await browser.newPage();
    page.on('dialog', (d) => d.accept()); // "Close room …?"
    await page.goto(`${srv.httpUrl}/admin`);
    return page;
  }
  const connectionRow = (page, name) => page.locator('#connections tbody tr', { has: page.locator('td', { hasText: name }) });
  const roomRow = (page, room) => page.locator(`#rooms tbody tr[data-room="${room}"]`);

  test('shows a new connection with its room, and publishes into the room', async () => {
    const dash = await openDashboard();
    await dash.locator('#api-status.ok').waitFor();
    const erin = await openChat(browser, server, { name: 'erin', room: 'ops' });

    const row = connectionRow(dash, 'erin');
    await row.waitFor();
    const cells = await row.locator('td').allTextContents();
    const conn = (await server.api('GET', '/api/connections')).connections.find((c) => c.name === 'erin');
    assert.ok(conn, 'the API lists erin');
    assert.equal(cells[0], conn.connection_id);
    assert.equal(cells[1], conn.client_id);
    assert.equal(cells[2], 'erin');
    assert.equal(cells[3], '/ws');
    assert.match(cells[4], /^127\.0\.0\.1:\d+$/);
    assert.equal(cells[5], 'ops');
    await roomRow(dash, 'ops').locator('.chip', { hasText: 'erin' }).waitFor();

    await dash.locator('#publish-room').selectOption('ops');
    await dash.locator('#publish-text').fill('hello from admin');
    await dash.locator('#publish-form button').click();
    await dash.locator('#publish-result', { hasText: 'offset 1' }).waitFor();
    await erin.locator('#log .msg', { hasText: 'hello from admin' }).waitFor();
    assert.deepEqual(await chatLines(erin), ['admin: hello from admin']);
    await Promise.all([dash.close(), erin.close()]);
  });

  test('charts message rates from /metrics and shows the gauges', async () => {
    const res = await fetch(`${server.httpUrl}/metrics`);
    const dash = await openDashboard();
    const a = await openChat(browser, server, { name: 'ann', room: 'rates' });
    if (res.status === 404) {
      await dash.locator('#chart[data-state="unavailable"]').waitFor();
    } else {
      // A rate needs two scrapes, 2 s apart.
      await dash.locator('#chart[data-state="ok"]').waitFor();
      await dash.waitForFunction(() => Number(document.getElementById('stat-connections').textContent) >= 1, null, { timeout: 10_000 });
      assert.match(await dash.locator('#stat-in').textContent(), /^\d[\d.,]*\/s$/);
    }
    await Promise.all([dash.close(), a.close()]);
  });

  test('without /metrics the chart says so and everything else works', async () => {
    const dash = await browser.newPage();
    await dash.route('**/metrics', (route) => route.fulfill({ status: 404, body: 'not found' }));
    await dash.goto(`${server.httpUrl}/admin`);
    await dash.locator('#chart[data-state="unavailable"]').waitFor();
    const g = await openChat(browser, server, { name: 'gus', room: 'nometrics' });
    await connectionRow(dash, 'gus').waitFor();
    await roomRow(dash, 'nometrics').waitFor();
    await dash.waitForFunction(() => Number(document.getElementById('stat-connections').textContent) >= 1, null, { timeout: 10_000 });
    await Promise.all([dash.close(), g.close()]);
  });

  test('closes a room: its members see the room closed', async () => {
    const dash = await openDashboard();
    const fay = await openChat(browser, server, { name: 'fay', room: 'doomed' });
    const gil = await openChat(browser, server, { name: 'gil', room: 'doomed' });
    await roomRow(dash, 'doomed').locator('.chip', { hasText: 'gil' }).waitFor();

    await roomRow(dash, 'doomed').locator('button', { hasText: 'Close' }).click();
    for (const page of [fay, gil]) {
      await page.locator('#banner.show', { hasText: 'was closed by the server' }).waitFor();
      assert.ok(await page.locator('#text').isDisabled(), 'composer disabled in a closed room');
      await page.waitForFunction(() => document.querySelectorAll('#members li').length === 0, null, { timeout: 10_000 });
    }
    await roomRow(dash, 'doomed').waitFor({ state: 'detached' });
    assert.equal((await server.api('GET', '/api/rooms')).rooms.some((r) => r.id === 'doomed'), false);

    // "Join again" brings a member back into a fresh room.
    await fay.locator('#banner-action').click();
    await fay.locator('#banner.show').waitFor({ state: 'hidden' });
    await fay.locator('#members li .name', { hasText: 'fay' }).waitFor();
    await Promise.all([dash.close(), fay.close(), gil.close()]);
  });

  test('disconnects a connection; the page reconnects as a new connection', async () => {
    const dash = await openDashboard();
    const hal = await openChat(browser, server, { name: 'hal', room: 'lobby' });
    const first = await hal.evaluate(() => window.sb.connectionId);
    await connectionRow(dash, 'hal').locator('button', { hasText: 'Disconnect' }).click();
    await hal.locator('#log .sys', { hasText: 'connection lost (1000' }).waitFor();
    await hal.waitForFunction((id) => window.sb.state === 'connected' && window.sb.connectionId !== id, first, { timeout: 15_000 });
    const second = await hal.evaluate(() => window.sb.connectionId);
    await dash.locator(`#connections tbody tr[data-id="${second}"]`).waitFor();
    await dash.locator(`#connections tbody tr[data-id="${first}"]`).waitFor({ state: 'detached' });
    await Promise.all([dash.close(), hal.close()]);
  });

  test('asks for the API token when the server has one', async () => {
    const guarded = await startServer({ config: `api_token = "s3cret"\n${DEFAULT_CONFIG}` });
    try {
      const dash = await openDashboard(guarded);
      await dash.locator('#api-status.bad', { hasText: 'token needed' }).waitFor();
      await dash.locator('#banner.show', { hasText: '401' }).waitFor();
      await dash.locator('#token').fill('s3cret');
      await dash.locator('#token-form button').click();
      await dash.locator('#api-status.ok').waitFor();
      assert.equal(await dash.evaluate(() => sessionStorage.getItem('switchboard.apiToken')), 's3cret');
      const ivy = await openChat(browser, guarded, { name: 'ivy', room: 'lobby' });
      await connectionRow(dash, 'ivy').waitFor();
      await Promise.all([dash.close(), ivy.close()]);
    } finally {
      await guarded.dispose();
    }
  });
});
