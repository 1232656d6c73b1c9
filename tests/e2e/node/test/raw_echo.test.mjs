// Raw and echo endpoints with plain `ws` sockets, no envelope. PROTOCOL §1.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { openSocket } from '../lib/client.mjs';
import { startServer } from '../lib/server.mjs';

describe('raw and echo endpoints with the ws client', { timeout: 60_000 }, () => {
  let server;
  const sockets = [];
  const open = async (path) => {
    const conn = await openSocket(server.wsUrl(path));
    sockets.push(conn.ws);
    return conn;
  };

  before(async () => {
    server = await startServer();
  });
  after(async () => {
    sockets.forEach((ws) => ws.close());
    if (server) assert.equal(await server.stop(), 0, 'server exit code');
  });

  test('raw chat between two ws clients', async () => {
    const alice = await open('/raw');
    const bob = await open('/raw');
    alice.ws.send('hi bob');
    assert.deepEqual(await bob.frames.next(), { data: 'hi bob', isBinary: false });
    bob.ws.send(Buffer.from([1, 2, 3, 255]));
    // alice's first frame is bob's answer: her own "hi bob" was not relayed back to her.
    const got = await alice.frames.next();
    assert.equal(got.isBinary, true);
    assert.deepEqual([...got.data], [1, 2, 3, 255]);
  });

  test('echo of text and binary frames', async () => {
    const { ws, frames } = await open('/echo');
    ws.send('echo ✓');
    assert.deepEqual(await frames.next(), { data: 'echo ✓', isBinary: false });
    const bytes = Buffer.from(Array.from({ length: 3000 }, (_, i) => i % 256));
    ws.send(bytes);
    const got = await frames.next();
    assert.equal(got.isBinary, true);
    assert.ok(bytes.equals(got.data));
    ws.send('');
    assert.deepEqual(await frames.next(), { data: '', isBinary: false });
  });
});
