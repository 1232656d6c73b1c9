// Takes the documentation screenshots (1280×800) of the chat demo and the admin dashboard:
//   docs/img/chat.png       two users talking in the chat demo
//   docs/img/dashboard.png  the dashboard with connections, rooms and the rate chart
//
// Run once after changing the pages:  cd tests/browser && node screenshots.mjs
// (needs target/debug/switchboard or $SWITCHBOARD_BIN, and /usr/bin/chromium). It takes
// about 40 s: the chart needs a while of traffic to have something to show.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

import { launch, openChat } from './lib/browser.mjs';
import { REPO_ROOT, startServer } from './lib/server.mjs';

const OUT = join(REPO_ROOT, 'docs/img');
const TRAFFIC_S = Number(process.env.TRAFFIC_S || 36);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

mkdirSync(OUT, { recursive: true });
const server = await startServer();
const browser = await launch();
try {
  await server.api('POST', '/api/rooms', { id: 'design', durable: true, description: 'design reviews' });
  await server.api('POST', '/api/rooms', { id: 'stage', code: '4821', params: [{ name: 'gain', value: 0.6 }] });

  // -- chat: Alice and Bob talk in #lobby, Dana chimes in --------------------------------------
  const alice = await openChat(browser, server, { name: 'Alice', room: 'lobby' });
  const bob = await openChat(browser, server, { name: 'Bob', room: 'lobby' });
  const dana = await openChat(browser, server, { name: 'Dana', room: 'lobby' });
  const say = async (page, text) => {
    await page.locator('#text').fill(text);
    await page.locator('#text').press('Enter');
    await page.locator('#log .msg', { hasText: text }).first().waitFor();
    await sleep(150);
  };
  await say(alice, 'Morning! Is the stage build ready for tonight?');
  await say(bob, 'Almost — the lighting cues are in, the sound check is at 5.');
  await say(alice, 'Great. I moved the rehearsal room to #design, see you there after lunch.');
  await say(bob, 'Perfect, I will bring the new fader layout.');
  await say(alice, 'Phones can join #stage with code 4821 to control the gain.');
  await say(bob, 'Tested it from my phone, the slider feels instant.');
  await say(alice, 'Nice work! Dana, can you check the projector?');
  await say(dana, 'On it. Back in ten minutes.');
  await bob.locator('#log .msg', { hasText: 'Back in ten minutes' }).waitFor();
  await bob.bringToFront();
  await sleep(300);
  await bob.screenshot({ path: join(OUT, 'chat.png') });
  console.log('wrote docs/img/chat.png');

  // -- dashboard: more clients, traffic, then the screenshot -----------------------------------
  const carol = await openChat(browser, server, { name: 'Carol', room: 'design' });
  const dash = await browser.newPage();
  await dash.goto(`${server.httpUrl}/admin`);
  const traffic = await browser.newPage();
  await traffic.goto(`${server.httpUrl}/client.js`);
  await traffic.evaluate(async (seconds) => {
    const { Switchboard } = await import('/client.js');
    const sensors = [];
    for (const name of ['sensor-1', 'sensor-2', 'sensor-3']) {
      const sb = new Switchboard('/ws', { name, client_id: name });
      await sb.join('telemetry');
      sensors.push(sb);
    }
    const phone = new Switchboard('/ws', { name: 'phone', client_id: 'phone-7' });
    await phone.join('stage', { code: '4821' });
    // A varying load: each sensor publishes at a rate that rises and falls.
    const start = Date.now();
    window.trafficDone = new Promise((resolve) => {
      const tick = () => {
        const t = (Date.now() - start) / 1000;
        if (t > seconds) return resolve();
        const rate = 6 + 5 * Math.sin(t / 4) + 3 * Math.sin(t / 1.7);
        sensors.forEach((s, i) => {
          for (let k = 0; k < Math.max(0, Math.round(rate / 10 + (i === 0 ? 0.4 : 0))); k++) s.publish('telemetry', { t, temp: 20 + Math.random() }).catch(() => {});
        });
        if (Math.random() < 0.2) phone.param('stage', 'gain', Math.round(Math.random() * 100) / 100).catch(() => {});
        setTimeout(tick, 100);
      };
      tick();
    });
  }, TRAFFIC_S);
  // The screenshot is taken while the traffic still flows.
  await dash.locator('#chart[data-state="ok"]').waitFor({ timeout: 10_000 });
  await sleep((TRAFFIC_S - 2) * 1000);
  await dash.bringToFront();
  await dash.screenshot({ path: join(OUT, 'dashboard.png') });
  await traffic.evaluate(() => window.trafficDone);
  console.log('wrote docs/img/dashboard.png');
  await carol.close();
} finally {
  await browser.close();
  await server.dispose();
}
