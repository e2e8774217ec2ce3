#!/usr/bin/env python3
"""Offline check of the recogniser: word recall, WER and real-time factor on known sentences.

`espeak-ng` speaks each sentence (or `--wav` files are read, one per sentence), the recogniser
is fed the 16 kHz audio in 20 ms chunks with silence between sentences, as fast as it goes, and
the final transcripts are compared with what was said. `--phrases FILE` restricts the vocabulary
as the transcriber's option of the same name does; `--compare` runs both ways.

    python3 evaluate.py --compare --phrases venue-phrases.txt "Please turn on the lights" ...

Prints one JSON object per configuration on stdout (recall, wer, rtf, the transcripts).
"""

import argparse
import json
import time

import audio
from recognizer import PocketSphinxRecognizer

GAP_MS = 1200


def evaluate(sentences, pcms, phrases=None):
    """Feeds the sentences with silence around each; returns the measurements as a dict."""
    recogniser = PocketSphinxRecognizer(phrases=phrases)
    stream, spans = bytearray(audio.silence(GAP_MS)), []
    for pcm in pcms:
        start = len(stream)
        stream += pcm
        spans.append((start * 1000 // 32000, len(stream) * 1000 // 32000))
        stream += audio.silence(GAP_MS)
    results, t0 = [], time.perf_counter()
    for i in range(0, len(stream), 640):
        results += recogniser.feed(bytes(stream[i:i + 640]))
    results += recogniser.flush()
    elapsed = time.perf_counter() - t0
    heard = ["" for _ in sentences]
    for r in results:
        if not r.is_final:
            continue
        # The sentence this final overlaps most.
        k = max(range(len(spans)), key=lambda k: min(r.end_ms, spans[k][1] + GAP_MS // 2)
                - max(r.start_ms, spans[k][0] - GAP_MS // 2))
        heard[k] = (heard[k] + " " + r.text).strip()
    hit = errors = total = 0
    for said, got in zip(sentences, heard):
        h, e, n = audio.score(said, got)
        hit, errors, total = hit + h, errors + e, total + n
    return {
        "phrases": phrases,
        "recall": round(hit / total, 3),
        "wer": round(errors / total, 3),
        "words": total,
        "rtf": round(elapsed / (len(stream) / 32000), 3),
        "heard": heard,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sentences", nargs="+", help="what is said")
    p.add_argument("--wav", nargs="*", help="recordings of the sentences instead of espeak-ng")
    p.add_argument("--phrases", help="a phrase list or JSGF grammar, as for the transcriber")
    p.add_argument("--compare", action="store_true", help="also run without --phrases")
    args = p.parse_args()
    if args.wav:
        if len(args.wav) != len(args.sentences):
            p.error("one --wav per sentence")
        pcms = []
        for path in args.wav:
            with open(path, "rb") as f:
                rate, samples = audio.read_wav(f.read())
            pcms.append(audio.pcm_bytes(audio.resample(samples, rate)))
    else:
        pcms = [audio.speak(s) for s in args.sentences]
    configs = [None, args.phrases] if args.compare and args.phrases else [args.phrases]
    for phrases in configs:
        print(json.dumps(evaluate(args.sentences, pcms, phrases)), flush=True)


if __name__ == "__main__":
    main()
