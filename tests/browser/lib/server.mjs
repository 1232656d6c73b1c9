// Start, stop and restart a real `switchboard` process for the browser suite:
// `$SWITCHBOARD_BIN --listen 127.0.0.1:<port> --store <store> --config <tmp>/config.toml`,
// ready when a line contains `listening on http://HOST:PORT` (PROTOCOL §9).
//
// Unlike tests/e2e/node/lib/server.mjs this one can restart a server on the same port and
// the same work directory, so a SQLite store survives the restart.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = resolve(HERE, '../../..');
const LISTENING = /listening on http:\/\/(\[[^\]]+\]|[^\s:/]+):(\d+)/;
const ANSI = /\x1b\[[0-9;]*[A-Za-z]/g;

// Short drain so a stop takes well under a second; the browser suite is not about draining.
export const DEFAULT_CONFIG = `shutdown_drain_ms = 300

[[endpoint]]
path = "/ws"
mode = "protocol"
`;

export function serverBinary() {
  const bin = process.env.SWITCHBOARD_BIN || join(REPO_ROOT, 'target/debug/switchboard');
  if (!existsSync(bin)) {
    throw new Error(`switchboard binary not found at ${bin}; run cargo build -p switchboard-server or set SWITCHBOARD_BIN`);
  }
  return bin;
}

export class Server {
  /**
   * @param {object} o
   * @param {string} [o.config]  TOML text of the config file
   * @param {string} [o.store]   `memory` (default) or `sqlite` (a db.sqlite in the work dir)
   * @param {number} [o.port]    0 (default) for a free port
   */
  constructor({ config = DEFAULT_CONFIG, store = 'memory', port = 0 } = {}) {
    this.workdir = mkdtempSync(join(tmpdir(), 'switchboard-browser-'));
    this.configPath = join(this.workdir, 'config.toml');
    writeFileSync(this.configPath, config);
    this.store = store === 'sqlite' ? `sqlite://${join(this.workdir, 'db.sqlite')}` : store;
    this.port = port;
    this.host = '127.0.0.1';
    this.proc = null;
    this.lines = [];
  }

  get httpUrl() {
    return `http://${this.host}:${this.port}`;
  }

  logTail(n = 40) {
    return this.lines.slice(-n).join('\n');
  }

  /** Starts the process (on the port of the previous run, if any); resolves when listening. */
  async start(timeoutMs = 30_000) {
    const deadline = Date.now() + timeoutMs;
    // A restart on a fixed port may race the old socket's release: retry while time is left.
    for (;;) {
      try {
        return await this.#spawn(deadline - Date.now());
      } catch (e) {
        if (!this.port || Date.now() > deadline - 1000 || !/address already in use/i.test(e.message)) throw e;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  #spawn(timeoutMs) {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SWITCHBOARD_')));
    const proc = spawn(
      serverBinary(),
      ['--listen', `127.0.0.1:${this.port}`, '--store', this.store, '--config', this.configPath],
      { cwd: this.workdir, env: { ...env, NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    this.proc = proc;
    const lines = this.lines;
    return new Promise((res, rej) => {
      let settled = false;
      const timer = setTimeout(() => fail(new Error(`no 'listening on' line within ${timeoutMs} ms`)), Math.max(timeoutMs, 1000));
      const fail = (err) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        proc.kill('SIGKILL');
        err.message += `\n${lines.slice(-40).join('\n')}`;
        rej(err);
      };
      const onData = (chunk) => {
        for (const raw of chunk.toString('utf8').split('\n')) {
          if (!raw) continue;
          const line = raw.replace(ANSI, '');
          lines.push(line);
          const m = !settled && LISTENING.exec(line);
          if (m) {
            settled = true;
            clearTimeout(timer);
            this.host = m[1].replace(/^\[|\]$/g, '');
            this.port = Number(m[2]);
            res(this);
          }
        }
      };
      proc.stdout.on('data', onData);
      proc.stderr.on('data', onData);
      proc.on('error', fail);
      proc.on('exit', (code) => fail(new Error(`switchboard exited with ${code} before listening`)));
    });
  }

  /** SIGTERM, wait (bounded), then SIGKILL. Resolves to the exit code. Keeps the work dir. */
  async stop(timeoutMs = 10_000) {
    const proc = this.proc;
    if (!proc) return null;
    this.proc = null;
    const exited = new Promise((res) => {
      if (proc.exitCode !== null || proc.signalCode !== null) res(proc.exitCode);
      else proc.once('exit', (code) => res(code));
    });
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
    const code = await exited;
    clearTimeout(timer);
    return code;
  }

  /** Stops the process and removes the work dir. */
  async dispose() {
    const code = await this.stop();
    rmSync(this.workdir, { recursive: true, force: true });
    return code;
  }

  /** A REST call; resolves with the parsed body (null for 204), throws on a non-2xx status. */
  async api(method, path, body) {
    const res = await fetch(this.httpUrl + path, {
      method,
      headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path} → ${res.status} ${text}`);
    return text ? JSON.parse(text) : null;
  }
}

/** Starts a server; see `Server`'s constructor for the options. */
export async function startServer(options) {
  const s = new Server(options);
  try {
    return await s.start();
  } catch (e) {
    rmSync(s.workdir, { recursive: true, force: true });
    throw e;
  }
}
