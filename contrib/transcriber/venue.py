"""The transcriber's venue mode: one recogniser for the whole room.

Instead of answering `session_request` webhooks with a recogniser per wearer, the transcriber
takes the room's audio — the sound desk or a lectern microphone — from a venue source and
connects once to the box as its venue feed (`tpa_connection_init` with `sessionId` `"venue"`,
or `"venue:<feed>"`); the box sends its transcripts to the captions apps of every session.

Sources: `-` is raw 16 kHz 16-bit little-endian mono PCM on standard input (`arecord -f S16_LE
-r 16000 -c 1 -t raw`, `ffmpeg -i <stream> -f s16le -ar 16000 -ac 1 -`), read as it comes; a
WAV file (16-bit PCM, any rate, resampled to 16 kHz) is played in real time, as a live feed
would arrive, then followed by a second of silence so its last words are finalised; the feed
then stays connected (the show is over, its last line stays on the displays) until the process
is stopped, while the end of standard input ends the feed (the box then tells every session its
microphone is needed again, if some app still wants transcripts).

With `--translate` (as for per-wearer sessions) each final is translated once for the whole
feed, into the targets the box's `publish_demand` asks for (the union over every session that
follows the feed), and published as the feed's `translation` data; the box delivers it to every
follower's translation subscribers.

The connection is a `transcriber.Session` with the venue's id, so the backlog cap, drops,
logs and metrics are those of a per-wearer session. When the box goes away (a restart), the
source keeps being read — audio meanwhile is dropped and counted — and the feed reconnects
with backoff (0.5 s doubling to 10 s).

Several boxes or processes (`--box ADDRESS`, repeated or a comma list; an address is a Unix
socket path, `unix:PATH`, `HOST:PORT` or `ws://HOST:PORT`): the room's audio is recognised
once and every line is published to every box, so each wearer sees the room's captions
whichever process holds their session. Each box has its own connection, reconnect and backoff
and its own send queue and thread ([`BoxLink`]): a box that is down or slow holds no other;
lines for a box that is not connected, or whose queue is full, are dropped and counted.
"""

import json
import queue
import sys
import threading
import time

from audio import SAMPLE_RATE, pcm_bytes, read_wav, resample

# 100 ms of audio: what the glasses send per chunk, and what the source is read in.
CHUNK = SAMPLE_RATE * 2 // 10


def wav_chunks(path):
    """The WAV file at `path` as 16 kHz PCM chunks, paced in real time, then 1 s of silence."""
    with open(path, "rb") as f:
        rate, samples = read_wav(f.read())
    pcm = pcm_bytes(resample(samples, rate)) + bytes(SAMPLE_RATE * 2)
    start = time.monotonic()
    for i in range(0, len(pcm), CHUNK):
        due = start + i / (SAMPLE_RATE * 2)
        time.sleep(max(0.0, due - time.monotonic()))
        yield pcm[i:i + CHUNK]


def stdin_chunks():
    """Raw 16 kHz PCM from standard input, as it comes."""
    stream = sys.stdin.buffer
    while True:
        data = stream.read(CHUNK)
        if not data:
            return
        yield data


def parse_boxes(values):
    """`--box` values (each possibly a comma list) as WebSocket addresses: a Unix socket path
    or a (host, port) pair. A bad one raises ValueError naming it."""
    out = []
    for value in values or []:
        for item in (v.strip() for v in value.split(",")):
            if not item:
                continue
            rest = item[len("ws://"):] if item.startswith("ws://") else item
            rest = rest.rstrip("/")
            if rest.startswith("unix:"):
                out.append(rest[len("unix:"):])
            elif rest.startswith("/"):
                out.append(rest)
            else:
                host, sep, port = rest.rpartition(":")
                if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                    raise ValueError(f"--box {item!r}: expected a socket path, unix:PATH, "
                                     "HOST:PORT or ws://HOST:PORT")
                out.append((host, int(port)))
    return out


class BoxLink:
    """One box the feed publishes to: connects with `connect(address)` (a WebSocket after the
    feed's init was acknowledged), reconnects with backoff (0.5 s doubling to 10 s) when it
    goes, and sends from a queue of its own (`QUEUE` lines) on a thread of its own."""

    QUEUE = 256

    def __init__(self, address, connect, log):
        self.address, self.connect, self.log = address, connect, log
        self.ws = None
        self.lock = threading.Lock()
        self.queue = queue.Queue(self.QUEUE)
        self.sent = self.dropped = self.connects = 0
        self.up = threading.Event()
        threading.Thread(target=self.connector, daemon=True).start()
        threading.Thread(target=self.sender, daemon=True).start()

    def connector(self):
        backoff = 0.5
        while True:
            with self.lock:
                ws = self.ws
            if ws is not None:
                time.sleep(0.1)
                continue
            try:
                ws = self.connect(self.address)
            except (OSError, ValueError, Exception) as e:  # noqa: BLE001 - any failure retries
                self.log("venue_connect_failed", box=str(self.address), reason=str(e),
                         retry_s=backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            backoff = 0.5
            with self.lock:
                self.ws = ws
                self.connects += 1
            self.up.set()
            self.log("venue_connected", box=str(self.address))
            threading.Thread(target=self.reader, args=(ws,), daemon=True).start()

    def reader(self, ws):
        """Reads until the box goes (pings are answered by the client), then lets go of it."""
        try:
            while True:
                ws.recv()
        except Exception as e:  # noqa: BLE001 - closed, reset, or anything: reconnect
            self.gone(ws, e)

    def gone(self, ws, why):
        with self.lock:
            if self.ws is ws:
                self.ws = None
                self.up.clear()
                self.log("venue_disconnected", box=str(self.address), reason=str(why))

    def send_text(self, text):
        """Queue `text` for this box; dropped (and counted) if it is not connected or behind."""
        with self.lock:
            connected = self.ws is not None
        if not connected:
            self.dropped += 1
            return
        try:
            self.queue.put_nowait(text)
        except queue.Full:
            self.dropped += 1

    def sender(self):
        while True:
            text = self.queue.get()
            with self.lock:
                ws = self.ws
            if ws is None:
                self.dropped += 1
                continue
            try:
                ws.send_text(text)
                self.sent += 1
            except Exception as e:  # noqa: BLE001 - the box went: reconnect
                self.dropped += 1
                self.gone(ws, e)


class Fanout:
    """What the recognising session publishes through: every line to every box."""

    def __init__(self, links):
        self.links = links

    def send_text(self, text):
        for link in self.links:
            link.send_text(text)


def connect_box(args, session_id, closed_error):
    """A `connect(address)` for BoxLink: the feed's init on a new WebSocket, acknowledged."""
    from wsclient import WebSocket

    def connect(address):
        ws = WebSocket(address)
        ws.send_text(json.dumps({"type": "tpa_connection_init", "packageName": args.package,
                                 "sessionId": session_id, "apiKey": args.api_key}))
        ws.sock.settimeout(10.0)
        while True:
            op, payload = ws.recv()
            if op != 0x1:
                continue
            msg = json.loads(payload)
            if msg.get("type") == "tpa_connection_ack":
                break
            if msg.get("type") == "tpa_connection_error":
                ws.sock.close()
                raise closed_error(f"init refused: {msg}")
        ws.sock.settimeout(None)
        return ws

    return connect


def run_venue_boxes(args, boxes, make_session, closed_error, emit, connect=None, log=None):
    """The venue feed to several boxes: one recognising session, its lines fanned out."""
    session_id = "venue" if not args.venue_feed else f"venue:{args.venue_feed}"
    log = log or (lambda event, **f: print(
        f"event={event} " + " ".join(f"{k}={v!r}" for k, v in f.items()),
        file=sys.stderr, flush=True))
    connect = connect or connect_box(args, session_id, closed_error)
    links = [BoxLink(address, connect, log) for address in boxes]
    s = make_session(session_id)
    # What Session.connect does after its handshake, with the fan-out as its connection.
    s.ws = Fanout(links)
    s.connected = True
    if getattr(args, "translate", None):
        from translate import Stage
        s.translation = Stage(args.router, args.translate, s.publish_translation, log,
                              interim_ms=args.translate_interim_ms,
                              counters=s.metrics.translations)
    threading.Thread(target=s.recognise_loop, daemon=True).start()
    source = stdin_chunks() if args.venue_audio == "-" else wav_chunks(args.venue_audio)
    for pcm in source:
        s.push_audio(pcm)
    emit("venue_audio_ended")
    if args.venue_audio != "-":
        threading.Event().wait()
    time.sleep(2.0)
    return links


def run_venue(args, metrics, spares, make_session, closed_error, emit):
    """Feed the venue source to a venue session, reconnecting with backoff. Standard input:
    returns when it ends (after the recogniser has had a moment to publish its last words); a
    file: says `venue_audio_ended` and keeps the feed up. With `--box` (several boxes):
    [`run_venue_boxes`]."""
    boxes = parse_boxes(getattr(args, "box", None))
    if boxes:
        return run_venue_boxes(args, boxes, make_session, closed_error, emit)
    session_id = "venue" if not args.venue_feed else f"venue:{args.venue_feed}"
    state = {"session": None}
    lock = threading.Lock()

    def connector():
        backoff = 0.5
        while True:
            with lock:
                s = state["session"]
            if s is not None and not s.closed:
                time.sleep(0.1)
                continue
            s = make_session(session_id)
            try:
                s.connect()
            except (OSError, ValueError, closed_error) as e:
                s.stop()
                print(f"event=venue_connect_failed reason={str(e)!r} retry_s={backoff}",
                      file=sys.stderr, flush=True)
                time.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            backoff = 0.5
            with lock:
                state["session"] = s

    threading.Thread(target=connector, daemon=True).start()
    source = stdin_chunks() if args.venue_audio == "-" else wav_chunks(args.venue_audio)
    for pcm in source:
        with lock:
            s = state["session"]
        if s is not None and not s.closed:
            s.push_audio(pcm)
        else:
            metrics.add(audio_received_bytes=len(pcm), audio_dropped_bytes=len(pcm))
    emit("venue_audio_ended")
    if args.venue_audio != "-":
        threading.Event().wait()
    # The source ended: give the recogniser time to publish what it still holds.
    time.sleep(2.0)
