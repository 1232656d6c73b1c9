"""Public-key JWTs: RS256 and ES256 keys from PEM files, and a JWKS file whose keys are
picked by `kid`. Keys are generated here, into the server's own folder, so that the
config names them relative to the config file (PROTOCOL §11).
"""

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sbtest.harness import Server
from sbtest.wsclient import connect


def b64u(n: int, size: int | None = None) -> str:
    raw = n.to_bytes(size or (n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def public_pem(key) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class Keys:
    def __init__(self):
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.rsa_other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.jwks_a = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.jwks_b = ec.generate_private_key(ec.SECP256R1())

    def jwks(self) -> dict:
        a = self.jwks_a.public_key().public_numbers()
        b = self.jwks_b.public_key().public_numbers()
        return {
            "keys": [
                {"kty": "RSA", "kid": "key-a", "alg": "RS256", "use": "sig", "n": b64u(a.n), "e": b64u(a.e)},
                {"kty": "EC", "kid": "key-b", "crv": "P-256", "x": b64u(b.x, 32), "y": b64u(b.y, 32)},
            ]
        }


CONFIG = """
shutdown_drain_ms = 200

[[endpoint]]
path = "/rs"
auth.jwt_public_key = "keys/rsa.pem"

[[endpoint]]
path = "/es"
auth.jwt_public_key = "keys/ec.pem"

[[endpoint]]
path = "/jwks"
auth.jwks_file = "keys/jwks.json"
"""


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


@pytest.fixture(scope="module")
def server(keys, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("server")
    (workdir / "keys").mkdir()
    (workdir / "keys" / "rsa.pem").write_bytes(public_pem(keys.rsa))
    (workdir / "keys" / "ec.pem").write_bytes(public_pem(keys.ec))
    (workdir / "keys" / "jwks.json").write_text(json.dumps(keys.jwks()))
    srv = Server(CONFIG, workdir).start()
    yield srv
    srv.stop()


def claims(sub: str) -> dict:
    return {"sub": sub, "exp": int(time.time()) + 600, "meta": {"via": sub}}


def sign(key, alg: str, sub: str, kid: str | None = None) -> str:
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims(sub), key, algorithm=alg, headers=headers)


async def test_rs256_tokens_verify_with_the_pem_key(server, keys):
    async with connect(server, "/rs", token=sign(keys.rsa, "RS256", "rsa-user")) as c:
        assert c.client_id == "rsa-user"


async def test_es256_tokens_verify_with_the_pem_key(server, keys):
    async with connect(server, "/es", token=sign(keys.ec, "ES256", "ec-user")) as c:
        assert c.client_id == "ec-user"
        r = server.rest.get(f"/api/connections/{c.connection_id}")
        assert r.json()["connection"]["meta"] == {"via": "ec-user"}


@pytest.mark.parametrize("kid,attr,alg", [("key-a", "jwks_a", "RS256"), ("key-b", "jwks_b", "ES256")])
async def test_jwks_keys_are_picked_by_kid(server, keys, kid, attr, alg):
    async with connect(server, "/jwks", token=sign(getattr(keys, attr), alg, f"user-{kid}", kid=kid)) as c:
        assert c.client_id == f"user-{kid}"


def test_tokens_signed_by_another_key_are_refused(server, keys):
    t = sign(keys.rsa_other, "RS256", "mallory")
    server.upgrade(f"/rs?token={t}").assert_refused(401, "UNAUTHORIZED")
    # The right key under the wrong kid, and an unknown kid, are refused too.
    t = sign(keys.jwks_a, "RS256", "mallory", kid="key-b")
    server.upgrade(f"/jwks?token={t}").assert_refused(401, "UNAUTHORIZED")
    t = sign(keys.jwks_a, "RS256", "mallory", kid="key-z")
    server.upgrade(f"/jwks?token={t}").assert_refused(401, "UNAUTHORIZED")


def test_an_hmac_token_made_with_the_public_key_is_refused(server, keys):
    # "Algorithm confusion": HS256 keyed with the public key's PEM text must not pass.
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{b64(json.dumps(claims('forger')).encode())}"
    sig = hmac.new(public_pem(keys.rsa), signing_input.encode(), hashlib.sha256).digest()
    server.upgrade(f"/rs?token={signing_input}.{b64(sig)}").assert_refused(401, "UNAUTHORIZED")
