// Reconnect and recovery through a server restart: a durable room on SQLite keeps its epoch
// and offsets, the page rejoins with `since` and shows every message exactly once, in order.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { chatLines, launch, openChat } from '../lib/browser.mjs';
import { Server } from '../lib/server.mjs';

describe('reconnect after a server restart', { timeout: 90_000 }, () => {
  let server;
  let browser;

  before(async () => {
    server = new Server({ store: 'sqlite' });
    await server.start();
    browser = await launch();
  });
  after(async () => {
    await browser?.close();
    if (server) await server.dispose();
    assert.deepEqual(browser?.pageErrors ?? [], [], 'uncaught errors in pages');
  });

  const publish = (text) => server.api('POST', '/api/rooms/keep/messages', { data: { text, name: 'ops' } });
  const offsets = (page) => page.locator('#log .msg').evaluateAll((els) => els.map((el) => Number(el.dataset.offset)));

  test('the page resumes the durable room without losing or repeating a message', async () => {
    const created = await server.api('POST', '/api/rooms', { id: 'keep', durable: true });
    assert.equal(created.room.durable, true);
    const page = await openChat(browser, server, { name: 'alice', room: 'keep' });
    // Record what switchboard.js hands the page: message offsets, statuses, recoveries.
    await page.evaluate(() => {
      window.seen = { offsets: [], states: [], recovered: [] };
      window.sb.on('message', (m) => window.seen.offsets.push(m.offset));
      window.sb.on('status', (s) => window.seen.states.push(s.state));
      window.sb.on('joined', (j) => window.seen.recovered.push([j.recovered.length, j.recovered_complete]));
    });

    assert.equal((await publish('m1')).offset, 1);
    assert.equal((await publish('m2')).offset, 2);
    await page.locator('#log .msg', { hasText: 'm2' }).waitFor();
    const port = server.port;

    // The server shuts down; the page is told (`closed` with `retry_after_ms`, close 1001).
    // Then the browser goes offline, so the page cannot reconnect until we let it, and the
    // server restarts on the same port with the same SQLite file.
    assert.equal(await server.stop(), 0, `server exit code\n${server.logTail()}`);
    await page.locator('#status:not(.connected)').waitFor();
    await page.locator('#log .sys', { hasText: 'the server is restarting' }).waitFor();
    await browser.setOffline(true);
    await server.start();
    assert.equal(server.port, port, 'restarted on the same port');
    const room = (await server.api('GET', '/api/rooms/keep')).room;
    assert.equal(room.offset, 2, 'the durable room kept its offset');

    // Published while the page is disconnected.
    for (const text of ['m3', 'm4', 'm5']) await publish(text);
    assert.ok(!(await page.locator('#status.connected').isVisible()), 'still disconnected');
    assert.deepEqual(await offsets(page), [1, 2]);

    await browser.setOffline(false);
    await page.locator('#status.connected').waitFor({ timeout: 20_000 });
    await page.locator('#log .msg', { hasText: 'm5' }).waitFor();
    await publish('m6');
    await page.locator('#log .msg', { hasText: 'm6' }).waitFor();

    const want = ['m1', 'm2', 'm3', 'm4', 'm5', 'm6'];
    assert.deepEqual(await chatLines(page), want.map((t) => `ops: ${t}`));
    assert.deepEqual(await offsets(page), [1, 2, 3, 4, 5, 6]);
    // Recovery was complete: no "could not be recovered" banner.
    assert.equal(await page.locator('#banner.show').count(), 0);
    // switchboard.js itself delivered each offset exactly once, as `message` events; the
    // three published during the outage came back through the rejoin's `recovered`.
    const seen = await page.evaluate(() => window.seen);
    assert.deepEqual(seen.offsets, [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(seen.recovered, [[3, true]]);
    for (const state of ['disconnected', 'reconnecting', 'connecting', 'connected']) {
      assert.ok(seen.states.includes(state), `status ${state} in ${seen.states}`);
    }
    await page.close();
  });
});
