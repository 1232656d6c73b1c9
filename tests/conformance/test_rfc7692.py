"""permessage-deflate (RFC 7692) conformance of the echo endpoints in
tests/e2e/configs/compression.toml, frame by frame on raw sockets.

Close codes: a protocol violation (RSV1 where it may not be, or when nothing was negotiated)
is 1002; compressed data that does not inflate is 1007 (the payload is not what its frame
says, RFC 6455 §7.4.1 — RFC 7692 §8 only says to fail the connection); a message over
`max_message_size` once inflated is 1009.
PROTOCOL §1 (permessage-deflate), §6 (close codes), §10 (compression).
"""

import os
import zlib

import pytest
import test_rfc6455 as base
from sbtest import rawws
from sbtest.rawws import OP_BINARY, OP_CONT, OP_PING, OP_TEXT

SERVER_CONFIG = "compression.toml"
MAX = 65536  # max_message_size of the echo endpoints
MIN_BYTES = 256  # the default compression_min_bytes
OFFER = "permessage-deflate; client_max_window_bits"
RSV1 = 4  # the RSV bits as rawws numbers them: RSV1 is the top one


def deflate(data: bytes, comp=None) -> bytes:
    """One message compressed the RFC 7692 way: raw DEFLATE, sync flush, tail removed."""
    c = comp or zlib.compressobj(6, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def inflate(data: bytes, decomp=None) -> bytes:
    d = decomp or zlib.decompressobj(-15)
    return d.decompress(data + b"\x00\x00\xff\xff")


def connect(server, path="/echo-deflate", offer=OFFER) -> rawws.RawWebSocket:
    headers = {"Sec-WebSocket-Extensions": offer} if offer is not None else None
    return rawws.RawWebSocket.connect(server.host, server.port, path, headers=headers)


@pytest.fixture
def zws(server):
    with connect(server) as conn:
        assert "permessage-deflate" in conn.response.headers.get("sec-websocket-extensions", "")
        yield conn


def recv_message(ws: rawws.RawWebSocket) -> tuple[int, bool, bytes]:
    """Next data message: (opcode, compressed, payload as sent), pings skipped."""
    frames = base.recv_data_frames(ws)
    for f in frames:
        assert not f.masked
    assert all(f.rsv & 3 == 0 for f in frames), "RSV2/RSV3 never set"
    assert all(f.rsv == 0 for f in frames[1:]), "RSV1 only on the first frame"
    return frames[0].opcode, frames[0].rsv == RSV1, b"".join(f.payload for f in frames)


def echoed(ws: rawws.RawWebSocket, decomp=None) -> tuple[int, bytes]:
    opcode, compressed, payload = recv_message(ws)
    return opcode, inflate(payload, decomp) if compressed else payload


# -- negotiation (§5, §7.1) ---------------------------------------------------------------------


def test_defaults_answer_no_context_takeover_both_ways(zws):
    ext = zws.response.headers["sec-websocket-extensions"]
    params = [p.strip() for p in ext.split(";")]
    assert params[0] == "permessage-deflate"
    assert set(params[1:]) == {"server_no_context_takeover", "client_no_context_takeover"}, ext


def test_no_offer_no_extension(server):
    with connect(server, offer=None) as ws:
        assert "sec-websocket-extensions" not in ws.response.headers


@pytest.mark.parametrize(
    "offer",
    [
        "permessage-deflate; no_such_param",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; client_max_window_bits=7",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; server_max_window_bits=8",
        "x-webkit-deflate-frame",
    ],
)
def test_unacceptable_offer_is_declined_not_refused(server, offer):
    with connect(server, offer=offer) as ws:
        assert ws.response.status == 101
        assert "sec-websocket-extensions" not in ws.response.headers
        ws.send_text(b"still works")
        assert base.recv_data_frames(ws)[0].payload == b"still works"


def test_first_acceptable_offer_wins(server):
    offer = "permessage-deflate; bogus, permessage-deflate; server_max_window_bits=10, permessage-deflate"
    with connect(server, offer=offer) as ws:
        ext = ws.response.headers["sec-websocket-extensions"]
        assert "server_max_window_bits=10" in ext, ext
        payload = ("window " * 2000).encode()[:MAX]
        ws.send_text(payload)
        assert echoed(ws, zlib.decompressobj(-10)) == (OP_TEXT, payload)


def test_client_window_limit_is_echoed(server):
    with connect(server, offer="permessage-deflate; client_max_window_bits=9") as ws:
        assert "client_max_window_bits=9" in ws.response.headers["sec-websocket-extensions"]
        c = zlib.compressobj(6, zlib.DEFLATED, -9)
        payload = ("abcdefgh" * 3000).encode()
        ws.send_frame(OP_TEXT, deflate(payload, c), rsv=RSV1)
        assert echoed(ws) == (OP_TEXT, payload)


# -- compressed messages (§6, §7.2) -------------------------------------------------------------


def test_compressed_text_is_inflated_and_echo_compressed(zws):
    payload = ('{"sensor":"t1","value":21.5,"unit":"C"},' * 100).encode()
    zws.send_frame(OP_TEXT, deflate(payload), rsv=RSV1)
    opcode, compressed, wire = recv_message(zws)
    assert opcode == OP_TEXT and compressed, "a message over the minimum goes out compressed"
    assert len(wire) < len(payload) // 5
    assert inflate(wire) == payload


def test_compressed_binary(zws):
    payload = bytes(range(256)) * 64
    zws.send_frame(OP_BINARY, deflate(payload), rsv=RSV1)
    assert echoed(zws) == (OP_BINARY, payload)


def test_small_messages_go_out_uncompressed(zws):
    small = b"x" * (MIN_BYTES - 1)
    zws.send_frame(OP_TEXT, deflate(small), rsv=RSV1)
    assert recv_message(zws) == (OP_TEXT, False, small)


def test_incompressible_messages_go_out_uncompressed(zws):
    noise = os.urandom(4000)
    zws.send_binary(noise)
    assert recv_message(zws) == (OP_BINARY, False, noise)


def test_uncompressed_messages_are_still_accepted(zws):
    payload = b"plain " * 100
    zws.send_text(payload)
    assert echoed(zws) == (OP_TEXT, payload)


def test_empty_compressed_message(zws):
    zws.send_frame(OP_TEXT, b"\x00", rsv=RSV1)  # §7.2.3.6
    assert echoed(zws) == (OP_TEXT, b"")


def test_fragmented_compressed_message(zws):
    payload = ("fragmented and compressed " * 200).encode()
    wire = deflate(payload)
    third = len(wire) // 3
    zws.send_frame(OP_TEXT, wire[:third], rsv=RSV1, fin=False)
    zws.send_frame(OP_PING, b"between")
    zws.send_frame(OP_CONT, wire[third : 2 * third], fin=False)
    zws.send_frame(OP_CONT, wire[2 * third :], fin=True)
    frames = []
    while not any(f.opcode in (OP_TEXT, OP_CONT) and f.fin for f in frames):
        frames.append(zws.recv_frame())
    assert [f.payload for f in frames if f.opcode == rawws.OP_PONG] == [b"between"]
    data = [f for f in frames if f.opcode in (OP_TEXT, OP_CONT)]
    got = b"".join(f.payload for f in data)
    assert (inflate(got) if data[0].rsv == RSV1 else got) == payload


def test_final_block_message(zws):
    """A sender may end a message with a final DEFLATE block (§7.2.3.4)."""
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    wire = c.compress(b"final " * 100) + c.flush(zlib.Z_FINISH)
    zws.send_frame(OP_TEXT, wire, rsv=RSV1)
    assert echoed(zws) == (OP_TEXT, b"final " * 100)


def test_many_compressed_messages_in_one_write(zws):
    msgs = [(f"message {i} " * 40).encode() for i in range(30)]
    zws.send_raw(b"".join(rawws.encode_frame(OP_TEXT, deflate(m), rsv=RSV1) for m in msgs))
    for m in msgs:
        assert echoed(zws) == (OP_TEXT, m)


# -- violations ----------------------------------------------------------------------------------


def test_rsv1_on_control_frame_is_protocol_error(zws):
    zws.send_frame(OP_PING, b"x", rsv=RSV1)
    base.assert_closed_with(zws, 1002)


def test_rsv1_on_continuation_frame_is_protocol_error(zws):
    wire = deflate(b"abc" * 200)
    zws.send_frame(OP_TEXT, wire[:10], rsv=RSV1, fin=False)
    zws.send_frame(OP_CONT, wire[10:], rsv=RSV1, fin=True)
    base.assert_closed_with(zws, 1002)


@pytest.mark.parametrize("rsv", [1, 2], ids=["rsv3", "rsv2"])
def test_rsv2_rsv3_stay_protocol_errors(zws, rsv):
    zws.send_frame(OP_TEXT, b"rsv", rsv=rsv)
    base.assert_closed_with(zws, 1002)


def test_rsv1_when_not_negotiated_is_protocol_error(server):
    with connect(server, offer=None) as ws:
        ws.send_frame(OP_TEXT, deflate(b"hello" * 100), rsv=RSV1)
        base.assert_closed_with(ws, 1002)


def test_rsv1_on_endpoint_without_compression_is_protocol_error(server):
    with connect(server, path="/echo") as ws:
        assert "sec-websocket-extensions" not in ws.response.headers
        ws.send_frame(OP_TEXT, deflate(b"hello" * 100), rsv=RSV1)
        base.assert_closed_with(ws, 1002)


def test_bad_deflate_data_is_invalid_payload(zws):
    zws.send_frame(OP_TEXT, b"\xff\xff\xff\xff not deflate", rsv=RSV1)
    base.assert_closed_with(zws, 1007)


def test_invalid_utf8_after_inflating(zws):
    zws.send_frame(OP_TEXT, deflate(b"ok " * 100 + b"\xed\xa0\x80"), rsv=RSV1)
    base.assert_closed_with(zws, 1007)


def test_decompressed_size_over_max_message_size(zws):
    bomb = deflate(b"\x00" * (10 * MAX))
    assert len(bomb) < MAX // 10
    zws.send_frame(OP_BINARY, bomb, rsv=RSV1)
    base.assert_closed_with(zws, 1009)


def test_decompressed_size_of_exactly_max_message_size(zws):
    payload = b"\x01" * MAX
    zws.send_frame(OP_BINARY, deflate(payload), rsv=RSV1)
    assert echoed(zws) == (OP_BINARY, payload)


def test_compressed_fragments_over_the_limit(zws):
    noise = os.urandom(MAX)
    zws.send_frame(OP_BINARY, noise, rsv=RSV1, fin=False)
    zws.send_frame(OP_CONT, noise, fin=True)
    base.assert_closed_with(zws, 1009)


# -- context takeover ----------------------------------------------------------------------------


def test_context_takeover_both_ways(server):
    with connect(server, path="/echo-deflate-takeover", offer="permessage-deflate") as ws:
        assert ws.response.headers["sec-websocket-extensions"] == "permessage-deflate"
        comp = zlib.compressobj(6, zlib.DEFLATED, -15)
        decomp = zlib.decompressobj(-15)
        sizes = []
        for i in range(5):
            payload = ('{"n":%d,"text":"the same long text repeated in every message"}' % i).encode() * 5
            ws.send_frame(OP_TEXT, deflate(payload, comp), rsv=RSV1)
            opcode, compressed, wire = recv_message(ws)
            assert compressed, "compression_min_bytes = 0: everything is compressed"
            sizes.append(len(wire))
            assert inflate(wire, decomp) == payload
        # The server remembers what it sent: repeats cost a few bytes.
        assert sizes[-1] < sizes[0] // 2, sizes


def test_client_asks_for_no_server_context_takeover(server):
    offer = "permessage-deflate; server_no_context_takeover"
    with connect(server, path="/echo-deflate-takeover", offer=offer) as ws:
        assert "server_no_context_takeover" in ws.response.headers["sec-websocket-extensions"]
        payload = b"independent message " * 20
        for _ in range(3):
            ws.send_frame(OP_TEXT, deflate(payload), rsv=RSV1)
            opcode, compressed, wire = recv_message(ws)
            assert compressed and inflate(wire) == payload  # a fresh inflater every time


# -- RFC 6455 on the deflate transport ------------------------------------------------------------
# The same frame-level checks as test_rfc6455.py, on a connection that negotiated deflate
# (so the server's own framing reads it) where the server never compresses.


@pytest.fixture
def ws(server):
    with connect(server, path="/echo-deflate-framing") as conn:
        assert "permessage-deflate" in conn.response.headers.get("sec-websocket-extensions", "")
        yield conn


_SKIP = {
    "test_handshake_accept_key",  # asserts that no extension was negotiated
    "test_reserved_bits_without_extension",  # RSV1 is the compression bit here
    "test_accept_key_matches_rfc_example",
    "test_missing_key_is_rejected",
}
for _name in dir(base):
    if _name.startswith("test_") and _name not in _SKIP:
        globals()[f"{_name}_on_deflate"] = getattr(base, _name)
