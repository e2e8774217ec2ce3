"""Unit tests of the recogniser on bad and awkward input: silence, noise, clipping, odd chunk
sizes, audio lost before recognition, the end of a stream. Uses PocketSphinx (its wheel's
en-US model) and, for speech, `espeak-ng` (those tests are skipped without it).

    cd contrib/transcriber && python3 -m unittest -v
"""

import array
import random
import shutil
import tempfile
import unittest

import audio
from recognizer import PocketSphinxRecognizer

SENTENCE = "What time is the meeting tomorrow"


def run(pcm, chunk=640, phrases=None):
    r = PocketSphinxRecognizer(phrases=phrases)
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
    def test_silence_gives_nothing(self):
        self.assertEqual(run(audio.silence(3000)), [])

    def test_quiet_noise_gives_nothing(self):
        self.assertEqual(run(noise(1500, 300)), [])

    def test_loud_and_clipping_noise_end_cleanly(self):
        # The voice detector may take loud noise for speech; whatever is heard, every utterance
        # that showed interim text is closed by a final, and the clock stays within the audio.
        for amplitude in (3000, 32767):
            results = run(noise(1500, amplitude))
            if any(not r.is_final for r in results):
                self.assertTrue(results[-1].is_final, (amplitude, results))
            for r in results:
                self.assertLessEqual(0, r.start_ms)
                self.assertLessEqual(r.start_ms, r.end_ms)
                self.assertLessEqual(r.end_ms, 1500 + 30)


    def test_an_utterance_that_showed_interim_text_always_gets_a_final(self):
        # Loud noise can show a word as interim and then end as nothing: the final, empty,
        # still comes, so the interim does not stay on the display.
        r = PocketSphinxRecognizer()
        r.decoder.start_utt()
        r.last_interim = "shut"
        self.assertEqual(r._end(900), [("", True, 0, 900)])
        r.decoder.start_utt()
        self.assertEqual(r._end(900), [])  # nothing shown, nothing to close


@unittest.skipUnless(shutil.which("espeak-ng"), "espeak-ng is not installed")
class Speech(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pcm = audio.silence(500) + audio.speak(SENTENCE) + audio.silence(1000)
        cls.results = run(cls.pcm)  # in 20 ms chunks, like the glasses send

    def test_speech_gives_interims_then_one_final_with_times(self):
        results = self.results
        self.assertTrue(any(not r.is_final for r in results))
        (final,) = finals(results)
        self.assertTrue(final.text)
        speech_ms = (len(self.pcm) - audio.SAMPLE_RATE * 3) * 1000 // (audio.SAMPLE_RATE * 2)
        self.assertAlmostEqual(final.start_ms, 500, delta=150)
        self.assertAlmostEqual(final.end_ms, 500 + speech_ms, delta=400)

    def test_chunk_size_does_not_change_the_result(self):
        for chunk in (1, 333, 64001):  # odd sizes split samples; all must agree
            self.assertEqual(run(self.pcm, chunk=chunk), self.results, chunk)

    def test_clipped_speech_is_survived(self):
        x = array.array("h")
        x.frombytes(self.pcm)
        clipped = audio.pcm_bytes(array.array("h", (max(-32768, min(32767, v * 16)) for v in x)))
        for r in run(clipped):
            self.assertLessEqual(r.end_ms, len(clipped) * 1000 // (audio.SAMPLE_RATE * 2))

    def test_audio_lost_mid_utterance_ends_it_and_moves_the_clock(self):
        r = PocketSphinxRecognizer()
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


if __name__ == "__main__":
    unittest.main()
