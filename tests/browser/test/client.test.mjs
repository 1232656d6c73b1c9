// switchboard.js (served at /client.js) exercised inside a real browser page: backoff with
// full jitter, the bounded queue, request timeouts, error codes, recovery and dedup, obeying
// `retry_after_ms`, clock sync. Some tests script the server with a fake WebSocket passed
// as the `WebSocket` option; the others talk to a real server.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { launch } from '../lib/browser.mjs';
import { startServer } from '../lib/server.mjs';

// A scriptable stand-in for the browser's WebSocket, defined inside the page. Each socket
// "opens", sends `welcome`, and lets the script answer requests or push messages.
function installFake() {
  window.fakeServer = (script = {}) => {
    class FakeWS {
      constructor(url, protocols) {
        this.url = url;
        this.protocols = protocols;
        this.readyState = 0;
        this.n = FakeWS.all.push(this);
        this.sent = [];
        setTimeout(() => {
          if (script.refuse && script.refuse(this.n)) {
            this.readyState = 3;
            this.onclose?.({ code: 1006, reason: '' });
            return;
          }
          this.readyState = 1;
          this.onopen?.({});
          this.push({ type: 'welcome', connection_id: `conn-${this.n}`, client_id: 'fake', node_id: 'n', path: '/ws', server_time: Date.now(), heartbeat_ms: 25000, protocol: 1 });
          script.onConnect?.(this, this.n);
        }, 0);
      }
      send(data) {
        const m = JSON.parse(data);
        this.sent.push(m);
        script.onRequest?.(m, this, this.n);
      }
      push(m) {
        setTimeout(() => this.readyState === 1 && this.onmessage?.({ data: JSON.stringify(m) }), 0);
      }
      drop(code = 1006, reason = '') {
        setTimeout(() => {
          this.readyState = 3;
          this.onclose?.({ code, reason });
        }, 0);
      }
      close(code = 1005, reason = '') {
        if (this.readyState === 3) return;
        this.drop(code, reason);
      }
    }
    FakeWS.all = [];
    return FakeWS;
  };
}

describe('switchboard.js in the browser', { timeout: 90_000 }, () => {
  let server;
  let browser;
  let page;

  before(async () => {
    server = await startServer();
    browser = await launch();
    page = await browser.newPage();
    // Any page of the server's origin will do: import the module from there.
    await page.goto(`${server.httpUrl}/client.js`);
    await page.evaluate(async () => {
      window.SB = await import('/client.js');
    });
    await page.evaluate(installFake);
  });
  after(async () => {
    await browser?.close();
    if (server) assert.equal(await server.dispose(), 0, `server exit code\n${server.logTail()}`);
    assert.deepEqual(browser?.pageErrors ?? [], [], 'uncaught errors in pages');
  });

  test('pages of another origin can import /client.js and connect', async () => {
    const other = await browser.newPage();
    await other.setContent('<!doctype html><title>elsewhere</title>');
    const r = await other.evaluate(async (base) => {
      const { Switchboard } = await import(`${base}/client.js`);
      const sb = new Switchboard(`${base.replace('http', 'ws')}/ws`, { name: 'far' });
      const w = await sb.ready();
      const joined = await sb.join('cors');
      sb.close();
      return { path: w.path, members: joined.members.map((m) => m.name) };
    }, server.httpUrl);
    assert.deepEqual(r, { path: '/ws', members: ['far'] });
    await other.close();
  });

  test('backoff: exponential cap, full jitter, bounded by maxDelay', async () => {
    const r = await page.evaluate(() => {
      const { backoffDelay } = window.SB;
      const opts = { retryDelay: 500, maxDelay: 8000 };
      const out = [];
      for (let attempt = 0; attempt < 12; attempt++) {
        const cap = Math.min(8000, 500 * 2 ** attempt);
        const samples = Array.from({ length: 400 }, () => backoffDelay(attempt, opts));
        out.push({
          attempt,
          cap,
          min: Math.min(...samples),
          max: Math.max(...samples),
          low: backoffDelay(attempt, opts, () => 0),
          high: backoffDelay(attempt, opts, () => 0.999999),
          below: samples.filter((s) => s < cap / 2).length,
        });
      }
      return out;
    });
    for (const a of r) {
      assert.ok(a.min >= 0 && a.max < a.cap, `attempt ${a.attempt}: [${a.min}, ${a.max}] within [0, ${a.cap})`);
      assert.equal(a.low, 0, 'full jitter reaches down to 0');
      assert.equal(a.high, a.cap - 1, 'and up to the cap');
      // Uniform: about half the samples fall below cap/2 (400 samples; loose bounds).
      assert.ok(a.below > 120 && a.below < 280, `attempt ${a.attempt}: ${a.below}/400 below half`);
    }
    assert.deepEqual(r.map((a) => a.cap).slice(0, 6), [500, 1000, 2000, 4000, 8000, 8000]);
  });

  test('reconnect delays follow the backoff and stop after maxRetries', async () => {
    const r = await page.evaluate(async () => {
      const FakeWS = window.fakeServer({ refuse: () => true });
      const sb = new window.SB.Switchboard('/ws', { WebSocket: FakeWS, retryDelay: 20, maxDelay: 80, maxRetries: 5 });
      const events = [];
      sb.on('status', (s) => events.push(s));
      const failed = await Promise.race([
        sb.ready().then(() => 'connected', (e) => e.code),
        new Promise((res) => setTimeout(() => res('timeout'), 5000)),
      ]);
      return { failed, events, sockets: FakeWS.all.length, state: sb.state };
    });
    assert.equal(r.failed, 'CLOSED');
    assert.equal(r.state, 'failed');
    assert.equal(r.sockets, 6, 'the first attempt and 5 retries');
    const delays = r.events.filter((e) => e.state === 'reconnecting');
    assert.deepEqual(delays.map((e) => e.attempt), [1, 2, 3, 4, 5]);
    delays.forEach((e, i) => assert.ok(e.delay >= 0 && e.delay < Math.min(80, 20 * 2 ** i), `delay ${e.delay} at retry ${i}`));
    assert.equal(r.events[r.events.length - 1].state, 'failed');
  });

  test('requests wait in a bounded queue while disconnected', async () => {
    const r = await page.evaluate(async () => {
      // Nothing listens on port 9: the client keeps retrying, requests queue up.
      const sb = new window.SB.Switchboard('ws://127.0.0.1:9/ws', { queueLimit: 3, retryDelay: 60_000 });
      const results = [];
      const ps = [1, 2, 3, 4].map((n) => sb.publish('room', { n }).then(
        () => results.push(`${n}:ok`),
        (e) => results.push(`${n}:${e.code}`),
      ));
      await new Promise((res) => setTimeout(res, 50));
      const early = [...results];
      sb.close();
      await Promise.all(ps);
      return { early, results };
    });
    assert.deepEqual(r.early, ['4:QUEUE_FULL'], 'the request over the bound is rejected at once');
    assert.deepEqual(r.results.sort(), ['1:CLOSED', '2:CLOSED', '3:CLOSED', '4:QUEUE_FULL']);
  });

  test('a request without a reply times out', async () => {
    const r = await page.evaluate(async () => {
      const FakeWS = window.fakeServer({}); // answers nothing
      const sb = new window.SB.Switchboard('/ws', { WebSocket: FakeWS, requestTimeout: 150, pingInterval: 0 });
      await sb.ready();
      const t0 = performance.now();
      const err = await sb.publish('room', 1).then(() => null, (e) => e);
      const took = performance.now() - t0;
      sb.close();
      return { code: err && err.code, name: err && err.name, took };
    });
    assert.equal(r.code, 'TIMEOUT');
    assert.equal(r.name, 'SwitchboardError');
    assert.ok(r.took >= 140 && r.took < 2000, `timed out after ${r.took} ms`);
  });

  test('errors from the server reject with their code', async () => {
    const r = await page.evaluate(async (url) => {
      const sb = new window.SB.Switchboard(url, { name: 'err' });
      await sb.ready();
      const code = (p) => p.then(() => 'resolved', (e) => e.code);
      const out = {
        badRoom: await code(sb.join('not a room!')),
        notIn: await (async () => {
          const other = new window.SB.Switchboard(url);
          await other.join('someone-elses');
          const c = await code(sb.publish('someone-elses', 'x'));
          other.close();
          return c;
        })(),
        unknownTarget: await code(sb.direct('nobody-here', {})),
      };
      sb.close();
      return out;
    }, `ws://127.0.0.1:${server.port}/ws`);
    assert.deepEqual(r, { badRoom: 'BAD_REQUEST', notIn: 'NOT_IN_ROOM', unknownTarget: 'NOT_FOUND' });
  });

  test('typed methods against the server: join, publish, presence, history, direct', async () => {
    const r = await page.evaluate(async (url) => {
      const a = new window.SB.Switchboard(url, { name: 'ana', client_id: 'ana' });
      const b = new window.SB.Switchboard(url, { name: 'ben' });
      const got = [];
      b.on('message', (m) => got.push(m.data));
      const joined = await a.join('typed', { meta: { color: 'red' } });
      await b.join('typed');
      const ack = await a.publish('typed', { text: 'one' });
      const ack2 = await a.publish('typed', { text: 'two' }, { excludeSelf: true });
      const presence = await a.presence('typed');
      const history = await b.history('typed', { since: 0 });
      const direct = await new Promise((res) => {
        b.once('direct', res);
        a.direct(b.connectionId, { hi: 1 });
      });
      const welcomeClient = a.clientId;
      const cid = await a.getConnectionId();
      a.close();
      b.close();
      return { joined, ack, ack2, presence, history, direct, got, welcomeClient, cid, aId: a.connectionId };
    }, `ws://127.0.0.1:${server.port}/ws`);
    assert.equal(r.joined.offset, 0);
    assert.equal(r.joined.members[0].meta.color, 'red');
    assert.deepEqual([r.ack.room, r.ack.offset], ['typed', 1]);
    assert.equal(r.ack2.offset, 2);
    assert.equal(r.presence.count, 2);
    assert.deepEqual(r.history.messages.map((m) => m.data.text), ['one', 'two']);
    assert.deepEqual(r.got, [{ text: 'one' }, { text: 'two' }]);
    assert.equal(r.direct.from, 'ana');
    assert.deepEqual(r.direct.data, { hi: 1 });
    assert.equal(r.welcomeClient, 'ana');
    assert.equal(r.cid, r.aId);
  });

  test('typed methods: param, sync, trigger and playback sessions', async () => {
    const r = await page.evaluate(async (url) => {
      const { Switchboard } = window.SB;
      const a = new Switchboard(url, { name: 'ana', profile: 'typed' });
      const b = new Switchboard(url, { name: 'ben', profile: 'typed' });
      await a.join('params');
      await b.join('params');
      const res = await fetch('/api/rooms/params/params', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ name: 'gain', value: 0.5 }),
      });
      const next = (c, type, pred = () => true) => new Promise((resolve) => {
        const off = c.on(type, (m) => pred(m) && (off(), resolve(m)));
      });
      // The REST call's own `update` (0.5) may still be on its way: wait for ours.
      let got = next(b, 'update', (m) => m.value === 0.8);
      await a.param('params', 'gain', 0.8, { at: 1234 });
      const update = await got;
      const state = await b.sync('params');
      const outOfRange = await a.param('params', 'gain', 2).then(() => 'ok', (e) => e.code);
      got = next(b, 'trigger');
      await a.trigger('params', 'flash', { color: 'red' });
      const trigger = await got;

      await a.createSession({ name: 'kitchen' });
      const sessions = await b.getSessions();
      const id = sessions[0].session_id;
      got = next(b, 'session_updated');
      await a.updateSession(id, { volume: 0.25 });
      const updated = await got;
      got = next(b, 'set_seek');
      await a.setSeek(id, 42);
      const seek = await got;
      await a.deleteSession(id);
      const left = await b.getSessions();
      a.close();
      b.close();
      return { status: res.status, update, state, outOfRange, trigger, sessions, updated, seek, left };
    }, `ws://127.0.0.1:${server.port}/ws`);
    assert.equal(r.status, 200);
    assert.deepEqual([r.update.param, r.update.value, r.update.at], ['gain', 0.8, 1234]);
    assert.deepEqual(r.state.params, [{ name: 'gain', value: 0.8, min: 0, max: 1 }]);
    assert.equal(r.outOfRange, 'BAD_REQUEST');
    assert.deepEqual([r.trigger.name, r.trigger.data], ['flash', { color: 'red' }]);
    assert.deepEqual(r.sessions.map((s) => s.name), ['kitchen']);
    assert.equal(r.updated.volume, 0.25);
    assert.equal(r.seek.seek, 42);
    assert.deepEqual(r.left, []);
  });

  test('requests made while disconnected are sent after the reconnect, after the rejoin', async () => {
    const r = await page.evaluate(async (url) => {
      const watcher = new window.SB.Switchboard(url, { name: 'watch' });
      const seen = [];
      watcher.on('message', (m) => seen.push(m.data.n));
      await watcher.join('queued');
      const sb = new window.SB.Switchboard(url, { name: 'q', retryDelay: 200, maxDelay: 400 });
      await sb.join('queued');
      const first = sb.connectionId;
      const lost = new Promise((res) => sb.on('status', (s) => s.state === 'disconnected' && res()));
      await fetch(`/api/connections/${encodeURIComponent(first)}`, { method: 'DELETE' });
      await lost;
      const state = sb.state;
      const acks = await Promise.all([1, 2, 3].map((n) => sb.publish('queued', { n })));
      const deadline = Date.now() + 5000;
      while (seen.length < 3 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
      const out = { state, acks: acks.map((a) => a.offset), seen, again: sb.connectionId !== first, rooms: sb.rooms() };
      sb.close();
      watcher.close();
      return out;
    }, `ws://127.0.0.1:${server.port}/ws`);
    assert.equal(r.state, 'reconnecting');
    assert.deepEqual(r.acks, [1, 2, 3]);
    assert.deepEqual(r.seen, [1, 2, 3]);
    assert.ok(r.again, 'a new connection');
    assert.deepEqual(r.rooms, ['queued']);
  });

  test('recovery: rejoins with since, delivers each offset once and in order, flags gaps', async () => {
    const r = await page.evaluate(async () => {
      const joins = [];
      const E = 'epoch-1';
      const msg = (offset, epoch = E) => ({ type: 'message', room: 'r', data: { offset, epoch }, from: 'x', connection_id: 'c', offset, ts: Date.now() });
      const FakeWS = window.fakeServer({
        onRequest(m, ws, n) {
          if (m.type !== 'join') return;
          joins.push(m.since || null);
          const base = { type: 'joined', id: m.id, room: 'r', members: [] };
          if (n === 1) {
            ws.push({ ...base, epoch: E, offset: 2, recovered: [], recovered_complete: true });
            ws.push(msg(3));
            ws.drop();
          } else if (n === 2) {
            // Overlapping recovery (3 again), then a live duplicate of 5: neither repeats.
            ws.push({ ...base, epoch: E, offset: 5, recovered: [msg(3), msg(5), msg(4)], recovered_complete: true });
            ws.push(msg(5));
            ws.push(msg(6));
            ws.drop(1001, 'server shutdown');
          } else {
            ws.push({ ...base, epoch: 'epoch-2', offset: 0, recovered: [], recovered_complete: false });
            ws.push(msg(1, 'epoch-2'));
          }
        },
      });
      const sb = new window.SB.Switchboard('/ws', { WebSocket: FakeWS, retryDelay: 10, maxDelay: 20, pingInterval: 0 });
      const got = [];
      const incomplete = [];
      sb.on('message', (m) => got.push(`${m.data.epoch}:${m.offset}`));
      sb.on('recovery_incomplete', (e) => incomplete.push(e));
      await sb.join('r');
      const deadline = Date.now() + 5000;
      while (got.length < 5 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 10));
      const out = { got, joins, incomplete, position: sb.position('r') };
      sb.close();
      return out;
    });
    assert.deepEqual(r.got, ['epoch-1:3', 'epoch-1:4', 'epoch-1:5', 'epoch-1:6', 'epoch-2:1']);
    assert.deepEqual(r.joins, [null, { offset: 3, epoch: 'epoch-1' }, { offset: 6, epoch: 'epoch-1' }]);
    assert.equal(r.incomplete.length, 1);
    assert.deepEqual(
      [r.incomplete[0].room, r.incomplete[0].previous_epoch, r.incomplete[0].epoch, r.incomplete[0].since],
      ['r', 'epoch-1', 'epoch-2', 6],
    );
    assert.deepEqual(r.position, { epoch: 'epoch-2', offset: 1 });
  });

  test('obeys retry_after_ms from a shutdown notice', async () => {
    const r = await page.evaluate(async () => {
      const FakeWS = window.fakeServer({
        onConnect(ws, n) {
          if (n === 1) {
            ws.push({ type: 'closed', reason: 'shutdown', retry_after_ms: 321 });
            ws.drop(1001, 'server shutdown');
          }
        },
      });
      const sb = new window.SB.Switchboard('/ws', { WebSocket: FakeWS, retryDelay: 10_000, pingInterval: 0 });
      const events = [];
      sb.on('status', (s) => events.push(s));
      await sb.ready();
      const t0 = performance.now();
      await new Promise((res) => sb.on('status', (s) => s.state === 'connected' && res()));
      const took = performance.now() - t0;
      sb.close();
      return { events, took };
    });
    const reconnecting = r.events.find((e) => e.state === 'reconnecting');
    assert.deepEqual(reconnecting, { state: 'reconnecting', attempt: 1, delay: 321 });
    const disconnected = r.events.find((e) => e.state === 'disconnected');
    assert.deepEqual(disconnected, { state: 'disconnected', code: 1001, reason: 'server shutdown' });
    assert.ok(r.took >= 300 && r.took < 3000, `reconnected after ${r.took} ms`);
  });

  test('clock: NTP-style offset, median of the last 8 samples', async () => {
    const r = await page.evaluate(async (url) => {
      const { median } = window.SB;
      const m = [median([5]), median([3, 1, 2]), median([4, 1, 3, 2]), median([1, 1000, 2, 3, 2])];
      // A fake server whose clock runs 5 s ahead, with one wild sample.
      let pings = 0;
      const FakeWS = window.fakeServer({
        onRequest(msg, ws) {
          if (msg.type !== 'ping') return;
          pings += 1;
          const skew = pings === 2 ? 60_000 : 5000;
          ws.push({ type: 'pong', id: msg.id, client_time: msg.client_time, server_time: Date.now() + skew });
        },
      });
      const sb = new window.SB.Switchboard('/ws', { WebSocket: FakeWS, pingInterval: 0 });
      await sb.ready();
      for (let i = 0; i < 5; i++) await sb.ping();
      const fake = { offset: sb.clock.offset, samples: sb.clock.samples, now: sb.serverNow() - Date.now() };
      sb.close();
      // Against the real server the clocks agree.
      const real = new window.SB.Switchboard(url, { pingInterval: 0 });
      await real.ready();
      const pong = await real.ping();
      const out = { m, fake, real: { offset: real.clock.offset, rtt: pong.rtt } };
      real.close();
      return out;
    }, `ws://127.0.0.1:${server.port}/ws`);
    assert.deepEqual(r.m, [5, 2, 2.5, 2]);
    assert.equal(r.fake.samples, 5);
    assert.ok(Math.abs(r.fake.offset - 5000) < 50, `offset ${r.fake.offset} ≈ 5000 despite one outlier`);
    assert.ok(Math.abs(r.fake.now - 5000) < 50);
    assert.ok(Math.abs(r.real.offset) < 50, `real offset ${r.real.offset}`);
    assert.ok(r.real.rtt >= 0 && r.real.rtt < 1000);
  });
});
