// Start and stop a real `switchboard` process (same contract as the Python harness):
// `$SWITCHBOARD_BIN --listen 127.0.0.1:0 --store memory --config <tmp>/config.toml`,
// ready when a line contains `listening on http://HOST:PORT` (PROTOCOL §9).
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = resolve(HERE, '../../../..');
const CONFIG_DIR = join(REPO_ROOT, 'tests/e2e/configs');
const LISTENING = /listening on http:\/\/(\[[^\]]+\]|[^\s:/]+):(\d+)/;
const ANSI = /\x1b\[[0-9;]*[A-Za-z]/g;

export function serverBinary() {
  const bin = process.env.SWITCHBOARD_BIN || join(REPO_ROOT, 'target/debug/switchboard');
  if (!existsSync(bin)) {
    throw new Error(`switchboard binary not found at ${bin}; run cargo build -p switchboard-server or set SWITCHBOARD_BIN`);
  }
  return bin;
}

export class Server {
  constructor(proc, workdir, host, port, lines) {
    this.proc = proc;
    this.workdir = workdir;
    this.host = host;
    this.port = port;
    this.lines = lines;
  }

  wsUrl(path = '/ws', query = {}) {
    const qs = new URLSearchParams(query).toString();
    return `ws://${this.host}:${this.port}${path}${qs ? `?${qs}` : ''}`;
  }

  get httpUrl() {
    return `http://${this.host}:${this.port}`;
  }

  logTail(n = 40) {
    return this.lines.slice(-n).join('\n');
  }

  /** SIGTERM, wait (bounded), then SIGKILL. Resolves to the exit code. */
  async stop(timeoutMs = 10_000) {
    const exited = new Promise((res) => {
      if (this.proc.exitCode !== null || this.proc.signalCode !== null) res(this.proc.exitCode);
      else this.proc.once('exit', (code) => res(code));
    });
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), timeoutMs);
    const code = await exited;
    clearTimeout(timer);
    rmSync(this.workdir, { recursive: true, force: true });
    return code;
  }
}

export async function startServer(configName = 'e2e.toml', timeoutMs = 30_000) {
  const bin = serverBinary();
  const workdir = mkdtempSync(join(tmpdir(), 'switchboard-node-'));
  const config = join(workdir, 'config.toml');
  copyFileSync(join(CONFIG_DIR, configName), config);
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SWITCHBOARD_')));
  const proc = spawn(
    bin,
    ['--listen', '127.0.0.1:0', '--store', 'memory', '--config', config],
    { cwd: workdir, env: { ...env, NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const lines = [];
  return await new Promise((res, rej) => {
    let settled = false;
    const timer = setTimeout(() => fail(new Error(`no 'listening on' line within ${timeoutMs} ms`)), timeoutMs);
    function fail(err) {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      proc.kill('SIGKILL');
      rmSync(workdir, { recursive: true, force: true });
      err.message += `\n${lines.slice(-40).join('\n')}`;
      rej(err);
    }
    function onData(chunk) {
      for (const raw of chunk.toString('utf8').split('\n')) {
        if (!raw) continue;
        const line = raw.replace(ANSI, '');
        lines.push(line);
        const m = !settled && LISTENING.exec(line);
        if (m) {
          settled = true;
          clearTimeout(timer);
          res(new Server(proc, workdir, m[1].replace(/^\[|\]$/g, ''), Number(m[2]), lines));
        }
      }
    }
    proc.stdout.on('data', onData);
    proc.stderr.on('data', onData);
    proc.on('error', fail);
    proc.on('exit', (code) => fail(new Error(`switchboard exited with ${code} before listening`)));
  });
}
