"""The recogniser behind the transcriber: 16 kHz 16-bit mono PCM in, (text, is_final) out.

Any engine fits behind the same interface: `feed(pcm) -> list of Result` (a Result is a
`(text, is_final, start_ms, end_ms)` tuple; times on the audio clock, from the first sample
fed) and `skip(nbytes) -> list of Result` for audio that was dropped before it reached the
recogniser (it ends any utterance in progress and advances the clock).

Two engines fit behind it:

- `MoonshineRecognizer` (the default): Moonshine tiny-en, the neural model that ships in the
  `moonshine-voice==0.1.0` wheel, streamed through its own voice activity detection. The model
  is loaded once per process and shared by every session's stream. A phrase list corrects a
  recognised word to a venue word only when the two are close in spelling (`PhraseCorrector`).
- `PocketSphinxRecognizer`: PocketSphinx 5 (default en-US model from its wheel), cut into
  utterances by its WebRTC-VAD-based `Endpointer`; a phrase list or grammar restricts its
  vocabulary. Smaller, less accurate; for grammar-constrained use and as a fallback.
"""

import array
import difflib
import functools
import hashlib
import json
import math
import os
import sys
import tempfile
import threading
from collections import Counter, namedtuple
from pathlib import Path

from pocketsphinx import Decoder, Endpointer, Vad, get_model_path

from audio import edit_distance

SAMPLE_RATE = 16000
Result = namedtuple("Result", "text is_final start_ms end_ms")


@functools.lru_cache(maxsize=None)
def phrases_config(path):
    """Decoder options restricting the vocabulary: a JSGF grammar (.gram/.jsgf), an ARPA
    language model (.lm/.arpa), or a text file of phrases, one a line (the event's script,
    names, announcements), turned into a bigram language model of those words."""
    if path is None:
        return {}
    # Cached: every session's recogniser shares one language model file.
    if path.endswith((".gram", ".jsgf")):
        return {"jsgf": path}
    if path.endswith((".lm", ".arpa", ".lm.bin")):
        return {"lm": path}
    with open(path, encoding="utf-8") as f:
        # Words as the dictionary spells them: "floor." and "Floor" are "floor".
        phrases = [" ".join(filter(None, _words_of(line))) for line in f if line.strip()]
    known = pronunciations({w for p in phrases for w in p.lower().split()})
    # Words with no pronunciation in the model's dictionary cannot be recognised; say which.
    unknown = sorted({w for p in phrases for w in p.lower().split()} - set(known))
    if unknown:
        sys.stderr.write(f"event=phrases_unknown_words words={json.dumps(unknown)}\n")
    phrases = [" ".join(w for w in p.lower().split() if w in known) for p in phrases]
    fd, lm = tempfile.mkstemp(suffix=".lm", prefix="transcriber-")
    with os.fdopen(fd, "w") as f:
        f.write(bigram_arpa(phrases))
    # A dictionary of just these words: the decoder loads in milliseconds instead of seconds.
    fd, dic = tempfile.mkstemp(suffix=".dict", prefix="transcriber-")
    with os.fdopen(fd, "w") as f:
        f.writelines(line for w in sorted(known) for line in known[w])
    return {"lm": lm, "dict": dic}


def pronunciations(words):
    """The default dictionary's lines for `words` (alternatives included), by word."""
    out = {}
    with open(os.path.join(get_model_path(), "en-us", "cmudict-en-us.dict"), encoding="utf-8") as f:
        for line in f:
            word = line.split(" ", 1)[0].split("(", 1)[0]
            if word in words:
                out.setdefault(word, []).append(line if line.endswith("\n") else line + "\n")
    return out


def bigram_arpa(phrases, discount=0.5):
    """An ARPA bigram model of the phrases: add-one unigrams, absolute discounting of the bigrams
    seen, backing off to the unigrams. Favours the phrases' word sequences; any order of their
    words stays possible. (Measured on espeak-ng speech of scripted sentences: word recall 0.85
    against 0.7 for a grammar that allows any sequence of the same words.)"""
    sents = [["<s>"] + " ".join(p.lower().split()).split() + ["</s>"] for p in phrases]
    sents = [s for s in sents if len(s) > 2]
    if not sents:
        raise ValueError("the phrase list has no words")
    uni = Counter(w for s in sents for w in s[1:])
    total = sum(uni.values())
    p_uni = {w: (c + 1) / (total + len(uni)) for w, c in uni.items()}  # <s> is never predicted
    vocab = sorted(uni) + ["<s>"]
    big = Counter((a, b) for s in sents for a, b in zip(s, s[1:]))
    ctx = Counter(a for s in sents for a in s[:-1])
    follow = {}
    for a, b in big:
        follow.setdefault(a, []).append(b)
    p_big, backoff = {}, {}
    for a, c in ctx.items():
        alpha = discount * len(follow[a]) / c
        for b in follow[a]:
            p_big[(a, b)] = (big[(a, b)] - discount) / c + alpha * p_uni[b]
        seen = sum(p_big[(a, b)] for b in follow[a])
        seen_uni = sum(p_uni[b] for b in follow[a])
        backoff[a] = (1 - seen) / (1 - seen_uni) if seen_uni < 1 else 1.0
    lines = ["\\data\\", f"ngram 1={len(vocab)}", f"ngram 2={len(p_big)}", "", "\\1-grams:"]
    for w in vocab:
        p = -99.0 if w == "<s>" else math.log10(p_uni[w])
        lines.append(f"{p:.4f} {w} {math.log10(backoff[w]) if w in backoff else 0.0:.4f}")
    lines += ["", "\\2-grams:"]
    lines += [f"{math.log10(p):.4f} {a} {b}" for (a, b), p in sorted(p_big.items())]
    return "\n".join(lines + ["", "\\end\\", ""])


class PocketSphinxRecognizer:
    def __init__(self, phrases=None, interim_ms=300):
        self.endpointer = Endpointer(sample_rate=SAMPLE_RATE)
        self.decoder = Decoder(samprate=SAMPLE_RATE, **phrases_config(phrases))
        self.frame_bytes = self.endpointer.frame_bytes
        self.buf = bytearray()
        self.clock_bytes = 0  # all audio so far, fed or skipped: the audio clock
        self.origin_ms = 0  # the audio clock when the current endpointer started
        self.ep_bytes = 0  # audio the current endpointer has processed
        self.interim_bytes = interim_ms * SAMPLE_RATE * 2 // 1000
        self.since_interim = 0
        self.last_interim = ""
        self.start_ms = 0

    def _ms(self, seconds):
        return int(round(seconds * 1000)) + self.origin_ms

    def _now_ms(self):
        return self.origin_ms + self.ep_bytes * 1000 // (SAMPLE_RATE * 2)

    def feed(self, pcm):
        self.buf += pcm
        self.clock_bytes += len(pcm)
        out = []
        fb = self.frame_bytes
        while len(self.buf) >= fb:
            frame = bytes(self.buf[:fb])
            del self.buf[:fb]
            self.ep_bytes += fb
            was_in_speech = self.endpointer.in_speech
            speech = self.endpointer.process(frame)
            if speech is None:
                continue
            if not was_in_speech:
                self.decoder.start_utt()
                self.start_ms = self._ms(self.endpointer.speech_start)
                self.since_interim = 0
                self.last_interim = ""
            self.decoder.process_raw(speech)
            if not self.endpointer.in_speech:
                out += self._end(self._ms(self.endpointer.speech_end))
                continue
            self.since_interim += len(speech)
            if self.since_interim >= self.interim_bytes:
                self.since_interim = 0
                hyp = self.decoder.hyp()
                text = hyp.hypstr.strip() if hyp else ""
                if text and text != self.last_interim:
                    self.last_interim = text
                    out.append(Result(text, False, self.start_ms, self._now_ms()))
        return out

    def _end(self, end_ms):
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        text = hyp.hypstr.strip() if hyp else ""
        # An utterance that showed interim text always ends with a final, empty if nothing
        # was recognised in the end, so that no stale interim stays on anyone's display.
        if not text and not self.last_interim:
            return []
        self.last_interim = ""
        return [Result(text, True, self.start_ms, end_ms)]

    def skip(self, nbytes):
        """Audio lost before recognition: end the utterance in progress, advance the clock."""
        out = self._end(self._now_ms()) if self.endpointer.in_speech else []
        self.endpointer = Endpointer(sample_rate=SAMPLE_RATE)
        self.buf.clear()
        self.clock_bytes += nbytes
        self.origin_ms = self.clock_bytes * 1000 // (SAMPLE_RATE * 2)
        self.ep_bytes = 0
        return out

    def flush(self):
        """End of the stream: the utterance in progress, if any, as a final result."""
        if not self.endpointer.in_speech:
            return []
        # end_stream needs at least one sample; a frame of silence ends the stream cleanly.
        rest = bytes(self.buf) or bytes(self.frame_bytes)
        self.buf.clear()
        speech = self.endpointer.end_stream(rest)
        if speech:
            self.decoder.process_raw(speech)
        return self._end(self._now_ms())


# ----------------------------------------------------------------------------------------------
# Moonshine
# ----------------------------------------------------------------------------------------------

# The tiny-en model as the moonshine-voice 0.1.0 wheel ships it, file by file (SHA-256): a file
# that is missing or differs stops the transcriber at start, named, rather than failing later
# or falling back silently to another engine.
MOONSHINE_FILES = {
    "encoder_model.ort": "94e90a4654fc45cdfedb77c4c08e1739f48862998e58fada384b25118134f221",
    "decoder_model_merged.ort": "cf524c4862d36e9e5ab032eddc73637efd822d70e868ac575cf1a46e1e4708a0",
    "tokenizer.bin": "6884b35fd6377d4c4d32336a0bc152f36b64d1e45b6503683cdc238250a8472d",
}


FORCE_UPDATE = 1  # MOONSHINE_FLAG_FORCE_UPDATE: transcribe the line in progress now


class ModelError(Exception):
    """The recogniser's model cannot be used; the message names the file."""


_models, _models_lock = {}, threading.Lock()


def moonshine_model(model_dir=None):
    """The Moonshine tiny-en transcriber for `model_dir` (default: the wheel's own assets),
    loaded once per process: every session's stream shares it. Never downloads anything."""
    with _models_lock:
        if model_dir in _models:
            return _models[model_dir]
        try:
            from moonshine_voice import ModelArch, MoonshineError, get_model_path
            from moonshine_voice.transcriber import Transcriber
        except ImportError as e:
            raise ModelError(f"moonshine-voice is not installed ({e}); "
                             "pip install -r contrib/transcriber/requirements.txt") from e
        folder = Path(model_dir) if model_dir else get_model_path("tiny-en")
        for name, digest in MOONSHINE_FILES.items():
            path = folder / name
            if not path.is_file():
                raise ModelError(f"Moonshine model file missing: {path}")
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            if h.hexdigest() != digest:
                raise ModelError(f"Moonshine model file damaged (not the tiny-en file of "
                                 f"moonshine-voice 0.1.0): {path}")
        # One thread per decode: a session's recogniser runs on its own thread, and the
        # library's default pool of a thread per core spins for work on a busy box (CPU per
        # second of audio 0.19 with it, 0.09 without, pinned to one core). Set to 0 to get
        # the pool back.
        if os.environ.setdefault("MOONSHINE_ORT_SINGLE_THREAD", "1") == "0":
            del os.environ["MOONSHINE_ORT_SINGLE_THREAD"]
        try:
            # The library re-transcribes a line only when asked to (MoonshineRecognizer decides
            # when), never on a timer of its own. (A shorter voice-detector window,
            # vad_window_duration=0.3, gives finals 80 ms sooner but starts lines 250 ms before
            # the speech: the default's times are kept.)
            model = Transcriber(str(folder), ModelArch.TINY, update_interval=math.inf,
                                options={"transcription_interval": "1000000"})
        except MoonshineError as e:
            raise ModelError(f"Moonshine model in {folder} did not load: {e}") from e
        _models[model_dir] = model
        return model


def _words_of(text):
    return ["".join(c for c in w if c.isalnum() or c == "'").strip("'").lower()
            for w in text.split()]


@functools.lru_cache(maxsize=None)
def english_words():
    """The words of PocketSphinx's en-US pronouncing dictionary (about 130,000)."""
    with open(os.path.join(get_model_path(), "en-us", "cmudict-en-us.dict"), encoding="utf-8") as f:
        return frozenset(line.split(" ", 1)[0].split("(", 1)[0] for line in f)


class PhraseCorrector:
    """The venue's vocabulary for a model with no grammar: a recognised word that is not in the
    phrase list but is spelled almost like a phrase-list word of four letters or more (or two
    recognised words that together are) becomes that word, spelled as the list spells it. A
    recognised word that is itself an English word needs a closer spelling (one letter off, in
    a word of six letters or more); inflections (the list word plus or minus a short ending) are left alone, and
    so is any word of under three letters: general speech keeps its own words."""

    MIN_RATIO = 0.8  # difflib's similarity of the spellings, for a word not in the dictionary

    def __init__(self, lines):
        self.english = english_words()
        self.known, self.spelling = set(), {}
        for line in lines:
            for raw, w in zip(line.split(), _words_of(line)):
                if w:
                    self.known.add(w)
                    if len(w) >= 4:
                        self.spelling.setdefault(w, raw.strip(".,;:!?\"()"))
        self.targets = sorted(self.spelling)

    def _match(self, w):
        if len(w) < 3 or w in self.known:
            return None
        best, best_ratio = None, 0.0
        for t in self.targets:
            if abs(len(t) - len(w)) > max(2, len(t) // 3):
                continue
            ratio = difflib.SequenceMatcher(None, w, t).ratio()
            if ratio > best_ratio:
                best, best_ratio = t, ratio
        if best is None or best_ratio < self.MIN_RATIO:
            return None
        if w in self.english and (len(best) < 6 or edit_distance(w, best) > 1):
            return None
        short, long_ = sorted((w, best), key=len)
        if long_.startswith(short) and len(long_) - len(short) <= 3:
            return None  # an inflection: "meetings" is not "meeting"
        return best

    def __call__(self, text):
        tokens, norm = text.split(), _words_of(text)
        out, i = [], 0
        while i < len(tokens):
            if i + 1 < len(tokens) and norm[i] and norm[i + 1]:
                joined = norm[i] + norm[i + 1]
                t = self._match(joined) if joined not in self.known else joined
                if t and t in self.spelling and len(t) >= 6 \
                        and norm[i] not in self.known and norm[i + 1] not in self.known:
                    out.append(self._respell(tokens[i + 1], t))
                    i += 2
                    continue
            t = self._match(norm[i])
            out.append(self._respell(tokens[i], t) if t else tokens[i])
            i += 1
        return " ".join(out)

    def _respell(self, token, target):
        """`token` with its word replaced by the list's spelling, its punctuation kept."""
        lead = len(token) - len(token.lstrip(".,;:!?\"'("))
        trail = len(token) - len(token.rstrip(".,;:!?\"')"))
        word = self.spelling[target]
        if token[lead:lead + 1].isupper() and word[:1].islower():
            word = word[:1].upper() + word[1:]
        return token[:lead] + word + token[len(token) - trail:]


@functools.lru_cache(maxsize=None)
def phrase_corrector(path):
    if path is None:
        return None
    if path.endswith((".gram", ".jsgf", ".lm", ".arpa", ".lm.bin")):
        raise ModelError(f"{path}: Moonshine takes a phrase list (text, one phrase a line); "
                         "grammars and language models need --engine pocketsphinx")
    with open(path, encoding="utf-8") as f:
        return PhraseCorrector([line for line in f if line.strip()])


class MoonshineRecognizer:
    """Moonshine tiny-en on one stream of the process's shared model. Audio goes in 20 ms blocks
    whatever the chunking. Each time the stream is asked for its lines it transcribes the line
    in progress from its start, so it is asked only when it pays (a cheap WebRTC voice detector,
    PocketSphinx's, watches the same audio): while someone speaks, at most every `interim_ms`
    and less often as the line grows (every half its length: the work per line stays linear in
    its length); in silence, once a second in case it hears speech the cheap one missed.

    This recogniser ends lines itself, sooner than Moonshine's own detector would (its
    hangover put finals 380-760 ms after the words). A pause is non-speech to the cheap
    detector or a block 20 dB under the line's loudest (the breath and room tone after the last
    word). CHECK_MS into a pause the line is decoded once, ahead of its end; as only silence
    comes after, that text stands: at END_MS the line is final if the text ends a sentence
    (. ? !; the model punctuates by the silence it heard, so a text that does not is decoded
    once more at END_MS), at LONG_END_MS whatever it says. A fresh stream takes the next line.
    A line Moonshine completes itself (speech the cheap detector never calls a pause) is final
    when next asked. A line in progress gives an interim when its text changed (at most one per
    `interim_ms`). Line times are the stream's, shifted to the audio clock."""

    BLOCK = 640  # 20 ms
    MAX_LINES = 64  # completed lines a stream keeps before it is replaced by a fresh one
    FLOOR = 0.01  # speech within 20 dB of the line's loudest (in power)
    CHECK_MS = 100  # this much non-speech after speech: decode the line, ahead of its end
    END_MS = 300  # this much: a line that reads as a whole sentence is final
    SENTENCE_END = (".", "?", "!")
    LONG_END_MS = 600  # this much: the line is final whatever its text
    IDLE_POLL_MS = 1000

    def __init__(self, phrases=None, interim_ms=300, model_dir=None):
        self.model = moonshine_model(model_dir)
        self.correct = phrase_corrector(phrases) or (lambda text: text)
        self.interim_ms = max(self.BLOCK // 32, interim_ms // (self.BLOCK // 32) * (self.BLOCK // 32))
        # The strictest mode: its speech ends 80-260 ms after the loud part of the last word on
        # LibriVox speech (the loosest: 120-420 ms), and it is what ends lines.
        self.vad = Vad(mode=Vad.STRICT, frame_length=self.BLOCK / (SAMPLE_RATE * 2))
        self.buf = bytearray()
        self.clock_bytes = 0  # all audio so far, fed or skipped: the audio clock
        self.stream = None
        self._new_stream()

    def _new_stream(self):
        if self.stream is not None:
            self.stream.close()
        self.stream = self.model.create_stream(update_interval=math.inf)
        self.stream.start()
        self.origin_ms = self.clock_bytes * 1000 // (SAMPLE_RATE * 2)
        self.fed_ms = 0  # audio in this stream
        self.asked_ms = 0  # when the stream was last asked for its lines
        self.interim_at = -self.interim_ms  # when the last interim was given
        self.speech_at = None  # start of the speech not yet closed by a final, by the cheap VAD
        self.quiet_ms = 0  # non-speech since the last speech
        self.done = set()  # ids of the lines already given as finals
        self.shown = {}  # line id -> the interim text last given
        self.open = False  # the stream showed a line in progress when last asked
        self.checked = None  # the transcript decoded CHECK_MS into this pause, its line open
        self.rechecked = False  # decoded again END_MS into it, as it did not end a sentence
        self.peak = 0.0  # the loudest 20 ms of speech in the line (mean square)

    def feed(self, pcm):
        self.buf += pcm
        self.clock_bytes += len(pcm)
        out = []
        while len(self.buf) >= self.BLOCK:
            block = bytes(self.buf[:self.BLOCK])
            del self.buf[:self.BLOCK]
            energy = self._add(block)
            self.fed_ms += self.BLOCK // 32
            # Speech is what the detector calls speech and is within 20 dB of the line's
            # loudest block: the breath and room tone after the last word are not.
            if self.vad.is_speech(block) and energy >= self.peak * self.FLOOR:
                self.peak = max(self.peak, energy)
                self.quiet_ms = 0
                self.checked, self.rechecked = None, False
                if self.speech_at is None:
                    self.speech_at = self.asked_ms = self.fed_ms
            else:
                self.quiet_ms += self.BLOCK // 32
            if self.checked is not None:
                # Only silence came since the pause's decode, so its text stands: the line ends
                # without another decode, at END_MS if it reads as a whole sentence, else at
                # LONG_END_MS. A fresh stream takes the next line.
                if self.quiet_ms >= self.END_MS and not self.rechecked \
                        and not self._ends_sentence(self.checked):
                    # The model punctuates by the silence it heard: a second look at END_MS.
                    self.rechecked = True
                    self.checked = self.stream.update_transcription(FORCE_UPDATE)
                    out += self._results(self.checked, end=False)
                    if not self.open:
                        self.checked = self.speech_at = None
                        self.peak = 0.0
                        continue
                if self.quiet_ms >= self.LONG_END_MS or (
                        self.quiet_ms >= self.END_MS and self._ends_sentence(self.checked)):
                    out += self._results(self.checked, end=True)
                    self._restart()
                continue
            if self._time_to_ask():
                self.asked_ms = self.fed_ms
                transcript = self.stream.update_transcription(FORCE_UPDATE)
                out += self._results(transcript, end=False)
                if self.quiet_ms >= self.CHECK_MS:
                    # The pause's decode, made ahead of the line's end so that the final
                    # waits for no model.
                    self.checked = transcript if self.open else None
                    if not self.open:
                        self.speech_at, self.peak = None, 0.0  # wait for speech again
        return out

    def _ends_sentence(self, transcript):
        """The line in progress reads as a whole sentence: it ends with . ? or !"""
        lines = [line for line in (transcript.lines if transcript else [])
                 if not line.is_complete and line.line_id not in self.done]
        return bool(lines) and lines[-1].text.strip().endswith(self.SENTENCE_END)

    def _restart(self):
        """A fresh stream from the audio not yet added (the block buffer) on."""
        self.clock_bytes -= len(self.buf)
        self._new_stream()
        self.clock_bytes += len(self.buf)

    def _time_to_ask(self):
        since = self.fed_ms - self.asked_ms
        if self.speech_at is None and not self.open:
            return since >= self.IDLE_POLL_MS
        if self.quiet_ms >= self.CHECK_MS:
            return since > 0  # once a pause (then `checked` holds the decode)
        line_ms = self.fed_ms - (self.speech_at if self.speech_at is not None else self.asked_ms)
        return since >= max(self.interim_ms, line_ms // 2)

    def _add(self, pcm):
        samples = array.array("h")
        samples.frombytes(bytes(pcm[: len(pcm) // 2 * 2]))
        if sys.byteorder == "big":
            samples.byteswap()
        if samples:
            self.stream.add_audio([v / 32768.0 for v in samples], SAMPLE_RATE)
        return sum(v * v for v in samples) / max(len(samples), 1)

    def _results(self, transcript, end):
        """Results of the stream's lines; with `end`, every line not yet final becomes final."""
        out, lines = [], transcript.lines if transcript else []
        self.open = any(not line.is_complete for line in lines)
        for line in lines:
            if line.line_id in self.done:
                continue
            text = self.correct(line.text.strip())
            start = self.origin_ms + int(round(line.start_time * 1000))
            stop = start + int(round(line.duration * 1000))
            if line.is_complete or end:
                self.done.add(line.line_id)
                shown = self.shown.pop(line.line_id, None)
                # A line that showed interim text always ends with a final, empty if nothing
                # was recognised in the end, so that no stale interim stays on any display.
                if text or shown:
                    out.append(Result(text, True, start, stop))
            elif text and text != self.shown.get(line.line_id) \
                    and self.fed_ms - self.interim_at >= self.interim_ms:
                self.shown[line.line_id] = text
                self.interim_at = self.fed_ms
                out.append(Result(text, False, start, stop))
        if not end and len(self.done) >= self.MAX_LINES and all(l.is_complete for l in lines):
            # Bounded work per update in a long session: a fresh stream between lines.
            self._restart()
        return out

    def _end(self):
        self.stream.stop()  # its own update is not forced: ask again, forced
        return self._results(self.stream.update_transcription(FORCE_UPDATE), end=True)

    def skip(self, nbytes):
        """Audio lost before recognition: end the line in progress, advance the clock."""
        out = self._end()
        self.buf.clear()
        self.clock_bytes += nbytes
        self._new_stream()
        return out

    def flush(self):
        """End of the stream: the line in progress, if any, as a final result."""
        if self.buf:
            self._add(self.buf)
            self.buf.clear()
        out = self._end()
        self._new_stream()
        return out


ENGINES = {"moonshine": MoonshineRecognizer, "pocketsphinx": PocketSphinxRecognizer}


def make_recognizer(engine, **kwargs):
    """A recogniser of the named engine (`moonshine` or `pocketsphinx`)."""
    if engine == "pocketsphinx":
        kwargs.pop("model_dir", None)
    return ENGINES[engine](**kwargs)
