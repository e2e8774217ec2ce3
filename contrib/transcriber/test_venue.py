"""Unit tests of the transcriber's venue mode (venue.py): the sources and the reconnecting feed.
No box, no recogniser: a fake session stands for the connection.

    cd contrib/transcriber && python3 -m unittest -v test_venue
"""

import io
import sys
import tempfile
import time
import unittest
from types import SimpleNamespace

import venue
from audio import SAMPLE_RATE
from transcriber import Metrics


class Closed(Exception):
    pass


class FakeSession:
    """Refuses the first `failures` connects (as a box that is restarting would)."""

    made = []

    def __init__(self, session_id, failures):
        self.session_id, self.closed, self.audio = session_id, False, []
        self.failures = failures
        FakeSession.made.append(self)

    def connect(self):
        if len(FakeSession.made) <= self.failures:
            raise Closed("box not there")

    def stop(self):
        self.closed = True

    def push_audio(self, pcm):
        self.audio.append(pcm)


class VenueTest(unittest.TestCase):
    def test_a_wav_file_is_resampled_to_16_khz_chunks_and_ends_with_silence(self):
        rate, n = 8000, 8000  # one second at 8 kHz
        data = (b"RIFF" + (36 + 2 * n).to_bytes(4, "little") + b"WAVEfmt "
                + (16).to_bytes(4, "little") + (1).to_bytes(2, "little")
                + (1).to_bytes(2, "little") + rate.to_bytes(4, "little")
                + (2 * rate).to_bytes(4, "little") + (2).to_bytes(2, "little")
                + (16).to_bytes(2, "little") + b"data" + (2 * n).to_bytes(4, "little")
                + b"\x10\x00" * n)
        with tempfile.NamedTemporaryFile(suffix=".wav") as f:
            f.write(data)
            f.flush()
            venue.time = SimpleNamespace(monotonic=time.monotonic, sleep=lambda s: None)
            try:
                chunks = list(venue.wav_chunks(f.name))
            finally:
                venue.time = time
        pcm = b"".join(chunks)
        # One second of speech at 16 kHz, then one second of silence.
        self.assertEqual(len(pcm), 2 * SAMPLE_RATE * 2)
        self.assertTrue(all(len(c) <= venue.CHUNK for c in chunks))
        self.assertEqual(pcm[-SAMPLE_RATE * 2:], bytes(SAMPLE_RATE * 2))

    def test_the_feed_reconnects_with_backoff_and_audio_meanwhile_is_counted_as_dropped(self):
        FakeSession.made = []
        audio = b"\x01\x02" * (venue.CHUNK // 2) * 40  # 4 s of audio on stdin
        stdin = SimpleNamespace(buffer=io.BytesIO(audio))
        args = SimpleNamespace(venue_audio="-", venue_feed="hall-b")
        metrics = Metrics()
        events = []
        # Stdin is read at once here; slow it so the connector gets its turns.
        read = stdin.buffer.read
        stdin.buffer.read = lambda n: (time.sleep(0.05), read(n))[1]
        old, sys.stdin = sys.stdin, stdin
        try:
            venue.run_venue(args, metrics, None, lambda sid: FakeSession(sid, failures=2),
                            Closed, lambda e, **f: events.append(e))
        finally:
            sys.stdin = old
        self.assertEqual(events, ["venue_audio_ended"])
        self.assertEqual([s.session_id for s in FakeSession.made], ["venue:hall-b"] * 3)
        live = FakeSession.made[2]
        got = sum(len(c) for c in live.audio)
        # Everything not given to the live session was counted as received and dropped.
        self.assertGreater(got, 0)
        self.assertEqual(metrics.audio_dropped_bytes, len(audio) - got)
        self.assertEqual(metrics.audio_received_bytes, len(audio) - got)


if __name__ == "__main__":
    unittest.main()
