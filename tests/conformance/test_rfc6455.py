"""RFC 6455 conformance of the `/echo` endpoint, frame by frame.

Every violation must be answered with a close frame carrying the right code (RFC 6455
§7.4.1: 1002 protocol error, 1007 invalid payload data, 1009 message too big), and the
server must close the TCP connection after the closing handshake (§7.1.1).
PROTOCOL §1 (echo mode), §6 (close codes), §10 (max_message_size).
"""

import os
import struct

import pytest
from sbtest import rawws
from sbtest.rawws import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT

ECHO_PATH = "/echo"
ECHO_MAX_MESSAGE_SIZE = 65536  # max_message_size of /echo in tests/e2e/configs/e2e.toml


@pytest.fixture
def ws(server):
    with rawws.RawWebSocket.connect(server.host, server.port, ECHO_PATH) as conn:
        yield conn


def assert_closed_with(ws: rawws.RawWebSocket, *codes: int) -> None:
    frame = ws.expect_close()
    assert frame is not None, f"TCP closed without a close frame; expected close {codes}"
    assert frame.close_code in codes, f"close code {frame.close_code} ({frame.close_reason!r}), expected {codes}"
    assert not frame.masked, "server frames must not be masked"
    assert ws.wait_eof(), "server must close TCP after the close frame"


def recv_data_frames(ws: rawws.RawWebSocket) -> list[rawws.Frame]:
    """The frames of the next data message (the server may fragment it); pings skipped."""
    frames: list[rawws.Frame] = []
    while not frames or not frames[-1].fin:
        f = ws.recv_frame()
        if f.opcode != OP_PING:
            frames.append(f)
    return frames


def assert_echo(ws: rawws.RawWebSocket, opcode: int, payload: bytes) -> None:
    frames = recv_data_frames(ws)
    for f in frames:
        assert not f.masked, "server frames must not be masked"
        assert f.rsv == 0, "no extension negotiated: RSV bits must be 0"
    assert [f.opcode for f in frames] == [opcode] + [OP_CONT] * (len(frames) - 1), frames
    got = b"".join(f.payload for f in frames)
    assert got == payload, f"echo differs: {len(got)} bytes vs {len(payload)}"


# -- opening handshake (§4) -----------------------------------------------------------------


def test_accept_key_matches_rfc_example():
    assert rawws.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_handshake_accept_key(ws):
    h = ws.response.headers
    assert ws.response.status == 101
    assert h.get("upgrade", "").lower() == "websocket"
    assert "upgrade" in h.get("connection", "").lower()
    assert h.get("sec-websocket-accept") == rawws.accept_key(ws.key)
    assert "sec-websocket-extensions" not in h, "compression is off for /echo"


def test_missing_key_is_rejected(server):
    req = rawws.upgrade_request(ECHO_PATH, f"{server.host}:{server.port}", None)
    resp = rawws.http_exchange(server.host, server.port, req)
    assert 400 <= resp.status < 500, f"upgrade without Sec-WebSocket-Key -> {resp.status}"


# -- data frames (§5.6) -----------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 125, 126, 1000, 65535, 65536], ids=lambda n: f"{n}B")
def test_text_echo_lengths(ws, size):
    """7-bit (≤125), 16-bit (126..65535) and 64-bit (65536) payload lengths."""
    payload = ("é" * (size // 2) + "a" * (size % 2)).encode()
    assert len(payload) == size
    ws.send_text(payload)
    assert_echo(ws, OP_TEXT, payload)


@pytest.mark.parametrize("size", [0, 125, 126, 65536], ids=lambda n: f"{n}B")
def test_binary_echo(ws, size):
    payload = os.urandom(size)
    ws.send_binary(payload)
    assert_echo(ws, OP_BINARY, payload)


def test_fragmented_text_is_echoed_as_whole_message(ws):
    ws.send_frame(OP_TEXT, b"Hello, ", fin=False)
    ws.send_frame(OP_CONT, b"", fin=False)
    ws.send_frame(OP_CONT, "wörld".encode(), fin=False)
    ws.send_frame(OP_CONT, b"!", fin=True)
    assert_echo(ws, OP_TEXT, "Hello, wörld!".encode())


def test_fragmented_binary(ws):
    parts = [os.urandom(1000) for _ in range(5)]
    for i, p in enumerate(parts):
        ws.send_frame(OP_BINARY if i == 0 else OP_CONT, p, fin=i == len(parts) - 1)
    assert_echo(ws, OP_BINARY, b"".join(parts))


def test_utf8_code_point_split_across_fragments_is_valid(ws):
    snowman = "☃".encode()  # 3 bytes
    ws.send_frame(OP_TEXT, b"a" + snowman[:1], fin=False)
    ws.send_frame(OP_CONT, snowman[1:] + b"b", fin=True)
    assert_echo(ws, OP_TEXT, b"a" + snowman + b"b")


def test_many_messages_in_one_write(ws):
    ws.send_raw(b"".join(rawws.encode_frame(OP_TEXT, f"m{i}".encode()) for i in range(50)))
    for i in range(50):
        assert_echo(ws, OP_TEXT, f"m{i}".encode())


# -- control frames (§5.5) --------------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b"ping!", bytes(range(125))], ids=["empty", "short", "125B"])
def test_ping_answered_with_same_payload(ws, payload):
    ws.send_frame(OP_PING, payload)
    f = ws.recv_frame()
    assert f.opcode == OP_PONG and f.payload == payload


def test_ping_between_fragments(ws):
    ws.send_frame(OP_TEXT, b"frag", fin=False)
    ws.send_frame(OP_PING, b"mid")
    ws.send_frame(OP_CONT, b"ment", fin=True)
    # The pong may come before or within the echo (control frames may be interleaved).
    frames: list[rawws.Frame] = []
    while not any(f.opcode == OP_PONG for f in frames) or not any(f.fin and f.opcode != OP_PONG for f in frames):
        frames.append(ws.recv_frame())
    assert [f.payload for f in frames if f.opcode == OP_PONG] == [b"mid"]
    data = [f for f in frames if f.opcode in (OP_TEXT, OP_CONT)]
    assert data[0].opcode == OP_TEXT
    assert b"".join(f.payload for f in data) == b"fragment"


def test_unsolicited_pong_is_ignored(ws):
    ws.send_frame(OP_PONG, b"unsolicited")
    ws.send_text("after")
    assert_echo(ws, OP_TEXT, b"after")


def test_ping_payload_over_125_is_protocol_error(ws):
    ws.send_frame(OP_PING, b"x" * 126)
    assert_closed_with(ws, 1002)


def test_fragmented_ping_is_protocol_error(ws):
    ws.send_frame(OP_PING, b"x", fin=False)
    assert_closed_with(ws, 1002)


# -- framing errors → 1002 ------------------------------------------------------------------


def test_unmasked_client_frame(ws):
    ws.send_frame(OP_TEXT, b"no mask", mask=False)
    assert_closed_with(ws, 1002)


@pytest.mark.parametrize("rsv", [1, 2, 4, 7], ids=["rsv3", "rsv2", "rsv1", "all"])
def test_reserved_bits_without_extension(ws, rsv):
    ws.send_frame(OP_TEXT, b"rsv", rsv=rsv)
    assert_closed_with(ws, 1002)


@pytest.mark.parametrize("opcode", [0x3, 0x7, 0xB, 0xF])
def test_unknown_opcode(ws, opcode):
    ws.send_frame(opcode, b"?")
    assert_closed_with(ws, 1002)


def test_continuation_without_start(ws):
    ws.send_frame(OP_CONT, b"orphan", fin=True)
    assert_closed_with(ws, 1002)


def test_new_data_frame_while_fragmented_message_is_open(ws):
    ws.send_frame(OP_TEXT, b"open", fin=False)
    ws.send_frame(OP_TEXT, b"again", fin=True)
    assert_closed_with(ws, 1002)


# -- UTF-8 (§8.1) → 1007 ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [b"\xff", b"abc\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80"],
    ids=["ff", "truncated", "surrogate", "overlong", "above-max"],
)
def test_invalid_utf8_text(ws, payload):
    ws.send_frame(OP_TEXT, payload)
    assert_closed_with(ws, 1007)


def test_invalid_utf8_split_across_fragments(ws):
    ws.send_frame(OP_TEXT, b"ok \xe2\x98", fin=False)  # valid prefix of a 3-byte sequence
    ws.send_frame(OP_CONT, b"\x28 bad", fin=True)  # 0x28 is not a continuation byte
    assert_closed_with(ws, 1007)


def test_binary_frames_are_not_utf8_checked(ws):
    ws.send_binary(b"\xff\xfe\xed\xa0\x80")
    assert_echo(ws, OP_BINARY, b"\xff\xfe\xed\xa0\x80")


# -- closing handshake (§5.5.1, §7.4) ---------------------------------------------------------


def test_close_1000_is_echoed(ws):
    ws.send_close(1000, b"bye")
    f = ws.expect_close()
    assert f is not None and f.close_code == 1000
    assert ws.wait_eof()


def test_close_without_status(ws):
    ws.send_close(None)
    f = ws.expect_close()
    assert f is not None and f.close_code in (None, 1000), f"close reply {f.close_code}"
    assert ws.wait_eof()


@pytest.mark.parametrize("code", [1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999])
def test_valid_close_codes_are_accepted(ws, code):
    ws.send_close(code)
    f = ws.expect_close()
    assert f is not None and f.close_code in (code, 1000), f"close {code} answered with {f and f.close_code}"
    assert ws.wait_eof()


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535])
def test_invalid_close_code_is_protocol_error(ws, code):
    ws.send_close(code)
    assert_closed_with(ws, 1002)


def test_close_payload_of_one_byte_is_protocol_error(ws):
    ws.send_frame(OP_CLOSE, b"\x03")
    assert_closed_with(ws, 1002)


def test_close_reason_with_invalid_utf8(ws):
    ws.send_frame(OP_CLOSE, struct.pack("!H", 1000) + b"\xff\xfe")
    assert_closed_with(ws, 1007, 1002)


def test_nothing_is_echoed_after_close(ws):
    ws.send_close(1000)
    ws.send_text("too late")
    f = ws.recv_frame()
    assert f.opcode == OP_CLOSE, f"expected the close reply, got opcode {f.opcode}"
    assert ws.wait_eof()


# -- limits → 1009 --------------------------------------------------------------------------------


def test_message_of_max_size_is_echoed(ws):
    payload = os.urandom(ECHO_MAX_MESSAGE_SIZE)
    ws.send_binary(payload)
    assert_echo(ws, OP_BINARY, payload)


def test_frame_over_max_message_size(ws):
    ws.send_binary(os.urandom(ECHO_MAX_MESSAGE_SIZE + 1))
    assert_closed_with(ws, 1009)


def test_fragmented_message_over_max_message_size(ws):
    chunk = ECHO_MAX_MESSAGE_SIZE // 2
    ws.send_frame(OP_BINARY, b"a" * chunk, fin=False)
    ws.send_frame(OP_CONT, b"b" * chunk, fin=False)
    ws.send_frame(OP_CONT, b"c" * chunk, fin=True)
    assert_closed_with(ws, 1009)
