"""JWT authentication at the upgrade (HS256 tokens made here with hmac; no JWT library).

PROTOCOL §3.1 (client_id is the authenticated subject), §10 (auth.jwt_secret,
auth.required), §11 (JWT `meta` claim; auth refusals are HTTP 401 with the error object).
"""

import base64
import hashlib
import hmac
import json
import time

import pytest
from sbtest.wsclient import connect

SERVER_CONFIG = "auth.toml"
SECRET = b"e2e-test-secret"


def jwt_hs256(claims: dict, secret: bytes = SECRET) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def valid_claims(**extra) -> dict:
    return {"sub": "user-1", "exp": int(time.time()) + 3600, **extra}


async def test_valid_token_sets_client_id_and_meta(server):
    token = jwt_hs256(valid_claims(meta={"role": "admin"}))
    async with connect(server, "/auth", token=token, client_id="ignored") as c:
        assert c.welcome["client_id"] == "user-1", "the authenticated subject wins over the query (§3.1)"
        r = server.rest.get(f"/api/connections/{c.connection_id}")
        assert r.status_code == 200, r.text
        assert r.json()["connection"]["meta"] == {"role": "admin"}


@pytest.mark.parametrize(
    "token",
    [
        None,
        "not-a-jwt",
        jwt_hs256(valid_claims(), secret=b"wrong-secret"),
        jwt_hs256({"sub": "user-1", "exp": int(time.time()) - 60}),
    ],
    ids=["missing", "garbage", "bad-signature", "expired"],
)
def test_bad_or_missing_token_is_401(server, token):
    path = "/auth" + (f"?token={token}" if token else "")
    server.upgrade(path).assert_refused(401, "UNAUTHORIZED")


async def test_optional_auth_admits_anonymous_and_authenticated(server):
    async with connect(server, "/authopt", client_id="anon") as c:
        assert c.welcome["client_id"] == "anon"
    async with connect(server, "/authopt", token=jwt_hs256(valid_claims())) as c:
        assert c.welcome["client_id"] == "user-1"


def test_optional_auth_still_rejects_a_bad_token(server):
    server.upgrade("/authopt?token=not-a-jwt").assert_refused(401, "UNAUTHORIZED")
