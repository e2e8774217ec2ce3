"""A minimal blocking WebSocket client (RFC 6455, stdlib only) over a Unix socket or TCP.

Used by the transcriber (to the box's Unix socket) and by the glasses client of the captions
stack (to /glasses-ws over TCP). Client frames are masked; pings are answered inside `recv`;
a close from the server is echoed and raised as `WebSocketClosed`.
"""

import base64
import os
import socket
import struct
import threading


def _mask(payload, mask):
    """XOR with the 4-byte mask, a whole machine word at a time."""
    n = len(payload)
    if not n:
        return b""
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "little")
    return (int.from_bytes(payload, "little") ^ key).to_bytes(n, "little")


class WebSocketClosed(Exception):
    pass


class WebSocket:
    """Blocking client: `send_text`, `send_binary`, `recv` -> (opcode, payload). One reader,
    many writers. `address` is a Unix socket path or a (host, port) pair."""

    def __init__(self, address, resource="/app-ws", headers=None, timeout=10.0):
        if isinstance(address, tuple):
            self.sock = socket.create_connection(address, timeout=timeout)
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(address)
        self.send_lock = threading.Lock()
        key = base64.b64encode(os.urandom(16)).decode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        request = (
            f"GET {resource} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"{extra}\r\n"
        )
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise WebSocketClosed("closed during the handshake")
            head += chunk
        head, rest = head.split(b"\r\n\r\n", 1)
        self.buf, self.pos = bytearray(rest), 0
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise WebSocketClosed(f"upgrade refused: {status.decode(errors='replace')}")
        self.sock.settimeout(None)

    def _read(self, n):
        while len(self.buf) - self.pos < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise WebSocketClosed("connection closed")
            self.buf += chunk
        out = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return out

    def _send_frame(self, opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = _mask(payload, mask)
        with self.send_lock:
            self.sock.sendall(header + mask + masked)

    def send_text(self, text):
        self._send_frame(0x1, text.encode())

    def send_binary(self, data):
        self._send_frame(0x2, bytes(data))

    def recv(self):
        """The next whole message as (opcode, payload); answers pings; raises on close. A
        socket timeout leaves the partly read message in the buffer for the next call."""
        start = self.pos
        try:
            message = self._recv()
        except TimeoutError:
            self.pos = start
            raise
        del self.buf[:self.pos]
        self.pos = 0
        return message

    def _recv(self):
        parts, first_op = [], None
        while True:
            b0, b1 = self._read(2)
            fin, opcode, n = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._read(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._read(8))
            mask = self._read(4) if b1 & 0x80 else None
            payload = self._read(n)
            if mask:
                payload = _mask(payload, mask)
            if opcode == 0x9:
                self._send_frame(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            if opcode == 0x8:
                try:
                    self._send_frame(0x8, payload[:2])
                except OSError:
                    pass
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                raise WebSocketClosed(f"closed by the server ({code} {payload[2:].decode(errors='replace')})")
            if opcode != 0x0:
                first_op = opcode
            parts.append(payload)
            if fin:
                return first_op, b"".join(parts)

    def close(self):
        try:
            self._send_frame(0x8, struct.pack("!H", 1000))
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
