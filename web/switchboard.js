// switchboard.js — the browser client for Switchboard (wire protocol v1, JSON encoding).
//
// A dependency-free ES module. Served by every Switchboard server at `/client.js`:
//
//   import { Switchboard } from '/client.js';
//   const sb = new Switchboard('/ws', { name: 'alice' });
//   sb.on('message', (m) => console.log(m.room, m.offset, m.data));
//   await sb.join('lobby');
//   await sb.publish('lobby', { text: 'hi' });
//
// What it does for you (docs/clients.md has the full reference):
// - requests are promises: they resolve on the reply carrying the same `id` and reject
//   with a `SwitchboardError` whose `code` is the server's error code (or `TIMEOUT`,
//   `QUEUE_FULL`, `DISCONNECTED`, `CLOSED`);
// - it reconnects with exponential backoff and full jitter, obeying the server's
//   `retry_after_ms`, rejoins its rooms with `since` and hands recovered messages over as
//   ordinary `message` events, exactly once and in offset order;
// - requests made while disconnected wait in a bounded queue;
// - it estimates the server clock from `ping`/`pong` (`serverNow()`).
//
// Browsers do not let a page read the status or headers of a refused WebSocket upgrade,
// so the `Retry-After` header of a `503` cannot be seen here; the backoff covers it.

/** Client-side error codes, beside the server's (`BAD_REQUEST`, `NOT_IN_ROOM`, …). */
export const ClientErrorCode = Object.freeze({
  TIMEOUT: 'TIMEOUT', // no reply within `requestTimeout`
  QUEUE_FULL: 'QUEUE_FULL', // disconnected and `queueLimit` requests already wait
  DISCONNECTED: 'DISCONNECTED', // the connection dropped after the request was sent
  CLOSED: 'CLOSED', // close() was called, or the client gave up reconnecting
});

/** A failed request. `code` is a server error code or one of `ClientErrorCode`. */
export class SwitchboardError extends Error {
  constructor(code, message, reply) {
    super(message || code);
    this.name = 'SwitchboardError';
    this.code = code;
    if (reply !== undefined) this.reply = reply;
  }
}

/**
 * The delay before reconnect attempt `attempt` (0 for the first retry): exponential
 * backoff with full jitter, uniform in [0, min(maxDelay, retryDelay · 2^attempt)).
 */
export function backoffDelay(attempt, { retryDelay = 500, maxDelay = 30_000 } = {}, random = Math.random) {
  const cap = Math.min(maxDelay, retryDelay * 2 ** Math.min(Math.max(attempt, 0), 40));
  return Math.floor(random() * cap);
}

/** The median of a non-empty list of numbers. */
export function median(values) {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

const DEFAULTS = {
  name: undefined,
  client_id: undefined,
  profile: undefined,
  token: undefined, // a string, or a function returning one (or a promise of one)
  encoding: 'json',
  requestTimeout: 10_000,
  connectTimeout: 10_000, // from opening the socket to `welcome`
  retryDelay: 500,
  maxDelay: 30_000,
  maxRetries: Infinity, // consecutive failed attempts before giving up (`failed`)
  queueLimit: 100,
  pingInterval: 15_000, // clock sync and liveness; 0 turns it off
  clockSamples: 8,
  reconnect: true,
  terminalCloseCodes: [4001, 4003], // closes after which it does not reconnect
  autoConnect: true,
  WebSocket: undefined, // a WebSocket implementation; globalThis.WebSocket by default
};

// Requests that are safe to send again when the connection dropped before their reply.
const RETRYABLE = new Set(['join', 'leave', 'presence', 'history', 'sync', 'set_meta',
  'get_sessions', 'get_connection_id', 'ping']);

function wsUrl(url, params) {
  const base = typeof location !== 'undefined' ? location.href : undefined;
  const u = new URL(url ?? '/ws', base);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') u.searchParams.set(k, String(v));
  }
  return u.toString();
}

function reply(m) {
  const { type: _t, id: _i, ...rest } = m;
  return rest;
}

/**
 * A connection to a Switchboard endpoint that survives disconnects.
 *
 * `state` is one of `idle`, `connecting`, `connected`, `reconnecting`, `failed`, `closed`.
 */
export class Switchboard {
  constructor(url = '/ws', options = {}) {
    const opts = { ...DEFAULTS, ...options };
    if (options.clientId !== undefined && options.client_id === undefined) opts.client_id = options.clientId;
    if (opts.encoding !== 'json') throw new Error(`switchboard.js speaks JSON only, not ${opts.encoding}`);
    this.url = url;
    this.opts = opts;
    this.state = 'idle';
    this.welcome = null;
    this.connectionId = null;
    this.clientId = null;
    this._WS = opts.WebSocket || globalThis.WebSocket;
    this._ws = null;
    this._seq = 0;
    this._pending = new Map(); // id → request, sent and waiting for its reply
    this._queue = []; // requests waiting for a connection
    this._listeners = new Map();
    this._rooms = new Map(); // joined rooms: room → { code, meta, members: Map }
    this._positions = new Map(); // last seen per room: room → { epoch, offset }
    this._meta = null; // last set_meta, re-sent after a reconnect
    this._attempt = 0;
    this._retryAfter = null;
    this._retryTimer = null;
    this._connectTimer = null;
    this._pingTimer = null;
    this._closing = false;
    this._samples = [];
    this._clock = { offset: 0, rtt: null };
    this._waiters = [];
    this._onOnline = () => {
      if (this.state === 'reconnecting' && this._retryTimer) {
        clearTimeout(this._retryTimer);
        this._retryTimer = null;
        this._open();
      }
    };
    if (opts.autoConnect) this.connect().catch(() => {});
  }

  // -- events ---------------------------------------------------------------------------

  /**
   * Listens to `type`: any server message type (`message`, `joined`, `presence_join`,
   * `closed`, `direct`, `update`, `sessions`, …), `status` ({state, …}),
   * `recovery_incomplete` ({room, …}), or `*` (every event, as fn(payload, type)).
   * Returns a function that removes the listener.
   */
  on(type, fn) {
    let set = this._listeners.get(type);
    if (!set) this._listeners.set(type, (set = new Set()));
    set.add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    this._listeners.get(type)?.delete(fn);
  }

  once(type, fn) {
    const off = this.on(type, (p) => {
      off();
      fn(p);
    });
    return off;
  }

  _emit(type, payload) {
    for (const [key, arg2] of [[type, undefined], ['*', type]]) {
      const set = this._listeners.get(key);
      if (!set) continue;
      for (const fn of [...set]) {
        try {
          fn(payload, arg2);
        } catch (e) {
          // A listener's bug must not break the client; report it asynchronously.
          setTimeout(() => {
            throw e;
          });
        }
      }
    }
  }

  _status(state, details = {}) {
    if (state !== 'disconnected') this.state = state;
    this._emit('status', { state, ...details });
  }

  // -- connection -----------------------------------------------------------------------

  /** Starts connecting (when idle, failed or closed); resolves with `welcome`. */
  connect() {
    if (this.state === 'idle' || this.state === 'failed' || this.state === 'closed') {
      this._closing = false;
      this._attempt = 0;
      if (typeof addEventListener === 'function') addEventListener('online', this._onOnline);
      this._open();
    }
    return this.ready();
  }

  /** Skips the rest of the backoff wait (or starts again after `failed`/`closed`). */
  retryNow() {
    if (this.state === 'failed' || this.state === 'closed' || this.state === 'idle') this.connect().catch(() => {});
    else this._onOnline();
  }

  /** Resolves with `welcome` once connected; rejects if the client fails or is closed. */
  ready() {
    if (this.state === 'connected') return Promise.resolve(this.welcome);
    if (this.state === 'closed' || this.state === 'failed') {
      return Promise.reject(new SwitchboardError('CLOSED', `the client is ${this.state}`));
    }
    return new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
  }

  /** Closes the connection for good (no reconnect). Waiting requests reject with CLOSED. */
  close(code = 1000, reason = 'client closed') {
    this._closing = true;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    const ws = this._ws;
    this._teardown();
    if (ws) {
      try {
        ws.close(code, reason);
      } catch {
        /* already closing */
      }
      this._status('disconnected', { code, reason });
    }
    this._failAll('CLOSED', 'the client was closed');
    if (typeof removeEventListener === 'function') removeEventListener('online', this._onOnline);
    this._status('closed');
    this._settleWaiters(new SwitchboardError('CLOSED', 'the client was closed'));
  }

  async _open() {
    this._status('connecting', { attempt: this._attempt });
    let token = this.opts.token;
    try {
      if (typeof token === 'function') token = await token();
    } catch (e) {
      this._lost(0, `token: ${e && e.message}`);
      return;
    }
    if (this._closing) return;
    const url = wsUrl(this.url, {
      client_id: this.opts.client_id,
      name: this.opts.name,
      profile: this.opts.profile,
      token,
    });
    let ws;
    try {
      ws = new this._WS(url, ['switchboard.json']);
    } catch (e) {
      this._lost(0, String(e && e.message));
      return;
    }
    this._ws = ws;
    this._connectTimer = setTimeout(() => {
      if (this._ws === ws) this._drop(ws, 'no welcome within connectTimeout');
    }, this.opts.connectTimeout);
    ws.onmessage = (ev) => {
      if (this._ws !== ws) return;
      let m;
      try {
        m = JSON.parse(ev.data);
      } catch {
        return; // not a protocol frame: ignore
      }
      if (m && typeof m === 'object' && typeof m.type === 'string') this._dispatch(m);
    };
    ws.onclose = (ev) => {
      if (this._ws !== ws) return;
      this._lost(ev.code, ev.reason);
    };
    ws.onerror = () => {}; // a close event always follows
  }

  // The socket is gone (closed by the server, the network or us): clean up, then either
  // reconnect or stop.
  _lost(code, reason) {
    const wasOpen = this._ws !== null;
    this._teardown();
    if (wasOpen) this._status('disconnected', { code, reason });
    if (this._closing) return;
    if (!this.opts.reconnect || this.opts.terminalCloseCodes.includes(code)) {
      this._giveUp(code, reason);
      return;
    }
    if (this._attempt >= this.opts.maxRetries) {
      this._giveUp(code, reason);
      return;
    }
    let delay;
    if (this._retryAfter !== null) {
      delay = this._retryAfter;
      this._retryAfter = null;
    } else {
      delay = backoffDelay(this._attempt, this.opts);
    }
    this._attempt += 1;
    this._status('reconnecting', { attempt: this._attempt, delay });
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      this._open();
    }, delay);
  }

  _giveUp(code, reason) {
    this._failAll('CLOSED', 'the client stopped reconnecting');
    this._status('failed', { code, reason, attempts: this._attempt });
    this._settleWaiters(new SwitchboardError('CLOSED', 'the client stopped reconnecting'));
  }

  // Closes a socket that stopped answering without waiting for a close handshake.
  _drop(ws, reason) {
    try {
      ws.close(1000, reason.slice(0, 100));
    } catch {
      /* ignore */
    }
    if (this._ws === ws) this._lost(1006, reason);
  }

  _teardown() {
    clearTimeout(this._connectTimer);
    clearTimeout(this._pingTimer);
    this._connectTimer = this._pingTimer = null;
    const ws = this._ws;
    this._ws = null;
    if (ws) ws.onmessage = ws.onclose = ws.onerror = null;
    for (const room of this._rooms.values()) room.members.clear();
    // Replies to what was in flight will never come: retry what is safe to send again,
    // fail the rest (it may or may not have reached the server).
    const again = [];
    for (const req of this._pending.values()) {
      clearTimeout(req.timer);
      if (RETRYABLE.has(req.msg.type) && !req.internal && !this._closing) again.push(req);
      else req.reject(new SwitchboardError('DISCONNECTED', `the connection dropped before the reply to ${req.msg.type}`));
    }
    this._pending.clear();
    this._queue.unshift(...again);
  }

  _failAll(code, message) {
    for (const req of this._pending.values()) {
      clearTimeout(req.timer);
      req.reject(new SwitchboardError(code, message));
    }
    this._pending.clear();
    for (const req of this._queue.splice(0)) req.reject(new SwitchboardError(code, message));
  }

  _settleWaiters(err) {
    for (const w of this._waiters.splice(0)) {
      if (err) w.reject(err);
      else w.resolve(this.welcome);
    }
  }

  _onWelcome(m) {
    clearTimeout(this._connectTimer);
    this._connectTimer = null;
    this.welcome = m;
    this.connectionId = m.connection_id;
    this.clientId = m.client_id;
    this._attempt = 0;
    this._retryAfter = null;
    if (typeof m.server_time === 'number' && this._samples.length === 0) {
      this._clock.offset = m.server_time - Date.now(); // rough until the first pong
    }
    this.state = 'connected';
    // Order matters: metadata, then rooms (with recovery), then what was queued — so a
    // queued publish finds its room joined again.
    if (this._meta) this._internal('set_meta', { meta: this._meta }).catch(() => {});
    for (const [room, r] of this._rooms) this._rejoin(room, r);
    for (const req of this._queue.splice(0)) this._send(req);
    this._status('connected', { connection_id: m.connection_id, client_id: m.client_id });
    this._settleWaiters(null);
    this._schedulePing(0);
  }

  _rejoin(room, r) {
    const fields = { room };
    if (r.code !== undefined) fields.code = r.code;
    if (r.meta !== undefined) fields.meta = r.meta;
    const pos = this._positions.get(room);
    if (pos) fields.since = { offset: pos.offset, epoch: pos.epoch };
    this._internal('join', fields).catch((err) => {
      if (err.code === 'DISCONNECTED' || err.code === 'CLOSED') return;
      this._rooms.delete(room);
      this._emit('rejoin_failed', { room, code: err.code, message: err.message });
    });
  }

  // -- clock --------------------------------------------------------------------------------

  _schedulePing(delay) {
    if (!this.opts.pingInterval) return;
    clearTimeout(this._pingTimer);
    this._pingTimer = setTimeout(() => {
      const ws = this._ws;
      if (!ws || this.state !== 'connected') return;
      this._ping(true)
        .then(() => this._schedulePing(this._samples.length < 4 ? 500 : this.opts.pingInterval))
        .catch((err) => {
          if (err.code === 'TIMEOUT' && this._ws === ws) this._drop(ws, 'no reply to ping');
        });
    }, delay);
  }

  async _ping(internal) {
    const sent = Date.now();
    const fields = { client_time: sent };
    const pong = internal ? await this._internal('ping', fields) : await this.request('ping', fields);
    const recv = Date.now();
    this._addSample(sent, recv, pong.server_time);
    return { ...pong, rtt: recv - sent, offset: this._clock.offset };
  }

  _addSample(sent, recv, serverTime) {
    if (typeof serverTime !== 'number') return;
    this._samples.push({ offset: serverTime - (sent + recv) / 2, rtt: recv - sent });
    while (this._samples.length > this.opts.clockSamples) this._samples.shift();
    this._clock = {
      offset: median(this._samples.map((s) => s.offset)),
      rtt: median(this._samples.map((s) => s.rtt)),
    };
  }

  /** The estimated server clock, in ms since the Unix epoch. */
  serverNow() {
    return Date.now() + this._clock.offset;
  }

  /** `{offset, rtt, samples}`: server clock minus local clock, and round-trip time (ms). */
  get clock() {
    return { ...this._clock, samples: this._samples.length };
  }

  // -- requests -------------------------------------------------------------------------

  /**
   * Sends a request of any type and resolves with its reply (minus `type` and `id`).
   * While disconnected it waits in the queue (at most `queueLimit`, else QUEUE_FULL);
   * `requestTimeout` counts from the moment it is written to the socket.
   */
  request(type, fields = {}, { timeout } = {}) {
    if (this.state === 'closed' || this.state === 'failed') {
      return Promise.reject(new SwitchboardError('CLOSED', `the client is ${this.state}`));
    }
    return new Promise((resolve, reject) => {
      const req = this._make(type, fields, timeout, resolve, reject);
      if (this.state === 'connected' && this._ws) this._send(req);
      else if (this._queue.length >= this.opts.queueLimit) {
        reject(new SwitchboardError('QUEUE_FULL', `disconnected and ${this.opts.queueLimit} requests already wait`));
      } else this._queue.push(req);
    });
  }

  // Internal requests (rejoin, set_meta replay, pings) skip the queue and its bound.
  _internal(type, fields) {
    return new Promise((resolve, reject) => {
      const req = this._make(type, fields, undefined, resolve, reject);
      req.internal = true;
      this._send(req);
    });
  }

  _make(type, fields, timeout, resolve, reject) {
    const id = ++this._seq;
    return { msg: { type, id, ...fields }, id, timeout: timeout ?? this.opts.requestTimeout, timer: null, resolve, reject };
  }

  _send(req) {
    const ws = this._ws;
    if (!ws) {
      req.reject(new SwitchboardError('DISCONNECTED', 'not connected'));
      return;
    }
    this._pending.set(req.id, req);
    req.timer = setTimeout(() => {
      if (this._pending.get(req.id) !== req) return;
      this._pending.delete(req.id);
      req.reject(new SwitchboardError('TIMEOUT', `no reply to ${req.msg.type} within ${req.timeout} ms`));
    }, req.timeout);
    try {
      ws.send(JSON.stringify(req.msg));
    } catch (e) {
      this._pending.delete(req.id);
      clearTimeout(req.timer);
      req.reject(new SwitchboardError('DISCONNECTED', String(e && e.message)));
    }
  }

  ping() {
    return this._ping(false);
  }

  /**
   * Joins `room` (creating it when the endpoint allows). Recovers from the last offset this
   * client saw in the room unless `since` is given; recovered messages arrive as `message`
   * events before the promise resolves. Resolves with `joined`.
   */
  join(room, { code, meta, since } = {}) {
    const fields = { room };
    if (code !== undefined) fields.code = String(code);
    if (meta !== undefined) fields.meta = meta;
    const pos = since ?? this._positions.get(room);
    if (pos) fields.since = { offset: pos.offset, epoch: pos.epoch };
    return this.request('join', fields).then((joined) => {
      const r = this._rooms.get(room);
      if (r) {
        r.code = fields.code;
        r.meta = meta;
      }
      return joined;
    });
  }

  /** Leaves `room`. While disconnected it is only forgotten (it will not be rejoined). */
  leave(room) {
    if (room === undefined) return Promise.reject(new SwitchboardError('BAD_REQUEST', 'leave needs a room; use close()'));
    if (this.state !== 'connected') {
      this._rooms.delete(room);
      return Promise.resolve({ room });
    }
    return this.request('leave', { room }).catch((err) => {
      if (err.code === 'NOT_IN_ROOM' || err.code === 'INVALID_ROOM') {
        this._rooms.delete(room);
        return { room };
      }
      throw err;
    });
  }

  /** Publishes `data`; resolves with `{room, offset}`. */
  publish(room, data, { excludeSelf } = {}) {
    const fields = { room, data };
    if (excludeSelf) fields.exclude_self = true;
    return this.request('publish', fields);
  }

  /** Sends `data` to a client id or connection id. */
  direct(to, data) {
    return this.request('direct', { to, data });
  }

  /** One page of members: `{room, count, members, next_cursor?}`. */
  presence(room, { cursor, limit } = {}) {
    return this.request('presence', { room, cursor, limit });
  }

  /** `{room, epoch, offset, messages}`: with `since`, messages after it; else the newest. */
  history(room, { since, limit } = {}) {
    return this.request('history', { room, since, limit });
  }

  /** Replaces this connection's metadata (kept and re-sent after a reconnect). */
  setMeta(meta) {
    this._meta = meta;
    return this.request('set_meta', { meta });
  }

  /** Sets a room parameter; `at` is a server-clock time for scheduled changes. */
  param(room, param, value, { at } = {}) {
    return this.request('param', { room, param, value, at });
  }

  trigger(room, name, data, { at } = {}) {
    return this.request('trigger', { room, name, data, at });
  }

  /** `{room, params:[{name, value, min, max}]}`. */
  sync(room) {
    return this.request('sync', { room });
  }

  getConnectionId() {
    return this.request('get_connection_id').then((r) => r.connection_id);
  }

  /** The profile's playback sessions (an array). */
  getSessions() {
    return this.request('get_sessions').then((r) => r.sessions);
  }

  createSession(session) {
    return this.request('create_session', { session });
  }

  updateSession(sessionId, changes = {}) {
    return this.request('update_session', { ...changes, session_id: sessionId });
  }

  deleteSession(sessionId) {
    return this.request('delete_session', { session_id: sessionId });
  }

  setSeek(sessionId, seek) {
    return this.request('set_seek', { session_id: sessionId, seek });
  }

  registerConnection(connection) {
    return this.request('register_connection', { connection });
  }

  registerPlayers(players) {
    return this.request('register_players', { players });
  }

  createAudioZone(audioZone) {
    return this.request('create_audio_zone', { audio_zone: audioZone });
  }

  // -- state the client keeps -------------------------------------------------------------

  /** Rooms this client is in (and rejoins after a reconnect). */
  rooms() {
    return [...this._rooms.keys()];
  }

  /** Known members of a joined room (from `joined` and presence events). */
  members(room) {
    const r = this._rooms.get(room);
    return r ? [...r.members.values()] : [];
  }

  /** `{epoch, offset}` of the last message seen in `room`, or undefined. */
  position(room) {
    const p = this._positions.get(room);
    return p ? { ...p } : undefined;
  }

  // -- incoming ---------------------------------------------------------------------------

  _dispatch(m) {
    if (m.type === 'welcome') {
      this._onWelcome(m);
      this._emit('welcome', m);
      return;
    }
    const req = m.id !== undefined && m.id !== null ? this._pending.get(m.id) : undefined;
    if (req) {
      this._pending.delete(m.id);
      clearTimeout(req.timer);
    }
    switch (m.type) {
      case 'message':
        this._onMessage(m);
        break;
      case 'joined':
        this._onJoined(m);
        break;
      case 'left':
        this._rooms.delete(m.room);
        this._emit('left', m);
        break;
      case 'presence_join':
      case 'presence_leave': {
        const r = this._rooms.get(m.room);
        if (r && m.member) {
          if (m.type === 'presence_join') r.members.set(m.member.connection_id, m.member);
          else r.members.delete(m.member.connection_id);
        }
        this._emit(m.type, m);
        break;
      }
      case 'closed':
        if (m.room) this._rooms.delete(m.room);
        else if (typeof m.retry_after_ms === 'number') this._retryAfter = Math.max(0, m.retry_after_ms);
        this._emit('closed', m);
        break;
      default:
        this._emit(m.type, m);
    }
    if (req) {
      if (m.type === 'error') req.reject(new SwitchboardError(m.code, m.message, m));
      else req.resolve(reply(m));
    }
  }

  _onMessage(m) {
    const pos = this._positions.get(m.room);
    if (typeof m.offset === 'number') {
      if (pos && m.offset <= pos.offset) return; // seen already (recovered, or a duplicate)
      if (pos) pos.offset = m.offset;
    }
    this._emit('message', m);
  }

  _onJoined(m) {
    let r = this._rooms.get(m.room);
    if (!r) this._rooms.set(m.room, (r = { code: undefined, meta: undefined, members: new Map() }));
    r.members = new Map((m.members || []).map((x) => [x.connection_id, x]));
    const pos = this._positions.get(m.room);
    const sameEpoch = pos && pos.epoch === m.epoch;
    this._emit('joined', m);
    if (pos && m.recovered_complete === false) {
      this._emit('recovery_incomplete', {
        room: m.room,
        epoch: m.epoch,
        offset: m.offset,
        previous_epoch: pos.epoch,
        since: pos.offset,
        recovered: (m.recovered || []).length,
      });
    }
    if (sameEpoch) {
      const recovered = [...(m.recovered || [])].sort((a, b) => a.offset - b.offset);
      for (const msg of recovered) this._onMessage(msg);
    }
    // Live messages follow `joined` and start after its offset.
    this._positions.set(m.room, { epoch: m.epoch, offset: m.offset });
  }
}

/** Creates a client and resolves once it is connected. */
export function connect(url, options) {
  const sb = new Switchboard(url, options);
  return sb.ready().then(() => sb);
}

export default Switchboard;
