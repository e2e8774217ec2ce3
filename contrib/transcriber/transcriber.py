#!/usr/bin/env python3
"""On-box transcriber: a system app that turns the glasses' audio into live transcripts.

It answers the box's `session_request` webhook (POST /webhook), connects back to the box over
its Unix socket, sends `tpa_connection_init`, subscribes to `audio_chunk` (raw 16 kHz 16-bit
mono PCM in binary frames) and publishes interim and final `transcription` data
(`{"type":"data_stream","data":<TranscriptionData>}`) recognised by PocketSphinx, locally, with
no cloud. The box routes them to the apps subscribed to `transcription:en-US`.

Configure it in the box's config as a system app allowed on the Unix socket only:

    {"packageName": "system.local.transcriber", "publicUrl": "http://127.0.0.1:3100",
     "hashedApiKey": "<augmentos-edge hash-key KEY>", "isSystemApp": true,
     "permissions": ["MICROPHONE"], "allowedAddresses": ["unix"],
     "publishes": ["transcription"]}

and run it as

    TRANSCRIBER_API_KEY=KEY python3 transcriber.py --socket /run/augmentos-edge.sock --port 3100

If recognition is slower than real time, audio waiting for the recogniser is capped
(`--max-backlog-ms`): the oldest is dropped and the drop is logged, so captions fall behind by
at most that much. Logs are key=value lines on stderr.
"""

import argparse
import base64
import json
import os
import socket
import struct
import sys
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from recognizer import SAMPLE_RATE, PocketSphinxRecognizer


def log(event, **fields):
    parts = [f"event={event}"] + [f"{k}={json.dumps(v)}" for k, v in fields.items()]
    sys.stderr.write(" ".join(parts) + "\n")
    sys.stderr.flush()


# ----------------------------------------------------------------------------------------------
# A minimal WebSocket client (RFC 6455) over a Unix socket
# ----------------------------------------------------------------------------------------------


class WebSocketClosed(Exception):
    pass


class UnixWebSocket:
    """Blocking client: `send_text`, `recv` -> (opcode, payload). One reader, many writers."""

    def __init__(self, path, resource="/app-ws", timeout=10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.send_lock = threading.Lock()
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {resource} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise WebSocketClosed("closed during the handshake")
            head += chunk
        head, self.buf = head.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise WebSocketClosed(f"upgrade refused: {status.decode(errors='replace')}")
        self.sock.settimeout(None)

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise WebSocketClosed("connection closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
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
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        with self.send_lock:
            self.sock.sendall(header + mask + masked)

    def send_text(self, text):
        self._send_frame(0x1, text.encode())

    def recv(self):
        """The next whole message as (opcode, payload); answers pings; raises on close."""
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
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
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
                raise WebSocketClosed(f"closed by the box ({code} {payload[2:].decode(errors='replace')})")
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


# ----------------------------------------------------------------------------------------------
# One session: connection, audio backlog, recogniser thread
# ----------------------------------------------------------------------------------------------


class Session:
    def __init__(self, args, session_id):
        self.args = args
        self.session_id = session_id
        self.ws = None
        self.cond = threading.Condition()
        self.backlog = deque()  # PCM chunks waiting for the recogniser
        self.backlog_bytes = 0
        self.dropped_bytes = 0
        self.pending_skip = 0
        self.closed = False
        self.max_backlog = int(args.max_backlog_ms * SAMPLE_RATE * 2 / 1000)

    def connect(self):
        """Connects and waits for the ack (the webhook is answered after this)."""
        self.ws = UnixWebSocket(self.args.socket)
        self.ws.send_text(json.dumps({
            "type": "tpa_connection_init",
            "packageName": self.args.package,
            "sessionId": self.session_id,
            "apiKey": self.args.api_key,
        }))
        self.ws.sock.settimeout(10.0)
        while True:
            op, payload = self.ws.recv()
            if op != 0x1:
                continue
            msg = json.loads(payload)
            if msg.get("type") == "tpa_connection_ack":
                break
            if msg.get("type") == "tpa_connection_error":
                raise WebSocketClosed(f"init refused: {msg}")
        self.ws.sock.settimeout(None)
        self.ws.send_text(json.dumps({
            "type": "subscription_update",
            "packageName": self.args.package,
            "sessionId": self.session_id,
            "subscriptions": ["audio_chunk"],
        }))
        log("connected", session=self.session_id)
        threading.Thread(target=self.read_loop, daemon=True).start()
        threading.Thread(target=self.recognise_loop, daemon=True).start()

    def read_loop(self):
        try:
            while True:
                op, payload = self.ws.recv()
                if op == 0x2:
                    self.push_audio(payload)
                elif op == 0x1:
                    msg = json.loads(payload)
                    if msg.get("type") in ("tpa_connection_error", "app_stopped"):
                        log("box_message", session=self.session_id, message=msg)
        except (WebSocketClosed, OSError) as e:
            log("disconnected", session=self.session_id, reason=str(e))
        self.stop()

    def push_audio(self, pcm):
        with self.cond:
            self.backlog.append(pcm)
            self.backlog_bytes += len(pcm)
            dropped = 0
            while self.backlog_bytes > self.max_backlog and len(self.backlog) > 1:
                old = self.backlog.popleft()
                self.backlog_bytes -= len(old)
                dropped += len(old)
            # Dropped audio still counts on the audio clock, so later timestamps stay right.
            self.pending_skip += dropped
            self.dropped_bytes += dropped
            self.cond.notify()
        if dropped:
            log("audio_dropped", session=self.session_id, ms=dropped * 1000 // (SAMPLE_RATE * 2),
                total_ms=self.dropped_bytes * 1000 // (SAMPLE_RATE * 2))

    def recognise_loop(self):
        recogniser = PocketSphinxRecognizer(phrases=self.args.phrases,
                                            interim_ms=self.args.interim_ms)
        utterance = 0
        while True:
            with self.cond:
                while not self.backlog and not self.closed:
                    self.cond.wait()
                if self.closed:
                    return
                skip, self.pending_skip = self.pending_skip, 0
                pcm = self.backlog.popleft()
                self.backlog_bytes -= len(pcm)
            results = recogniser.skip(skip) if skip else []
            results += recogniser.feed(pcm)
            for r in results:
                self.publish(r, utterance)
                if r.is_final:
                    utterance += 1

    def publish(self, r, utterance):
        data = {
            "type": "transcription",
            "text": r.text,
            "isFinal": r.is_final,
            "startTime": r.start_ms,
            "endTime": r.end_ms,
            "utteranceId": f"{self.session_id}-{utterance}",
            "transcribeLanguage": self.args.language,
            "provider": "pocketsphinx",
        }
        log("final" if r.is_final else "interim", session=self.session_id, text=r.text,
            start_ms=r.start_ms, end_ms=r.end_ms)
        try:
            self.ws.send_text(json.dumps({"type": "data_stream", "sessionId": self.session_id,
                                          "streamType": "transcription", "data": data}))
        except OSError as e:
            log("publish_failed", session=self.session_id, reason=str(e))

    def stop(self):
        with self.cond:
            self.closed = True
            self.cond.notify()
        if self.ws:
            self.ws.close()


# ----------------------------------------------------------------------------------------------
# The webhook
# ----------------------------------------------------------------------------------------------


def make_handler(args, sessions, lock):
    class Webhook(BaseHTTPRequestHandler):
        def log_message(self, fmt, *a):
            pass

        def reply(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            if self.path != "/webhook":
                return self.reply(404, {"status": "error", "message": "not found"})
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                return self.reply(400, {"status": "error", "message": "bad JSON"})
            kind, session_id = body.get("type"), body.get("sessionId")
            log("webhook", type=kind, session=session_id)
            if kind == "session_request" and session_id:
                session = Session(args, session_id)
                try:
                    session.connect()
                except (OSError, WebSocketClosed, ValueError) as e:
                    log("connect_failed", session=session_id, reason=str(e))
                    session.stop()
                    return self.reply(500, {"status": "error", "message": "Failed to connect"})
                with lock:
                    old = sessions.pop(session_id, None)
                    sessions[session_id] = session
                if old:
                    old.stop()
                return self.reply(200, {"status": "success"})
            if kind == "stop_request" and session_id:
                with lock:
                    old = sessions.pop(session_id, None)
                if old:
                    old.stop()
                return self.reply(200, {"status": "success"})
            return self.reply(400, {"status": "error", "message": "Unknown webhook request type"})

    return Webhook


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--socket", required=True, help="the box's Unix socket (its unix: listener)")
    p.add_argument("--host", default="127.0.0.1", help="webhook address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=3100, help="webhook port (default 3100)")
    p.add_argument("--package", default="system.local.transcriber")
    p.add_argument("--api-key", default=os.environ.get("TRANSCRIBER_API_KEY"),
                   help="the app key (default: $TRANSCRIBER_API_KEY)")
    p.add_argument("--language", default="en-US")
    p.add_argument("--phrases", help="restrict the vocabulary: a JSGF grammar (.gram/.jsgf) "
                                     "or a text file of phrases, one a line")
    p.add_argument("--interim-ms", type=int, default=300,
                   help="at most one interim result per this much audio (default 300)")
    p.add_argument("--max-backlog-ms", type=int, default=2000,
                   help="audio waiting for the recogniser past this is dropped (default 2000)")
    args = p.parse_args()
    if not args.api_key:
        p.error("--api-key or TRANSCRIBER_API_KEY is required")
    # Load the model once before serving, so the first session does not pay for it.
    PocketSphinxRecognizer(phrases=args.phrases)
    sessions, lock = {}, threading.Lock()
    server = ThreadingHTTPServer((args.host, args.port), make_handler(args, sessions, lock))
    server.daemon_threads = True
    log("listening", host=args.host, port=server.server_address[1])
    print(json.dumps({"event": "listening", "port": server.server_address[1]}), flush=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        thread.join()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
