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
"""

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


def run_venue(args, metrics, spares, make_session, closed_error, emit):
    """Feed the venue source to a venue session, reconnecting with backoff. Standard input:
    returns when it ends (after the recogniser has had a moment to publish its last words); a
    file: says `venue_audio_ended` and keeps the feed up."""
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
