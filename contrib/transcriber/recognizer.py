"""The recogniser behind the transcriber: 16 kHz 16-bit mono PCM in, (text, is_final) out.

Any engine fits behind the same interface: `feed(pcm) -> list of Result` (a Result is a
`(text, is_final, start_ms, end_ms)` tuple; times on the audio clock, from the first sample
fed) and `skip(nbytes) -> list of Result` for audio that was dropped before it reached the
recogniser (it ends any utterance in progress and advances the clock).

This one is PocketSphinx 5 (default en-US model from its wheel), cut into utterances by its
WebRTC-VAD-based `Endpointer`.
"""

import os
import tempfile
from collections import namedtuple

from pocketsphinx import Decoder, Endpointer

SAMPLE_RATE = 16000
Result = namedtuple("Result", "text is_final start_ms end_ms")


def phrases_config(path):
    """Decoder options restricting the vocabulary to a JSGF grammar or a list of phrases."""
    if path is None:
        return {}
    if path.endswith((".gram", ".jsgf")):
        return {"jsgf": path}
    with open(path, encoding="utf-8") as f:
        phrases = [" ".join(line.lower().split()) for line in f if line.strip()]
    words = sorted({w for p in phrases for w in p.split()})
    grammar = "#JSGF V1.0;\ngrammar phrases;\npublic <utt> = <word>+;\n<word> = {};\n".format(
        " | ".join(words)
    )
    fd, gram = tempfile.mkstemp(suffix=".gram", prefix="transcriber-")
    with os.fdopen(fd, "w") as f:
        f.write(grammar)
    return {"jsgf": gram}


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
        return [Result(text, True, self.start_ms, end_ms)] if text else []

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
        rest = bytes(self.buf)
        self.buf.clear()
        speech = self.endpointer.end_stream(rest)
        if speech:
            self.decoder.process_raw(speech)
        return self._end(self._now_ms())
