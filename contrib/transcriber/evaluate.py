#!/usr/bin/env python3
"""Compares the recognisers on speech with reference transcripts: word error rate, recall,
real-time factor, end of speech → final latency.

Speech comes from `espeak-ng` (sentences on the command line), from `--wav` files (one per
sentence), or from `--corpus DIR`: a folder of 16-bit WAVs with their transcripts, in a
`transcripts.tsv` (file name without .wav, tab, the words; `package:path` for a recording
an installed Python package ships, an absolute path for one a Debian package installs) or
Sphinx's `transcription` file (`<s> words </s> (file)`); a `.g722` file is decoded with
libspandsp. `samples/librivox`, `samples/packaged`, `samples/jfk`, `samples/arctic` and
`samples/asterisk` are real recorded speech (`samples/README.md`: their sources, licences).

Offline (the default), each engine is fed the 16 kHz audio in 20 ms chunks with 1.2 s of
silence around each recording, as fast as it goes. Measured: the word error rate (word edit
distance of the normalised words over the words said), recall (words said that were heard),
the real-time factor (CPU seconds per second of audio, one thread), and per recording the
audio the recogniser needed after the end of speech (where the recording's loudness falls below
a tenth of its peak) before giving its final (`final_after_ms`: the voice detector's hangover
and the update cadence; compute time comes on top, live), after the end of the words the final
says it covers (its `endTime`, `final_after_end_ms`), and after the start of speech before its
first interim (`interim_after_ms`), and how many recordings came as more than one final
(`split_recordings`: a sentence cut into fragments; `finals`, how many in all).

`--box PORT --token T --app-log FILE` measures through the box instead: a glasses client
streams the same audio in real time (20 ms frames) to a running box (`contrib/captions-stack.sh`
with `CAPTIONS_STACK_DIR`), and the captions app's `caption` events (FILE, its stdout: the
transcripts its stock SDK's `onTranscription` handler got, each stamped with the time it came)
give the WER and the latency from the end of speech to the final at the app, wall clock.

    python3 evaluate.py --engine moonshine --engine pocketsphinx --corpus samples/librivox
    python3 evaluate.py --compare --phrases venue.txt "Please turn on the lights" ...
    python3 evaluate.py --corpus samples/librivox --box 8002 --token T --app-log DIR/captions.out

`--translation [TSV]` measures the translation engines (translate.py) instead: for each engine
and each pair it covers among en→es and en→pt, the latency of each sentence of the parallel
sample (default `samples/translation/parallel.tsv`, written for this project; after one
warm-up sentence, one at a time, as the transcriber calls it) and chrF (sacrebleu) against the
sample's references.

    python3 evaluate.py --translation

Prints one JSON object per configuration on stdout.
"""

import argparse
import array
import json
import os
import sys
import time

import audio

GAP_MS = 1200
FRAME = 640  # 20 ms


def load_corpus(folder):
    """(reference sentences, PCM of each) of a folder of WAVs with transcripts."""
    refs = {}
    tsv, sphinx = os.path.join(folder, "transcripts.tsv"), os.path.join(folder, "transcription")
    if os.path.exists(tsv):
        with open(tsv, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    name, text = line.rstrip("\n").split("\t", 1)
                    refs[name] = text
    elif os.path.exists(sphinx):
        with open(sphinx, encoding="utf-8") as f:
            for line in f:
                text, _, name = line.strip().rpartition(" (")
                refs[name.rstrip(")")] = text.replace("<s>", "").replace("</s>", "").strip()
    else:
        raise SystemExit(f"{folder}: no transcripts.tsv or transcription file")
    sentences, pcms = [], []
    for name in sorted(refs):
        sentences.append(refs[name])
        pcms.append(read_pcm(recording_path(folder, name)))
    return sentences, pcms


def recording_path(folder, name):
    """`name`.wav in the folder; for `package:path`, path.wav inside an installed Python
    package; for an absolute path, that file (.wav unless it names a .g722) where a Debian
    package installs it (recordings a registry package ships, used where they are installed;
    the folder's README names the package)."""
    if name.startswith("/"):
        path = name if name.endswith(".g722") else name + ".wav"
        if not os.path.exists(path):
            raise SystemExit(f"{folder}: {path} is missing: install the Debian package its "
                             f"README names")
        return path
    if ":" not in name:
        return os.path.join(folder, name + ".wav")
    import importlib.util

    package, _, rest = name.partition(":")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{folder}: {name} needs the Python package {package} installed")
    return os.path.join(list(spec.submodule_search_locations)[0], rest + ".wav")


def read_pcm(path):
    if path.endswith(".g722"):
        return g722_pcm(path)
    with open(path, "rb") as f:
        rate, samples = audio.read_wav(f.read())
    return audio.pcm_bytes(audio.resample(samples, rate))


def g722_pcm(path):
    """16 kHz PCM of a G.722 file (64 kbit/s, headerless: the wideband form in which Debian
    ships Asterisk's prompts), decoded by Debian's libspandsp (`apt-get install libspandsp2`)."""
    import ctypes
    import ctypes.util

    try:
        lib = ctypes.CDLL(ctypes.util.find_library("spandsp") or "libspandsp.so.2")
    except OSError:
        raise SystemExit(f"{path}: decoding G.722 needs libspandsp (apt-get install libspandsp2)")
    lib.g722_decode_init.restype = ctypes.c_void_p
    lib.g722_decode_init.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    lib.g722_decode.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    lib.g722_decode_free.argtypes = [ctypes.c_void_p]
    with open(path, "rb") as f:
        data = f.read()
    state = lib.g722_decode_init(None, 64000, 0)
    out = (ctypes.c_int16 * (2 * len(data)))()  # two 16 kHz samples per byte at 64 kbit/s
    n = lib.g722_decode(state, out, data, len(data))
    lib.g722_decode_free(state)
    return audio.pcm_bytes(array.array("h", out[:n]))


def speech_span(pcm):
    """(first, last) ms of speech in a recording: 10 ms frames louder than a tenth of the
    loudest frame's RMS."""
    x = array.array("h")
    x.frombytes(pcm[: len(pcm) // 2 * 2])
    if sys.byteorder == "big":
        x.byteswap()
    rms = [(sum(v * v for v in x[i:i + 160]) / 160) ** 0.5 for i in range(0, len(x), 160)]
    if not rms:
        return 0, 0
    loud = [i for i, r in enumerate(rms) if r >= 0.1 * max(rms)]
    return loud[0] * 10, (loud[-1] + 1) * 10


def layout(pcms):
    """The stream (silence, each recording, silence, …) and each recording's speech span on it."""
    stream, spans = bytearray(audio.silence(GAP_MS)), []
    for pcm in pcms:
        at = len(stream) * 1000 // 32000
        s, e = speech_span(pcm)
        spans.append((at + s, at + e))
        stream += pcm + audio.silence(GAP_MS)
    return bytes(stream), spans


def assign(results, spans):
    """Each result's index: the recording it overlaps most (silence around each counted)."""
    def k_of(r):
        return max(range(len(spans)), key=lambda k: min(r.end_ms, spans[k][1] + GAP_MS // 2)
                   - max(r.start_ms, spans[k][0] - GAP_MS // 2))
    return [k_of(r) for r in results]


def measure(sentences, spans, results, at_ms, focus=()):
    """WER, recall and latencies of `results` (with `at_ms`: when each came, on the same
    millisecond scale as the spans)."""
    heard = ["" for _ in sentences]
    pieces = [0] * len(sentences)  # non-empty finals per recording: more than one is a split
    final_at = [None] * len(sentences)
    after_end = []  # each final: from the end of the words it covers (its endTime) to it
    first_at = [None] * len(sentences)
    for r, k, at in zip(results, assign(results, spans), at_ms):
        if first_at[k] is None:
            first_at[k] = at
        if r.is_final:
            heard[k] = (heard[k] + " " + r.text).strip()
            pieces[k] += bool(r.text)
            final_at[k] = at
            if r.text:
                after_end.append(int(at - r.end_ms))
    hit = errors = total = 0
    focus_hit = focus_total = 0
    for said, got in zip(sentences, heard):
        h, e, n = audio.score(said, got)
        hit, errors, total = hit + h, errors + e, total + n
        if focus:
            f_said = " ".join(w for w in audio.words(said) if w in focus)
            f_hit, _, f_n = audio.score(f_said, got)
            focus_hit, focus_total = focus_hit + f_hit, focus_total + f_n
    final_ms = sorted(int(at - spans[k][1]) for k, at in enumerate(final_at) if at is not None)
    interim_ms = sorted(int(at - spans[k][0]) for k, at in enumerate(first_at) if at is not None)
    return {
        "recall": round(hit / total, 3),
        "wer": round(errors / total, 3),
        "words": total,
        "final_after_ms": final_ms,
        "final_p50_ms": percentile(final_ms, 50),
        "final_after_end_ms": sorted(after_end),
        "final_after_end_p50_ms": percentile(after_end, 50),
        "interim_after_ms": interim_ms,
        "interim_p50_ms": percentile(interim_ms, 50),
        "missing_finals": sum(a is None for a in final_at),
        "split_recordings": sum(n > 1 for n in pieces),
        "finals": sum(pieces),
        "heard": heard,
        **({"focus_recall": round(focus_hit / max(focus_total, 1), 3),
            "focus_words": focus_total} if focus else {}),
    }


def percentile(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, (len(xs) - 1) * p // 100 + ((len(xs) - 1) * p % 100 > 0))]


def offline(engine, sentences, pcms, phrases=None, focus=()):
    from recognizer import make_recognizer

    recogniser = make_recognizer(engine, phrases=phrases)
    stream, spans = layout(pcms)
    results, at_ms = [], []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(0, len(stream), FRAME):
        got = recogniser.feed(stream[i:i + FRAME])
        results += got
        at_ms += [(i + FRAME) * 1000 // 32000] * len(got)
    got = recogniser.flush()
    results += got
    at_ms += [len(stream) * 1000 // 32000] * len(got)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    seconds = len(stream) / 32000
    out = {"engine": engine, "mode": "offline", "phrases": phrases}
    out.update(measure(sentences, spans, results, at_ms, focus))
    out.update(rtf=round(cpu / seconds, 3), rtf_wall=round(wall / seconds, 3),
               audio_s=round(seconds, 1))
    return out


def through_box(sentences, pcms, port, token, app_log, app="com.example.captions"):
    """Streams the audio through a running box in real time; reads the app's captions."""
    from collections import namedtuple

    from wsclient import WebSocket

    stream, spans = layout(pcms)
    ws = WebSocket(("127.0.0.1", port), "/glasses-ws",
                   headers={"Authorization": f"Bearer {token}"})
    ws.send_text(json.dumps({"type": "connection_init"}))
    ws.send_text(json.dumps({"type": "start_app", "packageName": app}))

    def read_for(seconds, until_mic=False):
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return False
            ws.sock.settimeout(left)
            try:
                op, payload = ws.recv()
            except TimeoutError:
                return False
            if op == 0x1 and until_mic:
                msg = json.loads(payload)
                if msg.get("type") == "microphone_state_change" and \
                        msg.get("isMicrophoneEnabled") is True:
                    return True

    if not read_for(20, until_mic=True):
        raise SystemExit("the microphone was not switched on: is the captions app running?")
    read_for(0.5)
    log_start = os.path.getsize(app_log)
    t0 = time.time()  # wall clock, as the app stamps its events
    start = time.monotonic()
    for i in range(0, len(stream), FRAME):
        read_for(max(0.0, start + i / 32000 - time.monotonic()))
        ws.send_binary(stream[i:i + FRAME])
    read_for(3.0)
    ws.close()
    Caption = namedtuple("Caption", "text is_final start_ms end_ms")
    results, at_ms = [], []
    with open(app_log, encoding="utf-8") as f:
        f.seek(log_start)
        for line in f:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("event") != "caption" or e.get("at") is None:
                continue
            results.append(Caption(e.get("heard") or "", e.get("isFinal") is True,
                                   e.get("startTime") or 0, e.get("endTime") or 0))
            at_ms.append(e["at"] - t0 * 1000)
    out = {"mode": "through the box, real time, 20 ms frames", "captions": len(results)}
    out.update(measure(sentences, spans, results, at_ms))
    return out


def translation_eval(tsv):
    import sacrebleu
    import translate

    rows = [line.rstrip("\n").split("\t") for line in open(tsv, encoding="utf-8")
            if line.strip() and not line.startswith("#")]
    refs = {"es": [r[1] for r in rows], "pt": [r[2] for r in rows]}
    tags = {"es": "es-ES", "pt": "pt-BR"}
    out = []
    for name, make in translate.ENGINES.items():
        engine = make()
        for tgt in ("es", "pt"):
            if ("en", tgt) not in engine.pairs:
                continue
            engine.translate("Hello and welcome.", "en-US", tags[tgt])  # warm-up (load, start)
            hyps, ms = [], []
            for r in rows:
                t = time.perf_counter()
                hyps.append(engine.translate(translate.clean(r[0]), "en-US", tags[tgt]))
                ms.append((time.perf_counter() - t) * 1000)
            chrf = sacrebleu.corpus_chrf(hyps, [refs[tgt]]).score
            out.append({"engine": name, "pair": f"en->{tgt}", "sentences": len(rows),
                        "chrF": round(chrf, 1), "ms_p50": round(percentile(ms, 50), 2),
                        "ms_p90": round(percentile(ms, 90), 2), "ms_max": round(max(ms), 2),
                        "ms": [round(x, 2) for x in ms], "sample": hyps[:3]})
        engine.close()
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sentences", nargs="*", help="what is said (espeak-ng speaks it)")
    p.add_argument("--wav", nargs="*", help="recordings of the sentences instead of espeak-ng")
    p.add_argument("--corpus", action="append",
                   help="a folder of WAVs with transcripts (see above; repeatable)")
    p.add_argument("--script", help="a text file of sentences, one a line, for espeak-ng")
    p.add_argument("--engine", action="append", choices=["moonshine", "pocketsphinx"],
                   help="the engine(s) to measure (repeatable; default moonshine)")
    p.add_argument("--phrases", help="a phrase list, as for the transcriber")
    p.add_argument("--compare", action="store_true", help="also run without --phrases")
    p.add_argument("--focus", help="also the recall of just these words (the venue's names, "
                                   "places, jargon), space-separated")
    p.add_argument("--box", type=int, metavar="PORT", help="measure through a running box")
    p.add_argument("--token", help="with --box: a glasses token")
    p.add_argument("--app-log", help="with --box: the captions app's stdout (its events)")
    p.add_argument("--translation", nargs="?", metavar="TSV",
                   const=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                      "samples/translation/parallel.tsv"),
                   help="measure the translation engines on a parallel sample (see above)")
    args = p.parse_args()
    if args.translation:
        for row in translation_eval(args.translation):
            print(json.dumps(row, ensure_ascii=False), flush=True)
        return
    if args.corpus:
        sentences, pcms = [], []
        for folder in args.corpus:
            more = load_corpus(folder)
            sentences, pcms = sentences + more[0], pcms + more[1]
    elif args.wav:
        if len(args.wav) != len(args.sentences):
            p.error("one --wav per sentence")
        sentences, pcms = args.sentences, [read_pcm(w) for w in args.wav]
    elif args.sentences or args.script:
        if args.script:
            with open(args.script, encoding="utf-8") as f:
                args.sentences += [line.strip() for line in f if line.strip()]
        sentences, pcms = args.sentences, [audio.speak(s) for s in args.sentences]
    else:
        p.error("sentences, --script, --wav or --corpus")
    if args.box:
        if not (args.token and args.app_log):
            p.error("--box needs --token and --app-log")
        print(json.dumps(through_box(sentences, pcms, args.box, args.token, args.app_log)),
              flush=True)
        return
    configs = [None, args.phrases] if args.compare and args.phrases else [args.phrases]
    for engine in args.engine or ["moonshine"]:
        for phrases in configs:
            focus = set(audio.words(args.focus or ""))
            print(json.dumps(offline(engine, sentences, pcms, phrases, focus)), flush=True)


if __name__ == "__main__":
    main()
