"""RFC 6455 conformance against the `/echo` endpoint (tests/e2e/configs/e2e.toml), using the
hand-written frame codec in tests/e2e/python/sbtest/rawws.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e" / "python"))

from sbtest.fixtures import *  # noqa: E402,F401,F403  (server, rest, room, ...)
