"""The recogniser behind the transcriber: 16 kHz 16-bit mono PCM in, (text, is_final) out.

Any engine fits behind the same interface: `feed(pcm) -> list of Result` (a Result is a
`(text, is_final, start_ms, end_ms)` tuple; times on the audio clock, from the first sample
fed) and `skip(nbytes) -> list of Result` for audio that was dropped before it reached the
recogniser (it ends any utterance in progress and advances the clock).

This one is PocketSphinx 5 (default en-US model from its wheel), cut into utterances by its
WebRTC-VAD-based `Endpointer`.
"""

import functools
import json
import math
import os
import sys
import tempfile
from collections import Counter, namedtuple

from pocketsphinx import Decoder, Endpointer, get_model_path

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
        phrases = [line for line in f if line.strip()]
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
