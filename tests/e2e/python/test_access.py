"""Admission at the upgrade and per address: origins, and the rate limit on wrong room
codes (own server, so the limit cannot leak into other modules).

PROTOCOL §7 and §11 (room codes, RATE_LIMITED; refusals at the
upgrade are 403 with the error object; no Origin header is allowed unless required),
§10 (allowed_origins, require_origin).
"""

import pytest
from sbtest.wsclient import connect

SERVER_CONFIG = "access.toml"


# -- origins --------------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", ["https://app.example.com", "https://a.example.org", "https://x.y.example.org"])
def test_allowed_origins(server, origin):
    assert server.upgrade("/origin", {"Origin": origin}).status == 101


@pytest.mark.parametrize(
    "origin",
    [None, "https://example.org", "https://evil.com", "http://app.example.com", "https://app.example.com.evil.com"],
    ids=["absent-but-required", "bare-domain", "other", "wrong-scheme", "suffix-trick"],
)
def test_refused_origins(server, origin):
    server.upgrade("/origin", {"Origin": origin}).assert_refused(403, "FORBIDDEN")


def test_no_origin_is_allowed_by_default(server):
    assert server.upgrade("/ws").status == 101


# -- wrong room codes are rate-limited per address (§7, §11) ----------------------------------------


async def test_wrong_codes_are_rate_limited(server, room):
    server.rest.create_room(id=room, code="2468")
    async with connect(server) as c:
        codes = []
        for attempt in range(100):
            err = await c.request({"type": "join", "room": room, "code": f"{attempt:04d}"}, expect_type="error")
            codes.append(err["code"])
            if err["code"] == "RATE_LIMITED":
                break
        assert codes[0] == "INVALID_ROOM", codes[:3]
        assert codes[-1] == "RATE_LIMITED", f"no RATE_LIMITED after {len(codes)} wrong codes"
        await c.request_error({"type": "join", "room": room, "code": "2468"}, "RATE_LIMITED")
        await c.barrier()
