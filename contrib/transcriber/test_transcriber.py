"""Unit tests of the transcriber's own logic: the capped audio backlog, the metrics text, the
phrase list's language model, the WebSocket client's masking. Fast; no box, no audio device.

    cd contrib/transcriber && python3 -m unittest -v
"""

import math
import os
import unittest

import wsclient
from transcriber import Backlog, Metrics


class BacklogTest(unittest.TestCase):
    def test_keeps_everything_below_the_cap(self):
        b = Backlog(max_bytes=1000)
        for _ in range(3):
            self.assertEqual(b.push(b"x" * 300), 0)
        self.assertEqual(b.bytes, 900)
        self.assertEqual(b.take(), (0, b"x" * 300))

    def test_drops_the_oldest_past_the_cap_and_counts_it_on_the_clock(self):
        b = Backlog(max_bytes=1000)
        b.push(b"a" * 400)
        b.push(b"b" * 400)
        self.assertEqual(b.push(b"c" * 400), 400)  # "a" goes
        self.assertEqual(b.bytes, 800)
        self.assertEqual(b.take(), (400, b"b" * 400))  # the gap is reported once, before "b"
        self.assertEqual(b.take(), (0, b"c" * 400))
        self.assertIsNone(b.take())

    def test_never_grows_without_bound_under_a_stalled_reader(self):
        b = Backlog(max_bytes=32000)
        dropped = sum(b.push(bytes(640)) for _ in range(10_000))
        self.assertLessEqual(b.bytes, 32000)
        self.assertLessEqual(b.max_seen, 32000)
        self.assertEqual(dropped + b.bytes, 640 * 10_000)

    def test_a_chunk_bigger_than_the_cap_is_still_kept(self):
        b = Backlog(max_bytes=100)
        b.push(b"a" * 50)
        self.assertEqual(b.push(b"b" * 500), 50)
        self.assertEqual(b.take(), (50, b"b" * 500))


class MetricsTest(unittest.TestCase):
    def test_text_is_prometheus_exposition(self):
        m = Metrics()
        m.add(audio_received_bytes=32000 * 3, audio_dropped_bytes=16000, sessions=1)
        m.results["final"] += 2
        text = m.text()
        self.assertIn("transcriber_audio_received_seconds_total 3\n", text)
        self.assertIn("transcriber_audio_dropped_seconds_total 0.5\n", text)
        self.assertIn('transcriber_results_total{kind="final"} 2\n', text)
        self.assertIn("# TYPE transcriber_sessions gauge\n", text)
        for line in text.splitlines():
            if not line.startswith("#"):
                float(line.rsplit(" ", 1)[1])


class FakeBox:
    """The box's side of a session's connection: messages to read, then a close; what the
    session sends is kept."""

    def __init__(self, messages):
        self.messages = list(messages)
        self.sent = []

    def recv(self):
        import json

        if not self.messages:
            raise wsclient.WebSocketClosed("closed")
        return 0x1, json.dumps(self.messages.pop(0)).encode()

    def send_text(self, text):
        import json

        self.sent.append(json.loads(text))

    def close(self):
        pass


class DemandTest(unittest.TestCase):
    """The session reads the box's publish_demand and translates only what is demanded."""

    def session(self, box_messages, engine):
        import threading
        import time
        from types import SimpleNamespace

        import translate
        from transcriber import Session

        args = SimpleNamespace(max_backlog_ms=2000, translate=["es-ES", "pt-BR"],
                               language="en-US", engine="test")
        s = Session(args, "ada-stt", Metrics(), spares=None)
        s.ws = FakeBox(box_messages)
        s.translation = translate.Stage(translate.Router([engine]), args.translate,
                                        s.publish_translation, lambda *a, **k: None,
                                        counters=s.metrics.translations)
        reader = threading.Thread(target=s.read_loop)
        closed = threading.Event()
        s.stop = closed.set  # the reader ends the session when the box closes
        reader.start()
        self.assertTrue(closed.wait(5))
        return s, time

    def results(self, s, time, texts):
        from collections import namedtuple

        R = namedtuple("R", "text is_final start_ms end_ms")
        for i, t in enumerate(texts):
            s.publish(R(t, True, 0, 100), i)
        time.sleep(0.3)
        s.translation.close()
        return [(m["data"]["translateLanguage"], m["data"]["text"])
                for m in s.ws.sent if m.get("streamType") == "translation"]

    class Engine:
        name = "upper"
        pairs = {("en", "es"), ("en", "pt")}

        def __init__(self):
            self.calls = []

        def translate(self, text, src, tgt):
            self.calls.append((text, tgt))
            return text.upper()

    def test_not_demanded_is_not_translated(self):
        engine = self.Engine()
        s, time = self.session([{"type": "publish_demand", "sessionId": "ada-stt",
                                 "translations": ["en-US-to-pt-BR", "all-to-de-DE"]}], engine)
        got = self.results(s, time, ["good morning"])
        self.assertEqual(got, [("pt-BR", "GOOD MORNING")])
        self.assertEqual(engine.calls, [("good morning", "pt-BR")])
        # The source transcript went out all the same.
        self.assertEqual([m["data"]["text"] for m in s.ws.sent
                          if m.get("streamType") == "transcription"], ["good morning"])

    def test_nothing_demanded_nothing_translated(self):
        engine = self.Engine()
        s, time = self.session([{"type": "publish_demand", "translations": []}], engine)
        self.assertEqual(self.results(s, time, ["hello", "again"]), [])
        self.assertEqual(engine.calls, [])

    def test_the_unserved_pairs_are_told_to_the_box_once_per_change(self):
        def demand(*pairs):
            return {"type": "publish_demand", "translations": list(pairs)}

        s, _ = self.session([
            demand("en-US-to-pt-BR"),  # all served: nothing to say
            demand("en-US-to-pt-BR", "en-US-to-xx-XX", "all-to-de-DE"),
            demand("all-to-de-DE", "en-US-to-xx-XX", "all-to-es-ES"),  # the same set
            demand("en-US-to-es-ES", "de-DE-to-es-ES"),  # a source it does not hear
            demand("en-US-to-es-ES"),
            demand(),
        ], self.Engine())
        s.translation.close()
        told = [m for m in s.ws.sent if m.get("type") == "publish_unserved"]
        self.assertEqual([m["translations"] for m in told],
                         [["all-to-de-DE", "en-US-to-xx-XX"], ["de-DE-to-es-ES"], []])
        self.assertEqual(set(told[0]), {"type", "translations"})

    def test_an_older_box_that_says_nothing_gets_every_configured_target(self):
        engine = self.Engine()
        s, time = self.session([{"type": "tpa_connection_ack"}], engine)
        self.assertEqual(sorted(self.results(s, time, ["hi"])),
                         [("es-ES", "HI"), ("pt-BR", "HI")])


class MaskTest(unittest.TestCase):
    def test_matches_the_bytewise_definition(self):
        for n in (0, 1, 3, 4, 5, 125, 126, 65536):
            mask, payload = os.urandom(4), os.urandom(n)
            want = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            self.assertEqual(wsclient._mask(payload, mask), want, n)


class RecvTest(unittest.TestCase):
    def test_a_timeout_mid_message_loses_nothing(self):
        import socket
        import threading

        a, b = socket.socketpair()
        ws = object.__new__(wsclient.WebSocket)
        ws.sock, ws.buf, ws.pos, ws.send_lock = a, bytearray(), 0, threading.Lock()
        frame = bytes([0x81, 126]) + (300).to_bytes(2, "big") + b"x" * 300
        b.sendall(frame[:150])
        a.settimeout(0.05)
        with self.assertRaises(TimeoutError):
            ws.recv()
        b.sendall(frame[150:] + bytes([0x82, 2]) + b"ok")
        self.assertEqual(ws.recv(), (0x1, b"x" * 300))
        self.assertEqual(ws.recv(), (0x2, b"ok"))
        a.close()
        b.close()


class BigramTest(unittest.TestCase):
    def test_probabilities_of_each_context_sum_to_one(self):
        # Parse the ARPA text back and check that every context is a distribution.
        from recognizer import bigram_arpa

        phrases = ["Welcome to the hall", "the hall opens at ten", "welcome back"]
        uni, big, backoff, section = {}, {}, {}, None
        for line in bigram_arpa(phrases).splitlines():
            if line.startswith("\\"):
                section = line
                continue
            parts = line.split()
            if section == "\\1-grams:" and parts:
                uni[parts[1]] = 10 ** float(parts[0])
                backoff[parts[1]] = 10 ** float(parts[2])
            elif section == "\\2-grams:" and parts:
                big[(parts[1], parts[2])] = 10 ** float(parts[0])
        words = [w for w in uni if w != "<s>"]
        self.assertTrue(math.isclose(sum(uni[w] for w in words), 1.0, rel_tol=1e-3))
        for a in set(a for a, _ in big):
            p = sum(big.get((a, b), backoff[a] * uni[b]) for b in words)
            self.assertTrue(math.isclose(p, 1.0, rel_tol=1e-3), (a, p))
        self.assertIn(("<s>", "welcome"), big)
        self.assertIn(("ten", "</s>"), big)

    def test_an_empty_list_is_refused(self):
        from recognizer import bigram_arpa

        with self.assertRaises(ValueError):
            bigram_arpa(["", "   "])


class EvaluateTest(unittest.TestCase):
    def test_words_are_normalised_as_references_spell_them(self):
        import audio

        self.assertEqual(audio.words("Mr. Dashwood, cold-hearted; ill-disposed!"),
                         ["mister", "dashwood", "cold", "hearted", "ill", "disposed"])

    def test_results_are_scored_against_the_recording_they_overlap(self):
        from collections import namedtuple

        import evaluate

        R = namedtuple("R", "text is_final start_ms end_ms")
        spans = [(1000, 3000), (5000, 7000)]
        results = [R("he was", False, 1000, 1500), R("he was not", True, 1000, 3100),
                   R("a young", False, 5000, 5600), R("a young man", True, 5000, 7200)]
        at = [1400, 3500, 5700, 7600]
        m = evaluate.measure(["he was not", "an ill young man"], spans, results, at)
        self.assertEqual((m["words"], m["recall"]), (7, round(5 / 7, 3)))
        self.assertEqual(m["wer"], round(2 / 7, 3))  # "a" for "an", "ill" missing
        self.assertEqual(m["final_after_ms"], [500, 600])
        self.assertEqual(m["interim_after_ms"], [400, 700])
        self.assertEqual(m["missing_finals"], 0)


if __name__ == "__main__":
    unittest.main()
