// Protocol-mode client on the `ws` package. `expect()` returns the first message matching a
// type and fields; others stay queued in arrival order. Every wait is bounded.
import WebSocket from 'ws';

export const TIMEOUT_MS = 5_000;

function matches(msg, type, fields) {
  if (msg === null || typeof msg !== 'object') return false;
  if (type !== undefined && msg.type !== type) return false;
  return Object.entries(fields).every(([k, v]) => JSON.stringify(msg[k]) === JSON.stringify(v));
}

/** Resolve with `promise`, or reject after `ms` with `what` in the message. */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, rej) => {
    timer = setTimeout(() => rej(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Open a WebSocket and wait for `open` (bounded). Resolves to `{ ws, frames }`: the frame
 * queue is attached before the handshake completes, because a server may send its first
 * message in the same TCP segment as the 101 response.
 */
export function openSocket(url, protocols = [], timeoutMs = TIMEOUT_MS) {
  const ws = new WebSocket(url, protocols);
  const frames = new FrameQueue(ws);
  return withTimeout(
    new Promise((res, rej) => {
      ws.once('open', () => res({ ws, frames }));
      ws.once('error', rej);
      ws.once('unexpected-response', (_req, resp) => rej(new Error(`upgrade answered ${resp.statusCode}`)));
    }),
    timeoutMs,
    `open ${url}`,
  ).catch((err) => {
    ws.terminate();
    throw err;
  });
}

/** Collects every frame of a raw (non-protocol) socket: {data, isBinary}. */
export class FrameQueue {
  constructor(ws) {
    this.ws = ws;
    this.frames = [];
    this.waiters = [];
    ws.on('message', (data, isBinary) => {
      this.frames.push({ data: isBinary ? Buffer.from(data) : data.toString('utf8'), isBinary });
      this.waiters.splice(0).forEach((wake) => wake());
    });
    ws.on('close', () => this.waiters.splice(0).forEach((wake) => wake()));
  }

  /** The next frame, waiting at most `timeoutMs`. */
  async next(timeoutMs = TIMEOUT_MS) {
    const deadline = Date.now() + timeoutMs;
    while (this.frames.length === 0) {
      const left = deadline - Date.now();
      if (left <= 0 || this.ws.readyState !== WebSocket.OPEN) {
        throw new Error(`no frame within ${timeoutMs} ms (socket state ${this.ws.readyState})`);
      }
      await new Promise((res) => {
        const timer = setTimeout(res, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          res();
        });
      });
    }
    return this.frames.shift();
  }
}

export class Client {
  constructor(ws, frames) {
    this.ws = ws;
    this.queue = frames;
    this.backlog = [];
    this.welcome = null;
    this.nextId = 1;
  }

  static async connect(server, path = '/ws', query = {}) {
    const { ws, frames } = await openSocket(server.wsUrl(path, query), ['switchboard.json']);
    const client = new Client(ws, frames);
    client.welcome = await client.recv();
    if (client.welcome.type !== 'welcome') {
      ws.terminate();
      throw new Error(`first message is not welcome: ${JSON.stringify(client.welcome)}`);
    }
    return client;
  }

  get connectionId() {
    return this.welcome.connection_id;
  }

  get clientId() {
    return this.welcome.client_id;
  }

  send(msg) {
    this.ws.send(JSON.stringify(msg));
  }

  async recv(timeoutMs = TIMEOUT_MS) {
    if (this.backlog.length) return this.backlog.shift();
    const frame = await this.queue.next(timeoutMs);
    if (frame.isBinary) throw new Error('JSON encoding must use text frames');
    return JSON.parse(frame.data);
  }

  async expect(type, fields = {}, timeoutMs = TIMEOUT_MS) {
    const i = this.backlog.findIndex((m) => matches(m, type, fields));
    if (i >= 0) return this.backlog.splice(i, 1)[0];
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const left = deadline - Date.now();
      let msg;
      try {
        if (left <= 0) throw new Error('deadline');
        const frame = await this.queue.next(left);
        msg = JSON.parse(frame.data);
      } catch (err) {
        throw new Error(
          `waiting for ${type} ${JSON.stringify(fields)}: ${err.message}; unmatched: ${JSON.stringify(this.backlog.slice(-5))}`,
        );
      }
      if (matches(msg, type, fields)) return msg;
      this.backlog.push(msg);
    }
  }

  /** Send with an id and wait for the reply carrying it; assert its type when given. */
  async request(msg, expectType, timeoutMs = TIMEOUT_MS) {
    const id = msg.id ?? `n${this.nextId++}`;
    this.send({ ...msg, id });
    const reply = await this.expect(undefined, { id }, timeoutMs);
    if (expectType && reply.type !== expectType) {
      throw new Error(`${JSON.stringify(msg)} -> expected ${expectType}, got ${JSON.stringify(reply)}`);
    }
    return reply;
  }

  /** Ping round trip; returns and clears what arrived before the pong. */
  async barrier() {
    await this.request({ type: 'ping' }, 'pong');
    return this.backlog.splice(0);
  }

  close() {
    this.ws.close();
  }
}

/** Open `n` clients concurrently. */
export function connectMany(server, n, path = '/ws', query = {}) {
  return Promise.all(Array.from({ length: n }, () => Client.connect(server, path, query)));
}

let roomSeq = 0;
export function uniqueRoom(prefix) {
  roomSeq += 1;
  return `${prefix}.${process.pid}.${roomSeq}.${Math.random().toString(36).slice(2, 8)}`;
}
