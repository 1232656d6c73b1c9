// The chat demo at `/` (web/index.html on switchboard.js) in real browser pages:
// two users talk, presence follows joins and leaves, history shows on join.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { chatLines, launch, openChat } from '../lib/browser.mjs';
import { startServer } from '../lib/server.mjs';

describe('chat demo', { timeout: 60_000 }, () => {
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

  async function say(page, text) {
    await page.locator('#text').fill(text);
    await page.locator('#text').press('Enter');
  }

  async function waitForLine(page, line) {
    await page.locator('#log .msg', { hasText: line.split(': ')[1] }).first().waitFor();
    await page.waitForFunction(
      (l) => [...document.querySelectorAll('#log .msg')].some((el) => `${el.querySelector('.who').textContent}: ${el.querySelector('.text').textContent}` === l),
      line,
      { timeout: 10_000 },
    );
  }

  test('two pages chat with each other and see the sender names', async () => {
    const alice = await openChat(browser, server, { name: 'alice', room: 'lobby' });
    const bob = await openChat(browser, server, { name: 'bob', room: 'lobby' });

    await say(alice, 'hello bob');
    await waitForLine(bob, 'alice: hello bob');
    await waitForLine(alice, 'alice: hello bob');

    await say(bob, 'hi alice!');
    await waitForLine(alice, 'bob: hi alice!');
    await waitForLine(bob, 'bob: hi alice!');

    assert.deepEqual(await chatLines(alice), ['alice: hello bob', 'bob: hi alice!']);
    assert.deepEqual(await chatLines(bob), ['alice: hello bob', 'bob: hi alice!']);
    // Own messages are marked, the other's are not.
    assert.equal(await alice.locator('#log .msg.mine').count(), 1);
    // Every message shows a time.
    assert.match(await bob.locator('#log .msg time').first().textContent(), /\d{1,2}:\d{2}/);

    // A late joiner gets the room's history.
    const dave = await openChat(browser, server, { name: 'dave', room: 'lobby' });
    await waitForLine(dave, 'bob: hi alice!');
    assert.deepEqual(await chatLines(dave), ['alice: hello bob', 'bob: hi alice!']);
    await Promise.all([alice.close(), bob.close(), dave.close()]);
  });

  test('the presence list follows a third page joining and leaving', async () => {
    const room = 'presence-room';
    const names = async (page) => (await page.locator('#members li .name').allTextContents()).sort();
    const waitMembers = (page, expected) => page.waitForFunction(
      (want) => [...document.querySelectorAll('#members li .name')].map((e) => e.textContent).sort().join(',') === want,
      [...expected].sort().join(','),
      { timeout: 10_000 },
    );

    const alice = await openChat(browser, server, { name: 'alice', room });
    const bob = await openChat(browser, server, { name: 'bob', room });
    await waitMembers(alice, ['alice', 'bob']);
    await waitMembers(bob, ['alice', 'bob']);

    const carol = await openChat(browser, server, { name: 'carol', room });
    await waitMembers(carol, ['alice', 'bob', 'carol']);
    await waitMembers(alice, ['alice', 'bob', 'carol']);
    await waitMembers(bob, ['alice', 'bob', 'carol']);
    assert.equal(await alice.locator('#member-count').textContent(), '3');
    await alice.locator('#log .sys', { hasText: 'carol joined' }).waitFor();

    await carol.close();
    await waitMembers(alice, ['alice', 'bob']);
    await waitMembers(bob, ['alice', 'bob']);
    await bob.locator('#log .sys', { hasText: 'carol left' }).waitFor();
    assert.deepEqual(await names(alice), ['alice', 'bob']);

    // Switching rooms from the picker leaves the old room: the others see it.
    await bob.locator('#room-input').fill('elsewhere');
    await bob.locator('#room-input').press('Enter');
    await bob.locator('#chat-title', { hasText: '#elsewhere' }).waitFor();
    await waitMembers(bob, ['bob']);
    await waitMembers(alice, ['alice']);
    await Promise.all([alice.close(), bob.close()]);
  });
});
