"""Start and stop a real `switchboard` process for a test module.

The binary comes from `$SWITCHBOARD_BIN` (scripts/test exports it), falling back to
`target/debug/switchboard`. A server is started with `--listen 127.0.0.1:0 --store memory
--config <tmp>/config.toml` (`store=` names another `--store` URL); we read its combined
stdout/stderr until the line containing `listening on http://HOST:PORT` (PROTOCOL §9) and
use that port.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import requests

from . import rawws

REPO_ROOT = Path(__file__).resolve().parents[4]
CONFIG_DIR = REPO_ROOT / "tests" / "e2e" / "configs"

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
REST_TIMEOUT_S = 5.0

_LISTENING = re.compile(r"listening on http://(\[[^\]]+\]|[^\s:/]+):(\d+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def server_binary() -> Path:
    path = Path(os.environ.get("SWITCHBOARD_BIN") or REPO_ROOT / "target" / "debug" / "switchboard")
    if not path.is_file():
        raise FileNotFoundError(
            f"switchboard binary not found at {path}; run `cargo build -p switchboard-server` or set SWITCHBOARD_BIN"
        )
    return path


def config_text(name: str) -> str:
    """The text of a config file kept in tests/e2e/configs/."""
    return (CONFIG_DIR / name).read_text()


class Server:
    """One switchboard process. Use `start()` / `stop()` or the fixtures in sbtest.fixtures."""

    def __init__(self, config: str, workdir: Path, extra_args: tuple[str, ...] = (), store: str = "memory"):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "config.toml"
        self.config_path.write_text(config)
        self.log_path = self.workdir / "server.log"
        self.extra_args = extra_args
        self.store = store
        self.proc: subprocess.Popen | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self._lines: list[str] = []
        self._lines_lock = threading.Lock()
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT_S) -> Server:
        cmd = [
            str(server_binary()),
            "--listen",
            "127.0.0.1:0",
            "--store",
            self.store,
            "--config",
            str(self.config_path),
            *self.extra_args,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        env.update(NO_COLOR="1", RUST_BACKTRACE="1")
        self.proc = subprocess.Popen(
            cmd,
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None:
                self._reader.join(2)
                raise RuntimeError(
                    f"switchboard exited with {self.proc.returncode} before listening:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"no 'listening on' line within {timeout}s:\n{self.log_tail()}")
        return self

    def _read_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with open(self.log_path, "w", encoding="utf-8") as log:
            for raw in self.proc.stdout:
                line = _ANSI.sub("", raw.decode("utf-8", "replace")).rstrip("\n")
                log.write(line + "\n")
                log.flush()
                with self._lines_lock:
                    self._lines.append(line)
                if not self._ready.is_set():
                    m = _LISTENING.search(line)
                    if m:
                        self.host = m.group(1).strip("[]")
                        self.port = int(m.group(2))
                        self._ready.set()

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit; raises subprocess.TimeoutExpired."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, wait (bounded), then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._reader is not None:
            self._reader.join(5)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- output ------------------------------------------------------------------------

    def log_lines(self) -> list[str]:
        with self._lines_lock:
            return list(self._lines)

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_lines()[-n:])

    # -- addresses ---------------------------------------------------------------------

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def ws_url(self, path: str = "/ws", **query: str) -> str:
        q = {k: v for k, v in query.items() if v is not None}
        suffix = "?" + urllib.parse.urlencode(q) if q else ""
        return f"ws://{self.host}:{self.port}{path}{suffix}"

    @property
    def rest(self) -> Rest:
        return Rest(self.http_url)

    def upgrade(self, path: str, headers: dict[str, str | None] | None = None) -> rawws.HttpResponse:
        """Send one WebSocket upgrade request by hand and return the HTTP response
        (the connection is closed right after reading it)."""
        req = rawws.upgrade_request(path, f"{self.host}:{self.port}", "dGhlIHNhbXBsZSBub25jZQ==", headers)
        return rawws.http_exchange(self.host, self.port, req)


class Rest:
    """Thin wrapper over `requests` for the REST API (PROTOCOL §8). Loopback needs no token."""

    def __init__(self, base: str):
        self.base = base
        self.session = requests.Session()

    def request(self, method: str, path: str, json=None, **kw) -> requests.Response:
        kw.setdefault("timeout", REST_TIMEOUT_S)
        return self.session.request(method, self.base + path, json=json, **kw)

    def get(self, path: str, **kw) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, json=None, **kw) -> requests.Response:
        return self.request("POST", path, json=json, **kw)

    def delete(self, path: str, **kw) -> requests.Response:
        return self.request("DELETE", path, **kw)

    # -- common calls with their expected status ---------------------------------------

    def create_room(self, **fields) -> dict:
        r = self.post("/api/rooms", json=fields)
        assert r.status_code == 201, f"POST /api/rooms {fields} -> {r.status_code} {r.text}"
        return r.json()["room"]

    def define_param(self, room: str, **fields) -> dict:
        r = self.post(f"/api/rooms/{room}/params", json=fields)
        assert r.status_code == 200, f"POST /api/rooms/{room}/params {fields} -> {r.status_code} {r.text}"
        return r.json()["param"]
