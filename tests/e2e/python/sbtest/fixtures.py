"""pytest fixtures and hooks shared by tests/e2e/python and tests/conformance.

Each conftest.py does `from sbtest.fixtures import *`.
"""

from __future__ import annotations

import re
import uuid

import pytest

from .harness import Rest, Server, config_text

DEFAULT_CONFIG = "e2e.toml"


@pytest.fixture(scope="module")
def server_config(request) -> str:
    """The TOML text for the module's server: the file named by the module's `SERVER_CONFIG`
    in tests/e2e/configs/ (default e2e.toml). Override this fixture to generate a config."""
    return config_text(getattr(request.module, "SERVER_CONFIG", DEFAULT_CONFIG))


@pytest.fixture(scope="module")
def server(server_config, tmp_path_factory) -> Server:
    """One server per test module."""
    srv = Server(server_config, tmp_path_factory.mktemp("server")).start()
    yield srv
    srv.stop()


class ServerFactory:
    """Starts servers owned by one test (e.g. to shut them down); all are stopped after it."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.servers: list[Server] = []

    def __call__(self, config: str = DEFAULT_CONFIG, *extra_args: str, store: str = "memory") -> Server:
        """Starts a server with `config` (a file in tests/e2e/configs/) on `store` (a
        `--store` URL). Each server gets its own work folder, so several servers started
        one after another on the same store URL model restarts."""
        srv = Server(config_text(config), self.tmp_path / f"server{len(self.servers)}", tuple(extra_args), store=store)
        self.servers.append(srv)
        return srv.start()

    def stop_all(self) -> None:
        for srv in self.servers:
            srv.stop()


@pytest.fixture
def server_factory(tmp_path) -> ServerFactory:
    factory = ServerFactory(tmp_path)
    yield factory
    factory.stop_all()


@pytest.fixture
def rest(server) -> Rest:
    return server.rest


@pytest.fixture
def room(request) -> str:
    """A room id unique to this test (valid per §7: [A-Za-z0-9_:.-], ≤ 128 chars)."""
    base = re.sub(r"[^A-Za-z0-9_.-]", "-", request.node.name)[:80]
    return f"{base}.{uuid.uuid4().hex[:8]}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, attach the tail of the server's log to the report."""
    report = yield
    if report.failed:
        funcargs = getattr(item, "funcargs", {})
        servers = [v for v in funcargs.values() if isinstance(v, Server)]
        for v in funcargs.values():
            if isinstance(v, ServerFactory):
                servers += v.servers
        for srv in servers:
            state = "running" if srv.running else f"EXITED with {srv.proc.returncode if srv.proc else None}"
            report.sections.append((f"switchboard log ({state}, {srv.log_path})", srv.log_tail(80)))
    return report
