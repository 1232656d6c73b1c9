"""A minimal, deliberately strict RFC 6455 client on a plain blocking socket.

Used where a real client library would get in the way: the conformance suite (malformed
frames on purpose), clients that must *not* answer pings, and stalled readers with a tiny
SO_RCVBUF for the slow-consumer tests. Nothing here answers pings or closes by itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import time
from dataclasses import dataclass

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

DEFAULT_TIMEOUT = 5.0


class ConnectionClosed(Exception):
    """The peer closed the TCP connection (EOF or reset)."""


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def encode_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
    masking_key: bytes | None = None,
) -> bytes:
    """Encode one frame. `rsv` is the 3-bit RSV1..RSV3 value; lengths pick 7/16/64-bit forms."""
    head = bytearray([(0x80 if fin else 0) | ((rsv & 0x7) << 4) | (opcode & 0xF)])
    n = len(payload)
    mask_bit = 0x80 if mask else 0
    if n < 126:
        head.append(mask_bit | n)
    elif n < 1 << 16:
        head.append(mask_bit | 126)
        head += struct.pack("!H", n)
    else:
        head.append(mask_bit | 127)
        head += struct.pack("!Q", n)
    if not mask:
        return bytes(head) + payload
    key = masking_key if masking_key is not None else os.urandom(4)
    return bytes(head) + key + apply_mask(payload, key)


def apply_mask(payload: bytes, key: bytes) -> bytes:
    if not payload:
        return b""
    n = len(payload)
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


def close_payload(code: int | None, reason: bytes = b"") -> bytes:
    return b"" if code is None else struct.pack("!H", code) + reason


@dataclass
class Frame:
    fin: bool
    rsv: int
    opcode: int
    masked: bool
    payload: bytes

    @property
    def close_code(self) -> int | None:
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def close_reason(self) -> bytes:
        return self.payload[2:]


def decode_frame(buf: bytearray) -> Frame | None:
    """Take one complete frame off the front of `buf`, or return None if incomplete."""
    if len(buf) < 2:
        return None
    b0, b1 = buf[0], buf[1]
    masked = bool(b1 & 0x80)
    n = b1 & 0x7F
    pos = 2
    if n == 126:
        if len(buf) < 4:
            return None
        n = struct.unpack_from("!H", buf, 2)[0]
        pos = 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n = struct.unpack_from("!Q", buf, 2)[0]
        pos = 10
    key = b""
    if masked:
        if len(buf) < pos + 4:
            return None
        key = bytes(buf[pos : pos + 4])
        pos += 4
    if len(buf) < pos + n:
        return None
    payload = bytes(buf[pos : pos + n])
    del buf[: pos + n]
    if masked:
        payload = apply_mask(payload, key)
    return Frame(fin=bool(b0 & 0x80), rsv=(b0 >> 4) & 0x7, opcode=b0 & 0xF, masked=masked, payload=payload)


# -- HTTP -----------------------------------------------------------------------------------


@dataclass
class HttpResponse:
    status: int
    reason: str
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self):
        return json.loads(self.body)

    def assert_refused(self, status: int, code: str) -> None:
        """A refusal at the upgrade: `status` with `{"error":{"code":…}}` as body (§8, §11)."""
        assert self.status == status, f"expected {status}, got {self.status} {self.body[:200]!r}"
        try:
            got = self.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            raise AssertionError(f"body is not an error object: {self.body[:200]!r}") from None
        assert got == code, f"expected error code {code}, got {got}"


def _read_head(sock: socket.socket, buf: bytearray, deadline: float) -> bytes:
    while b"\r\n\r\n" not in buf:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionClosed(f"EOF while reading HTTP head; got {bytes(buf)!r}")
        buf += chunk
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end])
    del buf[:end]
    return head


def _parse_head(head: bytes) -> tuple[int, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    _version, status, *reason = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return int(status), (reason[0] if reason else ""), headers


def upgrade_request(path: str, host: str, key: str, headers: dict[str, str] | None = None) -> bytes:
    h = {
        "Host": host,
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Version": "13",
    }
    h.update(headers or {})
    lines = [f"GET {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in h.items() if v is not None]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def http_exchange(host: str, port: int, request: bytes, timeout: float = DEFAULT_TIMEOUT) -> HttpResponse:
    """Send a raw HTTP/1.1 request and read the response head plus a Content-Length body."""
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request)
        buf = bytearray()
        status, reason, headers = _parse_head(_read_head(sock, buf, deadline))
        length = int(headers.get("content-length", "0") or 0)
        while len(buf) < length and time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
        return HttpResponse(status, reason, headers, bytes(buf[:length]))


# -- WebSocket ------------------------------------------------------------------------------


class RawWebSocket:
    """A blocking WebSocket client that exposes individual frames."""

    def __init__(self, sock: socket.socket, buf: bytearray, response: HttpResponse, key: str):
        self.sock = sock
        self.buf = buf
        self.response = response
        self.key = key

    @classmethod
    def connect(
        cls,
        host: str,
        port: int,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        rcvbuf: int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> RawWebSocket:
        """Open a socket (optionally with a small SO_RCVBUF, set before connect so the
        advertised window stays small) and complete the opening handshake by hand."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(timeout)
            sock.connect((host, port))
            key = base64.b64encode(os.urandom(16)).decode()
            sock.sendall(upgrade_request(path, f"{host}:{port}", key, headers))
            buf = bytearray()
            status, reason, hdrs = _parse_head(_read_head(sock, buf, time.monotonic() + timeout))
            response = HttpResponse(status, reason, hdrs, b"")
            if status != 101:
                raise AssertionError(f"expected 101 from {path}, got {status} {reason} {hdrs}")
            return cls(sock, buf, response, key)
        except BaseException:
            sock.close()
            raise

    # -- sending ---------------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        self.sock.settimeout(DEFAULT_TIMEOUT)
        self.sock.sendall(data)

    def send_frame(self, opcode: int, payload: bytes = b"", **kw) -> None:
        self.send_raw(encode_frame(opcode, payload, **kw))

    def send_text(self, text: str | bytes, **kw) -> None:
        self.send_frame(OP_TEXT, text.encode() if isinstance(text, str) else text, **kw)

    def send_binary(self, data: bytes, **kw) -> None:
        self.send_frame(OP_BINARY, data, **kw)

    def send_close(self, code: int | None = 1000, reason: bytes = b"") -> None:
        self.send_frame(OP_CLOSE, close_payload(code, reason))

    # -- receiving -------------------------------------------------------------------------

    def recv_frame(self, timeout: float = DEFAULT_TIMEOUT) -> Frame:
        """Next frame. Raises TimeoutError, or ConnectionClosed on EOF/reset."""
        deadline = time.monotonic() + timeout
        while True:
            frame = decode_frame(self.buf)
            if frame is not None:
                return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no complete frame within {timeout}s ({len(self.buf)} bytes buffered)")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(1 << 16)
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError) as e:
                raise ConnectionClosed(str(e)) from e
            if not chunk:
                raise ConnectionClosed("EOF")
            self.buf += chunk

    def recv_message(self, timeout: float = DEFAULT_TIMEOUT) -> tuple[int, bytes]:
        """Next data message (opcode, payload), reassembling fragments. Control frames in
        between are skipped (pings are *not* answered); a close frame raises AssertionError."""
        deadline = time.monotonic() + timeout
        opcode, parts = None, []
        while True:
            f = self.recv_frame(max(0.0, deadline - time.monotonic()))
            if f.opcode in (OP_PING, OP_PONG):
                continue
            if f.opcode == OP_CLOSE:
                raise AssertionError(f"got close {f.close_code} {f.close_reason!r} while waiting for a message")
            if opcode is None:
                opcode = f.opcode
            parts.append(f.payload)
            if f.fin:
                return opcode, b"".join(parts)

    def expect_close(self, timeout: float = DEFAULT_TIMEOUT) -> Frame | None:
        """Read until a close frame arrives (returned) or the TCP connection ends (None).
        Data and ping frames before it are skipped."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                f = self.recv_frame(max(0.0, deadline - time.monotonic()))
            except ConnectionClosed:
                return None
            if f.opcode == OP_CLOSE:
                return f

    def wait_eof(self, timeout: float = DEFAULT_TIMEOUT) -> bool:
        """After the closing handshake: True once the server has closed TCP."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self.recv_frame(max(0.0, deadline - time.monotonic()))
        except ConnectionClosed:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> RawWebSocket:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
