"""Unit tests of the recogniser on bad and awkward input: silence, noise, clipping, odd chunk
sizes, audio lost before recognition, the end of a stream, a missing or damaged model; each
engine (Moonshine tiny-en from the moonshine-voice wheel, PocketSphinx's en-US model) the same
way. Speech comes from `espeak-ng` (those tests are skipped without it).

    cd contrib/transcriber && python3 -m unittest -v
"""

import array
import os
import random
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import audio
import recognizer
from recognizer import (ModelError, MoonshineRecognizer, PhraseCorrector,
                        PocketSphinxRecognizer, make_recognizer)

SENTENCE = "What time is the meeting tomorrow"


def run(pcm, chunk=640, phrases=None, engine="pocketsphinx"):
    r = make_recognizer(engine, phrases=phrases)
    out = []
    for i in range(0, len(pcm), chunk):
        out += r.feed(pcm[i:i + chunk])
    return out + r.flush()


def noise(ms, amplitude, seed=1):
    rnd = random.Random(seed)
    n = audio.SAMPLE_RATE * ms // 1000
    return audio.pcm_bytes(array.array("h", (rnd.randint(-amplitude, amplitude) for _ in range(n))))


def finals(results):
    return [r for r in results if r.is_final]


class SilenceAndNoise(unittest.TestCase):
    engine = "pocketsphinx"

    def run_(self, pcm, **kw):
        return run(pcm, engine=self.engine, **kw)

    def test_silence_gives_nothing(self):
        self.assertEqual(self.run_(audio.silence(3000)), [])

    def test_quiet_noise_gives_nothing(self):
        self.assertEqual(self.run_(noise(1500, 300)), [])

    def test_loud_and_clipping_noise_end_cleanly(self):
        # The voice detector may take loud noise for speech; whatever is heard, every utterance
        # that showed interim text is closed by a final, and the clock stays within the audio.
        for amplitude in (3000, 32767):
            results = self.run_(noise(1500, amplitude))
            if any(not r.is_final for r in results):
                self.assertTrue(results[-1].is_final, (amplitude, results))
            for r in results:
                self.assertLessEqual(0, r.start_ms)
                self.assertLessEqual(r.start_ms, r.end_ms)
                self.assertLessEqual(r.end_ms, 1500 + 30)



class MoonshineSilenceAndNoise(SilenceAndNoise):
    engine = "moonshine"


class PocketSphinxEnd(unittest.TestCase):
    def test_an_utterance_that_showed_interim_text_always_gets_a_final(self):
        # Loud noise can show a word as interim and then end as nothing: the final, empty,
        # still comes, so the interim does not stay on the display.
        r = PocketSphinxRecognizer()
        r.decoder.start_utt()
        r.last_interim = "shut"
        self.assertEqual(r._end(900), [("", True, 0, 900)])
        r.decoder.start_utt()
        self.assertEqual(r._end(900), [])  # nothing shown, nothing to close


class FakeLine:
    def __init__(self, line_id, text, complete, start=0.5, duration=1.0):
        self.line_id, self.text, self.is_complete = line_id, text, complete
        self.start_time, self.duration = start, duration


class FakeTranscript:
    def __init__(self, *lines):
        self.lines = list(lines)


class MoonshineLines(unittest.TestCase):
    """How the stream's lines become results (the engine's own lines, made up)."""

    def test_interims_on_change_then_one_final_on_the_audio_clock(self):
        r = MoonshineRecognizer()
        r.origin_ms = 10_000  # the stream started 10 s into the session's audio
        self.assertEqual(r._results(FakeTranscript(FakeLine(1, "Lunch is", False)), False),
                         [("Lunch is", False, 10_500, 11_500)])
        self.assertEqual(r._results(FakeTranscript(FakeLine(1, "Lunch is", False)), False), [])
        done = FakeTranscript(FakeLine(1, "Lunch is served.", True, duration=2.0))
        self.assertEqual(r._results(done, False), [("Lunch is served.", True, 10_500, 12_500)])
        self.assertEqual(r._results(done, False), [])  # a final is given once

    def test_a_line_that_showed_interim_text_always_gets_a_final(self):
        r = MoonshineRecognizer()
        r._results(FakeTranscript(FakeLine(7, "shut", False)), False)
        self.assertEqual(r._results(FakeTranscript(FakeLine(7, "", True)), False),
                         [("", True, 500, 1500)])
        # Nothing shown, nothing to close.
        self.assertEqual(r._results(FakeTranscript(FakeLine(8, "", True)), False), [])

    def test_the_stream_is_asked_only_when_it_pays(self):
        # Asking transcribes the line in progress from its start: during speech every half
        # line (at least every interim_ms), once CHECK_MS into a pause, in silence once a second.
        r = MoonshineRecognizer(interim_ms=300)
        r.speech_at, r.quiet_ms, r.fed_ms = 0, 0, 4000
        r.asked_ms = 2100
        self.assertFalse(r._time_to_ask())  # a 4 s line: every 2 s
        r.asked_ms = 2000
        self.assertTrue(r._time_to_ask())
        r.speech_at, r.asked_ms = 3500, 3750
        self.assertFalse(r._time_to_ask())  # a short line: every 300 ms
        r.asked_ms = 3700
        self.assertTrue(r._time_to_ask())
        r.quiet_ms, r.asked_ms = r.CHECK_MS, 3980
        self.assertTrue(r._time_to_ask())  # a pause: at once, for the final
        r.speech_at, r.open, r.quiet_ms, r.asked_ms = None, False, 3000, 3020
        self.assertFalse(r._time_to_ask())  # silence: once a second
        r.asked_ms = 3000
        self.assertTrue(r._time_to_ask())

    def test_the_end_of_the_stream_makes_the_line_in_progress_final(self):
        r = MoonshineRecognizer()
        r._results(FakeTranscript(FakeLine(3, "The train", False)), False)
        self.assertEqual(r._results(FakeTranscript(FakeLine(3, "The train to", False)), True),
                         [("The train to", True, 500, 1500)])


class FakeStream:
    """A Moonshine stream that hears `text` as one line, open until told otherwise."""

    def __init__(self, script):
        self.script, self.decodes = script, 0

    def add_audio(self, samples, rate):
        pass

    def update_transcription(self, flags=0):
        self.decodes += 1
        text, complete = self.script
        return FakeTranscript(FakeLine(1, text, complete)) if text else FakeTranscript()

    def start(self):
        pass

    def close(self):
        pass


@unittest.skipUnless(shutil.which("espeak-ng"), "espeak-ng is not installed")
class MoonshineLineEnd(unittest.TestCase):
    """When a line ends: the cheap detector's pause, the line's text, the model's decodes
    (the model's own lines, made up; the audio real speech from espeak-ng)."""

    @classmethod
    def setUpClass(cls):
        cls.speech = audio.speak(SENTENCE)

    def final_at(self, text, pause_ms=2000):
        """(ms from the end of the words to the final or None, decodes, finals)."""
        from evaluate import speech_span
        r = MoonshineRecognizer()
        streams = []

        class Model:
            def create_stream(self, update_interval):
                streams.append(FakeStream((text, False)))
                return streams[-1]

        r.model = Model()
        r._new_stream()
        end = speech_span(self.speech)[1]
        pcm = self.speech + audio.silence(pause_ms)
        for i in range(0, len(pcm), 640):
            got = finals(r.feed(pcm[i:i + 640]))
            if got:
                return (i + 640) * 1000 // 32000 - end, sum(s.decodes for s in streams), got
        return None, sum(s.decodes for s in streams), []

    def test_a_whole_sentence_is_final_soon_after_the_words_with_no_decode_waiting(self):
        ms, decodes, got = self.final_at("What time is the meeting tomorrow?")
        self.assertEqual([r.text for r in got], ["What time is the meeting tomorrow?"])
        # The detector's tail, then END_MS: not the model's own end of line (never, here).
        self.assertLessEqual(ms, MoonshineRecognizer.END_MS + 80, ms)
        self.assertGreaterEqual(ms, MoonshineRecognizer.END_MS)

    def test_a_line_that_does_not_end_a_sentence_waits_for_a_longer_pause(self):
        ms, _, got = self.final_at("What time is the meeting,")
        self.assertGreaterEqual(ms, MoonshineRecognizer.LONG_END_MS)
        self.assertEqual([r.text for r in got], ["What time is the meeting,"])

    def test_the_final_reuses_the_pause_decode(self):
        # Once the pause's decode has the whole sentence, only silence came: no other decode.
        _, decodes, _ = self.final_at("What time is the meeting tomorrow?")
        _, decodes_longer, _ = self.final_at("What time is the meeting tomorrow?", 3000)
        ms, decodes_unpunctuated, _ = self.final_at("What time is the meeting,")
        self.assertEqual(decodes, decodes_longer)
        self.assertLessEqual(decodes_unpunctuated, decodes + 1)  # one second look at END_MS


@unittest.skipUnless(shutil.which("espeak-ng"), "espeak-ng is not installed")
class Speech(unittest.TestCase):
    engine = "pocketsphinx"

    @classmethod
    def setUpClass(cls):
        cls.pcm = audio.silence(500) + audio.speak(SENTENCE) + audio.silence(1000)
        # The voice detector's first run in a process can place a line a frame differently:
        # one run first, then the reference, in 20 ms chunks, like the glasses send.
        run(cls.pcm, engine=cls.engine)
        cls.results = run(cls.pcm, engine=cls.engine)

    def recogniser(self):
        return make_recognizer(self.engine)

    def test_speech_gives_interims_then_one_final_with_times(self):
        results = self.results
        self.assertTrue(any(not r.is_final for r in results))
        (final,) = finals(results)
        self.assertTrue(final.text)
        speech_ms = (len(self.pcm) - audio.SAMPLE_RATE * 3) * 1000 // (audio.SAMPLE_RATE * 2)
        self.assertAlmostEqual(final.start_ms, 500, delta=150)
        self.assertAlmostEqual(final.end_ms, 500 + speech_ms, delta=400)

    def test_chunk_size_does_not_change_the_result(self):
        # Moonshine's voice detector keeps state across the process's streams: the same audio
        # can start a line a frame or two differently after other audio. Runs of the same audio
        # until two agree, then every chunking must give that.
        ref = run(self.pcm, engine=self.engine)
        for _ in range(5):
            again = run(self.pcm, engine=self.engine)
            if again == ref:
                break
            ref = again
        for chunk in (1, 333, 64001):  # odd sizes split samples; all must agree
            self.assertEqual(run(self.pcm, chunk=chunk, engine=self.engine), ref, chunk)

    def test_clipped_speech_is_survived(self):
        x = array.array("h")
        x.frombytes(self.pcm)
        clipped = audio.pcm_bytes(array.array("h", (max(-32768, min(32767, v * 16)) for v in x)))
        for r in run(clipped, engine=self.engine):
            self.assertLessEqual(r.end_ms, len(clipped) * 1000 // (audio.SAMPLE_RATE * 2))

    def test_audio_lost_mid_utterance_ends_it_and_moves_the_clock(self):
        r = self.recogniser()
        half = len(self.pcm) // 2 // 640 * 640
        out = []
        for i in range(0, half, 640):
            out += r.feed(self.pcm[i:i + 640])
        out += r.skip(32000)  # one second never reached the recogniser
        self.assertTrue(out and out[-1].is_final, out)
        later = []
        for i in range(0, len(self.pcm), 640):
            later += r.feed(self.pcm[i:i + 640])
        later += r.flush()
        first = min(x.start_ms for x in later)
        # The second copy starts after the first half, the skipped second and its own 500 ms.
        self.assertAlmostEqual(first, half * 1000 // 32000 + 1000 + 500, delta=150)


class PocketSphinxSpeech(Speech):
    def test_flush_with_nothing_buffered(self):
        # Whole frames only, ending while the voice detector still counts it as speech.
        r = PocketSphinxRecognizer()
        fb = r.frame_bytes
        end = next(r.end_ms for r in self.results if r.is_final) * 32 // fb * fb
        out = r.feed(self.pcm[:end])
        self.assertTrue(r.endpointer.in_speech and not r.buf and not finals(out))
        (final,) = r.flush()  # the tail is empty here; must not raise
        self.assertTrue(final.is_final)

    def test_a_phrase_list_recognises_more_of_the_script(self):
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
            f.write(SENTENCE + "\nWelcome to the conference\nLunch is on the second floor\n")
            f.flush()
            with_list = " ".join(r.text for r in finals(run(self.pcm, phrases=f.name)))
        without = " ".join(r.text for r in finals(self.results))
        hit_with = audio.score(SENTENCE, with_list)[0]
        hit_without = audio.score(SENTENCE, without)[0]
        self.assertGreater(hit_with, hit_without, (with_list, without))


class PhraseListText(unittest.TestCase):
    def test_punctuation_and_case_do_not_hide_a_word(self):
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
            f.write("Lunch is on the second Floor.\nWelcome, everyone!\n")
            f.flush()
            config = recognizer.phrases_config(f.name)
        with open(config["dict"], encoding="utf-8") as d:
            words = {line.split(" ", 1)[0].split("(", 1)[0] for line in d}
        self.assertTrue({"floor", "welcome", "everyone", "lunch"} <= words, words)


class MoonshineSpeech(Speech):
    engine = "moonshine"

    def test_the_general_model_gets_the_sentence_right(self):
        # PocketSphinx's general model gets about a third of these words.
        (final,) = finals(self.results)
        self.assertEqual(audio.words(final.text), audio.words(SENTENCE), final)

    def test_the_final_comes_soon_after_the_words(self):
        # From the end of the words (the speech's loud part) to the final, in audio: the
        # detector's tail and END_MS, not the model's own end-of-line hangover.
        from evaluate import speech_span
        lead = audio.silence(500)
        end = len(lead) * 1000 // 32000 + speech_span(audio.speak(SENTENCE))[1]
        r = self.recogniser()
        for i in range(0, len(self.pcm), 640):
            if finals(r.feed(self.pcm[i:i + 640])):
                break
        self.assertLessEqual((i + 640) * 1000 // 32000 - end, MoonshineRecognizer.END_MS + 80)

    def test_decodes_run_on_one_thread(self):
        # The library's default pool spins a thread per core for each decode.
        code = ("import os, recognizer, audio\n"
                "r = recognizer.MoonshineRecognizer()\n"
                "pcm = audio.speak('Good morning everyone')\n"
                "[r.feed(pcm[i:i + 640]) for i in range(0, len(pcm), 640)]\n"
                "r.flush()\n"
                "print(len(os.listdir('/proc/self/task')))\n")
        env = {k: v for k, v in os.environ.items() if k != "MOONSHINE_ORT_SINGLE_THREAD"}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env, cwd=os.path.dirname(os.path.abspath(__file__)), check=True)
        self.assertEqual(out.stdout.strip(), "1", out.stderr)

    def test_flush_ends_a_line_in_progress(self):
        r = self.recogniser()
        cut = len(self.pcm) * 2 // 3 // 640 * 640
        out = r.feed(self.pcm[:cut])
        self.assertFalse(finals(out))
        (final,) = r.flush()
        self.assertTrue(final.is_final and final.text, final)
        self.assertLessEqual(final.end_ms, cut * 1000 // 32000 + 20)


del Speech  # only its engine-specific subclasses run


class PhraseList(unittest.TestCase):
    LIST = ["Welcome to Mentra Live", "Doctor Okonkwo speaks in the Lindqvist hall",
            "The keynote starts at ten"]

    def test_a_near_miss_becomes_the_venue_word_spelled_as_listed(self):
        c = PhraseCorrector(self.LIST)
        self.assertEqual(c("Dr. Okonkwa speaks in the Lindquist hall."),
                         "Dr. Okonkwo speaks in the Lindqvist hall.")
        self.assertEqual(c("welcome to mentre live"), "welcome to Mentra live")
        self.assertEqual(c("the Lind qvist hall"), "the Lindqvist hall")

    def test_general_speech_keeps_its_words(self):
        c = PhraseCorrector(self.LIST)
        for text in ("The keynotes start at eleven.", "Speak to the doctor in the hall",
                     "A mental note", "Mentor me", "It is ten to two"):
            self.assertEqual(c(text), text)

    def test_grammars_are_for_pocketsphinx(self):
        with self.assertRaisesRegex(ModelError, "venue.gram.*--engine pocketsphinx"):
            recognizer.phrase_corrector("/tmp/venue.gram")


class Model(unittest.TestCase):
    """A missing or damaged model file stops the recogniser, naming the file."""

    def setUp(self):
        from moonshine_voice import get_model_path

        self.dir = tempfile.mkdtemp(prefix="moonshine-model-")
        self.addCleanup(shutil.rmtree, self.dir)
        for name in recognizer.MOONSHINE_FILES:
            shutil.copy(get_model_path("tiny-en") / name, self.dir)

    def test_the_packaged_model_loads_once_per_process(self):
        self.assertIs(MoonshineRecognizer().model, MoonshineRecognizer().model)
        self.assertIsNotNone(MoonshineRecognizer(model_dir=self.dir).model)

    def test_a_missing_file_is_named(self):
        os.remove(os.path.join(self.dir, "tokenizer.bin"))
        with self.assertRaisesRegex(ModelError, "missing: .*/tokenizer.bin"):
            MoonshineRecognizer(model_dir=self.dir)

    def test_a_damaged_file_is_named(self):
        path = os.path.join(self.dir, "encoder_model.ort")
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        with self.assertRaisesRegex(ModelError, "damaged.*/encoder_model.ort"):
            MoonshineRecognizer(model_dir=self.dir)

    def test_the_transcriber_refuses_to_start(self):
        path = os.path.join(self.dir, "decoder_model_merged.ort")
        with open(path, "r+b") as f:
            f.seek(1000)
            f.write(b"\0" * 64)
        out = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("transcriber.py")), "--socket",
             "/nonexistent.sock", "--api-key", "k", "--port", "0", "--model-dir", self.dir],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 2, out)
        self.assertIn("decoder_model_merged.ort", out.stderr)
        self.assertNotIn("listening", out.stdout)


if __name__ == "__main__":
    unittest.main()
