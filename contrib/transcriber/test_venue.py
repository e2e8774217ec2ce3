"""Unit tests of the transcriber's venue mode (venue.py): the sources, the reconnecting feed,
and the feed to several boxes (each line to every box, a box that is down or hung holding no
other). No box, no recogniser: fake sessions and fake box connections stand for them.

    cd contrib/transcriber && python3 -m unittest -v test_venue
"""

import io
import sys
import tempfile
import threading
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


class FakeBox:
    """A connected box: records what it is sent; `hang` blocks every send (a box that stopped
    reading); `recv` blocks until closed."""

    def __init__(self, hang=False):
        self.got, self.hang = [], hang
        self.closed = threading.Event()

    def send_text(self, text):
        if self.hang:
            self.closed.wait()
            raise OSError("closed")
        self.got.append(text)

    def recv(self):
        self.closed.wait()
        raise Closed("closed")


def wait_until(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


class SeveralBoxesTest(unittest.TestCase):
    def test_box_addresses_are_parsed_repeated_or_as_a_comma_list_and_a_bad_one_named(self):
        self.assertEqual(
            venue.parse_boxes(["ws://127.0.0.1:8101,127.0.0.1:8102", "unix:/run/e.sock",
                               "/tmp/x.sock"]),
            [("127.0.0.1", 8101), ("127.0.0.1", 8102), "/run/e.sock", "/tmp/x.sock"])
        for bad in ["127.0.0.1", "host:0", "host:99999", ":80"]:
            with self.assertRaises(ValueError) as e:
                venue.parse_boxes([bad])
            self.assertIn(bad, str(e.exception))

    def test_every_line_reaches_every_box_and_a_down_or_hung_box_holds_no_other(self):
        up, hung = FakeBox(), [FakeBox(hang=True)]
        attempts = []

        def connect(address):
            attempts.append((address, time.monotonic()))
            if address == "down":
                raise OSError("connection refused")
            if address == "hung" and hung[-1].closed.is_set():
                hung.append(FakeBox())  # the box back, reading again
            return {"up": up, "hung": hung[-1]}[address]

        events = []
        links = [venue.BoxLink(a, connect, lambda e, **f: events.append((e, f)))
                 for a in ["up", "down", "hung"]]
        fan = venue.Fanout(links)
        self.assertTrue(wait_until(lambda: links[0].up.is_set() and links[2].up.is_set()))
        lines = [f"line {i}" for i in range(2 * venue.BoxLink.QUEUE)]
        half = venue.BoxLink.QUEUE // 2
        waited = 0.0
        for at in range(0, len(lines), half):
            start = time.monotonic()
            for line in lines[at:at + half]:
                fan.send_text(line)
            waited = max(waited, time.monotonic() - start)
            self.assertTrue(wait_until(lambda: len(up.got) == at + half))
        # Publishing never waited for the down or the hung box.
        self.assertLess(waited, 0.5)
        self.assertEqual(up.got, lines)
        self.assertEqual(links[0].dropped, 0)
        # The down box: every line dropped and counted; it keeps trying, with backoff.
        self.assertEqual(links[1].dropped, len(lines))
        self.assertTrue(wait_until(lambda: len([a for a in attempts if a[0] == "down"]) >= 3,
                                   timeout=4.0))
        down = [t for a, t in attempts if a == "down"]
        self.assertGreater(down[2] - down[1], down[1] - down[0])
        # The hung box: its own queue filled, the rest dropped and counted.
        self.assertGreater(links[2].dropped, 0)
        # The hung box goes: it is let go and reconnected, and gets new lines again.
        hung[0].closed.set()
        self.assertTrue(wait_until(lambda: links[2].connects >= 2 and links[2].queue.empty()))
        fan.send_text("after")
        self.assertTrue(wait_until(lambda: hung[-1].got[-1:] == ["after"] and up.got[-1] == "after"))
        self.assertIn("venue_disconnected", [e for e, _ in events])

    def test_the_venue_feed_recognises_once_and_publishes_to_each_box(self):
        up = FakeBox()
        made = []

        class Recognising:
            """Publishes one line per chunk of audio through its connection (`ws`)."""

            def __init__(self, session_id):
                self.session_id, self.ws, self.chunks = session_id, None, 0
                made.append(self)

            def push_audio(self, pcm):
                self.chunks += 1
                self.ws.send_text(f"line {self.chunks}")

            def recognise_loop(self):
                pass

        audio = b"\x01\x02" * (venue.CHUNK // 2) * 5
        stdin = SimpleNamespace(buffer=io.BytesIO(audio))
        args = SimpleNamespace(venue_audio="-", venue_feed="", translate=[])

        def connect(address):
            if address == ("127.0.0.1", 1):
                raise OSError("connection refused")
            return up

        old, sys.stdin = sys.stdin, stdin
        old_sleep = venue.time.sleep
        try:
            # Audio starts once the up box is connected (the connector's first turn).
            read = stdin.buffer.read
            stdin.buffer.read = lambda n: (time.sleep(0.05), read(n))[1]
            venue.time = SimpleNamespace(monotonic=time.monotonic,
                                         sleep=lambda s: old_sleep(min(s, 0.2)))
            links = venue.run_venue_boxes(
                args, venue.parse_boxes(["127.0.0.1:1,127.0.0.1:2"]), Recognising, Closed,
                lambda e, **f: None, connect=connect, log=lambda e, **f: None)
        finally:
            sys.stdin = old
            venue.time = time
        self.assertEqual(len(made), 1)  # one recognition for both boxes
        self.assertEqual(made[0].session_id, "venue")
        self.assertEqual(len(links), 2)
        self.assertTrue(wait_until(lambda: links[1].sent + links[1].dropped == 5))
        self.assertGreater(links[1].sent, 0)
        self.assertEqual(up.got, [f"line {i}" for i in range(6 - links[1].sent, 6)])
        self.assertEqual((links[0].sent, links[0].dropped), (0, 5))


if __name__ == "__main__":
    unittest.main()
