// permessage-deflate (RFC 7692) with the `ws` client library, which offers it by default
// (`perMessageDeflate`). Endpoints from tests/e2e/configs/compression.toml.
// PROTOCOL §1 (permessage-deflate), §10 (compression).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import WebSocket from 'ws';

import { Client, FrameQueue, openSocket, uniqueRoom, withTimeout } from '../lib/client.mjs';
import { startServer } from '../lib/server.mjs';

const readings = (n) =>
  Array.from({ length: n }, (_, i) => ({ sensor: `room-${i % 7}`, temperature: 20 + (i % 5), unit: 'C' }));

describe('permessage-deflate with the ws client', { timeout: 60_000 }, () => {
  let server;
  const sockets = [];
  const track = (ws) => {
    sockets.push(ws);
    return ws;
  };
  /** A socket with these permessage-deflate options, opened (bounded); `agreed` is the
   * server's Sec-WebSocket-Extensions answer. */
  const openWith = (path, perMessageDeflate = true) => {
    const ws = track(new WebSocket(server.wsUrl(path), [], { perMessageDeflate }));
    const frames = new FrameQueue(ws);
    let agreed = '';
    ws.once('upgrade', (res) => {
      agreed = res.headers['sec-websocket-extensions'] ?? '';
    });
    return withTimeout(
      new Promise((res, rej) => {
        ws.once('open', () => res({ ws, frames, agreed }));
        ws.once('error', rej);
      }),
      5_000,
      `open ${path}`,
    );
  };

  before(async () => {
    server = await startServer('compression.toml');
  });
  after(async () => {
    sockets.forEach((ws) => ws.close());
    if (server) assert.equal(await server.stop(), 0, 'server exit code');
  });

  test('negotiated on a compression endpoint, not elsewhere', async () => {
    const z = await openWith('/echo-deflate');
    assert.equal(z.ws.extensions, 'permessage-deflate');
    assert.equal(z.agreed, 'permessage-deflate; server_no_context_takeover; client_no_context_takeover');
    const plain = await openWith('/echo');
    assert.equal(plain.ws.extensions, '');
    assert.equal(plain.agreed, '');
  });

  test('protocol messages through a deflate connection', async () => {
    const room = uniqueRoom('node-deflate');
    const a = await Client.connect(server, '/deflate');
    const b = await Client.connect(server, '/ws');
    track(a.ws);
    track(b.ws);
    assert.match(a.ws.extensions, /permessage-deflate/);
    await a.request({ type: 'join', room }, 'joined');
    await b.request({ type: 'join', room }, 'joined');
    const data = readings(200);
    await a.request({ type: 'publish', room, data }, 'ack');
    for (const c of [a, b]) {
      assert.deepEqual((await c.expect('message', { room })).data, data);
    }
  });

  test('echo of large, binary and small messages', async () => {
    const { ws, frames } = await openSocket(server.wsUrl('/echo-deflate'));
    track(ws);
    const text = JSON.stringify(readings(500)).slice(0, 60_000);
    const bin = Buffer.alloc(30_000, 7);
    for (const [payload, isBinary] of [[text, false], [bin, true], ['tiny', false]]) {
      ws.send(payload);
      const got = await frames.next();
      assert.equal(got.isBinary, isBinary);
      assert.deepEqual(got.data, payload);
    }
  });

  test('context takeover in both directions', async () => {
    const { ws, frames, agreed } = await openWith('/echo-deflate-takeover', { threshold: 0 });
    assert.equal(agreed, 'permessage-deflate');
    for (let i = 0; i < 20; i++) {
      const msg = JSON.stringify({ i, readings: readings(20 + i) });
      ws.send(msg);
      assert.deepEqual(await frames.next(), { data: msg, isBinary: false });
    }
  });

  test('small windows asked by the client', async () => {
    const { ws, frames, agreed } = await openWith('/echo-deflate', {
      serverMaxWindowBits: 10,
      clientMaxWindowBits: 10,
      threshold: 0,
    });
    assert.match(agreed, /server_max_window_bits=10/);
    assert.match(agreed, /client_max_window_bits=10/);
    const msg = JSON.stringify(readings(800)).slice(0, 50_000);
    ws.send(msg);
    assert.deepEqual(await frames.next(), { data: msg, isBinary: false });
  });
});
