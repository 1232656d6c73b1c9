import os

import pytest
from sbtest.fixtures import *  # noqa: F401,F403  (fixtures: server, server_config, server_factory, rest, room)

# Tests of contract features the server does not implement yet, by module or by test id
# prefix. They still run and are reported (xfail / XPASS) but do not fail the suite. Delete
# an entry once its feature lands; SWITCHBOARD_STRICT_PENDING=1 runs them as ordinary tests.
PENDING = {
}


def pending_reason(item) -> str | None:
    module = item.path.name
    test_id = f"{module}::{item.name}"
    for key, reason in PENDING.items():
        if key == module or test_id == key or test_id.startswith(key + "["):
            return reason
    return None


def pytest_collection_modifyitems(config, items):
    if os.environ.get("SWITCHBOARD_STRICT_PENDING") == "1":
        return
    for item in items:
        reason = pending_reason(item)
        if reason:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=False))
