// Protocol mode through the `ws` client library: welcome, join/publish/ack, direct
// messages, fan-out ordering. PROTOCOL §3.1, §4, §5, §11.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { Client, connectMany, uniqueRoom } from '../lib/client.mjs';
import { startServer } from '../lib/server.mjs';

describe('protocol endpoint with the ws client', { timeout: 60_000 }, () => {
  let server;
  const open = [];
  const connect = async (...args) => {
    const c = await Client.connect(server, ...args);
    open.push(c);
    return c;
  };
  const many = async (...args) => {
    const cs = await connectMany(server, ...args);
    open.push(...cs);
    return cs;
  };

  before(async () => {
    server = await startServer();
  });
  after(async () => {
    open.forEach((c) => c.close());
    if (server) assert.equal(await server.stop(), 0, 'server exit code');
  });

  test('welcome', async () => {
    const c = await connect('/ws', { client_id: 'node-client' });
    const w = c.welcome;
    assert.equal(w.type, 'welcome');
    assert.equal(typeof w.connection_id, 'string');
    assert.ok(w.connection_id.length > 0);
    assert.equal(w.client_id, 'node-client');
    assert.equal(typeof w.node_id, 'string');
    assert.equal(w.path, '/ws');
    assert.ok(Number.isInteger(w.server_time) && Math.abs(w.server_time - Date.now()) < 5000);
    assert.ok(Number.isInteger(w.heartbeat_ms));
    assert.equal(w.protocol, 1);
    assert.equal(c.ws.protocol, 'switchboard.json');
  });

  test('join, publish, ack round trip', async () => {
    const room = uniqueRoom('node-roundtrip');
    const [a, b] = await many(2);
    const joined = await a.request({ type: 'join', room }, 'joined');
    assert.equal(joined.room, room);
    assert.equal(joined.offset, 0);
    assert.deepEqual(joined.members.map((m) => m.connection_id), [a.connectionId]);
    await b.request({ type: 'join', room }, 'joined');
    const pj = await a.expect('presence_join', { room });
    assert.equal(pj.member.connection_id, b.connectionId);

    const ack = await a.request({ type: 'publish', room, data: { text: 'hello from node' }, id: 'n-pub' }, 'ack');
    assert.deepEqual([ack.id, ack.room, ack.offset], ['n-pub', room, 1]);
    for (const c of [a, b]) {
      const m = await c.expect('message', { room });
      assert.deepEqual(m.data, { text: 'hello from node' });
      assert.equal(m.offset, 1);
      assert.equal(m.from, a.clientId);
      assert.equal(m.connection_id, a.connectionId);
      assert.equal(m.id, undefined, 'broadcasts carry no id');
    }
  });

  test('direct messages by client_id and by connection_id', async () => {
    const bob1 = await connect('/ws', { client_id: 'node-bob' });
    const bob2 = await connect('/ws', { client_id: 'node-bob' });
    const alice = await connect('/ws', { client_id: 'node-alice' });

    await alice.request({ type: 'direct', to: 'node-bob', data: 'to every bob' }, 'ack');
    for (const bob of [bob1, bob2]) {
      const d = await bob.expect('direct');
      assert.equal(d.data, 'to every bob');
      assert.equal(d.from, 'node-alice');
      assert.equal(d.connection_id, alice.connectionId);
    }

    await alice.request({ type: 'direct', to: bob2.connectionId, data: 'only bob2' }, 'ack');
    assert.equal((await bob2.expect('direct')).data, 'only bob2');
    const stray = (await bob1.barrier()).filter((m) => m.type === 'direct');
    assert.deepEqual(stray, [], 'bob1 must not get a direct addressed to bob2');
  });

  test('50 clients each receive 20 messages in order', async () => {
    const room = uniqueRoom('node-fanout');
    const clients = await many(50);
    await Promise.all(clients.map((c) => c.request({ type: 'join', room }, 'joined', 20_000)));
    const receive = async (c) => {
      const got = [];
      while (got.length < 20) {
        const m = await c.expect('message', { room }, 20_000);
        got.push([m.offset, m.data.seq]);
      }
      return got;
    };
    const receivers = clients.map(receive);
    for (let seq = 0; seq < 20; seq += 1) clients[0].send({ type: 'publish', room, data: { seq } });
    const want = Array.from({ length: 20 }, (_, i) => [i + 1, i]);
    for (const got of await Promise.all(receivers)) assert.deepEqual(got, want);
  });
});
